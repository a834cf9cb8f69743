//! Constrained decoding: a grammar (a JSON schema, or a Lark grammar that embeds schemas)
//! decides, token by token, which tokens may come next, so even a small model cannot write
//! invalid JSON or a wrong type. The engine is llguidance, the one llama.cpp and mistral.rs use.
//!
//! A constraint is either active from the first token (`response_format`, a required tool
//! call) or lazy: text is free, and costs nothing, until a trigger string (a tool-call opener
//! such as `<tool_call>`) has been written; from there the grammar, which starts with the
//! trigger, applies until it is complete, after which text is free again.

use kiln_text::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;

/// What the output must follow.
#[derive(Clone, Debug)]
pub enum Grammar {
    /// One JSON value valid under this schema (`{"type": "object"}` for any object).
    JsonSchema(serde_json::Value),
    /// A Lark grammar in llguidance's dialect (`%json { … }` embeds a schema).
    Lark(String),
}

/// Why a grammar cannot be used; the message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    /// The tokenizer's vocabulary could not be read as bytes.
    #[error("constrained decoding is unavailable for this tokenizer: {0}")]
    Tokenizer(String),
    /// The schema or grammar is malformed or uses something the engine cannot enforce.
    #[error("cannot enforce this grammar: {0}")]
    Grammar(String),
}

/// Compiles grammars for one tokenizer. Building it reads the whole vocabulary (tens of
/// milliseconds), so make one per model and share it.
pub struct GrammarCompiler {
    factory: ParserFactory,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler").field("vocab", &self.factory.tok_env().tok_trie().vocab_size()).finish()
    }
}

impl GrammarCompiler {
    /// A compiler for `tokenizer`, for logits of `vocab_size` entries (the model's, which may
    /// be larger than the tokenizer's; the extra ids are never allowed).
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<GrammarCompiler, ConstraintError> {
        let json = tokenizer.to_json().map_err(|e| ConstraintError::Tokenizer(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| ConstraintError::Tokenizer(e.to_string()))?;
        // llguidance asserts on vocabularies it does not expect; a panic here must be an error.
        let words = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
            .map_err(|_| ConstraintError::Tokenizer("unexpected vocabulary entries".into()))?
            .map_err(|e| ConstraintError::Tokenizer(e.to_string()))?;
        let mut words = words;
        let vocab_size = vocab_size.max(words.len());
        words.resize(vocab_size, Vec::new());
        let eog = tokenizer.end_of_generation_ids();
        let eos = eog
            .first()
            .copied()
            .or(tokenizer.eos_id())
            .ok_or_else(|| ConstraintError::Tokenizer("the tokenizer has no end-of-generation token".into()))?;
        let mut info = TokRxInfo::new(vocab_size as u32, eos);
        info.tok_bos = tokenizer.bos_id();
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Tokenizer(e.to_string()))?;
        factory.quiet();
        Ok(GrammarCompiler { factory })
    }

    /// Compiles `grammar` into a constraint; `trigger` makes it lazy (see the module docs).
    pub fn compile(&self, grammar: &Grammar, trigger: Option<&str>) -> Result<Constraint, ConstraintError> {
        let top = match grammar {
            Grammar::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(ConstraintError::Grammar("a JSON schema must be an object".into()));
                }
                TopLevelGrammar::from_json_schema(compact(schema.clone()))
            }
            Grammar::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        };
        let parser = self.factory.create_parser(top).map_err(|e| ConstraintError::Grammar(first_line(&e)))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Grammar(e));
        }
        if trigger == Some("") {
            return Err(ConstraintError::Grammar("the trigger string is empty".into()));
        }
        Ok(Constraint {
            fresh: matcher,
            env: self.factory.tok_env().clone(),
            trigger: trigger.map(|t| t.as_bytes().to_vec()),
        })
    }
}

