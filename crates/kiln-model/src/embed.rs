//! Sentence embeddings as sentence-transformers makes them: the tokenizer of the model's
//! directory (truncated to its `max_seq_length`, no padding), a BERT encoder, pooling over the
//! tokens (`1_Pooling/config.json`: mean unless it says CLS or max) and, when the pipeline in
//! `modules.json` ends with `Normalize` (or there is no `modules.json`), unit length.

use crate::encoder::Encoder;
use rayon::prelude::*;
use std::path::Path;

/// Why an embedding model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The encoder could not be loaded or run.
    #[error(transparent)]
    Model(#[from] crate::ModelError),
    /// The tokenizer could not be loaded or failed on a text.
    #[error("{0}")]
    Tokenizer(String),
    /// A configuration file of the directory is unreadable.
    #[error("{0}")]
    Config(String),
}

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the tokens.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The element-wise maximum.
    Max,
}

/// A sentence-embedding model: tokenizer, encoder, pooling and normalization.
pub struct Embedder {
    encoder: Encoder,
    tokenizer: tokenizers::Tokenizer,
    /// The most tokens one text is cut to (special tokens included).
    pub max_tokens: usize,
    /// How token states are pooled.
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length.
    pub normalize: bool,
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, EmbedError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| EmbedError::Config(format!("{}: not valid JSON: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EmbedError::Config(format!("{}: {e}", path.display()))),
    }
}

impl Embedder {
    /// Loads a sentence-transformers (or plain Hugging Face BERT) directory.
    pub fn open(dir: &Path) -> Result<Embedder, EmbedError> {
        let encoder = Encoder::open_hf_dir(dir)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let st_max = read_json(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.get("max_seq_length").and_then(|v| v.as_u64()))
            .map(|n| n as usize);
        let max_tokens = st_max.unwrap_or(512).clamp(2, encoder.config.max_positions);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let pooling = match read_json(&dir.join("1_Pooling/config.json"))? {
            Some(c) if c.get("pooling_mode_cls_token").and_then(|v| v.as_bool()) == Some(true) => Pooling::Cls,
            Some(c) if c.get("pooling_mode_max_tokens").and_then(|v| v.as_bool()) == Some(true) => Pooling::Max,
            _ => Pooling::Mean,
        };
        let normalize = match read_json(&dir.join("modules.json"))? {
            Some(modules) => modules.as_array().is_some_and(|m| {
                m.iter().any(|x| x.get("type").and_then(|t| t.as_str()).is_some_and(|t| t.ends_with("Normalize")))
            }),
            None => true,
        };
        Ok(Embedder { encoder, tokenizer, max_tokens, pooling, normalize })
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.encoder.config.hidden
    }

    /// The token ids of `text` as the encoder sees them (special tokens added, truncated).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokens of `text` without the special ones (at most [`Embedder::max_tokens`]).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, false).map_or(0, |e| e.len())
    }

    /// The embedding of one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed_counted(text).map(|(v, _)| v)
    }

    /// The embedding of one text and the tokens it took (special tokens included).
    pub fn embed_counted(&self, text: &str) -> Result<(Vec<f32>, usize), EmbedError> {
        let tokens = self.tokenize(text)?;
        let states = self.encoder.forward(&tokens)?;
        Ok((self.pool(&states, tokens.len()), tokens.len()))
    }

    /// The embeddings of several texts, in order: texts run in parallel on kiln's worker
    /// threads, each text's products on one of them.
    pub fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_all_counted(texts)?.into_iter().map(|(v, _)| v).collect())
    }

    /// [`Embedder::embed_all`] with each text's token count.
    pub fn embed_all_counted(&self, texts: &[&str]) -> Result<Vec<(Vec<f32>, usize)>, EmbedError> {
        crate::threads::pool().install(|| texts.par_iter().map(|t| self.embed_counted(t)).collect())
    }

    fn pool(&self, states: &[f32], n: usize) -> Vec<f32> {
        let h = self.dim();
        let rows = states.chunks_exact(h).take(n);
        let mut v = match self.pooling {
            Pooling::Cls => states[..h].to_vec(),
            Pooling::Mean => {
                let mut sum = vec![0.0f64; h];
                for r in rows {
                    sum.iter_mut().zip(r).for_each(|(s, &x)| *s += x as f64);
                }
                sum.iter().map(|s| (s / n as f64) as f32).collect()
            }
            Pooling::Max => {
                let mut m = vec![f32::NEG_INFINITY; h];
                for r in rows {
                    m.iter_mut().zip(r).for_each(|(a, &x)| *a = a.max(x));
                }
                m
            }
        };
        if self.normalize {
            let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        }
        v
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    (ab / (aa.sqrt() * bb.sqrt()).max(1e-24)) as f32
}
