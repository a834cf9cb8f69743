//! The kernels of [`super::packed`]: eight packed rows against one activation row, AVX2
//! (`maddubs`) and AVX-512 VNNI (`vpdpbusd` on 256-bit vectors). Lane `r` of every sum is row
//! `r`, so a block ends with one scale multiply and one fused add for all eight rows, in the
//! order [`super::tile_avx2::accumulate`] uses everywhere else.
//!
//! Every function here is `unsafe`: callers have checked AVX2, FMA and F16C (and AVX512-VNNI
//! with AVX512-VL for the `_vnni` ones), `group` holds `act.len()` packed blocks and `sums`
//! (where taken) as many activation sums.

use super::blocks::{BlockQ8_0, BlockQ8_1};
use super::dot_avx2::{h2f8, load32};
use super::tile::TILE_ROWS;
use super::tile_avx2::{accumulate, store, Ahead};
use std::arch::x86_64::*;

/// Bytes of a packed Q4_0 block of eight rows: eight scales, 128 bytes of nibbles.
const Q4_0_BLOCK: usize = 144;
/// Bytes of a packed Q4_1 block of eight rows: eight scales, eight minimums, the nibbles.
const Q4_1_BLOCK: usize = 160;
/// Bytes of a packed Q5_0 block of eight rows: eight scales, eight fifth-bit words, nibbles.
const Q5_0_BLOCK: usize = 176;
/// Bytes of a packed Q8_0 block of eight rows: eight scales, 256 bytes of quants.
const Q8_0_BLOCK: usize = 272;

/// The eight f16 scales that start a packed block, as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales(block: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(block.cast()))
}

/// Activation bytes `4k..4k+4` in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quad(qs: &[i8; 32], k: usize) -> __m256i {
    _mm256_set1_epi32(qs.as_ptr().cast::<i32>().add(k).read_unaligned())
}

/// Q4_0 · Q8_0, AVX2: the zero point taken back as `-8 · Σ y`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_0_avx2(group: *const u8, act: &[BlockQ8_0], sums: &[i32], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q4_0_BLOCK);
        let totals = _mm256_add_epi32(nibble_sums_avx2(block.add(16), &y.qs), _mm256_set1_epi32(-8 * sums[b]));
        acc = accumulate(acc, scales(block), y.d, totals);
    }
    store(acc)
}

/// Q4_0 · Q8_0, VNNI: the zero point folded into the start value `-8 · Σ y`.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q4_0_vnni(group: *const u8, act: &[BlockQ8_0], sums: &[i32], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q4_0_BLOCK);
        let totals = nibble_sums_vnni(block.add(16), &y.qs, _mm256_set1_epi32(-8 * sums[b]));
        acc = accumulate(acc, scales(block), y.d, totals);
    }
    store(acc)
}

/// The nibbles of a packed Q4_0 or Q4_1 block (at `quants`) against one activation block,
/// AVX2: lane r = row r's exact `Σ q·y`. Products of two steps fit in i16 (|q·y| ≤ 15 · 128,
/// eight pairs per lane at most), so the widening to i32 happens once per block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibble_sums_avx2(quants: *const u8, qs: &[i8; 32]) -> __m256i {
    let m4 = _mm256_set1_epi8(0xF);
    let mut pairs = _mm256_setzero_si256();
    for s in 0..4 {
        let w = load32(quants.add(32 * s));
        let (lo, hi) = (_mm256_and_si256(w, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4));
        pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(lo, quad(qs, s)));
        pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(hi, quad(qs, 4 + s)));
    }
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// [`nibble_sums_avx2`] with VNNI, starting from `start`: two accumulator chains (low and
/// high nibbles).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn nibble_sums_vnni(quants: *const u8, qs: &[i8; 32], start: __m256i) -> __m256i {
    let m4 = _mm256_set1_epi8(0xF);
    let (mut lo_sum, mut hi_sum) = (start, _mm256_setzero_si256());
    for s in 0..4 {
        let w = load32(quants.add(32 * s));
        let (lo, hi) = (_mm256_and_si256(w, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4));
        lo_sum = _mm256_dpbusd_epi32(lo_sum, lo, quad(qs, s));
        hi_sum = _mm256_dpbusd_epi32(hi_sum, hi, quad(qs, 4 + s));
    }
    _mm256_add_epi32(lo_sum, hi_sum)
}

