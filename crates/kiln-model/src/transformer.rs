//! The forward pass shared by every family: embeddings, N × (attention + feed-forward) with
//! pre-norms (and Gemma's post-norms), final norm, logits. Activations live in buffers owned
//! by [`State`] and reused from call to call.

use crate::attention::{attend, attend_rows, AttentionSpec, QueryRow};
use crate::config::{Activation, ModelConfig, RopeStyle};
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
    pos: Vec<usize>,
}

/// What a pass produces.
enum Output<'a> {
    /// Nothing (a prompt chunk before the last).
    None,
    /// Logits of the last `rows` rows.
    Logits { rows: usize, out: &'a mut [f32] },
    /// Normalised final hidden states of every row.
    Hidden(&'a mut [f32]),
}

/// Scratch for [`Model::decode_batch`]: shared by all the sequences of a step, reused from
/// step to step.
#[derive(Default)]
pub struct BatchState {
    scratch: Scratch,
    logits: Vec<f32>,
}

impl BatchState {
    /// The logits of the last pass.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
}

fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
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
        self.check_input(&state.cache, tokens)?;
        let n_out = if all_logits { tokens.len() } else { 1 };
        let mut logits = std::mem::take(&mut state.logits);
        logits.resize(n_out * vocab, 0.0);
        let batches = tokens.chunks(MAX_BATCH);
        let n_batches = batches.len();
        for (b, batch) in batches.enumerate() {
            let last = b + 1 == n_batches;
            let mut seq = [&mut state.cache];
            let s = &mut state.scratch;
            if all_logits {
                let out = &mut logits[b * MAX_BATCH * vocab..][..batch.len() * vocab];
                self.step(s, &mut seq, &[batch.len()], batch, Output::Logits { rows: batch.len(), out });
            } else if last {
                self.step(s, &mut seq, &[batch.len()], batch, Output::Logits { rows: 1, out: &mut logits[..vocab] });
            } else {
                self.step(s, &mut seq, &[batch.len()], batch, Output::None);
            }
        }
        state.logits = logits;
        Ok(())
    }

    fn check_input(&self, cache: &KvCache, tokens: &[u32]) -> Result<(), ModelError> {
        let vocab = self.config.vocab_size;
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let needed = cache.len() + tokens.len();
        if needed > cache.capacity() {
            return Err(ModelError::ContextOverflow { needed, context: cache.capacity() });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { token: bad, vocab });
        }
        Ok(())
    }

    /// Runs one next token for each of several sequences in a single pass, so the weights are
    /// read once for all of them (continuous batching). Returns `states.len() × vocab` logits.
    ///
    /// The result for each sequence is bit-identical to `forward(state, &[token], false)`:
    /// every row goes through the same single-row kernels and its own attention, so a request
    /// answers the same whatever else shares its batch.
    pub fn decode_batch<'b>(
        &self,
        batch: &'b mut BatchState,
        states: &mut [&mut State],
        tokens: &[u32],
    ) -> Result<&'b [f32], ModelError> {
        assert_eq!(states.len(), tokens.len(), "one token per sequence");
        let vocab = self.config.vocab_size;
        for (state, &t) in states.iter().zip(tokens) {
            self.check_input(&state.cache, &[t])?;
        }
        batch.logits.resize(tokens.len() * vocab, 0.0);
        for (chunk, (states, tokens)) in states.chunks_mut(MAX_BATCH).zip(tokens.chunks(MAX_BATCH)).enumerate() {
            let mut caches: Vec<&mut KvCache> = states.iter_mut().map(|s| &mut s.cache).collect();
            let lens = vec![1; tokens.len()];
            let out = &mut batch.logits[chunk * MAX_BATCH * vocab..][..tokens.len() * vocab];
            crate::threads::pool().install(|| {
                self.step(&mut batch.scratch, &mut caches, &lens, tokens, Output::Logits { rows: tokens.len(), out })
            });
        }
        Ok(&batch.logits)
    }

    /// Runs several short sequences in one pass (scoring the choices of a question): each
    /// `tokens[i]` follows what `states[i]` holds. Returns the logits of every token of every
    /// sequence, back to back (`Σ len × vocab`). Sequences whose tokens together pass
    /// [`Model::max_rows`] are run in several passes.
    pub fn forward_many<'b>(
        &self,
        batch: &'b mut BatchState,
        states: &mut [&mut State],
        tokens: &[&[u32]],
    ) -> Result<&'b [f32], ModelError> {
        assert_eq!(states.len(), tokens.len(), "one token list per sequence");
        let vocab = self.config.vocab_size;
        for (state, t) in states.iter().zip(tokens) {
            self.check_input(&state.cache, t)?;
            if t.len() > MAX_BATCH {
                return Err(ModelError::Format(format!(
                    "forward_many takes at most {MAX_BATCH} tokens per sequence, got {}",
                    t.len()
                )));
            }
        }
        let total: usize = tokens.iter().map(|t| t.len()).sum();
        batch.logits.resize(total * vocab, 0.0);
        let mut first = 0;
        let mut row0 = 0;
        while first < tokens.len() {
            // As many whole sequences as fit in one pass.
            let mut end = first;
            let mut rows = 0;
            while end < tokens.len() && rows + tokens[end].len() <= MAX_BATCH {
                rows += tokens[end].len();
                end += 1;
            }
            let flat: Vec<u32> = tokens[first..end].iter().flat_map(|t| t.iter().copied()).collect();
            let lens: Vec<usize> = tokens[first..end].iter().map(|t| t.len()).collect();
            let mut caches: Vec<&mut KvCache> = states[first..end].iter_mut().map(|s| &mut s.cache).collect();
            let out = &mut batch.logits[row0 * vocab..(row0 + rows) * vocab];
            crate::threads::pool()
                .install(|| self.step(&mut batch.scratch, &mut caches, &lens, &flat, Output::Logits { rows, out }));
            row0 += rows;
            first = end;
        }
        Ok(&batch.logits)
    }

    /// Most tokens one pass holds (longer inputs are split into passes of this size).
    pub fn max_rows() -> usize {
        MAX_BATCH
    }

    /// The final hidden state (after the output norm) of every token of `tokens`, run from an
    /// empty cache: `tokens.len() × dim` values, for embeddings.
    pub fn hidden_states(&self, state: &mut State, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        state.cache.clear();
        self.check_input(&state.cache, tokens)?;
        let d = self.config.dim;
        let mut hidden = vec![0f32; tokens.len() * d];
        crate::threads::pool().install(|| {
            for (b, batch) in tokens.chunks(MAX_BATCH).enumerate() {
                let out = &mut hidden[b * MAX_BATCH * d..][..batch.len() * d];
                self.step(&mut state.scratch, &mut [&mut state.cache], &[batch.len()], batch, Output::Hidden(out));
            }
        });
        Ok(hidden)
    }

    /// One pass over at most MAX_BATCH rows: `tokens` holds the next `lens[i]` tokens of
    /// sequence `i` back to back, at the positions following what `caches[i]` holds.
    fn step(&self, s: &mut Scratch, caches: &mut [&mut KvCache], lens: &[usize], tokens: &[u32], output: Output<'_>) {
        let c = &self.config;
        let w = &self.weights;
        let n = tokens.len();
        debug_assert_eq!(lens.iter().sum::<usize>(), n);
        let (d, q_dim, kv_dim, hd) = (c.dim, c.q_dim(), c.kv_dim(), c.head_dim);
        let mm = |w: &QMatrix, x: &[f32], acts: &mut Vec<u8>, out: &mut [f32]| ops::matmul(w, x, n, acts, out);

        let x = grow(&mut s.x, n * d);
        for (t, &tok) in tokens.iter().enumerate() {
            w.token_embd.dequantize_row(tok as usize, &mut x[t * d..(t + 1) * d]);
        }
        if c.scale_embeddings {
            let scale = (d as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }

        // Each row's position, then its RoPE angles for the global base and (Gemma) the local one.
        s.pos.clear();
        for (cache, &len) in caches.iter().zip(lens) {
            s.pos.extend(cache.len()..cache.len() + len);
        }
        let half = c.rope_dim / 2;
        let bases = [c.rope_theta, c.rope_theta_local];
        grow(&mut s.cos, 2 * n * half);
        grow(&mut s.sin, 2 * n * half);
        for (bi, &base) in bases.iter().enumerate() {
            for (t, &pos) in s.pos.iter().enumerate() {
                let at = (bi * n + t) * half;
                ops::rope_angles(
                    pos,
                    base,
                    c.rope_dim,
                    w.rope_freqs.as_deref(),
                    &mut s.cos[at..at + half],
                    &mut s.sin[at..at + half],
                );
            }
        }

        let scale_queries = c.scale_queries;
        for (l, lw) in w.layers.iter().enumerate() {
            let x = &mut s.x[..n * d];
            let xb = grow(&mut s.xb, n * d);
            ops::rms_norm(x, &lw.attn_norm, c.rms_eps, xb);
            let (q, k, v) = (grow(&mut s.q, n * q_dim), grow(&mut s.k, n * kv_dim), grow(&mut s.v, n * kv_dim));
            if ops::same_activations(&lw.wk, &lw.wq) && ops::same_activations(&lw.wv, &lw.wq) {
                // One parallel pass for the three.
                ops::prepare_activations(&lw.wq, xb, n, &mut s.acts);
                ops::matmul_prepared_fused([&lw.wq, &lw.wk, &lw.wv], &s.acts, n, [&mut *q, &mut *k, &mut *v]);
            } else {
                mm(&lw.wq, xb, &mut s.acts, q);
                mm(&lw.wk, xb, &mut s.acts, k);
                mm(&lw.wv, xb, &mut s.acts, v);
            }
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
            let spec = AttentionSpec {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: hd,
                scale: if scale_queries { 1.0 } else { c.attn_scale },
                window: if sliding { c.sliding_window } else { None },
            };
            let att = grow(&mut s.att, n * q_dim);
            let mut row = 0;
            for (cache, &len) in caches.iter_mut().zip(lens) {
                let pos0 = cache.len();
                cache.store(l, pos0, &k[row * kv_dim..(row + len) * kv_dim], &v[row * kv_dim..(row + len) * kv_dim]);
                row += len;
            }
            if lens.len() == 1 {
                let (keys, values) = caches[0].layer(l);
                attend(&spec, q, caches[0].len(), keys, values, att);
            } else if lens.iter().any(|&len| len > 1) {
                // Several tokens per sequence: each sequence as `forward` would attend it.
                let mut row = 0;
                for (cache, &len) in caches.iter().zip(lens) {
                    let (keys, values) = cache.layer(l);
                    attend(
                        &spec,
                        &q[row * q_dim..(row + len) * q_dim],
                        cache.len(),
                        keys,
                        values,
                        &mut att[row * q_dim..(row + len) * q_dim],
                    );
                    row += len;
                }
            } else {
                // One query per sequence: all of them in one parallel pass.
                let rows: Vec<QueryRow> = caches
                    .iter()
                    .map(|c| {
                        let (keys, values) = c.layer(l);
                        QueryRow { pos: c.len(), keys, values }
                    })
                    .collect();
                attend_rows(&spec, q, &rows, att);
            }
            let xb = &mut s.xb[..n * d];
            mm(&lw.wo, att, &mut s.acts, xb);
            if let Some(pn) = &lw.post_attn_norm {
                ops::rms_norm_in_place(xb, pn, c.rms_eps);
            }
            ops::add_in_place(x, xb);

            ops::rms_norm(x, &lw.ffn_norm, c.rms_eps, xb);
            let (gate, up) = (grow(&mut s.gate, n * c.ffn_dim), grow(&mut s.up, n * c.ffn_dim));
            if ops::same_activations(&lw.w_up, &lw.w_gate) {
                ops::prepare_activations(&lw.w_gate, xb, n, &mut s.acts);
                ops::matmul_prepared_fused([&lw.w_gate, &lw.w_up], &s.acts, n, [&mut *gate, &mut *up]);
            } else {
                mm(&lw.w_gate, xb, &mut s.acts, gate);
                mm(&lw.w_up, xb, &mut s.acts, up);
            }
            match c.activation {
                Activation::Silu => ops::swiglu(gate, up),
                Activation::GeluTanh => ops::geglu(gate, up),
            }
            mm(&lw.w_down, gate, &mut s.acts, xb);
            if let Some(pn) = &lw.post_ffn_norm {
                ops::rms_norm_in_place(xb, pn, c.rms_eps);
            }
            ops::add_in_place(x, xb);
        }
        for (cache, &len) in caches.iter_mut().zip(lens) {
            let end = cache.len() + len;
            cache.set_len(end);
        }

        match output {
            Output::None => {}
            Output::Hidden(out) => ops::rms_norm(&s.x[..n * d], &w.output_norm, c.rms_eps, out),
            Output::Logits { rows, out } => {
                // With one row per sequence every row is wanted; with one sequence, its last `rows`.
                let picked = &s.x[(n - rows) * d..n * d];
                let xb = grow(&mut s.xb, rows * d);
                ops::rms_norm(picked, &w.output_norm, c.rms_eps, xb);
                ops::matmul(&w.output, xb, rows, &mut s.acts, out);
                if let Some(cap) = c.final_logit_softcap {
                    out.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
                }
            }
        }
    }
}
