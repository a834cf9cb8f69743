//! Eight weight rows against many activation rows (prompt processing), with the weights
//! unpacked once per tile: 4-bit quants widened to bytes and block scales converted to f32,
//! laid out so that one vector lane belongs to one weight row. Each block then costs one
//! `maddubs`/`madd` per row and a single scale multiply for all eight, where the row-at-a-time
//! kernel pays the unpacking and the scaling again for every activation row. This is the idea
//! of llama.cpp's repacked GEMM kernels (`ggml-cpu/repack.cpp`), done per tile at run time so
//! the weights stay as they are in the mapped file. Supports Q4_0, Q4_1, Q5_0 and Q8_0.

use super::blocks::{as_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};
use kiln_gguf::GgmlType;

/// Weight rows per tile: one per f32 lane of an AVX2 register.
pub const TILE_ROWS: usize = 8;

/// Up to [`TILE_ROWS`] weight rows, unpacked. Reused from tile to tile (no allocation once
/// grown). Quants are bytes: unsigned with a zero point (`offset`) for Q4_0/Q5_0, unsigned with
/// a per-block minimum for Q4_1, signed for Q8_0.
#[derive(Default)]
pub struct Tile {
    ty: Option<GgmlType>,
    blocks: usize,
    /// `[block][row]`: the 32 quants of that block of that row, one byte each.
    quants: Vec<[u8; 32]>,
    /// `[block][row]`: scale, and minimum (Q4_1 only).
    scales: Vec<[f32; TILE_ROWS]>,
    mins: Vec<[f32; TILE_ROWS]>,
}

/// Whether [`Tile`] handles weights of `ty` on this CPU.
pub fn supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0
    ) && super::simd_available()
}

/// The zero point subtracted from unsigned quants.
fn offset(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        _ => 0,
    }
}

/// Low nibbles are elements 0-15, high nibbles 16-31 (ggml's layout).
fn unpack_nibbles(qs: &[u8; 16], q: &mut [u8; 32]) {
    for (i, &byte) in qs.iter().enumerate() {
        q[i] = byte & 0x0f;
        q[i + 16] = byte >> 4;
    }
}

impl Tile {
    /// Unpacks `rows` of `ty` (each a whole row of the same length; at most [`TILE_ROWS`]).
    /// Missing rows are zero.
    pub fn load(&mut self, ty: GgmlType, rows: &[&[u8]]) {
        assert!(rows.len() <= TILE_ROWS);
        let row_len = rows.first().map_or(0, |r| r.len());
        let blocks = row_len / ty.type_size();
        self.ty = Some(ty);
        self.blocks = blocks;
        self.quants.clear();
        self.quants.resize(blocks * TILE_ROWS, [0; 32]);
        self.scales.clear();
        self.scales.resize(blocks, [0.0; TILE_ROWS]);
        self.mins.clear();
        self.mins.resize(blocks, [0.0; TILE_ROWS]);
        for (r, row) in rows.iter().enumerate() {
            for b in 0..blocks {
                let q = &mut self.quants[b * TILE_ROWS + r];
                let scale = match ty {
                    GgmlType::Q4_0 => {
                        let blk = &as_blocks::<BlockQ4_0>(row)[b];
                        unpack_nibbles(&blk.qs, q);
                        blk.d.to_f32()
                    }
                    GgmlType::Q4_1 => {
                        let blk = &as_blocks::<BlockQ4_1>(row)[b];
                        unpack_nibbles(&blk.qs, q);
                        self.mins[b][r] = blk.m.to_f32();
                        blk.d.to_f32()
                    }
                    GgmlType::Q5_0 => {
                        let blk = &as_blocks::<BlockQ5_0>(row)[b];
                        unpack_nibbles(&blk.qs, q);
                        let high = u32::from_le_bytes(blk.qh);
                        for (j, v) in q.iter_mut().enumerate() {
                            *v |= (((high >> j) & 1) << 4) as u8;
                        }
                        blk.d.to_f32()
                    }
                    GgmlType::Q8_0 => {
                        let blk = &as_blocks::<BlockQ8_0>(row)[b];
                        *q = blk.qs.map(|v| v as u8);
                        blk.d.to_f32()
                    }
                    other => panic!("{other} has no tile kernel (check tile::supported)"),
                };
                self.scales[b][r] = scale;
            }
        }
    }