/// Q4_1 · Q8_1, AVX2: the minimums meet the activation sums `s` (as the in-place kernel).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_1_avx2(group: *const u8, act: &[BlockQ8_1], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let (mut acc, mut mins_acc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q4_1_BLOCK);
        acc = accumulate(acc, scales(block), y.d, nibble_sums_avx2(block.add(32), &y.qs));
        mins_acc = _mm256_fmadd_ps(scales(block.add(16)), h2f8(y.s), mins_acc);
    }
    store(_mm256_add_ps(acc, mins_acc))
}

/// Q4_1 · Q8_1, VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q4_1_vnni(group: *const u8, act: &[BlockQ8_1], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let (mut acc, mut mins_acc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q4_1_BLOCK);
        acc = accumulate(acc, scales(block), y.d, nibble_sums_vnni(block.add(32), &y.qs, _mm256_setzero_si256()));
        mins_acc = _mm256_fmadd_ps(scales(block.add(16)), h2f8(y.s), mins_acc);
    }
    store(_mm256_add_ps(acc, mins_acc))
}

/// The fifth bits (as 0x10) of step `s`'s quants, lane r holding row r's: of elements
/// `4s..4s+4` and of `16+4s..`. `words` has row r's 32 fifth bits in lane r. Each byte takes
/// the word's byte that holds its bit, or-ed with every other bit set, so only its own bit
/// decides whether it is all ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fifth_bits(words: __m256i, s: usize) -> (__m256i, __m256i) {
    let spread = |byte: i8| {
        let pick = |r: i8| [4 * r + byte; 4];
        let index: [i8; 32] = std::array::from_fn(|i| pick((i % 16 / 4) as i8)[i % 4]);
        let shift = 4 * (s % 2);
        let others = u32::from_le_bytes(std::array::from_fn(|j| !(1u8 << (shift + j))));
        let bytes = _mm256_or_si256(
            _mm256_shuffle_epi8(words, _mm256_loadu_si256(index.as_ptr().cast())),
            _mm256_set1_epi32(others as i32),
        );
        _mm256_and_si256(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(-1)), _mm256_set1_epi8(0x10))
    };
    (spread((s / 2) as i8), spread((2 + s / 2) as i8))
}

/// The five-bit quants of step `s` of a packed Q5_0 block: elements `4s..` and `16+4s..`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_step(block: *const u8, words: __m256i, s: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0xF);
    let w = load32(block.add(48 + 32 * s));
    let (high_lo, high_hi) = fifth_bits(words, s);
    (
        _mm256_or_si256(_mm256_and_si256(w, m4), high_lo),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(w), m4), high_hi),
    )
}

/// Q5_0 · Q8_0, AVX2: the zero point taken back as `-16 · Σ y`; products widened to i32 every
/// step (two five-bit products and their partners could pass i16 over a block).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_0_avx2(group: *const u8, act: &[BlockQ8_0], sums: &[i32], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q5_0_BLOCK);
        let words = load32(block.add(16));
        let mut totals = _mm256_set1_epi32(-16 * sums[b]);
        for s in 0..4 {
            let (lo, hi) = q5_step(block, words, s);
            let pairs = _mm256_add_epi16(
                _mm256_maddubs_epi16(lo, quad(&y.qs, s)),
                _mm256_maddubs_epi16(hi, quad(&y.qs, 4 + s)),
            );
            totals = _mm256_add_epi32(totals, _mm256_madd_epi16(pairs, ones));
        }
        acc = accumulate(acc, scales(block), y.d, totals);
    }
    store(acc)
}

