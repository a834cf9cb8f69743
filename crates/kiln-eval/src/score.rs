//! Log-likelihood of continuations given a context, the lm-evaluation-harness method.
//!
//! A multiple-choice item is several token sequences sharing a prefix (the context). The
//! prefix runs once; for each choice the KV cache is cut back to the prefix and only the
//! choice's own tokens run, with logits for all of them. The prefix also stays cached for the
//! next item, so few-shot prompts that share their examples (MMLU within a subject) are
//! computed once. kiln's forward pass holds one sequence, so choices run one after another
//! rather than side by side in one batch as llama.cpp's multi-sequence batches do; the work
//! saved (the shared prefix) is the same.

use crate::EvalError;
use kiln_model::{BatchState, Model, State};

/// The log-probabilities of one continuation's tokens, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    /// ln p of each scored token given everything before it.
    pub logprobs: Vec<f64>,
}

impl Continuation {
    /// Σ ln p.
    pub fn sum(&self) -> f64 {
        self.logprobs.iter().sum()
    }
}

/// ln softmax(logits)[target], in f64.
pub fn log_softmax_at(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (logits[target as usize] - max) as f64 - sum.ln()
}

/// Length of the longest common prefix of all `seqs`.
pub fn common_prefix(seqs: &[Vec<u32>]) -> usize {
    let Some(first) = seqs.first() else { return 0 };
    let mut n = first.len();
    for s in &seqs[1..] {
        n = n.min(first.iter().zip(s).take_while(|(a, b)| a == b).count());
    }
    n
}

/// Scores continuations with one model state, keeping the last prefix cached; the choices of a
/// question run together in one pass, each over its own copy of the prefix's cache.
pub struct Scorer<'m> {
    model: &'m Model,
    state: State,
    /// Tokens whose keys and values are in the cache.
    cached: Vec<u32>,
    prefix_logits: Vec<f32>,
    /// States the choices of a question run in, each starting from a copy of the prefix.
    copies: Vec<State>,
    batch: BatchState,
    /// Tokens run through the model so far (for speed reports).
    pub tokens_computed: usize,
}

