//! The eight-row kernels of [`super::tile_avx2`] with AVX-512 VNNI's `vpdpbusd` on 256-bit
//! vectors (AVX512-VL): four byte products summed into each i32 lane, and added to an
//! accumulator, in one instruction where AVX2 needs `maddubs` and `madd`. The integer sums are
//! exact either way and the float steps are the same calls, so these give the AVX2 kernels'
//! bits exactly (a test checks it); only the speed differs.
//!
//! Zero points and signed weights become accumulator start values: `Σ (q - o)·y` starts from
//! `-o·Σy`, and signed Q8_0 weights are biased to unsigned (`w + 128`), starting from `-128·Σy`.
//!
//! Every function here is `unsafe`: callers must have checked AVX2, FMA, F16C, AVX512-VNNI and
//! AVX512-VL (see `super::tile::vnni_available`).

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};
use super::dot_avx2::{h2f8, load32};
use super::tile::{Tile, TILE_ROWS};
use super::tile_avx2::{accumulate, gather_halves, pair_nibbles, row_offsets, store, transpose_sum, Ahead};
use kiln_gguf::GgmlType;
use std::arch::x86_64::*;

/// `acc + Σ` of four `u8 · i8` products per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dp(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// `-k · Σ y` per lane (groups of four activations), the start value that subtracts a zero
/// point `k` from every unsigned weight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn minus_offset(y: __m256i, k: i32) -> __m256i {
    let sums = dp(_mm256_setzero_si256(), _mm256_set1_epi8(1), y);
    _mm256_mullo_epi32(sums, _mm256_set1_epi32(-k))
}

/// Q4_1 · Q8_1, unpacked (as `tile_avx2::tile_q4_1`).
///
/// # Safety
/// See the module; `act` has the tile's number of blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn tile_q4_1(tile: &Tile, act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
    let (mut acc, mut offsets) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, y) in act.iter().enumerate() {
        let v = load32(y.qs.as_ptr());
        let q = tile.quants(b);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dp(_mm256_setzero_si256(), load32(q[r].as_ptr()), v);
        }
        acc = accumulate(acc, _mm256_loadu_ps(tile.scales(b).as_ptr()), y.d, transpose_sum(sums));
        offsets = _mm256_fmadd_ps(_mm256_loadu_ps(tile.mins(b).as_ptr()), h2f8(y.s), offsets);
    }
    store(_mm256_add_ps(acc, offsets))
}

/// Q4_0, Q5_0 · Q8_0, unpacked (as `tile_avx2::tile_offset`).
///
/// # Safety
/// As [`tile_q4_1`].
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn tile_offset(tile: &Tile, act: &[BlockQ8_0], offset: i8) -> [f32; TILE_ROWS] {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        let v = load32(y.qs.as_ptr());
        let start = minus_offset(v, offset as i32);
        let q = tile.quants(b);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dp(start, load32(q[r].as_ptr()), v);
        }
        acc = accumulate(acc, _mm256_loadu_ps(tile.scales(b).as_ptr()), y.d, transpose_sum(sums));
    }
    store(acc)
}

/// Q8_0 · Q8_0, unpacked (as `tile_avx2::tile_q8_0`): weights biased by 128.
///
/// # Safety
/// As [`tile_q4_1`].
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn tile_q8_0(tile: &Tile, act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    let bias = _mm256_set1_epi8(-128);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        let v = load32(y.qs.as_ptr());
        let start = minus_offset(v, 128);
        let q = tile.quants(b);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dp(start, _mm256_xor_si256(load32(q[r].as_ptr()), bias), v);
        }
        acc = accumulate(acc, _mm256_loadu_ps(tile.scales(b).as_ptr()), y.d, transpose_sum(sums));
    }
    store(acc)
}

/// The activations of one block as the paired in-place kernels want them (elements 0-15 and
/// 16-31, each in both halves).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn split(qs: &[i8; 32]) -> (__m256i, __m256i) {
    (
        _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr().cast())),
        _mm256_broadcastsi128_si256(_mm_loadu_si128(qs.as_ptr().add(16).cast())),
    )
}

/// Four pair sums in, lane r = row r's total out (as `tile_avx2::pair_totals`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn pair_totals(s: [__m256i; 4]) -> __m256i {
    _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]))
}

