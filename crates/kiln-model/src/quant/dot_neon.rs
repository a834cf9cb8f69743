//! NEON dot products of one weight row with one activation row, for the block formats most
//! GGUF files use (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the integer core of Q4_K, Q5_K, Q6_K). NEON is part of
//! every AArch64 CPU, so these run wherever kiln is built for AArch64 (unless
//! `KILN_FORCE_SCALAR=1`). Each integer sum is exact and the float steps are the scalar
//! reference's, in its order, so the results have the reference's bits (the `quant` tests
//! compare them on this target).

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
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
        (
            vsubq_s8(vorrq_s8(lo, high(qh[0], qh[1])), off),
            vsubq_s8(vorrq_s8(hi, high(qh[2], qh[3])), off),
        )
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

/// `aux[l % 8] += scale · q[l] · q8[l]` for 16 weights (as `dot_scalar::lanes16`, exact):
/// products of lanes `l` and `l + 8` fit in i16 together for every K-quant (|q| ≤ 32).
#[inline(always)]
pub fn lanes16(aux: &mut [i32; 8], scale: i32, q: &[i8], q8: &[i8]) {
    assert!(q.len() >= 16 && q8.len() >= 16);
    // SAFETY: NEON is baseline; both slices hold 16 bytes and `aux` 8 lanes.
    unsafe {
        let (w, y) = (vld1q_s8(q.as_ptr()), vld1q_s8(q8.as_ptr()));
        let pairs = vaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(y)), vmull_high_s8(w, y));
        let scale = scale as i16;
        let lo = vmlal_n_s16(vld1q_s32(aux.as_ptr()), vget_low_s16(pairs), scale);
        let hi = vmlal_high_n_s16(vld1q_s32(aux.as_ptr().add(4)), pairs, scale);
        vst1q_s32(aux.as_mut_ptr(), lo);
        vst1q_s32(aux.as_mut_ptr().add(4), hi);
    }
}
