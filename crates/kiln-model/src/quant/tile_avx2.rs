//! AVX2 kernels of [`super::tile`]: eight weight rows against one activation row, either from
//! an unpacked [`Tile`] or read in place from the weight blocks.
//!
//! Both flavours compute each block the same way, so that they give the same bits: the exact
//! integer sums of the eight rows are gathered into one vector (lane r = row r), converted to
//! f32 and accumulated with one FMA by `scale_r · d_y`, block after block. A row's result thus
//! depends only on the row and the activations, never on how many activation rows share the
//! pass or which flavour ran.
//!
//! Every function here is `unsafe`: callers must have checked that the CPU has AVX2, FMA and
//! F16C (see `super::simd_available`).

use super::blocks::{as_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, F16Le};
use super::dot_avx2::{bytes_from_bits, dot_u8_i8, dot_u8_i8_offset, h2f, h2f8, load32, nibbles, widen16};
use super::tile::{Tile, TILE_ROWS};
use kiln_gguf::GgmlType;
use std::arch::x86_64::*;

/// Prefetches of the rows to come, spread over the blocks of the current call: reading eight
/// rows side by side defeats the hardware prefetchers, and asking for the next rows all at
/// once would fill the miss buffers and stall.
pub struct Ahead {
    start: *const u8,
    lines: usize,
    per_block: usize,
}

impl Ahead {
    /// `next` is fetched over the course of a call on rows of `blocks` blocks.
    pub fn new(next: &[u8], blocks: usize) -> Ahead {
        let lines = next.len().div_ceil(64);
        Ahead { start: next.as_ptr(), lines, per_block: lines.div_ceil(blocks.max(1)) }
    }

    #[inline(always)]
    pub(super) fn block(&self, b: usize) {
        for line in b * self.per_block..((b + 1) * self.per_block).min(self.lines) {
            // SAFETY: a prefetch never faults; the address lies inside `next`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.start.add(64 * line).cast()) };
        }
    }
}

/// Unpacks row `r` of a tile: the quants of block `b` as 32 bytes into `quants[b * TILE_ROWS
/// + r]` (the layout `Tile` keeps), its scales (and Q4_1 minimums) as f32 into `scales[b][r]`
/// (`mins[b][r]`). The same values as the scalar unpacking, in vector registers.
///
/// # Safety
/// AVX2, FMA and F16C; `row` is whole blocks of `ty` (one of the tile types), and the outputs
/// hold that many blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn unpack_row(
    ty: GgmlType,
    row: &[u8],
    r: usize,
    quants: &mut [[u8; 32]],
    scales: &mut [[f32; TILE_ROWS]],
    mins: &mut [[f32; TILE_ROWS]],
) {
    let store32 = |q: &mut [u8; 32], v: __m256i| _mm256_storeu_si256(q.as_mut_ptr().cast(), v);
    match ty {
        GgmlType::Q4_0 => {
            for (b, blk) in as_blocks::<BlockQ4_0>(row).iter().enumerate() {
                store32(&mut quants[b * TILE_ROWS + r], nibbles(&blk.qs));
                scales[b][r] = h2f(blk.d);
            }
        }
        GgmlType::Q4_1 => {
            for (b, blk) in as_blocks::<BlockQ4_1>(row).iter().enumerate() {
                store32(&mut quants[b * TILE_ROWS + r], nibbles(&blk.qs));
                (scales[b][r], mins[b][r]) = (h2f(blk.d), h2f(blk.m));
            }
        }
        GgmlType::Q5_0 => {
            let bit4 = _mm256_set1_epi8(0x10);
            for (b, blk) in as_blocks::<BlockQ5_0>(row).iter().enumerate() {
                let high = _mm256_and_si256(bytes_from_bits(u32::from_le_bytes(blk.qh)), bit4);
                store32(&mut quants[b * TILE_ROWS + r], _mm256_or_si256(nibbles(&blk.qs), high));
                scales[b][r] = h2f(blk.d);
            }
        }
        GgmlType::Q8_0 => {
            for (b, blk) in as_blocks::<BlockQ8_0>(row).iter().enumerate() {
                store32(&mut quants[b * TILE_ROWS + r], load32(blk.qs.as_ptr()));
                scales[b][r] = h2f(blk.d);
            }
        }
        other => panic!("{other} has no tile kernel (check tile::supported)"),
    }
}

