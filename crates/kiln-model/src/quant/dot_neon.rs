//! NEON dot products of one weight row with one activation row, for the block formats most
//! GGUF files use (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K; the K-quants also for several
//! activation rows at once). NEON is part of
//! every AArch64 CPU, so these run wherever kiln is built for AArch64 (unless
//! `KILN_FORCE_SCALAR=1`). Each integer sum is exact and the float steps are the scalar
//! reference's, in its order, so the results have the reference's bits (the `quant` tests
//! compare them on this target).

use super::blocks::{
    k4_unpack, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1, F16Le, QK_K,
};
use std::arch::aarch64::*;

/// `Σ a·b` over 16 signed bytes of each, added to `acc` (four i32 lanes).
#[inline(always)]
fn mul_add16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: NEON is part of the AArch64 baseline.
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// The 32 quants of a 4-bit block as signed bytes minus `offset`: elements 0-15 (low
/// nibbles) and 16-31 (high nibbles).
#[inline(always)]
fn nibbles(qs: &[u8; 16], offset: i8) -> (int8x16_t, int8x16_t) {
    // SAFETY: NEON is baseline; `qs` holds 16 bytes.
    unsafe {
        let v = vld1q_u8(qs.as_ptr());
        let off = vdupq_n_s8(offset);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), off);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), off);
        (lo, hi)
    }
}

/// The 32 quants of a 5-bit block minus `offset`, as [`nibbles`] gives them: bit j of `qh`
/// becomes bit 4 of quant j (each qh byte is spread over 8 lanes and tested bit by bit).
#[inline(always)]
fn fives(qs: &[u8; 16], qh: [u8; 4], offset: i8) -> (int8x16_t, int8x16_t) {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let (lo, hi) = nibbles(qs, 0);
    // SAFETY: NEON is baseline; `BIT` holds 16 bytes.
    unsafe {
        let bit = vld1q_u8(BIT.as_ptr());
        let high = |a: u8, b: u8| {
            let spread = vcombine_u8(vdup_n_u8(a), vdup_n_u8(b));
            vreinterpretq_s8_u8(vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(0x10)))
        };
        let off = vdupq_n_s8(offset);
        (vsubq_s8(vorrq_s8(lo, high(qh[0], qh[1])), off), vsubq_s8(vorrq_s8(hi, high(qh[2], qh[3])), off))
    }
}

/// `Σ q·y` of a block whose quants are `(lo, hi)` against 32 activation quants.
#[inline(always)]
fn block_sum(lo: int8x16_t, hi: int8x16_t, y: &[i8; 32]) -> i32 {
    // SAFETY: NEON is baseline; `y` holds 32 bytes.
    unsafe {
        let acc = mul_add16(vdupq_n_s32(0), lo, vld1q_s8(y.as_ptr()));
        vaddvq_s32(mul_add16(acc, hi, vld1q_s8(y.as_ptr().add(16))))
    }
}

/// Q4_0 · Q8_0.
pub fn q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (lo, hi) = nibbles(&a.qs, 8);
        sumf += block_sum(lo, hi, &b.qs) as f32 * a.d.to_f32() * b.d.to_f32();
    }
    sumf
}

/// Q4_1 · Q8_1.
pub fn q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (lo, hi) = nibbles(&a.qs, 0);
        let sumi = block_sum(lo, hi, &b.qs);
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
    }
    sumf
}

/// Q5_0 · Q8_0.
pub fn q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (lo, hi) = fives(&a.qs, a.qh, 16);
        sumf += (a.d.to_f32() * b.d.to_f32()) * block_sum(lo, hi, &b.qs) as f32;
    }
    sumf
}

/// Q5_1 · Q8_1.
pub fn q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let (lo, hi) = fives(&a.qs, a.qh, 0);
        let sumi = block_sum(lo, hi, &b.qs);
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
    }
    sumf
}

/// Q8_0 · Q8_0.
pub fn q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        // SAFETY: NEON is baseline; a block holds 32 quants.
        let (lo, hi) = unsafe { (vld1q_s8(a.qs.as_ptr()), vld1q_s8(a.qs.as_ptr().add(16))) };
        sumf += block_sum(lo, hi, &b.qs) as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sumf
}

/// The 16 products of `w` and `y` with lanes `l` and `l + 8` added: the per-lane pairing of
/// `dot_scalar::lanes16`. Exact in i16 for every K-quant (|w| ≤ 32, so |pair| ≤ 2 · 32 · 128).
#[inline(always)]
fn pairs16(w: int8x16_t, y: int8x16_t) -> int16x8_t {
    // SAFETY: NEON is baseline; registers only.
    unsafe { vaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(y)), vmull_high_s8(w, y)) }
}

