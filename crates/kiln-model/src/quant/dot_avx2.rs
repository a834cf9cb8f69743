//! AVX2 + FMA dot products for the hot weight formats (ggml's block layouts, the technique of
//! ggml-cpu/arch/x86/quants.c): Q4_0, Q5_0, Q8_0 · Q8_0, Q4_1 · Q8_1, Q4_K, Q6_K · Q8_K, and
//! F32 / F16 rows.
//!
//! The integer part of every block is exact for all inputs, including i8 activations of -128:
//! unsigned quants meet signed activations in `maddubs` (which cannot saturate at these
//! magnitudes) and the zero-point is subtracted as `offset * sum(activations)`; Q8_0 · Q8_0
//! widens to i16 first. Only the f32 scaling is reordered: per-lane partial sums are scaled and
//! accumulated in vector registers, so results differ from `dot_scalar` by float rounding only.
//!
//! Every function here is `unsafe`: callers must have checked that the CPU has AVX2, FMA and
//! F16C (see `super::simd_available`).

use std::arch::x86_64::*;

use super::blocks::*;

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// A stored half as f32 in all 8 lanes, converted by the F16C unit. (Broadcasting the 16 bits
/// first also keeps the compiler from inserting them into a live register, which would chain
/// every block's scale conversion to the previous block's accumulation.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn h2f8(h: F16Le) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(u16::from_le_bytes(h.0) as i16))
}

/// A stored half as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn h2f(h: F16Le) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(u16::from_le_bytes(h.0) as i16)))
}

/// Halves `i .. i + 8` of the row at `p`, widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16x8(p: *const u8, i: usize) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast()))
}

/// 16 i8 at `p`, sign-extended to i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen16(p: *const i8) -> __m256i {
    _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()))
}

/// 32 unaligned bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load32<T>(p: *const T) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// The 32 nibbles of a 16-byte Q4 block as bytes 0..16: low nibbles in lanes 0..16 (weights
/// 0..16), high nibbles in lanes 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    let b = _mm_loadu_si128(qs.as_ptr().cast());
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0xF))
}

/// 0xFF in byte j where bit j of `bits` is set, 0 elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    // Byte j takes source byte j / 8, then keeps only bit j % 8 by or-ing in all other bits.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
    );
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
}

/// Per-lane i32 sums of `sum_j (q_j - offset) * v_j` over 32 unsigned quants `q` (< 64) and
/// i8 activations `v`; exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_u8_i8_offset(q: __m256i, v: __m256i, offset: i8) -> __m256i {
    let p = _mm256_maddubs_epi16(q, v);
    let s = _mm256_maddubs_epi16(_mm256_set1_epi8(offset), v);
    _mm256_madd_epi16(_mm256_sub_epi16(p, s), _mm256_set1_epi16(1))
}

/// Per-lane i32 sums of `sum_j q_j * v_j` over 32 unsigned quants `q` (< 128) and i8 `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_u8_i8(q: __m256i, v: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, v), _mm256_set1_epi16(1))
}

/// f32 · f32 rows (little-endian bytes).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` and `y` must have the same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f32(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len().min(y.len()) / 4;
    let (px, py) = (x.as_ptr().cast::<f32>(), y.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            *a = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(o)), _mm256_loadu_ps(py.add(o)), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(v);
    while i < n {
        sum += px.add(i).read_unaligned() * py.add(i).read_unaligned();
        i += 1;
    }
    sum
}

/// F16 · F16 rows.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` and `y` must have the same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len().min(y.len()) / 2;
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            *a = _mm256_fmadd_ps(load_f16x8(px, o), load_f16x8(py, o), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load_f16x8(px, i), load_f16x8(py, i), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(v);
    while i < n {
        let a = F16Le([*px.add(2 * i), *px.add(2 * i + 1)]);
        let b = F16Le([*py.add(2 * i), *py.add(2 * i + 1)]);
        sum += h2f(a) * h2f(b);
        i += 1;
    }
    sum
}

