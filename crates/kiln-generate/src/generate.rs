//! The generation loop: feed the prompt (reusing whatever prefix the KV cache already holds),
//! then sample, stream text, and stop at an end-of-generation token, a stop string, the token
//! limit or the end of the context.

use crate::constraint::{apply_mask, Constraint, ConstraintError, ConstraintState, Step};
use crate::sampler::{logprobs, Sampler, SamplingParams, TokenLogprob};
use crate::speculate::{lookup_draft, DraftLength, SpeculationStats};
use kiln_model::{Model, ModelError, State};
use kiln_text::{TextError, TokenStream, Tokenizer};
use std::time::{Duration, Instant};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// The token limit or the end of the context.
    Length,
    /// The caller asked to stop (a closed pipe, a stop button).
    Cancelled,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops before the first of these strings; it is not part of the output.
    pub stop: Vec<String>,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Report the log-probabilities of each token and of this many alternatives.
    pub logprobs: Option<usize>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// A grammar the output must follow (JSON schema, tool calls).
    pub constraint: Option<Constraint>,
    /// Prompt-lookup decoding: check up to this many tokens copied from the context per pass
    /// (0: off). The output is the same as without; only its speed changes.
    pub lookup: usize,
    /// With a draft model: most tokens it guesses per pass (None: the default it was set up
    /// with; 0: no guessing for this generation).
    pub draft_max: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            stop: Vec::new(),
            sampling: SamplingParams::default(),
            logprobs: None,
            ignore_eos: false,
            constraint: None,
            lookup: 0,
            draft_max: None,
        }
    }
}

/// One generated token, as reported to the caller while generating.
pub struct TokenEvent<'a> {
    /// The token id.
    pub token: u32,
    /// Text that became printable with this token (may be empty).
    pub text: &'a str,
    /// Its log-probability and the top alternatives, when asked for.
    pub logprobs: Option<(TokenLogprob, Vec<TokenLogprob>)>,
}

/// The result of a generation.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated token ids (end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// Generated text, stop string excluded.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the cache).
    pub prompt_tokens_computed: usize,
    /// Time spent on the prompt.
    pub prompt_time: Duration,
    /// Time spent generating.
    pub generate_time: Duration,
    /// Drafted and accepted tokens, when decoding speculatively.
    pub speculation: SpeculationStats,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The model refused the input (e.g. a prompt longer than the context).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Decoding failed.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// The grammar could not be followed.
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
}

/// A model with one sequence's state, reusable across turns of a conversation.
pub struct Session<'m> {
    model: &'m Model,
    state: State,
    /// Tokens whose keys and values are in the cache, in order.
    cached: Vec<u32>,
    /// A smaller model with the same tokenizer that drafts tokens for this one to check.
    draft: Option<Box<Session<'m>>>,
    /// Most tokens the draft model guesses per pass.
    draft_max: usize,
}

/// Tokens a draft model guesses in its first pass; later passes adapt ([`DraftLength`]).
pub(crate) const DRAFT_START: usize = 4;

