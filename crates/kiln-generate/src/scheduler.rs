//! Continuous batching: many requests decoded together on one model.
//!
//! One engine thread owns `parallel` slots, each a sequence with its own KV cache. Between
//! steps, finished or abandoned sequences leave and queued requests join; every step feeds
//! one prompt chunk to each sequence still reading its prompt, then decodes the next token of
//! all the others in a single pass ([`Model::decode_batch`]), so the weights are read once
//! per step however many sequences run. A request answers the same whatever shares its
//! batch: decode rows are batch-invariant and prompt chunks are aligned to absolute
//! positions, so a prompt is cut exactly as `Model::forward` would cut it alone.
//!
//! A request may guess ahead (prompt lookup, or the scheduler's draft model): its token and
//! guesses then ride in the same pass as a few rows ([`Model::forward_many`]), and the guesses
//! its decoder would have picked are kept, so it answers exactly as without guessing.
//!
//! Requests and their callers meet through [`Job::sink`]: the engine calls it with each
//! piece of text, and a `false` return (the client went away) frees the slot at once.

use crate::generate::{Decoder, FinishReason, GenerateError, GenerateOptions, Session, TokenEvent, DRAFT_START};
use crate::sampler::TokenLogprob;
use crate::speculate::{lookup_draft, DraftLength, SpeculationStats};
use kiln_model::{BatchState, Model, State};
use kiln_text::Tokenizer;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Prompt tokens fed per chunk: `Model::forward`'s own pass size, so that a chunked prompt
/// rounds exactly as the whole prompt would.
const PROMPT_CHUNK: usize = 64;

/// Most prompt tokens fed per step across all sequences, so running decodes are not stalled
/// for long by a newcomer's prompt.
const PROMPT_BUDGET: usize = 256;

/// How the scheduler is sized.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoded together at most (slots).
    pub parallel: usize,
    /// Requests waiting for a slot at most; beyond that `submit` answers [`SubmitError::Busy`].
    pub queue: usize,
    /// Positions per slot (prompt plus reply).
    pub context: usize,
}

/// Something the engine tells a request's caller.
#[derive(Debug)]
pub enum Event {
    /// New text (possibly empty while a stop string is pending) for one generated token.
    Token {
        /// The token id.
        token: u32,
        /// Text to show.
        text: String,
        /// Log-probability of the token and the top alternatives, when asked for.
        logprobs: Option<(TokenLogprob, Vec<TokenLogprob>)>,
    },
    /// The request finished.
    Done(Summary),
    /// The request failed; nothing more follows.
    Failed(String),
}

/// How a request went.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Why generation ended.
    pub finish: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values were reused from the slot's cache.
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Their ids, then the end-of-generation token that stopped generation, if one did (the
    /// whole reply as a model is trained on it).
    pub tokens: Vec<u32>,
    /// From joining a slot to the first token.
    pub prompt_time: Duration,
    /// From the first token to the end.
    pub generate_time: Duration,
    /// Guesses drafted and kept, when the request guessed (prompt lookup or a draft model).
    pub speculation: SpeculationStats,
}

