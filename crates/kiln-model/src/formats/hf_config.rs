//! Hugging Face `config.json` → [`ModelConfig`], for `model_type` llama, mistral, qwen2, qwen3,
//! gemma3_text and gemma3 (whose `text_config` holds the language model). Keys a config leaves
//! out take the defaults of the matching `transformers` config class, as `from_pretrained`
//! would. Also reads `rope_scaling` into per-frequency divisors (GGUF's `rope_freqs`).

use crate::config::{Activation, Family, ModelConfig, RopeStyle};
use crate::ModelError;
use serde_json::{Map, Value};

/// What kiln takes from a Hugging Face config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    /// The model's shape and switches.
    pub model: ModelConfig,
    /// The output projection is the embedding matrix (no `lm_head.weight` needed).
    pub tie_word_embeddings: bool,
    /// `[rope_dim/2]` RoPE frequency divisors from `rope_scaling` (llama3, linear), if any.
    pub rope_freqs: Option<Vec<f32>>,
}

/// Reads a model configuration from a parsed Hugging Face `config.json`.
pub fn hf_config(json: &Value) -> Result<ModelConfig, ModelError> {
    parse_hf_config(json).map(|c| c.model)
}

/// Widest head accepted from a config.json (real models use at most 256). The RoPE tables are
/// sized by it before any tensor can contradict it, so a nonsense value must stop here.
const MAX_HEAD_DIM: usize = 1 << 16;

fn bad(msg: String) -> ModelError {
    ModelError::Config(format!("config.json: {msg}"))
}

/// The defaults `transformers` fills in for keys a config.json leaves out.
fn default_for(family: Family, key: &str) -> Option<f64> {
    Some(match (family, key) {
        // Gemma3TextConfig's defaults: multimodal checkpoints rely on them in `text_config`.
        (Family::Gemma3, "vocab_size") => 262_208.0,
        (Family::Gemma3, "hidden_size") => 2304.0,
        (Family::Gemma3, "intermediate_size") => 9216.0,
        (Family::Gemma3, "num_hidden_layers") => 26.0,
        (Family::Gemma3, "num_attention_heads") => 8.0,
        (Family::Gemma3, "num_key_value_heads") => 4.0,
        (Family::Gemma3, "head_dim") => 256.0,
        (Family::Gemma3, "max_position_embeddings") => 131_072.0,
        (Family::Gemma3, "rope_theta") => 1_000_000.0,
        (Family::Gemma3, "sliding_window") => 4096.0,
        (Family::Gemma3, "sliding_window_pattern") => 6.0,
        (Family::Gemma3, "query_pre_attn_scalar") => 256.0,
        (Family::Qwen3, "head_dim") => 128.0,
        (_, "rope_local_base_freq") => 10_000.0,
        (_, "rms_norm_eps") => 1e-6,
        (_, "rope_theta") => 10_000.0,
        (_, "max_position_embeddings") => 2048.0,
        _ => return None,
    })
}

/// Typed access to one config object, with `null` read as absent.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    family: Family,
}

impl<'a> Fields<'a> {
    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn explicit_uint(&self, key: &str) -> Result<Option<usize>, ModelError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|x| usize::try_from(x).ok()) {
                Some(x) => Ok(Some(x)),
                None => Err(bad(format!("{key} is {v}, expected a non-negative integer"))),
            },
        }
    }

    fn uint(&self, key: &str) -> Result<Option<usize>, ModelError> {
        Ok(self.explicit_uint(key)?.or_else(|| default_for(self.family, key).map(|d| d as usize)))
    }

    fn required_uint(&self, key: &str) -> Result<usize, ModelError> {
        self.uint(key)?.ok_or_else(|| bad(format!("{key} is missing")))
    }

    fn explicit_float(&self, key: &str) -> Result<Option<f64>, ModelError> {
        float_in(self.obj, key)
    }

    fn float(&self, key: &str) -> Result<Option<f64>, ModelError> {
        Ok(self.explicit_float(key)?.or_else(|| default_for(self.family, key)))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| bad(format!("{key} is {v}, expected true or false"))),
        }
    }

    fn object(&self, key: &str) -> Option<&'a Map<String, Value>> {
        self.raw(key).and_then(Value::as_object)
    }
}