/// Q4_1 · Q8_1 in place (as `tile_avx2::in_place_q4_1`).
///
/// # Safety
/// See the module; every row has `act.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn in_place_q4_1(rows: [*const BlockQ4_1; TILE_ROWS], act: &[BlockQ8_1], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let (mut acc, mut mins_acc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let (ylo, yhi) = split(&y.qs);
        let mut sums = [_mm256_setzero_si256(); 4];
        for (r, sum) in sums.iter_mut().enumerate() {
            let (lo, hi) = pair_nibbles(&(*rows[r].add(b)).qs, &(*rows[r + 4].add(b)).qs);
            *sum = dp(dp(_mm256_setzero_si256(), lo, ylo), hi, yhi);
        }
        let (scales, mins) = gather_halves(rows[0], b, offsets);
        acc = accumulate(acc, scales, y.d, pair_totals(sums));
        mins_acc = _mm256_fmadd_ps(mins, h2f8(y.s), mins_acc);
    }
    store(_mm256_add_ps(acc, mins_acc))
}

/// `-k · Σ y` per lane of the paired layout.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn pair_minus_offset(ylo: __m256i, yhi: __m256i, k: i32) -> __m256i {
    let ones = _mm256_set1_epi8(1);
    let sums = dp(dp(_mm256_setzero_si256(), ones, ylo), ones, yhi);
    _mm256_mullo_epi32(sums, _mm256_set1_epi32(-k))
}

/// Q4_0 · Q8_0 in place (as `tile_avx2::in_place_q4_0`).
///
/// # Safety
/// As [`in_place_q4_1`].
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn in_place_q4_0(rows: [*const BlockQ4_0; TILE_ROWS], act: &[BlockQ8_0], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let (ylo, yhi) = split(&y.qs);
        let start = pair_minus_offset(ylo, yhi, 8);
        let mut sums = [_mm256_setzero_si256(); 4];
        for (r, sum) in sums.iter_mut().enumerate() {
            let (lo, hi) = pair_nibbles(&(*rows[r].add(b)).qs, &(*rows[r + 4].add(b)).qs);
            *sum = dp(dp(start, lo, ylo), hi, yhi);
        }
        acc = accumulate(acc, gather_halves(rows[0], b, offsets).0, y.d, pair_totals(sums));
    }
    store(acc)
}

/// Q5_0 · Q8_0 in place (as `tile_avx2::in_place_q5_0`).
///
/// # Safety
/// As [`in_place_q4_1`].
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn in_place_q5_0(rows: [*const BlockQ5_0; TILE_ROWS], act: &[BlockQ8_0], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let bit4 = _mm256_set1_epi8(0x10);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let (ylo, yhi) = split(&y.qs);
        let start = pair_minus_offset(ylo, yhi, 16);
        let high_bits = _mm256_i32gather_epi32::<1>(rows[0].add(b).cast::<u8>().add(2).cast(), offsets);
        let mut sums = [_mm256_setzero_si256(); 4];
        for (r, sum) in sums.iter_mut().enumerate() {
            let (lo, hi) = pair_nibbles(&(*rows[r].add(b)).qs, &(*rows[r + 4].add(b)).qs);
            let (high_lo, high_hi) = super::tile_avx2::pair_fifth_bits(high_bits, r, bit4);
            *sum = dp(dp(start, _mm256_or_si256(lo, high_lo), ylo), _mm256_or_si256(hi, high_hi), yhi);
        }
        acc = accumulate(acc, gather_halves(rows[0], b, offsets).0, y.d, pair_totals(sums));
    }
    store(acc)
}

/// Q8_0 · Q8_0 in place (as `tile_avx2::in_place_q8_0`): weights biased by 128.
///
/// # Safety
/// As [`in_place_q4_1`].
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn in_place_q8_0(rows: [*const BlockQ8_0; TILE_ROWS], act: &[BlockQ8_0], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let bias = _mm256_set1_epi8(-128);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let v = load32(y.qs.as_ptr());
        let start = minus_offset(v, 128);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dp(start, _mm256_xor_si256(load32((*rows[r].add(b)).qs.as_ptr()), bias), v);
        }
        acc = accumulate(acc, gather_halves(rows[0], b, offsets).0, y.d, transpose_sum(sums));
    }
    store(acc)
}

/// Rewrites an unpacked tile (`quants[b * TILE_ROWS + r]`: block b of row r, unsigned with
/// zero point `offset`, or signed Q8_0 when `offset` is 0 and `signed`) into the interleaved
/// layout: `quants[b * TILE_ROWS + j]` holds bytes 4j..4j+3 of every row, row r in lane r,
/// as signed values (`q - offset`), so that one `vpdpbusd` against four broadcast activation
/// bytes adds four products to each row's lane, with no transposing of sums afterwards.
/// `corrections[b]` gets `-128 · Σ q` per row: the kernels bias activations to unsigned
/// (`y + 128`) and start each block's sums there.
///
/// # Safety
/// As the module; `quants` holds `corrections.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn interleave(quants: &mut [[u8; 32]], corrections: &mut [[i32; TILE_ROWS]], offset: i8) {
    for (q, correction) in quants.chunks_exact_mut(TILE_ROWS).zip(corrections.iter_mut()) {
        let mut rows = [_mm256_setzero_si256(); TILE_ROWS];
        for (row, src) in rows.iter_mut().zip(q.iter()) {
            *row = _mm256_sub_epi8(load32(src.as_ptr()), _mm256_set1_epi8(offset));
        }
        store_columns(&transpose_dwords(rows), q, correction);
    }
}