/// Eight vectors of eight i32 in, one vector out whose lane r is the sum of vector r.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn transpose_sum(s: [__m256i; 8]) -> __m256i {
    let a01 = _mm256_hadd_epi32(s[0], s[1]);
    let a23 = _mm256_hadd_epi32(s[2], s[3]);
    let a45 = _mm256_hadd_epi32(s[4], s[5]);
    let a67 = _mm256_hadd_epi32(s[6], s[7]);
    let b0 = _mm256_hadd_epi32(a01, a23);
    let b1 = _mm256_hadd_epi32(a45, a67);
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(b0, b1), _mm256_permute2x128_si256::<0x31>(b0, b1))
}

/// `acc + (scales · d_y) · totals`: one block's contribution, the same expression in both
/// flavours.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn accumulate(acc: __m256, scales: __m256, dy: F16Le, totals: __m256i) -> __m256 {
    _mm256_fmadd_ps(_mm256_mul_ps(scales, h2f8(dy)), _mm256_cvtepi32_ps(totals), acc)
}

pub(super) fn store(v: __m256) -> [f32; TILE_ROWS] {
    let mut out = [0f32; TILE_ROWS];
    // SAFETY: `out` holds eight f32; an unaligned store needs only AVX, which every caller
    // has checked (it is part of AVX2).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Unsigned quants with a per-block minimum (Q4_1 · Q8_1), unpacked.
///
/// # Safety
/// AVX2, FMA and F16C; `act` has the tile's number of blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_q4_1(tile: &Tile, act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
    let (mut acc, mut offsets) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, y) in act.iter().enumerate() {
        let v = load32(y.qs.as_ptr());
        let q = tile.quants(b);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dot_u8_i8(load32(q[r].as_ptr()), v);
        }
        acc = accumulate(acc, _mm256_loadu_ps(tile.scales(b).as_ptr()), y.d, transpose_sum(sums));
        let mins = _mm256_loadu_ps(tile.mins(b).as_ptr());
        offsets = _mm256_fmadd_ps(mins, h2f8(y.s), offsets);
    }
    store(_mm256_add_ps(acc, offsets))
}

/// Byte offsets of rows 1..8 from row 0, for gathering one field of all eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn row_offsets<T>(rows: &[*const T; TILE_ROWS]) -> __m256i {
    let o = |r: usize| (rows[r] as isize - rows[0] as isize) as i32;
    _mm256_setr_epi32(o(0), o(1), o(2), o(3), o(4), o(5), o(6), o(7))
}

/// The first two halves of block `b` of every row (`d` and, for Q4_1, `m`), as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gather_halves<T>(row0: *const T, b: usize, offsets: __m256i) -> (__m256, __m256) {
    let pairs = _mm256_i32gather_epi32::<1>(row0.add(b).cast(), offsets);
    // Per 128-bit lane: first halves to the low 8 bytes, second halves to the high 8.
    let split = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, //
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
    );
    let p = _mm256_permute4x64_epi64::<0xD8>(_mm256_shuffle_epi8(pairs, split));
    (_mm256_cvtph_ps(_mm256_castsi256_si128(p)), _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(p)))
}

/// 16 packed bytes of rows `r` and `r + 4` side by side.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair(lo: *const u8, hi: *const u8) -> __m256i {
    _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(_mm_loadu_si128(lo.cast())), _mm_loadu_si128(hi.cast()))
}

/// Lane sums of two rows of unsigned quants against the activations, rows side by side:
/// `lo`/`hi` hold the quants of elements 0-15 / 16-31 of row r (low 128 bits) and row r + 4
/// (high), `ylo`/`yhi` the activations 0-15 / 16-31 in both halves. Exact for quants < 64.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_sums(lo: __m256i, hi: __m256i, ylo: __m256i, yhi: __m256i) -> __m256i {
    let p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Four pair sums (rows r and r + 4 in vector r) in, lane r = the total of row r out.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_totals(s: [__m256i; 4]) -> __m256i {
    let a = _mm256_hadd_epi32(s[0], s[1]);
    let b = _mm256_hadd_epi32(s[2], s[3]);
    _mm256_hadd_epi32(a, b)
}

