//! Causal self-attention over the KV cache, with grouped-query heads and an optional sliding
//! window. Queries are rounded to f16 before Q·K, as llama.cpp's CPU flash attention does.

use half::f16;
use rayon::prelude::*;

/// The widest head supported (keeps the per-head query copy on the stack).
pub const MAX_HEAD_DIM: usize = 512;

/// Shapes and rules of one layer's attention.
pub struct AttentionSpec {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Multiplies Q·K.
    pub scale: f32,
    /// Only the last `window` positions are visible, if set.
    pub window: Option<usize>,
}

/// Attention outputs for `n` queries at positions `pos0..pos0+n`.
/// `q` is `n × n_heads·head_dim`; `keys`/`values` hold positions `0..pos0+n`; `out` like `q`.
/// `scores` is scratch of at least `n_heads·n·(pos0+n)` floats.
pub fn attend(spec: &AttentionSpec, q: &[f32], pos0: usize, keys: &[f16], values: &[f16], out: &mut [f32], scores: &mut [f32]) {
    let hd = spec.head_dim;
    let q_dim = spec.n_heads * hd;
    let kv_dim = spec.n_kv_heads * hd;
    let group = spec.n_heads / spec.n_kv_heads;
    let n = q.len() / q_dim;
    let ctx = pos0 + n;
    out.par_chunks_mut(hd)
        .zip(scores.par_chunks_mut(ctx))
        .enumerate()
        .for_each(|(i, (o, s))| {
            let (t, h) = (i / spec.n_heads, i % spec.n_heads);
            let pos = pos0 + t;
            let kvh = h / group;
            let first = match spec.window {
                Some(w) => (pos + 1).saturating_sub(w),
                None => 0,
            };
            let mut q_buf = [0f32; MAX_HEAD_DIM];
            let qh = &mut q_buf[..hd];
            for (dst, &x) in qh.iter_mut().zip(&q[t * q_dim + h * hd..][..hd]) {
                *dst = f16::from_f32(x).to_f32();
            }
            let s = &mut s[first..=pos];
            let mut max = f32::NEG_INFINITY;
            for (j, sj) in s.iter_mut().enumerate() {
                let k = &keys[(first + j) * kv_dim + kvh * hd..][..hd];
                let dot: f32 = qh.iter().zip(k).map(|(&a, &b)| a * b.to_f32()).sum();
                *sj = dot * spec.scale;
                max = max.max(*sj);
            }
            let mut sum = 0.0f32;
            for sj in s.iter_mut() {
                *sj = (*sj - max).exp();
                sum += *sj;
            }
            o.fill(0.0);
            for (j, &w) in s.iter().enumerate() {
                let v = &values[(first + j) * kv_dim + kvh * hd..][..hd];
                for (od, &vd) in o.iter_mut().zip(v) {
                    *od += w * vd.to_f32();
                }
            }
            let inv = 1.0 / sum;
            for od in o.iter_mut() {
                *od *= inv;
            }
        });
}
