//! Decoding past the memory wall: guess several next tokens cheaply, then check them all in one
//! pass of the model, which reads its weights once for the whole guess.
//!
//! Two sources of guesses (drafts):
//! - **prompt lookup**: the tokens that followed the last occurrence of the context's final
//!   n-gram (answers that quote, edit or summarise their prompt repeat long runs of it);
//! - **a draft model**: a smaller model with the same tokenizer, decoding greedily.
//!
//! The check keeps the output exactly what plain decoding gives, at any temperature: the
//! target's logits after each drafted token go through the same [`crate::Decoder`] (same
//! sampler, same random draws, same stop rules) as in plain decoding, and a draft is kept only
//! while the decoder picks the drafted token. A draft that the decoder would not have picked
//! costs time, never output.

/// Most tokens one check takes. A check runs the guesses and the token before them as one
/// batch, and batches under 64 rows take exactly the kernels of one-token decoding (longer ones
/// switch to tiled prompt attention, whose rounding differs), so checked logits equal plain
/// decoding's bit for bit.
pub const MAX_DRAFT: usize = 32;

/// How many tokens to guess per step, adapted to how many were accepted: a fully accepted
/// draft grows the next one, a rejection shrinks it (as transformers' assisted generation does).
#[derive(Clone, Debug)]
pub struct DraftLength {
    current: usize,
    max: usize,
}

impl DraftLength {
    /// Starts at `start` tokens, never more than `max` nor fewer than one.
    pub fn new(start: usize, max: usize) -> DraftLength {
        let max = max.clamp(1, MAX_DRAFT);
        DraftLength { current: start.clamp(1, max), max }
    }

    /// Tokens to draft next.
    pub fn get(&self) -> usize {
        self.current
    }

    /// Learns from one check: `accepted` of `drafted` tokens were kept.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.current = if accepted == drafted { (self.current + 2).min(self.max) } else { (self.current - 1).max(1) };
    }
}

/// Longest n-gram matched by prompt lookup; shorter ones are tried down to [`LOOKUP_MIN_NGRAM`].
pub const LOOKUP_MAX_NGRAM: usize = 3;
/// Shortest n-gram prompt lookup trusts: single tokens match too often by chance.
pub const LOOKUP_MIN_NGRAM: usize = 2;

/// Prompt lookup: the tokens that followed the most recent earlier occurrence of the context's
/// last n-gram (longest n first), at most `max` of them. Empty when nothing matches.
pub fn lookup_draft(context: &[u32], max: usize) -> Vec<u32> {
    if max == 0 {
        return Vec::new();
    }
    for n in (LOOKUP_MIN_NGRAM..=LOOKUP_MAX_NGRAM).rev() {
        if context.len() <= n {
            continue;
        }
        let tail = &context[context.len() - n..];
        // Most recent match first: nearby text predicts better than the distant kind.
        for start in (0..context.len() - n).rev() {
            if &context[start..start + n] == tail {
                let from = start + n;
                let end = (from + max).min(context.len());
                return context[from..end].to_vec();
            }
        }
    }
    Vec::new()
}

/// Counts of one generation's speculation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpeculationStats {
    /// Tokens drafted.
    pub drafted: usize,
    /// Drafted tokens the check kept.
    pub accepted: usize,
    /// Passes of the target model that checked a draft.
    pub checks: usize,
}

impl SpeculationStats {
    /// Share of drafted tokens kept (0 when none was drafted).
    pub fn acceptance(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_copies_what_followed_the_last_match() {
        // "a b c d e ... a b" → "c d e".
        let ctx = [1, 2, 3, 4, 5, 9, 1, 2];
        assert_eq!(lookup_draft(&ctx, 3), vec![3, 4, 5]);
        assert_eq!(lookup_draft(&ctx, 10), vec![3, 4, 5, 9, 1, 2]);
        // The longest n-gram wins over a more recent shorter one.
        let ctx = [7, 8, 9, 1, 8, 9, 2, 7, 8, 9];
        assert_eq!(lookup_draft(&ctx, 2), vec![1, 8]);
        // The most recent of equal matches.
        let ctx = [5, 6, 1, 5, 6, 2, 5, 6];
        assert_eq!(lookup_draft(&ctx, 1), vec![2]);
        // A single repeated token is not enough.
        assert!(lookup_draft(&[4, 1, 2, 4], 3).is_empty());
        assert!(lookup_draft(&[], 3).is_empty());
        assert!(lookup_draft(&[1, 2, 1, 2], 0).is_empty());
    }

    #[test]
    fn draft_length_adapts() {
        let mut d = DraftLength::new(4, 8);
        d.update(4, 4);
        assert_eq!(d.get(), 6);
        d.update(6, 6);
        d.update(8, 8);
        assert_eq!(d.get(), 8);
        d.update(8, 3);
        assert_eq!(d.get(), 7);
        for _ in 0..10 {
            d.update(1, 0);
        }
        assert_eq!(d.get(), 1);
        d.update(0, 0);
        assert_eq!(d.get(), 1);
    }
}
