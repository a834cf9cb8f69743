//! BERT-family encoders (all-MiniLM-L6-v2 and the sentence-transformers models built like it):
//! learned absolute positions, post-norm LayerNorm with biases, bidirectional attention, an
//! erf GELU feed-forward. Read from a Hugging Face directory (`config.json` +
//! `model.safetensors`). The products are dense f32 GEMMs (the `gemm` crate, the one candle
//! uses): one text's tokens are a block of rows, unlike decoding's one row at a time.

use crate::formats::{map_file, read_json};
use crate::ops::{add_bias, add_in_place, softmax};
use crate::weights::{Backing, QMatrix};
use crate::{GgmlType, ModelError};
use safetensors::{tensor::Dtype, SafeTensors};
use std::path::Path;
use std::sync::Arc;

/// The activation of the feed-forward block (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderActivation {
    /// GELU through erf (`gelu`, BERT's own).
    Gelu,
    /// GELU in its tanh form (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `relu`.
    Relu,
}

/// The hyper-parameters of a BERT encoder, from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden: usize,
    /// Number of layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of the feed-forward block.
    pub intermediate: usize,
    /// Positions the model has embeddings for.
    pub max_positions: usize,
    /// Token-type (segment) embeddings.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Feed-forward activation.
    pub activation: EncoderActivation,
}

impl EncoderConfig {
    /// Parses a Hugging Face `config.json` of `model_type` `bert` (or a kin with BERT's layout).
    pub fn from_hf_json(json: &serde_json::Value) -> Result<EncoderConfig, ModelError> {
        let bad = |m: String| ModelError::Config(m);
        let model_type = json.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        if !matches!(model_type, "bert" | "") {
            return Err(bad(format!("model_type {model_type:?} is not a BERT encoder")));
        }
        let get = |key: &str| -> Result<usize, ModelError> {
            json.get(key)
                .and_then(|v| v.as_u64())
                .filter(|&n| n > 0 && n < (1 << 24))
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("config.json has no usable {key:?}")))
        };
        let activation = match json.get("hidden_act").and_then(|v| v.as_str()).unwrap_or("gelu") {
            "gelu" => EncoderActivation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => EncoderActivation::GeluTanh,
            "relu" => EncoderActivation::Relu,
            other => return Err(bad(format!("hidden_act {other:?} is not one kiln runs (gelu, gelu_new, relu)"))),
        };
        if let Some(kind) = json.get("position_embedding_type").and_then(|v| v.as_str()) {
            if kind != "absolute" {
                return Err(bad(format!("position_embedding_type {kind:?}: kiln runs absolute positions only")));
            }
        }
        let config = EncoderConfig {
            vocab_size: get("vocab_size")?,
            hidden: get("hidden_size")?,
            layers: get("num_hidden_layers")?,
            heads: get("num_attention_heads")?,
            intermediate: get("intermediate_size")?,
            max_positions: get("max_position_embeddings")?,
            type_vocab_size: json.get("type_vocab_size").and_then(|v| v.as_u64()).unwrap_or(2).max(1) as usize,
            eps: json.get("layer_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-12) as f32,
            activation,
        };
        if !config.hidden.is_multiple_of(config.heads) {
            return Err(bad(format!("hidden_size {} is not a multiple of {} heads", config.hidden, config.heads)));
        }
        Ok(config)
    }
}

/// A LayerNorm's weight and bias.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A dense layer: `y = W·x + b`, W kept as f32 (`rows × cols`, row-major) for the GEMM.
struct Dense {
    weight: Vec<f32>,
    rows: usize,
    cols: usize,
    bias: Vec<f32>,
}

struct EncoderLayer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    ffn_norm: Norm,
}

/// A BERT encoder ready to run.
pub struct Encoder {
    /// Its hyper-parameters.
    pub config: EncoderConfig,
    word: QMatrix,
    position: QMatrix,
    token_type: QMatrix,
    embed_norm: Norm,
    layers: Vec<EncoderLayer>,
}

/// The tensors of one safetensors file, checked against the shapes the config implies.
struct Tensors<'a> {
    file: &'a SafeTensors<'a>,
    backing: &'a Arc<Backing>,
    base: usize,
    /// `bert.` in checkpoints saved from a task model (BertForSequenceClassification…).
    prefix: &'static str,
}

