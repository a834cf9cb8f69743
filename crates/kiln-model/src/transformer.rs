//! The forward pass shared by every family: embeddings, N × (attention + feed-forward) with
//! pre-norms (and Gemma's post-norms), final norm, logits. Activations live in buffers owned
//! by [`State`] and reused from call to call.

use crate::attention::{attend, AttentionSpec};
use crate::config::{Activation, Family, ModelConfig, RopeStyle};
use crate::kv_cache::KvCache;
use crate::ops;
use crate::weights::{QMatrix, Weights};
use crate::ModelError;

/// Tokens processed per pass; longer inputs are split (bounds scratch memory).
const MAX_BATCH: usize = 64;

/// A model ready to run: validated config and its weights.
pub struct Model {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Weights.
    pub weights: Weights,
}

/// Per-sequence state: the KV cache, scratch buffers and the latest logits.
pub struct State {
    /// Keys and values seen so far.
    pub cache: KvCache,
    scratch: Scratch,
    logits: Vec<f32>,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    xb: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    acts: Vec<u8>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// `out = w·x`, reusing the activations `acts` already holds for `previous` when they fit.
fn matmul_reusing(w: &QMatrix, previous: &QMatrix, x: &[f32], n: usize, acts: &mut Vec<u8>, out: &mut [f32]) {
    if ops::same_activations(w, previous) {
        ops::matmul_prepared(w, acts, n, out);
    } else {
        ops::matmul(w, x, n, acts, out);
    }
}

impl State {
    /// The context length this state was made for.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Positions processed so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no token has been processed.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

impl Model {
    /// A fresh state able to hold `ctx` positions.
    pub fn new_state(&self, ctx: usize) -> State {
        let c = &self.config;
        State { cache: KvCache::new(c.n_layers, c.kv_dim(), ctx), scratch: Scratch::default(), logits: Vec::new() }
    }

    /// Runs `tokens` at the next positions of `state`, returning logits: for every token
    /// (`tokens.len() × vocab`) when `all_logits`, else for the last one only.
    pub fn forward<'s>(&self, state: &'s mut State, tokens: &[u32], all_logits: bool) -> Result<&'s [f32], ModelError> {
        crate::threads::pool().install(|| self.forward_in_pool(state, tokens, all_logits))?;
        Ok(&state.logits)
    }