/// Sums `d * sums` over paired blocks, where `$body` computes `(d, sums)` (two `__m256`) from
/// one weight block `$a` and one activation block `$b`; alternates two accumulators so that
/// consecutive blocks do not wait on each other's FMAs. A macro rather than a closure so that
/// the body is compiled with the caller's target features.
macro_rules! sum_blocks {
    ($x:expr, $y:expr, |$a:ident, $b:ident| $body:expr) => {{
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut xs, mut ys) = ($x.chunks_exact(2), $y.chunks_exact(2));
        for (xp, yp) in (&mut xs).zip(&mut ys) {
            let ($a, $b) = (&xp[0], &yp[0]);
            let (d, v) = $body;
            acc0 = _mm256_fmadd_ps(d, v, acc0);
            let ($a, $b) = (&xp[1], &yp[1]);
            let (d, v) = $body;
            acc1 = _mm256_fmadd_ps(d, v, acc1);
        }
        if let (Some($a), Some($b)) = (xs.remainder().first(), ys.remainder().first()) {
            let (d, v) = $body;
            acc0 = _mm256_fmadd_ps(d, v, acc0);
        }
        hsum_ps(_mm256_add_ps(acc0, acc1))
    }};
}

/// `(d_x * d_y, sums)`: the block scale in every lane (the same f32 product as the scalar
/// code's) and the per-lane integer sums as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scaled(dx: F16Le, dy: F16Le, sumi: __m256i) -> (__m256, __m256) {
    (_mm256_mul_ps(h2f8(dx), h2f8(dy)), _mm256_cvtepi32_ps(sumi))
}

/// Q4_0 · Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    sum_blocks!(x, y, |a, b| {
        let sumi = dot_u8_i8_offset(nibbles(&a.qs), load32(b.qs.as_ptr()), 8);
        scaled(a.d, b.d, sumi)
    })
}

/// The two leading halves of a block (`d, m` of Q4_1, `d, s` of Q8_1) as f32 lanes 0 and 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn two_halves(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()))
}

/// One Q4_1 · Q8_1 block: adds `d_x d_y` times the integer sums to `acc`, and the lane-wise
/// product of (`d_x`, `m_x`) and (`d_y`, `s_y`) to `offsets`, whose lane 1 sums `m_x s_y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_block(a: &BlockQ4_1, b: &BlockQ8_1, acc: &mut __m256, offsets: &mut __m128) {
    let prod = _mm_mul_ps(two_halves(a.d.0.as_ptr()), two_halves(b.d.0.as_ptr()));
    let sumi = dot_u8_i8(nibbles(&a.qs), load32(b.qs.as_ptr()));
    *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(sumi), *acc);
    *offsets = _mm_add_ps(*offsets, prod);
}

/// Q4_1 · Q8_1: `d_x d_y sum(q_x q_y)` per block as in the other kernels, plus the offset
/// terms `m_x s_y`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut off0, mut off1) = (_mm_setzero_ps(), _mm_setzero_ps());
    let (mut xs, mut ys) = (x.chunks_exact(2), y.chunks_exact(2));
    for (xp, yp) in (&mut xs).zip(&mut ys) {
        q4_1_block(&xp[0], &yp[0], &mut acc0, &mut off0);
        q4_1_block(&xp[1], &yp[1], &mut acc1, &mut off1);
    }
    if let (Some(a), Some(b)) = (xs.remainder().first(), ys.remainder().first()) {
        q4_1_block(a, b, &mut acc0, &mut off0);
    }
    let off = _mm_add_ps(off0, off1);
    hsum_ps(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_movehdup_ps(off))
}

/// Q5_0 · Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let bit4 = _mm256_set1_epi8(0x10);
    sum_blocks!(x, y, |a, b| {
        let high = _mm256_and_si256(bytes_from_bits(u32::from_le_bytes(a.qh)), bit4);
        let q = _mm256_or_si256(nibbles(&a.qs), high);
        let sumi = dot_u8_i8_offset(q, load32(b.qs.as_ptr()), 16);
        scaled(a.d, b.d, sumi)
    })
}

/// Q8_0 · Q8_0, widening to i16 so that -128 · -128 is exact too.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    sum_blocks!(x, y, |a, b| {
        let (pa, pb) = (a.qs.as_ptr(), b.qs.as_ptr());
        let lo = _mm256_madd_epi16(widen16(pa), widen16(pb));
        let hi = _mm256_madd_epi16(widen16(pa.add(16)), widen16(pb.add(16)));
        scaled(a.d, b.d, _mm256_add_epi32(lo, hi))
    })
}

/// Q4_K · Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_q8k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    q4k_q8k_rows::<1>(x, [y])[0]
}