impl Tensors<'_> {
    fn view(&self, name: &str, shape: &[usize]) -> Result<safetensors::tensor::TensorView<'_>, ModelError> {
        let full = format!("{}{name}", self.prefix);
        let view = self.file.tensor(&full).map_err(|_| ModelError::MissingTensor(full.clone()))?;
        if view.shape() != shape {
            return Err(ModelError::Shape { name: full, expected: shape.to_vec(), found: view.shape().to_vec() });
        }
        Ok(view)
    }

    /// A stored tensor of `shape`, viewed as a `rows × cols` matrix in place.
    fn tensor(&self, name: &str, shape: &[usize], rows: usize, cols: usize) -> Result<QMatrix, ModelError> {
        let view = self.view(name, shape)?;
        let ty = match view.dtype() {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => {
                return Err(ModelError::Format(format!("tensor {name:?} is {other:?}; kiln reads F32, F16, BF16")))
            }
        };
        let offset = view.data().as_ptr() as usize - self.base;
        Ok(QMatrix::new(ty, rows, cols, self.backing.clone(), offset))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<QMatrix, ModelError> {
        self.tensor(name, &[rows, cols], rows, cols)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        Ok(self.tensor(name, &[len], 1, len)?.to_f32())
    }

    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<Dense, ModelError> {
        Ok(Dense {
            weight: self.matrix(&format!("{name}.weight"), rows, cols)?.to_f32(),
            rows,
            cols,
            bias: self.vector(&format!("{name}.bias"), rows)?,
        })
    }

    fn norm(&self, name: &str, len: usize) -> Result<Norm, ModelError> {
        Ok(Norm {
            weight: self.vector(&format!("{name}.weight"), len)?,
            bias: self.vector(&format!("{name}.bias"), len)?,
        })
    }
}