    fn forward_in_pool(&self, state: &mut State, tokens: &[u32], all_logits: bool) -> Result<(), ModelError> {
        let vocab = self.config.vocab_size;
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let needed = state.len() + tokens.len();
        if needed > state.capacity() {
            return Err(ModelError::ContextOverflow { needed, context: state.capacity() });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { token: bad, vocab });
        }
        let n_out = if all_logits { tokens.len() } else { 1 };
        let mut logits = std::mem::take(&mut state.logits);
        logits.resize(n_out * vocab, 0.0);
        let batches = tokens.chunks(MAX_BATCH);
        let n_batches = batches.len();
        for (b, batch) in batches.enumerate() {
            let last = b + 1 == n_batches;
            if all_logits {
                let out = &mut logits[b * MAX_BATCH * vocab..][..batch.len() * vocab];
                self.forward_batch(state, batch, batch.len(), out);
            } else if last {
                self.forward_batch(state, batch, 1, &mut logits[..vocab]);
            } else {
                self.forward_batch(state, batch, 0, &mut []);
            }
        }
        state.logits = logits;
        Ok(())
    }

    /// One pass over at most MAX_BATCH tokens; logits for the last `n_out` of them.
    fn forward_batch(&self, state: &mut State, tokens: &[u32], n_out: usize, logits: &mut [f32]) {
        let c = &self.config;
        let w = &self.weights;
        let n = tokens.len();
        let pos0 = state.cache.len();
        let (d, q_dim, kv_dim, hd) = (c.dim, c.q_dim(), c.kv_dim(), c.head_dim);
        let s = &mut state.scratch;

        let x = grow(&mut s.x, n * d);
        for (t, &tok) in tokens.iter().enumerate() {
            w.token_embd.dequantize_row(tok as usize, &mut x[t * d..(t + 1) * d]);
        }
        if c.scale_embeddings {
            let scale = (d as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }

        // RoPE angles per position, for the global base and (Gemma) the local one.
        let half = c.rope_dim / 2;
        let bases = [c.rope_theta, c.rope_theta_local];
        grow(&mut s.cos, 2 * n * half);
        grow(&mut s.sin, 2 * n * half);
        for (bi, &base) in bases.iter().enumerate() {
            for t in 0..n {
                let at = (bi * n + t) * half;
                ops::rope_angles(pos0 + t, base, c.rope_dim, w.rope_freqs.as_deref(), &mut s.cos[at..at + half], &mut s.sin[at..at + half]);
            }
        }

        let scale_queries = c.family == Family::Gemma3;
        for (l, lw) in w.layers.iter().enumerate() {
            let x = &mut s.x[..n * d];
            let xb = grow(&mut s.xb, n * d);
            ops::rms_norm(x, &lw.attn_norm, c.rms_eps, xb);
            let q = grow(&mut s.q, n * q_dim);
            ops::matmul(&lw.wq, xb, n, &mut s.acts, q);
            let k = grow(&mut s.k, n * kv_dim);
            matmul_reusing(&lw.wk, &lw.wq, xb, n, &mut s.acts, k);
            let v = grow(&mut s.v, n * kv_dim);
            matmul_reusing(&lw.wv, &lw.wk, xb, n, &mut s.acts, v);
            if let (Some(bq), Some(bk), Some(bv)) = (&lw.bq, &lw.bk, &lw.bv) {
                ops::add_bias(q, bq);
                ops::add_bias(k, bk);
                ops::add_bias(v, bv);
            }
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                ops::rms_norm_in_place(q, qn, c.rms_eps);
                ops::rms_norm_in_place(k, kn, c.rms_eps);
            }
            let sliding = c.is_sliding(l);
            let bi = usize::from(sliding);
            for t in 0..n {
                let at = (bi * n + t) * half;
                let (cos, sin) = (&s.cos[at..at + half], &s.sin[at..at + half]);
                let interleaved = c.rope_style == RopeStyle::Interleaved;
                ops::rope(&mut q[t * q_dim..(t + 1) * q_dim], hd, cos, sin, interleaved);
                ops::rope(&mut k[t * kv_dim..(t + 1) * kv_dim], hd, cos, sin, interleaved);
            }
            if scale_queries {
                q.iter_mut().for_each(|v| *v *= c.attn_scale);
            }
            state.cache.store(l, pos0, k, v);
            let (keys, values) = state.cache.layer(l);
            let spec = AttentionSpec {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: hd,
                scale: if scale_queries { 1.0 } else { c.attn_scale },
                window: if sliding { c.sliding_window } else { None },
            };
            let att = grow(&mut s.att, n * q_dim);
            attend(&spec, q, pos0, keys, values, att);
            let xb = &mut s.xb[..n * d];
            ops::matmul(&lw.wo, att, n, &mut s.acts, xb);
            if let Some(pn) = &lw.post_attn_norm {
                ops::rms_norm_in_place(xb, pn, c.rms_eps);
            }
            ops::add_in_place(x, xb);

            ops::rms_norm(x, &lw.ffn_norm, c.rms_eps, xb);
            let gate = grow(&mut s.gate, n * c.ffn_dim);
            ops::matmul(&lw.w_gate, xb, n, &mut s.acts, gate);
            let up = grow(&mut s.up, n * c.ffn_dim);
            matmul_reusing(&lw.w_up, &lw.w_gate, xb, n, &mut s.acts, up);
            match c.activation {
                Activation::Silu => ops::swiglu(gate, up),
                Activation::GeluTanh => ops::geglu(gate, up),
            }
            ops::matmul(&lw.w_down, gate, n, &mut s.acts, xb);
            if let Some(pn) = &lw.post_ffn_norm {
                ops::rms_norm_in_place(xb, pn, c.rms_eps);
            }
            ops::add_in_place(x, xb);
        }
        state.cache.set_len(pos0 + n);

        if n_out > 0 {
            let rows = &s.x[(n - n_out) * d..n * d];
            let xb = grow(&mut s.xb, n_out * d);
            ops::rms_norm(rows, &w.output_norm, c.rms_eps, xb);
            ops::matmul(&w.output, xb, n_out, &mut s.acts, logits);
            if let Some(cap) = c.final_logit_softcap {
                logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
            }
        }
    }
}