    /// The dot product of every tile row with one activation row (in the weight type's
    /// activation format: Q8_1 for Q4_1, Q8_0 otherwise; same length).
    pub fn dot(&self, activations: &[u8]) -> [f32; TILE_ROWS] {
        let ty = self.ty.expect("a loaded tile");
        #[cfg(target_arch = "x86_64")]
        if super::simd_available() {
            // SAFETY: simd_available() checked AVX2, FMA and F16C; lengths checked inside.
            unsafe {
                return match ty {
                    GgmlType::Q4_1 => avx2::dot_q8_1(self, self.act(activations)),
                    GgmlType::Q8_0 => avx2::dot_signed(self, self.act(activations)),
                    _ => avx2::dot_offset(self, self.act(activations), offset(ty)),
                };
            }
        }
        self.dot_scalar(activations)
    }

    fn act<'a, B: super::blocks::Block>(&self, activations: &'a [u8]) -> &'a [B] {
        let act: &[B] = as_blocks(activations);
        assert_eq!(act.len(), self.blocks, "activation row length");
        act
    }

    /// The plain version, which the AVX2 one is tested against.
    pub fn dot_scalar(&self, activations: &[u8]) -> [f32; TILE_ROWS] {
        let ty = self.ty.expect("a loaded tile");
        let mut out = [0f32; TILE_ROWS];
        let (signed, off) = (ty == GgmlType::Q8_0, offset(ty));
        let acts: Vec<(f32, f32, &[i8; 32])> = if ty == GgmlType::Q4_1 {
            self.act::<BlockQ8_1>(activations)
                .iter()
                .map(|y| (y.d.to_f32(), y.s.to_f32(), &y.qs))
                .collect()
        } else {
            self.act::<BlockQ8_0>(activations)
                .iter()
                .map(|y| (y.d.to_f32(), 0.0, &y.qs))
                .collect()
        };
        for (b, &(dy, sy, yq)) in acts.iter().enumerate() {
            for (r, o) in out.iter_mut().enumerate() {
                let q = &self.quants[b * TILE_ROWS + r];
                let w = |a: u8| {
                    if signed {
                        a as i8 as i32
                    } else {
                        a as i32 - off
                    }
                };
                let sum: i32 = q.iter().zip(yq).map(|(&a, &v)| w(a) * v as i32).sum();
                *o += self.scales[b][r] * dy * sum as f32 + self.mins[b][r] * sy;
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockQ8_0, BlockQ8_1, Tile, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Eight vectors of eight i32 in, one vector out whose lane r is the sum of vector r.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn transpose_sum(s: [__m256i; 8]) -> __m256i {
        let a01 = _mm256_hadd_epi32(s[0], s[1]);
        let a23 = _mm256_hadd_epi32(s[2], s[3]);
        let a45 = _mm256_hadd_epi32(s[4], s[5]);
        let a67 = _mm256_hadd_epi32(s[6], s[7]);
        let b0 = _mm256_hadd_epi32(a01, a23);
        let b1 = _mm256_hadd_epi32(a45, a67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(b0, b1),
            _mm256_permute2x128_si256::<0x31>(b0, b1),
        )
    }

    /// Unsigned quants with a per-block minimum (Q4_1 · Q8_1).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `act` has the tile's number of blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_1(tile: &Tile, act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut offsets = _mm256_setzero_ps();
        for (b, y) in act.iter().enumerate() {
            let v = _mm256_loadu_si256(y.qs.as_ptr().cast());
            let q = tile.quants.as_ptr().add(b * TILE_ROWS);
            let sums: [__m256i; 8] = std::array::from_fn(|r| {
                let w = _mm256_loadu_si256((*q.add(r)).as_ptr().cast());
                _mm256_madd_epi16(_mm256_maddubs_epi16(w, v), ones)
            });
            let total = _mm256_cvtepi32_ps(transpose_sum(sums));
            let dy = _mm256_set1_ps(y.d.to_f32());
            let sy = _mm256_set1_ps(y.s.to_f32());
            let scales = _mm256_loadu_ps(tile.scales.as_ptr().add(b).cast());
            let mins = _mm256_loadu_ps(tile.mins.as_ptr().add(b).cast());
            acc = _mm256_fmadd_ps(_mm256_mul_ps(scales, dy), total, acc);
            offsets = _mm256_fmadd_ps(mins, sy, offsets);
        }
        let mut out = [0f32; TILE_ROWS];
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(acc, offsets));
        out
    }
    /// Unsigned quants with a zero point (Q4_0, Q5_0 · Q8_0): `Σ q·y − offset·Σ y`.
    ///
    /// # Safety
    /// As [`dot_q8_1`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_offset(tile: &Tile, act: &[BlockQ8_0], offset: i32) -> [f32; TILE_ROWS] {
        let ones = _mm256_set1_epi16(1);
        let ones8 = _mm256_set1_epi8(1);
        let mut acc = _mm256_setzero_ps();
        for (b, y) in act.iter().enumerate() {
            let v = _mm256_loadu_si256(y.qs.as_ptr().cast());
            let q = tile.quants.as_ptr().add(b * TILE_ROWS);
            let sums: [__m256i; 8] = std::array::from_fn(|r| {
                let w = _mm256_loadu_si256((*q.add(r)).as_ptr().cast());
                _mm256_madd_epi16(_mm256_maddubs_epi16(w, v), ones)
            });
            // Σ y, the same for every row: transpose_sum of eight copies has it in each lane.
            let ysum = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones);
            let ysum = transpose_sum([ysum; 8]);
            let total = _mm256_sub_epi32(
                transpose_sum(sums),
                _mm256_mullo_epi32(ysum, _mm256_set1_epi32(offset)),
            );
            let dy = _mm256_set1_ps(y.d.to_f32());
            let scales = _mm256_loadu_ps(tile.scales.as_ptr().add(b).cast());
            acc = _mm256_fmadd_ps(_mm256_mul_ps(scales, dy), _mm256_cvtepi32_ps(total), acc);
        }
        let mut out = [0f32; TILE_ROWS];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }

    /// Signed quants (Q8_0 · Q8_0), products widened to i16 so that every input is exact.
    ///
    /// # Safety
    /// As [`dot_q8_1`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_signed(tile: &Tile, act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
        let mut acc = _mm256_setzero_ps();
        for (b, y) in act.iter().enumerate() {
            let vlo = _mm256_cvtepi8_epi16(_mm_loadu_si128(y.qs.as_ptr().cast()));
            let vhi = _mm256_cvtepi8_epi16(_mm_loadu_si128(y.qs.as_ptr().add(16).cast()));
            let q = tile.quants.as_ptr().add(b * TILE_ROWS);
            let sums: [__m256i; 8] = std::array::from_fn(|r| {
                let p = (*q.add(r)).as_ptr();
                let wlo = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()));
                let whi = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(16).cast()));
                _mm256_add_epi32(_mm256_madd_epi16(wlo, vlo), _mm256_madd_epi16(whi, vhi))
            });
            let dy = _mm256_set1_ps(y.d.to_f32());
            let scales = _mm256_loadu_ps(tile.scales.as_ptr().add(b).cast());
            acc = _mm256_fmadd_ps(
                _mm256_mul_ps(scales, dy),
                _mm256_cvtepi32_ps(transpose_sum(sums)),
                acc,
            );
        }
        let mut out = [0f32; TILE_ROWS];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_activations, quantize_row, vec_dot_type, RowDot};

    /// Float reassociation only (the integer sums are exact): relative to 1 + |result|.
    const TILE_TOL: f32 = 1e-4;

    fn row(seed: u32, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn q(ty: GgmlType, x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; ty.bytes_for(x.len()).unwrap()];
        quantize_row(ty, x, &mut out).unwrap();
        out
    }

    #[test]
    fn tile_matches_row_kernel_for_full_and_partial_tiles() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
        ] {
            for (n_rows, blocks) in [(8, 18), (5, 3), (1, 1), (8, 64)] {
                let n = blocks * 32;
                let rows: Vec<Vec<u8>> =
                    (0..n_rows).map(|r| q(ty, &row(r as u32 + 1, n))).collect();
                let mut act = vec![0u8; vec_dot_type(ty).bytes_for(n).unwrap()];
                quantize_activations(vec_dot_type(ty), &row(99, n), &mut act).unwrap();
                let mut tile = Tile::default();
                tile.load(ty, &rows.iter().map(|r| r.as_slice()).collect::<Vec<_>>());
                let got = tile.dot(&act);
                let scalar = tile.dot_scalar(&act);
                let kernel = RowDot::new(ty, n);
                for r in 0..TILE_ROWS {
                    if r >= n_rows {
                        assert_eq!(got[r], 0.0);
                        continue;
                    }
                    let expect = kernel.dot(&rows[r], &act);
                    let bound = TILE_TOL * (1.0 + expect.abs());
                    assert!(
                        (got[r] - expect).abs() <= bound,
                        "{ty} row {r}: {} vs {expect}",
                        got[r]
                    );
                    assert!(
                        (scalar[r] - expect).abs() <= bound,
                        "{ty} scalar row {r}: {} vs {expect}",
                        scalar[r]
                    );
                }
            }
        }
    }
}
