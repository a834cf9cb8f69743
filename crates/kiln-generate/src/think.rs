//! Thinking longer: N sampled answers to one prompt, decoded as one batch on the scheduler
//! (the prompt is computed once and its keys and values copied to every sample), within a
//! budget of samples, tokens or seconds; then one answer chosen by majority vote over the
//! extracted final answers, or by a score (a reward model, a verifier).
//!
//! Sample `i` is seeded from the request's seed and `i` alone, and batching does not change
//! what a sequence decodes, so the same seed gives the same samples however many run at once;
//! sample 0 uses the seed itself, so `N = 1` answers as plain generation does.

use crate::generate::{Decoder, FinishReason, GenerateError, GenerateOptions};
use crate::scheduler::{Event, Job, Scheduler, SubmitError};
use kiln_model::{BatchState, Model, State};
use kiln_text::Tokenizer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much one answer may spend.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// Answers sampled at most (N).
    pub samples: usize,
    /// Tokens generated over all samples at most; running samples are cut when it is spent.
    pub tokens: Option<usize>,
    /// Wall time at most; running samples are cut when it has passed.
    pub time: Option<Duration>,
}

impl Budget {
    /// N samples, no other limit.
    pub fn samples(n: usize) -> Budget {
        Budget { samples: n, tokens: None, time: None }
    }

    /// Parses `--think-budget` values: `30s`, `2m`, `5000t` (tokens), or a bare number of
    /// seconds; several separated by commas.
    pub fn limit(mut self, spec: &str) -> Result<Budget, String> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("cannot read the budget {part:?}: write 30s, 2m or 5000t (tokens)");
            let (num, unit) = part.split_at(part.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(part.len()));
            let value: f64 = num.parse().map_err(|_| bad())?;
            if !value.is_finite() || value <= 0.0 {
                return Err(bad());
            }
            match unit {
                "" | "s" => self.time = Some(Duration::from_secs_f64(value)),
                "m" => self.time = Some(Duration::from_secs_f64(value * 60.0)),
                "t" | "tokens" => self.tokens = Some(value as usize),
                _ => return Err(bad()),
            }
        }
        Ok(self)
    }
}

/// One sampled answer.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Its text.
    pub text: String,
    /// Tokens generated.
    pub tokens: usize,
    /// Their ids, then the end-of-generation token that stopped it, if one did (the reply as
    /// a model is trained on it).
    pub token_ids: Vec<u32>,
    /// Why it ended; [`FinishReason::Cancelled`] when the budget cut it.
    pub finish: FinishReason,
    /// The seed it was drawn with.
    pub seed: u64,
}

