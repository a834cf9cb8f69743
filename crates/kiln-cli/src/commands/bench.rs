//! `kiln bench`: prompt-processing and generation speed, measured as llama-bench does
//! (random tokens, no tokenizer and no sampler in the timed region, fresh cache per run), with
//! the same JSON field names so one script reads both.

use crate::args::BenchArgs;
use crate::load::resolve;
use crate::output::outln;
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::Instant;

/// One line of results, named as llama-bench's JSON output names them.
#[derive(Serialize, Debug)]
pub struct BenchResult {
    /// Model file.
    pub model_filename: String,
    /// Model file size in bytes.
    pub model_size: u64,
    /// Threads.
    pub n_threads: usize,
    /// Prompt tokens (0 for a generation test).
    pub n_prompt: usize,
    /// Generated tokens (0 for a prompt test).
    pub n_gen: usize,
    /// Mean tokens per second.
    pub avg_ts: f64,
    /// Standard deviation of tokens per second.
    pub stddev_ts: f64,
    /// Per-run times in nanoseconds.
    pub samples_ns: Vec<u128>,
}

/// Runs the command.
pub fn bench(args: &BenchArgs, threads: usize) -> Result<()> {
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    if args.probe {
        return probe(args, threads);
    }
    if args.think.is_some() && args.speculate.any() {
        bail!("--think and --lookup/--draft are separate benches; run them one at a time");
    }
    args.speculate.validate()?;
    let path = resolve(args.model.as_deref())?;
    if let Some(n) = args.think {
        return super::bench_think::bench(&path, n, args);
    }
    if args.speculate.any() {
        return super::bench_speculate::bench(&path, args);
    }
    if let Some(schema) = &args.json_schema {
        return constrained(&path, schema, args);
    }
    let model = kiln_model::formats::open_model(&path)?;
    let model_size = std::fs::metadata(&path)?.len();
    let mut results = Vec::new();
    for &(n_prompt, n_gen) in &[(args.n_prompt, 0), (0, args.n_gen)] {
        if n_prompt + n_gen == 0 {
            continue;
        }
        let ctx = n_prompt + n_gen + 1;
        let mut state = model.new_state(ctx);
        let tokens = pseudo_random_tokens(n_prompt.max(n_gen), model.config.vocab_size);
        let mut run = || -> Result<u128> {
            state.cache.clear();
            let t = Instant::now();
            if n_prompt > 0 {
                model.forward(&mut state, &tokens, false)?;
            } else {
                // One token per step, as llama-bench's tg test decodes.
                for tok in &tokens[..n_gen] {
                    model.forward(&mut state, std::slice::from_ref(tok), false)?;
                }
            }
            Ok(t.elapsed().as_nanos())
        };
        run()?; // warm-up, as llama-bench does
        let samples: Vec<u128> = (0..args.repetitions).map(|_| run()).collect::<Result<_>>()?;
        let n = (n_prompt + n_gen) as f64;
        let ts: Vec<f64> = samples.iter().map(|&ns| n / (ns as f64 * 1e-9)).collect();
        let mean = ts.iter().sum::<f64>() / ts.len() as f64;
        let sd = if ts.len() > 1 {
            (ts.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (ts.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        results.push(BenchResult {
            model_filename: path.display().to_string(),
            model_size,
            n_threads: threads,
            n_prompt,
            n_gen,
            avg_ts: mean,
            stddev_ts: sd,
            samples_ns: samples,
        });
    }
    if args.output == "json" {
        outln!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        outln!("| model | size | threads | test | t/s |");
        outln!("| --- | ---: | ---: | ---: | ---: |");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for r in &results {
            let test = if r.n_prompt > 0 { format!("pp{}", r.n_prompt) } else { format!("tg{}", r.n_gen) };
            outln!(
                "| {name} | {:.2} MiB | {} | {test} | {:.2} ± {:.2} |",
                r.model_size as f64 / (1 << 20) as f64,
                r.n_threads,
                r.avg_ts,
                r.stddev_ts
            );
        }
        outln!("(tokenization and sampling excluded; {} runs after one warm-up)", args.repetitions);
    }
    Ok(())
}

/// Deterministic token ids spread over the vocabulary.
fn pseudo_random_tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

/// Decoding under a JSON schema against free decoding of the same prompt, alternated run by
/// run: milliseconds per generated token (sampler, detokenizer and, for the schema, the token
/// mask included; the prompt excluded), and the difference with its spread.
fn constrained(path: &std::path::Path, schema_path: &std::path::Path, args: &BenchArgs) -> Result<()> {
    use anyhow::Context as _;
    use kiln_generate::{GenerateOptions, Grammar, GrammarCompiler, SamplingParams, Session};
    let text =
        std::fs::read_to_string(schema_path).with_context(|| format!("cannot read {}", schema_path.display()))?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", schema_path.display()))?;
    let lm = crate::load::load(Some(&path.display().to_string()))?;
    let compiler = GrammarCompiler::new(&lm.tokenizer, lm.model.config.vocab_size)?;
    let constraint =
        compiler.compile(&Grammar::JsonSchema(kiln_generate::constraint::compact(schema.clone())), None)?;
    let ask = format!("Reply with one JSON object that fits this schema:\n{schema}");
    let prompt = lm.tokenizer.encode_prompt(&lm.template.render(&[kiln_text::ChatMessage::new("user", ask)], true)?)?;
    let n_gen = args.n_gen.max(1);
    let ctx = prompt.len() + n_gen + 1;
    let base = GenerateOptions {
        max_tokens: n_gen,
        sampling: SamplingParams { temperature: 0.0, seed: 1, ..SamplingParams::default() },
        ..Default::default()
    };
    let per_token = |constrained: bool| -> Result<(f64, usize)> {
        let mut opts = base.clone();
        if constrained {
            opts.constraint = Some(constraint.clone());
        } else {
            opts.ignore_eos = true;
        }
        let mut session = Session::new(&lm.model, ctx);
        let gen = session.generate(&lm.tokenizer, &prompt, &opts, |_| true)?;
        let n = gen.tokens.len().max(1);
        Ok((gen.generate_time.as_secs_f64() * 1e3 / n as f64, n))
    };
    per_token(false)?; // warm-up
    per_token(true)?;
    let (mut free, mut bound, mut tokens) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.repetitions {
        free.push(per_token(false)?.0);
        let (ms, n) = per_token(true)?;
        bound.push(ms);
        tokens = n;
    }
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        (m, sd)
    };
    let diffs: Vec<f64> = bound.iter().zip(&free).map(|(b, f)| b - f).collect();
    let ((fm, fsd), (bm, bsd), (dm, dsd)) = (stats(&free), stats(&bound), stats(&diffs));
    outln!("| decoding | ms/token | tokens |");
    outln!("| --- | ---: | ---: |");
    outln!("| free (greedy, {n_gen} tokens) | {fm:.3} ± {fsd:.3} | {n_gen} |");
    outln!("| under {} | {bm:.3} ± {bsd:.3} | {tokens} |", schema_path.display());
    outln!(
        "cost of the schema: {dm:+.3} ± {dsd:.3} ms/token ({:+.1} %), {} alternated runs after one warm-up each",
        100.0 * dm / fm,
        args.repetitions
    );
    Ok(())
}

/// `kiln bench --probe`: the machine's limits on these threads.
fn probe(args: &BenchArgs, threads: usize) -> Result<()> {
    let gbs = kiln_model::probe::memory_read_gbs(3);
    let peak = kiln_model::probe::int8_peak_gmacs();
    if args.output == "json" {
        let v = serde_json::json!({ "n_threads": threads, "memory_read_gbs": gbs, "int8_gmacs": peak });
        outln!("{v}");
    } else {
        outln!("memory read: {gbs:.1} GB/s on {threads} threads (decoding a token reads every weight once)");
        match peak {
            Some(g) => outln!("int8 multiply-adds: {g:.0} G/s peak on {threads} threads (prompt processing does one per weight and token)"),
            None => outln!("int8 multiply-adds: no int8 kernel for this CPU"),
        }
    }
    Ok(())
}
