//! NEON quantization of activation rows to Q8_0 and Q8_1 with ggml's run-time rounding
//! ([`Q8Rounding::Runtime`]: multiplier `127 / amax`, ties to even), giving the scalar
//! `quantize` module's bytes for every input: the magnitude maximum is taken on sign-cleared
//! bit patterns as there, the scale and multiplier are the scalar ones, each product is one f32
//! multiply, and `vcvtnq` (ties to even, NaN to 0, saturating) followed by saturating narrows is
//! the scalar `round_ties_even().clamp(-128.0, 127.0) as i8`.

use std::arch::aarch64::*;

use super::blocks::*;
use super::quantize::Q8Rounding;

/// Quantizes 32 floats into `qs`; returns the scale `d`.
#[inline(always)]
fn q8_block(x: &[f32], qs: &mut [i8; QK]) -> f32 {
    assert!(x.len() >= QK);
    // SAFETY: NEON is part of the AArch64 baseline; `x` holds 32 floats (checked above) and
    // `qs` 32 bytes.
    unsafe {
        let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(x.as_ptr().add(4 * i)));
        let mask = vdupq_n_u32(0x7fff_ffff);
        let mut max = vdupq_n_u32(0);
        for &r in &v {
            max = vmaxq_u32(max, vandq_u32(vreinterpretq_u32_f32(r), mask));
        }
        let (d, id) = Q8Rounding::Runtime.scale(f32::from_bits(vmaxvq_u32(max)));
        let q32 = |r: float32x4_t| vqmovn_s32(vcvtnq_s32_f32(vmulq_n_f32(r, id)));
        for k in 0..2 {
            let [a, b, c, e] = [0, 1, 2, 3].map(|j| q32(v[4 * k + j]));
            let q = vcombine_s8(vqmovn_s16(vcombine_s16(a, b)), vqmovn_s16(vcombine_s16(c, e)));
            vst1q_s8(qs.as_mut_ptr().add(16 * k), q);
        }
        d
    }
}

/// Q8_0 blocks, as `quantize::q8_0(src, dst, Q8Rounding::Runtime)`.
pub fn q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        b.d = F16Le::from_f32(q8_block(x, &mut b.qs));
    }
}

/// Q8_1 blocks, as `quantize::q8_1(src, dst, Q8Rounding::Runtime)`: the quant sum is exact
/// (32 · 128 fits the i16 of a widening add across lanes).
pub fn q8_1(src: &[f32], dst: &mut [BlockQ8_1]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let d = q8_block(x, &mut b.qs);
        // SAFETY: NEON is baseline; a block holds 32 quants.
        let sum =
            unsafe { vaddlvq_s8(vld1q_s8(b.qs.as_ptr())) as i32 + vaddlvq_s8(vld1q_s8(b.qs.as_ptr().add(16))) as i32 };
        b.d = F16Le::from_f32(d);
        b.s = F16Le::from_f32(sum as f32 * d);
    }
}

/// Q8_K blocks, as `quantize::q8k` (ggml's `quantize_row_q8_K_ref`): the same magnitude
/// maximum on sign-cleared bits, the first value of that magnitude as the signed maximum, the
/// scalar `iscale`, and its `nearest_int` done with the same f32 add and bit masking, so every
/// lane — NaN and infinities included — gets the scalar integer; truncating narrows are the
/// scalar `as i8`.
pub fn q8k(src: &[f32], dst: &mut [BlockQ8K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        // SAFETY: NEON is baseline; `x` holds QK_K floats and `b.qs` QK_K bytes, and every
        // load and store below stays inside them.
        unsafe {
            let p = x.as_ptr();
            let mask = vdupq_n_u32(0x7fff_ffff);
            let abs_bits = |i: usize| vandq_u32(vreinterpretq_u32_f32(vld1q_f32(p.add(4 * i))), mask);
            let mut m = vdupq_n_u32(0);
            for i in 0..QK_K / 4 {
                m = vmaxq_u32(m, abs_bits(i));
            }
            let amax = vmaxvq_u32(m);
            if f32::from_bits(amax) == 0.0 {
                b.d = 0f32.to_le_bytes();
                b.qs = [0; QK_K];
                b.bsums = [[0; 2]; QK_K / 16];
                continue;
            }
            // The first value with that magnitude: ggml's signed maximum.
            let target = vdupq_n_u32(amax);
            let first = (0..QK_K / 4)
                .find(|&i| vmaxvq_u32(vceqq_u32(abs_bits(i), target)) != 0)
                .and_then(|i| {
                    x[4 * i..4 * i + 4].iter().position(|v| v.to_bits() & 0x7fff_ffff == amax).map(|k| 4 * i + k)
                })
                .unwrap_or(0);
            let iscale = -127.0 / x[first];
            let is = vdupq_n_f32(iscale);
            let magic = vdupq_n_f32(12_582_912.0);
            let nearest = |i: usize| {
                let v = vaddq_f32(vmulq_f32(is, vld1q_f32(p.add(4 * i))), magic);
                let q =
                    vsubq_s32(vandq_s32(vreinterpretq_s32_f32(v), vdupq_n_s32(0x007f_ffff)), vdupq_n_s32(0x0040_0000));
                vmovn_s32(vminq_s32(q, vdupq_n_s32(127)))
            };
            for g in 0..QK_K / 16 {
                let q = vcombine_s8(
                    vmovn_s16(vcombine_s16(nearest(4 * g), nearest(4 * g + 1))),
                    vmovn_s16(vcombine_s16(nearest(4 * g + 2), nearest(4 * g + 3))),
                );
                vst1q_s8(b.qs.as_mut_ptr().add(16 * g), q);
                // 16 quants of at most 128 in magnitude: the i16 sum is exact.
                b.bsums[g] = vaddlvq_s8(q).to_le_bytes();
            }
            b.d = (1.0 / iscale).to_le_bytes();
        }
    }
}