impl Encoder {
    /// Loads a BERT encoder from a Hugging Face directory (`config.json`, `model.safetensors`).
    pub fn open_hf_dir(dir: &Path) -> Result<Encoder, ModelError> {
        let config = EncoderConfig::from_hf_json(&read_json(&dir.join("config.json"))?)?;
        let path = dir.join("model.safetensors");
        let backing = Arc::new(Backing::Mapped(map_file(&path)?));
        let bytes = backing_bytes(&backing);
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| ModelError::Format(format!("{}: not a safetensors file: {e}", path.display())))?;
        let prefix = if file.names().iter().any(|n| n.starts_with("bert.")) { "bert." } else { "" };
        let t = Tensors { file: &file, backing: &backing, base: bytes.as_ptr() as usize, prefix };
        let EncoderConfig { hidden: h, intermediate: f, .. } = config;
        let layers = (0..config.layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(EncoderLayer {
                    query: t.dense(&format!("{p}.attention.self.query"), h, h)?,
                    key: t.dense(&format!("{p}.attention.self.key"), h, h)?,
                    value: t.dense(&format!("{p}.attention.self.value"), h, h)?,
                    attn_out: t.dense(&format!("{p}.attention.output.dense"), h, h)?,
                    attn_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                    up: t.dense(&format!("{p}.intermediate.dense"), f, h)?,
                    down: t.dense(&format!("{p}.output.dense"), h, f)?,
                    ffn_norm: t.norm(&format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Encoder {
            word: t.matrix("embeddings.word_embeddings.weight", config.vocab_size, h)?,
            position: t.matrix("embeddings.position_embeddings.weight", config.max_positions, h)?,
            token_type: t.matrix("embeddings.token_type_embeddings.weight", config.type_vocab_size, h)?,
            embed_norm: t.norm("embeddings.LayerNorm", h)?,
            layers,
            config,
        })
    }

    /// The last hidden states of one sequence (`tokens.len() × hidden`, row-major), every
    /// token of segment 0.
    pub fn forward(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let n = tokens.len();
        if n == 0 {
            return Err(ModelError::EmptyInput);
        }
        if n > c.max_positions {
            return Err(ModelError::ContextOverflow { needed: n, context: c.max_positions });
        }
        let h = c.hidden;
        let mut x = vec![0.0f32; n * h];
        let mut row = vec![0.0f32; h];
        for (t, (&tok, xr)) in tokens.iter().zip(x.chunks_exact_mut(h)).enumerate() {
            if tok as usize >= c.vocab_size {
                return Err(ModelError::TokenOutOfRange { token: tok, vocab: c.vocab_size });
            }
            self.word.dequantize_row(tok as usize, xr);
            self.position.dequantize_row(t, &mut row);
            add_in_place(xr, &row);
            self.token_type.dequantize_row(0, &mut row);
            add_in_place(xr, &row);
        }
        layer_norm(&mut x, &self.embed_norm, c.eps);

        let (mut q, mut k, mut v) = (vec![0.0; n * h], vec![0.0; n * h], vec![0.0; n * h]);
        let mut ctx = vec![0.0; n * h];
        let mut proj = vec![0.0; n * h];
        let mut up = vec![0.0; n * c.intermediate];
        for layer in &self.layers {
            dense(&layer.query, &x, n, &mut q);
            dense(&layer.key, &x, n, &mut k);
            dense(&layer.value, &x, n, &mut v);
            attend(&q, &k, &v, n, c.heads, h / c.heads, &mut ctx);
            dense(&layer.attn_out, &ctx, n, &mut proj);
            add_in_place(&mut x, &proj);
            layer_norm(&mut x, &layer.attn_norm, c.eps);

            dense(&layer.up, &x, n, &mut up);
            activate(c.activation, &mut up);
            dense(&layer.down, &up, n, &mut proj);
            add_in_place(&mut x, &proj);
            layer_norm(&mut x, &layer.ffn_norm, c.eps);
        }
        Ok(x)
    }
}

fn backing_bytes(backing: &Backing) -> &[u8] {
    match backing {
        Backing::Mapped(m) => m,
        Backing::Owned(v) => v,
        Backing::Gguf(f) => f.bytes(),
    }
}

/// `dst = scale · lhs · rhs` for an `m × k` by `k × n` product on this thread (the `gemm`
/// crate). `dst` has rows `dst_row` apart and contiguous columns; each operand is a pointer
/// with its (row, column) strides.
///
/// # Safety
/// Every element the shapes and strides reach must lie inside its allocation.
unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row: isize,
    (lhs, lhs_row, lhs_col): (*const f32, isize, isize),
    (rhs, rhs_row, rhs_col): (*const f32, isize, isize),
    scale: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row,
        false,
        lhs,
        lhs_col,
        lhs_row,
        rhs,
        rhs_col,
        rhs_row,
        0.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `out[t] = W·x[t] + b` for the `n` rows of `x`, as one GEMM.
fn dense(d: &Dense, x: &[f32], n: usize, out: &mut [f32]) {
    assert!(x.len() >= n * d.cols && out.len() >= n * d.rows && d.weight.len() == d.rows * d.cols);
    // out (n × rows) = x (n × cols) · Wᵀ (cols × rows): Wᵀ's element (c, r) is W[r·cols + c].
    // SAFETY: the assertion above bounds every index the strides reach.
    unsafe {
        gemm_f32(
            (n, d.rows, d.cols),
            out.as_mut_ptr(),
            d.rows as isize,
            (x.as_ptr(), d.cols as isize, 1),
            (d.weight.as_ptr(), 1, d.cols as isize),
            1.0,
        );
    }
    add_bias(&mut out[..n * d.rows], &d.bias);
}

/// LayerNorm of each row in place (mean and variance in f64, as the reference sums them).
pub fn layer_norm_rows(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, &w), &b) in xr.iter_mut().zip(weight).zip(bias) {
            *v = ((*v as f64 - mean) * inv) as f32 * w + b;
        }
    }
}

fn layer_norm(x: &mut [f32], norm: &Norm, eps: f32) {
    layer_norm_rows(x, &norm.weight, &norm.bias, eps);
}

