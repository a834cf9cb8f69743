//! Builds [`Weights`] from any source of named tensors. Names are GGUF's (`blk.0.attn_q.weight`);
//! other formats translate to them (see `names.rs`), so the model is assembled in one place.

use crate::config::ModelConfig;
use crate::weights::{Backing, LayerWeights, QMatrix, Weights};
use crate::{quant, ModelError};
use kiln_gguf::{GgmlType, GgufFile};
use std::sync::Arc;

/// A tensor found in a parameters file: its type, ggml-order dims and where its bytes are.
pub struct RawTensor {
    /// Element type.
    pub ty: GgmlType,
    /// Dimensions, contiguous first.
    pub dims: Vec<usize>,
    /// The bytes it lives in.
    pub backing: Arc<Backing>,
    /// Start of its bytes within `backing`.
    pub offset: usize,
}

/// Anything that can hand out tensors by their GGUF name.
pub trait TensorSource {
    /// The tensor under `gguf_name`, if the file has it.
    fn tensor(&self, gguf_name: &str) -> Result<Option<RawTensor>, ModelError>;
}

/// Tensors of a GGUF file.
pub struct GgufSource {
    backing: Arc<Backing>,
}

impl GgufSource {
    /// Wraps an open file.
    pub fn new(file: GgufFile) -> GgufSource {
        GgufSource { backing: Arc::new(Backing::Gguf(file)) }
    }

    /// The file.
    pub fn file(&self) -> &GgufFile {
        match &*self.backing {
            Backing::Gguf(f) => f,
            _ => unreachable!("GgufSource always holds a GGUF file"),
        }
    }
}

impl TensorSource for GgufSource {
    fn tensor(&self, name: &str) -> Result<Option<RawTensor>, ModelError> {
        let file = self.file();
        Ok(file.tensor(name).map(|t| RawTensor {
            ty: t.ty,
            dims: t.dims.iter().map(|&d| d as usize).collect(),
            backing: self.backing.clone(),
            offset: file.tensor_file_offset(t),
        }))
    }
}

fn missing(name: &str) -> ModelError {
    ModelError::MissingTensor(name.to_string())
}

fn matrix(src: &dyn TensorSource, name: &str, rows: usize, cols: usize) -> Result<QMatrix, ModelError> {
    let t = src.tensor(name)?.ok_or_else(|| missing(name))?;
    if t.dims.len() != 2 || t.dims[0] != cols || t.dims[1] != rows {
        return Err(ModelError::Shape { name: name.into(), expected: vec![cols, rows], found: t.dims });
    }
    if !quant::has_vec_dot(t.ty) {
        return Err(ModelError::Format(format!(
            "tensor {name:?} is stored as {}, an activation format that cannot be a weight matrix",
            t.ty
        )));
    }
    Ok(QMatrix::new(t.ty, rows, cols, t.backing, t.offset))
}

fn vector(src: &dyn TensorSource, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
    let Some(t) = src.tensor(name)? else { return Ok(None) };
    if t.dims.iter().product::<usize>() != len || t.dims[0] != len {
        return Err(ModelError::Shape { name: name.into(), expected: vec![len], found: t.dims });
    }
    let m = QMatrix::new(t.ty, 1, len, t.backing, t.offset);
    let mut out = vec![0.0; len];
    quant::dequantize_row(m.ty, m.row(0), &mut out);
    Ok(Some(out))
}

fn required_vector(src: &dyn TensorSource, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    vector(src, name, len)?.ok_or_else(|| missing(name))
}

/// Assembles the weights of `cfg` from `src`, checking every shape.
pub fn load_weights(cfg: &ModelConfig, src: &dyn TensorSource) -> Result<Weights, ModelError> {
    // Head counts come from the file: their products must not wrap around to a width some
    // tensor happens to have (a model with 2^62 heads would load, then never finish a token).
    let heads_width = |n: usize| {
        n.checked_mul(cfg.head_dim).ok_or_else(|| {
            ModelError::Config(format!("{n} heads of width {} overflow; the header is corrupt", cfg.head_dim))
        })
    };
    heads_width(cfg.n_heads)?;
    heads_width(cfg.n_kv_heads)?;
    let (d, q, kv, f, h) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim, cfg.head_dim);
    let token_embd = matrix(src, "token_embd.weight", cfg.vocab_size, d)?;
    let output = match src.tensor("output.weight")? {
        Some(_) => matrix(src, "output.weight", cfg.vocab_size, d)?,
        None => token_embd.clone(),
    };
    // Not with_capacity: n_layers comes from the file and is only trusted once tensors back it.
    let mut layers = Vec::new();
    for i in 0..cfg.n_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        let layer = LayerWeights {
            attn_norm: required_vector(src, &n("attn_norm.weight"), d)?,
            wq: matrix(src, &n("attn_q.weight"), q, d)?,
            wk: matrix(src, &n("attn_k.weight"), kv, d)?,
            wv: matrix(src, &n("attn_v.weight"), kv, d)?,
            wo: matrix(src, &n("attn_output.weight"), d, q)?,
            bq: vector(src, &n("attn_q.bias"), q)?,
            bk: vector(src, &n("attn_k.bias"), kv)?,
            bv: vector(src, &n("attn_v.bias"), kv)?,
            q_norm: vector(src, &n("attn_q_norm.weight"), h)?,
            k_norm: vector(src, &n("attn_k_norm.weight"), h)?,
            post_attn_norm: vector(src, &n("post_attention_norm.weight"), d)?,
            ffn_norm: required_vector(src, &n("ffn_norm.weight"), d)?,
            w_gate: matrix(src, &n("ffn_gate.weight"), f, d)?,
            w_up: matrix(src, &n("ffn_up.weight"), f, d)?,
            w_down: matrix(src, &n("ffn_down.weight"), d, f)?,
            post_ffn_norm: vector(src, &n("post_ffw_norm.weight"), d)?,
        };
        // The family's description says which optional tensors it must have.
        if cfg.qk_norm && (layer.q_norm.is_none() || layer.k_norm.is_none()) {
            return Err(missing(&n("attn_q_norm.weight / attn_k_norm.weight")));
        }
        if cfg.post_norms && (layer.post_attn_norm.is_none() || layer.post_ffn_norm.is_none()) {
            return Err(missing(&n("post_attention_norm.weight / post_ffw_norm.weight")));
        }
        layers.push(layer);
    }
    Ok(Weights {
        token_embd,
        layers,
        output_norm: required_vector(src, "output_norm.weight", d)?,
        output,
        rope_freqs: vector(src, "rope_freqs.weight", cfg.rope_dim / 2)?,
    })
}