/// A request: a tokenized prompt, what to generate, and where the results go.
pub struct Job {
    /// Prompt tokens (checked against the context by [`Scheduler::submit`]).
    pub prompt: Vec<u32>,
    /// Generation settings.
    pub options: GenerateOptions,
    /// Receives the events in order; returning false abandons the request.
    pub sink: Box<dyn FnMut(Event) -> bool + Send>,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Every slot is busy and the queue is full: try again later.
    #[error("the server is busy: {running} requests running and {queued} queued (the limit)")]
    Busy {
        /// Requests decoding.
        running: usize,
        /// Requests waiting.
        queued: usize,
    },
    /// The prompt leaves no room to generate.
    #[error("the prompt is {prompt} tokens, but the context is {context} tokens (room is needed for at least one generated token)")]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context length.
        context: usize,
    },
    /// An empty prompt.
    #[error("the prompt is empty")]
    Empty,
    /// Bad generation settings.
    #[error("{0}")]
    Options(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

/// Counters the engine keeps for `/metrics`.
#[derive(Default)]
struct Counters {
    /// Requests accepted and not yet finished (running + queued).
    admitted: AtomicUsize,
    running: AtomicUsize,
    requests_total: AtomicU64,
    prompt_tokens_total: AtomicU64,
    generated_tokens_total: AtomicU64,
    kv_positions_used: AtomicUsize,
    /// f64 bits: generated tokens per second over the last few seconds.
    tokens_per_second: AtomicU64,
}

/// A snapshot of the engine's counters.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Requests decoding now.
    pub running: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Requests finished or failed since start.
    pub requests_total: u64,
    /// Prompt tokens processed since start (reused ones included).
    pub prompt_tokens_total: u64,
    /// Tokens generated since start.
    pub generated_tokens_total: u64,
    /// Generated tokens per second over the last few seconds.
    pub tokens_per_second: f64,
    /// KV-cache positions in use, over all slots.
    pub kv_positions_used: usize,
    /// KV-cache positions allocated, over all slots.
    pub kv_positions_total: usize,
}

/// A smaller model with the same tokenizer whose greedy guesses every request (unless it
/// says otherwise) has checked in its decoding pass.
pub struct Draft {
    /// The draft model.
    pub model: Arc<Model>,
    /// Most tokens it guesses per pass, unless a request asks for fewer.
    pub max: usize,
}

/// The handle the server holds: submit requests, read metrics. Dropping it stops the engine
/// once running requests are done.
pub struct Scheduler {
    jobs: Option<Sender<Job>>,
    counters: Arc<Counters>,
    config: SchedulerConfig,
    worker: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the engine thread.
    pub fn start(model: Arc<Model>, tokenizer: Arc<Tokenizer>, config: SchedulerConfig) -> Scheduler {
        Scheduler::start_with_draft(model, tokenizer, config, None)
    }

    /// Starts the engine thread, with a draft model for speculative decoding.
    pub fn start_with_draft(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        config: SchedulerConfig,
        draft: Option<Draft>,
    ) -> Scheduler {
        assert!(config.parallel > 0 && config.context > 1, "scheduler needs a slot and room in the context");
        let (tx, rx) = channel();
        let counters = Arc::new(Counters::default());
        let engine_counters = counters.clone();
        let engine_config = config.clone();
        let worker = std::thread::Builder::new()
            .name("kiln-engine".into())
            .spawn(move || {
                let draft = draft.as_ref().map(|d| (&*d.model, d.max));
                Engine::new(&model, draft, &tokenizer, engine_config, engine_counters).run(rx)
            })
            .expect("spawn the engine thread");
        Scheduler { jobs: Some(tx), counters, config, worker: Some(worker) }
    }

    /// Positions per slot.
    pub fn context(&self) -> usize {
        self.config.context
    }

    /// Accepts a group of requests (the `n` choices of one API call) together or not at all.
    pub fn submit(&self, jobs: Vec<Job>) -> Result<(), SubmitError> {
        for job in &jobs {
            if job.prompt.is_empty() {
                return Err(SubmitError::Empty);
            }
            if job.prompt.len() >= self.config.context {
                return Err(SubmitError::TooLong { prompt: job.prompt.len(), context: self.config.context });
            }
            job.options.sampling.validate().map_err(SubmitError::Options)?;
        }
        let limit = self.config.parallel + self.config.queue;
        let n = jobs.len();
        let before = self.counters.admitted.fetch_add(n, Ordering::SeqCst);
        if before + n > limit {
            self.counters.admitted.fetch_sub(n, Ordering::SeqCst);
            let running = self.counters.running.load(Ordering::SeqCst);
            return Err(SubmitError::Busy { running, queued: before.saturating_sub(running) });
        }
        let sender = self.jobs.as_ref().ok_or(SubmitError::Stopped)?;
        for job in jobs {
            if sender.send(job).is_err() {
                return Err(SubmitError::Stopped);
            }
        }
        Ok(())
    }