/// The low and high nibbles of two rows' packed quants (see [`pair_sums`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pair_nibbles(qs_lo: &[u8; 16], qs_hi: &[u8; 16]) -> (__m256i, __m256i) {
    let w = pair(qs_lo.as_ptr(), qs_hi.as_ptr());
    let m4 = _mm256_set1_epi8(0xF);
    (_mm256_and_si256(w, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4))
}

/// Q4_1 · Q8_1 with the eight rows read in place: the same numbers as [`tile_q4_1`].
///
/// # Safety
/// AVX2, FMA and F16C; every row has `act.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn in_place_q4_1(rows: [*const BlockQ4_1; TILE_ROWS], act: &[BlockQ8_1], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let (mut acc, mut mins_acc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128(y.qs.as_ptr().cast()));
        let yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(y.qs.as_ptr().add(16).cast()));
        let mut sums = [_mm256_setzero_si256(); 4];
        for (r, sum) in sums.iter_mut().enumerate() {
            let (lo, hi) = pair_nibbles(&(*rows[r].add(b)).qs, &(*rows[r + 4].add(b)).qs);
            *sum = pair_sums(lo, hi, ylo, yhi);
        }
        let (scales, mins) = gather_halves(rows[0], b, offsets);
        acc = accumulate(acc, scales, y.d, pair_totals(sums));
        mins_acc = _mm256_fmadd_ps(mins, h2f8(y.s), mins_acc);
    }
    store(_mm256_add_ps(acc, mins_acc))
}

/// Unsigned quants with a zero point (Q4_0, Q5_0 · Q8_0), unpacked: `Σ q·y − offset·Σ y`.
///
/// # Safety
/// As [`tile_q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_offset(tile: &Tile, act: &[BlockQ8_0], offset: i8) -> [f32; TILE_ROWS] {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        let v = load32(y.qs.as_ptr());
        let q = tile.quants(b);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dot_u8_i8_offset(load32(q[r].as_ptr()), v, offset);
        }
        acc = accumulate(acc, _mm256_loadu_ps(tile.scales(b).as_ptr()), y.d, transpose_sum(sums));
    }
    store(acc)
}

/// Lane sums of `(q - offset) · y` for rows r and r + 4 side by side (as [`pair_sums`]);
/// `y_offset` is `offset · y` summed in pairs, the same for every row. Exact for quants < 32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_sums_offset(lo: __m256i, hi: __m256i, ylo: __m256i, yhi: __m256i, y_offset: __m256i) -> __m256i {
    let p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
    _mm256_madd_epi16(_mm256_sub_epi16(p, y_offset), _mm256_set1_epi16(1))
}

/// The activations of one block as [`pair_sums`] wants them, and `offset · y` in pairs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn split_activations(y: &BlockQ8_0, offset: i8) -> (__m256i, __m256i, __m256i) {
    let ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128(y.qs.as_ptr().cast()));
    let yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(y.qs.as_ptr().add(16).cast()));
    let o = _mm256_set1_epi8(offset);
    (ylo, yhi, _mm256_add_epi16(_mm256_maddubs_epi16(o, ylo), _mm256_maddubs_epi16(o, yhi)))
}

/// Q4_0 · Q8_0 in place: the same numbers as [`tile_offset`].
///
/// # Safety
/// As [`in_place_q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn in_place_q4_0(rows: [*const BlockQ4_0; TILE_ROWS], act: &[BlockQ8_0], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let (ylo, yhi, y_offset) = split_activations(y, 8);
        let mut sums = [_mm256_setzero_si256(); 4];
        for (r, sum) in sums.iter_mut().enumerate() {
            let (lo, hi) = pair_nibbles(&(*rows[r].add(b)).qs, &(*rows[r + 4].add(b)).qs);
            *sum = pair_sums_offset(lo, hi, ylo, yhi, y_offset);
        }
        acc = accumulate(acc, gather_halves(rows[0], b, offsets).0, y.d, pair_totals(sums));
    }
    store(acc)
}

