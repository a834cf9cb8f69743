//! kiln-train: where parameters files come from. Trains a byte-level BPE tokenizer, tokenizes
//! corpora into shards, pretrains and fine-tunes the transformer that `kiln run` executes, for
//! every family kiln-model describes (with candle's autograd, under the same Hugging Face tensor
//! names), checkpoints and resumes, logs metrics, draws the loss curve and exports to a Hugging
//! Face directory or GGUF.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod data;
mod data_parquet;
pub mod dpo;
pub mod export;
pub mod finetune;
pub mod fused;
pub mod lora;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod peak;
pub mod plot;
pub mod preset;
pub mod reward;
pub mod rl;
pub mod rng;
pub mod runtime;
pub mod schedule;
pub mod sft;
pub mod tokenizer_train;
pub mod train;

use std::path::{Path, PathBuf};

/// Why a training step, a data file, a checkpoint or an export failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A tensor operation failed (a shape bug or an unsupported op).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model configuration or a model file was refused.
    #[error(transparent)]
    Model(#[from] kiln_model::ModelError),
    /// The tokenizer could not be loaded or used.
    #[error(transparent)]
    Text(#[from] kiln_text::TextError),
    /// A data file is malformed or empty.
    #[error("{0}")]
    Data(String),
    /// A checkpoint or run directory is missing pieces or corrupted.
    #[error("{0}")]
    Checkpoint(String),
    /// A hyper-parameter is impossible.
    #[error("bad training configuration: {0}")]
    Config(String),
    /// Drawing the loss curve failed.
    #[error("plot: {0}")]
    Plot(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, TrainError>;

/// A closure mapping an I/O error on `path` to [`TrainError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}
