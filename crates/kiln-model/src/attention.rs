//! Causal self-attention over the KV cache, with grouped-query heads and an optional sliding
//! window, computed as llama.cpp's CPU flash attention computes it for short batches and
//! decoding: queries rounded to f16 before Q·K, an online softmax, and values accumulated in
//! f16. (Matching its rounding matters: see tests/llama_cpp_greedy.rs.)

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
pub fn attend(spec: &AttentionSpec, q: &[f32], pos0: usize, keys: &[f16], values: &[f16], out: &mut [f32]) {
    let hd = spec.head_dim;
    let q_dim = spec.n_heads * hd;
    let kv_dim = spec.n_kv_heads * hd;
    let group = spec.n_heads / spec.n_kv_heads;
    out.par_chunks_mut(hd)
        .enumerate()
        .for_each(|(i, o)| {
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
            // Online softmax with an f16 accumulator for V, the order llama.cpp's CPU flash
            // attention uses.
            let mut acc = [f16::ZERO; MAX_HEAD_DIM];
            let acc = &mut acc[..hd];
            let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
            for j in first..=pos {
                let k = &keys[j * kv_dim + kvh * hd..][..hd];
                let dot: f32 = qh.iter().zip(k).map(|(&a, &b)| a * b.to_f32()).sum();
                let sj = dot * spec.scale;
                let (mut ms, mut vs) = (1.0f32, 1.0f32);
                if sj > m {
                    let old = m;
                    m = sj;
                    ms = (old - m).exp();
                    for a in acc.iter_mut() {
                        *a = f16::from_f32(a.to_f32() * ms);
                    }
                } else {
                    vs = (sj - m).exp();
                }
                let v = &values[j * kv_dim + kvh * hd..][..hd];
                for (a, &vd) in acc.iter_mut().zip(v) {
                    *a = f16::from_f32(a.to_f32() + vd.to_f32() * vs);
                }
                sum = sum * ms + vs;
            }
            let inv = 1.0 / sum;
            for (od, a) in o.iter_mut().zip(acc.iter()) {
                *od = a.to_f32() * inv;
            }
        });
}