/// Asks for JSON on one line with `", "` and `": "` between items, unless the schema says
/// otherwise: free whitespace lets a small model pad its output with newlines until its
/// token limit.
pub fn compact(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(
            || serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// A compiled grammar, not yet started: [`GenerateOptions`](crate::GenerateOptions) carries
/// it, and each generation starts its own copy.
pub struct Constraint {
    fresh: Matcher,
    env: TokEnv,
    trigger: Option<Vec<u8>>,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint { fresh: self.fresh.deep_clone(), env: self.env.clone(), trigger: self.trigger.clone() }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("trigger", &self.trigger.as_deref().map(String::from_utf8_lossy)).finish()
    }
}

/// What the constraint says about the next token.
pub(crate) enum Step {
    /// Any token.
    Free,
    /// Only these (the mask has one bit per vocabulary entry).
    Mask(SimpleVob),
    /// The grammar is complete and allows nothing more: generation should end.
    Done,
}

/// One generation's running constraint.
pub(crate) struct ConstraintState {
    plan: Constraint,
    /// The grammar's matcher while it applies; None while text is free (lazy mode).
    active: Option<Matcher>,
    /// Bytes written since the last trigger search, at most the trigger's length.
    tail: Vec<u8>,
    /// Tokens to emit regardless of the logits (the rest of a trigger; see `check`).
    forced: std::collections::VecDeque<u32>,
    /// The matcher was started on the token being accepted, which it has already read.
    started_on_this_token: bool,
}

impl ConstraintState {
    pub(crate) fn start(plan: &Constraint) -> ConstraintState {
        let active = if plan.trigger.is_none() { Some(plan.fresh.deep_clone()) } else { None };
        ConstraintState {
            plan: plan.clone(),
            active,
            tail: Vec::new(),
            forced: Default::default(),
            started_on_this_token: false,
        }
    }

    /// A token that must come next whatever the logits say.
    pub(crate) fn forced(&mut self) -> Option<u32> {
        self.forced.pop_front()
    }

    /// Which tokens may come next.
    pub(crate) fn step(&mut self) -> Result<Step, ConstraintError> {
        let Some(m) = self.active.as_mut() else { return Ok(Step::Free) };
        if m.is_stopped() {
            return Ok(Step::Done);
        }
        let mask = m.compute_mask().map_err(|e| ConstraintError::Grammar(first_line(&e)))?;
        if mask.num_set() == 0 {
            return Ok(Step::Done);
        }
        Ok(Step::Mask(mask))
    }

    /// Checks a sampled token before it is accepted. In free text, a token that completes
    /// the trigger starts the grammar; if the bytes it carries past the trigger do not fit
    /// the grammar, it is replaced by its own bytes up to the end of the trigger (the first
    /// token of those is returned, the rest queued as forced tokens).
    pub(crate) fn check(&mut self, token: u32) -> Result<u32, ConstraintError> {
        if self.active.is_some() {
            return Ok(token);
        }
        let Some(trigger) = self.plan.trigger.clone() else { return Ok(token) };
        let trie = self.plan.env.tok_trie();
        let bytes = trie.token(token).to_vec();
        let mut seen = self.tail.clone();
        seen.extend_from_slice(&bytes);
        let Some(at) = find(&seen, &trigger) else {
            let keep = seen.len().saturating_sub(trigger.len() - 1);
            self.tail = seen[keep..].to_vec();
            return Ok(token);
        };
        // The grammar starts at the trigger: feed it what has been written from there on.
        let mut m = self.plan.fresh.deep_clone();
        let written = self.plan.env.tokenize_bytes(&seen[at..]);
        if m.consume_tokens(&written).is_ok() && !m.is_error() {
            self.active = Some(m);
            self.tail.clear();
            self.started_on_this_token = true;
            return Ok(token);
        }
        // Write the token's bytes only up to the end of the trigger instead; the grammar
        // starts when they are done.
        let rest = self.plan.env.tokenize_bytes(&seen[self.tail.len()..at + trigger.len()]);
        let Some((&first, others)) = rest.split_first() else { return Ok(token) };
        self.forced.extend(others);
        self.check(first)
    }

    /// Records an accepted token.
    pub(crate) fn commit(&mut self, token: u32) -> Result<(), ConstraintError> {
        let Some(m) = self.active.as_mut() else { return Ok(()) };
        if std::mem::take(&mut self.started_on_this_token) {
            return Ok(());
        }
        m.consume_token(token).map_err(|e| ConstraintError::Grammar(first_line(&e)))?;
        // A lazy grammar that is complete hands back to free text (the next tool call
        // starts with its own trigger).
        if self.plan.trigger.is_some() && m.is_accepting().unwrap_or(false) {
            let only_eos = m.compute_mask().map(|mask| mask.num_set() == 0 || self.only_eos(&mask)).unwrap_or(true);
            if only_eos {
                self.active = None;
            }
        }
        Ok(())
    }

    fn only_eos(&self, mask: &SimpleVob) -> bool {
        let eos = self.plan.env.tok_trie().eos_tokens();
        let mut other = false;
        mask.iter_set_entries(|i| other |= !eos.contains(&(i as u32)));
        !other
    }

    /// Whether the grammar is applying now (for lazy constraints: inside a triggered part).
    pub(crate) fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Puts -∞ on every logit the mask does not allow.
pub(crate) fn apply_mask(mask: &SimpleVob, logits: &mut [f32]) {
    for (i, l) in logits.iter_mut().enumerate() {
        if !mask.is_allowed(i as u32) {
            *l = f32::NEG_INFINITY;
        }
    }
}