impl<'m> Scorer<'m> {
    /// A scorer with room for `ctx` positions.
    pub fn new(model: &'m Model, ctx: usize) -> Scorer<'m> {
        Scorer {
            model,
            state: model.new_state(ctx),
            cached: Vec::new(),
            prefix_logits: Vec::new(),
            copies: Vec::new(),
            batch: BatchState::default(),
            tokens_computed: 0,
        }
    }

    /// The context length.
    pub fn context(&self) -> usize {
        self.state.capacity()
    }

    /// For each sequence `seqs[i]`, the log-probabilities of its tokens from `start` on, each
    /// given all tokens before it. `start` must be at least 1 (the first token has no
    /// prediction). Sequences longer than the context lose tokens from the left, all by the
    /// same amount, as the harness truncates long contexts.
    pub fn score(&mut self, seqs: &[Vec<u32>], start: usize) -> Result<Vec<Continuation>, EvalError> {
        let ctx = self.context();
        let longest = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let cut = longest.saturating_sub(ctx);
        let start = start.saturating_sub(cut);
        if start == 0 {
            return Err(EvalError::Other(format!(
                "a continuation of {} tokens does not fit in the context of {ctx}; use a larger --ctx",
                longest - cut
            )));
        }
        let seqs: Vec<&[u32]> = seqs.iter().map(|s| &s[cut.min(s.len())..]).collect();
        let owned: Vec<Vec<u32>> = seqs.iter().map(|s| s.to_vec()).collect();
        // The shared prefix, ending at or before the first scored token's predecessor.
        let p = common_prefix(&owned).min(start);
        if p == 0 {
            return Err(EvalError::Other("the choices share no context token to score from".into()));
        }
        self.run_prefix(&seqs[0][..p])?;
        let vocab = self.model.config.vocab_size;
        // Logits for positions p-1 (cached) and p..len-1 (run now); the last token needs none.
        let rests: Vec<&[u32]> =
            seqs.iter().map(|s| if s.len() > p + 1 { &s[p..s.len() - 1] } else { &[][..] }).collect();
        let batched = self.run_batched(p, &rests)?;
        let mut out = Vec::with_capacity(seqs.len());
        for (i, s) in seqs.iter().enumerate() {
            let mut logprobs = Vec::with_capacity(s.len().saturating_sub(start));
            let rest = rests[i];
            self.state.cache.truncate(p);
            let logits: &[f32] = if rest.is_empty() {
                &[]
            } else if let Some(offset) = batched.as_ref().map(|b| b[i]) {
                &self.batch.logits()[offset * vocab..(offset + rest.len()) * vocab]
            } else {
                self.tokens_computed += rest.len();
                self.model.forward(&mut self.state, rest, true)?
            };
            for j in start.max(1)..s.len() {
                // Token j is predicted by the logits at position j-1.
                let row = if j - 1 < p {
                    &self.prefix_logits[..]
                } else {
                    let r = j - 1 - p;
                    &logits[r * vocab..(r + 1) * vocab]
                };
                logprobs.push(log_softmax_at(row, s[j]));
            }
            out.push(Continuation { logprobs });
        }
        self.state.cache.truncate(p);
        Ok(out)
    }

    /// Runs every non-empty `rests[i]` after the cached `p`-token prefix in one pass (each in a
    /// copy of the prefix's cache), when there are several and each fits in a pass. Returns
    /// where each one's logits start in the batch's logits; None means run them one by one.
    fn run_batched(&mut self, p: usize, rests: &[&[u32]]) -> Result<Option<Vec<usize>>, EvalError> {
        let busy: Vec<usize> = (0..rests.len()).filter(|&i| !rests[i].is_empty()).collect();
        if busy.len() < 2 || busy.iter().any(|&i| rests[i].len() > Model::max_rows()) {
            return Ok(None);
        }
        while self.copies.len() < busy.len() {
            self.copies.push(self.model.new_state(self.context()));
        }
        for copy in &mut self.copies[..busy.len()] {
            copy.cache.copy_prefix_from(&self.state.cache, p);
        }
        let tokens: Vec<&[u32]> = busy.iter().map(|&i| rests[i]).collect();
        let mut states: Vec<&mut State> = self.copies[..busy.len()].iter_mut().collect();
        self.model.forward_many(&mut self.batch, &mut states, &tokens)?;
        self.tokens_computed += tokens.iter().map(|t| t.len()).sum::<usize>();
        let mut offsets = vec![0; rests.len()];
        let mut at = 0;
        for &i in &busy {
            offsets[i] = at;
            at += rests[i].len();
        }
        Ok(Some(offsets))
    }

    /// Makes the cache hold exactly `prefix`, computing only what differs from the last one,
    /// and keeps the logits after its last token.
    fn run_prefix(&mut self, prefix: &[u32]) -> Result<(), EvalError> {
        let same = self.cached.iter().zip(prefix).take_while(|(a, b)| a == b).count();
        if same == prefix.len() && same == self.cached.len() && !self.prefix_logits.is_empty() {
            self.state.cache.truncate(same);
            return Ok(());
        }
        // At least the last token runs, to produce its logits.
        let keep = same.min(prefix.len() - 1);
        self.state.cache.truncate(keep);
        self.cached.truncate(keep);
        let rest = &prefix[keep..];
        self.tokens_computed += rest.len();
        let logits = self.model.forward(&mut self.state, rest, false)?;
        self.prefix_logits.clear();
        self.prefix_logits.extend_from_slice(logits);
        self.cached.extend_from_slice(rest);
        Ok(())
    }

    /// Forgets the cached prefix (the next item computes everything).
    pub fn reset(&mut self) {
        self.state.cache.clear();
        self.cached.clear();
        self.prefix_logits.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_uniform_and_peaked() {
        let l = [0.0f32; 4];
        assert!((log_softmax_at(&l, 2) - (0.25f64).ln()).abs() < 1e-12);
        let l = [10.0f32, 0.0, 0.0];
        let p0 = log_softmax_at(&l, 0).exp();
        let p1 = log_softmax_at(&l, 1).exp();
        assert!((p0 + 2.0 * p1 - 1.0).abs() < 1e-9);
        assert!(p0 > 0.99);
    }

    #[test]
    fn common_prefix_lengths() {
        assert_eq!(common_prefix(&[vec![1, 2, 3], vec![1, 2, 4], vec![1, 2]]), 2);
        assert_eq!(common_prefix(&[vec![5, 6]]), 2);
        assert_eq!(common_prefix(&[vec![1], vec![2]]), 0);
        assert_eq!(common_prefix(&[]), 0);
    }
}
