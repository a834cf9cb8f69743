//! Writing a Hugging Face model directory: model.safetensors in f32, config.json for the
//! family's `*ForCausalLM`, the tokenizer files, generation_config.json. `kiln run` and
//! `transformers` load the result as it is. config.json is read back before anything is
//! written, so a model the format cannot express is refused rather than written wrong.

use super::f32::F32Tensor;
use super::hf_config::parse_hf_config;
use crate::config::{Activation, Family, ModelConfig};
use crate::ModelError;
use safetensors::tensor::{Dtype, View};
use serde_json::{json, Value as Json};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// The tokenizer files copied from a tokenizer directory into a model directory.
pub const TOKENIZER_FILES: &[&str] = &["tokenizer.json", "tokenizer_config.json"];

/// The tokenizer a model directory is written with.
pub struct TokenizerFiles<'a> {
    /// The directory holding [`TOKENIZER_FILES`].
    pub dir: &'a Path,
    /// A chat template to put in tokenizer_config.json in place of the one there.
    pub chat_template: Option<&'a str>,
    /// The BOS id (config.json and generation_config.json name it).
    pub bos: Option<u32>,
    /// The EOS id.
    pub eos: Option<u32>,
}

/// `x` as the shortest decimal that reads back as it (`1e-6`, not `9.99999997e-7`).
fn short(x: f32) -> Json {
    json!(x.to_string().parse::<f64>().unwrap_or(f64::from(x)))
}

/// The `architectures` entry and `model_type` of a family.
fn hf_architecture(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::Llama => ("LlamaForCausalLM", "llama"),
        Family::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Family::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        Family::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
    }
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
            // transformers 5 types it as an integer and refuses `256.0`.
            j["query_pre_attn_scalar"] = if (scalar - scalar.round()).abs() < 1e-6 * scalar {
                json!(scalar.round() as u64)
            } else {
                json!(scalar)
            };
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
pub fn check_round_trip(what: &str, cfg: &ModelConfig, mut back: ModelConfig) -> Result<(), ModelError> {
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
    Err(ModelError::Config(format!(
        "{what} cannot express this {} model: it would read back as {back:?}, not {cfg:?}",
        cfg.family.architecture()
    )))
}

/// f32 tensors as safetensors sees them.
impl View for &F32Tensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.display().to_string(), source }
}

/// Writes a Hugging Face model directory at `dir` from parameters under Hugging Face names,
/// with the tokenizer `tokenizer`. The directory is assembled beside `dir` and swapped in, so
/// readers never see a mix.
pub fn write_hf_dir(
    dir: &Path,
    tensors: &HashMap<String, F32Tensor>,
    cfg: &ModelConfig,
    tied: bool,
    tokenizer: &TokenizerFiles,
) -> Result<(), ModelError> {
    let config = hf_config_json(cfg, tied, tokenizer.bos, tokenizer.eos);
    check_round_trip("config.json", cfg, parse_hf_config(&config)?.model)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let tmp = dir.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let written = (|| {
        let mut sorted: Vec<(&String, &F32Tensor)> = tensors.iter().collect();
        sorted.sort_by_key(|(k, _)| k.as_str());
        let weights = tmp.join("model.safetensors");
        safetensors::serialize_to_file(sorted, &None, &weights)
            .map_err(|e| ModelError::Format(format!("{}: cannot write safetensors: {e}", weights.display())))?;
        for f in TOKENIZER_FILES {
            let src = tokenizer.dir.join(f);
            std::fs::copy(&src, tmp.join(f)).map_err(io(&src))?;
        }
        if let Some(template) = tokenizer.chat_template {
            let path = tmp.join("tokenizer_config.json");
            let mut tc = super::read_json(&path)?;
            tc["chat_template"] = template.into();
            std::fs::write(&path, pretty(&tc)).map_err(io(&path))?;
        }
        let path = tmp.join("config.json");
        std::fs::write(&path, pretty(&config)).map_err(io(&path))?;
        let generation = json!({"bos_token_id": tokenizer.bos, "eos_token_id": tokenizer.eos, "do_sample": true, "temperature": 0.8});
        let path = tmp.join("generation_config.json");
        std::fs::write(&path, pretty(&generation)).map_err(io(&path))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = dir.with_file_name(format!(".{name}.old{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

fn pretty(v: &Json) -> String {
    serde_json::to_string_pretty(v).expect("json serializes")
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
        // An integral query scale is written as an integer (transformers 5 requires one).
        let j = hf_config_json(&ModelConfig { attn_scale: 0.25, ..gemma(None, None) }, true, None, None);
        assert_eq!(j["query_pre_attn_scalar"], json!(16));
        // A switch the family's config.json has no key for is refused, not dropped.
        let biased_llama = ModelConfig { qkv_bias: true, ..shape(Family::Llama) };
        let back = parse_hf_config(&hf_config_json(&biased_llama, true, None, None)).unwrap();
        assert!(check_round_trip("config.json", &biased_llama, back.model).is_err());
    }
}
