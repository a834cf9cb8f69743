//! Eight weight rows against many activation rows (prompt processing), with the weights
//! unpacked once per tile: 4-bit quants widened to bytes and block scales converted to f32,
//! laid out so that one vector lane belongs to one weight row. Each block then costs one
//! `maddubs`/`madd` per row and a single scale multiply for all eight, where the row-at-a-time
//! kernel pays the unpacking and the scaling again for every activation row. This is the idea
//! of llama.cpp's repacked GEMM kernels (`ggml-cpu/repack.cpp`), done per tile at run time so
//! the weights stay as they are in the mapped file. Supports Q4_1 (the default model).

use super::blocks::{as_blocks, BlockQ4_1, BlockQ8_1};
use kiln_gguf::GgmlType;

/// Weight rows per tile: one per f32 lane of an AVX2 register.
pub const TILE_ROWS: usize = 8;

/// Up to [`TILE_ROWS`] Q4_1 rows, unpacked. Reused from tile to tile (no allocation once grown).
#[derive(Default)]
pub struct Q4_1Tile {
    blocks: usize,
    /// `[block][row]`: the 32 quants of that block of that row, one byte each.
    quants: Vec<[u8; 32]>,
    /// `[block][row]`: scale and minimum.
    scales: Vec<[f32; TILE_ROWS]>,
    mins: Vec<[f32; TILE_ROWS]>,
}

/// Whether [`Q4_1Tile`] handles weights of `ty` on this CPU.
pub fn supported(ty: GgmlType) -> bool {
    ty == GgmlType::Q4_1 && super::simd_available()
}

impl Q4_1Tile {
    /// Unpacks `rows` (each a whole Q4_1 row of the same length; at most [`TILE_ROWS`]).
    /// Missing rows are zero.
    pub fn load(&mut self, rows: &[&[u8]]) {
        assert!(rows.len() <= TILE_ROWS);
        let blocks = rows.first().map_or(0, |r| r.len() / size_of::<BlockQ4_1>());
        self.blocks = blocks;
        self.quants.clear();
        self.quants.resize(blocks * TILE_ROWS, [0; 32]);
        self.scales.clear();
        self.scales.resize(blocks, [0.0; TILE_ROWS]);
        self.mins.clear();
        self.mins.resize(blocks, [0.0; TILE_ROWS]);
        for (r, row) in rows.iter().enumerate() {
            let row: &[BlockQ4_1] = as_blocks(row);
            for (b, blk) in row.iter().enumerate() {
                let q = &mut self.quants[b * TILE_ROWS + r];
                for (i, &byte) in blk.qs.iter().enumerate() {
                    q[i] = byte & 0x0f;
                    q[i + 16] = byte >> 4;
                }
                self.scales[b][r] = blk.d.to_f32();
                self.mins[b][r] = blk.m.to_f32();
            }
        }
    }

    /// The dot product of every tile row with one activation row (Q8_1, same length).
    pub fn dot(&self, activations: &[u8]) -> [f32; TILE_ROWS] {
        let act: &[BlockQ8_1] = as_blocks(activations);
        assert_eq!(act.len(), self.blocks, "activation row length");
        #[cfg(target_arch = "x86_64")]
        if super::simd_available() {
            // SAFETY: simd_available() checked AVX2, FMA and F16C; lengths checked above.
            return unsafe { avx2::dot(self, act) };
        }
        self.dot_scalar(act)
    }

    /// The plain version, which the AVX2 one is tested against.
    pub fn dot_scalar(&self, act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
        let mut out = [0f32; TILE_ROWS];
        for (b, y) in act.iter().enumerate() {
            let (dy, sy) = (y.d.to_f32(), y.s.to_f32());
            for (r, o) in out.iter_mut().enumerate() {
                let q = &self.quants[b * TILE_ROWS + r];
                let sum: i32 = q.iter().zip(&y.qs).map(|(&a, &b)| a as i32 * b as i32).sum();
                *o += self.scales[b][r] * dy * sum as f32 + self.mins[b][r] * sy;
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockQ8_1, Q4_1Tile, TILE_ROWS};
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
        _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(b0, b1), _mm256_permute2x128_si256::<0x31>(b0, b1))
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `act` has the tile's number of blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(tile: &Q4_1Tile, act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_row, RowDot};

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
        for (n_rows, blocks) in [(8, 18), (5, 3), (1, 1), (8, 64)] {
            let n = blocks * 32;
            let rows: Vec<Vec<u8>> = (0..n_rows).map(|r| q(GgmlType::Q4_1, &row(r as u32 + 1, n))).collect();
            let act = q(GgmlType::Q8_1, &row(99, n));
            let mut tile = Q4_1Tile::default();
            tile.load(&rows.iter().map(|r| r.as_slice()).collect::<Vec<_>>());
            let got = tile.dot(&act);
            let scalar = tile.dot_scalar(as_blocks(&act));
            let kernel = RowDot::new(GgmlType::Q4_1, n);
            for r in 0..TILE_ROWS {
                if r >= n_rows {
                    assert_eq!(got[r], 0.0);
                    continue;
                }
                let expect = kernel.dot(&rows[r], &act);
                let bound = TILE_TOL * (1.0 + expect.abs());
                assert!((got[r] - expect).abs() <= bound, "row {r}: {} vs {expect}", got[r]);
                assert!((scalar[r] - expect).abs() <= bound, "scalar row {r}: {} vs {expect}", scalar[r]);
            }
        }
    }
}
