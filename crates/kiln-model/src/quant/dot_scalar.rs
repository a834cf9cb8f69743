//! Scalar dot products of a weight row with an activation row in its `vec_dot_type`, following
//! ggml's generic kernels (`ggml_vec_dot_*_generic` in ggml-cpu/quants.c, `ggml_vec_dot_f16` /
//! `_f32` / `_bf16` in ggml-cpu/vec.cpp without SIMD): exact integer sums per block, then the
//! same f32 scaling and summation order. These are the reference the SIMD kernels are tested
//! against.

use super::blocks::*;

/// f32 · f32, products rounded to f32 and summed in f64 (ggml's `ggml_float`).
pub fn f32(x: &[u8], y: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (a, b) in x.chunks_exact(4).zip(y.chunks_exact(4)) {
        let a = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        let b = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        sum += (a * b) as f64;
    }
    sum as f32
}

/// F16 · F16, as `f32` after widening each half.
pub fn f16(x: &[u8], y: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        sum += (F16Le([a[0], a[1]]).to_f32() * F16Le([b[0], b[1]]).to_f32()) as f64;
    }
    sum as f32
}

/// BF16 · BF16, as `f32` after widening each value.
pub fn bf16(x: &[u8], y: &[u8]) -> f32 {
    let w = |b: &[u8]| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    let mut sum = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        sum += (w(a) * w(b)) as f64;
    }
    sum as f32
}

/// The integer dot of a block's 32 quants (given as a function of the index) with Q8 quants.
#[inline(always)]
fn isum32(q: impl Fn(usize) -> i32, y: &[i8; QK]) -> i32 {
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..QK / 2 {
        s0 += q(j) * y[j] as i32;
        s1 += q(j + QK / 2) * y[j + QK / 2] as i32;
    }
    s0 + s1
}

/// The low-nibble quants of a Q4 block: weight j < 16 is byte j's low nibble, j >= 16 the high.
#[inline(always)]
fn nibble(qs: &[u8; 16], j: usize) -> i32 {
    (if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 }) as i32
}

/// Q4_0 · Q8_0.
pub fn q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi = isum32(|j| nibble(&a.qs, j) - 8, &b.qs);
        sumf += sumi as f32 * a.d.to_f32() * b.d.to_f32();
    }
    sumf
}

/// Q4_1 · Q8_1: `d_x d_y sum(q_x q_y) + m_x s_y`.
pub fn q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi = isum32(|j| nibble(&a.qs, j), &b.qs);
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
    }
    sumf
}

/// The 5-bit quant j of a Q5 block.
#[inline(always)]
fn q5(qs: &[u8; 16], qh: u32, j: usize) -> i32 {
    nibble(qs, j) | ((((qh >> j) & 1) as i32) << 4)
}

/// Q5_0 · Q8_0.
pub fn q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(a.qh);
        let sumi = isum32(|j| q5(&a.qs, qh, j) - 16, &b.qs);
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32;
    }
    sumf
}

/// Q5_1 · Q8_1.
pub fn q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(a.qh);
        let sumi = isum32(|j| q5(&a.qs, qh, j), &b.qs);
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
    }
    sumf
}

/// Q8_0 · Q8_0.
pub fn q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 = a.qs.iter().zip(&b.qs).map(|(&p, &q)| p as i32 * q as i32).sum();
        sumf += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sumf
}

/// Q2_K · Q8_K.
pub fn q2k_q8k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let summs: i32 = (0..16).map(|j| b.bsum(j) as i32 * (a.scales[j] >> 4) as i32).sum();
        let dall = b.d() * a.d.to_f32();
        let dmin = b.d() * a.dmin.to_f32();
        let mut isum = 0i32;
        // Group g: same layout as in `dequant::q2k`; its 16 activations are b.qs[16 g ..].
        for g in 0..16 {
            let q = &a.qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let shift = 2 * ((g % 8) / 2);
            let q8 = &b.qs[16 * g..][..16];
            let isuml: i32 = q.iter().zip(q8).map(|(&w, &v)| v as i32 * ((w >> shift) & 3) as i32).sum();
            isum += (a.scales[g] & 0xF) as i32 * isuml;
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Adds `scale * q[l] * q8[l]` into lane `l % 8` of `aux`, for 16 weights: the integer core of
/// ggml's generic K-quant kernels, which keep 8 lanes of partial sums. The sums are exact, so
/// a vector version (`dot_neon::lanes16`) can stand in for it with the same results.
#[inline(always)]
pub(super) fn lanes16(aux: &mut [i32; 8], scale: i32, q: &[i8], q8: &[i8]) {
    for l in 0..16 {
        aux[l % 8] += scale * (q8[l] as i32 * q[l] as i32);
    }
}

/// Q3_K · Q8_K.
pub fn q3k_q8k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0f32; 8];
    for (a, b) in x.iter().zip(y) {
        let mut q = [0i8; QK_K];
        for (g, out) in q.chunks_exact_mut(16).enumerate() {
            let off = 16 * (g % 2);
            let ql = &a.qs[32 * (g / 8) + off..][..16];
            let hm = &a.hmask[off..][..16];
            let shift = 2 * ((g % 8) / 2);
            let bit = 1u8 << (g / 2);
            for l in 0..16 {
                out[l] = ((ql[l] >> shift) & 3) as i8 - if hm[l] & bit != 0 { 0 } else { 4 };
            }
        }
        let scales = q3k_scales(&a.scales);
        let mut aux = [0i32; 8];
        for g in 0..16 {
            lanes16(&mut aux, scales[g] as i32 - 32, &q[16 * g..], &b.qs[16 * g..]);
        }
        let d = a.d.to_f32() * b.d();
        for (s, &v) in sums.iter_mut().zip(&aux) {
            *s += d * v as f32;
        }
    }
    sums.iter().fold(0f32, |acc, &s| acc + s)
}