    /// The counters now.
    pub fn metrics(&self) -> Metrics {
        let c = &self.counters;
        let running = c.running.load(Ordering::SeqCst);
        Metrics {
            running,
            queued: c.admitted.load(Ordering::SeqCst).saturating_sub(running),
            requests_total: c.requests_total.load(Ordering::Relaxed),
            prompt_tokens_total: c.prompt_tokens_total.load(Ordering::Relaxed),
            generated_tokens_total: c.generated_tokens_total.load(Ordering::Relaxed),
            tokens_per_second: f64::from_bits(c.tokens_per_second.load(Ordering::Relaxed)),
            kv_positions_used: c.kv_positions_used.load(Ordering::Relaxed),
            kv_positions_total: self.config.parallel * self.config.context,
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// One sequence of the batch.
struct Slot<'t> {
    state: State,
    /// Tokens whose keys and values the cache holds, in order (for prefix reuse).
    fed: Vec<u32>,
    /// The logits that followed the first `n` tokens of `fed`, a whole prompt: a request with
    /// the same prompt copies the cache and samples from these, computing nothing.
    prompt_logits: Option<(usize, Vec<f32>)>,
    active: Option<Active<'t>>,
    /// The draft model's side of this sequence, once a request here has used it.
    draft: Option<Session<'t>>,
}

/// A request in a slot.
struct Active<'t> {
    sink: Box<dyn FnMut(Event) -> bool + Send>,
    decoder: Decoder<'t>,
    prompt: Vec<u32>,
    /// Prompt tokens in the cache so far.
    prompt_done: usize,
    cached_tokens: usize,
    joined: Instant,
    first_token: Option<Instant>,
    /// When the request joined the queue, for fairness among prompts.
    order: u64,
    /// How many tokens to guess per pass, when the request guesses (by prompt lookup, or by
    /// the draft model when `by_draft`).
    guess: Option<DraftLength>,
    by_draft: bool,
    speculation: SpeculationStats,
}

struct Engine<'m> {
    model: &'m Model,
    /// The draft model and its most tokens per pass.
    draft: Option<(&'m Model, usize)>,
    tokenizer: &'m Tokenizer,
    slots: Vec<Slot<'m>>,
    queue: VecDeque<Job>,
    batch: BatchState,
    counters: Arc<Counters>,
    next_order: u64,
    /// (when, tokens generated) per step, for the recent throughput.
    recent: VecDeque<(Instant, usize)>,
}

impl<'m> Engine<'m> {
    fn new(
        model: &'m Model,
        draft: Option<(&'m Model, usize)>,
        tokenizer: &'m Tokenizer,
        config: SchedulerConfig,
        counters: Arc<Counters>,
    ) -> Engine<'m> {
        // Caches are zero-filled lazily by the OS, so idle slots cost address space, not memory.
        let slots = (0..config.parallel)
            .map(|_| Slot {
                state: model.new_state(config.context),
                fed: Vec::new(),
                prompt_logits: None,
                active: None,
                draft: None,
            })
            .collect();
        Engine {
            model,
            draft,
            tokenizer,
            slots,
            queue: VecDeque::new(),
            batch: BatchState::default(),
            counters,
            next_order: 0,
            recent: VecDeque::new(),
        }
    }

    fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let idle = self.slots.iter().all(|s| s.active.is_none()) && self.queue.is_empty();
            if idle {
                match jobs.recv() {
                    Ok(job) => self.queue.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = jobs.try_recv() {
                self.queue.push_back(job);
            }
            self.admit();
            let step = catch_unwind(AssertUnwindSafe(|| self.step()));
            if step.is_err() {
                // A bug must not take the server down: fail what was running, start clean.
                for slot in &mut self.slots {
                    if let Some(mut a) = slot.active.take() {
                        self.counters.running.fetch_sub(1, Ordering::SeqCst);
                        self.counters.admitted.fetch_sub(1, Ordering::SeqCst);
                        (a.sink)(Event::Failed("internal error while generating; the request was dropped".into()));
                    }
                    slot.state.cache.clear();
                    slot.fed.clear();
                    slot.prompt_logits = None;
                }
            }
            self.publish();
        }
    }

    /// Moves queued requests into free slots, each to the slot whose cache shares the longest
    /// prefix with its prompt.
    fn admit(&mut self) {
        while self.slots.iter().any(|s| s.active.is_none()) {
            let Some(job) = self.queue.pop_front() else { break };
            let best = (0..self.slots.len())
                .filter(|&i| self.slots[i].active.is_none())
                .max_by_key(|&i| (common_prefix(&self.slots[i].fed, &job.prompt), usize::MAX - self.slots[i].fed.len()))
                .expect("a free slot");
            let Job { prompt, options, mut sink } = job;
            let by_draft = self.draft.is_some() && options.lookup == 0;
            let guess = match (self.draft, options.lookup) {
                (_, n) if n > 0 => Some(DraftLength::new(n, n)),
                (Some((_, max)), _) => match options.draft_max.unwrap_or(max) {
                    0 => None,
                    max => Some(DraftLength::new(DRAFT_START, max)),
                },
                (None, _) => None,
            };
            let decoder = match Decoder::new(self.tokenizer, &prompt, &options) {
                Ok(d) => d,
                Err(e) => {
                    self.counters.admitted.fetch_sub(1, Ordering::SeqCst);
                    sink(Event::Failed(e.to_string()));
                    continue;
                }
            };
            let slot = &mut self.slots[best];
            let common = reusable_prefix(common_prefix(&slot.fed, &prompt), prompt.len());
            slot.state.cache.truncate(common);
            slot.fed.truncate(common);
            if slot.prompt_logits.as_ref().is_some_and(|(n, _)| *n > common) {
                slot.prompt_logits = None;
            }
            self.counters.running.fetch_add(1, Ordering::SeqCst);
            self.counters.prompt_tokens_total.fetch_add(prompt.len() as u64, Ordering::Relaxed);
            slot.active = Some(Active {
                sink,
                decoder,
                prompt,
                prompt_done: common,
                cached_tokens: common,
                joined: Instant::now(),
                first_token: None,
                order: self.next_order,
                guess,
                by_draft,
                speculation: SpeculationStats::default(),
            });
            self.next_order += 1;
        }
    }

    /// Feeds prompt chunks, then decodes one token for every sequence past its prompt.
    fn step(&mut self) {
        let model = self.model;
        // Prompts, oldest request first, within the step's budget.
        let mut reading: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.as_ref().is_some_and(|a| a.prompt_done < a.prompt.len()))
            .collect();
        reading.sort_by_key(|&i| self.slots[i].active.as_ref().map(|a| a.order));
        let mut budget = PROMPT_BUDGET;
        for i in reading {
            match self.borrow_prefix(i) {
                Borrowed::Wait | Borrowed::Whole => continue,
                Borrowed::Part => {}
            }
            let a = self.slots[i].active.as_ref().expect("active");
            // A last prompt token rides with the decoding rows (bit-identical to feeding it
            // alone), so N samples of one prompt cost one pass here, not N.
            if a.prompt.len() - a.prompt_done == 1 {
                continue;
            }
            if budget == 0 {
                break;
            }
            let slot = &mut self.slots[i];
            let a = slot.active.as_mut().expect("active");
            let end = (a.prompt_done / PROMPT_CHUNK + 1) * PROMPT_CHUNK;
            let end = end.min(a.prompt.len());
            let chunk = &a.prompt[a.prompt_done..end];
            budget = budget.saturating_sub(chunk.len());
            let result = model.forward(&mut slot.state, chunk, false).map(|l| l.to_vec());
            slot.fed.extend_from_slice(chunk);
            a.prompt_done = end;
            match result {
                Err(e) => self.fail(i, &GenerateError::from(e)),
                Ok(logits) if end == a.prompt.len() => self.prompt_read(i, logits),
                Ok(_) => {}
            }
        }