impl<'m> Session<'m> {
    /// A session with room for `ctx` positions.
    pub fn new(model: &'m Model, ctx: usize) -> Session<'m> {
        Session { model, state: model.new_state(ctx), cached: Vec::new(), draft: None, draft_max: 0 }
    }

    /// Decodes speculatively from now on: `draft` (same tokenizer, smaller) guesses up to
    /// `max` tokens per pass and this session's model checks them in one pass. The output is
    /// the same as without a draft.
    pub fn set_draft(&mut self, draft: &'m Model, max: usize) -> Result<(), GenerateError> {
        let (ours, theirs) = (self.model.config.vocab_size, draft.config.vocab_size);
        if ours != theirs {
            return Err(GenerateError::Options(format!(
                "the draft model's vocabulary has {theirs} tokens, the model's {ours}: a draft must share the tokenizer"
            )));
        }
        if max == 0 {
            return Err(GenerateError::Options("a draft model must guess at least one token per pass".into()));
        }
        self.draft = Some(Box::new(Session::new(draft, self.context())));
        self.draft_max = max;
        Ok(())
    }

    /// The context length.
    pub fn context(&self) -> usize {
        self.state.capacity()
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) {
        self.state.cache.clear();
        self.cached.clear();
        if let Some(d) = self.draft.as_mut() {
            d.reset();
        }
    }

    /// Runs `prompt`, reusing the longest cached prefix; returns the logits after its last
    /// token and how many tokens were computed.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(&[f32], usize), GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::Options("the prompt is empty".into()));
        }
        if prompt.len() > self.context() {
            return Err(ModelError::ContextOverflow { needed: prompt.len(), context: self.context() }.into());
        }
        let mut common = self.cached.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        // At least one token must run to produce logits.
        common = common.min(prompt.len() - 1);
        self.state.cache.truncate(common);
        self.cached.truncate(common);
        let rest = &prompt[common..];
        let logits = self.model.forward(&mut self.state, rest, false)?;
        self.cached.extend_from_slice(rest);
        Ok((logits, rest.len()))
    }

    /// Generates from `prompt`, calling `on_token` for each token; `on_token` returns false
    /// to stop early.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(&TokenEvent) -> bool,
    ) -> Result<Generation, GenerateError> {
        let mut decoder = Decoder::new(tokenizer, prompt, opts)?;
        let t0 = Instant::now();
        let (logits, computed) = self.prefill(prompt)?;
        // Logits rows: row 0 follows the last token fed, row r + 1 follows draft[r].
        let mut rows = logits.to_vec();
        let prompt_time = t0.elapsed();
        let t1 = Instant::now();
        let vocab = self.model.config.vocab_size;
        let mut draft: Vec<u32> = Vec::new();
        let mut row = 0;
        // Cache length up to and including the token row 0 follows.
        let mut base = self.cached.len();
        let mut length = match (&self.draft, opts.lookup) {
            (Some(_), _) => match opts.draft_max.unwrap_or(self.draft_max) {
                0 => None,
                max => Some(DraftLength::new(DRAFT_START, max)),
            },
            (None, 0) => None,
            (None, n) => Some(DraftLength::new(n, n)),
        };
        let mut stats = SpeculationStats::default();
        while let Some(event) = decoder.next(&rows[row * vocab..(row + 1) * vocab])? {
            let tok = event.token;
            if !on_token(&event) {
                decoder.cancel();
                break;
            }
            let valid = base + row;
            if !decoder.wants_more() || valid >= self.context() {
                break;
            }
            if draft.get(row) == Some(&tok) {
                // The check already ran the model past this token.
                row += 1;
                stats.accepted += 1;
                continue;
            }
            if let Some(length) = length.as_mut() {
                length.update(draft.len(), row);
            }
            // Forget the keys and values of rejected guesses.
            self.state.cache.truncate(valid);
            self.cached.truncate(valid);
            let room = (self.context() - valid - 1).min(opts.max_tokens - decoder.tokens().len() - 1);
            draft = match length.as_ref() {
                Some(length) if room > 0 => self.propose(tok, length.get().min(room))?,
                _ => Vec::new(),
            };
            let mut input = Vec::with_capacity(1 + draft.len());
            input.push(tok);
            input.extend_from_slice(&draft);
            let logits = self.model.forward(&mut self.state, &input, !draft.is_empty())?;
            rows.clear();
            rows.extend_from_slice(logits);
            self.cached.extend_from_slice(&input);
            if !draft.is_empty() {
                stats.drafted += draft.len();
                stats.checks += 1;
            }
            base = valid + 1;
            row = 0;
        }
        // Leave the cache holding exactly the conversation (no unchecked guesses).
        let valid = (base + row).min(self.cached.len());
        self.state.cache.truncate(valid);
        self.cached.truncate(valid);
        if let Some(tail) = decoder.finish() {
            on_token(&tail);
        }
        let mut generation = decoder.into_generation(computed, prompt_time, t1.elapsed());
        generation.speculation = stats;
        Ok(generation)
    }

    /// Guesses up to `max` tokens to follow the cached tokens and `last`: from the draft
    /// model when there is one, else by prompt lookup.
    fn propose(&mut self, last: u32, max: usize) -> Result<Vec<u32>, GenerateError> {
        let mut context = Vec::with_capacity(self.cached.len() + 1 + max);
        context.extend_from_slice(&self.cached);
        context.push(last);
        match self.draft.as_mut() {
            Some(draft) => draft.guess(context, max),
            None => Ok(lookup_draft(&context, max)),
        }
    }

    /// This session's model, as a draft: its greedy continuation of `context`, `max` tokens,
    /// computing only what its cache lacks.
    pub(crate) fn guess(&mut self, mut context: Vec<u32>, max: usize) -> Result<Vec<u32>, GenerateError> {
        let from = context.len();
        for _ in 0..max {
            let (logits, _) = self.prefill(&context)?;
            context.push(argmax(logits));
        }
        Ok(context.split_off(from))
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// One sequence's side of generation, apart from the model: sampling, end-of-generation and
/// stop strings, the token limit, and turning tokens into text. [`Session::generate`] and the
/// batch scheduler both drive it, so a request decodes the same way in either.
pub struct Decoder<'t> {
    eog: Vec<u32>,
    opts: GenerateOptions,
    sampler: Sampler,
    stream: TokenStream<'t>,
    text: String,
    emitted: usize,
    tokens: Vec<u32>,
    history: Vec<u32>,
    finish: Option<FinishReason>,
    /// The end-of-generation token that stopped it, if one did.
    eog_hit: Option<u32>,
    prompt_tokens: usize,
    constraint: Option<ConstraintState>,
    masked: Vec<f32>,
}