/// The shared tail of Q4_K / Q5_K: given the unpacked quants `q`, accumulate into `sums`
/// and return the `dmin` term to subtract.
#[inline(always)]
fn k4_accumulate(
    q: &[i8; QK_K],
    packed: &[u8; 12],
    d: f32,
    dmin: f32,
    b: &BlockQ8K,
    sums: &mut [f32; 8],
    lanes16: impl Fn(&mut [i32; 8], i32, &[i8], &[i8]),
) -> f32 {
    let (scales, mins) = k4_unpack(packed);
    let sumi: i32 = (0..16).map(|j| b.bsum(j) as i32 * mins[j / 2] as i32).sum();
    let mut aux = [0i32; 8];
    for g in 0..16 {
        lanes16(&mut aux, scales[g / 2] as i32, &q[16 * g..], &b.qs[16 * g..]);
    }
    let d = d * b.d();
    for (s, &v) in sums.iter_mut().zip(&aux) {
        *s += d * v as f32;
    }
    dmin * b.d() * sumi as f32
}

/// Q4_K · Q8_K.
pub fn q4k_q8k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    q4k_q8k_with(x, y, lanes16)
}

/// [`q4k_q8k`] with the integer core given.
pub(super) fn q4k_q8k_with(
    x: &[BlockQ4K],
    y: &[BlockQ8K],
    lanes16: impl Fn(&mut [i32; 8], i32, &[i8], &[i8]) + Copy,
) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let mut q = [0i8; QK_K];
        for (c, out) in q.chunks_exact_mut(64).enumerate() {
            for l in 0..32 {
                out[l] = (a.qs[32 * c + l] & 0xF) as i8;
                out[l + 32] = (a.qs[32 * c + l] >> 4) as i8;
            }
        }
        sumf -= k4_accumulate(&q, &a.scales, a.d.to_f32(), a.dmin.to_f32(), b, &mut sums, lanes16);
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

/// Q5_K · Q8_K.
pub fn q5k_q8k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    q5k_q8k_with(x, y, lanes16)
}

/// [`q5k_q8k`] with the integer core given.
pub(super) fn q5k_q8k_with(
    x: &[BlockQ5K],
    y: &[BlockQ8K],
    lanes16: impl Fn(&mut [i32; 8], i32, &[i8], &[i8]) + Copy,
) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let mut q = [0i8; QK_K];
        for (c, out) in q.chunks_exact_mut(64).enumerate() {
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for l in 0..32 {
                let h1 = if a.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if a.qh[l] & u2 != 0 { 16 } else { 0 };
                out[l] = ((a.qs[32 * c + l] & 0xF) + h1) as i8;
                out[l + 32] = ((a.qs[32 * c + l] >> 4) + h2) as i8;
            }
        }
        sumf -= k4_accumulate(&q, &a.scales, a.d.to_f32(), a.dmin.to_f32(), b, &mut sums, lanes16);
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

/// Q6_K · Q8_K.
pub fn q6k_q8k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    q6k_q8k_with(x, y, lanes16)
}

/// [`q6k_q8k`] with the integer core given.
pub(super) fn q6k_q8k_with(x: &[BlockQ6K], y: &[BlockQ8K], lanes16: impl Fn(&mut [i32; 8], i32, &[i8], &[i8])) -> f32 {
    let mut sums = [0f32; 8];
    for (a, b) in x.iter().zip(y) {
        let mut q = [0i8; QK_K];
        for (h, out) in q.chunks_exact_mut(128).enumerate() {
            let ql = &a.ql[64 * h..][..64];
            let qh = &a.qh[32 * h..][..32];
            for l in 0..32 {
                out[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                out[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                out[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                out[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let mut aux = [0i32; 8];
        for g in 0..16 {
            lanes16(&mut aux, a.scales[g] as i32, &q[16 * g..], &b.qs[16 * g..]);
        }
        let d = a.d.to_f32() * b.d();
        for (s, &v) in sums.iter_mut().zip(&aux) {
            *s += d * v as f32;
        }
    }
    sums.iter().fold(0f32, |acc, &s| acc + s)
}
