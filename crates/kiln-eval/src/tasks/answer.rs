//! Tasks judged by one exact final answer (GSM8K, the synthetic arithmetic task): greedy, one
//! answer per item; or, when the run thinks longer (`--think N`), N samples per item decoded
//! together and one chosen among them, reported for N and every power of two below it, by
//! each chooser, beside pass@k (any sample right: what a perfect verifier would choose) and
//! the accuracy of a single sample.

use super::{clip, EvalContext};
use crate::results::{Metric, Sample, TaskResult};
use crate::stats::Proportion;
use crate::EvalError;
use kiln_generate::think::{self, final_answer};
use kiln_generate::{GenerateOptions, SamplingParams, Session};

/// One question with its reference answer.
pub struct Item {
    /// The question as shown in samples.
    pub question: String,
    /// Its prompt tokens.
    pub prompt: Vec<u32>,
    /// The reference final answer (normalised as [`final_answer`] writes it).
    pub gold: String,
}

/// Answers every item (at most `--max-tokens`, 256 by default, stopping at a next
/// `Question:`) and scores the final answers; `available` is the size of the set drawn from.
pub fn run(cx: &EvalContext, name: &str, items: &[Item], available: usize) -> Result<TaskResult, EvalError> {
    let opts = GenerateOptions {
        max_tokens: cx.max_tokens.unwrap_or(256),
        stop: vec!["\n\nQuestion:".into()],
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let mut result = match &cx.think {
        None => run_greedy(cx, name, items, &opts),
        Some(thinking) => run_thinking(cx, thinking, name, items, &opts),
    }?;
    result.available = available;
    Ok(result)
}

fn run_greedy(cx: &EvalContext, name: &str, items: &[Item], opts: &GenerateOptions) -> Result<TaskResult, EvalError> {
    let mut session = Session::new(cx.model, cx.ctx);
    let mut acc = Proportion::default();
    let mut samples = Vec::new();
    let mut per_item = String::with_capacity(items.len());
    let bar = cx.bar(items.len(), name);
    for item in items {
        let generation = session.generate(cx.tokenizer, &item.prompt, opts, |_| true)?;
        let got = final_answer(&generation.text);
        let correct = got.as_deref() == Some(item.gold.as_str());
        acc.add_logged(correct, &mut per_item);
        keep_sample(&mut samples, item, &generation.text, got, correct, String::new());
        bar.inc(1);
        bar.set_message(format!("{:.1} %", 100.0 * acc.value()));
    }
    bar.finish_and_clear();
    Ok(TaskResult {
        task: String::new(),
        items: items.len(),
        available: 0,
        metrics: vec![Metric::accuracy("exact_match", acc, "final number equals the reference's")],
        elapsed_s: 0.0,
        setting: format!("0-shot, chat template when the model has one, greedy, at most {} tokens", opts.max_tokens),
        samples,
        per_item,
    })
}

fn run_thinking(
    cx: &EvalContext,
    thinking: &super::Thinking,
    name: &str,
    items: &[Item],
    opts: &GenerateOptions,
) -> Result<TaskResult, EvalError> {
    let opts = GenerateOptions { sampling: thinking.sampling.clone(), ..opts.clone() };
    let n = thinking.budget.samples;
    // Sample i's seed does not depend on N, so the first k samples of an N-sample run are
    // exactly what a k-sample run draws: one run measures every k = 1, 2, 4 … N.
    let ks: Vec<usize> = std::iter::successors(Some(1), |k| Some(k * 2)).take_while(|&k| k < n).chain([n]).collect();
    let mut choosers = thinking.choosers.borrow_mut();
    let mut chosen_right = vec![vec![Proportion::default(); ks.len()]; choosers.len()];
    let mut any_right = vec![Proportion::default(); ks.len()];
    let mut sample_right = Proportion::default();
    let (mut tokens, mut computed, mut drawn) = (0usize, 0usize, 0usize);
    let mut samples = Vec::new();
    let mut per_item = String::with_capacity(items.len());
    let bar = cx.bar(items.len(), name);
    for (k, item) in items.iter().enumerate() {
        let mut item_opts = opts.clone();
        // Each item its own seeds, all fixed by the run's seed.
        item_opts.sampling.seed = think::sample_seed(opts.sampling.seed, 1 << 20 | k);
        let got = think::sample(thinking.scheduler, &item.prompt, &item_opts, &thinking.budget)
            .map_err(|e| EvalError::Other(e.to_string()))?;
        let hits: Vec<bool> =
            got.samples.iter().map(|s| final_answer(&s.text).as_deref() == Some(item.gold.as_str())).collect();
        for &h in &hits {
            sample_right.add(h);
        }
        tokens += got.generated_tokens;
        computed += got.prompt_tokens_computed;
        drawn += got.samples.len();
        for (j, &kk) in ks.iter().enumerate() {
            let first = &got.samples[..kk.min(got.samples.len())];
            any_right[j].add(hits[..first.len()].iter().any(|&h| h));
            for (c, (_, chooser)) in choosers.iter_mut().enumerate() {
                let choice = chooser.choose(&item.question, first).map_err(EvalError::Other)?;
                let answer = choice.as_ref().and_then(|c| c.answer.as_deref());
                let correct = answer == Some(item.gold.as_str());
                if c == 0 && kk == n {
                    per_item.push(if correct { '1' } else { '0' });
                    let (text, reason) = match &choice {
                        Some(c) => (got.samples[c.index].text.as_str(), c.reason.clone()),
                        None => ("", "the budget ended before any sample".to_string()),
                    };
                    let right = hits.iter().filter(|&&h| h).count();
                    let why = format!("{reason}; {right}/{} samples right", hits.len());
                    keep_sample(&mut samples, item, text, answer.map(str::to_string), correct, why);
                }
                chosen_right[c][j].add(correct);
            }
        }
        bar.inc(1);
        bar.set_message(format!("{:.1} %", 100.0 * chosen_right[0][ks.len() - 1].value()));
    }
    bar.finish_and_clear();
    let per = |x: usize| x as f64 / items.len().max(1) as f64;
    let first_name = &choosers[0].0;
    let mut metrics = vec![Metric::accuracy(
        "exact_match",
        chosen_right[0][ks.len() - 1],
        &format!("the final number of the sample {first_name} chooses among {n} equals the reference's"),
    )];
    for (j, &k) in ks.iter().enumerate() {
        for (c, (chooser_name, _)) in choosers.iter().enumerate() {
            if k > 1 || c == 0 {
                let label = if k == 1 { "single@1".to_string() } else { format!("{chooser_name}@{k}") };
                let about = if k == 1 {
                    "the first sample alone".to_string()
                } else {
                    format!("chosen by {chooser_name} among the first {k} samples")
                };
                metrics.push(Metric::accuracy(&label, chosen_right[c][j], &about));
            }
        }
        if k > 1 {
            metrics.push(Metric::accuracy(
                &format!("pass@{k}"),
                any_right[j],
                &format!("one of the first {k} samples is right (a perfect verifier's choice)"),
            ));
        }
    }
    metrics.extend([
        Metric::accuracy("sample_acc", sample_right, "share of all samples that are right (one sample's accuracy)"),
        Metric::value("samples_per_item", per(drawn), "samples drawn per item (the budget may cut some)"),
        Metric::value("tokens_per_item", per(tokens), "tokens generated per item, over all its samples"),
        Metric::value("prompt_tokens_computed_per_item", per(computed), "prompt tokens computed per item"),
    ]);
    let s = &thinking.sampling;
    let names: Vec<&str> = choosers.iter().map(|(n, _)| n.as_str()).collect();
    Ok(TaskResult {
        task: String::new(),
        items: items.len(),
        available: 0,
        metrics,
        elapsed_s: 0.0,
        setting: format!(
            "0-shot, chat template when the model has one, {n} samples (temperature {}, top-k {}, top-p {}, min-p {}, seed {}) sharing the prompt, chosen by {}, at most {} tokens each",
            s.temperature,
            s.top_k,
            s.top_p,
            s.min_p,
            s.seed,
            names.join(", "),
            opts.max_tokens
        ),
        samples,
        per_item,
    })
}

/// Keeps the first five answers for the report.
fn keep_sample(samples: &mut Vec<Sample>, item: &Item, text: &str, got: Option<String>, correct: bool, why: String) {
    if samples.len() >= 5 {
        return;
    }
    let mut note = if correct {
        String::new()
    } else {
        format!("expected {}, extracted {}", item.gold, got.unwrap_or_else(|| "nothing".into()))
    };
    if !why.is_empty() {
        note = if note.is_empty() { why } else { format!("{note} ({why})") };
    }
    samples.push(Sample { prompt: clip(&item.question, 300), answer: clip(text, 600), correct, note });
}
