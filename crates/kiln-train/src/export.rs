//! Outputs of a run: a Hugging Face directory (model.safetensors in f32, config.json for the
//! family's `*ForCausalLM`, tokenizer.json, tokenizer_config.json with the chat template,
//! generation_config.json), which `kiln run` and `transformers` load as they are, and GGUF.
//!
//! GGUF export follows llama.cpp's `convert_hf_to_gguf.py` for llama, qwen2, qwen3 and gemma3:
//! tensor names through kiln-model's one name table, llama's Q and K rows permuted from
//! Hugging Face's half-split RoPE order to GGUF llama's interleaved order, Gemma's norms
//! stored as `1 + w`, the byte-level BPE vocabulary and merges as `tokenizer.ggml.*`
//! (pre-tokenizer `smaug-bpe`: Llama 3's regex without `ignore_merges`, the one the tokenizer
//! was trained with). Both config.json and the GGUF header are read back before anything is
//! written, so a model either format cannot express is refused rather than written wrong.
//! The f32 file is built in memory and handed to kiln-model's [`requantize_gguf`], which writes
//! f32, f16, q8_0 or q4_0 (and the other types `kiln quantize` knows) atomically.

use crate::checkpoint::{load_tensors, write_atomic};
use crate::{io_err, Result, TrainError};
use candle_core::{DType, Tensor};
use kiln_gguf::{GgmlType, GgufFile, GgufWriter, TensorData, Value};
use kiln_model::config::{Activation, Family, RopeStyle};
use kiln_model::formats::gguf_export::{requantize_gguf, ExportReport};
use kiln_model::formats::names::{hf_to_gguf, is_norm_weight};
use kiln_model::formats::parse_hf_config;
use kiln_model::ModelConfig;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tokenizer files copied from a tokenizer directory into a model directory.
pub const TOKENIZER_FILES: &[&str] = &["tokenizer.json", "tokenizer_config.json"];

/// The `transformers` class and `model_type` of a family's causal language model.
fn hf_architecture(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::Llama => ("LlamaForCausalLM", "llama"),
        Family::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Family::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        Family::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
    }
}

/// `x` as the shortest decimal that reads back as it (`1e-6`, not `9.99999997e-7`).
fn short(x: f32) -> Json {
    json!(x.to_string().parse::<f64>().unwrap_or(f64::from(x)))
}

/// `config.json` of the family's `*ForCausalLM` with this shape.
pub fn hf_config_json(cfg: &ModelConfig, tied: bool, bos: Option<u32>, eos: Option<u32>) -> Json {
    let (architecture, model_type) = hf_architecture(cfg.family);
    let act = match cfg.activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    };
    let mut j = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": short(cfg.rms_eps),
        "rope_theta": short(cfg.rope_theta),
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": tied,
        "hidden_act": act,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
    });
    match cfg.family {
        Family::Llama => {
            j["attention_bias"] = json!(false);
            j["mlp_bias"] = json!(false);
        }
        Family::Qwen2 | Family::Qwen3 => {
            j["use_sliding_window"] = json!(false);
            if cfg.family == Family::Qwen3 {
                j["attention_bias"] = json!(false);
            }
        }
        Family::Gemma3 => {
            j["hidden_activation"] = json!(act);
            let scalar = 1.0 / (f64::from(cfg.attn_scale) * f64::from(cfg.attn_scale));
            j["query_pre_attn_scalar"] = json!(scalar);
            j["rope_local_base_freq"] = short(cfg.rope_theta_local);
            // Newer transformers read layer_types, older ones the window and its pattern (a
            // missing window means 4096 to both; all-global layers say so with layer_types).
            j["sliding_window"] = json!(cfg.sliding_window);
            j["sliding_window_pattern"] = json!(cfg.sliding_pattern);
            let types: Vec<&str> = (0..cfg.n_layers)
                .map(|l| if cfg.is_sliding(l) { "sliding_attention" } else { "full_attention" })
                .collect();
            j["layer_types"] = json!(types);
            j["final_logit_softcapping"] = cfg.final_logit_softcap.map_or(Json::Null, short);
            j["attn_logit_softcapping"] = Json::Null;
            j["rope_scaling"] = Json::Null;
        }
    }
    j
}

