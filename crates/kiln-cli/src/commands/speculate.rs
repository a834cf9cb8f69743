//! `--lookup N` and `--draft MODEL`: decoding that checks several guessed tokens per pass of
//! the model. The output is what plain decoding gives; only the speed changes.

use crate::load::LoadedModel;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_generate::speculate::MAX_DRAFT;
use kiln_generate::{GenerateOptions, Generation, Session};
use kiln_model::Model;

/// Speculative decoding, shared by run, chat and bench.
#[derive(Args, Debug, Clone, Default)]
pub struct SpeculateFlags {
    /// Prompt-lookup decoding: guess up to N tokens per pass by copying what followed the last
    /// match of the recent tokens in the prompt and answer (pays when answers quote, edit or
    /// summarise). The output is unchanged.
    #[arg(long, value_name = "N")]
    pub lookup: Option<usize>,
    /// Speculative decoding with a draft model: a smaller model with the same tokenizer
    /// (path or name) guesses tokens, the model checks them in one pass. The output is unchanged.
    #[arg(long, value_name = "MODEL", conflicts_with = "lookup")]
    pub draft: Option<String>,
    /// Make the draft from the model itself: its first N layers (then its output layer).
    #[arg(long, value_name = "N", conflicts_with_all = ["lookup", "draft"])]
    pub draft_layers: Option<usize>,
    /// Most tokens the draft model guesses per pass (it adapts below this).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub draft_max: usize,
}

impl SpeculateFlags {
    /// Checks the numbers before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        for (flag, value) in [("--lookup", self.lookup), ("--draft-max", Some(self.draft_max))] {
            match value {
                Some(0) => bail!("{flag} must be at least 1"),
                Some(n) if n > MAX_DRAFT => bail!("{flag} {n} is more than the {MAX_DRAFT} tokens one check takes"),
                _ => {}
            }
        }
        if self.draft_layers == Some(0) {
            bail!("--draft-layers must be at least 1");
        }
        Ok(())
    }

    /// Whether any speculation is asked for.
    pub fn any(&self) -> bool {
        self.lookup.is_some() || self.draft.is_some() || self.draft_layers.is_some()
    }

    /// Sets prompt lookup in `opts`.
    pub fn apply(&self, opts: &mut GenerateOptions) {
        opts.lookup = self.lookup.unwrap_or(0);
    }

    /// Loads the draft model, if one is asked for.
    pub fn load_draft(&self, lm: &LoadedModel) -> Result<Option<Model>> {
        if let Some(n) = self.draft_layers {
            let whole = crate::load::open(&lm.path)?.model;
            let layers = whole.config.n_layers;
            let draft =
                whole.first_layers(n).with_context(|| format!("--draft-layers {n}: the model has {layers} layers"))?;
            return Ok(Some(draft));
        }
        let Some(name) = &self.draft else { return Ok(None) };
        let draft = crate::load::load(Some(name)).with_context(|| format!("cannot load the draft model {name}"))?;
        if draft.tokenizer.vocab_size() != lm.tokenizer.vocab_size() {
            bail!(
                "the draft model {} has a tokenizer of {} tokens, the model {}: a draft must share the tokenizer",
                draft.path.display(),
                draft.tokenizer.vocab_size(),
                lm.tokenizer.vocab_size()
            );
        }
        Ok(Some(draft.model))
    }

    /// Hands the draft to a session.
    pub fn attach<'m>(&self, session: &mut Session<'m>, draft: Option<&'m Model>) -> Result<()> {
        if let Some(d) = draft {
            session.set_draft(d, self.draft_max)?;
        }
        Ok(())
    }
}

/// The speculation part of a timing line: `| 143 of 212 guesses kept (67 %)`.
pub fn summary(g: &Generation) -> String {
    let s = g.speculation;
    if s.drafted == 0 {
        return String::new();
    }
    format!(" | {} of {} guesses kept ({:.0} %)", s.accepted, s.drafted, 100.0 * s.acceptance())
}