        // Decode: every sequence with a token waiting to be fed, its last prompt token or the
        // token it sampled last.
        let decoding: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.as_ref().is_some_and(|a| next_token(a).is_some()))
            .collect();
        if decoding.is_empty() {
            return;
        }
        let tokens: Vec<u32> = decoding
            .iter()
            .map(|&i| self.slots[i].active.as_ref().and_then(next_token).expect("a token to feed"))
            .collect();
        // Requests that asked for prompt lookup guess what follows their token; the guesses
        // are checked in the same pass.
        let drafts: Vec<Vec<u32>> = decoding.iter().zip(&tokens).map(|(&i, &t)| self.propose(i, t)).collect();
        let speculating = drafts.iter().any(|d| !d.is_empty());
        let inputs: Vec<Vec<u32>> =
            tokens.iter().zip(&drafts).map(|(&t, d)| std::iter::once(t).chain(d.iter().copied()).collect()).collect();
        let mut states: Vec<&mut State> = Vec::with_capacity(decoding.len());
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if decoding.contains(&i) {
                states.push(&mut slot.state);
            }
        }
        let vocab = model.config.vocab_size;
        // The batch's buffers are lent out for the step, so its logits can be read while the
        // slots are updated (no copy of batch × vocab floats per step).
        let mut batch = std::mem::take(&mut self.batch);
        let result = if speculating {
            let inputs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
            model.forward_many(&mut batch, &mut states, &inputs)
        } else {
            model.decode_batch(&mut batch, &mut states, &tokens)
        };
        let mut generated = 0;
        match result {
            Ok(logits) => {
                let mut row0 = 0;
                for (k, &i) in decoding.iter().enumerate() {
                    let slot = &mut self.slots[i];
                    // The cache length once the token is fed; the guesses lie past it.
                    let base = slot.fed.len() + 1;
                    slot.fed.extend_from_slice(&inputs[k]);
                    let rows = &logits[row0 * vocab..(row0 + inputs[k].len()) * vocab];
                    row0 += inputs[k].len();
                    let a = slot.active.as_mut().expect("active");
                    if a.prompt_done < a.prompt.len() {
                        a.prompt_done = a.prompt.len();
                        self.prompt_read(i, rows.to_vec());
                        generated += 1;
                    } else {
                        generated += self.emit_checked(i, rows, base, &drafts[k]);
                    }
                }
            }
            Err(e) => {
                let e = GenerateError::from(e);
                for &i in &decoding {
                    self.fail(i, &e);
                }
            }
        }
        self.batch = batch;
        self.recent.push_back((Instant::now(), generated));
    }

    /// Guesses of what follows `token` in slot `i`, by prompt lookup or the draft model (none
    /// unless its request guesses, it is past its prompt, and there is room).
    fn propose(&mut self, i: usize, token: u32) -> Vec<u32> {
        let draft_model = self.draft.map(|(m, _)| m);
        let slot = &mut self.slots[i];
        let Some(a) = slot.active.as_ref() else { return Vec::new() };
        let Some(length) = a.guess.as_ref() else { return Vec::new() };
        if a.prompt_done < a.prompt.len() {
            return Vec::new();
        }
        // Guesses stop short of the last position, so the context-end check sees while checking
        // what it would see decoding one by one.
        let room = slot.state.capacity().saturating_sub(slot.fed.len() + 2);
        let left = a.decoder.tokens_left().saturating_sub(1);
        let max = length.get().min(room).min(left).min(Model::max_rows() - 1);
        let by_draft = a.by_draft;
        let mut context = Vec::with_capacity(slot.fed.len() + 1);
        context.extend_from_slice(&slot.fed);
        context.push(token);
        match draft_model {
            Some(model) if by_draft && max > 0 => {
                let capacity = slot.state.capacity();
                let session = slot.draft.get_or_insert_with(|| Session::new(model, capacity));
                // Guessing only saves time: a draft that fails costs the guesses, not the request.
                session.guess(context, max).unwrap_or_default()
            }
            _ => lookup_draft(&context, max),
        }
    }

    /// Samples slot `i`'s tokens from `rows` (the logits after its token and after each of
    /// `draft`), keeping guesses while the decoder picks them, exactly as plain decoding would;
    /// then forgets the keys and values of the rest. `base` is the cache length up to its
    /// token. Returns the tokens generated.
    fn emit_checked(&mut self, i: usize, rows: &[f32], base: usize, draft: &[u32]) -> usize {
        let vocab = self.model.config.vocab_size;
        if !draft.is_empty() {
            if let Some(a) = self.slots[i].active.as_mut() {
                a.speculation.drafted += draft.len();
                a.speculation.checks += 1;
            }
        }
        let mut emitted = 0;
        let mut last = 0;
        for (j, row) in rows.chunks_exact(vocab).enumerate() {
            last = j;
            let before = self.slots[i].active.as_ref().map_or(0, |a| a.decoder.tokens().len());
            self.emit(i, row);
            let Some(a) = self.slots[i].active.as_mut() else { break };
            let picked = a.decoder.tokens().len() > before;
            emitted += usize::from(picked);
            if j < draft.len() && picked && a.decoder.last_token() == Some(draft[j]) {
                a.speculation.accepted += 1;
                continue;
            }
            if let (Some(length), false) = (a.guess.as_mut(), draft.is_empty()) {
                length.update(draft.len(), j);
            }
            break;
        }
        // The cache keeps what precedes the last token picked (fed next, as in plain decoding).
        let slot = &mut self.slots[i];
        slot.state.cache.truncate(base + last);
        slot.fed.truncate(base + last);
        emitted
    }
    /// Slot `i` has read its whole prompt: keeps the logits for requests with the same
    /// prompt, and samples the first token.
    fn prompt_read(&mut self, i: usize, logits: Vec<f32>) {
        let n = self.slots[i].fed.len();
        self.emit(i, &logits);
        // Unless the request failed and its cache was cleared.
        let slot = &mut self.slots[i];
        if slot.fed.len() >= n {
            slot.prompt_logits = Some((n, logits));
        }
    }

    /// Copies into slot `i` the longest part of its prompt that another slot's cache holds
    /// (finished requests included), so a prompt shared by several requests, such as the N
    /// samples of one question, is computed once: a whole prompt with the logits that
    /// followed it, where a slot kept them, else the part that answers as a fresh run would.
    /// Waits while an older request is still computing more of that prompt, rather than
    /// computing it twice.
    fn borrow_prefix(&mut self, i: usize) -> Borrowed {
        let a = self.slots[i].active.as_ref().expect("active");
        let (prompt, order) = (&a.prompt, a.order);
        let whole = (0..self.slots.len()).find(|&j| {
            let s = &self.slots[j];
            j != i
                && s.prompt_logits.as_ref().is_some_and(|(n, _)| *n == prompt.len())
                && common_prefix(&s.fed, prompt) == prompt.len()
        });
        if let Some(j) = whole {
            let len = prompt.len();
            let (dst, src) = pair_mut(&mut self.slots, i, j);
            dst.state.cache.copy_prefix_from(&src.state.cache, len);
            let logits = src.prompt_logits.as_ref().map(|(_, l)| l.clone()).expect("checked");
            let a = dst.active.as_mut().expect("active");
            dst.fed.clear();
            dst.fed.extend_from_slice(&a.prompt);
            a.prompt_done = a.prompt.len();
            a.cached_tokens = a.prompt.len();
            self.prompt_read(i, logits);
            return Borrowed::Whole;
        }
        let mut best = (a.prompt_done, None);
        for (j, slot) in self.slots.iter().enumerate().filter(|&(j, _)| j != i) {
            let usable = reusable_prefix(common_prefix(&slot.fed, prompt), prompt.len());
            if usable > best.0 {
                best = (usable, Some(j));
            }
        }
        let coming = self.slots.iter().filter_map(|s| s.active.as_ref()).any(|b| {
            let gain = if b.prompt == *prompt {
                prompt.len()
            } else {
                reusable_prefix(common_prefix(&b.prompt, prompt), prompt.len())
            };
            b.order < order && b.prompt_done < b.prompt.len() && gain > best.0
        });
        if coming {
            return Borrowed::Wait;
        }
        if let (usable, Some(j)) = best {
            let (dst, src) = pair_mut(&mut self.slots, i, j);
            dst.state.cache.copy_prefix_from(&src.state.cache, usable);
            let a = dst.active.as_mut().expect("active");
            dst.fed.clear();
            dst.fed.extend_from_slice(&a.prompt[..usable]);
            dst.prompt_logits = None;
            a.prompt_done = usable;
            a.cached_tokens = usable;
        }
        Borrowed::Part
    }

    /// Samples slot `i`'s next token from `logits` and hands the text to its caller; ends the
    /// request when it is done or its caller has gone.
    fn emit(&mut self, i: usize, logits: &[f32]) {
        let capacity = self.slots[i].state.capacity();
        let slot = &mut self.slots[i];
        let a = slot.active.as_mut().expect("active");
        let alive = match a.decoder.next(logits) {
            Err(e) => {
                self.fail(i, &e);
                return;
            }
            Ok(None) => true,
            Ok(Some(TokenEvent { token, text, logprobs })) => {
                a.first_token.get_or_insert_with(Instant::now);
                self.counters.generated_tokens_total.fetch_add(1, Ordering::Relaxed);
                (a.sink)(Event::Token { token, text: text.to_string(), logprobs })
            }
        };
        if !alive {
            a.decoder.cancel();
        }
        let room = slot.fed.len() < capacity;
        if a.decoder.wants_more() && room && alive {
            return;
        }
        self.finish(i);
    }

    /// Ends slot `i`'s request normally (stop, limit, context end, or its caller left).
    fn finish(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(mut a) = slot.active.take() else { return };
        let now = Instant::now();
        if let Some(TokenEvent { token, text, .. }) = a.decoder.finish() {
            let text = text.to_string();
            (a.sink)(Event::Token { token, text, logprobs: None });
        }
        let first = a.first_token.unwrap_or(now);
        let summary = Summary {
            finish: a.decoder.finish_reason().unwrap_or(FinishReason::Length),
            prompt_tokens: a.prompt.len(),
            cached_tokens: a.cached_tokens,
            completion_tokens: a.decoder.tokens().len(),
            tokens: a.decoder.tokens().iter().copied().chain(a.decoder.end_token()).collect(),
            prompt_time: first - a.joined,
            generate_time: now - first,
            speculation: a.speculation,
        };
        // Counters first: a caller that sees Done may read them at once.
        self.release();
        (a.sink)(Event::Done(summary));
    }

    fn fail(&mut self, i: usize, e: &GenerateError) {
        let slot = &mut self.slots[i];
        if let Some(mut a) = slot.active.take() {
            // The cache may hold a partial pass: forget it.
            slot.state.cache.clear();
            slot.fed.clear();
            slot.prompt_logits = None;
            self.release();
            (a.sink)(Event::Failed(e.to_string()));
        }
    }

    fn release(&self) {
        self.counters.running.fetch_sub(1, Ordering::SeqCst);
        self.counters.admitted.fetch_sub(1, Ordering::SeqCst);
        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
    }

    fn publish(&mut self) {
        let used: usize = self.slots.iter().map(|s| s.state.len()).sum();
        self.counters.kv_positions_used.store(used, Ordering::Relaxed);
        let now = Instant::now();
        let window = Duration::from_secs(5);
        while self.recent.front().is_some_and(|&(t, _)| now - t > window) {
            self.recent.pop_front();
        }
        let tokens: usize = self.recent.iter().map(|&(_, n)| n).sum();
        let rate = match self.recent.front() {
            Some(&(t0, _)) if tokens > 0 => tokens as f64 / (now - t0).as_secs_f64().max(1e-3),
            _ => 0.0,
        };
        self.counters.tokens_per_second.store(rate.to_bits(), Ordering::Relaxed);
    }
}

