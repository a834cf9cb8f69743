//! Outputs of a run: a Hugging Face directory (model.safetensors in f32, config.json for
//! `LlamaForCausalLM`, tokenizer.json, tokenizer_config.json with the chat template,
//! generation_config.json), which `kiln run` and `transformers` load as they are, and GGUF.
//!
//! GGUF export follows llama.cpp's `convert_hf_to_gguf.py` for llama: tensor names through
//! kiln-model's one name table, Q and K rows permuted from Hugging Face's half-split RoPE order
//! to GGUF llama's interleaved order, the byte-level BPE vocabulary and merges as
//! `tokenizer.ggml.*` (pre-tokenizer `smaug-bpe`: Llama 3's regex without `ignore_merges`, the
//! one the tokenizer was trained with). The f32 file is built in memory and handed to
//! kiln-model's [`requantize_gguf`], which writes f32, f16, q8_0 or q4_0 (and the other types
//! `kiln quantize` knows) atomically.

use crate::checkpoint::{load_tensors, write_atomic};
use crate::{io_err, Result, TrainError};
use candle_core::{DType, Tensor};
use kiln_gguf::{GgmlType, GgufFile, GgufWriter, TensorData, Value};
use kiln_model::formats::gguf_export::{requantize_gguf, ExportReport};
use kiln_model::formats::names::hf_to_gguf;
use kiln_model::formats::parse_hf_config;
use kiln_model::ModelConfig;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tokenizer files copied from a tokenizer directory into a model directory.
pub const TOKENIZER_FILES: &[&str] = &["tokenizer.json", "tokenizer_config.json"];

/// `config.json` of a `LlamaForCausalLM` with this shape.
pub fn hf_config_json(cfg: &ModelConfig, tied: bool, bos: Option<u32>, eos: Option<u32>) -> Json {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
    })
}

/// Writes a Hugging Face model directory at `dir` from parameters named as Hugging Face names
/// them, with the tokenizer of `tokenizer_dir` and, when given, `chat_template` in place of the
/// tokenizer's. The directory is assembled beside `dir` and swapped in, so readers never see a
/// mix.
pub fn write_hf_dir(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    cfg: &ModelConfig,
    tied: bool,
    tokenizer_dir: &Path,
    chat_template: Option<&str>,
) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = dir.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let f32s: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&f32s, tmp.join("model.safetensors"))?;
    for f in TOKENIZER_FILES {
        let src = tokenizer_dir.join(f);
        std::fs::copy(&src, tmp.join(f)).map_err(io_err(&src))?;
    }
    if let Some(template) = chat_template {
        let path = tmp.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let mut cfg: Json = serde_json::from_str(&text).map_err(|e| {
            TrainError::Checkpoint(format!("{}: not valid JSON ({e})", path.display()))
        })?;
        cfg["chat_template"] = template.into();
        write_atomic(
            &path,
            serde_json::to_string_pretty(&cfg)
                .expect("json serializes")
                .as_bytes(),
        )?;
    }
    let tok = kiln_text::Tokenizer::from_dir(tokenizer_dir)?;
    let config = hf_config_json(cfg, tied, tok.bos_id(), tok.eos_id());
    let pretty = |v: &Json| serde_json::to_string_pretty(v).expect("json serializes");
    write_atomic(&tmp.join("config.json"), pretty(&config).as_bytes())?;
    let gen = json!({"bos_token_id": tok.bos_id(), "eos_token_id": tok.eos_id(), "do_sample": true, "temperature": 0.8});
    write_atomic(&tmp.join("generation_config.json"), pretty(&gen).as_bytes())?;
    let old = dir.with_file_name(format!(".{name}.old{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

/// A Hugging Face llama directory read back: its configuration, whether the output projection
/// is tied, and its tensors.
pub fn read_hf_dir(dir: &Path) -> Result<(ModelConfig, bool, HashMap<String, Tensor>)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: not valid JSON ({e})", path.display())))?;
    let hf = parse_hf_config(&json)?;
    let tensors = load_tensors(&dir.join("model.safetensors"))?;
    Ok((hf.model, hf.tie_word_embeddings, tensors))
}

/// Rows of a Q or K projection `[heads·d, in]` reordered from half-split to interleaved RoPE
/// pairs, as `convert_hf_to_gguf.py`'s `permute`: within each head, row `j·d/2 + i` moves to
/// `2i + j`.
pub fn permute_rope_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    move_rope_rows(w, heads, cols, true)
}

