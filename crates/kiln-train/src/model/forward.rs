//! The forward pass of [`Transformer`]: one layer loop for every family, branching on the
//! switches of its `ModelConfig`. Each piece runs as a [`crate::fused`] kernel in f32 and as
//! candle ops otherwise (the reference the kernels are tested against).

use super::{ffn_norm, layer_name, Transformer, EMBED, FINAL_NORM};
use crate::Result;
use candle_core::{DType, Device, Tensor, D};
use kiln_model::config::Activation;

/// What one kind of layer (global, or sliding-window with its own RoPE base) needs for a row.
enum LayerTables {
    /// For the fused kernels: the rotation angles, `[t, head_dim/2]`.
    Fused(crate::fused::Rotary),
    /// For candle ops.
    Ops {
        /// `[t, head_dim]`, each half repeated (Hugging Face's `cat(freqs, freqs)`).
        cos: Tensor,
        /// Likewise.
        sin: Tensor,
        /// `[t, t]`: 0 where a query sees a key (on and below the diagonal, within the window),
        /// -inf elsewhere.
        mask: Tensor,
    },
}

/// What a forward pass needs besides the parameters, for a row's length (and its packed
/// documents).
struct Tables {
    /// Global-attention layers.
    global: LayerTables,
    /// Sliding-window layers, when the model has any.
    local: Option<LayerTables>,
    /// (start, length) of each document of a packed row; empty for one document. Attention
    /// runs per document (the top-left corner of a mask is its mask): scores of one packed row
    /// of n documents would take n times the memory and work, mostly masked.
    documents: Vec<(usize, usize)>,
}

impl Tables {
    fn for_layer(&self, sliding: bool) -> &LayerTables {
        match (&self.local, sliding) {
            (Some(local), true) => local,
            _ => &self.global,
        }
    }
}

impl Transformer {
    /// Tables for a row of `t` tokens holding several documents that start at `starts` (the
    /// first at 0; empty means one document): positions restart at each document and attention
    /// runs per document, so each document is computed exactly as it would be alone.
    fn packed_tables(&self, t: usize, starts: &[usize]) -> Result<Tables> {
        let c = &self.config;
        let doc_start = |i: usize| starts.iter().copied().filter(|&s| s <= i).max().unwrap_or(0);
        let positions: Vec<usize> = (0..t).map(|i| i - doc_start(i)).collect();
        let any_sliding = (0..c.n_layers).any(|l| c.is_sliding(l));
        let global = self.layer_tables(&positions, c.rope_theta, None)?;
        let local = match any_sliding {
            true => Some(self.layer_tables(&positions, c.rope_theta_local, c.sliding_window)?),
            false => None,
        };
        let mut documents = Vec::new();
        if starts.iter().any(|&s| s > 0) {
            let mut bounds: Vec<usize> = std::iter::once(0).chain(starts.iter().copied()).collect();
            bounds.push(t);
            bounds.sort_unstable();
            bounds.dedup();
            documents = bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
        }
        Ok(Tables { global, local, documents })
    }

