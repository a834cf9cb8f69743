//! The other direction of [`crate::gguf_vocab`]: a Hugging Face BPE tokenizer (tokenizer.json
//! and the files beside it) as GGUF `tokenizer.ggml.*` metadata, so that llama.cpp and kiln
//! tokenize an exported model as the tokenizer directory does.
//!
//! A byte-level BPE (what `kiln tokenizer train` makes) becomes llama.cpp's `gpt2` model with
//! pre-tokenizer `smaug-bpe` (Llama 3's regex without `ignore_merges`, the one kiln trains
//! with). A BPE with byte fallback (Gemma's, and every SentencePiece tokenizer kiln read from a
//! GGUF) becomes the `llama` model, with scores ranking each token by the first merge that
//! makes it.

use crate::{TextError, Tokenizer};
use kiln_gguf::Value;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::Path;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// The `tokenizer.ggml.*` entries (and `tokenizer.chat_template`) of the tokenizer in `dir`.
pub fn gguf_tokenizer_metadata(dir: &Path) -> Result<Vec<(String, Value)>, TextError> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|source| TextError::Io { path: path.clone(), source })?;
    let json: Json = serde_json::from_str(&text).map_err(|source| TextError::Json { path: path.clone(), source })?;
    let bad = |m: &str| TextError::Metadata(format!("{}: {m}", path.display()));
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
    let tok = Tokenizer::from_dir(dir)?;
    let mut meta: Vec<(String, Value)> = Vec::new();
    let mut set = |k: &str, v: Value| meta.push((k.to_string(), v));
    if model["byte_fallback"].as_bool() == Some(true) {
        for (k, v) in spm_vocab(&json, &mut by_id, &merges) {
            set(k, v);
        }
    } else {
        set("tokenizer.ggml.model", Value::String("gpt2".into()));
        set("tokenizer.ggml.pre", Value::String("smaug-bpe".into()));
        set("tokenizer.ggml.merges", Value::Array(merges.into_iter().map(Value::String).collect()));
    }
    set("tokenizer.ggml.tokens", Value::Array(by_id.iter().map(|(_, t, _)| Value::String(t.clone())).collect()));
    set("tokenizer.ggml.token_type", Value::Array(by_id.iter().map(|(_, _, ty)| Value::I32(*ty)).collect()));
    if let Some(b) = tok.bos_id() {
        set("tokenizer.ggml.bos_token_id", Value::U32(b));
    }
    if let Some(e) = tok.eos_id() {
        set("tokenizer.ggml.eos_token_id", Value::U32(e));
        set("tokenizer.ggml.padding_token_id", Value::U32(e));
    }
    set("tokenizer.ggml.add_bos_token", Value::Bool(tok.adds_bos()));
    set("tokenizer.ggml.add_eos_token", Value::Bool(false));
    if let Some(t) = tok.chat_template() {
        set("tokenizer.chat_template", Value::String(t.to_string()));
    }
    Ok(meta)
}

/// SentencePiece (`llama`) vocabulary entries of a BPE tokenizer.json with byte fallback:
/// scores that rank each token by the first merge making it (the only thing llama.cpp's and
/// kiln's SentencePiece tokenizers use scores for: which adjacent pair merges first), the
/// byte and unknown tokens typed, and whether a space is put before the text.
fn spm_vocab(json: &Json, by_id: &mut [(u32, String, i32)], merges: &[String]) -> Vec<(&'static str, Value)> {
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
    let mut meta = Vec::new();
    let unk = json["model"]["unk_token"].as_str();
    let is_byte = |t: &str| t.len() == 6 && t.starts_with("<0x") && t.ends_with('>');
    for (id, t, ty) in by_id.iter_mut() {
        if Some(t.as_str()) == unk {
            *ty = UNKNOWN;
            meta.push(("tokenizer.ggml.unknown_token_id", Value::U32(*id)));
        } else if *ty == NORMAL && is_byte(t) {
            *ty = BYTE;
        }
    }
    // A `Prepend` normalizer anywhere is SentencePiece's `add_dummy_prefix`.
    let prefix = json["normalizer"].to_string().contains("\"Prepend\"");
    meta.push(("tokenizer.ggml.model", Value::String("llama".into())));
    meta.push(("tokenizer.ggml.scores", Value::Array(scores.into_iter().map(Value::F32).collect())));
    meta.push(("tokenizer.ggml.add_space_prefix", Value::Bool(prefix)));
    meta
}