/// Checks that `back`, the configuration a written header reads back as, is `cfg`: anything
/// else means the format cannot express the model (GGUF, for one, has no attention scale of
/// its own: llama.cpp scales by the head width). The attention scale may move by float
/// rounding (config.json stores `query_pre_attn_scalar`, its inverse square).
fn check_round_trip(what: &str, cfg: &ModelConfig, mut back: ModelConfig) -> Result<()> {
    if ((back.attn_scale - cfg.attn_scale) / cfg.attn_scale).abs() < 1e-6 {
        back.attn_scale = cfg.attn_scale;
    }
    // Without a window no layer slides, whatever the pattern.
    if back.sliding_window.is_none() && cfg.sliding_window.is_none() {
        back.sliding_pattern = cfg.sliding_pattern;
    }
    if back == *cfg {
        return Ok(());
    }
    Err(TrainError::Config(format!(
        "{what} cannot express this {} model: it would read back as {back:?}, not {cfg:?}",
        cfg.family.architecture()
    )))
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
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let tmp = dir.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let f32s: HashMap<String, Tensor> =
        tensors.iter().map(|(k, t)| Ok((k.clone(), t.to_dtype(DType::F32)?.contiguous()?))).collect::<Result<_>>()?;
    candle_core::safetensors::save(&f32s, tmp.join("model.safetensors"))?;
    for f in TOKENIZER_FILES {
        let src = tokenizer_dir.join(f);
        std::fs::copy(&src, tmp.join(f)).map_err(io_err(&src))?;
    }
    if let Some(template) = chat_template {
        let path = tmp.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let mut cfg: Json = serde_json::from_str(&text)
            .map_err(|e| TrainError::Checkpoint(format!("{}: not valid JSON ({e})", path.display())))?;
        cfg["chat_template"] = template.into();
        write_atomic(&path, serde_json::to_string_pretty(&cfg).expect("json serializes").as_bytes())?;
    }
    let tok = kiln_text::Tokenizer::from_dir(tokenizer_dir)?;
    let config = hf_config_json(cfg, tied, tok.bos_id(), tok.eos_id());
    let back = parse_hf_config(&config)?;
    check_round_trip("config.json", cfg, back.model)?;
    let pretty = |v: &Json| serde_json::to_string_pretty(v).expect("json serializes");
    write_atomic(&tmp.join("config.json"), pretty(&config).as_bytes())?;
    let gen =
        json!({"bos_token_id": tok.bos_id(), "eos_token_id": tok.eos_id(), "do_sample": true, "temperature": 0.8});
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

/// A Hugging Face directory read back: its configuration, whether the output projection is
/// tied, and its tensors.
pub fn read_hf_dir(dir: &Path) -> Result<(ModelConfig, bool, HashMap<String, Tensor>)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: not valid JSON ({e})", path.display())))?;
    let hf = parse_hf_config(&json)?;
    if hf.rope_freqs.is_some() {
        return Err(TrainError::Config(format!(
            "{}: scaled RoPE (rope_scaling) is not implemented in kiln's trainer",
            path.display()
        )));
    }
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

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// The `tokenizer.ggml.*` metadata for a tokenizer.json: a byte-level BPE (`gpt2`, as kiln
/// trains them) or a SentencePiece-style BPE with byte fallback (`llama`, as Gemma's and
/// every tokenizer kiln read from such a GGUF).
fn tokenizer_metadata(w: &mut GgufWriter, dir: &Path) -> Result<()> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let bad = |m: &str| TrainError::Checkpoint(format!("{}: {m}", path.display()));
    let json: Json = serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON ({e})")))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad("GGUF export needs a BPE tokenizer (byte-level or with byte fallback)"));
    }
    let vocab = model["vocab"].as_object().ok_or_else(|| bad("no model.vocab"))?;
    let mut by_id: Vec<(u32, String, i32)> =
        vocab.iter().filter_map(|(t, id)| Some((id.as_u64()? as u32, t.clone(), NORMAL))).collect();
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        let ty = if added["special"].as_bool() == Some(true) { CONTROL } else { USER_DEFINED };
        by_id.retain(|(i, _, _)| *i != id as u32);
        by_id.push((id as u32, content.to_string(), ty));
    }
    by_id.sort();
    if by_id.iter().enumerate().any(|(k, (id, _, _))| *id as usize != k) {
        return Err(bad("token ids are not contiguous from 0"));
    }
    let merges: Vec<String> = model["merges"]
        .as_array()
        .ok_or_else(|| bad("no model.merges"))?
        .iter()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
            _ => None,
        })
        .collect();
    let tok = kiln_text::Tokenizer::from_dir(dir)?;
    if model["byte_fallback"].as_bool() == Some(true) {
        spm_vocab(w, &json, &mut by_id, &merges);
    } else {
        w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
        w.set("tokenizer.ggml.pre", Value::String("smaug-bpe".into()));
        w.set("tokenizer.ggml.merges", Value::Array(merges.into_iter().map(Value::String).collect()));
    }
    w.set("tokenizer.ggml.tokens", Value::Array(by_id.iter().map(|(_, t, _)| Value::String(t.clone())).collect()));
    w.set("tokenizer.ggml.token_type", Value::Array(by_id.iter().map(|(_, _, ty)| Value::I32(*ty)).collect()));
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

