//! Causal self-attention over the KV cache, with grouped-query heads and an optional sliding
//! window, computed the way llama.cpp's CPU flash attention computes it, because matching its
//! rounding keeps greedy outputs equal (see tests/llama_cpp_greedy.rs):
//! - short batches and decoding (fewer than [`TILED_MIN_QUERIES`] queries): queries rounded
//!   to f16 before Q·K, an online softmax, values accumulated in an f16 vector;
//! - longer batches (prompts): f32 queries and an f32 accumulator, in tiles ([`tiled`]).

mod tiled;

use half::f16;
use rayon::prelude::*;

/// The widest head supported (keeps per-head buffers on the stack).
pub const MAX_HEAD_DIM: usize = 512;

/// From this many queries in one call on, llama.cpp switches to its tiled f32 kernel.
pub const TILED_MIN_QUERIES: usize = 64;

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
    if q.len() / q_dim >= TILED_MIN_QUERIES {
        return tiled::attend_tiled(spec, q, pos0, keys, values, out);
    }
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / spec.n_heads, i % spec.n_heads);
        attend_head(spec, &q[t * q_dim + h * hd..][..hd], h, pos0 + t, keys, values, o);
    });
}

/// One query of one sequence: its position and that sequence's cached keys and values.
pub struct QueryRow<'a> {
    /// Position of the query (the cache holds `0..=pos`).
    pub pos: usize,
    /// The sequence's keys, `n_kv_heads·head_dim` per position.
    pub keys: &'a [f16],
    /// The sequence's values, likewise.
    pub values: &'a [f16],
}

/// Attention for one query per sequence (batched decoding), all heads of all rows in one
/// parallel pass. Each row is computed exactly as [`attend`] computes a single query.
pub fn attend_rows(spec: &AttentionSpec, q: &[f32], rows: &[QueryRow], out: &mut [f32]) {
    let hd = spec.head_dim;
    let q_dim = spec.n_heads * hd;
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / spec.n_heads, i % spec.n_heads);
        let row = &rows[t];
        // A lone query never takes the tiled path (fewer than TILED_MIN_QUERIES).
        attend_head(spec, &q[t * q_dim + h * hd..][..hd], h, row.pos, row.keys, row.values, o);
    });
}

/// Head `h` of the query `q_head` at position `pos`, written to `o`.
fn attend_head(
    spec: &AttentionSpec,
    q_head: &[f32],
    h: usize,
    pos: usize,
    keys: &[f16],
    values: &[f16],
    o: &mut [f32],
) {
    let hd = spec.head_dim;
    let kv_dim = spec.n_kv_heads * hd;
    let kvh = h / (spec.n_heads / spec.n_kv_heads);
    let k = kernels();
    let first = match spec.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    let mut q_buf = [0f32; MAX_HEAD_DIM];
    let qh = &mut q_buf[..hd];
    qh.copy_from_slice(q_head);
    let key = |j: usize| &keys[j * kv_dim + kvh * hd..][..hd];
    let value = |j: usize| &values[j * kv_dim + kvh * hd..][..hd];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for x in qh.iter_mut() {
        *x = f16::from_f32(*x).to_f32();
    }
    let mut acc = [f16::ZERO; MAX_HEAD_DIM];
    let acc = &mut acc[..hd];
    for j in first..=pos {
        let s = (k.dot)(qh, key(j)) * spec.scale;
        let (ms, vs) = online_softmax_step(&mut m, s);
        if ms != 1.0 {
            (k.scale_f16)(acc, ms);
        }
        (k.mad_f16)(acc, value(j), vs);
        sum = sum * ms + vs;
    }
    let inv = 1.0 / sum;
    for (od, a) in o.iter_mut().zip(acc.iter()) {
        *od = a.to_f32() * inv;
    }
}

/// One step of the online softmax: returns (rescale of what was accumulated, weight of `s`).
#[inline]
fn online_softmax_step(m: &mut f32, s: f32) -> (f32, f32) {
    if s > *m {
        let old = *m;
        *m = s;
        ((old - s).exp(), 1.0)
    } else {
        (1.0, (s - *m).exp())
    }
}

/// The inner loops, chosen once: AVX2+F16C where the CPU has them, NEON on AArch64, scalar
/// otherwise.
struct Kernels {
    /// `q · k` with `k` in f16, accumulated in f32.
    dot: fn(&[f32], &[f16]) -> f32,
    /// `acc = f16(acc + v · w)` with one rounding (ggml_vec_mad_f16's fused multiply-add).
    mad_f16: fn(&mut [f16], &[f16], f32),
    /// `acc = f16(acc · w)` (ggml_vec_scale_f16).
    scale_f16: fn(&mut [f16], f32),
}