fn float_in(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ModelError> {
    match obj.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(format!("{key} is {v}, expected a number"))),
    }
}

/// The family and the object holding the language model's keys.
fn text_config(json: &Value) -> Result<(Family, &Map<String, Value>), ModelError> {
    let obj = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let model_type = obj.get("model_type").and_then(Value::as_str).ok_or_else(|| {
        bad("model_type is missing; kiln reads llama, mistral, qwen2, qwen3 and gemma3 models".into())
    })?;
    if model_type == "gemma3" {
        // Gemma3ForConditionalGeneration: the text model's keys sit in text_config.
        let text = obj.get("text_config").and_then(Value::as_object).unwrap_or(obj);
        return Ok((Family::Gemma3, text));
    }
    let family =
        Family::from_architecture(model_type).ok_or_else(|| ModelError::UnknownArchitecture(model_type.into()))?;
    Ok((family, obj))
}

fn activation(f: &Fields) -> Result<Activation, ModelError> {
    let key = if f.raw("hidden_activation").is_some() { "hidden_activation" } else { "hidden_act" };
    let Some(v) = f.raw(key) else {
        return Ok(ModelConfig::for_family(f.family).activation);
    };
    match v.as_str() {
        Some("silu" | "swish") => Ok(Activation::Silu),
        Some("gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") => Ok(Activation::GeluTanh),
        _ => Err(bad(format!("{key} is {v}; kiln runs silu and gelu_pytorch_tanh"))),
    }
}

/// Gemma 3's sliding-window layers: (window, pattern) where every `pattern`-th layer is global.
/// Newer configs list `layer_types`; older ones give `sliding_window_pattern`.
fn gemma_sliding(f: &Fields, n_layers: usize) -> Result<(Option<usize>, usize), ModelError> {
    let window = f.uint("sliding_window")?.filter(|&w| w > 0);
    let pattern = f.required_uint("sliding_window_pattern")?;
    let Some(types) = f.raw("layer_types") else {
        return Ok((window, pattern));
    };
    let types = types.as_array().ok_or_else(|| bad(format!("layer_types is {types}, expected a list")))?;
    if types.len() != n_layers {
        return Err(bad(format!("layer_types lists {} layers but num_hidden_layers is {n_layers}", types.len())));
    }
    let sliding = types
        .iter()
        .map(|t| match t.as_str() {
            Some("sliding_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            _ => Err(bad(format!("layer_types holds {t}; expected sliding_attention or full_attention"))),
        })
        .collect::<Result<Vec<bool>, _>>()?;
    if !sliding.contains(&true) {
        return Ok((None, 0));
    }
    if window.is_none() {
        return Err(bad("layer_types has sliding_attention layers but sliding_window is missing".into()));
    }
    let pattern = sliding.iter().position(|s| !s).map_or(pattern, |i| i + 1);
    let periodic = pattern > 0 && sliding.iter().enumerate().all(|(l, &s)| (l % pattern < pattern - 1) == s);
    if !periodic {
        return Err(bad("layer_types is not one global layer every N layers, which is all kiln runs".into()));
    }
    Ok((window, pattern))
}

/// The rope parameters object of newer `transformers` (`rope_parameters`), for one layer kind.
fn rope_parameters<'a>(f: &Fields<'a>, kind: &str) -> Option<&'a Map<String, Value>> {
    let p = f.object("rope_parameters")?;
    match p.get(kind).and_then(Value::as_object) {
        Some(inner) => Some(inner),
        None if kind == "full_attention" => Some(p),
        None => None,
    }
}