/// SentencePiece (`llama`) vocabulary metadata of a BPE tokenizer.json with byte fallback:
/// scores that rank each token by the first merge making it (the only thing llama.cpp's and
/// kiln's SentencePiece tokenizers use scores for: which adjacent pair merges first), the
/// byte and unknown tokens typed, and whether a space is put before the text.
fn spm_vocab(w: &mut GgufWriter, json: &Json, by_id: &mut [(u32, String, i32)], merges: &[String]) {
    let index: HashMap<&str, usize> = by_id.iter().map(|(id, t, _)| (t.as_str(), *id as usize)).collect();
    let unranked = -(merges.len() as f32) - 1.0;
    let mut scores = vec![unranked; by_id.len()];
    for (rank, m) in merges.iter().enumerate() {
        if let Some(&id) = index.get(m.replacen(' ', "", 1).as_str()) {
            if scores[id] == unranked {
                scores[id] = -(rank as f32);
            }
        }
    }
    let unk = json["model"]["unk_token"].as_str();
    let is_byte = |t: &str| t.len() == 6 && t.starts_with("<0x") && t.ends_with('>');
    for (id, t, ty) in by_id.iter_mut() {
        if Some(t.as_str()) == unk {
            *ty = UNKNOWN;
            w.set("tokenizer.ggml.unknown_token_id", Value::U32(*id));
        } else if *ty == NORMAL && is_byte(t) {
            *ty = BYTE;
        }
    }
    // A `Prepend` normalizer anywhere is SentencePiece's `add_dummy_prefix`.
    let prefix = json["normalizer"].to_string().contains("\"Prepend\"");
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set("tokenizer.ggml.scores", Value::Array(scores.into_iter().map(Value::F32).collect()));
    w.set("tokenizer.ggml.add_space_prefix", Value::Bool(prefix));
}

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

