//! `kiln bench --think N`: what N samples of one prompt cost together (one batch on the
//! scheduler, the prompt computed once) against the same N samples generated one after the
//! other, each with its prompt. The seeds are the same, so both produce the same tokens;
//! the bench checks that before it reports the ratio.

use crate::args::BenchArgs;
use crate::output::outln;
use anyhow::{bail, Result};
use kiln_generate::think::{self, sample_seed, Budget};
use kiln_generate::{GenerateOptions, SamplingParams, Session};
use std::sync::Arc;
use std::time::Instant;

/// A GSM8K-style question: the prompt the samples share.
const QUESTION: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips \
    in May. How many clips did Natalia sell altogether in April and May? Solve the problem step by step. End \
    with the final answer as '#### <number>'.";

/// Runs the bench.
pub fn bench(path: &std::path::Path, n: usize, args: &BenchArgs) -> Result<()> {
    if n < 2 {
        bail!("--think needs at least 2 samples to compare");
    }
    let lm = crate::load::load(Some(&path.display().to_string()))?;
    let prompt =
        lm.tokenizer.encode_prompt(&lm.template.render(&[kiln_text::ChatMessage::new("user", QUESTION)], true)?)?;
    let n_gen = args.n_gen.max(1);
    let ctx = prompt.len() + n_gen + 1;
    let opts = GenerateOptions {
        max_tokens: n_gen,
        ignore_eos: true,
        sampling: SamplingParams { seed: 1, ..SamplingParams::default() },
        ..Default::default()
    };
    let (model, tokenizer) = (Arc::new(lm.model), Arc::new(lm.tokenizer));
    let scheduler = super::think::scheduler(model.clone(), tokenizer.clone(), &Budget::samples(n), ctx);
    let together = || -> Result<(f64, Vec<String>)> {
        let t = Instant::now();
        let got = think::sample(&scheduler, &prompt, &opts, &Budget::samples(n))?;
        Ok((t.elapsed().as_secs_f64(), got.samples.into_iter().map(|s| s.text).collect()))
    };
    let one_by_one = || -> Result<(f64, Vec<String>)> {
        let t = Instant::now();
        let mut texts = Vec::with_capacity(n);
        for i in 0..n {
            let mut o = opts.clone();
            o.sampling.seed = sample_seed(opts.sampling.seed, i);
            // A fresh session each: every answer pays for its prompt, as N separate requests do.
            let mut session = Session::new(&model, ctx);
            texts.push(session.generate(&tokenizer, &prompt, &o, |_| true)?.text);
        }
        Ok((t.elapsed().as_secs_f64(), texts))
    };
    let (_, a) = together()?; // warm-up, and the check that both give the same samples
    let (_, b) = one_by_one()?;
    if a != b {
        bail!(
            "the batched samples differ from the same seeds run one by one: the comparison would not be like for like"
        );
    }
    let (mut batched, mut single, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repetitions {
        let (tb, _) = together()?;
        let (ts, _) = one_by_one()?;
        batched.push(tb);
        single.push(ts);
        ratios.push(ts / tb);
    }
    let (bm, bsd) = mean_sd(&batched);
    let (sm, ssd) = mean_sd(&single);
    let (rm, half) = mean_interval(&ratios);
    let tokens = n * n_gen;
    outln!("| {n} samples of a {}-token prompt, {n_gen} tokens each | seconds | tokens/s |", prompt.len());
    outln!("| --- | ---: | ---: |");
    outln!("| together (one batch, prompt once) | {bm:.3} ± {bsd:.3} | {:.1} |", tokens as f64 / bm);
    outln!("| one by one (N requests) | {sm:.3} ± {ssd:.3} | {:.1} |", tokens as f64 / sm);
    outln!(
        "{n} answers together cost 1/{rm:.2} of {n} single answers (95 % interval of the ratio [{:.2}, {:.2}], {} alternated rounds after a warm-up; the same tokens both ways)",
        rm - half,
        rm + half,
        args.repetitions
    );
    Ok(())
}

/// The mean and the half-width of its 95 % interval (Student's t over the values).
pub fn mean_interval(v: &[f64]) -> (f64, f64) {
    let (m, sd) = mean_sd(v);
    (m, t95(v.len()) * sd / (v.len() as f64).sqrt())
}

/// Mean and sample standard deviation.
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd =
        if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt() } else { 0.0 };
    (m, sd)
}

/// Student's t at 97.5 % for `n` samples (n − 1 degrees of freedom).
fn t95(n: usize) -> f64 {
    const T: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    match n {
        0 | 1 => f64::NAN,
        n if n - 1 <= T.len() => T[n - 2],
        _ => 1.96 + 2.5 / (n - 1) as f64,
    }
}