/// Stores one block's eight columns of an interleaved tile and its corrections
/// (`-128 · Σ q` per row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn store_columns(columns: &[__m256i; TILE_ROWS], quants: &mut [[u8; 32]], correction: &mut [i32; TILE_ROWS]) {
    let mut sums = _mm256_setzero_si256();
    for (column, dst) in columns.iter().zip(quants.iter_mut()) {
        sums = dp(sums, _mm256_set1_epi8(1), *column);
        _mm256_storeu_si256(dst.as_mut_ptr().cast(), *column);
    }
    let c = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(sums));
    _mm256_storeu_si256(correction.as_mut_ptr().cast(), c);
}

/// Fills an interleaved tile (see [`interleave`]) straight from a packed group of eight
/// Q4_0, Q4_1, Q5_0 or Q8_0 rows (`super::packed`): a packed step already holds four bytes of
/// every row side by side, which is a tile column once nibbles are split and the zero point
/// taken off.
///
/// # Safety
/// As the module; `group` holds `scales.len()` packed blocks of `ty`, and `quants`, `mins`
/// (Q4_1) and `corrections` room for as many blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn load_packed(
    ty: GgmlType,
    group: &[u8],
    quants: &mut [[u8; 32]],
    scales: &mut [[f32; TILE_ROWS]],
    mins: &mut [[f32; TILE_ROWS]],
    corrections: &mut [[i32; TILE_ROWS]],
) {
    // Bytes per packed block, where its quants start, and the zero point of 4-bit quants.
    let (block_bytes, start, zero) = match ty {
        GgmlType::Q4_0 => (144, 16, Some(8)),
        GgmlType::Q4_1 => (160, 32, Some(0)),
        GgmlType::Q5_0 => (176, 48, Some(16)),
        _ => (272, 16, None),
    };
    assert!(group.len() >= scales.len() * block_bytes);
    let m4 = _mm256_set1_epi8(0xF);
    for (b, ((q, scale), correction)) in
        quants.chunks_exact_mut(TILE_ROWS).zip(scales.iter_mut()).zip(corrections.iter_mut()).enumerate()
    {
        let src = group.as_ptr().add(b * block_bytes);
        _mm256_storeu_ps(scale.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(src.cast())));
        if ty == GgmlType::Q4_1 {
            _mm256_storeu_ps(mins[b].as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(src.add(16).cast())));
        }
        let mut columns = [_mm256_setzero_si256(); TILE_ROWS];
        match zero {
            Some(zero) => {
                let zero = _mm256_set1_epi8(zero);
                let words = load32(src.add(16));
                for s in 0..4 {
                    let w = load32(src.add(start + 32 * s));
                    let (mut lo, mut hi) = (_mm256_and_si256(w, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4));
                    if ty == GgmlType::Q5_0 {
                        let (high_lo, high_hi) = super::packed_x86::fifth_bits(words, s);
                        (lo, hi) = (_mm256_or_si256(lo, high_lo), _mm256_or_si256(hi, high_hi));
                    }
                    columns[s] = _mm256_sub_epi8(lo, zero);
                    columns[4 + s] = _mm256_sub_epi8(hi, zero);
                }
            }
            None => {
                for (s, column) in columns.iter_mut().enumerate() {
                    *column = load32(src.add(start + 32 * s));
                }
            }
        }
        store_columns(&columns, q, correction);
    }
}

