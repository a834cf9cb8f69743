//! The llama-family transformer (Touvron et al. 2023) written with candle tensors so that it can
//! be differentiated: RMSNorm, rotary embeddings in Hugging Face's half-split ("neox") order,
//! grouped-query attention, SwiGLU, tied or untied output embeddings.
//!
//! It is the same architecture `kiln run` executes (kiln-model's `transformer.rs`), configured by
//! the same [`ModelConfig`], and its parameters carry the Hugging Face tensor names, so the
//! safetensors a run writes are read by `kiln run` (and `transformers`) with no conversion.

use crate::rng::Rng;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor, Var, D};
use kiln_model::config::{Activation, Family, RopeStyle};
use kiln_model::ModelConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Standard deviation of the initial weights (GPT-2's 0.02).
const INIT_STD: f64 = 0.02;

/// Names of the tensors of block `i`, Hugging Face style.
fn layer_name(i: usize, what: &str) -> String {
    format!("model.layers.{i}.{what}")
}

/// A differentiable llama: its configuration and its parameters as candle [`Var`]s, in a fixed
/// order (the optimizer and checkpoints rely on it).
pub struct Llama {
    /// Hyper-parameters (family llama, half-split RoPE).
    pub config: ModelConfig,
    /// The output projection is the embedding matrix (no `lm_head.weight`).
    pub tied: bool,
    /// Round keys and values to f16 as kiln's (and llama.cpp's) KV cache stores them: makes the
    /// forward pass reproduce inference logits to f32 rounding, for parity tests. Off in training.
    pub round_kv_f16: bool,
    /// Fine-tuning hook: LoRA adapters added to the outputs of chosen linear layers.
    pub adapters: Option<crate::lora::Lora>,
    /// Fine-tuning hook: the base parameters enter the graph detached, so they get no gradient
    /// and no optimizer state (LoRA, reward heads on a frozen body). candle 0.11's matmul
    /// backward still computes the weight side of every product and drops it: about a third
    /// of a LoRA step's matmul work (bench/finetune-vs-trl, docs/LOG.md).
    pub frozen: bool,
    /// Run RMSNorm, SwiGLU, heads, causal softmax and cross-entropy as [`crate::fused`]
    /// kernels (f32 only) rather than as chains of candle ops; the two agree to f32 rounding.
    pub fused: bool,
    /// Set inside [`Llama::no_grad`]: every parameter (and adapter) enters detached, so candle
    /// records no graph and frees each activation as soon as it is used.
    no_grad: AtomicBool,
    params: Vec<(String, Var)>,
    index: HashMap<String, usize>,
    dtype: DType,
}

/// What a forward pass needs besides the parameters: rotary tables and the causal mask for a
/// row's length (and its packed documents).
struct Tables {
    /// `[t, head_dim]`, each half repeated (Hugging Face's `cat(freqs, freqs)`).
    cos: Tensor,
    sin: Tensor,
    /// `[t, t]`: 0 on and below the diagonal, -inf above.
    mask: Tensor,
    /// The same angles for the fused kernel: `[t, head_dim/2]`.
    rotary: crate::fused::Rotary,
    /// (start, length) of each document of a packed row; empty for one document. Attention
    /// runs per document (the top-left corner of `mask` is its causal mask): scores of one
    /// packed row of n documents would take n times the memory and work, mostly masked.
    documents: Vec<(usize, usize)>,
}

impl Llama {
    /// Checks that `config` is a model this trainer differentiates.
    pub fn check_config(config: &ModelConfig) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if config.family != Family::Llama || config.activation != Activation::Silu {
            return bad("kiln train builds llama models (SwiGLU)".into());
        }
        if config.rope_style != RopeStyle::Halves
            || config.rope_dim != config.head_dim
            || !config.head_dim.is_multiple_of(2)
        {
            return bad("RoPE must rotate whole heads of even width in half-split order".into());
        }
        if config.n_kv_heads == 0 || !config.n_heads.is_multiple_of(config.n_kv_heads) {
            return bad(format!(
                "{} heads cannot share {} key/value heads",
                config.n_heads, config.n_kv_heads
            ));
        }
        if config.vocab_size == 0 || config.dim == 0 || config.n_layers == 0 || config.ffn_dim == 0
        {
            return bad("vocabulary, width, layers and feed-forward width must be positive".into());
        }
        Ok(())
    }

    /// The parameter names and shapes, in optimizer/checkpoint order.
    pub fn param_shapes(config: &ModelConfig, tied: bool) -> Vec<(String, Vec<usize>)> {
        let (c, q, kv, f) = (config.dim, config.q_dim(), config.kv_dim(), config.ffn_dim);
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![config.vocab_size, c],
        )];
        for i in 0..config.n_layers {
            out.push((layer_name(i, "input_layernorm.weight"), vec![c]));
            out.push((layer_name(i, "self_attn.q_proj.weight"), vec![q, c]));
            out.push((layer_name(i, "self_attn.k_proj.weight"), vec![kv, c]));
            out.push((layer_name(i, "self_attn.v_proj.weight"), vec![kv, c]));
            out.push((layer_name(i, "self_attn.o_proj.weight"), vec![c, q]));
            out.push((layer_name(i, "post_attention_layernorm.weight"), vec![c]));
            out.push((layer_name(i, "mlp.gate_proj.weight"), vec![f, c]));
            out.push((layer_name(i, "mlp.up_proj.weight"), vec![f, c]));
            out.push((layer_name(i, "mlp.down_proj.weight"), vec![c, f]));
        }
        out.push(("model.norm.weight".to_string(), vec![c]));
        if !tied {
            out.push(("lm_head.weight".to_string(), vec![config.vocab_size, c]));
        }
        out
    }

    /// A freshly initialised model: norms at 1, matrices N(0, 0.02²), and the projections that
    /// write into the residual stream (`o_proj`, `down_proj`) scaled by 1/√(2·layers) as in GPT-2,
    /// so the stream's variance does not grow with depth. Deterministic in `seed`.
    pub fn init(config: ModelConfig, tied: bool, seed: u64, dtype: DType) -> Result<Llama> {
        Llama::check_config(&config)?;
        let mut rng = Rng::new(seed);
        let residual_scale = 1.0 / (2.0 * config.n_layers as f64).sqrt();
        let mut tensors = HashMap::new();
        for (name, shape) in Llama::param_shapes(&config, tied) {
            let n: usize = shape.iter().product();
            let data: Vec<f64> = if shape.len() == 1 {
                vec![1.0; n]
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
        Llama::from_tensors(config, tied, tensors, dtype)
    }

    /// A model from named tensors (a checkpoint); every parameter must be present with its shape.
    pub fn from_tensors(
        config: ModelConfig,
        tied: bool,
        mut tensors: HashMap<String, Tensor>,
        dtype: DType,
    ) -> Result<Llama> {
        Llama::check_config(&config)?;
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (name, shape) in Llama::param_shapes(&config, tied) {
            let t = tensors.remove(&name).ok_or_else(|| {
                TrainError::Checkpoint(format!("the weights have no tensor {name:?}"))
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
        Ok(Llama {
            config,
            tied,
            round_kv_f16: false,
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

    fn p(&self, name: &str) -> Tensor {
        // Every name used in `forward` is created by `param_shapes`.
        let t = self
            .param(name)
            .expect("parameter exists by construction")
            .as_tensor();
        if self.frozen || !self.tracking() {
            t.detach()
        } else {
            t.clone()
        }
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

    /// Whether passes now record a graph for backward (false inside [`Llama::no_grad`]).
    pub fn tracking(&self) -> bool {
        !self.no_grad.load(Ordering::Relaxed)
    }

    /// The parameters as plain tensors by name (for safetensors).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Tables for a row of `t` tokens holding several documents that start at `starts` (the
    /// first at 0; empty means one document): positions restart at each document and attention
    /// runs per document, so each document is computed exactly as it would be alone.
    fn packed_tables(&self, t: usize, starts: &[usize]) -> Result<Tables> {
        let d = self.config.head_dim;
        let theta = f64::from(self.config.rope_theta);
        let half = d / 2;
        let doc_start = |i: usize| starts.iter().copied().filter(|&s| s <= i).max().unwrap_or(0);
        let mut cos = Vec::with_capacity(t * d);
        let mut sin = Vec::with_capacity(t * d);
        let (mut half_cos, mut half_sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for i in 0..t {
            let pos = i - doc_start(i);
            // f32 angles, as Hugging Face computes them.
            let row: Vec<f32> = (0..half)
                .map(|k| pos as f32 * (1.0 / theta.powf(2.0 * k as f64 / d as f64)) as f32)
                .collect();
            half_cos.extend(row.iter().map(|a| a.cos()));
            half_sin.extend(row.iter().map(|a| a.sin()));
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| f64::from(a.cos())));
                sin.extend(row.iter().map(|a| f64::from(a.sin())));
            }
        }
        let mask: Vec<f64> = (0..t * t)
            .map(|k| if k % t > k / t { f64::NEG_INFINITY } else { 0.0 })
            .collect();
        let mut documents = Vec::new();
        if starts.iter().any(|&s| s > 0) {
            let mut bounds: Vec<usize> = std::iter::once(0).chain(starts.iter().copied()).collect();
            bounds.push(t);
            bounds.sort_unstable();
            bounds.dedup();
            documents = bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
        }
        let dev = &Device::Cpu;
        Ok(Tables {
            cos: Tensor::from_vec(cos, (t, d), dev)?.to_dtype(self.dtype)?,
            sin: Tensor::from_vec(sin, (t, d), dev)?.to_dtype(self.dtype)?,
            mask: Tensor::from_vec(mask, (t, t), dev)?.to_dtype(self.dtype)?,
            rotary: crate::fused::Rotary {
                cos: half_cos.into(),
                sin: half_sin.into(),
            },
            documents,
        })
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
        let out = if self.tied {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let targets = targets.flatten_all()?.to_vec1::<u32>()?;
        let logp = target_logp(&h, &self.p(out), &targets, self.fused)?;
        Ok((logp.sum_all()? / -(targets.len().max(1) as f64))?)
    }

    /// Final-normed hidden states `[b·t, dim]` (public for heads other than the LM head).
    pub fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        self.hidden_packed(tokens, &[])
    }

    /// [`Llama::hidden`] for rows that pack several documents starting at `starts` (see
    /// `packed_tables`): no token attends across a document boundary, positions restart.
    pub fn hidden_packed(&self, tokens: &Tensor, starts: &[usize]) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let tables = self.packed_tables(t, starts)?;
        let mut x = self
            .p("model.embed_tokens.weight")
            .index_select(&tokens.flatten_all()?, 0)?;
        for i in 0..self.config.n_layers {
            let n = self.rms_norm(&x, &layer_name(i, "input_layernorm.weight"))?;
            x = (x + self.attention(&n, i, b, t, &tables)?)?;
            let n = self.rms_norm(&x, &layer_name(i, "post_attention_layernorm.weight"))?;
            x = (x + self.mlp(&n, i)?)?;
        }
        self.rms_norm(&x, "model.norm.weight")
    }

    fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let out = if self.tied {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        Ok(h.matmul(&self.p(out).t()?)?)
    }

    /// `x / √(mean(x²) + ε) · w` over the last dimension of `x` `[n, dim]`.
    fn rms_norm(&self, x: &Tensor, weight: &str) -> Result<Tensor> {
        if self.fused {
            return Ok(crate::fused::rms_norm(x, &self.p(weight), self.config.rms_eps)?);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let r = (ms + f64::from(self.config.rms_eps))?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&r)?.broadcast_mul(&self.p(weight))?)
    }

    /// `x·wᵀ` for `x` `[n, in]` and a Hugging Face weight `[out, in]`.
    fn linear(&self, x: &Tensor, weight: &str) -> Result<Tensor> {
        let y = x.matmul(&self.p(weight).t()?)?;
        match &self.adapters {
            Some(lora) => lora.apply(weight, x, y, self.tracking()),
            None => Ok(y),
        }
    }

    fn attention(
        &self,
        x: &Tensor,
        layer: usize,
        b: usize,
        t: usize,
        tab: &Tables,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (h, kvh, d) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let proj = |name: &str| self.linear(x, &layer_name(layer, name));
        // [b·t, heads·d] each
        let (q, k, v) = (
            proj("self_attn.q_proj.weight")?,
            proj("self_attn.k_proj.weight")?,
            proj("self_attn.v_proj.weight")?,
        );
        let y = if self.fused {
            let split = |y: Tensor, rep: usize, rotary: bool| -> Result<Tensor> {
                Ok(crate::fused::heads(&y, b, t, d, rep, rotary.then_some(&tab.rotary))?)
            };
            let q = split(q, 1, true)?;
            let k = self.round_kv(split(k, h / kvh, true)?)?;
            let v = self.round_kv(split(v, h / kvh, false)?)?;
            crate::fused::attention(&q, &k, &v, c.attn_scale, &tab.documents)?
        } else {
            self.attention_unfused(q, k, v, b, t, tab)?
        };
        self.linear(&y, &layer_name(layer, "self_attn.o_proj.weight"))
    }

    /// Keys or values rounded to f16 and back when `round_kv_f16` is set.
    fn round_kv(&self, x: Tensor) -> Result<Tensor> {
        if !self.round_kv_f16 {
            return Ok(x);
        }
        Ok(x.to_dtype(DType::F16)?.to_dtype(self.dtype)?)
    }

    /// The attention of [`Llama::attention`] from candle ops (for dtypes other than f32, and
    /// the reference the fused kernels are tested against): projections `[b·t, heads·d]` in,
    /// `[b·t, h·d]` out.
    fn attention_unfused(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        b: usize,
        t: usize,
        tab: &Tables,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (h, kvh, d) = (c.n_heads, c.n_kv_heads, c.head_dim);
        // [b·t, n·d] → [b, n, t, d]
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = rope(&heads(q, h)?, tab)?;
        let k = self.round_kv(rope(&heads(k, kvh)?, tab)?)?;
        let v = self.round_kv(heads(v, kvh)?)?;
        let k = repeat_kv(k, h / kvh)?;
        let v = repeat_kv(v, h / kvh)?;
        let attend = |q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor| -> Result<Tensor> {
            let scores = (q.matmul(&k.t()?.contiguous()?)? * f64::from(c.attn_scale))?
                .broadcast_add(mask)?;
            Ok(softmax_last(&scores)?.matmul(v)?)
        };
        let y = if tab.documents.is_empty() {
            attend(&q, &k, &v, &tab.mask)?
        } else {
            let parts = tab
                .documents
                .iter()
                .map(|&(s, n)| {
                    let part = |x: &Tensor| x.narrow(2, s, n)?.contiguous();
                    let mask = tab.mask.narrow(0, 0, n)?.narrow(1, 0, n)?;
                    attend(&part(&q)?, &part(&k)?, &part(&v)?, &mask)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 2)?
        };
        Ok(y.transpose(1, 2)?.reshape((b * t, h * d))?)
    }

    fn mlp(&self, x: &Tensor, layer: usize) -> Result<Tensor> {
        let gate = self.linear(x, &layer_name(layer, "mlp.gate_proj.weight"))?;
        let up = self.linear(x, &layer_name(layer, "mlp.up_proj.weight"))?;
        let act = if self.fused {
            crate::fused::swiglu(&gate, &up)?
        } else {
            (gate.silu()? * up)?
        };
        self.linear(
            &act,
            &layer_name(layer, "mlp.down_proj.weight"),
        )
    }

    /// Greedy or sampled continuation of `prompt`, recomputing the whole window each token (no
    /// cache: only used for the small samples printed during training).
    pub fn generate(
        &self,
        prompt: &[u32],
        n: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Result<Vec<u32>> {
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
    let argmax = logits
        .iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > logits[best] { i } else { best });
    if temperature <= 0.0 {
        return argmax as u32;
    }
    let max = logits[argmax];
    let w: Vec<f64> = logits
        .iter()
        .map(|&x| ((x - max) / temperature).exp())
        .collect();
    let mut r = rng.next_f64() * w.iter().sum::<f64>();
    for (i, &wi) in w.iter().enumerate() {
        r -= wi;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax as u32
}

/// Rotary embedding, half-split order: `x·cos + rotate_half(x)·sin` with
/// `rotate_half([a, b]) = [-b, a]` (Hugging Face `apply_rotary_pos_emb`). `x` is `[b, h, t, d]`.
fn rope(x: &Tensor, tab: &Tables) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let a = x.narrow(D::Minus1, 0, d / 2)?;
    let b = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&b.neg()?, &a], D::Minus1)?;
    Ok((x.broadcast_mul(&tab.cos)? + rotated.broadcast_mul(&tab.sin)?)?)
}

/// `[b, kv, t, d]` → `[b, kv·rep, t, d]`, each key/value head serving `rep` query heads.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, rep, t, d))?
        .contiguous()?
        .reshape((b, kv * rep, t, d))?)
}

/// Softmax over the last dimension. The max is subtracted for stability and treated as a
/// constant (softmax does not depend on it, so its gradient is zero anyway).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?)
}

/// `log p(target)` at each row of hidden states `h` `[n, dim]` under the output projection `w`
/// `[vocab, dim]`. The logits are made a few rows at a time: under glibc's 32 MiB mmap
/// threshold every tensor of the softmax and its backward comes from the heap's reused pages,
/// where logits of all `n` rows (micro: 2048 × 8192 floats, 67 MB) would be mapped and faulted
/// in fresh for each of them.
pub fn target_logp(h: &Tensor, w: &Tensor, targets: &[u32], fused: bool) -> Result<Tensor> {
    let (n, vocab) = (h.dim(0)?, w.dim(0)?);
    let rows = ((24usize << 20) / (4 * vocab).max(1)).max(1);
    let w_t = w.t()?;
    let mut out = Vec::new();
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let logits = h.narrow(0, start, len)?.matmul(&w_t)?;
        if fused && logits.dtype() == DType::F32 {
            out.push(crate::fused::target_logp(&logits, &targets[start..start + len])?);
            continue;
        }
        let m = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&m)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let picked = Tensor::new(&targets[start..start + len], h.device())?.unsqueeze(1)?;
        out.push(shifted.gather(&picked, 1)?.sub(&lse)?.squeeze(1)?);
    }
    Ok(if out.len() == 1 { out.remove(0) } else { Tensor::cat(&out, 0)? })
}