fn kernels() -> &'static Kernels {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd_available() {
        return &simd::KERNELS;
    }
    #[cfg(target_arch = "aarch64")]
    {
        // Chosen once: neon_available() reads the environment, and this runs for every head.
        static CHOSEN: std::sync::OnceLock<&'static Kernels> = std::sync::OnceLock::new();
        return CHOSEN.get_or_init(|| if crate::quant::neon_available() { &neon::KERNELS } else { &scalar::KERNELS });
    }
    #[allow(unreachable_code)]
    &scalar::KERNELS
}

/// Plain loops: the reference the SIMD kernels are tested against.
mod scalar {
    use super::{f16, Kernels};

    pub static KERNELS: Kernels = Kernels { dot, mad_f16, scale_f16 };

    /// ggml_vec_dot_f16 as llama.cpp's AVX-512 build sums it: four 16-lane accumulators over
    /// steps of 64, reduced (0+2, 1+3), then (0+1), then across lanes as
    /// `_mm512_reduce_add_ps` does; the tail in f64. The same bits on every CPU.
    pub fn dot(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len().min(k.len());
        let body = n - n % 64;
        let mut acc = [[0f32; 16]; 4];
        for i in (0..body).step_by(64) {
            for (j, a) in acc.iter_mut().enumerate() {
                for (l, al) in a.iter_mut().enumerate() {
                    let e = i + 16 * j + l;
                    *al = q[e].mul_add(k[e].to_f32(), *al);
                }
            }
        }
        let mut tail = 0f64;
        for e in body..n {
            tail += (q[e] * k[e].to_f32()) as f64;
        }
        (reduce_lanes(acc) as f64 + tail) as f32
    }

    /// The cross-accumulator and cross-lane reduction of [`dot`].
    pub fn reduce_lanes(acc: [[f32; 16]; 4]) -> f32 {
        let a: [f32; 16] = std::array::from_fn(|l| acc[0][l] + acc[2][l]);
        let b: [f32; 16] = std::array::from_fn(|l| acc[1][l] + acc[3][l]);
        let x: [f32; 16] = std::array::from_fn(|l| a[l] + b[l]);
        let t3: [f32; 8] = std::array::from_fn(|l| x[8 + l] + x[l]);
        let t6: [f32; 4] = std::array::from_fn(|l| t3[4 + l] + t3[l]);
        (t6[0] + t6[2]) + (t6[1] + t6[3])
    }