/// An 8×8 transpose of 32-bit elements: lane r of output j = lane j of input r.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn transpose_dwords(r: [__m256i; 8]) -> [__m256i; 8] {
    let t = [
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[0], r[1]),
        _mm256_unpacklo_epi32(r[2], r[3]),
        _mm256_unpackhi_epi32(r[2], r[3]),
        _mm256_unpacklo_epi32(r[4], r[5]),
        _mm256_unpackhi_epi32(r[4], r[5]),
        _mm256_unpacklo_epi32(r[6], r[7]),
        _mm256_unpackhi_epi32(r[6], r[7]),
    ];
    let u = [
        _mm256_unpacklo_epi64(t[0], t[2]),
        _mm256_unpackhi_epi64(t[0], t[2]),
        _mm256_unpacklo_epi64(t[1], t[3]),
        _mm256_unpackhi_epi64(t[1], t[3]),
        _mm256_unpacklo_epi64(t[4], t[6]),
        _mm256_unpackhi_epi64(t[4], t[6]),
        _mm256_unpacklo_epi64(t[5], t[7]),
        _mm256_unpackhi_epi64(t[5], t[7]),
    ];
    [
        _mm256_permute2x128_si256::<0x20>(u[0], u[4]),
        _mm256_permute2x128_si256::<0x20>(u[1], u[5]),
        _mm256_permute2x128_si256::<0x20>(u[2], u[6]),
        _mm256_permute2x128_si256::<0x20>(u[3], u[7]),
        _mm256_permute2x128_si256::<0x31>(u[0], u[4]),
        _mm256_permute2x128_si256::<0x31>(u[1], u[5]),
        _mm256_permute2x128_si256::<0x31>(u[2], u[6]),
        _mm256_permute2x128_si256::<0x31>(u[3], u[7]),
    ]
}

/// Four activation bytes `4j..4j+3` of `qs` in every lane, biased to unsigned (already so
/// when `PREBIASED`: see `tile::Activations`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn broadcast_biased<const PREBIASED: bool>(qs: &[i8; 32], j: usize) -> __m256i {
    let four = _mm256_set1_epi32(qs.as_ptr().add(4 * j).cast::<i32>().read_unaligned());
    if PREBIASED {
        four
    } else {
        _mm256_xor_si256(four, _mm256_set1_epi8(-128))
    }
}

/// Exact integer totals of block `b` of every tile row against `R` activation blocks
/// (interleaved layout, see [`interleave`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn interleaved_totals<const R: usize, const PREBIASED: bool>(
    tile: &Tile,
    b: usize,
    qs: [&[i8; 32]; R],
) -> [__m256i; R] {
    let start = _mm256_loadu_si256(tile.corrections(b).as_ptr().cast());
    let columns = tile.quants(b);
    let mut sums = [start; R];
    for (j, column) in columns.iter().enumerate() {
        let w = load32(column.as_ptr());
        for (sum, q) in sums.iter_mut().zip(qs) {
            *sum = dp(*sum, broadcast_biased::<PREBIASED>(q, j), w);
        }
    }
    sums
}

/// Q4_0, Q5_0, Q8_0 · Q8_0 on an interleaved tile, for `R` activation rows at once (the
/// weights are loaded once for all of them): the same numbers as `tile_avx2::tile_offset` and
/// `tile_avx2::tile_q8_0`. With `PREBIASED` the activations' quants come biased by 128.
///
/// # Safety
/// As the module; every activation row has the tile's number of blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn interleaved_q8_0<const R: usize, const PREBIASED: bool>(
    tile: &Tile,
    acts: [&[BlockQ8_0]; R],
) -> [[f32; TILE_ROWS]; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..acts[0].len() {
        let totals = interleaved_totals::<R, PREBIASED>(tile, b, acts.map(|a| &a[b].qs));
        let scales = _mm256_loadu_ps(tile.scales(b).as_ptr());
        for ((a, act), total) in acc.iter_mut().zip(&acts).zip(totals) {
            *a = accumulate(*a, scales, act[b].d, total);
        }
    }
    acc.map(store)
}

/// Q4_1 · Q8_1 on an interleaved tile, `R` activation rows at once: the same numbers as
/// `tile_avx2::tile_q4_1`.
///
/// # Safety
/// As [`interleaved_q8_0`].
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn interleaved_q4_1<const R: usize, const PREBIASED: bool>(
    tile: &Tile,
    acts: [&[BlockQ8_1]; R],
) -> [[f32; TILE_ROWS]; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let mut offsets = [_mm256_setzero_ps(); R];
    for b in 0..acts[0].len() {
        let totals = interleaved_totals::<R, PREBIASED>(tile, b, acts.map(|a| &a[b].qs));
        let (scales, mins) = (_mm256_loadu_ps(tile.scales(b).as_ptr()), _mm256_loadu_ps(tile.mins(b).as_ptr()));
        for (((a, o), act), total) in acc.iter_mut().zip(offsets.iter_mut()).zip(&acts).zip(totals) {
            *a = accumulate(*a, scales, act[b].d, total);
            *o = _mm256_fmadd_ps(mins, h2f8(act[b].s), *o);
        }
    }
    std::array::from_fn(|t| store(_mm256_add_ps(acc[t], offsets[t])))
}