/// Bit 4 of the quants of rows r and r + 4 as [`pair_nibbles`] arranges them, from the
/// rows' fifth-bit words (lane r = row r): `bit4` where the bit is set, 0 elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pair_fifth_bits(words: __m256i, r: usize, bit4: __m256i) -> (__m256i, __m256i) {
    // Byte j of each 128-bit half takes the word's byte holding bit j (then 16 + j), and keeps
    // only that bit by or-ing in all the others.
    let select = |first: i64| {
        let q = |byte: i64| byte * 0x0101_0101_0101_0101;
        _mm256_set_epi64x(q(first + 1), q(first), q(first + 1), q(first))
    };
    let base = 4 * r as i64;
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    let spread = |first: i64| {
        let b = _mm256_or_si256(_mm256_shuffle_epi8(words, select(first)), others);
        _mm256_and_si256(_mm256_cmpeq_epi8(b, _mm256_set1_epi8(-1)), bit4)
    };
    (spread(base), spread(base + 2))
}

/// Q5_0 · Q8_0 in place: the same numbers as [`tile_offset`].
///
/// # Safety
/// As [`in_place_q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn in_place_q5_0(rows: [*const BlockQ5_0; TILE_ROWS], act: &[BlockQ8_0], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let bit4 = _mm256_set1_epi8(0x10);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        ahead.block(b);
        let (ylo, yhi, y_offset) = split_activations(y, 16);
        // Every row's fifth bits (lane r = row r), gathered once for the four pairs.
        let high_bits = _mm256_i32gather_epi32::<1>(rows[0].add(b).cast::<u8>().add(2).cast(), offsets);
        let mut sums = [_mm256_setzero_si256(); 4];
        for (r, sum) in sums.iter_mut().enumerate() {
            let (lo, hi) = pair_nibbles(&(*rows[r].add(b)).qs, &(*rows[r + 4].add(b)).qs);
            let (high_lo, high_hi) = pair_fifth_bits(high_bits, r, bit4);
            *sum = pair_sums_offset(_mm256_or_si256(lo, high_lo), _mm256_or_si256(hi, high_hi), ylo, yhi, y_offset);
        }
        acc = accumulate(acc, gather_halves(rows[0], b, offsets).0, y.d, pair_totals(sums));
    }
    store(acc)
}

/// Exact i32 lane sums of 32 signed byte products, widened to i16 first (-128 · -128 fits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8_i8(w: *const i8, vlo: __m256i, vhi: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_madd_epi16(widen16(w), vlo), _mm256_madd_epi16(widen16(w.add(16)), vhi))
}

/// Signed quants (Q8_0 · Q8_0), unpacked.
///
/// # Safety
/// As [`tile_q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_q8_0(tile: &Tile, act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        let (vlo, vhi) = (widen16(y.qs.as_ptr()), widen16(y.qs.as_ptr().add(16)));
        let q = tile.quants(b);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dot_i8_i8(q[r].as_ptr().cast(), vlo, vhi);
        }
        acc = accumulate(acc, _mm256_loadu_ps(tile.scales(b).as_ptr()), y.d, transpose_sum(sums));
    }
    store(acc)
}

/// Q8_0 · Q8_0 in place: the same numbers as [`tile_q8_0`].
///
/// # Safety
/// As [`in_place_q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn in_place_q8_0(rows: [*const BlockQ8_0; TILE_ROWS], act: &[BlockQ8_0], ahead: &Ahead) -> [f32; TILE_ROWS] {
    let offsets = row_offsets(&rows);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in act.iter().enumerate() {
        let (vlo, vhi) = (widen16(y.qs.as_ptr()), widen16(y.qs.as_ptr().add(16)));
        ahead.block(b);
        let blk = |r: usize| &*rows[r].add(b);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum = dot_i8_i8(blk(r).qs.as_ptr(), vlo, vhi);
        }
        acc = accumulate(acc, gather_halves(rows[0], b, offsets).0, y.d, transpose_sum(sums));
    }
    store(acc)
}