/// `aux[l] += scale · pairs[l]` for the eight lanes, `aux` split in halves (lanes 0-3, 4-7).
#[inline(always)]
fn scale_add(aux: &mut [int32x4_t; 2], pairs: int16x8_t, scale: i16) {
    // SAFETY: NEON is baseline; registers only.
    unsafe {
        aux[0] = vmlal_n_s16(aux[0], vget_low_s16(pairs), scale);
        aux[1] = vmlal_high_n_s16(aux[1], pairs, scale);
    }
}

/// 16 activation quants of a Q8_K block, starting at `16 · g`.
#[inline(always)]
fn q8k_group(b: &BlockQ8K, g: usize) -> int8x16_t {
    assert!(g < QK_K / 16);
    // SAFETY: NEON is baseline; group g < 16 lies inside the 256 quants.
    unsafe { vld1q_s8(b.qs.as_ptr().add(16 * g)) }
}

/// `sums[l] += d · aux[l]` for the eight lanes: the scalar reference's per-block f32 step
/// (a rounded conversion, a multiply, an add; no fused multiply-add).
#[inline(always)]
fn scale_sums(sums: &mut [float32x4_t; 2], aux: [int32x4_t; 2], d: f32) {
    // SAFETY: NEON is baseline; registers only.
    unsafe {
        for (s, a) in sums.iter_mut().zip(aux) {
            *s = vaddq_f32(*s, vmulq_n_f32(vcvtq_f32_s32(a), d));
        }
    }
}

/// `init + sums[0] + … + sums[7]`, left to right as the scalar reference folds its lanes.
#[inline(always)]
fn fold_sums(init: f32, sums: [float32x4_t; 2]) -> f32 {
    let mut lanes = [0f32; 8];
    // SAFETY: NEON is baseline; `lanes` holds eight floats.
    unsafe {
        vst1q_f32(lanes.as_mut_ptr(), sums[0]);
        vst1q_f32(lanes.as_mut_ptr().add(4), sums[1]);
    }
    lanes.iter().fold(init, |acc, &s| acc + s)
}

/// The 256 quants of a Q4_K block in weight order (vector `v` holds weights `16 v ..`): each
/// 32-byte chunk gives 64 weights, low nibbles first.
#[inline(always)]
fn q4k_quants(a: &BlockQ4K) -> [int8x16_t; 16] {
    // SAFETY: NEON is baseline; every load lies inside the 128 bytes of `qs`.
    std::array::from_fn(|v| unsafe {
        let bytes = vld1q_u8(a.qs.as_ptr().add(32 * (v / 4) + 16 * (v % 2)));
        let q = if v % 4 < 2 { vandq_u8(bytes, vdupq_n_u8(0x0F)) } else { vshrq_n_u8::<4>(bytes) };
        vreinterpretq_s8_u8(q)
    })
}

/// The 256 quants of a Q5_K block: the Q4_K nibbles with bit `v / 2` of `qh` (for vector `v`)
/// as bit 4.
#[inline(always)]
fn q5k_quants(a: &BlockQ5K) -> [int8x16_t; 16] {
    // SAFETY: NEON is baseline; every load lies inside `qs` (128 bytes) and `qh` (32 bytes).
    std::array::from_fn(|v| unsafe {
        let bytes = vld1q_u8(a.qs.as_ptr().add(32 * (v / 4) + 16 * (v % 2)));
        let low = if v % 4 < 2 { vandq_u8(bytes, vdupq_n_u8(0x0F)) } else { vshrq_n_u8::<4>(bytes) };
        let qh = vld1q_u8(a.qh.as_ptr().add(16 * (v % 2)));
        let high = vandq_u8(vtstq_u8(qh, vdupq_n_u8(1 << (v / 2))), vdupq_n_u8(0x10));
        vreinterpretq_s8_u8(vorrq_u8(low, high))
    })
}

/// The 256 quants of a Q6_K block minus 32, in weight order: in each 128-weight half, runs of
/// 32 take the low nibbles of `ql[0..32]`, of `ql[32..64]`, then the high nibbles of each, with
/// successive bit pairs of `qh` as bits 4-5.
#[inline(always)]
fn q6k_quants(a: &BlockQ6K) -> [int8x16_t; 16] {
    // SAFETY: NEON is baseline; every load lies inside `ql` (128 bytes) and `qh` (64 bytes).
    std::array::from_fn(|v| unsafe {
        let (h, k) = (v / 8, v % 8);
        // Vector k of a half: run k / 2, its 16-weight part k % 2.
        let ql = vld1q_u8(a.ql.as_ptr().add(64 * h + 32 * ((k / 2) % 2) + 16 * (k % 2)));
        let qh = vld1q_u8(a.qh.as_ptr().add(32 * h + 16 * (k % 2)));
        let low = if k < 4 { vandq_u8(ql, vdupq_n_u8(0x0F)) } else { vshrq_n_u8::<4>(ql) };
        // Bits 2·(k / 2) and up of qh, moved to bits 4-5.
        let high = match k / 2 {
            0 => vshlq_n_u8::<4>(qh),
            1 => vshlq_n_u8::<2>(qh),
            2 => qh,
            _ => vshrq_n_u8::<2>(qh),
        };
        let q = vorrq_u8(low, vandq_u8(high, vdupq_n_u8(0x30)));
        vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32))
    })
}

