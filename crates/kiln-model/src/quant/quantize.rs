//! Quantization of f32 rows into ggml formats, reproducing ggml's reference quantizers
//! (`quantize_row_*_ref` in ggml-quants.c) bit for bit, and the F16 / BF16 conversions of
//! ggml-impl.h. The activation formats (Q8_0, Q8_1, Q8_K) run once per matrix-vector product,
//! so their loops are written to auto-vectorise while keeping ggml's exact rounding.

use super::blocks::*;

/// f32 → F16, round to nearest even (`GGML_FP32_TO_FP16`).
pub fn f16(src: &[f32], dst: &mut [u8]) {
    for (&x, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&F16Le::from_f32(x).0);
    }
}

/// f32 → BF16 as ggml's `ggml_compute_fp32_to_bf16`: NaN becomes a quiet NaN, everything else
/// rounds to nearest even.
pub fn bf16(src: &[f32], dst: &mut [u8]) {
    for (&x, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&bf16_bits(x).to_le_bytes());
    }
}

/// The BF16 bits of `x`, as ggml rounds.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        ((u >> 16) | 64) as u16
    } else {
        ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
    }
}

/// f32 → F32 little-endian bytes.
pub fn f32(src: &[f32], dst: &mut [u8]) {
    for (&x, o) in src.iter().zip(dst.chunks_exact_mut(4)) {
        o.copy_from_slice(&x.to_le_bytes());
    }
}

/// C's `roundf` (ties away from zero) for |x| < 2^22, in f32 and without a libm call or a
/// saturating conversion, so loops over it vectorise. Adding and subtracting 2^23 rounds |x| to
/// nearest even exactly; that differs from `roundf` only on an exact tie rounded down, which
/// `|x| - r == 0.5` detects.
#[inline(always)]
pub(super) fn round_away(x: f32) -> f32 {
    let a = x.abs();
    let r = (a + 8_388_608.0) - 8_388_608.0;
    let r = if a - r == 0.5 { r + 1.0 } else { r };
    r.copysign(x)
}

/// ggml's `nearest_int`: round to nearest, ties to even, via the 1.5 * 2^23 trick, valid for
/// |x| <= 2^22. Also the conversion of `round_away`'s integral result to an integer.
#[inline(always)]
pub(super) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The value of largest magnitude in `x` (the first one on ties) and its magnitude, as the
/// `if (amax < fabsf(v))` loops of ggml find it.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// The smallest and largest value in `x` (ggml's Q4_1 / Q5_1 loops).
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// The largest magnitude in `x`, as ggml's `MAX(amax, fabsf(v))` and `if (ax > amax)` loops
/// find it (for inputs without NaN). For non-NaN floats the order of magnitudes is the order of the sign-cleared
/// bit patterns as integers, and an integer max reduction vectorises.
#[inline(always)]
pub(super) fn absmax(x: &[f32]) -> f32 {
    f32::from_bits(x.iter().map(|v| v.to_bits() & 0x7fff_ffff).fold(0, u32::max))
}