/// Builds the f32 GGUF of the Hugging Face directory `dir` in memory.
pub fn gguf_f32(dir: &Path, name: &str) -> Result<GgufFile> {
    let (cfg, _tied, tensors) = read_hf_dir(dir)?;
    let mut w = GgufWriter::new();
    model_metadata(&mut w, &cfg);
    w.set("general.name", Value::String(name.into()));
    w.set("general.file_type", Value::U32(0));
    tokenizer_metadata(&mut w, dir)?;
    let permute = cfg.family.gguf_rope_style() == RopeStyle::Interleaved;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort_by_key(|n| gguf_order(n));
    for hf in names {
        let gguf = hf_to_gguf(hf, cfg.family)
            .ok_or_else(|| TrainError::Checkpoint(format!("{}: unexpected tensor {hf:?}", dir.display())))?;
        let t = &tensors[hf];
        let mut data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let dims: Vec<u64> = t.dims().iter().rev().map(|&d| d as u64).collect();
        if permute && gguf.ends_with("attn_q.weight") {
            data = permute_rope_rows(&data, cfg.n_heads, cfg.dim);
        } else if permute && gguf.ends_with("attn_k.weight") {
            data = permute_rope_rows(&data, cfg.n_kv_heads, cfg.dim);
        } else if cfg.norm_weight_offset != 0.0 && is_norm_weight(&gguf) {
            // GGUF Gemma norms hold the factor itself, 1 + w.
            data.iter_mut().for_each(|v| *v += cfg.norm_weight_offset);
        }
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(TensorData { name: gguf, dims, ty: GgmlType::F32, data: bytes });
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes).map_err(io_err(dir))?;
    let file = GgufFile::from_vec(bytes).map_err(kiln_model::ModelError::from)?;
    let back = ModelConfig::from_gguf(&file)?;
    check_round_trip("GGUF", &cfg, ModelConfig { rope_style: cfg.rope_style, ..back })?;
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

/// Writes the Hugging Face directory `dir` as a GGUF file of weight type `ty` at `out`.
pub fn export_gguf(dir: &Path, ty: GgmlType, out: &Path, progress: impl FnMut(u64, u64)) -> Result<ExportReport> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().and_then(|q| q.file_name()).map(|n| n.to_string_lossy().into_owned()))
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
    fn config_json_reads_back_as_the_model_in_every_family() {
        let shape = |family| ModelConfig {
            vocab_size: 100,
            dim: 32,
            n_layers: 4,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            ffn_dim: 64,
            context_length: 128,
            rms_eps: 1e-6,
            rope_dim: 16,
            attn_scale: 0.25,
            ..ModelConfig::for_family(family)
        };
        let gemma = |window, cap| ModelConfig {
            sliding_window: window,
            sliding_pattern: 3,
            rope_theta: 1e6,
            final_logit_softcap: cap,
            attn_scale: 0.1,
            ..shape(Family::Gemma3)
        };
        let configs = [
            shape(Family::Llama),
            shape(Family::Qwen2),
            shape(Family::Qwen3),
            gemma(Some(8), Some(30.0)),
            gemma(None, None),
        ];
        for (i, cfg) in configs.iter().enumerate() {
            for tied in [false, true] {
                let j = hf_config_json(cfg, tied, Some(1), Some(2));
                let back = parse_hf_config(&j).unwrap();
                check_round_trip("config.json", cfg, back.model).unwrap_or_else(|e| panic!("{i}: {e}"));
                assert_eq!(back.tie_word_embeddings, tied);
            }
        }
        // A switch the family's config.json has no key for is refused, not dropped.
        let biased_llama = ModelConfig { qkv_bias: true, ..shape(Family::Llama) };
        let back = parse_hf_config(&hf_config_json(&biased_llama, true, None, None)).unwrap();
        assert!(check_round_trip("config.json", &biased_llama, back.model).is_err());
    }

    #[test]
    fn rope_permutation_interleaves_halves() {
        // One head of width 4, one column: rows [a0, a1, b0, b1] → [a0, b0, a1, b1].
        assert_eq!(permute_rope_rows(&[0.0, 1.0, 2.0, 3.0], 1, 1), vec![0.0, 2.0, 1.0, 3.0]);
        // Two heads of width 2 are already interleaved.
        assert_eq!(permute_rope_rows(&[0.0, 1.0, 2.0, 3.0], 2, 1), vec![0.0, 1.0, 2.0, 3.0]);
    }
}