    pub fn mad_f16(acc: &mut [f16], v: &[f16], w: f32) {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = f16::from_f32(x.to_f32().mul_add(w, a.to_f32()));
        }
    }
    pub fn scale_f16(acc: &mut [f16], w: f32) {
        for a in acc.iter_mut() {
            *a = f16::from_f32(a.to_f32() * w);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{f16, scalar, Kernels};
    use std::arch::x86_64::*;

    pub static KERNELS: Kernels = Kernels { dot, mad_f16, scale_f16 };

    // SAFETY (all of them): only reachable when simd_available() found AVX2, FMA and F16C;
    // every pointer stays within the slices (8 lanes at a time, the tail in scalar code).

    fn dot(q: &[f32], k: &[f16]) -> f32 {
        unsafe { dot_avx2(q, k) }
    }
    fn mad_f16(acc: &mut [f16], v: &[f16], w: f32) {
        unsafe { mad_f16_avx2(acc, v, w) }
    }
    fn scale_f16(acc: &mut [f16], w: f32) {
        unsafe { scale_f16_avx2(acc, w) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_h(p: &[f16]) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.as_ptr() as *const __m128i))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store_h(p: &mut [f16], v: __m256) {
        _mm_storeu_si128(p.as_mut_ptr() as *mut __m128i, _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(v));
    }

    /// [`scalar::dot`] with each 16-lane accumulator held as two 8-lane halves.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_avx2(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len().min(k.len());
        let body = n - n % 64;
        let mut acc = [_mm256_setzero_ps(); 8];
        for i in (0..body).step_by(64) {
            for (h, a) in acc.iter_mut().enumerate() {
                let e = i + 8 * h;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(e)), load_h(&k[e..]), *a);
            }
        }
        if body == 0 {
            return scalar::dot(q, k);
        }
        let mut lanes = [[0f32; 16]; 4];
        for (h, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(lanes[h / 2].as_mut_ptr().add(8 * (h % 2)), *a);
        }
        let mut tail = 0f64;
        for e in body..n {
            tail += (q[e] * k[e].to_f32()) as f64;
        }
        (scalar::reduce_lanes(lanes) as f64 + tail) as f32
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mad_f16_avx2(acc: &mut [f16], v: &[f16], w: f32) {
        let n = acc.len().min(v.len());
        let body = n - n % 8;
        let wv = _mm256_set1_ps(w);
        for i in (0..body).step_by(8) {
            let r = _mm256_fmadd_ps(load_h(&v[i..]), wv, load_h(&acc[i..]));
            store_h(&mut acc[i..], r);
        }
        scalar::mad_f16(&mut acc[body..n], &v[body..n], w);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scale_f16_avx2(acc: &mut [f16], w: f32) {
        let n = acc.len();
        let body = n - n % 8;
        let wv = _mm256_set1_ps(w);
        for i in (0..body).step_by(8) {
            let r = _mm256_mul_ps(load_h(&acc[i..]), wv);
            store_h(&mut acc[i..], r);
        }
        scalar::scale_f16(&mut acc[body..], w);
    }

    #[cfg(test)]
    mod tests {
        use super::super::scalar;
        use super::*;

        fn data(n: usize, seed: u32) -> (Vec<f32>, Vec<f16>) {
            let mut x = seed.wrapping_mul(2654435761).max(1);
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            };
            let a: Vec<f32> = (0..n).map(|_| next()).collect();
            let b: Vec<f16> = (0..n).map(|_| f16::from_f32(next())).collect();
            (a, b)
        }

        #[test]
        fn simd_attention_kernels_match_scalar() {
            if !crate::quant::simd_available() {
                eprintln!("SKIP: no AVX2/F16C");
                return;
            }
            for n in [1, 7, 8, 15, 16, 33, 64, 100, 127, 128, 256] {
                let (a, b) = data(n, n as u32);
                assert_eq!(dot(&a, &b).to_bits(), scalar::dot(&a, &b).to_bits(), "dot n={n}");
                // The element-wise kernels do the same operations per element: equal bits.
                let mut x: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
                let mut y = x.clone();
                mad_f16(&mut x, &b, -1.3);
                scalar::mad_f16(&mut y, &b, -1.3);
                assert_eq!(x, y, "mad_f16 n={n}");
                scale_f16(&mut x, 0.61);
                scalar::scale_f16(&mut y, 0.61);
                assert_eq!(x, y, "scale_f16 n={n}");
            }
        }
    }
}