/// `quantize_row_q4_0_ref`.
pub fn q4_0(src: &[f32], dst: &mut [BlockQ4_0]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (max, _) = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Le::from_f32(d);
        for j in 0..QK / 2 {
            // (int8_t)(x + 8.5f) truncates toward zero; MIN(15, ...) clamps the top.
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// `quantize_row_q4_1_ref`.
pub fn q4_1(src: &[f32], dst: &mut [BlockQ4_1]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Le::from_f32(d);
        b.m = F16Le::from_f32(min);
        for j in 0..QK / 2 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// `quantize_row_q5_0_ref`.
pub fn q5_0(src: &[f32], dst: &mut [BlockQ5_0]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (max, _) = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Le::from_f32(d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + QK / 2] * id + 16.5) as i8).min(31) as u8;
            b.qs[j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// `quantize_row_q5_1_ref`.
pub fn q5_1(src: &[f32], dst: &mut [BlockQ5_1]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = F16Le::from_f32(d);
        b.m = F16Le::from_f32(min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            // ggml converts straight to uint8_t here, without a clamp.
            let q0 = ((x[j] - min) * id + 0.5) as u8;
            let q1 = ((x[j + QK / 2] - min) * id + 0.5) as u8;
            b.qs[j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// How a Q8 activation block is rounded. ggml has two: the `_ref` quantizers (multiplier
/// `1 / (amax / 127)`, ties away from zero), which file writers use, and the x86 run-time ones
/// (multiplier `127 / amax`, ties to even), which llama.cpp multiplies activations with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Q8Rounding {
    /// `quantize_row_q8_0_ref` / `_q8_1_ref`.
    Reference,
    /// ggml's x86 `quantize_row_q8_0` / `_q8_1`.
    Runtime,
}

impl Q8Rounding {
    /// `(d, multiplier)` for a block whose largest magnitude is `amax`.
    #[inline(always)]
    pub(super) fn scale(self, amax: f32) -> (f32, f32) {
        let d = amax / 127.0;
        match self {
            Q8Rounding::Reference => (d, if d != 0.0 { 1.0 / d } else { 0.0 }),
            Q8Rounding::Runtime => (d, if amax != 0.0 { 127.0 / amax } else { 0.0 }),
        }
    }
}

/// The Q8 scale of a 32-block and the rounded quants; shared by Q8_0 and Q8_1.
#[inline(always)]
fn q8_block(x: &[f32], qs: &mut [i8; QK], rounding: Q8Rounding) -> f32 {
    let (d, id) = rounding.scale(absmax(x));
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = match rounding {
            Q8Rounding::Reference => nearest_int(round_away(v * id)) as i8,
            Q8Rounding::Runtime => (v * id).round_ties_even().clamp(-128.0, 127.0) as i8,
        };
    }
    d
}

/// Q8_0 blocks (`quantize_row_q8_0_ref` with [`Q8Rounding::Reference`]).
pub fn q8_0(src: &[f32], dst: &mut [BlockQ8_0], rounding: Q8Rounding) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let d = q8_block(x, &mut b.qs, rounding);
        b.d = F16Le::from_f32(d);
    }
}

/// Q8_1 blocks: Q8_0 plus `d * sum(qs)` (`quantize_row_q8_1_ref` with
/// [`Q8Rounding::Reference`]).
pub fn q8_1(src: &[f32], dst: &mut [BlockQ8_1], rounding: Q8Rounding) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let d = q8_block(x, &mut b.qs, rounding);
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        b.d = F16Le::from_f32(d);
        b.s = F16Le::from_f32(sum as f32 * d);
    }
}

/// `quantize_row_q8_K_ref`: scale `-max / 127` from the value of largest magnitude (the first
/// one on ties), quants rounded to nearest even and clamped at 127, and the sum of each 16
/// quants. An all-zero block gets zero sums too (ggml leaves them unwritten).
pub fn q8k(src: &[f32], dst: &mut [BlockQ8K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let amax = absmax(x);
        if amax == 0.0 {
            b.d = 0f32.to_le_bytes();
            b.qs = [0; QK_K];
            b.bsums = [[0; 2]; QK_K / 16];
            continue;
        }
        let max = first_with_magnitude(x, amax);
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            let sum: i32 = q.iter().map(|&v| v as i32).sum();
            *s = (sum as i16).to_le_bytes();
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

/// The first value in `x` whose magnitude is `amax` (which `absmax` returned): ggml's signed
/// maximum, found in two vectorisable passes instead of one branchy one.
#[inline(always)]
fn first_with_magnitude(x: &[f32], amax: f32) -> f32 {
    let bits = amax.to_bits();
    x.iter().copied().find(|v| v.to_bits() & 0x7fff_ffff == bits).unwrap_or(0.0)
}

/// `round_away`, for the tests.
#[cfg(test)]
pub(super) fn round_away_for_test(x: f32) -> i32 {
    nearest_int(round_away(x))
}

/// `nearest_int`, for the tests.
#[cfg(test)]
pub(super) fn nearest_int_for_test(x: f32) -> i32 {
    nearest_int(x)
}
