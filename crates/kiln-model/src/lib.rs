//! kiln-model: parameters files, model configs, the transformer families, KV cache and CPU
//! kernels. One forward pass serves every family; weights stay in the mapped file.
#![deny(missing_docs)]

pub mod attention;
pub mod config;
pub mod embed;
pub mod encoder;
pub mod formats;
pub mod kv_cache;
pub mod loader;
pub mod math;
pub mod ops;
pub mod probe;
pub mod quant;
pub mod threads;
pub mod transformer;
pub mod weights;

/// Reproducible pseudo-random values for the unit tests.
#[cfg(test)]
pub(crate) fn test_values(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

pub use config::{Family, ModelConfig};
pub use kiln_gguf::{GgmlType, GgufFile};
pub use transformer::{BatchState, Model, State};

use std::path::Path;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The GGUF reader refused the file.
    #[error(transparent)]
    Gguf(#[from] kiln_gguf::GgufError),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `general.architecture` names a family kiln does not run.
    #[error("unknown architecture {0:?}: kiln runs llama, mistral, qwen2, qwen3 and gemma3")]
    UnknownArchitecture(String),
    /// A hyper-parameter is missing or impossible.
    #[error("bad model configuration: {0}")]
    Config(String),
    /// A tensor the family needs is not in the file.
    #[error("the model file has no tensor {0:?}")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// What the config implies.
        expected: Vec<usize>,
        /// What the file holds.
        found: Vec<usize>,
    },
    /// The input does not fit in the context.
    #[error(
        "the input needs {needed} positions but the context holds {context}; use a shorter prompt or a larger --ctx"
    )]
    ContextOverflow {
        /// Positions needed.
        needed: usize,
        /// Positions available.
        context: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// `forward` was called with no tokens.
    #[error("no tokens to process")]
    EmptyInput,
    /// A file format kiln does not recognise.
    #[error("{0}")]
    Format(String),
}

impl Model {
    /// Loads a model from a GGUF file.
    pub fn from_gguf(file: GgufFile) -> Result<Model, ModelError> {
        let config = ModelConfig::from_gguf(&file)?;
        let src = loader::GgufSource::new(file);
        let weights = loader::load_weights(&config, &src)?;
        Ok(Model { config, weights })
    }

    /// Loads a GGUF model from `path`.
    pub fn open_gguf(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        Model::from_gguf(GgufFile::open(path)?)
    }

    /// The model cut to its first `n_layers` blocks (then the final norm and output, as
    /// before): a cheap draft for speculative decoding, since early layers already agree with
    /// the whole model on many tokens.
    pub fn first_layers(mut self, n_layers: usize) -> Result<Model, ModelError> {
        if n_layers == 0 || n_layers > self.config.n_layers {
            return Err(ModelError::Format(format!(
                "cannot keep {n_layers} layers of a model with {}",
                self.config.n_layers
            )));
        }
        self.weights.layers.truncate(n_layers);
        self.config.n_layers = n_layers;
        Ok(self)
    }
}