/// How much of a cached prefix of `common` tokens a prompt of `len` tokens can reuse while
/// answering exactly as a fresh run would. Weight products are batch-invariant, but attention
/// rounds differently in full chunks (f32 queries) than in partial ones (f16), so the tokens
/// still to feed must fall into chunks of the same kind as in a fresh run: any prefix works
/// when the prompt ends in the chunk the prefix ends in (that chunk is partial either way),
/// otherwise only whole chunks are reused. At least one token is left to compute logits from.
fn reusable_prefix(common: usize, len: usize) -> usize {
    let common = common.min(len.saturating_sub(1));
    let chunk_start = common / PROMPT_CHUNK * PROMPT_CHUNK;
    if len < chunk_start + PROMPT_CHUNK {
        common
    } else {
        chunk_start
    }
}

/// What [`Engine::borrow_prefix`] did.
enum Borrowed {
    /// An older request is computing more of this prompt: wait for it.
    Wait,
    /// Part of the prompt (maybe none) was copied; the rest is to compute.
    Part,
    /// The whole prompt and its logits were copied, and the first token sampled.
    Whole,
}

/// The token a request feeds in the next decoding pass: its last prompt token when only that
/// is left, else the token it sampled last (None while it reads its prompt).
fn next_token(a: &Active) -> Option<u32> {
    match a.prompt.len() - a.prompt_done {
        0 => a.first_token.and(a.decoder.last_token()),
        1 => a.prompt.last().copied(),
        _ => None,
    }
}