/// Q5_0 · Q8_0, VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q5_0_vnni(group: *const u8, act: &[BlockQ8_0], sums: &[i32], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q5_0_BLOCK);
        let words = load32(block.add(16));
        let (mut lo_sum, mut hi_sum) = (_mm256_set1_epi32(-16 * sums[b]), _mm256_setzero_si256());
        for s in 0..4 {
            let (lo, hi) = q5_step(block, words, s);
            lo_sum = _mm256_dpbusd_epi32(lo_sum, lo, quad(&y.qs, s));
            hi_sum = _mm256_dpbusd_epi32(hi_sum, hi, quad(&y.qs, 4 + s));
        }
        acc = accumulate(acc, scales(block), y.d, _mm256_add_epi32(lo_sum, hi_sum));
    }
    store(acc)
}

/// Q8_0 · Q8_0, AVX2: `maddubs(|w|, y·sign(w))`, widened to i32 every step (two products
/// can reach 2 · 127², too much for i16 sums).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_avx2(group: *const u8, act: &[BlockQ8_0], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q8_0_BLOCK);
        let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for s in (0..8).step_by(2) {
            let (w0, w1) = (load32(block.add(16 + 32 * s)), load32(block.add(48 + 32 * s)));
            let p0 = _mm256_maddubs_epi16(_mm256_abs_epi8(w0), _mm256_sign_epi8(quad(&y.qs, s), w0));
            let p1 = _mm256_maddubs_epi16(_mm256_abs_epi8(w1), _mm256_sign_epi8(quad(&y.qs, s + 1), w1));
            even = _mm256_add_epi32(even, _mm256_madd_epi16(p0, ones));
            odd = _mm256_add_epi32(odd, _mm256_madd_epi16(p1, ones));
        }
        acc = accumulate(acc, scales(block), y.d, _mm256_add_epi32(even, odd));
    }
    store(acc)
}

/// Q8_0 · Q8_0, VNNI: weights biased to unsigned (`w + 128`), the bias taken back by the
/// start value `-128 · Σ y`.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q8_0_vnni(group: *const u8, act: &[BlockQ8_0], sums: &[i32], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let bias = _mm256_set1_epi8(-128);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let block = group.add(b * Q8_0_BLOCK);
        let (mut even, mut odd) = (_mm256_set1_epi32(-128 * sums[b]), _mm256_setzero_si256());
        for s in (0..8).step_by(2) {
            let (w0, w1) = (load32(block.add(16 + 32 * s)), load32(block.add(48 + 32 * s)));
            even = _mm256_dpbusd_epi32(even, _mm256_xor_si256(w0, bias), quad(&y.qs, s));
            odd = _mm256_dpbusd_epi32(odd, _mm256_xor_si256(w1, bias), quad(&y.qs, s + 1));
        }
        acc = accumulate(acc, scales(block), y.d, _mm256_add_epi32(even, odd));
    }
    store(acc)
}

// Several activation rows against one packed group: the weights are loaded and unpacked once
// per block, then each row runs exactly the one-row kernel's operations on its own registers
// (so every row keeps the one-row kernel's bits). Short batches (a speculative check, a few
// requests decoding together) would otherwise pay the unpacking once per row, and a row's
// chain of dependent `vpdpbusd`s leaves the core idle where R chains interleave.

