//! The one error type of this crate.

use std::path::PathBuf;

/// Why a tokenizer or chat template could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file (tokenizer_config.json, …) is not valid JSON.
    #[error("{path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// GGUF tokenizer metadata is missing or malformed.
    #[error("GGUF tokenizer metadata: {0}")]
    Metadata(String),
    /// `tokenizer.ggml.model` names a tokenizer kiln does not implement.
    #[error("tokenizer model {0:?} is not supported (kiln reads \"gpt2\" byte-level BPE and \"llama\" SentencePiece)")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer kiln does not know.
    #[error("pre-tokenizer {0:?} is not supported")]
    UnsupportedPreTokenizer(String),
    /// An error from the Hugging Face `tokenizers` crate.
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary ({vocab_size} tokens)")]
    UnknownId {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A chat template failed to parse or render, or called `raise_exception`.
    #[error("chat template: {0}")]
    Template(String),
    /// Training a tokenizer failed, or was asked for something impossible.
    #[error("tokenizer training: {0}")]
    Training(String),
}

impl From<tokenizers::Error> for TextError {
    fn from(e: tokenizers::Error) -> Self {
        TextError::Tokenizers(e.to_string())
    }
}

impl From<minijinja::Error> for TextError {
    fn from(e: minijinja::Error) -> Self {
        // Keep the causes: a `raise_exception` message arrives as the error's detail.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        TextError::Template(msg)
    }
}