impl<'t> Decoder<'t> {
    /// A decoder for a reply to `prompt`; checks the options.
    pub fn new(tokenizer: &'t Tokenizer, prompt: &[u32], opts: &GenerateOptions) -> Result<Decoder<'t>, GenerateError> {
        opts.sampling.validate().map_err(GenerateError::Options)?;
        Ok(Decoder {
            eog: tokenizer.end_of_generation_ids(),
            opts: opts.clone(),
            sampler: Sampler::new(opts.sampling.clone()),
            stream: TokenStream::new(tokenizer, true),
            text: String::new(),
            emitted: 0,
            tokens: Vec::new(),
            history: prompt.to_vec(),
            finish: if opts.max_tokens == 0 { Some(FinishReason::Length) } else { None },
            eog_hit: None,
            prompt_tokens: prompt.len(),
            constraint: opts.constraint.as_ref().map(ConstraintState::start),
            masked: Vec::new(),
        })
    }

    /// Picks the next token from the logits that followed the last one. None once generation
    /// is over ([`Decoder::finish_reason`] says why).
    pub fn next(&mut self, logits: &[f32]) -> Result<Option<TokenEvent<'_>>, GenerateError> {
        if !self.wants_more() {
            return Ok(None);
        }
        let tok = match self.pick_constrained(logits)? {
            Some(tok) => tok,
            None if self.finish.is_some() => return Ok(None),
            None => self.sampler.sample(logits, &self.history),
        };
        if !self.opts.ignore_eos && self.eog.contains(&tok) {
            self.finish = Some(FinishReason::Stop);
            self.eog_hit = Some(tok);
            return Ok(None);
        }
        if let Some(c) = self.constraint.as_mut() {
            c.commit(tok)?;
        }
        let lp = self.opts.logprobs.map(|n| logprobs(logits, tok, n));
        self.tokens.push(tok);
        self.history.push(tok);
        let piece = self.stream.push(tok)?;
        self.text.push_str(&piece);
        let (safe, stopped) = stop_scan(&self.text, self.emitted, &self.opts.stop);
        if stopped {
            self.text.truncate(safe);
            self.finish = Some(FinishReason::Stop);
        }
        let from = std::mem::replace(&mut self.emitted, safe);
        Ok(Some(TokenEvent { token: tok, text: &self.text[from..safe], logprobs: lp }))
    }

    /// The next token where a constraint decides or restricts it: None where sampling is
    /// free, or where the grammar is complete (then `finish` is set).
    fn pick_constrained(&mut self, logits: &[f32]) -> Result<Option<u32>, GenerateError> {
        let Some(c) = self.constraint.as_mut() else { return Ok(None) };
        let tok = match c.forced() {
            Some(tok) => tok,
            None => match c.step()? {
                Step::Free => self.sampler.sample(logits, &self.history),
                Step::Done => {
                    self.finish = Some(FinishReason::Stop);
                    return Ok(None);
                }
                Step::Mask(mask) => {
                    self.masked.clear();
                    self.masked.extend_from_slice(logits);
                    apply_mask(&mask, &mut self.masked);
                    self.sampler.sample(&self.masked, &self.history)
                }
            },
        };
        Ok(Some(c.check(tok)?))
    }