/// The samples of one prompt and what they cost.
#[derive(Clone, Debug)]
pub struct Samples {
    /// In seed order. Samples the budget never started are absent.
    pub samples: Vec<Sample>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens computed over all samples (the rest were copied from another's cache).
    pub prompt_tokens_computed: usize,
    /// Tokens generated over all samples.
    pub generated_tokens: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Why sampling failed.
#[derive(Debug, thiserror::Error)]
pub enum ThinkError {
    /// The scheduler refused the requests.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Generation failed.
    #[error("generation failed: {0}")]
    Failed(String),
    /// N was zero.
    #[error("the number of samples must be at least 1")]
    NoSamples,
}

/// The seed of sample `i`: the request's own for the first, then well-spread ones.
pub fn sample_seed(seed: u64, i: usize) -> u64 {
    if i == 0 {
        return seed;
    }
    // splitmix64 of (seed, i): neighbouring seeds give unrelated streams.
    let mut z = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Samples up to `budget.samples` answers to `prompt` on `scheduler`, which decodes them
/// together. The scheduler should have at least that many slots for one batch; with fewer,
/// samples wait for a slot (and a time or token budget may leave some unstarted).
pub fn sample(
    scheduler: &Scheduler,
    prompt: &[u32],
    options: &GenerateOptions,
    budget: &Budget,
) -> Result<Samples, ThinkError> {
    if budget.samples == 0 {
        return Err(ThinkError::NoSamples);
    }
    let t0 = Instant::now();
    let spent = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let mut jobs = Vec::with_capacity(budget.samples);
    for i in 0..budget.samples {
        let mut opts = options.clone();
        opts.sampling.seed = sample_seed(options.sampling.seed, i);
        let (tx, spent, over) = (tx.clone(), spent.clone(), over.clone());
        let (max_tokens, deadline) = (budget.tokens, budget.time.map(|d| t0 + d));
        let sink = move |event: Event| {
            let spent_now = match &event {
                Event::Token { .. } => spent.fetch_add(1, Ordering::Relaxed) + 1,
                _ => spent.load(Ordering::Relaxed),
            };
            let out_of_budget =
                max_tokens.is_some_and(|m| spent_now >= m) || deadline.is_some_and(|d| Instant::now() >= d);
            if out_of_budget {
                over.store(true, Ordering::Relaxed);
            }
            // A sample that joins after the budget is spent stops at its first token.
            tx.send((i, event)).is_ok() && !over.load(Ordering::Relaxed)
        };
        jobs.push(Job { prompt: prompt.to_vec(), options: opts, sink: Box::new(sink) });
    }
    drop(tx);
    scheduler.submit(jobs)?;

    let mut texts = vec![String::new(); budget.samples];
    let mut done: Vec<Option<Sample>> = vec![None; budget.samples];
    let mut computed = 0;
    for (i, event) in rx {
        match event {
            Event::Token { text, .. } => texts[i].push_str(&text),
            Event::Done(summary) => {
                computed += summary.prompt_tokens - summary.cached_tokens;
                done[i] = Some(Sample {
                    text: std::mem::take(&mut texts[i]),
                    tokens: summary.completion_tokens,
                    token_ids: summary.tokens,
                    finish: summary.finish,
                    seed: sample_seed(options.sampling.seed, i),
                });
            }
            Event::Failed(e) => return Err(ThinkError::Failed(e)),
        }
    }
    // A sample that only started after the budget ran out has nothing to say.
    let samples: Vec<Sample> =
        done.into_iter().flatten().filter(|s| !(s.finish == FinishReason::Cancelled && s.tokens <= 1)).collect();
    let generated_tokens = samples.iter().map(|s| s.tokens).sum();
    Ok(Samples {
        samples,
        prompt_tokens: prompt.len(),
        prompt_tokens_computed: computed,
        generated_tokens,
        elapsed: t0.elapsed(),
    })
}

/// The final number of an answer: after the last `####` if there is one, else the last
/// number in the text; commas, `$` and a trailing `.` removed, `12.0` written `12`.
pub fn final_answer(text: &str) -> Option<String> {
    let tail = match text.rfind("####") {
        Some(i) => &text[i + 4..],
        None => text,
    };
    let nums = numbers(tail);
    let pick = if text.contains("####") { nums.first() } else { nums.last() };
    pick.map(|n| normalize(n))
}

/// The numbers written in `s` (`-1,234.5`, `$18`).
fn numbers(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let word_before = i > 0 && chars[i - 1].is_alphanumeric();
        let digit_next = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        let in_number = c.is_ascii_digit()
            || (c == '-' && cur.is_empty() && digit_next && !word_before)
            || ((c == ',' || c == '.') && !cur.is_empty() && digit_next);
        if in_number {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn normalize(n: &str) -> String {
    let mut s: String = n.chars().filter(|&c| c != ',').collect();
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// N samples of each of several prompts, decoded in the calling thread as one batch, with no
/// scheduler thread: for callers already running on the compute pool, such as a training
/// step. Each prompt is computed once and its cache copied to its samples; the samples are
/// the ones [`sample`] draws with the same seeds (decoding rows are batch-invariant).
/// `prompts` pairs each prompt with its seed; `ctx` is the positions per sequence.
pub fn sample_batch(
    model: &Model,
    tokenizer: &Tokenizer,
    prompts: &[(&[u32], u64)],
    n: usize,
    options: &GenerateOptions,
    ctx: usize,
) -> Result<Vec<Samples>, ThinkError> {
    if n == 0 {
        return Err(ThinkError::NoSamples);
    }
    let t0 = Instant::now();
    let failed = |e: GenerateError| ThinkError::Failed(e.to_string());
    struct Seq<'t> {
        group: usize,
        seed: u64,
        state: State,
        decoder: Decoder<'t>,
    }
    let mut seqs: Vec<Seq> = Vec::with_capacity(prompts.len() * n);
    for (group, &(prompt, seed)) in prompts.iter().enumerate() {
        let mut first = model.new_state(ctx);
        let logits = model.forward(&mut first, prompt, false).map_err(|e| failed(e.into()))?.to_vec();
        for i in 0..n {
            let mut state =
                if i + 1 == n { std::mem::replace(&mut first, model.new_state(1)) } else { model.new_state(ctx) };
            if i + 1 < n {
                state.cache.copy_prefix_from(&first.cache, prompt.len());
            }
            let mut opts = options.clone();
            opts.sampling.seed = sample_seed(seed, i);
            let mut decoder = Decoder::new(tokenizer, prompt, &opts).map_err(failed)?;
            decoder.next(&logits).map_err(failed)?;
            seqs.push(Seq { group, seed: opts.sampling.seed, state, decoder });
        }
    }
    let mut batch = BatchState::default();
    let vocab = model.config.vocab_size;
    loop {
        let live: Vec<usize> = (0..seqs.len())
            .filter(|&k| {
                let s = &seqs[k];
                s.decoder.wants_more() && s.decoder.last_token().is_some() && s.state.len() < s.state.capacity()
            })
            .collect();
        if live.is_empty() {
            break;
        }
        let tokens: Vec<u32> = live.iter().map(|&k| seqs[k].decoder.last_token().expect("live")).collect();
        let mut states: Vec<&mut State> = Vec::with_capacity(live.len());
        let mut decoders: Vec<&mut Decoder> = Vec::with_capacity(live.len());
        let mut next = live.iter().peekable();
        for (k, s) in seqs.iter_mut().enumerate() {
            if next.peek() == Some(&&k) {
                next.next();
                states.push(&mut s.state);
                decoders.push(&mut s.decoder);
            }
        }
        let logits = model.decode_batch(&mut batch, &mut states, &tokens).map_err(|e| failed(e.into()))?;
        for (row, decoder) in decoders.into_iter().enumerate() {
            decoder.next(&logits[row * vocab..(row + 1) * vocab]).map_err(failed)?;
        }
    }
    let mut out: Vec<Samples> = prompts
        .iter()
        .map(|(p, _)| Samples {
            samples: Vec::with_capacity(n),
            prompt_tokens: p.len(),
            prompt_tokens_computed: p.len(),
            generated_tokens: 0,
            elapsed: Duration::ZERO,
        })
        .collect();
    for mut s in seqs {
        s.decoder.finish();
        let token_ids: Vec<u32> = s.decoder.tokens().iter().copied().chain(s.decoder.end_token()).collect();
        let g = s.decoder.into_generation(0, Duration::ZERO, Duration::ZERO);
        let group = &mut out[s.group];
        group.generated_tokens += g.tokens.len();
        group.samples.push(Sample { text: g.text, tokens: g.tokens.len(), token_ids, finish: g.finish, seed: s.seed });
    }
    let elapsed = t0.elapsed();
    for group in &mut out {
        group.elapsed = elapsed;
    }
    Ok(out)
}

/// The outcome of a vote.
#[derive(Clone, Debug, PartialEq)]
pub struct Vote {
    /// The winning answer.
    pub answer: String,
    /// Samples that gave it.
    pub votes: usize,
    /// Samples that gave any answer.
    pub voters: usize,
    /// The first sample that gave it (its text is the one to show).
    pub sample: usize,
}

/// Self-consistency: the answer given most often among `answers` (one per sample, None where
/// no answer could be extracted). Each vote counts `weights[i]` (1 when empty: a plain
/// majority); a tie goes to the answer whose first sample came first.
pub fn vote(answers: &[Option<String>], weights: &[f64]) -> Option<Vote> {
    let mut tally: HashMap<&str, (f64, usize, usize)> = HashMap::new();
    for (i, a) in answers.iter().enumerate() {
        if let Some(a) = a {
            let w = weights.get(i).copied().unwrap_or(1.0);
            let entry = tally.entry(a.as_str()).or_insert((0.0, 0, i));
            entry.0 += w;
            entry.1 += 1;
        }
    }
    let voters = answers.iter().filter(|a| a.is_some()).count();
    tally
        .into_iter()
        .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0).then(b.1 .2.cmp(&a.1 .2)))
        .map(|(answer, (_, votes, sample))| Vote { answer: answer.to_string(), votes, voters, sample })
}

/// Best-of-N: the sample with the highest score (a reward model's, a verifier's); a tie goes
/// to the earlier sample. None when there are no scores.
pub fn best(scores: &[f64]) -> Option<usize> {
    scores
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_nan())
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(xs: &[&str]) -> Vec<Option<String>> {
        xs.iter().map(|x| if x.is_empty() { None } else { Some(x.to_string()) }).collect()
    }

    #[test]
    fn the_majority_wins_and_ties_go_to_the_first_sample() {
        let v = vote(&some(&["3", "4", "", "4", "3", "4"]), &[]).expect("a winner");
        assert_eq!((v.answer.as_str(), v.votes, v.voters, v.sample), ("4", 3, 5, 1));
        let v = vote(&some(&["7", "5", "5", "7"]), &[]).expect("a winner");
        assert_eq!((v.answer.as_str(), v.sample), ("7", 0));
        assert_eq!(vote(&some(&["", ""]), &[]), None);
        // Weighted: two confident votes beat three doubtful ones.
        let v = vote(&some(&["1", "1", "1", "2", "2"]), &[0.1, 0.1, 0.1, 0.9, 0.8]).expect("a winner");
        assert_eq!(v.answer, "2");
    }

    #[test]
    fn best_of_n_takes_the_highest_score_first_on_ties() {
        assert_eq!(best(&[0.1, 0.7, 0.7, -1.0]), Some(1));
        assert_eq!(best(&[f64::NAN, -3.0]), Some(1));
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn seeds_are_the_request_seed_first_then_distinct() {
        assert_eq!(sample_seed(42, 0), 42);
        let seeds: std::collections::HashSet<u64> = (0..64).map(|i| sample_seed(42, i)).collect();
        assert_eq!(seeds.len(), 64);
        assert_ne!(sample_seed(42, 1), sample_seed(43, 1));
    }

    #[test]
    fn budgets_parse_and_bad_ones_are_named() {
        let b = Budget::samples(16).limit("30s, 5000t").expect("valid");
        assert_eq!(b.time, Some(Duration::from_secs(30)));
        assert_eq!(b.tokens, Some(5000));
        assert_eq!(Budget::samples(4).limit("2m").expect("valid").time, Some(Duration::from_secs(120)));
        assert_eq!(Budget::samples(4).limit("1.5").expect("valid").time, Some(Duration::from_millis(1500)));
        for bad in ["x", "0s", "-3s", "10q"] {
            let e = Budget::samples(4).limit(bad).expect_err("invalid");
            assert!(e.contains(bad), "{e}");
        }
    }
}
