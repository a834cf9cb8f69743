//! Eight weight rows against many activation rows (prompt processing), with the weights
//! unpacked once per tile: 4-bit quants widened to bytes and block scales converted to f32,
//! laid out so that one vector lane belongs to one weight row. Each block then costs one
//! `maddubs`/`madd` per row and a single scale multiply for all eight, where the row-at-a-time
//! kernel pays the unpacking and the scaling again for every activation row. This is the idea
//! of llama.cpp's repacked GEMM kernels (`ggml-cpu/repack.cpp`), done per tile at run time,
//! from the rows as stored or from their packed groups (`super::packed`). Supports Q4_0,
//! Q4_1, Q5_0 and Q8_0, with AVX2 (and AVX-512 VNNI) kernels on x86-64 and NEON kernels on
//! AArch64 (`super::tile_neon`: the same lane-per-row sums, four rows to a register).

use super::blocks::{as_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};
#[cfg(target_arch = "aarch64")]
use super::tile_neon;
#[cfg(target_arch = "x86_64")]
use super::{tile_avx2, tile_vnni};
use kiln_gguf::GgmlType;

/// Weight rows per tile: one per f32 lane of an AVX2 register (two NEON registers).
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
    /// Whether `quants` is in the interleaved layout of the VNNI kernels
    /// (`tile_vnni::interleave`), with its per-block `corrections`.
    interleaved: bool,
    // Filled where the tile is interleaved, which only the x86 kernels do.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    corrections: Vec<[i32; TILE_ROWS]>,
    /// Rows unpacked from a packed group where the tile is not interleaved.
    rows_scratch: Vec<u8>,
}

/// Whether [`Tile`] handles weights of `ty` on this CPU: AVX2 on x86-64, NEON on AArch64
/// (neither under `KILN_FORCE_SCALAR=1`).
pub fn supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0)
        && (super::simd_available() || super::neon_available())
}

/// Whether the AVX-512 VNNI flavour of the kernels runs (same results, fewer instructions):
/// the CPU has AVX512-VNNI and AVX512-VL on top of the AVX2 set, and `KILN_NO_AVX512` is not
/// `1`. Decided once per process.
pub fn vnni_available() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let disabled = std::env::var("KILN_NO_AVX512").is_ok_and(|v| v == "1");
            !disabled
                && super::simd_available()
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Activation rows prepared once per matrix product for [`Tile::dot_many`]. Where the tiles
/// are interleaved (VNNI), it also holds a copy whose quants are biased to unsigned
/// (`y + 128`), which the kernels would otherwise redo for every tile of the matrix.
pub struct Activations<'a> {
    raw: &'a [u8],
    // Empty without the x86 VNNI kernels, its only readers.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    biased: Vec<u8>,
    row_bytes: usize,
    rows: usize,
}

