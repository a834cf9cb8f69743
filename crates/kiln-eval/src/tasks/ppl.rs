//! Perplexity and bits-per-byte of a text file.
//!
//! Perplexity follows llama-perplexity (as `kiln ppl`): the whole text tokenized with BOS, cut
//! into chunks of `ctx` tokens, each run from an empty cache with its first token replaced by
//! BOS, and only the second half of each chunk scored. Perplexity depends on the vocabulary;
//! bits per byte does not: the same summed −ln p divided by ln 2 and by the UTF-8 bytes of
//! the scored tokens' text, so models with different tokenizers compare.

use super::EvalContext;
use crate::results::{Metric, TaskResult};
use crate::score::log_softmax_at;
use crate::EvalError;
use std::path::Path;

/// Running −ln p totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct NllTotals {
    /// Σ −ln p.
    pub nll: f64,
    /// Σ (−ln p)².
    pub nll2: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// UTF-8 bytes of the scored tokens.
    pub bytes: usize,
}

impl NllTotals {
    /// Adds one token's −ln p.
    pub fn add(&mut self, nll: f64) {
        self.nll += nll;
        self.nll2 += nll * nll;
        self.tokens += 1;
    }

    /// Perplexity and its standard error (llama-perplexity's formula).
    pub fn ppl(&self) -> (f64, f64) {
        let n = self.tokens as f64;
        let mean = self.nll / n;
        let ppl = mean.exp();
        let var = self.nll2 / n - mean * mean;
        let err = if var > 0.0 && self.tokens > 1 { (var / (n - 1.0)).sqrt() * ppl } else { 0.0 };
        (ppl, err)
    }

    /// Bits per UTF-8 byte.
    pub fn bpb(&self) -> f64 {
        self.nll / std::f64::consts::LN_2 / self.bytes.max(1) as f64
    }
}

/// Runs the task on `file` (a path as given, relative to the working directory).
pub fn run(cx: &EvalContext, file: &Path) -> Result<TaskResult, EvalError> {
    let text = crate::data::read_text(file)?;
    let tokens = cx.tokenizer.encode_with(&text, true, false)?;
    let ctx = cx.ppl_chunk.clamp(8, cx.ctx.max(8));
    let available = tokens.len() / ctx;
    if available == 0 {
        return Err(EvalError::Other(format!(
            "{} tokenizes to {} tokens, fewer than one chunk of {ctx}",
            file.display(),
            tokens.len()
        )));
    }
    let n_chunks = cx.limit.map_or(available, |l| l.min(available));
    let bos = cx.tokenizer.bos_id().filter(|_| cx.tokenizer.adds_bos());
    let mut state = cx.model.new_state(ctx);
    let vocab = cx.model.config.vocab_size;
    let first = ctx / 2;
    let mut totals = NllTotals::default();
    let bar = cx.bar(n_chunks, "ppl");
    let mut chunk = vec![0u32; ctx];
    for i in 0..n_chunks {
        let orig = &tokens[i * ctx..(i + 1) * ctx];
        chunk.copy_from_slice(orig);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        state.cache.clear();
        let logits = cx.model.forward(&mut state, &chunk, true)?;
        for pos in first..ctx - 1 {
            totals.add(-log_softmax_at(&logits[pos * vocab..(pos + 1) * vocab], orig[pos + 1]));
        }
        // Bytes of the scored tokens: the chunk's text less the text before the scored part.
        let whole = cx.tokenizer.decode(&orig[1..], false)?.len();
        let before = cx.tokenizer.decode(&orig[1..first + 1], false)?.len();
        totals.bytes += whole.saturating_sub(before);
        bar.inc(1);
        bar.set_message(format!("ppl {:.3}", totals.ppl().0));
    }
    bar.finish_and_clear();
    let (ppl, err) = totals.ppl();
    Ok(TaskResult {
        task: String::new(),
        items: n_chunks,
        available,
        metrics: vec![
            Metric {
                name: "ppl".into(),
                value: ppl,
                low: Some(ppl - 1.96 * err),
                high: Some(ppl + 1.96 * err),
                hits: None,
                about: "perplexity, llama-perplexity's method (second half of each chunk scored)".into(),
            },
            Metric::value("bpb", totals.bpb(), "bits per UTF-8 byte of the scored text (tokenizer-independent)"),
            Metric::value(
                "tokens_per_byte",
                totals.tokens as f64 / totals.bytes.max(1) as f64,
                "scored tokens per byte",
            ),
        ],
        elapsed_s: 0.0,
        setting: format!("chunks of {ctx} tokens, {n_chunks} of {available}, BOS first, second half scored"),
        samples: Vec::new(),
        per_item: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_model_has_vocab_perplexity_and_known_bpb() {
        let mut t = NllTotals::default();
        for _ in 0..16 {
            t.add((8f64).ln());
        }
        t.bytes = 16; // one byte per token, 3 bits each under a uniform 8-way model
        let (ppl, err) = t.ppl();
        assert!((ppl - 8.0).abs() < 1e-9 && err < 1e-6);
        assert!((t.bpb() - 3.0).abs() < 1e-12);
    }
}