/// Two distinct slots, one to write and one to read.
fn pair_mut<T>(items: &mut [T], write: usize, read: usize) -> (&mut T, &T) {
    assert_ne!(write, read);
    if write < read {
        let (a, b) = items.split_at_mut(read);
        (&mut a[write], &b[0])
    } else {
        let (a, b) = items.split_at_mut(write);
        (&mut b[0], &a[read])
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::{reusable_prefix, PROMPT_CHUNK};

    #[test]
    fn prefixes_are_reused_only_where_the_rest_is_cut_as_fresh() {
        let c = PROMPT_CHUNK;
        // The prompt ends in the chunk the shared part ends in: all of it.
        assert_eq!(reusable_prefix(30, 45), 30);
        assert_eq!(reusable_prefix(c + 10, c + 40), c + 10);
        // The prompt runs past that chunk: whole chunks only.
        assert_eq!(reusable_prefix(30, c + 5), 0);
        assert_eq!(reusable_prefix(2 * c + 7, 4 * c), 2 * c);
        // One token is always left to compute, and a prompt of one token reuses nothing; a
        // prompt of exactly one chunk is one full chunk when fresh, so nothing of it is reused.
        assert_eq!(reusable_prefix(45, 45), 44);
        assert_eq!(reusable_prefix(c, c), 0);
        assert_eq!(reusable_prefix(5, 1), 0);
    }
}
