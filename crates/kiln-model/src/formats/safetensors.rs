//! Hugging Face model directories: `config.json` plus `*.safetensors` (one file, or shards listed
//! by `model.safetensors.index.json`). Format: <https://github.com/huggingface/safetensors> — an
//! 8-byte little-endian header length, a JSON header of `{name: {dtype, shape, data_offsets}}`,
//! then the raw row-major tensors.
//!
//! Each shard is mapped once; F32, F16 and BF16 matrices are used in place. Two things differ
//! from GGUF and are handled here: Q/K rows keep Hugging Face's order (so the config says
//! [`RopeStyle::Halves`](crate::config::RopeStyle::Halves)), and Gemma RMSNorm weights are stored
//! as `w` where the forward pass (like GGUF) wants `1 + w`.

use super::hf_config::parse_hf_config;
use super::{map_file, names, read_json};
use crate::config::{Family, ModelConfig};
use crate::loader::{load_weights, RawTensor, TensorSource};
use crate::weights::{Backing, QMatrix};
use crate::{GgmlType, Model, ModelError};
use safetensors::{tensor::Dtype, SafeTensorError, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one tensor lives.
struct Entry {
    shard: usize,
    dtype: Dtype,
    /// Hugging Face (row-major, outermost first) shape.
    shape: Vec<usize>,
    /// Byte offset within the shard's file.
    offset: usize,
}

/// The tensors of a Hugging Face directory, handed out under their GGUF names.
pub struct SafetensorsSource {
    /// Names map per family (`names::gguf_to_hf`).
    family: Family,
    /// What Hugging Face leaves out of its norm weights (Gemma's 1), added back on reading.
    norm_weight_offset: f32,
    shards: Vec<Arc<Backing>>,
    tensors: HashMap<String, Entry>,
    rope_freqs: Option<Vec<f32>>,
}

/// One line for a safetensors reader error.
fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "shorter than the 8-byte header length".into(),
        SafeTensorError::HeaderTooLarge => "the header length is implausibly large".into(),
        SafeTensorError::InvalidHeaderLength => "the header runs past the end of the file (truncated?)".into(),
        SafeTensorError::InvalidHeader | SafeTensorError::InvalidHeaderDeserialization => {
            "the header is not valid JSON".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensor data does not fill the file exactly (truncated?)".into()
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name:?} has overlapping or gapped offsets")
        }
        SafeTensorError::TensorInvalidInfo => "a tensor's byte size does not match its shape and dtype".into(),
        other => format!("{other:?}"),
    }
}

/// The name under which a text model's tensor is looked up: multimodal Gemma 3 checkpoints put
/// the language model under `language_model.` (or `model.language_model.` in newer exports).
fn text_model_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("language_model.model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.") {
        rest.to_string()
    } else {
        name.to_string()
    }
}

/// `model.safetensors.index.json`'s tensor name → shard file name.
type WeightMap = HashMap<String, String>;

/// The shard files of `dir`: those the index lists, else `model.safetensors`, else every
/// `*.safetensors` file.
fn shard_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>), ModelError> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let index = read_json(&index_path)?;
        let bad = |m: &str| ModelError::Format(format!("{}: {m}", index_path.display()));
        let map = index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no weight_map object"))?;
        let mut weight_map = HashMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| bad(&format!("weight_map[{name:?}] is not a file name")))?;
            if file.contains(['/', '\\']) || file.starts_with('.') {
                return Err(bad(&format!("weight_map[{name:?}] = {file:?} is not a file in the same directory")));
            }
            weight_map.insert(name.clone(), file.to_string());
        }
        let mut files: Vec<&String> = weight_map.values().collect();
        files.sort();
        files.dedup();
        return Ok((files.into_iter().map(|f| dir.join(f)).collect(), Some(weight_map)));
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((vec![single], None));
    }
    let listing =
        std::fs::read_dir(dir).map_err(|source| ModelError::Io { path: dir.display().to_string(), source })?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Format(format!(
            "{}: no *.safetensors files; kiln reads Hugging Face weights in safetensors form \
             (convert pytorch_model.bin first)",
            dir.display()
        )));
    }
    Ok((files, None))
}