/// Llama 3.1's frequency divisors (as llama.cpp's converter writes `rope_freqs.weight`).
pub fn llama3_rope_freqs(theta: f64, rope_dim: usize, factor: f64, low: f64, high: f64, original_ctx: f64) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (original_ctx / low, original_ctx / high);
    (0..rope_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / rope_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let divisor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            divisor as f32
        })
        .collect()
}

fn rope_freqs(f: &Fields, theta: f64, rope_dim: usize) -> Result<Option<Vec<f32>>, ModelError> {
    let scaling = f.object("rope_scaling").or_else(|| rope_parameters(f, "full_attention"));
    let Some(s) = scaling else { return Ok(None) };
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |k: &str, default: f64| float_in(s, k).map(|v| v.unwrap_or(default));
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let (factor, low, high) =
                (num("factor", 8.0)?, num("low_freq_factor", 1.0)?, num("high_freq_factor", 4.0)?);
            let original = num("original_max_position_embeddings", 8192.0)?;
            if !(factor > 0.0 && low > 0.0 && high > low && original > 0.0) {
                return Err(bad(format!("rope_scaling {} has impossible values", Value::Object(s.clone()))));
            }
            Ok(Some(llama3_rope_freqs(theta, rope_dim, factor, low, high, original)))
        }
        // Gemma 3 scales only its global layers; kiln's one divisor table would scale all.
        "linear" if f.family != Family::Gemma3 => {
            let factor = num("factor", 1.0)?;
            if factor.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return Err(bad(format!("rope_scaling factor {factor} must be positive")));
            }
            Ok(Some(vec![factor as f32; rope_dim / 2]))
        }
        other => Err(bad(format!("rope_scaling type {other:?} is not supported for {}", f.family.architecture()))),
    }
}