/// Q4_0 · Q8_0 for `R` activation rows, VNNI: [`q4_0_vnni`] per row, nibbles unpacked once.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q4_0_vnni_rows<const R: usize>(
    group: *const u8,
    acts: [&[BlockQ8_0]; R],
    sums: [&[i32]; R],
    ahead: &Ahead,
) -> [[f32; TILE_ROWS]; R] {
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..acts[0].len() {
        ahead.block(b);
        let block = group.add(b * Q4_0_BLOCK);
        let mut lo_sum: [__m256i; R] = std::array::from_fn(|r| _mm256_set1_epi32(-8 * sums[r][b]));
        let mut hi_sum = [_mm256_setzero_si256(); R];
        for s in 0..4 {
            let w = load32(block.add(16 + 32 * s));
            let (lo, hi) = (_mm256_and_si256(w, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4));
            for r in 0..R {
                lo_sum[r] = _mm256_dpbusd_epi32(lo_sum[r], lo, quad(&acts[r][b].qs, s));
                hi_sum[r] = _mm256_dpbusd_epi32(hi_sum[r], hi, quad(&acts[r][b].qs, 4 + s));
            }
        }
        let d = scales(block);
        for r in 0..R {
            acc[r] = accumulate(acc[r], d, acts[r][b].d, _mm256_add_epi32(lo_sum[r], hi_sum[r]));
        }
    }
    std::array::from_fn(|r| store(acc[r]))
}

/// Q4_1 · Q8_1 for `R` activation rows, VNNI: [`q4_1_vnni`] per row, nibbles unpacked once.
#[allow(clippy::needless_range_loop)] // block `b` of every row, not of one slice
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q4_1_vnni_rows<const R: usize>(
    group: *const u8,
    acts: [&[BlockQ8_1]; R],
    ahead: &Ahead,
) -> [[f32; TILE_ROWS]; R] {
    let m4 = _mm256_set1_epi8(0xF);
    let (mut acc, mut mins_acc) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
    for b in 0..acts[0].len() {
        ahead.block(b);
        let block = group.add(b * Q4_1_BLOCK);
        let (mut lo_sum, mut hi_sum) = ([_mm256_setzero_si256(); R], [_mm256_setzero_si256(); R]);
        for s in 0..4 {
            let w = load32(block.add(32 + 32 * s));
            let (lo, hi) = (_mm256_and_si256(w, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4));
            for r in 0..R {
                lo_sum[r] = _mm256_dpbusd_epi32(lo_sum[r], lo, quad(&acts[r][b].qs, s));
                hi_sum[r] = _mm256_dpbusd_epi32(hi_sum[r], hi, quad(&acts[r][b].qs, 4 + s));
            }
        }
        let (d, m) = (scales(block), scales(block.add(16)));
        for r in 0..R {
            let y = &acts[r][b];
            acc[r] = accumulate(acc[r], d, y.d, _mm256_add_epi32(lo_sum[r], hi_sum[r]));
            mins_acc[r] = _mm256_fmadd_ps(m, h2f8(y.s), mins_acc[r]);
        }
    }
    std::array::from_fn(|r| store(_mm256_add_ps(acc[r], mins_acc[r])))
}

/// Q8_0 · Q8_0 for `R` activation rows, VNNI: [`q8_0_vnni`] per row, weights biased once.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn q8_0_vnni_rows<const R: usize>(
    group: *const u8,
    acts: [&[BlockQ8_0]; R],
    sums: [&[i32]; R],
    ahead: &Ahead,
) -> [[f32; TILE_ROWS]; R] {
    let bias = _mm256_set1_epi8(-128);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..acts[0].len() {
        ahead.block(b);
        let block = group.add(b * Q8_0_BLOCK);
        let mut even: [__m256i; R] = std::array::from_fn(|r| _mm256_set1_epi32(-128 * sums[r][b]));
        let mut odd = [_mm256_setzero_si256(); R];
        for s in (0..8).step_by(2) {
            let w0 = _mm256_xor_si256(load32(block.add(16 + 32 * s)), bias);
            let w1 = _mm256_xor_si256(load32(block.add(48 + 32 * s)), bias);
            for r in 0..R {
                even[r] = _mm256_dpbusd_epi32(even[r], w0, quad(&acts[r][b].qs, s));
                odd[r] = _mm256_dpbusd_epi32(odd[r], w1, quad(&acts[r][b].qs, s + 1));
            }
        }
        let d = scales(block);
        for r in 0..R {
            acc[r] = accumulate(acc[r], d, acts[r][b].d, _mm256_add_epi32(even[r], odd[r]));
        }
    }
    std::array::from_fn(|r| store(acc[r]))
}