    /// RoPE angles of base `theta` at `positions`, and for candle ops the causal mask (with a
    /// sliding `window`, if any) of a row that long.
    fn layer_tables(&self, positions: &[usize], theta: f32, window: Option<usize>) -> Result<LayerTables> {
        let (t, d) = (positions.len(), self.config.head_dim);
        let theta = f64::from(theta);
        let half = d / 2;
        let (mut half_cos, mut half_sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for &pos in positions {
            // f32 angles, as Hugging Face computes them.
            for k in 0..half {
                let a = pos as f32 * (1.0 / theta.powf(2.0 * k as f64 / d as f64)) as f32;
                half_cos.push(a.cos());
                half_sin.push(a.sin());
            }
        }
        if self.fused {
            let rotary = crate::fused::Rotary { cos: half_cos.into(), sin: half_sin.into() };
            return Ok(LayerTables::Fused(rotary));
        }
        let repeat = |h: &[f32]| -> Vec<f64> {
            h.chunks(half).flat_map(|row| row.iter().chain(row).map(|&v| f64::from(v))).collect()
        };
        let mask: Vec<f64> = (0..t * t)
            .map(|k| {
                let (query, key) = (k / t, k % t);
                let visible = key <= query && window.is_none_or(|w| query - key < w);
                if visible {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let dev = &Device::Cpu;
        Ok(LayerTables::Ops {
            cos: Tensor::from_vec(repeat(&half_cos), (t, d), dev)?.to_dtype(self.dtype)?,
            sin: Tensor::from_vec(repeat(&half_sin), (t, d), dev)?.to_dtype(self.dtype)?,
            mask: Tensor::from_vec(mask, (t, t), dev)?.to_dtype(self.dtype)?,
        })
    }

    /// Final-normed hidden states `[b·t, dim]` (public for heads other than the LM head).
    pub fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        self.hidden_packed(tokens, &[])
    }

    /// [`Transformer::hidden`] for rows that pack several documents starting at `starts` (see
    /// `packed_tables`): no token attends across a document boundary, positions restart.
    pub fn hidden_packed(&self, tokens: &Tensor, starts: &[usize]) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = tokens.dims2()?;
        let tables = self.packed_tables(t, starts)?;
        let mut x = self.p(EMBED).index_select(&tokens.flatten_all()?, 0)?;
        if c.scale_embeddings {
            // √dim rounded to f32 first, as kiln's inference and transformers' f32 path do.
            x = (x * f64::from((c.dim as f32).sqrt()))?;
        }
        for i in 0..c.n_layers {
            let n = self.rms_norm(&x, &layer_name(i, "input_layernorm.weight"))?;
            let mut y = self.attention(&n, i, b, t, &tables)?;
            if c.post_norms {
                y = self.rms_norm(&y, &layer_name(i, "post_attention_layernorm.weight"))?;
            }
            x = (x + y)?;
            let n = self.rms_norm(&x, &layer_name(i, ffn_norm(c)))?;
            let mut y = self.mlp(&n, i)?;
            if c.post_norms {
                y = self.rms_norm(&y, &layer_name(i, "post_feedforward_layernorm.weight"))?;
            }
            x = (x + y)?;
        }
        self.rms_norm(&x, FINAL_NORM)
    }

    /// Logits `[n, vocab]` of final hidden states `[n, dim]`, soft-capped where the model is.
    pub(super) fn logits(&self, h: &Tensor) -> Result<Tensor> {
        softcap(h.matmul(&self.output_weight().t()?)?, self.config.final_logit_softcap)
    }

    /// `x / √(mean(x²) + ε) · (offset + w)` over the last dimension of `x` `[n, dim]`.
    fn rms_norm(&self, x: &Tensor, weight: &str) -> Result<Tensor> {
        let offset = self.config.norm_weight_offset;
        let w = if offset == 0.0 { self.p(weight) } else { (self.p(weight) + f64::from(offset))? };
        if self.fused {
            return Ok(crate::fused::rms_norm(x, &w, self.config.rms_eps)?);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let r = (ms + f64::from(self.config.rms_eps))?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&r)?.broadcast_mul(&w)?)
    }

    /// RMSNorm of every head of a projection `[n, heads·head_dim]` (q/k-norm).
    fn head_norm(&self, y: &Tensor, weight: &str) -> Result<Tensor> {
        let (n, width) = y.dims2()?;
        let d = self.config.head_dim;
        let normed = self.rms_norm(&y.reshape((n * width / d, d))?, weight)?;
        Ok(normed.reshape((n, width))?)
    }

    /// `x·wᵀ` for `x` `[n, in]` and a Hugging Face weight `[out, in]`.
    fn linear(&self, x: &Tensor, weight: &str) -> Result<Tensor> {
        let y = x.matmul(&self.p(weight).t()?)?;
        match &self.adapters {
            Some(lora) => lora.apply(weight, x, y, self.tracking()),
            None => Ok(y),
        }
    }

    /// The `module` (q, k or v) projection of block `layer`, with its bias where the model
    /// has one.
    fn projection(&self, x: &Tensor, layer: usize, module: &str) -> Result<Tensor> {
        let y = self.linear(x, &layer_name(layer, &format!("self_attn.{module}.weight")))?;
        if !self.config.qkv_bias {
            return Ok(y);
        }
        let bias = self.p(&layer_name(layer, &format!("self_attn.{module}.bias")));
        Ok(y.broadcast_add(&bias)?)
    }

    fn attention(&self, x: &Tensor, layer: usize, b: usize, t: usize, tab: &Tables) -> Result<Tensor> {
        let c = &self.config;
        let (h, kvh, d) = (c.n_heads, c.n_kv_heads, c.head_dim);
        // [b·t, heads·d] each
        let mut q = self.projection(x, layer, "q_proj")?;
        let mut k = self.projection(x, layer, "k_proj")?;
        let v = self.projection(x, layer, "v_proj")?;
        if c.qk_norm {
            q = self.head_norm(&q, &layer_name(layer, "self_attn.q_norm.weight"))?;
            k = self.head_norm(&k, &layer_name(layer, "self_attn.k_norm.weight"))?;
        }
        let sliding = c.is_sliding(layer);
        let y = match tab.for_layer(sliding) {
            LayerTables::Fused(rotary) => {
                let split = |y: Tensor, rep: usize, rotate: bool| -> Result<Tensor> {
                    Ok(crate::fused::heads(&y, b, t, d, rep, rotate.then_some(rotary))?)
                };
                let q = split(q, 1, true)?;
                let k = self.round_kv(split(k, h / kvh, true)?)?;
                let v = self.round_kv(split(v, h / kvh, false)?)?;
                let window = if sliding { c.sliding_window } else { None };
                crate::fused::attention(&q, &k, &v, c.attn_scale, window, &tab.documents)?
            }
            LayerTables::Ops { cos, sin, mask } => {
                self.attention_unfused([q, k, v], (b, t), [cos, sin, mask], &tab.documents)?
            }
        };
        self.linear(&y, &layer_name(layer, "self_attn.o_proj.weight"))
    }

    /// Keys or values rounded to f16 and back when `inference_rounding` is set.
    fn round_kv(&self, x: Tensor) -> Result<Tensor> {
        if !self.inference_rounding {
            return Ok(x);
        }
        Ok(x.to_dtype(DType::F16)?.to_dtype(self.dtype)?)
    }

    /// The attention of [`Transformer::attention`] from candle ops (for dtypes other than f32,
    /// and the reference the fused kernels are tested against): projections `[b·t, heads·d]`
    /// in, `[b·t, h·d]` out, with the layer's `[cos, sin, mask]`.
    fn attention_unfused(
        &self,
        [q, k, v]: [Tensor; 3],
        (b, t): (usize, usize),
        [cos, sin, mask]: [&Tensor; 3],
        documents: &[(usize, usize)],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (h, kvh, d) = (c.n_heads, c.n_kv_heads, c.head_dim);
        // [b·t, n·d] → [b, n, t, d]
        let heads =
            |y: Tensor, n: usize| -> Result<Tensor> { Ok(y.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()?) };
        let q = rope(&heads(q, h)?, cos, sin)?;
        let k = self.round_kv(rope(&heads(k, kvh)?, cos, sin)?)?;
        let v = self.round_kv(heads(v, kvh)?)?;
        let k = repeat_kv(k, h / kvh)?;
        let v = repeat_kv(v, h / kvh)?;
        let attend = |q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor| -> Result<Tensor> {
            let scores = (q.matmul(&k.t()?.contiguous()?)? * f64::from(c.attn_scale))?.broadcast_add(mask)?;
            Ok(softmax_last(&scores)?.matmul(v)?)
        };
        let y = if documents.is_empty() {
            attend(&q, &k, &v, mask)?
        } else {
            let parts = documents
                .iter()
                .map(|&(s, n)| {
                    let part = |x: &Tensor| x.narrow(2, s, n)?.contiguous();
                    let mask = mask.narrow(0, 0, n)?.narrow(1, 0, n)?;
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
        let act = match (self.config.activation, self.fused) {
            (Activation::Silu, true) => crate::fused::swiglu(&gate, &up)?,
            (Activation::Silu, false) => (gate.silu()? * up)?,
            (Activation::GeluTanh, true) => crate::fused::geglu(&gate, &up, self.inference_rounding)?,
            (Activation::GeluTanh, false) => (gelu_tanh(&gate)? * up)?,
        };
        self.linear(&act, &layer_name(layer, "mlp.down_proj.weight"))
    }
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` from candle ops, so autograd differentiates
/// the definition (candle's own `gelu` backward uses rounded constants).
fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let inner = ((x.sqr()? * 0.044715)? + 1.0)?.mul(x)?;
    let t = (inner * (2.0 / std::f64::consts::PI).sqrt())?.tanh()?;
    Ok(((t + 1.0)? * 0.5)?.mul(x)?)
}

/// `cap·tanh(z / cap)` when `cap` is set (Gemma 2's final-logit soft-capping).
fn softcap(z: Tensor, cap: Option<f32>) -> Result<Tensor> {
    match cap {
        Some(cap) => Ok(((z / f64::from(cap))?.tanh()? * f64::from(cap))?),
        None => Ok(z),
    }
}

/// Rotary embedding, half-split order: `x·cos + rotate_half(x)·sin` with
/// `rotate_half([a, b]) = [-b, a]` (Hugging Face `apply_rotary_pos_emb`). `x` is `[b, h, t, d]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let a = x.narrow(D::Minus1, 0, d / 2)?;
    let b = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&b.neg()?, &a], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// `[b, kv, t, d]` → `[b, kv·rep, t, d]`, each key/value head serving `rep` query heads.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?.broadcast_as((b, kv, rep, t, d))?.contiguous()?.reshape((b, kv * rep, t, d))?)
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
/// `[vocab, dim]`, with the logits soft-capped by `cap` where set. The logits are made a few
/// rows at a time: under glibc's 32 MiB mmap threshold every tensor of the softmax and its
/// backward comes from the heap's reused pages, where logits of all `n` rows (micro: 2048 ×
/// 8192 floats, 67 MB) would be mapped and faulted in fresh for each of them.
pub fn target_logp(h: &Tensor, w: &Tensor, targets: &[u32], fused: bool, cap: Option<f32>) -> Result<Tensor> {
    let (n, vocab) = (h.dim(0)?, w.dim(0)?);
    let rows = ((24usize << 20) / (4 * vocab).max(1)).max(1);
    let w_t = w.t()?;
    let mut out = Vec::new();
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let logits = softcap(h.narrow(0, start, len)?.matmul(&w_t)?, cap)?;
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
