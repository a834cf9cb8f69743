//! Tasks judged by one exact final answer (GSM8K, the synthetic arithmetic task): greedy, one
//! answer per item; or, when the run thinks longer (`--think N`), N samples per item decoded
//! together and one chosen among them, reported beside pass@N (any sample right: what a
//! perfect verifier would choose) and the accuracy of a single sample.

use super::{clip, EvalContext};
use crate::results::{Metric, Sample, TaskResult};
use crate::stats::Proportion;
use crate::EvalError;
use kiln_generate::think::{self, final_answer};
use kiln_generate::{GenerateOptions, Session};

/// One question with its reference answer.
pub struct Item {
    /// The question as shown in samples.
    pub question: String,
    /// Its prompt tokens.
    pub prompt: Vec<u32>,
    /// The reference final answer (normalised as [`final_answer`] writes it).
    pub gold: String,
}

/// Answers every item and scores the final answers.
pub fn run(cx: &EvalContext, name: &str, items: &[Item], opts: &GenerateOptions) -> Result<TaskResult, EvalError> {
    match &cx.think {
        None => run_greedy(cx, name, items, opts),
        Some(thinking) => run_thinking(cx, thinking, name, items, opts),
    }
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
    let mut chosen_right = Proportion::default();
    let mut any_right = Proportion::default();
    let mut sample_right = Proportion::default();
    let (mut tokens, mut computed, mut drawn) = (0usize, 0usize, 0usize);
    let mut samples = Vec::new();
    let mut per_item = String::with_capacity(items.len());
    let bar = cx.bar(items.len(), name);
    let mut chooser = thinking.chooser.borrow_mut();
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
        any_right.add(hits.iter().any(|&h| h));
        tokens += got.generated_tokens;
        computed += got.prompt_tokens_computed;
        drawn += got.samples.len();
        let choice = chooser.choose(&item.question, &got.samples).map_err(EvalError::Other)?;
        let (text, answer, reason) = match choice {
            Some(c) => (got.samples[c.index].text.clone(), c.answer, c.reason),
            None => (String::new(), None, "the budget ended before any sample".into()),
        };
        let correct = answer.as_deref() == Some(item.gold.as_str());
        chosen_right.add_logged(correct, &mut per_item);
        let right = hits.iter().filter(|&&h| h).count();
        keep_sample(&mut samples, item, &text, answer, correct, format!("{reason}; {right}/{} samples right", hits.len()));
        bar.inc(1);
        bar.set_message(format!("{:.1} %", 100.0 * chosen_right.value()));
    }
    bar.finish_and_clear();
    let n = thinking.budget.samples;
    let per = |x: usize| x as f64 / items.len().max(1) as f64;
    let s = &thinking.sampling;
    Ok(TaskResult {
        task: String::new(),
        items: items.len(),
        available: 0,
        metrics: vec![
            Metric::accuracy("exact_match", chosen_right, "the chosen sample's final number equals the reference's"),
            Metric::accuracy(&format!("pass@{n}"), any_right, "some sample is right (a perfect verifier's choice)"),
            Metric::accuracy("sample_acc", sample_right, "share of all samples that are right (one sample's accuracy)"),
            Metric::value("samples_per_item", per(drawn), "samples drawn per item (the budget may cut some)"),
            Metric::value("tokens_per_item", per(tokens), "tokens generated per item, over all its samples"),
            Metric::value("prompt_tokens_computed_per_item", per(computed), "prompt tokens computed per item"),
        ],
        elapsed_s: 0.0,
        setting: format!(
            "0-shot, chat template when the model has one, {n} samples (temperature {}, top-k {}, top-p {}, min-p {}) sharing the prompt, chosen by {}, at most {} tokens each",
            s.temperature,
            s.top_k,
            s.top_p,
            s.min_p,
            thinking.chooser_name,
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