/// [`scalar`]'s operations four lanes at a time (NEON is baseline on AArch64). Halves are
/// loaded as `u16` lanes (Rust's own `f16` type is unstable) and converted by `fcvtl`/`fcvtn`:
/// exact widening, and rounding to nearest even under the default FPCR, the rounding of
/// `f16::from_f32`, subnormals and infinities included.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{f16, scalar, Kernels};
    use std::arch::aarch64::*;

    pub static KERNELS: Kernels = Kernels { dot, mad_f16, scale_f16 };

    /// Eight halves as two f32 vectors (lanes 0–3, 4–7).
    #[inline(always)]
    fn load_h(p: &[f16; 8]) -> (float32x4_t, float32x4_t) {
        // SAFETY: NEON is baseline; the array holds eight halves, each a u16 underneath.
        unsafe {
            let h = vreinterpretq_f16_u16(vld1q_u16(p.as_ptr() as *const u16));
            (vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h))
        }
    }

    /// Rounds two f32 vectors to eight halves and stores them.
    #[inline(always)]
    fn store_h(p: &mut [f16; 8], lo: float32x4_t, hi: float32x4_t) {
        // SAFETY: as in `load_h`.
        unsafe { vst1q_u16(p.as_mut_ptr() as *mut u16, vreinterpretq_u16_f16(vcvt_high_f16_f32(vcvt_f16_f32(lo), hi))) }
    }

    /// [`scalar::dot`] with each 16-lane accumulator held as four 4-lane vectors, so the
    /// lanes and their reduction are the scalar ones.
    fn dot(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len().min(k.len());
        let body = n - n % 64;
        if body == 0 {
            return scalar::dot(q, k);
        }
        let mut lanes = [[0f32; 16]; 4];
        // SAFETY: NEON is baseline on AArch64; `q8` holds eight floats, and each store writes
        // four floats at lane 4·(v mod 4) of a 16-lane row.
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); 16];
            for (qc, kc) in q[..body].as_chunks::<64>().0.iter().zip(k[..body].as_chunks::<64>().0) {
                for (h, (q8, k8)) in qc.as_chunks::<8>().0.iter().zip(kc.as_chunks::<8>().0).enumerate() {
                    let (klo, khi) = load_h(k8);
                    acc[2 * h] = vfmaq_f32(acc[2 * h], vld1q_f32(q8.as_ptr()), klo);
                    acc[2 * h + 1] = vfmaq_f32(acc[2 * h + 1], vld1q_f32(q8.as_ptr().add(4)), khi);
                }
            }
            for (v, a) in acc.iter().enumerate() {
                vst1q_f32(lanes[v / 4].as_mut_ptr().add(4 * (v % 4)), *a);
            }
        }
        let mut tail = 0f64;
        for e in body..n {
            tail += (q[e] * k[e].to_f32()) as f64;
        }
        (scalar::reduce_lanes(lanes) as f64 + tail) as f32
    }

    fn mad_f16(acc: &mut [f16], v: &[f16], w: f32) {
        let n = acc.len().min(v.len());
        let body = n - n % 8;
        for (a, x) in acc[..body].as_chunks_mut::<8>().0.iter_mut().zip(v[..body].as_chunks::<8>().0) {
            let ((alo, ahi), (xlo, xhi)) = (load_h(a), load_h(x));
            // acc + x·w, fused like the scalar mul_add.
            // SAFETY: NEON is baseline on AArch64; registers only.
            let (lo, hi) = unsafe { (vfmaq_n_f32(alo, xlo, w), vfmaq_n_f32(ahi, xhi, w)) };
            store_h(a, lo, hi);
        }
        scalar::mad_f16(&mut acc[body..n], &v[body..n], w);
    }

    fn scale_f16(acc: &mut [f16], w: f32) {
        let body = acc.len() - acc.len() % 8;
        for a in acc[..body].as_chunks_mut::<8>().0 {
            let (lo, hi) = load_h(a);
            // SAFETY: NEON is baseline on AArch64; registers only.
            let (lo, hi) = unsafe { (vmulq_n_f32(lo, w), vmulq_n_f32(hi, w)) };
            store_h(a, lo, hi);
        }
        scalar::scale_f16(&mut acc[body..], w);
    }

    #[cfg(test)]
    mod tests {
        use super::super::scalar;
        use super::*;

        /// `n` values in [-1, 1) from a xorshift seeded by `seed`.
        fn values(n: usize, seed: u32) -> Vec<f32> {
            let mut x = seed.wrapping_mul(0x9E37_79B9) | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 8) as f32 / (1 << 23) as f32 - 1.0
                })
                .collect()
        }

        fn halves(x: &[f32]) -> Vec<f16> {
            x.iter().map(|&v| f16::from_f32(v)).collect()
        }

        fn bits(x: &[f16]) -> Vec<u16> {
            x.iter().map(|h| h.to_bits()).collect()
        }

        /// The first element whose bits differ, NaN matching any NaN: Rust leaves a NaN
        /// result's sign and payload open, and for NaN · NaN the scalar loop's bits depend on
        /// which operand the compiler puts first.
        fn mismatch(x: &[f16], y: &[f16]) -> Option<(usize, f16, f16)> {
            let same = |a: &f16, b: &f16| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            x.iter().zip(y).position(|(a, b)| !same(a, b)).map(|i| (i, x[i], y[i]))
        }

        /// The standard of the AVX2 test: the NEON kernels give the scalar bits.
        #[test]
        fn neon_attention_kernels_match_scalar() {
            if !crate::quant::neon_available() {
                eprintln!("SKIP: KILN_FORCE_SCALAR=1");
                return;
            }
            // The AVX2 test's sizes, then rows of up to 40 steps of 64 with short tails.
            let sizes =
                [1, 7, 8, 15, 16, 33, 64, 100, 127, 128, 256].into_iter().chain((1..=40).map(|s| 64 * s + s % 9));
            for (i, n) in sizes.enumerate() {
                let (a, b) = (values(n, i as u32), halves(&values(n, 1000 + i as u32)));
                assert_eq!(dot(&a, &b).to_bits(), scalar::dot(&a, &b).to_bits(), "dot n={n}");
                let mut x = halves(&a);
                let mut y = x.clone();
                mad_f16(&mut x, &b, -1.3);
                scalar::mad_f16(&mut y, &b, -1.3);
                assert_eq!(bits(&x), bits(&y), "mad_f16 n={n}");
                scale_f16(&mut x, 0.61);
                scalar::scale_f16(&mut y, 0.61);
                assert_eq!(bits(&x), bits(&y), "scale_f16 n={n}");
            }
        }

        /// The f32 → f16 rounding at its edges, every accumulator against every value and
        /// weight: ties to even (down and up), results in the subnormals and the tie below the
        /// smallest one, overflow to infinity at 65520, NaN and infinities in each operand.
        /// Compared as bits, except that NaN matches any NaN (see [`mismatch`]).
        #[test]
        fn neon_f16_rounding_matches_scalar_at_the_edges() {
            if !crate::quant::neon_available() {
                eprintln!("SKIP: KILN_FORCE_SCALAR=1");
                return;
            }
            let (nan, inf, e) = (f32::NAN, f32::INFINITY, |k: i32| 2f32.powi(k));
            let accs = [
                1.0,
                1.0 + e(-10),
                -2.0,
                e(-24),
                3.0 * e(-24),
                0.0,
                -0.0,
                65504.0,
                -65504.0,
                e(-14),
                nan,
                -nan,
                inf,
                -inf,
                1000.0,
                -0.3,
            ];
            let vals = [
                e(-11),
                -e(-11),
                e(-10),
                e(-24),
                3.0 * e(-24),
                16.0,
                15.0,
                -16.0,
                1.0,
                0.0,
                -0.0,
                nan,
                inf,
                -inf,
                e(-14),
                0.1,
            ];
            let a: Vec<f32> = accs.iter().flat_map(|&x| [x; 16]).collect();
            let v: Vec<f32> = (0..accs.len()).flat_map(|_| vals).collect();
            for w in [1.0, 0.5, 0.75, e(-12), 3.0, -1.0, 1e-8, 0.0, inf, nan] {
                // Once all in the vector body, once with five elements left to the scalar tail.
                for extra in [0, 5] {
                    let (a, v) = ([&a[..], &a[..extra]].concat(), [&v[..], &v[..extra]].concat());
                    let (mut x, vh) = (halves(&a), halves(&v));
                    let mut y = x.clone();
                    mad_f16(&mut x, &vh, w);
                    scalar::mad_f16(&mut y, &vh, w);
                    assert_eq!(mismatch(&x, &y), None, "mad_f16 w={w} extra={extra}");
                    let mut x = halves(&a);
                    let mut y = x.clone();
                    scale_f16(&mut x, w);
                    scalar::scale_f16(&mut y, w);
                    assert_eq!(mismatch(&x, &y), None, "scale_f16 w={w} extra={extra}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of one query over three positions, against softmax written out by hand.
    #[test]
    fn attention_matches_the_definition() {
        let spec = AttentionSpec { n_heads: 2, n_kv_heads: 1, head_dim: 2, scale: 0.5, window: None };
        let keys: Vec<f16> = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0].iter().map(|&x| f16::from_f32(x)).collect();
        let values: Vec<f16> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].iter().map(|&x| f16::from_f32(x)).collect();
        let q = [1.0f32, 2.0, -1.0, 0.5];
        let mut out = [0f32; 4];
        attend(&spec, &q, 2, &keys, &values, &mut out);
        for h in 0..2 {
            let qh = &q[h * 2..h * 2 + 2];
            let s: Vec<f32> =
                (0..3).map(|j| 0.5 * (qh[0] * keys[2 * j].to_f32() + qh[1] * keys[2 * j + 1].to_f32())).collect();
            let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = w.iter().sum();
            for d in 0..2 {
                let expect: f32 = (0..3).map(|j| w[j] / z * values[2 * j + d].to_f32()).sum();
                assert!((out[h * 2 + d] - expect).abs() < 1e-2, "head {h} dim {d}: {} vs {expect}", out[h * 2 + d]);
            }
        }
    }

    #[test]
    fn sliding_window_hides_old_positions() {
        let spec = AttentionSpec { n_heads: 1, n_kv_heads: 1, head_dim: 1, scale: 1.0, window: Some(1) };
        let keys = vec![f16::from_f32(1.0); 3];
        let values: Vec<f16> = [10.0, 20.0, 30.0].iter().map(|&x| f16::from_f32(x)).collect();
        let mut out = [0f32; 1];
        attend(&spec, &[1.0], 2, &keys, &values, &mut out);
        assert_eq!(out[0], 30.0);
    }
}
