//! Model hyper-parameters, read once from a parameters file and validated into one struct.

use crate::ModelError;
use kiln_gguf::GgufFile;

/// The transformer families kiln runs. They share one forward pass and differ in the switches
/// of [`ModelConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama 2/3, Mistral, SmolLM2.
    Llama,
    /// Qwen2 / Qwen2.5: bias on the Q, K, V projections.
    Qwen2,
    /// Qwen3: RMSNorm on Q and K per head.
    Qwen3,
    /// Gemma 3: Q/K norms, post-norms, GELU, scaled embeddings, sliding-window layers.
    Gemma3,
}

impl Family {
    /// The family named by GGUF's `general.architecture` (or an HF `model_type`).
    pub fn from_architecture(arch: &str) -> Option<Family> {
        Some(match arch {
            "llama" | "mistral" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            _ => return None,
        })
    }

    /// The GGUF architecture name.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma3 => "gemma3",
        }
    }

    /// How GGUF files of this family pair RoPE dimensions: llama.cpp's converter permutes the
    /// Q and K rows of llama models only (Hugging Face files and kiln's trainer use halves).
    pub fn gguf_rope_style(self) -> RopeStyle {
        match self {
            Family::Llama => RopeStyle::Interleaved,
            _ => RopeStyle::Halves,
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x0, x1), (x2, x3)…: GGUF llama, whose converter permuted Q and K.
    Interleaved,
    /// Halves (x0, x_{d/2})…: Hugging Face's `rotate_half`; GGUF qwen and gemma.
    Halves,
}

/// The feed-forward gate's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// x·σ(x) (SwiGLU).
    Silu,
    /// GELU, tanh approximation (GeGLU).
    GeluTanh,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Which family.
    pub family: Family,
    /// Tokens in the vocabulary (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub dim: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Hidden width of the feed-forward block.
    pub ffn_dim: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency of global-attention layers.
    pub rope_theta: f32,
    /// RoPE base frequency of sliding-window layers (Gemma 3).
    pub rope_theta_local: f32,
    /// Dimensions of a head that are rotated.
    pub rope_dim: usize,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// Sliding-window size, for the layers where [`ModelConfig::is_sliding`] holds.
    pub sliding_window: Option<usize>,
    /// Every `sliding_pattern`-th layer is global; the others slide (Gemma 3: 6).
    pub sliding_pattern: usize,
    /// Scale applied to queries before Q·K (1/√head_dim unless the family says otherwise).
    pub attn_scale: f32,
    /// Gate activation.
    pub activation: Activation,
    /// Embeddings are multiplied by √dim (Gemma).
    pub scale_embeddings: bool,
    /// Final logits soft-capping (Gemma 2 style), if any.
    pub final_logit_softcap: Option<f32>,
    /// Q, K and V projections add a bias (Qwen2).
    pub qkv_bias: bool,
    /// Each query and key head is RMS-normalised before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// The attention and feed-forward outputs are RMS-normalised before their residual adds
    /// (Gemma 3), and the feed-forward input norm is called `pre_feedforward_layernorm`.
    pub post_norms: bool,
    /// RMSNorm scales by `norm_weight_offset + w` for the weight `w` a Hugging Face file stores
    /// (Gemma: 1). GGUF files, and the inference weights, hold the sum.
    pub norm_weight_offset: f32,
    /// Queries are multiplied by `attn_scale` before Q·K rather than the scores after, as
    /// llama.cpp computes Gemma 3 (the same maths, rounded in another place).
    pub scale_queries: bool,
}

impl ModelConfig {
    /// The one description of what `family`'s block is: its switches (biases, q/k-norm,
    /// post-norms, norm weight offset, activation, embedding scale, sliding-window pattern)
    /// with llama defaults for the rest and every size zero. Readers of parameters files and
    /// the trainer fill the sizes in (`ModelConfig { dim, .., ..ModelConfig::for_family(f) }`);
    /// [`ModelConfig::validate`] refuses a size left at zero.
    pub fn for_family(family: Family) -> ModelConfig {
        let gemma = family == Family::Gemma3;
        ModelConfig {
            family,
            vocab_size: 0,
            dim: 0,
            n_layers: 0,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            ffn_dim: 0,
            context_length: 2048,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_theta_local: 10_000.0,
            rope_dim: 0,
            rope_style: RopeStyle::Halves,
            sliding_window: None,
            // Gemma 3: five sliding-window layers, then a global one.
            sliding_pattern: if gemma { 6 } else { 0 },
            attn_scale: 0.0,
            activation: if gemma { Activation::GeluTanh } else { Activation::Silu },
            scale_embeddings: gemma,
            final_logit_softcap: None,
            qkv_bias: family == Family::Qwen2,
            qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
            post_norms: gemma,
            norm_weight_offset: if gemma { 1.0 } else { 0.0 },
            scale_queries: gemma,
        }
    }

