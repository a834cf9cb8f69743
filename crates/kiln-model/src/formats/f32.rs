//! GGUF files and Hugging Face directories as plain f32 tensors under Hugging Face names and in
//! Hugging Face's layout: what training starts from and what export writes. The inference
//! loader keeps tensors in their stored types; this is the other use of the same readers
//! ([`GgufSource`], [`SafetensorsSource`]), so a file either path accepts, both accept.
//!
//! From GGUF, two things are undone: llama's Q and K rows go back from the interleaved RoPE
//! order of `convert_hf_to_gguf.py` to half-split ([`unpermute_rope_rows`]), and Gemma's norms
//! from `1 + w` back to `w`. Quantized tensors are dequantized.

use super::names::{gguf_to_hf, hf_to_gguf, is_norm_weight};
use super::{hf_config::parse_hf_config, read_json, SafetensorsSource};
use crate::config::{ModelConfig, RopeStyle};
use crate::loader::{load_weights, GgufSource, RawTensor, TensorSource};
use crate::weights::{Backing, QMatrix};
use crate::{GgufFile, Model, ModelError};
use kiln_gguf::GgmlType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One tensor in f32, row-major, outermost dimension first (as Hugging Face and PyTorch
/// write shapes).
#[derive(Clone, Debug, PartialEq)]
pub struct F32Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

/// A model's parameters in f32 under Hugging Face names.
pub struct F32Model {
    /// Family, shape and switches, with half-split RoPE (the Hugging Face layout).
    pub config: ModelConfig,
    /// Whether the output projection is the embedding (no `lm_head.weight`).
    pub tied: bool,
    /// Parameters by Hugging Face name.
    pub tensors: HashMap<String, F32Tensor>,
    /// Whether the file scales RoPE frequencies (Llama 3.1's `rope_freqs` / `rope_scaling`),
    /// which the tensors alone do not carry.
    pub scaled_rope: bool,
}

/// The Hugging Face directory inside a run (`run/model`), or `path` itself when it is one.
pub fn model_dir(path: &Path) -> Result<PathBuf, ModelError> {
    if path.join("config.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let inner = path.join("model");
    if inner.join("config.json").is_file() {
        return Ok(inner);
    }
    Err(ModelError::Format(format!(
        "{}: neither a model directory (config.json) nor a run directory with model/ inside",
        path.display()
    )))
}

/// The tensor `raw` as f32 values, or an error naming it when its rows are not whole blocks.
fn dequantize(name: &str, raw: RawTensor) -> Result<Vec<f32>, ModelError> {
    let cols = raw.dims.first().copied().unwrap_or(1);
    let n: usize = raw.dims.iter().product();
    if cols == 0 || raw.ty.bytes_for(cols).is_none() {
        return Err(ModelError::Format(format!("tensor {name:?}: rows of {cols} are not whole {} blocks", raw.ty)));
    }
    Ok(QMatrix::new(raw.ty, n / cols, cols, raw.backing, raw.offset).to_f32())
}

/// A Hugging Face directory (config.json and safetensors shards of F32, F16 or BF16) in f32.
pub fn read_hf_dir_f32(dir: &Path) -> Result<F32Model, ModelError> {
    let hf = parse_hf_config(&read_json(&dir.join("config.json"))?)?;
    // Read the norms as stored (`w`, not the forward pass's `1 + w`).
    let stored = ModelConfig { norm_weight_offset: 0.0, ..hf.model.clone() };
    let src = SafetensorsSource::open(dir, &stored)?;
    let mut tensors = HashMap::new();
    for name in src.names() {
        let Some(gguf) = hf_to_gguf(name, hf.model.family) else {
            continue; // another tower of a multimodal checkpoint
        };
        let raw = src.tensor(&gguf)?.ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let shape = raw.dims.iter().rev().copied().collect();
        tensors.insert(name.to_string(), F32Tensor { shape, data: dequantize(name, raw)? });
    }
    if !tensors.contains_key("model.embed_tokens.weight") {
        return Err(ModelError::MissingTensor("model.embed_tokens.weight".into()));
    }
    if hf.tie_word_embeddings {
        tensors.remove("lm_head.weight"); // what transformers does with one
    } else if !tensors.contains_key("lm_head.weight") {
        return Err(ModelError::MissingTensor("lm_head.weight (config.json says tie_word_embeddings is false)".into()));
    }
    Ok(F32Model { config: hf.model, tied: hf.tie_word_embeddings, tensors, scaled_rope: hf.rope_freqs.is_some() })
}

/// A GGUF file in f32, in Hugging Face's layout.
pub fn read_gguf_f32(file: GgufFile) -> Result<F32Model, ModelError> {
    let mut config = ModelConfig::from_gguf(&file)?;
    let names: Vec<String> = file.tensors.iter().map(|t| t.name.clone()).collect();
    let scaled_rope = file.tensor("rope_freqs.weight").is_some();
    let src = GgufSource::new(file);
    let permuted = config.rope_style == RopeStyle::Interleaved;
    config.rope_style = RopeStyle::Halves;
    let mut tensors = HashMap::new();
    for gguf in names {
        let Some(hf) = gguf_to_hf(&gguf, config.family) else {
            continue;
        };
        let raw = src.tensor(&gguf)?.ok_or_else(|| ModelError::MissingTensor(gguf.clone()))?;
        let cols = raw.dims.first().copied().unwrap_or(1);
        let shape: Vec<usize> = raw.dims.iter().rev().copied().collect();
        let mut data = dequantize(&gguf, raw)?;
        if permuted && hf.ends_with("q_proj.weight") {
            data = unpermute_rope_rows(&data, config.n_heads, cols);
        } else if permuted && hf.ends_with("k_proj.weight") {
            data = unpermute_rope_rows(&data, config.n_kv_heads, cols);
        } else if config.norm_weight_offset != 0.0 && is_norm_weight(&gguf) {
            data.iter_mut().for_each(|v| *v -= config.norm_weight_offset);
        }
        tensors.insert(hf, F32Tensor { shape, data });
    }
    if !tensors.contains_key("model.embed_tokens.weight") {
        return Err(ModelError::MissingTensor("token_embd.weight".into()));
    }
    let tied = !tensors.contains_key("lm_head.weight");
    Ok(F32Model { config, tied, tensors, scaled_rope })
}

/// An inference [`Model`] over f32 tensors held in memory in Hugging Face's layout (a training
/// run's weights, as [`F32Model`] holds them), without writing files: `kiln rl` samples its
/// policy this way after every update. The same loader as every format checks the shapes.
pub fn model_from_f32(config: &ModelConfig, tensors: &HashMap<String, F32Tensor>) -> Result<Model, ModelError> {
    model_from_f32_as(config, tensors, GgmlType::F32)
}

/// [`model_from_f32`] with the weight matrices quantized to `matrices` in memory (`Q8_0`
/// samples several times faster than f32 on a CPU, at about 1 % of the logits' range);
/// norms and matrices whose rows are not whole blocks stay f32.
pub fn model_from_f32_as(
    config: &ModelConfig,
    tensors: &HashMap<String, F32Tensor>,
    matrices: GgmlType,
) -> Result<Model, ModelError> {
    struct InMemory<'a> {
        config: &'a ModelConfig,
        tensors: &'a HashMap<String, F32Tensor>,
        matrices: GgmlType,
    }
    impl TensorSource for InMemory<'_> {
        fn tensor(&self, gguf_name: &str) -> Result<Option<RawTensor>, ModelError> {
            let Some(t) = gguf_to_hf(gguf_name, self.config.family).and_then(|hf| self.tensors.get(&hf)) else {
                return Ok(None);
            };
            let mut dims: Vec<usize> = t.shape.iter().rev().copied().collect();
            if dims.is_empty() {
                dims.push(1);
            }
            // The forward pass holds Gemma's norms as 1 + w, as GGUF files do.
            let offset = if is_norm_weight(gguf_name) { self.config.norm_weight_offset } else { 0.0 };
            let cols = dims[0];
            let quantize = self.matrices != GgmlType::F32 && dims.len() == 2 && offset == 0.0;
            if let Some(row_bytes) = self.matrices.bytes_for(cols).filter(|_| quantize) {
                let mut bytes = vec![0u8; row_bytes * dims[1]];
                for (row, out) in t.data.chunks(cols).zip(bytes.chunks_mut(row_bytes)) {
                    crate::quant::quantize_row(self.matrices, row, out)
                        .map_err(|e| ModelError::Format(format!("cannot quantize {gguf_name}: {e}")))?;
                }
                return Ok(Some(RawTensor {
                    ty: self.matrices,
                    dims,
                    backing: Arc::new(Backing::Owned(bytes)),
                    offset: 0,
                }));
            }
            let bytes = t.data.iter().flat_map(|v| (v + offset).to_le_bytes()).collect();
            Ok(Some(RawTensor { ty: GgmlType::F32, dims, backing: Arc::new(Backing::Owned(bytes)), offset: 0 }))
        }
    }
    if config.rope_style != RopeStyle::Halves {
        return Err(ModelError::Config("in-memory f32 weights are in Hugging Face's half-split RoPE layout".into()));
    }
    let weights = load_weights(config, &InMemory { config, tensors, matrices })?;
    Ok(Model { config: config.clone(), weights })
}

