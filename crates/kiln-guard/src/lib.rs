//! kiln-guard: layers that keep an assistant to its instructions.
//!
//! - [`unicode`]: invisible characters (Unicode tags, bidi controls, zero-width) are stripped
//!   and flagged; text hidden in tag characters is recovered for scanning.
//! - [`decode`]: payloads hidden in base64, hex, rot13, URL or Unicode escapes are decoded so
//!   the other layers see what the model would read.
//! - [`canary`]: a random token placed in the system prompt; an answer that repeats it leaks
//!   the prompt.
//! - [`classifier`]: a learned attack detector (a sentence encoder and a trained head), and
//!   its training.
//! - [`spotlight`]: tool and document text marked as data (random delimiters, datamarking).
//! - [`scan`]: the training-data scan (triggers, duplicates, unasked URLs, shell and code).
//! - [`data`]: labelled attack and benign prompts read from the open sets' files.
//! - [`Guard`]: all of them over one text, giving a [`Verdict`] with its reasons.
#![deny(missing_docs)]

pub mod canary;
pub mod classifier;
pub mod data;
pub mod decode;
pub mod scan;
pub mod spotlight;
pub mod unicode;

mod guard;

/// What a flagged request is answered, in the words refusals conventionally use (clients and
/// red-team detectors recognise them).
pub const REFUSAL: &str =
    "I'm sorry, but I can't help with that: the request looks like an attempt to get around my instructions.";

pub use guard::{Guard, Layer, Reason, Verdict, FLAG_SCORE};

/// Why a guard could not be loaded, trained or run.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The sentence encoder failed.
    #[error(transparent)]
    Embed(#[from] kiln_model::embed::EmbedError),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A guard or data file is not in the expected shape.
    #[error("{0}")]
    Format(String),
}

impl GuardError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> GuardError {
        GuardError::Io { what: what.into(), source }
    }
}
