//! AVX-512 VNNI dot products (`vpdpbusd`: 64 unsigned×signed byte products summed into 16 i32
//! lanes in one instruction), two 32-weight blocks per register. Same block layouts as
//! `dot_avx2.rs`; tested against the scalar reference like every kernel.

use super::blocks::{BlockQ4_1, BlockQ8_1};
use std::arch::x86_64::*;

/// Q4_1 · Q8_1, two blocks per step: `d_x d_y Σ q_x q_y + m_x s_y` per block.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let n = x.len().min(y.len());
    let low4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm512_setzero_ps();
    let mut offsets = _mm_setzero_ps();
    let mut i = 0;
    while i + 2 <= n {
        let (a0, a1, b0, b1) = (&x[i], &x[i + 1], &y[i], &y[i + 1]);
        // Weights: [a0 low nibbles | a1 low | a0 high | a1 high], 16 bytes each.
        let packed = _mm256_loadu2_m128i(a1.qs.as_ptr().cast(), a0.qs.as_ptr().cast());
        let lo = _mm256_and_si256(packed, low4);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low4);
        let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        // Activations in the same order: [b0 0..16 | b1 0..16 | b0 16..32 | b1 16..32].
        let both = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(b0.qs.as_ptr().cast())),
            _mm256_loadu_si256(b1.qs.as_ptr().cast()),
        );
        let v = _mm512_shuffle_i64x2::<0b11_01_10_00>(both, both);
        let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, v);
        // (d0, m0, d1, m1) × (e0, s0, e1, s1): block scales and offset terms together.
        let wx = _mm_cvtph_ps(_mm_set_epi32(0, 0, read_u32(&a1.d.0, &a1.m.0), read_u32(&a0.d.0, &a0.m.0)));
        let wy = _mm_cvtph_ps(_mm_set_epi32(0, 0, read_u32(&b1.d.0, &b1.s.0), read_u32(&b0.d.0, &b0.s.0)));
        let prod = _mm_mul_ps(wx, wy);
        let d0 = _mm512_set1_ps(_mm_cvtss_f32(prod));
        let d1 = _mm512_set1_ps(_mm_cvtss_f32(_mm_movehl_ps(prod, prod)));
        let scale = _mm512_mask_blend_ps(0xF0F0, d0, d1);
        acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums), acc);
        offsets = _mm_add_ps(offsets, prod);
        i += 2;
    }
    // Lanes 1 and 3 of `offsets` hold Σ m_x s_y.
    let off = _mm_add_ps(offsets, _mm_movehl_ps(offsets, offsets));
    let mut total = _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(_mm_movehdup_ps(off));
    if i < n {
        total += super::dot_avx2::q4_1_q8_1(&x[i..n], &y[i..n]);
    }
    total
}

#[inline(always)]
unsafe fn read_u32(d: &[u8; 2], m: &[u8; 2]) -> i32 {
    i32::from_le_bytes([d[0], d[1], m[0], m[1]])
}
