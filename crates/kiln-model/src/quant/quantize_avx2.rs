//! AVX2 quantization of activation rows to Q8_0, Q8_1, Q8_K and F16 (ggml's block layouts),
//! producing the same bytes as the scalar `quantize` module, and so as ggml's
//! `quantize_row_*_ref`, for every input: the same magnitude maximum (on sign-cleared bit
//! patterns), the same f32 products, and the same rounding tricks done lane-wise.
//!
//! Every function here is `unsafe`: callers must have checked that the CPU has AVX2, FMA and
//! F16C (see `super::simd_available`).

use std::arch::x86_64::*;

use super::blocks::*;
use super::quantize::Q8Rounding;

/// Sign-cleared bit patterns of 8 floats: their magnitudes, ordered as unsigned integers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_bits(v: __m256) -> __m256i {
    _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fff_ffff))
}

/// The largest of 8 u32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hmax_epu32(v: __m256i) -> u32 {
    let m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let m = _mm_max_epu32(m, _mm_unpackhi_epi64(m, m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0b01));
    _mm_cvtsi128_si32(m) as u32
}

/// `v` as a stored half, rounded to nearest even by the F16C unit (as `F16Le::from_f32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f2h(v: f32) -> F16Le {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set1_ps(v));
    F16Le((_mm_extract_epi16::<0>(h) as u16).to_le_bytes())
}

/// Sum of 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// `quantize::nearest_int` on 8 lanes: add 1.5 * 2^23, keep the low mantissa bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nearest_int(v: __m256) -> __m256i {
    let bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12_582_912.0)));
    _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)), _mm256_set1_epi32(0x0040_0000))
}

/// `quantize::round_away` on 8 lanes: C's `roundf`, as integers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_away(y: __m256) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let two23 = _mm256_set1_ps(8_388_608.0);
    let a = _mm256_andnot_ps(sign, y);
    let r = _mm256_sub_ps(_mm256_add_ps(a, two23), two23);
    let tie = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_sub_ps(a, r), _mm256_set1_ps(0.5));
    let r = _mm256_add_ps(r, _mm256_and_ps(tie, _mm256_set1_ps(1.0)));
    nearest_int(_mm256_or_ps(r, _mm256_and_ps(y, sign)))
}

/// Packs 32 i32 lanes (each in i8 range) into 32 bytes, in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_i8(q: [__m256i; 4], out: *mut i8) {
    // packs work within 128-bit halves, leaving 4-lane groups in the order 0 2 4 6 1 3 5 7 ...
    let lo = _mm256_packs_epi32(q[0], q[1]);
    let hi = _mm256_packs_epi32(q[2], q[3]);
    let bytes = _mm256_packs_epi16(lo, hi);
    let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out.cast(), ordered);
}

/// The Q8 scale of a 32-block and its rounded quants (also returned as i32 lanes for sums),
/// by `rounding`'s rule (see [`Q8Rounding`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: &[f32], qs: &mut [i8; QK], rounding: Q8Rounding) -> (f32, [__m256i; 4]) {
    let p = x.as_ptr();
    let v = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
    let m = _mm256_max_epu32(
        _mm256_max_epu32(abs_bits(v[0]), abs_bits(v[1])),
        _mm256_max_epu32(abs_bits(v[2]), abs_bits(v[3])),
    );
    let (d, mult) = rounding.scale(f32::from_bits(hmax_epu32(m)));
    let id = _mm256_set1_ps(mult);
    let q: [__m256i; 4] = std::array::from_fn(|i| {
        let y = _mm256_mul_ps(v[i], id);
        match rounding {
            Q8Rounding::Reference => round_away(y),
            Q8Rounding::Runtime => {
                _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y))
            }
        }
    });
    pack_i8(q, qs.as_mut_ptr());
    (d, q)
}

/// [`super::quantize::q8_0`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0(src: &[f32], dst: &mut [BlockQ8_0], rounding: Q8Rounding) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (d, _) = q8_block(x, &mut b.qs, rounding);
        b.d = f2h(d);
    }
}

/// [`super::quantize::q8_1`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_1(src: &[f32], dst: &mut [BlockQ8_1], rounding: Q8Rounding) {
    for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
        let (d, q) = q8_block(x, &mut b.qs, rounding);
        let sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        b.d = f2h(d);
        b.s = f2h(sum as f32 * d);
    }
}

/// `quantize_row_q8_K_ref`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8k(src: &[f32], dst: &mut [BlockQ8K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let p = x.as_ptr();
        let mut m = _mm256_setzero_si256();
        for i in 0..QK_K / 8 {
            m = _mm256_max_epu32(m, abs_bits(_mm256_loadu_ps(p.add(8 * i))));
        }
        let amax = f32::from_bits(hmax_epu32(m));
        if amax == 0.0 {
            b.d = 0f32.to_le_bytes();
            b.qs = [0; QK_K];
            b.bsums = [[0; 2]; QK_K / 16];
            continue;
        }
        // The first value with that magnitude: ggml's signed maximum.
        let target = _mm256_set1_epi32(amax.to_bits() as i32);
        let mut first = 0;
        for i in 0..QK_K / 8 {
            let hit = _mm256_cmpeq_epi32(abs_bits(_mm256_loadu_ps(p.add(8 * i))), target);
            let mask = _mm256_movemask_ps(_mm256_castsi256_ps(hit));
            if mask != 0 {
                first = 8 * i + mask.trailing_zeros() as usize;
                break;
            }
        }
        let iscale = -127.0 / x[first];
        let is = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        let bias = _mm256_set1_epi8(-128);
        for c in 0..QK_K / 32 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, qk) in q.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(p.add(32 * c + 8 * k));
                *qk = _mm256_min_epi32(nearest_int(_mm256_mul_ps(is, v)), top);
            }
            let out = b.qs.as_mut_ptr().add(32 * c);
            pack_i8(q, out);
            // Sums of each 16 quants: biased to unsigned, summed in 8s by `sad`, unbiased.
            let packed = _mm256_xor_si256(_mm256_loadu_si256(out.cast()), bias);
            let sad = _mm256_sad_epu8(packed, _mm256_setzero_si256());
            let pairs = _mm256_add_epi64(sad, _mm256_srli_si256::<8>(sad));
            let s0 = _mm256_extract_epi64::<0>(pairs) as i32 - 16 * 128;
            let s1 = _mm256_extract_epi64::<2>(pairs) as i32 - 16 * 128;
            b.bsums[2 * c] = (s0 as i16).to_le_bytes();
            b.bsums[2 * c + 1] = (s1 as i16).to_le_bytes();
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

/// f32 → F16, round to nearest even, by the F16C unit.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16(src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
        _mm_storeu_si128(dst.as_mut_ptr().add(2 * i).cast(), h);
        i += 8;
    }
    for j in i..n {
        dst[2 * j..2 * j + 2].copy_from_slice(&F16Le::from_f32(src[j]).0);
    }
}