/// Q4_K · Q8_K for `R` activation rows at once: each weight block is unpacked once for all of
/// them, and every row gets exactly the operations (and bits) of [`q4k_q8k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_q8k_rows<const R: usize>(x: &[BlockQ4K], ys: [&[BlockQ8K]; R]) -> [f32; R] {
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_m = [0f32; R];
    for (i, a) in x.iter().enumerate() {
        let (scales, mins) = k4_unpack(&a.scales);
        let mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr().cast()));
        let mut sumi = [_mm256_setzero_si256(); R];
        for c in 0..4 {
            let qb = load32(a.qs.as_ptr().add(32 * c));
            let lo = _mm256_and_si256(qb, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
            let (sl, sh) = (_mm256_set1_epi16(scales[2 * c] as i16), _mm256_set1_epi16(scales[2 * c + 1] as i16));
            for (s, y) in sumi.iter_mut().zip(&ys) {
                let b = &y[i];
                let vl = load32(b.qs.as_ptr().add(64 * c));
                let vh = load32(b.qs.as_ptr().add(64 * c + 32));
                let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, vl), sl);
                let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, vh), sh);
                *s = _mm256_add_epi32(*s, _mm256_add_epi32(pl, ph));
            }
        }
        for (r, y) in ys.iter().enumerate() {
            let b = &y[i];
            // The mins meet the precomputed 16-wide activation sums: sum_j bsums[j] * mins[j / 2].
            let bsums = load32(b.bsums.as_ptr());
            let pair_sums = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
            let m = _mm_madd_epi16(pair_sums, mins16);
            let m = _mm_add_epi32(m, _mm_unpackhi_epi64(m, m));
            let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b01));
            let summ = _mm_cvtsi128_si32(m);
            let d = _mm256_mul_ps(_mm256_set1_ps(b.d()), h2f8(a.d));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            acc_m[r] += h2f(a.dmin) * b.d() * summ as f32;
        }
    }
    std::array::from_fn(|r| hsum_ps(acc[r]) - acc_m[r])
}

/// Q6_K · Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k_q8k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    q6k_q8k_rows::<1>(x, [y])[0]
}

/// Q6_K · Q8_K for `R` activation rows at once, each row exactly as [`q6k_q8k`] computes it.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k_q8k_rows<const R: usize>(x: &[BlockQ6K], ys: [&[BlockQ8K]; R]) -> [f32; R] {
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(0x03);
    let m2_hi = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); R];
    for (i, a) in x.iter().enumerate() {
        let scales = _mm_loadu_si128(a.scales.as_ptr().cast());
        let mut sumi = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let ql0 = load32(a.ql.as_ptr().add(64 * h));
            let ql1 = load32(a.ql.as_ptr().add(64 * h + 32));
            let qh = load32(a.qh.as_ptr().add(32 * h));
            // The four 32-weight runs of this half: low nibbles of ql0, of ql1, high nibbles of
            // ql0, of ql1; each takes the next 2 bits of qh as bits 4..6.
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                ),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m2_hi)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2_hi),
                ),
            ];
            for (k, &qk) in q.iter().enumerate() {
                // Lanes 0..8 of a product cover weights 0..16 of the run (group 8h + 2k),
                // lanes 8..16 the next group.
                let g = (8 * h + 2 * k) as i64;
                let pick = _mm_set_epi64x((g + 1) * 0x0101010101010101, g * 0x0101010101010101);
                let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                for (s, y) in sumi.iter_mut().zip(&ys) {
                    let v = load32(y[i].qs.as_ptr().add(128 * h + 32 * k));
                    let p =
                        _mm256_sub_epi16(_mm256_maddubs_epi16(qk, v), _mm256_maddubs_epi16(_mm256_set1_epi8(32), v));
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, sc));
                }
            }
        }
        for (r, y) in ys.iter().enumerate() {
            let d = _mm256_mul_ps(h2f8(a.d), _mm256_set1_ps(y[i].d()));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum_ps(acc[r]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizontal_sums() {
        if !super::super::simd_available() {
            return;
        }
        // SAFETY: features checked above.
        unsafe {
            let f = _mm256_setr_ps(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.5);
            assert_eq!(hsum_ps(f), 36.5);
            let bits = bytes_from_bits(0x8000_0001);
            let mut out = [0u8; 32];
            _mm256_storeu_si256(out.as_mut_ptr().cast(), bits);
            assert_eq!(out[0], 0xFF);
            assert_eq!(out[31], 0xFF);
            assert!(out[1..31].iter().all(|&b| b == 0));
        }
    }
}
