//! The transformer kiln trains, written with candle tensors so that it can be differentiated:
//! every family kiln-model describes (llama, qwen2, qwen3, gemma3), read from the switches of
//! its [`ModelConfig`] — RMSNorm (with Gemma's `1 + w`), Q/K/V biases, per-head q/k-norm,
//! rotary embeddings in Hugging Face's half-split order (a second base on sliding-window
//! layers), grouped-query attention (sliding windows), post-norms, SwiGLU or GeGLU, scaled
//! embeddings, tied or untied output embeddings and final-logit soft-capping.
//!
//! It is the architecture `kiln run` executes (kiln-model's `transformer.rs`), configured by the
//! same [`ModelConfig`], and its parameters carry the Hugging Face tensor names and values, so
//! the safetensors a run writes are read by `kiln run` (and `transformers`) with no conversion.
//! This file holds the parameters; `forward.rs` the forward pass.

mod forward;

pub use forward::target_logp;

use crate::rng::Rng;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor, Var};
use kiln_model::config::RopeStyle;
use kiln_model::ModelConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Standard deviation of the initial weights (GPT-2's 0.02).
const INIT_STD: f64 = 0.02;

/// The token embedding.
const EMBED: &str = "model.embed_tokens.weight";
/// The untied output projection.
const LM_HEAD: &str = "lm_head.weight";
/// The final norm.
const FINAL_NORM: &str = "model.norm.weight";

/// Names of the tensors of block `i`, Hugging Face style.
fn layer_name(i: usize, what: &str) -> String {
    format!("model.layers.{i}.{what}")
}

/// The norm before the feed-forward block: Gemma, which has four norms per block, calls it
/// `pre_feedforward_layernorm` and the norm after attention `post_attention_layernorm`.
fn ffn_norm(config: &ModelConfig) -> &'static str {
    if config.post_norms {
        "pre_feedforward_layernorm.weight"
    } else {
        "post_attention_layernorm.weight"
    }
}

/// Whether a parameter is an RMSNorm weight (all of them end so in Hugging Face names).
fn is_norm(name: &str) -> bool {
    name.ends_with("norm.weight")
}

/// A differentiable transformer: its configuration and its parameters as candle [`Var`]s, in a
/// fixed order (the optimizer and checkpoints rely on it).
pub struct Transformer {
    /// Hyper-parameters and architecture switches (half-split RoPE).
    pub config: ModelConfig,
    /// The output projection is the embedding matrix (no `lm_head.weight`).
    pub tied: bool,
    /// Round as kiln's (and llama.cpp's) inference does, so the forward pass reproduces its
    /// logits to f32 rounding, for parity tests: keys and values to f16 as the KV cache stores
    /// them and, in the fused f32 path, GELU through ggml's f16 table (whose gradient is taken
    /// as the exact GELU's). Off in training.
    pub inference_rounding: bool,
    /// Fine-tuning hook: LoRA adapters added to the outputs of chosen linear layers.
    pub adapters: Option<crate::lora::Lora>,
    /// Fine-tuning hook: the base parameters enter the graph detached, so they get no gradient
    /// and no optimizer state (LoRA, reward heads on a frozen body). candle 0.11's matmul
    /// backward still computes the weight side of every product and drops it: about a third
    /// of a LoRA step's matmul work (bench/finetune-vs-trl, docs/LOG.md).
    pub frozen: bool,
    /// Run RMSNorm, the gated activations, heads, causal softmax and cross-entropy as
    /// [`crate::fused`] kernels (f32 only) rather than as chains of candle ops; the two agree to
    /// f32 rounding.
    pub fused: bool,
    /// Set inside [`Transformer::no_grad`]: every parameter (and adapter) enters detached, so
    /// candle records no graph and frees each activation as soon as it is used.
    no_grad: AtomicBool,
    params: Vec<(String, Var)>,
    index: HashMap<String, usize>,
    dtype: DType,
}