fn activate(kind: EncoderActivation, x: &mut [f32]) {
    match kind {
        EncoderActivation::Gelu => x.iter_mut().for_each(|v| *v = crate::math::gelu_erf(*v)),
        EncoderActivation::GeluTanh => x.iter_mut().for_each(|v| *v = crate::math::gelu_tanh(*v)),
        EncoderActivation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// Bidirectional multi-head attention over `n` positions: every position sees every other.
/// Per head, two GEMMs (scores = Q·Kᵀ, then softmax, then P·V) over the head's columns.
fn attend(q: &[f32], k: &[f32], v: &[f32], n: usize, heads: usize, head_dim: usize, out: &mut [f32]) {
    let h = heads * head_dim;
    assert!(q.len() >= n * h && k.len() >= n * h && v.len() >= n * h && out.len() >= n * h);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut scores = vec![0.0f32; n * n];
    for head in 0..heads {
        let off = head * head_dim;
        // SAFETY: every row index is below n and every column below off + head_dim ≤ h, so
        // each element the strides reach is inside the slices asserted above.
        unsafe {
            // scores (n × n) = Q_h (n × d) · K_hᵀ (d × n), K_hᵀ's element (c, j) = K[j·h + off + c].
            gemm_f32(
                (n, n, head_dim),
                scores.as_mut_ptr(),
                n as isize,
                (q.as_ptr().add(off), h as isize, 1),
                (k.as_ptr().add(off), 1, h as isize),
                scale,
            );
        }
        for row in scores.chunks_exact_mut(n) {
            softmax(row);
        }
        // SAFETY: as above; the output block is the head's columns of `out`.
        unsafe {
            gemm_f32(
                (n, head_dim, n),
                out.as_mut_ptr().add(off),
                h as isize,
                (scores.as_ptr(), n as isize, 1),
                (v.as_ptr().add(off), h as isize, 1),
                1.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_gives_zero_mean_unit_variance_then_scales() {
        let mut x = vec![1.0f32, 2.0, 3.0, 6.0];
        layer_norm_rows(&mut x, &[1.0; 4], &[0.5; 4], 1e-12);
        let mean: f32 = x.iter().map(|v| v - 0.5).sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| (v - 0.5 - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{mean} {var}");
    }

    /// The scalar twin of [`attend`].
    fn attend_reference(q: &[f32], k: &[f32], v: &[f32], n: usize, heads: usize, d: usize) -> Vec<f32> {
        let h = heads * d;
        let mut out = vec![0.0f32; n * h];
        for head in 0..heads {
            for i in 0..n {
                let mut s: Vec<f32> = (0..n)
                    .map(|j| {
                        (0..d).map(|c| q[i * h + head * d + c] * k[j * h + head * d + c]).sum::<f32>()
                            / (d as f32).sqrt()
                    })
                    .collect();
                softmax(&mut s);
                for c in 0..d {
                    out[i * h + head * d + c] = (0..n).map(|j| s[j] * v[j * h + head * d + c]).sum();
                }
            }
        }
        out
    }

    #[test]
    fn gemm_attention_and_dense_match_their_scalar_twins() {
        let (n, heads, d) = (7, 3, 4);
        let h = heads * d;
        let q = crate::test_values(1, n * h);
        let k = crate::test_values(2, n * h);
        let v = crate::test_values(3, n * h);
        let mut out = vec![0.0; n * h];
        attend(&q, &k, &v, n, heads, d, &mut out);
        for (a, b) in out.iter().zip(attend_reference(&q, &k, &v, n, heads, d)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let layer = Dense { weight: crate::test_values(4, 5 * h), rows: 5, cols: h, bias: crate::test_values(5, 5) };
        let mut y = vec![0.0; n * 5];
        dense(&layer, &q, n, &mut y);
        for t in 0..n {
            for r in 0..5 {
                let want: f32 = (0..h).map(|c| layer.weight[r * h + c] * q[t * h + c]).sum::<f32>() + layer.bias[r];
                assert!((y[t * 5 + r] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn attention_over_one_position_returns_its_value() {
        let q = [0.3f32, -1.0, 2.0, 0.1];
        let k = [1.0f32, 1.0, -1.0, 0.5];
        let v = [7.0f32, -2.0, 0.25, 4.0];
        let mut out = [0.0; 4];
        attend(&q, &k, &v, 1, 2, 2, &mut out);
        assert_eq!(out, v);
    }

    #[test]
    fn config_refuses_what_it_cannot_run() {
        let good = serde_json::json!({"model_type": "bert", "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 32});
        assert_eq!(EncoderConfig::from_hf_json(&good).unwrap().activation, EncoderActivation::Gelu);
        let mut rel = good.clone();
        rel["position_embedding_type"] = "relative_key".into();
        assert!(EncoderConfig::from_hf_json(&rel).unwrap_err().to_string().contains("absolute"));
        let mut odd = good.clone();
        odd["num_attention_heads"] = 3.into();
        assert!(EncoderConfig::from_hf_json(&odd).is_err());
        let mut llama = good;
        llama["model_type"] = "llama".into();
        assert!(EncoderConfig::from_hf_json(&llama).is_err());
    }
}
