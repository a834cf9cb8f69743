//! `kiln bench --lookup N` / `--draft MODEL` / `--draft-layers N`: speculative decoding
//! against plain decoding on 24 editing, summarising and code prompts written for this (greedy,
//! each prompt in a fresh session both ways, alternated). The bench checks that both ways give
//! the same tokens before it reports the ratio.

use super::bench_think::{mean_interval, mean_sd};
use crate::args::BenchArgs;
use crate::output::outln;
use anyhow::{bail, Result};
use kiln_generate::{GenerateOptions, SamplingParams, Session, SpeculationStats};

/// The prompts, blocks separated by `---` lines (`#` lines at the top are a comment).
const PROMPTS: &str = include_str!("../../data/lookup-prompts.txt");

fn prompts() -> Vec<String> {
    let body: String = PROMPTS.lines().skip_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
    body.split("\n---\n").map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

/// Runs the bench.
pub fn bench(path: &std::path::Path, args: &BenchArgs) -> Result<()> {
    let spec = &args.speculate;
    spec.validate()?;
    let lm = crate::load::load(Some(&path.display().to_string()))?;
    let draft = spec.load_draft(&lm)?;
    let n_gen = args.n_gen.max(1);
    let encoded: Vec<Vec<u32>> = prompts()
        .iter()
        .map(|p| {
            Ok(lm.tokenizer.encode_prompt(&lm.template.render(&[kiln_text::ChatMessage::new("user", p)], true)?)?)
        })
        .collect::<Result<_>>()?;
    let ctx = encoded.iter().map(Vec::len).max().unwrap_or(0) + n_gen + 1;
    let plain = GenerateOptions { max_tokens: n_gen, sampling: SamplingParams::greedy(), ..Default::default() };
    let mut fast = plain.clone();
    spec.apply(&mut fast);
    // Seconds and tokens over the whole set, one way.
    let pass = |speculate: bool| -> Result<(f64, Vec<Vec<u32>>, SpeculationStats)> {
        let mut seconds = 0.0;
        let mut outputs = Vec::with_capacity(encoded.len());
        let mut stats = SpeculationStats::default();
        for prompt in &encoded {
            let mut session = Session::new(&lm.model, ctx);
            if speculate {
                spec.attach(&mut session, draft.as_ref())?;
            }
            let g = session.generate(&lm.tokenizer, prompt, if speculate { &fast } else { &plain }, |_| true)?;
            seconds += g.generate_time.as_secs_f64();
            stats.drafted += g.speculation.drafted;
            stats.accepted += g.speculation.accepted;
            stats.checks += g.speculation.checks;
            outputs.push(g.tokens);
        }
        Ok((seconds, outputs, stats))
    };
    // Warm-up, and the check that the comparison is like for like.
    let (_, expected, _) = pass(false)?;
    let (_, got, stats) = pass(true)?;
    if let Some(i) = (0..expected.len()).find(|&i| expected[i] != got[i]) {
        bail!("prompt {} decodes differently with speculation: the comparison would not be like for like", i + 1);
    }
    let tokens: usize = expected.iter().map(Vec::len).sum();
    let (mut plain_s, mut fast_s, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.repetitions {
        // Alternate which way goes first, so drift in the machine's speed cancels.
        let (p, f) = if round % 2 == 0 {
            let p = pass(false)?.0;
            (p, pass(true)?.0)
        } else {
            let f = pass(true)?.0;
            (pass(false)?.0, f)
        };
        plain_s.push(p);
        fast_s.push(f);
        ratios.push(p / f);
    }
    let (pm, psd) = mean_sd(&plain_s);
    let (fm, fsd) = mean_sd(&fast_s);
    let (rm, half) = mean_interval(&ratios);
    let how = match (&spec.lookup, &spec.draft, &spec.draft_layers) {
        (Some(n), _, _) => format!("prompt lookup, up to {n} tokens"),
        (_, Some(d), _) => format!("draft model {d}, up to {} tokens", spec.draft_max),
        (_, _, Some(n)) => format!("draft of the model's first {n} layers, up to {} tokens", spec.draft_max),
        _ => bail!("--lookup, --draft or --draft-layers says how to guess"),
    };
    outln!("| {} prompts, {tokens} tokens generated (greedy) | decoding seconds | tokens/s |", encoded.len());
    outln!("| --- | ---: | ---: |");
    outln!("| plain | {pm:.3} ± {psd:.3} | {:.1} |", tokens as f64 / pm);
    outln!("| {how} | {fm:.3} ± {fsd:.3} | {:.1} |", tokens as f64 / fm);
    outln!(
        "speculation: {} of {} guesses kept ({:.1} %), {:.2} tokens per check pass",
        stats.accepted,
        stats.drafted,
        100.0 * stats.acceptance(),
        (stats.accepted + stats.checks) as f64 / stats.checks.max(1) as f64
    );
    outln!(
        "speed-up {rm:.2}× (95 % interval [{:.2}, {:.2}], {} alternated rounds after a warm-up; the same tokens both ways)",
        rm - half,
        rm + half,
        args.repetitions
    );
    Ok(())
}
