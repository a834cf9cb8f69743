//! The trainer's side of the parameters-file formats, which live in kiln-model
//! ([`kiln_model::formats`]): candle tensors to and from [`F32Tensor`]s, and a Hugging Face
//! directory written with the tokenizer of a tokenizer directory.

use crate::Result;
use candle_core::{DType, Device, Tensor};
use kiln_model::formats::{F32Tensor, TokenizerFiles};
use kiln_model::ModelConfig;
use std::collections::HashMap;
use std::path::Path;

/// Candle tensors (any float type) as f32 values.
pub fn to_f32_tensors(tensors: &HashMap<String, Tensor>) -> Result<HashMap<String, F32Tensor>> {
    tensors
        .iter()
        .map(|(name, t)| {
            let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok((name.clone(), F32Tensor { shape: t.dims().to_vec(), data }))
        })
        .collect()
}

/// f32 values as candle tensors on the CPU (the values move, they are not copied).
pub fn from_f32_tensors(tensors: HashMap<String, F32Tensor>) -> Result<HashMap<String, Tensor>> {
    tensors.into_iter().map(|(name, t)| Ok((name, Tensor::from_vec(t.data, t.shape, &Device::Cpu)?))).collect()
}

/// Writes a Hugging Face model directory at `dir` (see [`kiln_model::formats::write_hf_dir`])
/// from parameters under Hugging Face names, with the tokenizer of `tokenizer_dir` and, when
/// given, `chat_template` in place of the tokenizer's.
pub fn write_hf_dir(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    cfg: &ModelConfig,
    tied: bool,
    tokenizer_dir: &Path,
    chat_template: Option<&str>,
) -> Result<()> {
    let tok = kiln_text::Tokenizer::from_dir(tokenizer_dir)?;
    let tokenizer = TokenizerFiles { dir: tokenizer_dir, chat_template, bos: tok.bos_id(), eos: tok.eos_id() };
    Ok(kiln_model::formats::write_hf_dir(dir, &to_f32_tensors(tensors)?, cfg, tied, &tokenizer)?)
}