impl SafetensorsSource {
    /// Maps the safetensors files of `dir` and indexes their tensors.
    pub fn open(dir: &Path, config: &ModelConfig) -> Result<SafetensorsSource, ModelError> {
        let (files, weight_map) = shard_files(dir)?;
        let mut src = SafetensorsSource {
            family: config.family,
            norm_weight_offset: config.norm_weight_offset,
            shards: Vec::new(),
            tensors: HashMap::new(),
            rope_freqs: None,
        };
        let mut file_of: HashMap<String, String> = HashMap::new();
        for path in &files {
            let shard = src.shards.len();
            let map = map_file(path)?;
            let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| {
                ModelError::Format(format!("{}: not a valid safetensors file: {}", path.display(), describe(&e)))
            })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let key = text_model_name(&name);
                let entry = Entry {
                    shard,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    offset: data_start + info.data_offsets.0,
                };
                if src.tensors.insert(key.clone(), entry).is_some() {
                    return Err(ModelError::Format(format!(
                        "{}: tensor {name:?} appears twice in the model",
                        path.display()
                    )));
                }
                let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                file_of.insert(name, file_name);
            }
            src.shards.push(Arc::new(Backing::Mapped(map)));
        }
        if let Some(weight_map) = weight_map {
            for (name, file) in &weight_map {
                if file_of.get(name) != Some(file) {
                    return Err(ModelError::Format(format!(
                        "{}: model.safetensors.index.json puts {name:?} in {file} but that file does not hold it",
                        dir.display()
                    )));
                }
            }
        }
        Ok(src)
    }

    /// Also serve `rope_freqs.weight` (computed from config.json's `rope_scaling`).
    pub fn with_rope_freqs(mut self, freqs: Option<Vec<f32>>) -> SafetensorsSource {
        self.rope_freqs = freqs;
        self
    }

    /// Whether the files hold the tensor with Hugging Face name `hf_name`.
    pub fn contains(&self, hf_name: &str) -> bool {
        self.tensors.contains_key(hf_name)
    }

    /// The Hugging Face names of all tensors (multimodal prefixes removed), in no order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

fn owned_f32(values: &[f32], dims: Vec<usize>) -> RawTensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    RawTensor { ty: GgmlType::F32, dims, backing: Arc::new(Backing::Owned(bytes)), offset: 0 }
}

impl TensorSource for SafetensorsSource {
    fn tensor(&self, gguf_name: &str) -> Result<Option<RawTensor>, ModelError> {
        if gguf_name == "rope_freqs.weight" {
            return Ok(self.rope_freqs.as_ref().map(|f| owned_f32(f, vec![f.len()])));
        }
        let Some(hf_name) = names::gguf_to_hf(gguf_name, self.family) else {
            return Ok(None);
        };
        let Some(e) = self.tensors.get(&hf_name) else {
            return Ok(None);
        };
        let ty = match e.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => {
                return Err(ModelError::Format(format!(
                    "tensor {hf_name:?} is stored as {other:?}; kiln reads F32, F16 and BF16 safetensors"
                )))
            }
        };
        let mut dims: Vec<usize> = e.shape.iter().rev().copied().collect();
        if dims.is_empty() {
            dims.push(1);
        }
        let raw = RawTensor { ty, dims, backing: self.shards[e.shard].clone(), offset: e.offset };
        if self.norm_weight_offset != 0.0 && names::is_norm_weight(gguf_name) {
            // Hugging Face Gemma computes x·(1 + w); GGUF files and kiln's forward hold 1 + w.
            let n = raw.dims.iter().product();
            let mut w = QMatrix::new(raw.ty, 1, n, raw.backing.clone(), raw.offset).to_f32();
            w.iter_mut().for_each(|v| *v += self.norm_weight_offset);
            return Ok(Some(owned_f32(&w, raw.dims)));
        }
        Ok(Some(raw))
    }
}

/// Loads a Hugging Face model directory (config.json + safetensors).
pub fn load_hf_dir(dir: &Path) -> Result<Model, ModelError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ModelError::Format(format!(
            "{}: no config.json; a Hugging Face model directory holds config.json and *.safetensors",
            dir.display()
        )));
    }
    let hf = parse_hf_config(&read_json(&config_path)?)?;
    let src = SafetensorsSource::open(dir, &hf.model)?.with_rope_freqs(hf.rope_freqs);
    if !hf.tie_word_embeddings && !src.contains("lm_head.weight") {
        return Err(ModelError::MissingTensor("lm_head.weight (config.json says tie_word_embeddings is false)".into()));
    }
    // Each block has several tensors: a larger count is a broken config, and checking it here
    // keeps a huge one from reaching the loader's allocations.
    if hf.model.n_layers > src.tensors.len() {
        return Err(ModelError::Config(format!(
            "config.json: num_hidden_layers is {} but the safetensors files hold only {} tensors",
            hf.model.n_layers,
            src.tensors.len()
        )));
    }
    let weights = load_weights(&hf.model, &src)?;
    Ok(Model { config: hf.model, weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multimodal_prefixes_are_removed() {
        assert_eq!(
            text_model_name("language_model.model.layers.0.mlp.up_proj.weight"),
            "model.layers.0.mlp.up_proj.weight"
        );
        assert_eq!(text_model_name("model.language_model.embed_tokens.weight"), "model.embed_tokens.weight");
        assert_eq!(text_model_name("language_model.lm_head.weight"), "lm_head.weight");
        assert_eq!(text_model_name("model.norm.weight"), "model.norm.weight");
        assert_eq!(text_model_name("vision_tower.x.weight"), "vision_tower.x.weight");
    }
}
