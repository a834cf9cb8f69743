//! Multiple choice by log-likelihood, as lm-evaluation-harness scores it: each choice is a
//! continuation of the context; `acc` picks the largest Σ ln p, `acc_norm` the largest
//! Σ ln p divided by the choice's length in characters (the harness's `acc_norm`).

use super::EvalContext;
use crate::results::{Metric, TaskResult};
use crate::score::Scorer;
use crate::stats::Proportion;
use crate::EvalError;

/// A question with its choices.
#[derive(Debug, Clone, PartialEq)]
pub struct McItem {
    /// Text before every choice.
    pub context: String,
    /// The continuations, each with its leading space (`" Paris"`).
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub gold: usize,
}

/// Index of the largest value, the first on ties (numpy's argmax).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Tokens of `context` + each choice, and where the choices begin: the length of the
/// context's own tokens (the harness's split), or earlier where a choice's first token
/// merged with the context's last.
pub fn tokenize_item(cx: &EvalContext, item: &McItem) -> Result<(Vec<Vec<u32>>, usize), EvalError> {
    let ctx_tokens = cx.tokenizer.encode_with(&item.context, true, false)?;
    let mut start = ctx_tokens.len();
    let mut seqs = Vec::with_capacity(item.choices.len());
    for c in &item.choices {
        let s = cx.tokenizer.encode_with(&format!("{}{}", item.context, c), true, false)?;
        start = start.min(ctx_tokens.iter().zip(&s).take_while(|(a, b)| a == b).count());
        seqs.push(s);
    }
    Ok((seqs, start.max(1)))
}

/// Runs `items` (already selected), returning acc and acc_norm.
pub fn run_items(
    cx: &EvalContext,
    name: &str,
    items: &[McItem],
    available: usize,
    setting: &str,
) -> Result<TaskResult, EvalError> {
    let mut scorer = Scorer::new(cx.model, cx.ctx);
    let (mut acc, mut acc_norm) = (Proportion::default(), Proportion::default());
    let mut per_item = String::with_capacity(items.len());
    let bar = cx.bar(items.len(), name);
    for item in items {
        let (seqs, start) = tokenize_item(cx, item)?;
        let scores = scorer.score(&seqs, start)?;
        let sums: Vec<f64> = scores.iter().map(|c| c.sum()).collect();
        let norm: Vec<f64> = sums.iter().zip(&item.choices).map(|(s, c)| s / c.chars().count().max(1) as f64).collect();
        acc.add_logged(argmax(&sums) == item.gold, &mut per_item);
        acc_norm.add(argmax(&norm) == item.gold);
        bar.inc(1);
        bar.set_message(format!("acc {:.1} %", 100.0 * acc.value()));
    }
    bar.finish_and_clear();
    Ok(TaskResult {
        task: name.into(),
        items: items.len(),
        available,
        metrics: vec![
            Metric::accuracy("acc", acc, "argmax of the sum of continuation log-probabilities"),
            Metric::accuracy(
                "acc_norm",
                acc_norm,
                "argmax of the sum divided by the continuation's length in characters",
            ),
        ],
        elapsed_s: 0.0,
        setting: setting.into(),
        samples: Vec::new(),
        per_item,
    })
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_first_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[-5.0]), 0);
        assert_eq!(argmax(&[-1.0, -0.5]), 1);
    }
}