    /// Whether a constraint's grammar applies now (inside a tool call, or throughout).
    pub fn constrained_now(&self) -> bool {
        self.constraint.as_ref().is_some_and(|c| c.is_active())
    }

    /// Whether another token should be generated (no stop yet, under the token limit).
    pub fn wants_more(&self) -> bool {
        self.finish.is_none() && self.tokens.len() < self.opts.max_tokens
    }

    /// Tokens still allowed under the limit.
    pub fn tokens_left(&self) -> usize {
        self.opts.max_tokens.saturating_sub(self.tokens.len())
    }

    /// The last token generated.
    pub fn last_token(&self) -> Option<u32> {
        self.tokens.last().copied()
    }

    /// Stops here because the caller asked.
    pub fn cancel(&mut self) {
        self.finish.get_or_insert(FinishReason::Cancelled);
    }

    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The end-of-generation token that ended generation, if one did (it is not among
    /// [`Decoder::tokens`]).
    pub fn end_token(&self) -> Option<u32> {
        self.eog_hit
    }

    /// Ends generation (at the limit or the end of the context, unless it already stopped)
    /// and returns the text still held back, if any, as a last event.
    pub fn finish(&mut self) -> Option<TokenEvent<'_>> {
        let finish = *self.finish.get_or_insert(FinishReason::Length);
        if finish != FinishReason::Stop || !self.text.is_empty() {
            let rest = self.stream.finish();
            self.text.push_str(&rest);
        }
        if self.emitted < self.text.len() && finish != FinishReason::Cancelled {
            let (safe, stopped) = stop_scan(&self.text, self.emitted, &self.opts.stop);
            let end = if stopped { safe } else { self.text.len() };
            self.text.truncate(end);
            if self.emitted < end {
                let from = std::mem::replace(&mut self.emitted, end);
                return Some(TokenEvent {
                    token: self.last_token().unwrap_or(0),
                    text: &self.text[from..end],
                    logprobs: None,
                });
            }
        }
        None
    }

    /// The finished generation.
    pub fn into_generation(
        self,
        prompt_tokens_computed: usize,
        prompt_time: Duration,
        generate_time: Duration,
    ) -> Generation {
        Generation {
            tokens: self.tokens,
            text: self.text,
            finish: self.finish.unwrap_or(FinishReason::Length),
            prompt_tokens: self.prompt_tokens,
            prompt_tokens_computed,
            prompt_time,
            generate_time,
            speculation: SpeculationStats::default(),
        }
    }
}

/// Scans `text` for stop strings. Returns how far the text may be shown (up to a stop
/// string, or up to the longest tail that could still become one) and whether one was found.
fn stop_scan(text: &str, from: usize, stops: &[String]) -> (usize, bool) {
    let mut cut = None;
    for s in stops.iter().filter(|s| !s.is_empty()) {
        // A stop string may start before `from` if its beginning was held back.
        let start = from.saturating_sub(s.len());
        let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        if let Some(i) = text[start..].find(s.as_str()) {
            cut = Some(cut.map_or(start + i, |c: usize| c.min(start + i)));
        }
    }
    if let Some(c) = cut {
        return (c, true);
    }
    let mut safe = text.len();
    for s in stops.iter().filter(|s| !s.is_empty()) {
        for k in (1..s.len()).rev() {
            if text.len() >= k
                && s.is_char_boundary(k)
                && text.is_char_boundary(text.len() - k)
                && text.ends_with(&s[..k])
            {
                safe = safe.min(text.len() - k);
                break;
            }
        }
    }
    (safe.max(from), false)
}

#[cfg(test)]
mod tests {
    use super::stop_scan;

    #[test]
    fn stop_strings_cut_and_hold_back() {
        let stops = vec!["</s>".to_string(), "User:".to_string()];
        assert_eq!(stop_scan("hello", 0, &stops), (5, false));
        assert_eq!(stop_scan("hello </", 0, &stops), (6, false));
        assert_eq!(stop_scan("hello </s> more", 0, &stops), (6, true));
        assert_eq!(stop_scan("a Us", 0, &stops), (2, false));
        assert_eq!(stop_scan("a User: x", 2, &stops), (2, true));
        assert_eq!(stop_scan("héllo", 0, &[]), (6, false));
    }
}