/// Rows of a Q or K projection `[heads·d, in]` reordered from half-split to interleaved RoPE
/// pairs, as `convert_hf_to_gguf.py`'s `permute`: within each head, row `j·d/2 + i` moves to
/// `2i + j`.
pub fn permute_rope_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    move_rope_rows(w, heads, cols, true)
}

/// Inverse of [`permute_rope_rows`]: GGUF llama's interleaved Q/K rows back to Hugging Face's
/// half-split order.
pub fn unpermute_rope_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    move_rope_rows(w, heads, cols, false)
}

fn move_rope_rows(w: &[f32], heads: usize, cols: usize, to_interleaved: bool) -> Vec<f32> {
    let rows = w.len() / cols;
    let d = rows / heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let half_split = h * d + j * (d / 2) + i;
                let interleaved = h * d + 2 * i + j;
                let (src, dst) = if to_interleaved { (half_split, interleaved) } else { (interleaved, half_split) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_interleaves_halves_and_back() {
        // One head of width 4, one column: rows [a0, a1, b0, b1] → [a0, b0, a1, b1].
        assert_eq!(permute_rope_rows(&[0.0, 1.0, 2.0, 3.0], 1, 1), vec![0.0, 2.0, 1.0, 3.0]);
        // Two heads of width 2 are already interleaved.
        assert_eq!(permute_rope_rows(&[0.0, 1.0, 2.0, 3.0], 2, 1), vec![0.0, 1.0, 2.0, 3.0]);
        let w: Vec<f32> = (0..3 * 8 * 2).map(|i| i as f32).collect();
        assert_eq!(unpermute_rope_rows(&permute_rope_rows(&w, 3, 2), 3, 2), w);
    }
}
