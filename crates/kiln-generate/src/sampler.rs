//! Turning logits into the next token: penalties, top-k, top-p, min-p, temperature, then a
//! seeded draw (greedy at temperature 0). The order is llama.cpp's default sampler chain.

/// Sampling settings. `temperature <= 0` means greedy.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0 = none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// Subtract this from the logit of every token already seen (0 = off).
    pub presence_penalty: f32,
    /// Subtract this × count from the logit of every token already seen (0 = off).
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Random seed; the same seed gives the same output.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0x6b696c6e,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding, no penalties.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Default::default() }
    }

    /// Checks the ranges, so a bad flag or request gets a clear message.
    pub fn validate(&self) -> Result<(), String> {
        let finite = [
            self.temperature,
            self.top_p,
            self.min_p,
            self.repeat_penalty,
            self.presence_penalty,
            self.frequency_penalty,
        ];
        if finite.iter().any(|v| !v.is_finite()) {
            return Err("sampling parameters must be finite numbers".into());
        }
        if self.temperature < 0.0 {
            return Err(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(format!("repeat_penalty must be > 0, got {}", self.repeat_penalty));
        }
        Ok(())
    }
}

/// A token with its log-probability under the model (before sampling adjustments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenLogprob {
    /// Token id.
    pub token: u32,
    /// Natural-log probability.
    pub logprob: f32,
}

/// A seeded sampler. Reuses its candidate buffer, so sampling allocates nothing per token.
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    candidates: Vec<(u32, f32)>,
    /// (token, count) of the recent window, for the penalties.
    counts: Vec<(u32, u32)>,
}

impl Sampler {
    /// A sampler with `params`, its random stream started from `params.seed`.
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = SplitMix64(params.seed);
        Sampler { params, rng, candidates: Vec::new(), counts: Vec::new() }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits`, given the tokens generated or read so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        apply_penalties(c, history, p, &mut self.counts);
        if p.temperature <= 0.0 {
            return argmax(c);
        }
        // Sort once by logit, descending; every truncation below keeps a prefix.
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        softmax_in_place(c);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = c.len();
            for (i, &(_, prob)) in c.iter().enumerate() {
                cum += prob;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let threshold = c[0].1 * p.min_p;
            let keep = c.iter().take_while(|x| x.1 >= threshold).count();
            c.truncate(keep.max(1));
        }
        // Back to logits for the temperature: log of the (renormalised) probabilities.
        let t = p.temperature;
        for x in c.iter_mut() {
            x.1 = x.1.ln() / t;
        }
        softmax_in_place(c);
        let r = self.rng.next_f32();
        let mut cum = 0.0;
        for &(tok, prob) in c.iter() {
            cum += prob;
            if r < cum {
                return tok;
            }
        }
        c.last().map(|x| x.0).unwrap_or(0)
    }
}

fn apply_penalties(c: &mut [(u32, f32)], history: &[u32], p: &SamplingParams, counted: &mut Vec<(u32, u32)>) {
    if history.is_empty() || (p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0) {
        return;
    }
    let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
    counted.clear();
    for &t in recent {
        match counted.iter_mut().find(|x| x.0 == t) {
            Some(x) => x.1 += 1,
            None => counted.push((t, 1)),
        }
    }
    for &(tok, count) in counted.iter() {
        let Some(x) = c.get_mut(tok as usize) else { continue };
        if x.1 > 0.0 {
            x.1 /= p.repeat_penalty;
        } else {
            x.1 *= p.repeat_penalty;
        }
        x.1 -= count as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

fn argmax(c: &[(u32, f32)]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for &(t, l) in c {
        // Ties go to the lower id, as in llama.cpp's greedy sampler.
        if l > best.1 {
            best = (t, l);
        }
    }
    best.0
}

fn softmax_in_place(c: &mut [(u32, f32)]) {
    let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in c.iter_mut() {
        x.1 = (x.1 - max).exp();
        sum += x.1;
    }
    for x in c.iter_mut() {
        x.1 /= sum;
    }
}

/// Log-probabilities of `token` and of the `top_n` most likely tokens under `logits`.
pub fn logprobs(logits: &[f32], token: u32, top_n: usize) -> (TokenLogprob, Vec<TokenLogprob>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln() as f32 + max;
    let chosen = TokenLogprob { token, logprob: logits[token as usize] - log_sum };
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = top_n.min(idx.len());
    if k > 0 {
        idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    } else {
        idx.clear();
    }
    let top = idx.iter().map(|&t| TokenLogprob { token: t, logprob: logits[t as usize] - log_sum }).collect();
    (chosen, top)
}

/// A small, fast, seedable generator (SplitMix64); the same seed gives the same stream on
/// every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, -1.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_picks_the_largest() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&logits(), &[]), 1);
    }

    #[test]
    fn repeat_penalty_can_change_the_greedy_choice() {
        let p = SamplingParams { repeat_penalty: 1.5, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p);
        assert_eq!(s.sample(&logits(), &[1]), 5);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let p = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 42, ..Default::default() };
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..50).map(|_| s.sample(&logits(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(&p), run(&p));
        assert!(run(&p).iter().collect::<std::collections::HashSet<_>>().len() > 2);
        let k1 = SamplingParams { top_k: 1, ..p };
        assert!(run(&k1).iter().all(|&t| t == 1));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        let p = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.5, min_p: 0.0, seed: 1, ..Default::default() };
        let mut s = Sampler::new(p);
        for _ in 0..100 {
            assert!([1, 5].contains(&s.sample(&logits(), &[])));
        }
        let p = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.5, seed: 1, ..Default::default() };
        let mut s = Sampler::new(p);
        for _ in 0..100 {
            assert!([1, 2, 5].contains(&s.sample(&logits(), &[])));
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let l = [0.0f32, (3.0f32).ln()];
        let p = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 7, ..Default::default() };
        let mut s = Sampler::new(p);
        let ones = (0..20_000).filter(|_| s.sample(&l, &[]) == 1).count();
        let frac = ones as f64 / 20_000.0;
        assert!((frac - 0.75).abs() < 0.015, "{frac}");
    }

    #[test]
    fn logprobs_are_normalised() {
        let (chosen, top) = logprobs(&logits(), 1, 3);
        assert_eq!(top[0].token, 1);
        assert_eq!(top.len(), 3);
        assert_eq!(chosen.logprob, top[0].logprob);
        let total: f32 =
            logits().iter().enumerate().map(|(i, _)| logprobs(&logits(), i as u32, 0).0.logprob.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        assert!(SamplingParams { temperature: -1.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { top_p: 0.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { min_p: 2.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }
}