/// Reads everything kiln needs from a parsed Hugging Face `config.json`.
pub fn parse_hf_config(json: &Value) -> Result<HfConfig, ModelError> {
    let (family, obj) = text_config(json)?;
    let f = Fields { obj, family };
    let dim = f.required_uint("hidden_size")?;
    let n_heads = f.required_uint("num_attention_heads")?;
    if n_heads == 0 {
        return Err(bad("num_attention_heads is 0".into()));
    }
    let n_kv_heads = f.uint("num_key_value_heads")?.unwrap_or(n_heads);
    let head_dim = match f.uint("head_dim")? {
        Some(h) => h,
        None if dim % n_heads == 0 => dim / n_heads,
        None => return Err(bad(format!("hidden_size {dim} is not a multiple of num_attention_heads {n_heads}"))),
    };
    if head_dim > MAX_HEAD_DIM {
        return Err(bad(format!("head_dim {head_dim} is implausibly large (at most {MAX_HEAD_DIM})")));
    }
    let n_layers = f.required_uint("num_hidden_layers")?;
    let base = ModelConfig::for_family(family);
    let rope_theta = match f.explicit_float("rope_theta")? {
        Some(t) => t,
        None => match rope_parameters(&f, "full_attention") {
            Some(p) => float_in(p, "rope_theta")?,
            None => None,
        }
        .or_else(|| default_for(family, "rope_theta"))
        .unwrap_or(10_000.0),
    };
    let rope_theta_local = match f.explicit_float("rope_local_base_freq")? {
        Some(t) => t,
        None => match rope_parameters(&f, "sliding_attention") {
            Some(p) => float_in(p, "rope_theta")?,
            None => None,
        }
        .unwrap_or(10_000.0),
    };
    let (sliding_window, sliding_pattern) =
        if base.has_sliding_layers() { gemma_sliding(&f, n_layers)? } else { (None, 0) };
    // Gemma's query_pre_attn_scalar (the only family with one) replaces the head width.
    let attn_scale = match f.float("query_pre_attn_scalar")? {
        Some(s) if s.is_nan() || s <= 0.0 => return Err(bad(format!("query_pre_attn_scalar {s} must be positive"))),
        Some(s) => (1.0 / s.sqrt()) as f32,
        None => 1.0 / (head_dim as f32).sqrt(),
    };
    let model = ModelConfig {
        vocab_size: f.required_uint("vocab_size")?,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim: f.required_uint("intermediate_size")?,
        context_length: f.required_uint("max_position_embeddings")?,
        rms_eps: f.float("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_theta: rope_theta as f32,
        rope_theta_local: rope_theta_local as f32,
        rope_dim: head_dim,
        // Hugging Face keeps Q/K in the order `rotate_half` expects (llama.cpp permutes them).
        rope_style: RopeStyle::Halves,
        sliding_window,
        sliding_pattern,
        attn_scale,
        activation: activation(&f)?,
        final_logit_softcap: f.explicit_float("final_logit_softcapping")?.filter(|&c| c > 0.0).map(|c| c as f32),
        ..base
    };
    model.validate()?;
    let top = Fields { obj: json.as_object().expect("checked by text_config"), family };
    let tie_word_embeddings =
        f.bool("tie_word_embeddings")?.or(top.bool("tie_word_embeddings")?).unwrap_or(family == Family::Gemma3);
    let rope_freqs = rope_freqs(&f, rope_theta, model.rope_dim)?;
    Ok(HfConfig { model, tie_word_embeddings, rope_freqs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
            "rope_theta": 100000, "vocab_size": 49152, "tie_word_embeddings": true, "hidden_act": "silu",
            "rope_scaling": null
        })
    }

    #[test]
    fn smollm2_style_llama() {
        let c = parse_hf_config(&llama()).unwrap();
        let m = &c.model;
        assert_eq!(
            (m.family, m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim),
            (Family::Llama, 576, 30, 9, 3, 64)
        );
        assert_eq!((m.ffn_dim, m.vocab_size, m.context_length), (1536, 49152, 8192));
        assert_eq!((m.rms_eps, m.rope_theta, m.rope_style), (1e-5, 100_000.0, RopeStyle::Halves));
        assert_eq!((m.sliding_window, m.activation, m.scale_embeddings), (None, Activation::Silu, false));
        assert!((m.attn_scale - 0.125).abs() < 1e-7);
        assert!(c.tie_word_embeddings && c.rope_freqs.is_none());
    }

    #[test]
    fn gemma3_multimodal_text_config_uses_class_defaults() {
        let j = json!({
            "model_type": "gemma3",
            "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                            "num_hidden_layers": 34, "sliding_window": 1024},
            "vision_config": {"hidden_size": 1152}
        });
        let c = parse_hf_config(&j).unwrap();
        let m = &c.model;
        assert_eq!((m.family, m.n_heads, m.n_kv_heads, m.head_dim, m.vocab_size), (Family::Gemma3, 8, 4, 256, 262_208));
        assert_eq!((m.sliding_window, m.sliding_pattern), (Some(1024), 6));
        assert_eq!((m.rope_theta, m.rope_theta_local), (1_000_000.0, 10_000.0));
        assert_eq!((m.activation, m.scale_embeddings), (Activation::GeluTanh, true));
        assert!((m.attn_scale - 1.0 / 16.0).abs() < 1e-7);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn gemma3_layer_types_give_the_pattern() {
        let mut types = vec!["sliding_attention"; 18];
        types[5] = "full_attention";
        types[11] = "full_attention";
        types[17] = "full_attention";
        let j = json!({"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048,
            "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "vocab_size": 262144, "sliding_window": 512, "layer_types": types, "query_pre_attn_scalar": 256,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}});
        let m = hf_config(&j).unwrap();
        assert_eq!((m.sliding_window, m.sliding_pattern), (Some(512), 6));
        assert!(m.is_sliding(0) && !m.is_sliding(5) && m.is_sliding(6) && !m.is_sliding(17));
        assert_eq!((m.rope_theta, m.rope_theta_local), (1_000_000.0, 10_000.0));

        let mut odd = j.clone();
        odd["layer_types"][3] = json!("full_attention");
        assert!(matches!(hf_config(&odd), Err(ModelError::Config(_))));
    }

    #[test]
    fn qwen3_head_dim_and_qwen2_defaults() {
        let j = json!({"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "vocab_size": 151936,
            "max_position_embeddings": 40960, "rope_theta": 1000000, "tie_word_embeddings": true});
        let m = hf_config(&j).unwrap();
        assert_eq!((m.family, m.head_dim, m.q_dim()), (Family::Qwen3, 128, 2048));
        let mut q2 = j.clone();
        q2["model_type"] = json!("qwen2");
        let c = parse_hf_config(&q2).unwrap();
        assert_eq!((c.model.family, c.model.head_dim, c.model.rms_eps), (Family::Qwen2, 64, 1e-6));
    }

    #[test]
    fn every_family_reads_its_switches_from_the_one_description() {
        for (model_type, family) in [
            ("llama", Family::Llama),
            ("mistral", Family::Llama),
            ("qwen2", Family::Qwen2),
            ("qwen3", Family::Qwen3),
            ("gemma3_text", Family::Gemma3),
        ] {
            let mut j = llama();
            j["model_type"] = json!(model_type);
            j.as_object_mut().unwrap().remove("hidden_act");
            let m = hf_config(&j).unwrap();
            let want = ModelConfig::for_family(family);
            let switches = |c: &ModelConfig| {
                (c.family, c.qkv_bias, c.qk_norm, c.post_norms, c.norm_weight_offset, c.scale_queries)
            };
            assert_eq!(switches(&m), switches(&want), "{model_type}");
            assert_eq!((m.activation, m.scale_embeddings), (want.activation, want.scale_embeddings));
        }
        let m = ModelConfig::for_family(Family::Qwen2);
        assert!(m.qkv_bias && !m.qk_norm && !m.post_norms && m.norm_weight_offset == 0.0);
        let m = ModelConfig::for_family(Family::Gemma3);
        assert!(!m.qkv_bias && m.qk_norm && m.post_norms && m.norm_weight_offset == 1.0 && m.scale_queries);
        assert!(ModelConfig::for_family(Family::Qwen3).qk_norm);
    }

    #[test]
    fn llama3_rope_scaling_matches_llama_cpp() {
        let mut j = llama();
        j["rope_scaling"] = json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        j["rope_theta"] = json!(500000.0);
        let f = parse_hf_config(&j).unwrap().rope_freqs.unwrap();
        assert_eq!(f.len(), 32);
        // Short wavelengths are untouched, long ones divided by the factor, with a smooth ramp.
        assert_eq!(f[0], 1.0);
        assert_eq!(f[31], 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
        assert!(f.iter().any(|&x| x > 1.0 && x < 32.0));
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), "not a JSON object"),
            (json!({"hidden_size": 8}), "model_type"),
            (
                {
                    let mut j = llama();
                    j.as_object_mut().unwrap().remove("hidden_size");
                    j
                },
                "hidden_size is missing",
            ),
            (
                {
                    let mut j = llama();
                    j["num_attention_heads"] = json!(-3);
                    j
                },
                "num_attention_heads",
            ),
            (
                {
                    let mut j = llama();
                    j["num_key_value_heads"] = json!(2);
                    j
                },
                "key/value heads",
            ),
            (
                {
                    let mut j = llama();
                    j["hidden_act"] = json!("relu");
                    j
                },
                "hidden_act",
            ),
            (
                {
                    let mut j = llama();
                    j["rope_scaling"] = json!({"type": "yarn", "factor": 4});
                    j
                },
                "yarn",
            ),
            (
                {
                    let mut j = llama();
                    j["rms_norm_eps"] = json!("small");
                    j
                },
                "rms_norm_eps",
            ),
        ];
        for (j, needle) in cases {
            let e = parse_hf_config(&j).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
        let e = parse_hf_config(&json!({"model_type": "gpt2"})).unwrap_err();
        assert!(matches!(e, ModelError::UnknownArchitecture(ref a) if a == "gpt2"));
    }
}