    /// Whether the family has sliding-window layers at all (their window comes from the file).
    pub fn has_sliding_layers(&self) -> bool {
        self.sliding_pattern > 0
    }

    /// Whether layer `layer` uses sliding-window attention.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some()
            && self.sliding_pattern > 0
            && layer % self.sliding_pattern < self.sliding_pattern - 1
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Reads the hyper-parameters from GGUF metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig, ModelError> {
        let arch = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::Config("general.architecture is missing".into()))?
            .to_string();
        let family = Family::from_architecture(&arch).ok_or_else(|| ModelError::UnknownArchitecture(arch.clone()))?;
        let key = |k: &str| format!("{arch}.{k}");
        let uint = |k: &str| -> Result<Option<usize>, ModelError> {
            match file.get(&key(k)) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(x) => Ok(Some(x as usize)),
                    // Some converters store per-layer arrays; kiln needs them uniform.
                    None => match v.as_array().and_then(|a| a.first()).and_then(|x| x.as_u64()) {
                        Some(x) if v.as_array().unwrap().iter().all(|y| y.as_u64() == Some(x)) => Ok(Some(x as usize)),
                        _ => Err(ModelError::Config(format!("{} is {}, expected an integer", key(k), v.summary()))),
                    },
                },
            }
        };
        let required = |k: &str| uint(k)?.ok_or_else(|| ModelError::Config(format!("{} is missing", key(k))));
        let float = |k: &str| file.get(&key(k)).and_then(|v| v.as_f64()).map(|x| x as f32);

        let dim = required("embedding_length")?;
        let n_heads = required("attention.head_count")?;
        let n_kv_heads = uint("attention.head_count_kv")?.unwrap_or(n_heads);
        if n_heads == 0 {
            return Err(ModelError::Config("attention.head_count is 0".into()));
        }
        let head_dim = uint("attention.key_length")?.unwrap_or(dim / n_heads);
        let vocab_size = match uint("vocab_size")? {
            Some(v) => v,
            None => file.tensor("token_embd.weight").map(|t| t.dims.get(1).copied().unwrap_or(0) as usize).ok_or_else(
                || ModelError::Config("vocab size unknown: no vocab_size and no token_embd.weight".into()),
            )?,
        };
        let sliding_window = uint("attention.sliding_window")?.filter(|&w| w > 0);
        let base = ModelConfig::for_family(family);
        let sliding = base.has_sliding_layers();
        let cfg = ModelConfig {
            vocab_size,
            dim,
            n_layers: required("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: required("feed_forward_length")?,
            context_length: uint("context_length")?.unwrap_or(2048),
            rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            rope_theta_local: float("rope.freq_base_swa").unwrap_or(10_000.0),
            rope_dim: uint("rope.dimension_count")?.unwrap_or(head_dim),
            rope_style: family.gguf_rope_style(),
            sliding_window: if sliding { sliding_window } else { None },
            sliding_pattern: if sliding {
                uint("attention.sliding_window_pattern")?.unwrap_or(base.sliding_pattern)
            } else {
                0
            },
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            final_logit_softcap: float("final_logit_softcapping").filter(|&c| c > 0.0),
            ..base
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the shape is one the forward pass can run.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.dim == 0 || self.n_layers == 0 || self.head_dim == 0 || self.ffn_dim == 0 || self.vocab_size == 0 {
            return bad(format!("a dimension is zero: {self:?}"));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!("{} query heads cannot share {} key/value heads", self.n_heads, self.n_kv_heads));
        }
        if self.rope_dim > self.head_dim || !self.rope_dim.is_multiple_of(2) {
            return bad(format!("rope dimension {} does not fit head width {}", self.rope_dim, self.head_dim));
        }
        if !(self.rms_eps > 0.0 && self.rope_theta > 0.0) {
            return bad("rms epsilon and rope base must be positive".into());
        }
        if !(self.attn_scale > 0.0 && self.attn_scale.is_finite()) {
            return bad(format!("attention scale {} must be positive", self.attn_scale));
        }
        if !self.norm_weight_offset.is_finite() {
            return bad(format!("norm weight offset {} is not a number", self.norm_weight_offset));
        }
        Ok(())
    }
}