/// The row moves of [`permute_rope_rows`] (`to_interleaved`) or of their inverse.
pub(crate) fn move_rope_rows(w: &[f32], heads: usize, cols: usize, to_interleaved: bool) -> Vec<f32> {
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

/// The `tokenizer.ggml.*` metadata for a byte-level BPE tokenizer.json.
fn tokenizer_metadata(w: &mut GgufWriter, dir: &Path) -> Result<()> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let bad = |m: &str| TrainError::Checkpoint(format!("{}: {m}", path.display()));
    let json: Json =
        serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON ({e})")))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad("GGUF export needs a byte-level BPE tokenizer"));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("no model.vocab"))?;
    let mut by_id: Vec<(u32, String, i32)> = vocab
        .iter()
        .filter_map(|(t, id)| Some((id.as_u64()? as u32, t.clone(), 1)))
        .collect();
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        let ty = if added["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
        by_id.retain(|(i, _, _)| *i != id as u32);
        by_id.push((id as u32, content.to_string(), ty));
    }
    by_id.sort();
    if by_id
        .iter()
        .enumerate()
        .any(|(k, (id, _, _))| *id as usize != k)
    {
        return Err(bad("token ids are not contiguous from 0"));
    }
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .ok_or_else(|| bad("no model.merges"))?
        .iter()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
            _ => None,
        })
        .map(Value::String)
        .collect();
    let tok = kiln_text::Tokenizer::from_dir(dir)?;
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.set("tokenizer.ggml.pre", Value::String("smaug-bpe".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(
            by_id
                .iter()
                .map(|(_, t, _)| Value::String(t.clone()))
                .collect(),
        ),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(by_id.iter().map(|(_, _, ty)| Value::I32(*ty)).collect()),
    );
    w.set("tokenizer.ggml.merges", Value::Array(merges));
    if let Some(b) = tok.bos_id() {
        w.set("tokenizer.ggml.bos_token_id", Value::U32(b));
    }
    if let Some(e) = tok.eos_id() {
        w.set("tokenizer.ggml.eos_token_id", Value::U32(e));
        w.set("tokenizer.ggml.padding_token_id", Value::U32(e));
    }
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(tok.adds_bos()));
    w.set("tokenizer.ggml.add_eos_token", Value::Bool(false));
    if let Some(t) = tok.chat_template() {
        w.set("tokenizer.chat_template", Value::String(t.to_string()));
    }
    Ok(())
}

/// Builds the f32 GGUF of the Hugging Face directory `dir` in memory.
pub fn gguf_f32(dir: &Path, name: &str) -> Result<GgufFile> {
    let (cfg, _tied, tensors) = read_hf_dir(dir)?;
    let mut w = GgufWriter::new();
    let u = |x: usize| Value::U32(x as u32);
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.name", Value::String(name.into()));
    w.set("llama.vocab_size", u(cfg.vocab_size));
    w.set("llama.context_length", u(cfg.context_length));
    w.set("llama.embedding_length", u(cfg.dim));
    w.set("llama.block_count", u(cfg.n_layers));
    w.set("llama.feed_forward_length", u(cfg.ffn_dim));
    w.set("llama.attention.head_count", u(cfg.n_heads));
    w.set("llama.attention.head_count_kv", u(cfg.n_kv_heads));
    w.set("llama.attention.key_length", u(cfg.head_dim));
    w.set("llama.attention.value_length", u(cfg.head_dim));
    w.set("llama.rope.dimension_count", u(cfg.rope_dim));
    w.set("llama.rope.freq_base", Value::F32(cfg.rope_theta));
    w.set(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(cfg.rms_eps),
    );
    w.set("general.file_type", Value::U32(0));
    tokenizer_metadata(&mut w, dir)?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort_by_key(|n| gguf_order(n));
    for hf in names {
        let gguf = hf_to_gguf(hf, cfg.family).ok_or_else(|| {
            TrainError::Checkpoint(format!("{}: unexpected tensor {hf:?}", dir.display()))
        })?;
        let t = &tensors[hf];
        let mut data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let dims: Vec<u64> = t.dims().iter().rev().map(|&d| d as u64).collect();
        if gguf.ends_with("attn_q.weight") {
            data = permute_rope_rows(&data, cfg.n_heads, cfg.dim);
        } else if gguf.ends_with("attn_k.weight") {
            data = permute_rope_rows(&data, cfg.n_kv_heads, cfg.dim);
        }
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(TensorData {
            name: gguf,
            dims,
            ty: GgmlType::F32,
            data: bytes,
        });
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes).map_err(io_err(dir))?;
    Ok(GgufFile::from_vec(bytes).map_err(kiln_model::ModelError::from)?)
}

/// llama.cpp's order: embedding, blocks in order, output norm, output.
fn gguf_order(hf: &str) -> (usize, usize, String) {
    match hf.strip_prefix("model.layers.") {
        Some(rest) => (
            1,
            rest.split('.')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0),
            hf.to_string(),
        ),
        None if hf.contains("embed_tokens") => (0, 0, hf.to_string()),
        None => (2, 0, hf.to_string()),
    }
}

/// Writes the Hugging Face directory `dir` as a GGUF file of weight type `ty` at `out`.
pub fn export_gguf(
    dir: &Path,
    ty: GgmlType,
    out: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<ExportReport> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|q| q.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "kiln".into());
    let file = gguf_f32(dir, &name)?;
    Ok(requantize_gguf(&file, ty, out, progress)?)
}

/// The Hugging Face directory inside a run (`run/model`), or `path` itself when it is one.
pub fn model_dir(path: &Path) -> Result<PathBuf> {
    if path.join("config.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let inner = path.join("model");
    if inner.join("config.json").is_file() {
        return Ok(inner);
    }
    Err(TrainError::Checkpoint(format!(
        "{}: neither a model directory (config.json) nor a run directory with model/ inside",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_interleaves_halves() {
        // One head of width 4, one column: rows [a0, a1, b0, b1] → [a0, b0, a1, b1].
        assert_eq!(
            permute_rope_rows(&[0.0, 1.0, 2.0, 3.0], 1, 1),
            vec![0.0, 2.0, 1.0, 3.0]
        );
        // Two heads of width 2 are already interleaved.
        assert_eq!(
            permute_rope_rows(&[0.0, 1.0, 2.0, 3.0], 2, 1),
            vec![0.0, 1.0, 2.0, 3.0]
        );
    }
}