impl<'a> Activations<'a> {
    /// `rows` rows of `row_bytes` bytes at the start of `raw`, in the activation format of
    /// weights of type `ty`.
    pub fn new(ty: GgmlType, raw: &'a [u8], row_bytes: usize, rows: usize) -> Activations<'a> {
        let raw = &raw[..rows * row_bytes];
        let mut biased = Vec::new();
        if supported(ty) && vnni_available() {
            biased.extend_from_slice(raw);
            // The 32 quants end each block of Q8_0 and Q8_1.
            let block = super::vec_dot_type(ty).type_size();
            for b in biased.chunks_exact_mut(block) {
                b[block - 32..].iter_mut().for_each(|q| *q ^= 0x80);
            }
        }
        Activations { raw, biased, row_bytes, rows }
    }
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
    /// Missing rows are zero. Where the CPU has VNNI the tile is laid out for its kernels.
    pub fn load(&mut self, ty: GgmlType, rows: &[&[u8]]) {
        self.load_with(ty, rows, vnni_available());
    }

    /// Loads the eight rows of a packed group (`super::packed`, Q4_0, Q4_1, Q5_0 or Q8_0; rows of
    /// `row_bytes`): the same tile as [`Tile::load`] on the rows themselves.
    pub fn load_packed(&mut self, ty: GgmlType, group: &[u8], row_bytes: usize) {
        #[cfg(target_arch = "x86_64")]
        if vnni_available() {
            let blocks = row_bytes / ty.type_size();
            self.ty = Some(ty);
            self.blocks = blocks;
            self.quants.resize(blocks * TILE_ROWS, [0; 32]);
            self.scales.resize(blocks, [0.0; TILE_ROWS]);
            self.mins.resize(blocks, [0.0; TILE_ROWS]);
            self.corrections.resize(blocks, [0; TILE_ROWS]);
            self.interleaved = true;
            // SAFETY: vnni_available() checked the VNNI set; storage resized to `blocks`
            // blocks, and a packed group of such rows holds as many.
            unsafe {
                tile_vnni::load_packed(
                    ty,
                    group,
                    &mut self.quants,
                    &mut self.scales,
                    &mut self.mins,
                    &mut self.corrections,
                )
            };
            return;
        }
        let mut scratch = std::mem::take(&mut self.rows_scratch);
        scratch.resize(TILE_ROWS * row_bytes, 0);
        super::packed::unpack_group(ty, group, row_bytes, &mut scratch);
        let rows: [&[u8]; TILE_ROWS] = std::array::from_fn(|k| &scratch[k * row_bytes..(k + 1) * row_bytes]);
        self.load(ty, &rows);
        self.rows_scratch = scratch;
    }

    /// [`Tile::load`], interleaved for the VNNI kernels or not (the caller checked VNNI).
    fn load_with(&mut self, ty: GgmlType, rows: &[&[u8]], interleave: bool) {
        self.interleaved = false;
        assert!(rows.len() <= TILE_ROWS);
        let row_len = rows.first().map_or(0, |r| r.len());
        let blocks = row_len / ty.type_size();
        self.ty = Some(ty);
        self.blocks = blocks;
        // Reused storage: only rows that are not loaded need clearing.
        self.quants.resize(blocks * TILE_ROWS, [0; 32]);
        self.scales.resize(blocks, [0.0; TILE_ROWS]);
        self.mins.resize(blocks, [0.0; TILE_ROWS]);
        for r in rows.len()..TILE_ROWS {
            self.quants.iter_mut().skip(r).step_by(TILE_ROWS).for_each(|q| *q = [0; 32]);
            self.scales.iter_mut().for_each(|s| s[r] = 0.0);
            self.mins.iter_mut().for_each(|m| m[r] = 0.0);
        }
        #[cfg(target_arch = "x86_64")]
        if super::simd_available() {
            for (r, row) in rows.iter().enumerate() {
                // SAFETY: simd_available() checked AVX2, FMA and F16C; the storage holds
                // `blocks` blocks, the length of every row.
                unsafe {
                    tile_avx2::unpack_row(
                        ty,
                        &row[..blocks * ty.type_size()],
                        r,
                        &mut self.quants,
                        &mut self.scales,
                        &mut self.mins,
                    )
                };
            }
            if interleave {
                self.corrections.resize(blocks, [0; TILE_ROWS]);
                // SAFETY: the caller checked vnni_available(); `quants` holds `blocks` blocks.
                unsafe { tile_vnni::interleave(&mut self.quants, &mut self.corrections, offset(ty) as i8) };
                self.interleaved = true;
            }
            return;
        }
        // Only the x86 (VNNI) kernels read the interleaved layout.
        #[cfg(not(target_arch = "x86_64"))]
        let _ = interleave;
        // The type is matched once per row, so that the block loops inline and vectorize.
        for (r, row) in rows.iter().enumerate() {
            let quant_rows = self.quants.iter_mut().skip(r).step_by(TILE_ROWS);
            let scales = self.scales.iter_mut().map(|s| &mut s[r]);
            match ty {
                GgmlType::Q4_0 => {
                    for ((blk, q), d) in as_blocks::<BlockQ4_0>(row).iter().zip(quant_rows).zip(scales) {
                        unpack_nibbles(&blk.qs, q);
                        *d = blk.d.to_f32();
                    }
                }
                GgmlType::Q4_1 => {
                    let mins = self.mins.iter_mut().map(|m| &mut m[r]);
                    for (((blk, q), d), m) in as_blocks::<BlockQ4_1>(row).iter().zip(quant_rows).zip(scales).zip(mins) {
                        unpack_nibbles(&blk.qs, q);
                        (*d, *m) = (blk.d.to_f32(), blk.m.to_f32());
                    }
                }
                GgmlType::Q5_0 => {
                    for ((blk, q), d) in as_blocks::<BlockQ5_0>(row).iter().zip(quant_rows).zip(scales) {
                        unpack_nibbles(&blk.qs, q);
                        let high = u32::from_le_bytes(blk.qh);
                        for (j, v) in q.iter_mut().enumerate() {
                            *v |= (((high >> j) & 1) << 4) as u8;
                        }
                        *d = blk.d.to_f32();
                    }
                }
                GgmlType::Q8_0 => {
                    for ((blk, q), d) in as_blocks::<BlockQ8_0>(row).iter().zip(quant_rows).zip(scales) {
                        *q = blk.qs.map(|v| v as u8);
                        *d = blk.d.to_f32();
                    }
                }
                other => panic!("{other} has no tile kernel (check tile::supported)"),
            }
        }
    }

    /// The dot product of every tile row with one activation row (in the weight type's
    /// activation format: Q8_1 for Q4_1, Q8_0 otherwise; same length). Rows past those loaded
    /// give 0.
    pub fn dot(&self, activations: &[u8]) -> [f32; TILE_ROWS] {
        self.dot_with(activations, vnni_available())
    }

    /// The dot products of every tile row with every row of `acts`, handed to
    /// `out(t, products of row t)`. The interleaved layout takes four activation rows per
    /// pass over the weights.
    pub fn dot_many(&self, acts: &Activations, mut out: impl FnMut(usize, &[f32; TILE_ROWS])) {
        // Only the x86 interleaved pass moves it before the row-at-a-time loop.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut t = 0;
        #[cfg(target_arch = "x86_64")]
        if self.interleaved {
            assert!(!acts.biased.is_empty(), "activations prepared for the interleaved kernels");
            let row = |t: usize| &acts.biased[t * acts.row_bytes..(t + 1) * acts.row_bytes];
            let q4_1 = self.ty == Some(GgmlType::Q4_1);
            // SAFETY (both): an interleaved tile exists only where vnni_available() held;
            // lengths checked in `act`.
            while t + 4 <= acts.rows {
                let rows = [row(t), row(t + 1), row(t + 2), row(t + 3)];
                let products = unsafe {
                    if q4_1 {
                        tile_vnni::interleaved_q4_1::<4, true>(self, rows.map(|r| self.act(r)))
                    } else {
                        tile_vnni::interleaved_q8_0::<4, true>(self, rows.map(|r| self.act(r)))
                    }
                };
                for (k, p) in products.iter().enumerate() {
                    out(t + k, p);
                }
                t += 4;
            }
            for t in t..acts.rows {
                let products = unsafe {
                    if q4_1 {
                        tile_vnni::interleaved_q4_1::<1, true>(self, [self.act(row(t))])
                    } else {
                        tile_vnni::interleaved_q8_0::<1, true>(self, [self.act(row(t))])
                    }
                };
                out(t, &products[0]);
            }
            return;
        }
        for t in t..acts.rows {
            out(t, &self.dot(&acts.raw[t * acts.row_bytes..(t + 1) * acts.row_bytes]));
        }
    }

    /// [`Tile::dot`] with the VNNI flavour chosen by the caller (which must have checked it);
    /// an interleaved tile always takes the VNNI kernels.
    fn dot_with(&self, activations: &[u8], vnni: bool) -> [f32; TILE_ROWS] {
        #[cfg(target_arch = "x86_64")]
        let ty = self.ty.expect("a loaded tile");
        #[cfg(target_arch = "x86_64")]
        if self.interleaved {
            // SAFETY: an interleaved tile exists only where vnni_available() held; lengths
            // checked in `act`.
            return unsafe {
                match ty {
                    GgmlType::Q4_1 => tile_vnni::interleaved_q4_1::<1, false>(self, [self.act(activations)])[0],
                    _ => tile_vnni::interleaved_q8_0::<1, false>(self, [self.act(activations)])[0],
                }
            };
        }
        #[cfg(target_arch = "x86_64")]
        if super::simd_available() {
            let off = offset(ty) as i8;
            // SAFETY: simd_available() checked AVX2, FMA and F16C, vnni_available() the VNNI
            // set; lengths checked in `act`.
            unsafe {
                return match (ty, vnni) {
                    (GgmlType::Q4_1, false) => tile_avx2::tile_q4_1(self, self.act(activations)),
                    (GgmlType::Q8_0, false) => tile_avx2::tile_q8_0(self, self.act(activations)),
                    (_, false) => tile_avx2::tile_offset(self, self.act(activations), off),
                    (GgmlType::Q4_1, true) => tile_vnni::tile_q4_1(self, self.act(activations)),
                    (GgmlType::Q8_0, true) => tile_vnni::tile_q8_0(self, self.act(activations)),
                    (_, true) => tile_vnni::tile_offset(self, self.act(activations), off),
                };
            }
        }
        #[cfg(target_arch = "aarch64")]
        if super::neon_available() {
            // A NEON tile is never interleaved (no VNNI here).
            let _ = vnni;
            let ty = self.ty.expect("a loaded tile");
            return match ty {
                GgmlType::Q4_1 => tile_neon::tile_q4_1(self, self.act(activations)),
                _ => tile_neon::tile_offset(self, self.act(activations), offset(ty) as i8),
            };
        }
        let _ = vnni;
        self.dot_scalar(activations)
    }

    /// The 32 quants of block `b` of each row.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub(super) fn quants(&self, b: usize) -> &[[u8; 32]] {
        &self.quants[b * TILE_ROWS..(b + 1) * TILE_ROWS]
    }

