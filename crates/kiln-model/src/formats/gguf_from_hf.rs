//! A Hugging Face directory as GGUF, following llama.cpp's `convert_hf_to_gguf.py` for llama,
//! qwen2, qwen3 and gemma3: tensor names through the one name table ([`super::names`]),
//! llama's Q and K rows permuted from half-split to interleaved RoPE order, Gemma's norms
//! stored as `1 + w`. The tokenizer's `tokenizer.ggml.*` entries come from the caller
//! (kiln-text's `gguf_tokenizer_metadata`). The header is read back before anything is
//! written, so a model GGUF cannot express is refused rather than written wrong; the f32 file
//! is built in memory and [`requantize_gguf`] writes it in the asked type, atomically.

use super::f32::{permute_rope_rows, read_hf_dir_f32};
use super::gguf_export::{requantize_gguf, ExportReport};
use super::hf_write::check_round_trip;
use super::names::{hf_to_gguf, is_norm_weight};
use crate::config::{ModelConfig, RopeStyle};
use crate::{GgmlType, GgufFile, ModelError};
use kiln_gguf::{GgufWriter, TensorData, Value};
use std::borrow::Cow;
use std::path::Path;

/// The `{arch}.*` hyper-parameters of `cfg` (llama.cpp's `LLM_KV_*` keys).
fn model_metadata(w: &mut GgufWriter, cfg: &ModelConfig) {
    let arch = cfg.family.architecture();
    let key = |k: &str| format!("{arch}.{k}");
    let u = |x: usize| Value::U32(x as u32);
    w.set("general.architecture", Value::String(arch.into()));
    w.set(&key("vocab_size"), u(cfg.vocab_size));
    w.set(&key("context_length"), u(cfg.context_length));
    w.set(&key("embedding_length"), u(cfg.dim));
    w.set(&key("block_count"), u(cfg.n_layers));
    w.set(&key("feed_forward_length"), u(cfg.ffn_dim));
    w.set(&key("attention.head_count"), u(cfg.n_heads));
    w.set(&key("attention.head_count_kv"), u(cfg.n_kv_heads));
    w.set(&key("attention.key_length"), u(cfg.head_dim));
    w.set(&key("attention.value_length"), u(cfg.head_dim));
    w.set(&key("rope.dimension_count"), u(cfg.rope_dim));
    w.set(&key("rope.freq_base"), Value::F32(cfg.rope_theta));
    w.set(&key("attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_eps));
    if let Some(window) = cfg.sliding_window {
        w.set(&key("attention.sliding_window"), u(window));
        w.set(&key("attention.sliding_window_pattern"), u(cfg.sliding_pattern));
        w.set(&key("rope.freq_base_swa"), Value::F32(cfg.rope_theta_local));
    }
    if let Some(cap) = cfg.final_logit_softcap {
        w.set(&key("final_logit_softcapping"), Value::F32(cap));
    }
}

/// Builds the f32 GGUF of the Hugging Face directory `dir` in memory, with the tokenizer
/// entries `tokenizer`.
fn gguf_f32(dir: &Path, name: &str, tokenizer: &[(String, Value)]) -> Result<GgufFile, ModelError> {
    let model = read_hf_dir_f32(dir)?;
    let cfg = &model.config;
    if model.scaled_rope {
        return Err(ModelError::Config(format!(
            "{}: scaled RoPE (rope_scaling) is not written to GGUF by kiln",
            dir.display()
        )));
    }
    let mut w = GgufWriter::new();
    model_metadata(&mut w, cfg);
    w.set("general.name", Value::String(name.into()));
    w.set("general.file_type", Value::U32(0));
    for (key, value) in tokenizer {
        w.set(key, value.clone());
    }
    let permute = cfg.family.gguf_rope_style() == RopeStyle::Interleaved;
    let mut names: Vec<&String> = model.tensors.keys().collect();
    names.sort_by_key(|n| gguf_order(n));
    for hf in names {
        let gguf = hf_to_gguf(hf, cfg.family)
            .ok_or_else(|| ModelError::Format(format!("{}: unexpected tensor {hf:?}", dir.display())))?;
        let t = &model.tensors[hf];
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        let data: Cow<[f32]> = if permute && gguf.ends_with("attn_q.weight") {
            permute_rope_rows(&t.data, cfg.n_heads, cfg.dim).into()
        } else if permute && gguf.ends_with("attn_k.weight") {
            permute_rope_rows(&t.data, cfg.n_kv_heads, cfg.dim).into()
        } else if cfg.norm_weight_offset != 0.0 && is_norm_weight(&gguf) {
            // GGUF Gemma norms hold the factor itself, 1 + w.
            t.data.iter().map(|v| v + cfg.norm_weight_offset).collect()
        } else {
            Cow::Borrowed(&t.data)
        };
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(TensorData { name: gguf, dims, ty: GgmlType::F32, data: bytes });
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes).map_err(|source| ModelError::Io { path: dir.display().to_string(), source })?;
    let file = GgufFile::from_vec(bytes)?;
    let back = ModelConfig::from_gguf(&file)?;
    check_round_trip("GGUF", cfg, ModelConfig { rope_style: cfg.rope_style, ..back })?;
    Ok(file)
}

/// llama.cpp's order: embedding, blocks in order, output norm, output.
fn gguf_order(hf: &str) -> (usize, usize, String) {
    match hf.strip_prefix("model.layers.") {
        Some(rest) => (1, rest.split('.').next().and_then(|i| i.parse().ok()).unwrap_or(0), hf.to_string()),
        None if hf.contains("embed_tokens") => (0, 0, hf.to_string()),
        None => (2, 0, hf.to_string()),
    }
}

/// Writes the Hugging Face directory `dir` as a GGUF file of weight type `ty` at `out`, with
/// the tokenizer entries `tokenizer`.
pub fn export_gguf(
    dir: &Path,
    ty: GgmlType,
    out: &Path,
    tokenizer: &[(String, Value)],
    progress: impl FnMut(u64, u64),
) -> Result<ExportReport, ModelError> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().and_then(|q| q.file_name()).map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "kiln".into());
    let file = gguf_f32(dir, &name, tokenizer)?;
    requantize_gguf(&file, ty, out, progress)
}
