//! HellaSwag as `llama-perplexity --hellaswag` scores it, so the two agree on the same GGUF.
//!
//! The file (klosax/hellaswag_text_data, already preprocessed as lm-evaluation-harness does)
//! has six lines per item: `activity_label: ctx`, the gold index, four endings. As
//! perplexity.cpp's `hellaswag_score`: tasks are drawn with `std::mt19937(1)`; each choice is
//! tokenized whole as `context + " " + ending` with BOS; the tokens common to all four are the
//! context, and an ending's score is the *mean* ln p of its tokens after that common prefix
//! (`acc_llama_cpp`, which llama.cpp prints as acc_norm). The harness's `acc` (sum from the
//! context's own tokens on) and `acc_norm` (that sum per character) come from the same pass.

use super::mc::argmax;
use super::EvalContext;
use crate::results::{Metric, TaskResult};
use crate::score::{common_prefix, Scorer};
use crate::stats::Proportion;
use crate::EvalError;
use std::path::Path;

/// Data file under the eval directory.
pub const FILE: &str = "hellaswag_val_full.txt.bz2";

/// One HellaSwag item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `activity_label: ctx`.
    pub context: String,
    /// Index of the right ending.
    pub gold: usize,
    /// The four endings, without the joining space.
    pub endings: [String; 4],
}

/// Parses the six-lines-per-item text.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Item>, EvalError> {
    let lines: Vec<&str> = text.lines().collect();
    if !lines.len().is_multiple_of(6) {
        return Err(EvalError::parse(
            path,
            lines.len(),
            format!("{} lines is not a multiple of 6 (context, gold, 4 endings)", lines.len()),
        ));
    }
    lines
        .chunks(6)
        .enumerate()
        .map(|(i, c)| {
            let gold: usize = c[1]
                .trim()
                .parse()
                .ok()
                .filter(|&g| g < 4)
                .ok_or_else(|| EvalError::parse(path, i * 6 + 2, format!("gold index {:?} is not 0–3", c[1])))?;
            Ok(Item { context: c[0].to_string(), gold, endings: [c[2], c[3], c[4], c[5]].map(String::from) })
        })
        .collect()
}

/// The three choices' scores for one item, from per-token log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picks {
    /// The harness's acc.
    pub acc: usize,
    /// The harness's acc_norm (per character).
    pub acc_norm: usize,
    /// llama.cpp's (mean per token after the common prefix).
    pub llama_cpp: usize,
}

/// Runs the task.
pub fn run(cx: &EvalContext) -> Result<TaskResult, EvalError> {
    let path = cx.data(FILE)?;
    let all = parse(&crate::data::read_text(&path)?, &path)?;
    // llama-perplexity always shuffles (seed 1); without --limit every item is used.
    let order = crate::rng::pick(all.len(), cx.limit.unwrap_or(all.len()), cx.seed);
    let mut scorer = Scorer::new(cx.model, cx.ctx);
    let (mut acc, mut acc_norm, mut llama) = (Proportion::default(), Proportion::default(), Proportion::default());
    let mut per_item = String::with_capacity(order.len());
    let bar = cx.bar(order.len(), "hellaswag");
    for &i in &order {
        let p = score_item(cx, &mut scorer, &all[i])?;
        let gold = all[i].gold;
        acc.add(p.acc == gold);
        acc_norm.add(p.acc_norm == gold);
        llama.add_logged(p.llama_cpp == gold, &mut per_item);
        bar.inc(1);
        bar.set_message(format!("{:.1} %", 100.0 * llama.value()));
    }
    bar.finish_and_clear();
    Ok(TaskResult {
        task: "hellaswag".into(),
        items: order.len(),
        available: all.len(),
        metrics: vec![
            Metric::accuracy(
                "acc_llama_cpp",
                llama,
                "llama-perplexity --hellaswag: mean ln p per token after the choices' common prefix",
            ),
            Metric::accuracy("acc", acc, "harness: argmax of the ending's summed log-probability"),
            Metric::accuracy("acc_norm", acc_norm, "harness: summed log-probability per character of the ending"),
        ],
        elapsed_s: 0.0,
        setting: format!(
            "0-shot, items drawn by mt19937({}) as llama-perplexity, BOS + context + \" \" + ending",
            cx.seed
        ),
        samples: Vec::new(),
        per_item,
    })
}

/// Scores one item's four endings in one scorer call.
pub fn score_item(cx: &EvalContext, scorer: &mut Scorer, item: &Item) -> Result<Picks, EvalError> {
    let ctx_tokens = cx.tokenizer.encode_with(&item.context, true, false)?;
    let mut seqs = Vec::with_capacity(4);
    for e in &item.endings {
        seqs.push(cx.tokenizer.encode_with(&format!("{} {}", item.context, e), true, false)?);
    }
    let shared = common_prefix(&seqs);
    let harness = seqs.iter().map(|s| ctx_tokens.iter().zip(s).take_while(|(a, b)| a == b).count()).min().unwrap_or(0);
    let start = shared.min(harness).max(1);
    let scores = scorer.score(&seqs, start)?;
    let (mut sums, mut per_char, mut means) = (Vec::new(), Vec::new(), Vec::new());
    for (c, e) in scores.iter().zip(&item.endings) {
        let from_harness = &c.logprobs[harness.max(1) - start..];
        let s: f64 = from_harness.iter().sum();
        sums.push(s);
        per_char.push(s / (e.chars().count() + 1) as f64);
        let from_shared = &c.logprobs[shared.max(1) - start..];
        means.push(from_shared.iter().sum::<f64>() / from_shared.len().max(1) as f64);
    }
    Ok(Picks { acc: argmax(&sums), acc_norm: argmax(&per_char), llama_cpp: argmax(&means) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_ITEMS: &str = "Roof shingle removal: A man is sitting on a roof. he\n3\nis using wrap to wrap a pair of skis.\nis ripping level tiles off.\nis holding a rubik's cube.\nstarts pulling up roofing on a roof.\nClean and jerk: A lady walks to a barbell. the lady\n0\nstands and lifts.\npulls.\nswings.\nsits.\n";

    #[test]
    fn parses_six_line_items() {
        let items = parse(TWO_ITEMS, Path::new("h.txt")).expect("valid");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].gold, 3);
        assert_eq!(items[0].context, "Roof shingle removal: A man is sitting on a roof. he");
        assert_eq!(items[1].endings[3], "sits.");
    }

    #[test]
    fn rejects_bad_counts_and_gold() {
        let e = parse("a\n1\nb\nc\nd\n", Path::new("h.txt")).expect_err("5 lines");
        assert!(e.to_string().contains("not a multiple of 6"), "{e}");
        let e = parse("a\n7\nb\nc\nd\ne\n", Path::new("h.txt")).expect_err("gold 7");
        assert_eq!(e.to_string(), "h.txt:2: gold index \"7\" is not 0–3");
    }
}