    /// The scales of block `b` of each row.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub(super) fn scales(&self, b: usize) -> &[f32; TILE_ROWS] {
        &self.scales[b]
    }

    /// The start values of block `b`'s integer sums (interleaved layout).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn corrections(&self, b: usize) -> &[i32; TILE_ROWS] {
        &self.corrections[b]
    }

    /// The minimums of block `b` of each row (Q4_1).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub(super) fn mins(&self, b: usize) -> &[f32; TILE_ROWS] {
        &self.mins[b]
    }

    fn act<'a, B: super::blocks::Block>(&self, activations: &'a [u8]) -> &'a [B] {
        let act: &[B] = as_blocks(activations);
        assert_eq!(act.len(), self.blocks, "activation row length");
        act
    }

    /// The plain version, which the AVX2 and NEON ones are tested against.
    pub fn dot_scalar(&self, activations: &[u8]) -> [f32; TILE_ROWS] {
        assert!(!self.interleaved, "dot_scalar reads the row layout");
        let ty = self.ty.expect("a loaded tile");
        let mut out = [0f32; TILE_ROWS];
        let (signed, off) = (ty == GgmlType::Q8_0, offset(ty));
        let acts: Vec<(f32, f32, &[i8; 32])> = if ty == GgmlType::Q4_1 {
            self.act::<BlockQ8_1>(activations).iter().map(|y| (y.d.to_f32(), y.s.to_f32(), &y.qs)).collect()
        } else {
            self.act::<BlockQ8_0>(activations).iter().map(|y| (y.d.to_f32(), 0.0, &y.qs)).collect()
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

/// The dot products of up to [`TILE_ROWS`] weight rows (whole rows of `ty`, the same length)
/// with one activation row, the weights read where they lie: for one or two activation rows,
/// where unpacking a [`Tile`] would not pay. Gives exactly the bits [`Tile::dot`] gives for
/// the same rows, so results do not depend on which path a matrix product takes. Rows past
/// `rows.len()` give unspecified values. `next` (the rows to be read after these, or
/// nothing) is prefetched along the way (on x86). Needs [`supported`]`(ty)`.
pub fn dot_in_place(ty: GgmlType, rows: &[&[u8]], activations: &[u8], next: &[u8]) -> [f32; TILE_ROWS] {
    dot_in_place_with(ty, rows, activations, next, vnni_available())
}

/// [`dot_in_place`] with the VNNI flavour chosen by the caller (which must have checked it).
fn dot_in_place_with(ty: GgmlType, rows: &[&[u8]], activations: &[u8], next: &[u8], vnni: bool) -> [f32; TILE_ROWS] {
    assert!(supported(ty), "{ty} has no tile kernel on this CPU");
    assert!(!rows.is_empty() && rows.len() <= TILE_ROWS);
    let row_bytes = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == row_bytes), "rows of one length");
    let blocks = row_bytes / ty.type_size();
    #[cfg(target_arch = "x86_64")]
    {
        // Missing rows repeat the first, so that the kernels always read eight whole rows.
        let ptrs: [*const u8; TILE_ROWS] = std::array::from_fn(|r| rows.get(r).unwrap_or(&rows[0]).as_ptr());
        let ahead = tile_avx2::Ahead::new(next, blocks);
        // SAFETY: supported() checked AVX2, FMA and F16C (vnni_available() the VNNI set);
        // every pointer starts a row of `blocks` blocks of `ty`, and the activations are
        // checked to have as many.
        unsafe {
            if ty == GgmlType::Q4_1 {
                let act: &[BlockQ8_1] = as_blocks(activations);
                assert_eq!(act.len(), blocks, "activation row length");
                return if vnni {
                    tile_vnni::in_place_q4_1(ptrs.map(|p| p.cast()), act, &ahead)
                } else {
                    tile_avx2::in_place_q4_1(ptrs.map(|p| p.cast()), act, &ahead)
                };
            }
            let act: &[BlockQ8_0] = as_blocks(activations);
            assert_eq!(act.len(), blocks, "activation row length");
            match (ty, vnni) {
                (GgmlType::Q4_0, false) => tile_avx2::in_place_q4_0(ptrs.map(|p| p.cast()), act, &ahead),
                (GgmlType::Q5_0, false) => tile_avx2::in_place_q5_0(ptrs.map(|p| p.cast()), act, &ahead),
                (_, false) => tile_avx2::in_place_q8_0(ptrs.map(|p| p.cast()), act, &ahead),
                (GgmlType::Q4_0, true) => tile_vnni::in_place_q4_0(ptrs.map(|p| p.cast()), act, &ahead),
                (GgmlType::Q5_0, true) => tile_vnni::in_place_q5_0(ptrs.map(|p| p.cast()), act, &ahead),
                (_, true) => tile_vnni::in_place_q8_0(ptrs.map(|p| p.cast()), act, &ahead),
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // No prefetching (the NEON kernels read eight rows without hints) and no VNNI.
        let _ = (next, vnni);
        // Missing rows repeat the first, as on x86.
        fn eight<'a, B: super::blocks::Block>(rows: &[&'a [u8]]) -> [&'a [B]; TILE_ROWS] {
            std::array::from_fn(|r| as_blocks(rows.get(r).unwrap_or(&rows[0])))
        }
        if ty == GgmlType::Q4_1 {
            let act: &[BlockQ8_1] = as_blocks(activations);
            assert_eq!(act.len(), blocks, "activation row length");
            return tile_neon::in_place_q4_1(eight(rows), act);
        }
        let act: &[BlockQ8_0] = as_blocks(activations);
        assert_eq!(act.len(), blocks, "activation row length");
        match ty {
            GgmlType::Q4_0 => tile_neon::in_place_q4_0(eight(rows), act),
            GgmlType::Q5_0 => tile_neon::in_place_q5_0(eight(rows), act),
            _ => tile_neon::in_place_q8_0(eight(rows), act),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (blocks, activations, next, vnni);
        unreachable!("supported() is false without the x86 or AArch64 kernels")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_activations, quantize_row, vec_dot_type, RowDot};

    /// Float reassociation only (the integer sums are exact): relative to 1 + |result|.
    const TILE_TOL: f32 = 1e-4;

    fn row(seed: u32, n: usize) -> Vec<f32> {
        crate::test_values(seed.wrapping_mul(2654435761), n)
    }

    fn q(ty: GgmlType, x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; ty.bytes_for(x.len()).unwrap()];
        quantize_row(ty, x, &mut out).unwrap();
        out
    }

    #[test]
    fn tile_matches_row_kernel_for_full_and_partial_tiles() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            for (n_rows, blocks) in [(8, 18), (5, 3), (1, 1), (8, 64), (3, 7), (7, 5)] {
                let n = blocks * 32;
                let rows: Vec<Vec<u8>> = (0..n_rows).map(|r| q(ty, &row(r as u32 + 1, n))).collect();
                let mut act = vec![0u8; vec_dot_type(ty).bytes_for(n).unwrap()];
                quantize_activations(vec_dot_type(ty), &row(99, n), &mut act).unwrap();
                let mut tile = Tile::default();
                // The row layout: `dot_scalar` reads it.
                tile.load_with(ty, &rows.iter().map(|r| r.as_slice()).collect::<Vec<_>>(), false);
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
                    assert!((got[r] - expect).abs() <= bound, "{ty} row {r}: {} vs {expect}", got[r]);
                    assert!((scalar[r] - expect).abs() <= bound, "{ty} scalar row {r}: {} vs {expect}", scalar[r]);
                }
            }
        }
    }

    #[test]
    fn tiles_run_wherever_there_are_simd_kernels() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            let simd = if cfg!(target_arch = "aarch64") {
                crate::quant::neon_available()
            } else {
                crate::quant::simd_available()
            };
            assert_eq!(supported(ty), simd, "{ty}");
            assert_eq!(crate::quant::packed::packable(ty), simd, "{ty}");
        }
        assert!(!supported(GgmlType::Q4K) && !supported(GgmlType::F32));
    }

    #[test]
    fn in_place_rows_give_the_bits_of_the_unpacked_tile() {
        use crate::quant::packed;
        if !supported(GgmlType::Q4_0) {
            return; // KILN_FORCE_SCALAR=1 (or no AVX2): the tile kernels are never used
        }
        // Both kernel flavours and both tile layouts where the CPU has VNNI; AVX2 or NEON always.
        let flavours: &[bool] = if vnni_available() { &[false, true] } else { &[false] };
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            for (n_rows, blocks) in [(8, 18), (3, 5), (1, 1), (8, 64), (7, 2), (5, 7), (7, 13), (8, 37)] {
                let n = blocks * 32;
                let rows: Vec<Vec<u8>> = (0..n_rows).map(|r| q(ty, &row(7 * r as u32 + 3, n))).collect();
                let rows: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
                let act_ty = vec_dot_type(ty);
                let act_bytes = act_ty.bytes_for(n).unwrap();
                let mut acts = vec![0u8; 6 * act_bytes];
                for (t, a) in acts.chunks_exact_mut(act_bytes).enumerate() {
                    // Every other row with a few large values, so that sums reach the edges
                    // of their ranges.
                    let x: Vec<f32> = row(5 + t as u32 * 31, n)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| if t % 2 == 1 && i % 5 == 0 { 100.0 * v } else { *v })
                        .collect();
                    quantize_activations(act_ty, &x, a).unwrap();
                }
                // The rows packed into a group (missing rows repeat the first): its kernels and
                // its plain reference must give the same bits for the rows that exist.
                let row_bytes = rows[0].len();
                let mut group_rows = vec![0u8; TILE_ROWS * row_bytes];
                for (k, dst) in group_rows.chunks_exact_mut(row_bytes).enumerate() {
                    dst.copy_from_slice(rows.get(k).unwrap_or(&rows[0]));
                }
                let group = packed::PackedRows::pack(ty, &group_rows, TILE_ROWS, row_bytes, |_| {});
                for (t, act) in acts.chunks_exact(act_bytes).enumerate() {
                    let reference = dot_in_place_with(ty, &rows, act, &[], false);
                    let mut sums = vec![];
                    if packed::wants_sums(ty) {
                        packed::activation_sums(act, &mut sums);
                    }
                    let from_group = packed::dot_group(&group, 0, act, &sums, &[]);
                    let plain = packed::dot_group_scalar(ty, group.group(0), act);
                    let kernel = RowDot::new(ty, n);
                    for r in 0..n_rows {
                        let what = format!("{ty} {n_rows}x{blocks} act {t} row {r}");
                        assert_eq!(
                            from_group[r].to_bits(),
                            reference[r].to_bits(),
                            "{what}: packed group {} vs {}",
                            from_group[r],
                            reference[r]
                        );
                        assert_eq!(
                            plain[r].to_bits(),
                            reference[r].to_bits(),
                            "{what}: plain reference {} vs {}",
                            plain[r],
                            reference[r]
                        );
                        let expect = kernel.dot(rows[r], act);
                        assert!(
                            (reference[r] - expect).abs() <= TILE_TOL * (1.0 + expect.abs()),
                            "{what}: {} vs the row kernel's {expect}",
                            reference[r]
                        );
                    }
                    for &vnni in flavours {
                        let mut tile = Tile::default();
                        tile.load_with(ty, &rows, vnni);
                        let unpacked = tile.dot_with(act, vnni);
                        let in_place = dot_in_place_with(ty, &rows, act, &[], vnni);
                        let mut many = [0f32; TILE_ROWS];
                        tile.dot_many(&Activations::new(ty, &acts, act_bytes, 6), |u, v| {
                            if u == t {
                                many = *v;
                            }
                        });
                        for r in 0..n_rows {
                            let what = format!("{ty} {n_rows}x{blocks} act {t} row {r}, vnni {vnni}");
                            assert_eq!(unpacked[r].to_bits(), reference[r].to_bits(), "{what}: unpacked");
                            assert_eq!(in_place[r].to_bits(), reference[r].to_bits(), "{what}: in place");
                            assert_eq!(many[r].to_bits(), reference[r].to_bits(), "{what}: many rows");
                        }
                        for (r, &v) in unpacked.iter().enumerate().skip(n_rows) {
                            assert_eq!(v, 0.0, "{ty} vnni {vnni}: missing row {r}");
                        }
                    }
                }
            }
        }
    }
}