impl Transformer {
    /// Checks that `config` is a model this trainer differentiates: whole heads rotated in
    /// half-split order (Hugging Face's layout; GGUF llama rows are unpermuted on loading).
    pub fn check_config(config: &ModelConfig) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if config.rope_style != RopeStyle::Halves
            || config.rope_dim != config.head_dim
            || !config.head_dim.is_multiple_of(2)
        {
            return bad("RoPE must rotate whole heads of even width in half-split order".into());
        }
        if config.n_kv_heads == 0 || !config.n_heads.is_multiple_of(config.n_kv_heads) {
            return bad(format!("{} heads cannot share {} key/value heads", config.n_heads, config.n_kv_heads));
        }
        if config.vocab_size == 0 || config.dim == 0 || config.n_layers == 0 || config.ffn_dim == 0 {
            return bad("vocabulary, width, layers and feed-forward width must be positive".into());
        }
        if config.sliding_window == Some(0) {
            return bad("a sliding window must hold at least one position".into());
        }
        Ok(())
    }

    /// The parameter names and shapes, in optimizer/checkpoint order: each block's tensors in
    /// the order its forward pass uses them, the ones a family lacks left out.
    pub fn param_shapes(config: &ModelConfig, tied: bool) -> Vec<(String, Vec<usize>)> {
        let (c, q, kv, f) = (config.dim, config.q_dim(), config.kv_dim(), config.ffn_dim);
        let hd = config.head_dim;
        let mut out = vec![(EMBED.to_string(), vec![config.vocab_size, c])];
        for i in 0..config.n_layers {
            let mut add = |what: &str, shape: Vec<usize>| out.push((layer_name(i, what), shape));
            add("input_layernorm.weight", vec![c]);
            add("self_attn.q_proj.weight", vec![q, c]);
            add("self_attn.k_proj.weight", vec![kv, c]);
            add("self_attn.v_proj.weight", vec![kv, c]);
            if config.qkv_bias {
                add("self_attn.q_proj.bias", vec![q]);
                add("self_attn.k_proj.bias", vec![kv]);
                add("self_attn.v_proj.bias", vec![kv]);
            }
            if config.qk_norm {
                add("self_attn.q_norm.weight", vec![hd]);
                add("self_attn.k_norm.weight", vec![hd]);
            }
            add("self_attn.o_proj.weight", vec![c, q]);
            if config.post_norms {
                add("post_attention_layernorm.weight", vec![c]);
            }
            add(ffn_norm(config), vec![c]);
            add("mlp.gate_proj.weight", vec![f, c]);
            add("mlp.up_proj.weight", vec![f, c]);
            add("mlp.down_proj.weight", vec![c, f]);
            if config.post_norms {
                add("post_feedforward_layernorm.weight", vec![c]);
            }
        }
        out.push((FINAL_NORM.to_string(), vec![c]));
        if !tied {
            out.push((LM_HEAD.to_string(), vec![config.vocab_size, c]));
        }
        out
    }

    /// A freshly initialised model: norms scaling by 1 (stored as `1 − norm_weight_offset`),
    /// biases 0, matrices N(0, 0.02²), and the projections that write into the residual stream
    /// (`o_proj`, `down_proj`) scaled by 1/√(2·layers) as in GPT-2, so the stream's variance
    /// does not grow with depth. Deterministic in `seed`.
    pub fn init(config: ModelConfig, tied: bool, seed: u64, dtype: DType) -> Result<Transformer> {
        Transformer::check_config(&config)?;
        let mut rng = Rng::new(seed);
        let residual_scale = 1.0 / (2.0 * config.n_layers as f64).sqrt();
        let unit_norm = 1.0 - f64::from(config.norm_weight_offset);
        let mut tensors = HashMap::new();
        for (name, shape) in Transformer::param_shapes(&config, tied) {
            let n: usize = shape.iter().product();
            let data: Vec<f64> = if is_norm(&name) {
                vec![unit_norm; n]
            } else if shape.len() == 1 {
                vec![0.0; n]
            } else {
                let std = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                    INIT_STD * residual_scale
                } else {
                    INIT_STD
                };
                (0..n).map(|_| rng.normal() * std).collect()
            };
            let t = Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?;
            tensors.insert(name, t);
        }
        Transformer::from_tensors(config, tied, tensors, dtype)
    }

    /// A model from named tensors (a checkpoint); every parameter must be present with its shape.
    pub fn from_tensors(
        config: ModelConfig,
        tied: bool,
        mut tensors: HashMap<String, Tensor>,
        dtype: DType,
    ) -> Result<Transformer> {
        Transformer::check_config(&config)?;
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (name, shape) in Transformer::param_shapes(&config, tied) {
            let t = tensors.remove(&name).ok_or_else(|| {
                TrainError::Checkpoint(format!(
                    "the weights have no tensor {name:?} (a {} model has one)",
                    config.family.architecture()
                ))
            })?;
            if t.dims() != shape.as_slice() {
                return Err(TrainError::Checkpoint(format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            index.insert(name.clone(), params.len());
            params.push((name, Var::from_tensor(&t.to_dtype(dtype)?)?));
        }
        Ok(Transformer {
            config,
            tied,
            inference_rounding: false,
            adapters: None,
            frozen: false,
            fused: dtype == DType::F32,
            no_grad: AtomicBool::new(false),
            params,
            index,
            dtype,
        })
    }

    /// The parameters in their fixed order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Number of trainable scalars.
    pub fn n_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The parameter called `name` (a Hugging Face tensor name).
    pub fn param(&self, name: &str) -> Option<&Var> {
        self.index.get(name).map(|&i| &self.params[i].1)
    }

    /// The parameter `name` as the forward pass uses it: detached when frozen or not tracking.
    fn p(&self, name: &str) -> Tensor {
        // Every name used in the forward pass is created by `param_shapes` for this config.
        let t = self.param(name).expect("parameter exists by construction").as_tensor();
        if self.frozen || !self.tracking() {
            t.detach()
        } else {
            t.clone()
        }
    }

    /// The output projection `[vocab, dim]` as the forward pass uses it (the embedding when
    /// tied; detached when frozen).
    pub fn output_weight(&self) -> Tensor {
        self.p(if self.tied { EMBED } else { LM_HEAD })
    }

    /// Runs `f` (evaluation, reference log-probabilities, sampling) with no autograd graph:
    /// a held-out pass of a 135M model then needs its activations one layer at a time, not
    /// all of them (with LoRA adapters, the graph would otherwise be recorded through them).
    pub fn no_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.no_grad.swap(true, Ordering::Relaxed);
        let out = f();
        self.no_grad.store(before, Ordering::Relaxed);
        out
    }

    /// Whether passes now record a graph for backward (false inside [`Transformer::no_grad`]).
    pub fn tracking(&self) -> bool {
        !self.no_grad.load(Ordering::Relaxed)
    }

    /// The parameters as plain tensors by name (for safetensors).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect()
    }

    /// Logits `[b, t, vocab]` for token ids `[b, t]` (u32).
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let h = self.hidden(tokens)?;
        let logits = self.logits(&h)?;
        Ok(logits.reshape((b, t, self.config.vocab_size))?)
    }

    /// Mean cross-entropy of predicting `targets` `[b, t]` from `tokens` `[b, t]`.
    pub fn loss(&self, tokens: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let h = self.hidden(tokens)?;
        let targets = targets.flatten_all()?.to_vec1::<u32>()?;
        let logp = self.target_logp(&h, &targets)?;
        Ok((logp.sum_all()? / -(targets.len().max(1) as f64))?)
    }

    /// `log p(target)` at each row of final hidden states `h` `[n, dim]` (see
    /// [`target_logp`]), under this model's output projection and soft-cap.
    pub fn target_logp(&self, h: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let cap = self.config.final_logit_softcap;
        target_logp(h, &self.output_weight(), targets, self.fused, cap)
    }

    /// Greedy or sampled continuation of `prompt`, recomputing the whole window each token (no
    /// cache: only used for the small samples printed during training).
    pub fn generate(&self, prompt: &[u32], n: usize, temperature: f64, rng: &mut Rng) -> Result<Vec<u32>> {
        let mut ids = prompt.to_vec();
        let ctx = self.config.context_length;
        for _ in 0..n {
            let window = &ids[ids.len().saturating_sub(ctx)..];
            let input = Tensor::new(window, &Device::Cpu)?.unsqueeze(0)?;
            let logits = self
                .no_grad(|| self.forward(&input))?
                .squeeze(0)?
                .get(window.len() - 1)?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            ids.push(sample(&logits, temperature, rng));
        }
        Ok(ids[prompt.len()..].to_vec())
    }
}

/// The index of the largest logit at temperature 0, else a draw from softmax(logits / T).
pub fn sample(logits: &[f64], temperature: f64, rng: &mut Rng) -> u32 {
    let argmax = logits.iter().enumerate().fold(0, |best, (i, &x)| if x > logits[best] { i } else { best });
    if temperature <= 0.0 {
        return argmax as u32;
    }
    let max = logits[argmax];
    let w: Vec<f64> = logits.iter().map(|&x| ((x - max) / temperature).exp()).collect();
    let mut r = rng.next_f64() * w.iter().sum::<f64>();
    for (i, &wi) in w.iter().enumerate() {
        r -= wi;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax as u32
}