/// Q4_K / Q5_K · Q8_K for `R` activation rows, given the quant unpacker: each weight block is
/// unpacked once, and every row gets the scalar reference's exact integer lanes and f32 steps
/// (`dot_scalar::k4_accumulate`), so its bits.
#[inline(always)]
fn k4_rows<B, const R: usize>(
    x: &[B],
    ys: [&[BlockQ8K]; R],
    parts: impl Fn(&B) -> ([int8x16_t; 16], &[u8; 12], F16Le, F16Le),
) -> [f32; R] {
    // SAFETY: NEON is baseline; the only memory read is the eight `mins` bytes and the sixteen
    // i16 `bsums` of each activation block.
    unsafe {
        let mut sums = [[vdupq_n_f32(0.0); 2]; R];
        let mut sumf = [0f32; R];
        for (i, a) in x.iter().enumerate() {
            let (q, packed, d, dmin) = parts(a);
            let (scales, mins) = k4_unpack(packed);
            let mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins.as_ptr())));
            let (d, dmin) = (d.to_f32(), dmin.to_f32());
            for r in 0..R {
                let b = &ys[r][i];
                let mut aux = [vdupq_n_s32(0); 2];
                // Sub-block s (32 weights, vectors 2s and 2s + 1) shares scale s; its two pair
                // sums add exactly in i16 (|q| ≤ 31).
                for s in 0..8 {
                    let pairs = vaddq_s16(
                        pairs16(q[2 * s], q8k_group(b, 2 * s)),
                        pairs16(q[2 * s + 1], q8k_group(b, 2 * s + 1)),
                    );
                    scale_add(&mut aux, pairs, scales[s] as i16);
                }
                // Σ_j bsum(j) · mins[j / 2], adjacent sums added first (exact: |bsum| ≤ 2048).
                let p = b.bsums.as_ptr().cast::<i16>();
                let pair = vpaddq_s16(vld1q_s16(p), vld1q_s16(p.add(8)));
                let summ = vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(pair), vget_low_s16(mins)), pair, mins));
                scale_sums(&mut sums[r], aux, d * b.d());
                sumf[r] -= dmin * b.d() * summ as f32;
            }
        }
        std::array::from_fn(|r| fold_sums(sumf[r], sums[r]))
    }
}

/// Q4_K · Q8_K for `R` activation rows, each with the bits of `dot_scalar::q4k_q8k`.
pub fn q4k_q8k_rows<const R: usize>(x: &[BlockQ4K], ys: [&[BlockQ8K]; R]) -> [f32; R] {
    k4_rows(x, ys, |a| (q4k_quants(a), &a.scales, a.d, a.dmin))
}

/// Q5_K · Q8_K for `R` activation rows, each with the bits of `dot_scalar::q5k_q8k`.
pub fn q5k_q8k_rows<const R: usize>(x: &[BlockQ5K], ys: [&[BlockQ8K]; R]) -> [f32; R] {
    k4_rows(x, ys, |a| (q5k_quants(a), &a.scales, a.d, a.dmin))
}

/// Q6_K · Q8_K for `R` activation rows, each with the bits of `dot_scalar::q6k_q8k`.
pub fn q6k_q8k_rows<const R: usize>(x: &[BlockQ6K], ys: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY: NEON is baseline; registers only (the loads are in the helpers).
    unsafe {
        let mut sums = [[vdupq_n_f32(0.0); 2]; R];
        for (i, a) in x.iter().enumerate() {
            let q = q6k_quants(a);
            let d = a.d.to_f32();
            for r in 0..R {
                let b = &ys[r][i];
                let mut aux = [vdupq_n_s32(0); 2];
                for (g, &qg) in q.iter().enumerate() {
                    scale_add(&mut aux, pairs16(qg, q8k_group(b, g)), a.scales[g] as i16);
                }
                scale_sums(&mut sums[r], aux, d * b.d());
            }
        }
        std::array::from_fn(|r| fold_sums(0.0, sums[r]))
    }
}
