//! Weight matrices repacked once, eight rows to a group, for decoding. Generating a token
//! reads every weight row once against a single activation row, so the cost is in reading the
//! rows, not in reusing them. Read where they lie in the file, eight rows are eight streams, the
//! eight block scales must be gathered, and each row's sums end up in the wrong lanes. Packed,
//! a group is one stream: per block, the eight scales (f16, 16 bytes), then the quants with
//! four bytes of every row side by side, so that one `vpdpbusd` (or `maddubs`; on AArch64 a
//! pair of widening multiplies) against four broadcast activation bytes adds four products to
//! each row's own lane. This is the layout
//! of llama.cpp's repacked Q4_0/Q8_0 (`block_q4_0x8`), made lazily on the first product.
//!
//! The products are the same exact integer block sums, scaled and added in the same float
//! order as [`super::tile::dot_in_place`], so a packed matrix gives every row the same bits as
//! the unpacked kernels (tests check it): prompts and batches, which unpack groups back into
//! tiles, agree with decoding to the bit.
//!
//! Q4_0 (18-byte blocks: `d`, 16 bytes of nibble pairs) packs to 144 bytes per group block:
//! scales, then for step `s` in 0..4 the 32 bytes `qs[4s..4s+4]` of rows 0..8 (low nibbles
//! are elements `4s..4s+4`, high nibbles `16+4s..`). Q4_1 (20 bytes: `d`, `m`, nibbles)
//! packs to 160: the eight scales, the eight minimums, then the nibbles as Q4_0's. Q5_0 (22
//! bytes: `d`, 32 fifth bits, nibbles) packs to 176: scales, the eight rows' fifth-bit words
//! (row r in lane r), then the nibbles as Q4_0's. Q8_0 (34 bytes) packs to 272: scales, then
//! for step `s` in 0..8 the bytes `qs[4s..4s+4]` of rows 0..8.

use super::tile::TILE_ROWS;
use kiln_gguf::GgmlType;

/// Whether matrices of `ty` are packed on this CPU: the eight-row path ([`super::tile`])
/// handles `ty` here, which is where [`dot_group`] has kernels too (AVX2/VNNI on x86-64, NEON
/// on AArch64; neither under `KILN_FORCE_SCALAR=1`).
pub fn packable(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0) && super::tile::supported(ty)
}

/// Whether packing is on: it is unless `KILN_NO_REPACK=1` (for comparing the two paths).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KILN_NO_REPACK").map_or(true, |v| v != "1"))
}

/// The leading whole groups of eight rows of a matrix, packed.
pub struct PackedRows {
    /// Q4_0, Q4_1, Q5_0 or Q8_0.
    pub ty: GgmlType,
    /// Groups of eight rows.
    pub groups: usize,
    /// Blocks per row.
    pub blocks: usize,
    bytes: Vec<u8>,
}

impl PackedRows {
    /// Packs the first `8 · (rows / 8)` rows of `data` (`rows` rows of `ty`, `row_bytes`
    /// each), calling `done(byte range of data)` after each stretch of rows so the caller can
    /// let go of the source pages. Needs [`packable`]`(ty)`.
    pub fn pack(
        ty: GgmlType,
        data: &[u8],
        rows: usize,
        row_bytes: usize,
        mut done: impl FnMut(std::ops::Range<usize>),
    ) -> PackedRows {
        assert!(packable(ty), "{ty} is not packed");
        let blocks = row_bytes / ty.type_size();
        let groups = rows / TILE_ROWS;
        let group_bytes = TILE_ROWS * row_bytes;
        let mut bytes = vec![0u8; groups * group_bytes];
        // About 4 MiB of rows at a time, then the source pages go.
        let per_stretch = (4 << 20) / group_bytes + 1;
        for (k, stretch) in bytes.chunks_mut(per_stretch * group_bytes).enumerate() {
            let start = k * per_stretch * group_bytes;
            for (g, out) in stretch.chunks_exact_mut(group_bytes).enumerate() {
                let src = &data[start + g * group_bytes..][..group_bytes];
                pack_group(ty, src, row_bytes, out);
            }
            done(start..start + stretch.len());
        }
        PackedRows { ty, groups, blocks, bytes }
    }

    /// Bytes of one group (eight rows).
    fn group_bytes(&self) -> usize {
        self.bytes.len() / self.groups.max(1)
    }

    /// Group `g`, packed.
    pub fn group(&self, g: usize) -> &[u8] {
        let n = self.group_bytes();
        &self.bytes[g * n..(g + 1) * n]
    }

    /// Row `r` (one of the packed ones) as f32: what `dequantize_row` gives for the row as
    /// stored. Embedding lookups read a packed matrix here, so that the file pages released
    /// after packing stay released.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (block, _, _) = layout(self.ty);
        let mut stored = [0u8; 34];
        let group = self.group(r / TILE_ROWS);
        for (src, dst) in group.chunks_exact(block * TILE_ROWS).zip(out.chunks_exact_mut(32)) {
            unpack_block(self.ty, src, r % TILE_ROWS, &mut stored[..block]);
            super::dequantize_row(self.ty, &stored[..block], dst);
        }
    }
}

/// Block size of `ty`, the sizes of the fields before its quants (`d`; `m` for Q4_1; the
/// 32 fifth bits for Q5_0), and how many 32-byte steps of quants a packed block has. Each
/// field is packed for the eight rows side by side, in order, before the quants.
fn layout(ty: GgmlType) -> (usize, &'static [usize], usize) {
    match ty {
        GgmlType::Q4_0 => (18, &[2], 4),
        GgmlType::Q4_1 => (20, &[2, 2], 4),
        GgmlType::Q5_0 => (22, &[2, 4], 4),
        GgmlType::Q8_0 => (34, &[2], 8),
        other => panic!("{other} is not packed"),
    }
}

/// Where the bytes of row `r`'s block go in a packed group block: `(offset in the stored
/// block, offset in the packed block, length)` for each piece.
fn pieces(ty: GgmlType, r: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let (_, fields, steps) = layout(ty);
    let header: usize = fields.iter().sum();
    let fields = fields.iter().scan((0, 0), move |(stored, packed), &size| {
        let piece = (*stored, *packed + size * r, size);
        (*stored, *packed) = (*stored + size, *packed + size * TILE_ROWS);
        Some(piece)
    });
    fields.chain((0..steps).map(move |s| (header + 4 * s, header * TILE_ROWS + 32 * s + 4 * r, 4)))
}

/// Packs eight consecutive rows (`src`, `row_bytes` each) into `out` (as many bytes).
pub fn pack_group(ty: GgmlType, src: &[u8], row_bytes: usize, out: &mut [u8]) {
    let (block, _, _) = layout(ty);
    for (b, dst) in out.chunks_exact_mut(block * TILE_ROWS).enumerate() {
        for r in 0..TILE_ROWS {
            let stored = &src[r * row_bytes + b * block..][..block];
            for (from, to, n) in pieces(ty, r) {
                dst[to..to + n].copy_from_slice(&stored[from..from + n]);
            }
        }
    }
}

/// The inverse of [`pack_group`]: the eight rows, `row_bytes` each, into `out`.
pub fn unpack_group(ty: GgmlType, group: &[u8], row_bytes: usize, out: &mut [u8]) {
    let (block, _, _) = layout(ty);
    for (b, src) in group.chunks_exact(block * TILE_ROWS).enumerate() {
        for r in 0..TILE_ROWS {
            unpack_block(ty, src, r, &mut out[r * row_bytes + b * block..][..block]);
        }
    }
}

/// Row `r`'s block, as stored in its file, out of a packed group block `src`.
fn unpack_block(ty: GgmlType, src: &[u8], r: usize, out: &mut [u8]) {
    for (to, from, n) in pieces(ty, r) {
        out[to..to + n].copy_from_slice(&src[from..from + n]);
    }
}

/// What the kernels start each block's integer sums from: `Σ y` of every block of a Q8_0
/// activation row, appended to `out` (kept between calls, so decoding does not allocate).
pub fn activation_sums(activations: &[u8], out: &mut Vec<i32>) {
    out.extend(activations.chunks_exact(34).map(|b| b[2..].iter().map(|&q| q as i8 as i32).sum::<i32>()));
}

/// Whether [`dot_group`] takes activation block sums for `ty`: the x86 kernels do, to take
/// the zero point out of their unsigned products (Q4_1 has its minimums instead); the NEON
/// kernels subtract it from the quants and take none, so none are computed there.
pub fn wants_sums(ty: GgmlType) -> bool {
    cfg!(target_arch = "x86_64") && ty != GgmlType::Q4_1
}

/// The dot products of the eight rows of a packed group with one activation row (Q8_1 for
/// Q4_1, Q8_0 otherwise) whose block sums are `sums` ([`activation_sums`]; empty where not
/// [`wants_sums`]): the bits of [`super::tile::dot_in_place`] on the same rows. `next` (the
/// group to be read after this one, or nothing) is prefetched on x86.
pub fn dot_group(packed: &PackedRows, g: usize, activations: &[u8], sums: &[i32], next: &[u8]) -> [f32; TILE_ROWS] {
    dot_group_with(packed.ty, packed.group(g), activations, sums, next, super::tile::vnni_available())
}

/// [`dot_group`] on a raw group, with the VNNI flavour chosen by the caller (which must have
/// checked it).
fn dot_group_with(
    ty: GgmlType,
    group: &[u8],
    activations: &[u8],
    sums: &[i32],
    next: &[u8],
    vnni: bool,
) -> [f32; TILE_ROWS] {
    let (block, _, _) = layout(ty);
    let blocks = group.len() / (block * TILE_ROWS);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(packable(ty));
        let ahead = super::tile_avx2::Ahead::new(next, blocks);
        if ty == GgmlType::Q4_1 {
            let act: &[super::blocks::BlockQ8_1] = super::blocks::as_blocks(activations);
            assert_eq!(act.len(), blocks, "activation row length");
            // SAFETY: as below.
            return unsafe {
                if vnni {
                    super::packed_x86::q4_1_vnni(group.as_ptr(), act, &ahead)
                } else {
                    super::packed_x86::q4_1_avx2(group.as_ptr(), act, &ahead)
                }
            };
        }
        let act: &[super::blocks::BlockQ8_0] = super::blocks::as_blocks(activations);
        assert!(act.len() == blocks && sums.len() == blocks, "activation row length");
        // SAFETY: packable() checked AVX2, FMA and F16C (the caller vnni_available() for the
        // VNNI set); the group holds `blocks` packed blocks and the activations as many.
        unsafe {
            match (ty, vnni) {
                (GgmlType::Q4_0, false) => super::packed_x86::q4_0_avx2(group.as_ptr(), act, sums, &ahead),
                (GgmlType::Q4_0, true) => super::packed_x86::q4_0_vnni(group.as_ptr(), act, sums, &ahead),
                (GgmlType::Q5_0, false) => super::packed_x86::q5_0_avx2(group.as_ptr(), act, sums, &ahead),
                (GgmlType::Q5_0, true) => super::packed_x86::q5_0_vnni(group.as_ptr(), act, sums, &ahead),
                (_, false) => super::packed_x86::q8_0_avx2(group.as_ptr(), act, &ahead),
                (_, true) => super::packed_x86::q8_0_vnni(group.as_ptr(), act, sums, &ahead),
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if super::neon_available() {
        let _ = (sums, next, vnni);
        if ty == GgmlType::Q4_1 {
            let act: &[super::blocks::BlockQ8_1] = super::blocks::as_blocks(activations);
            assert_eq!(act.len(), blocks, "activation row length");
            return super::packed_neon::q4_1(group, act);
        }
        let act: &[super::blocks::BlockQ8_0] = super::blocks::as_blocks(activations);
        assert_eq!(act.len(), blocks, "activation row length");
        return match ty {
            GgmlType::Q4_0 => super::packed_neon::q4_0(group, act),
            GgmlType::Q5_0 => super::packed_neon::q5_0(group, act),
            GgmlType::Q8_0 => super::packed_neon::q8_0(group, act),
            other => panic!("{other} is not packed"),
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (sums, next, vnni, blocks);
        dot_group_scalar(ty, group, activations)
    }
}

/// Whether [`dot_group_rows`] has a kernel that runs several rows of `ty` at once here.
pub fn several_rows_kernel(ty: GgmlType) -> bool {
    cfg!(target_arch = "x86_64")
        && matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
        && super::tile::vnni_available()
}

/// [`dot_group`] for `n` activation rows (`act_bytes` each, back to back; `sums` holds
/// [`PackedRows::blocks`] per row where the type takes them, else nothing): `write(t, row t's
/// eight results)`. Where there is a kernel for it, up to four rows share one unpacking of the
/// weights; every row gets the bits of its own [`dot_group`].
#[allow(clippy::too_many_arguments)]
pub fn dot_group_rows(
    packed: &PackedRows,
    g: usize,
    acts: &[u8],
    act_bytes: usize,
    n: usize,
    sums: &[i32],
    next: &[u8],
    mut write: impl FnMut(usize, &[f32; TILE_ROWS]),
) {
    let blocks = if sums.is_empty() { 0 } else { packed.blocks };
    let act = |t: usize| &acts[t * act_bytes..(t + 1) * act_bytes];
    let sum = |t: usize| &sums[t * blocks..(t + 1) * blocks];
    let mut t = 0;
    #[cfg(target_arch = "x86_64")]
    if n > 1 && several_rows_kernel(packed.ty) {
        while n - t >= 2 {
            let ahead = super::tile_avx2::Ahead::new(if t == 0 { next } else { &[] }, packed.blocks);
            if n - t >= 4 {
                let rows: [[f32; TILE_ROWS]; 4] = several(
                    packed,
                    g,
                    [t, t + 1, t + 2, t + 3].map(act),
                    [t, t + 1, t + 2, t + 3].map(sum),
                    blocks,
                    &ahead,
                );
                rows.iter().enumerate().for_each(|(k, v)| write(t + k, v));
                t += 4;
            } else {
                let rows: [[f32; TILE_ROWS]; 2] =
                    several(packed, g, [t, t + 1].map(act), [t, t + 1].map(sum), blocks, &ahead);
                rows.iter().enumerate().for_each(|(k, v)| write(t + k, v));
                t += 2;
            }
        }
    }
    while t < n {
        write(t, &dot_group(packed, g, act(t), sum(t), if t == 0 { next } else { &[] }));
        t += 1;
    }
}

/// `R` rows of [`dot_group_rows`] in one VNNI kernel (Q4_0, Q4_1 or Q8_0).
#[cfg(target_arch = "x86_64")]
fn several<const R: usize>(
    packed: &PackedRows,
    g: usize,
    acts: [&[u8]; R],
    sums: [&[i32]; R],
    blocks: usize,
    ahead: &super::tile_avx2::Ahead,
) -> [[f32; TILE_ROWS]; R] {
    use super::blocks::{as_blocks, BlockQ8_0, BlockQ8_1};
    let group = packed.group(g).as_ptr();
    // SAFETY: the caller checked VNNI (and with it AVX2, FMA, F16C); the group holds
    // `packed.blocks` blocks, and each activation row and sum list as many (asserted).
    unsafe {
        if packed.ty == GgmlType::Q4_1 {
            let y: [&[BlockQ8_1]; R] = acts.map(as_blocks);
            assert!(y.iter().all(|y| y.len() == packed.blocks), "activation row length");
            return super::packed_x86::q4_1_vnni_rows(group, y, ahead);
        }
        let y: [&[BlockQ8_0]; R] = acts.map(as_blocks);
        assert!(y.iter().all(|y| y.len() == packed.blocks), "activation row length");
        assert!(blocks == packed.blocks && sums.iter().all(|s| s.len() == blocks), "activation sums");
        match packed.ty {
            GgmlType::Q4_0 => super::packed_x86::q4_0_vnni_rows(group, y, sums, ahead),
            GgmlType::Q8_0 => super::packed_x86::q8_0_vnni_rows(group, y, sums, ahead),
            other => unreachable!("{other} has no several-row kernel"),
        }
    }
}

/// [`dot_group`] in plain Rust, the reference the SIMD kernels are tested against: per block
/// the exact integer sum of every row, then `acc = (d_w · d_y) · sum + acc` fused (and for
/// Q4_1 `mins = m · s_y + mins` fused, added at the end), as the x86 kernels do it.
pub fn dot_group_scalar(ty: GgmlType, group: &[u8], activations: &[u8]) -> [f32; TILE_ROWS] {
    use super::blocks::{as_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1};
    let (block, _, _) = layout(ty);
    let blocks = group.len() / (block * TILE_ROWS);
    assert_eq!(activations.len(), blocks * super::vec_dot_type(ty).type_size(), "activation row length");
    let (mut acc, mut mins) = ([0f32; TILE_ROWS], [0f32; TILE_ROWS]);
    let mut stored = [0u8; 34];
    let nibble_sum = |qs: &[u8; 16], off: i32, y: &[i8; 32]| -> i32 {
        (0..16)
            .map(|j| ((qs[j] & 0xF) as i32 - off) * y[j] as i32 + ((qs[j] >> 4) as i32 - off) * y[j + 16] as i32)
            .sum()
    };
    for b in 0..blocks {
        let src = &group[b * block * TILE_ROWS..][..block * TILE_ROWS];
        for r in 0..TILE_ROWS {
            unpack_block(ty, src, r, &mut stored[..block]);
            let (d, m, dy, sy, sum) = if ty == GgmlType::Q4_1 {
                let (w, y) = (&as_blocks::<BlockQ4_1>(&stored[..block])[0], &as_blocks::<BlockQ8_1>(activations)[b]);
                (w.d.to_f32(), w.m.to_f32(), y.d.to_f32(), y.s.to_f32(), nibble_sum(&w.qs, 0, &y.qs))
            } else {
                let y = &as_blocks::<BlockQ8_0>(activations)[b];
                let (d, sum) = match ty {
                    GgmlType::Q4_0 => {
                        let w = &as_blocks::<BlockQ4_0>(&stored[..block])[0];
                        (w.d, nibble_sum(&w.qs, 8, &y.qs))
                    }
                    GgmlType::Q5_0 => {
                        let w = &as_blocks::<BlockQ5_0>(&stored[..block])[0];
                        let high = u32::from_le_bytes(w.qh);
                        let q = |j: usize| {
                            let nibble = if j < 16 { w.qs[j] & 0xF } else { w.qs[j - 16] >> 4 };
                            (nibble as i32 | (((high >> j) & 1) << 4) as i32) - 16
                        };
                        (w.d, (0..32).map(|j| q(j) * y.qs[j] as i32).sum())
                    }
                    _ => {
                        let w = &as_blocks::<BlockQ8_0>(&stored[..block])[0];
                        (w.d, w.qs.iter().zip(&y.qs).map(|(&a, &v)| a as i32 * v as i32).sum())
                    }
                };
                (d.to_f32(), 0.0, y.d.to_f32(), 0.0, sum)
            };
            acc[r] = (d * dy).mul_add(sum as f32, acc[r]);
            mins[r] = m.mul_add(sy, mins[r]);
        }
    }
    if ty == GgmlType::Q4_1 {
        std::array::from_fn(|r| acc[r] + mins[r])
    } else {
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_activations, quantize_row, tile};

    use crate::test_values as values;

    fn rows_of(ty: GgmlType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let row_bytes = ty.bytes_for(cols).unwrap();
        let mut out = vec![0u8; rows * row_bytes];
        for (src, dst) in values(seed, rows * cols).chunks(cols).zip(out.chunks_mut(row_bytes)) {
            quantize_row(ty, src, dst).unwrap();
        }
        out
    }

    #[test]
    fn packing_round_trips() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            let row_bytes = ty.bytes_for(96).unwrap();
            let src = rows_of(ty, 8, 96, 3);
            let mut group = vec![0u8; src.len()];
            pack_group(ty, &src, row_bytes, &mut group);
            assert_ne!(group, src, "{ty}: the layout changes");
            let mut back = vec![0u8; src.len()];
            unpack_group(ty, &group, row_bytes, &mut back);
            assert_eq!(back, src, "{ty}");
            if packable(ty) {
                let packed = PackedRows::pack(ty, &src, 8, row_bytes, |_| {});
                for r in 0..8 {
                    let (mut want, mut got) = (vec![0f32; 96], vec![0f32; 96]);
                    crate::quant::dequantize_row(ty, &src[r * row_bytes..(r + 1) * row_bytes], &mut want);
                    packed.dequantize_row(r, &mut got);
                    assert_eq!(want, got, "{ty} row {r}");
                }
            }
        }
    }

    #[test]
    fn a_tile_loaded_from_a_packed_group_is_the_tile_of_its_rows() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            if !packable(ty) {
                return;
            }
            let act_ty = crate::quant::vec_dot_type(ty);
            let cols = 160;
            let row_bytes = ty.bytes_for(cols).unwrap();
            let data = rows_of(ty, 8, cols, 11);
            let mut group = vec![0u8; data.len()];
            pack_group(ty, &data, row_bytes, &mut group);
            let rows: Vec<&[u8]> = data.chunks(row_bytes).collect();
            let (mut from_rows, mut from_group) = (tile::Tile::default(), tile::Tile::default());
            from_rows.load(ty, &rows);
            from_group.load_packed(ty, &group, row_bytes);
            for seed in 0..3 {
                let mut act = vec![0u8; act_ty.bytes_for(cols).unwrap()];
                quantize_activations(act_ty, &values(seed + 20, cols), &mut act).unwrap();
                let (a, b) = (from_rows.dot(&act), from_group.dot(&act));
                assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "{ty}");
            }
        }
    }

    /// The packed kernels of this target (AVX2/VNNI on x86, NEON on AArch64) give the bits of
    /// [`dot_group_scalar`] on random data, for block counts of no particular shape and
    /// matrices whose row count is not a multiple of eight (the tail rows stay unpacked); the
    /// reference itself is checked against the row kernel.
    #[test]
    fn packed_kernels_give_the_bits_of_the_scalar_reference() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            let mut flavours = vec![];
            if cfg!(target_arch = "x86_64") && packable(ty) {
                flavours.push(false);
                if tile::vnni_available() {
                    flavours.push(true);
                }
            }
            if cfg!(target_arch = "aarch64") && crate::quant::neon_available() {
                flavours.push(false);
            }
            let act_ty = crate::quant::vec_dot_type(ty);
            for (rows, blocks) in [(8, 1), (13, 7), (21, 13), (19, 37)] {
                let cols = 32 * blocks;
                let row_bytes = ty.bytes_for(cols).unwrap();
                let data = rows_of(ty, rows, cols, 31 * rows as u32 + blocks as u32);
                let kernel = crate::quant::RowDot::new(ty, cols);
                for g in 0..rows / TILE_ROWS {
                    let src = &data[g * TILE_ROWS * row_bytes..][..TILE_ROWS * row_bytes];
                    let mut group = vec![0u8; src.len()];
                    pack_group(ty, src, row_bytes, &mut group);
                    for seed in 0..3u32 {
                        let x: Vec<f32> = values(100 * seed + blocks as u32, cols)
                            .iter()
                            .enumerate()
                            .map(|(i, v)| if i % 5 == seed as usize { 100.0 * v } else { *v })
                            .collect();
                        let mut act = vec![0u8; act_ty.bytes_for(cols).unwrap()];
                        quantize_activations(act_ty, &x, &mut act).unwrap();
                        let mut sums = vec![];
                        if wants_sums(ty) {
                            activation_sums(&act, &mut sums);
                        }
                        let reference = dot_group_scalar(ty, &group, &act);
                        for (r, want) in reference.iter().enumerate() {
                            let row = kernel.dot(&src[r * row_bytes..][..row_bytes], &act);
                            assert!(
                                (want - row).abs() <= 1e-4 * (1.0 + row.abs()),
                                "{ty} row {r}: {want} vs the row kernel's {row}"
                            );
                        }
                        for &vnni in &flavours {
                            let got = dot_group_with(ty, &group, &act, &sums, &[], vnni);
                            for r in 0..TILE_ROWS {
                                assert_eq!(got[r].to_bits(), reference[r].to_bits(), "{ty} {rows} rows x {blocks} blocks, group {g} act {seed} row {r} vnni {vnni}: {} vs {}", got[r], reference[r]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packed_rows_give_the_bits_of_the_in_place_kernels() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            if !packable(ty) {
                return;
            }
            let act_ty = crate::quant::vec_dot_type(ty);
            for cols in [32, 96, 576, 2048] {
                let rows = 24 + 3; // three groups and a tail that stays unpacked
                let row_bytes = ty.bytes_for(cols).unwrap();
                let data = rows_of(ty, rows, cols, cols as u32);
                let mut released = Vec::new();
                let packed = PackedRows::pack(ty, &data, rows, row_bytes, |r| released.push(r));
                assert_eq!(packed.groups, 3);
                assert_eq!(released.first().map(|r| r.start), Some(0));
                assert_eq!(released.last().map(|r| r.end), Some(24 * row_bytes));
                let mut act = vec![0u8; act_ty.bytes_for(cols).unwrap()];
                // Large activations included, so that sums reach the edges of their ranges.
                let x: Vec<f32> = values(7 + cols as u32, cols)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| if i % 7 == 0 { 100.0 * v } else { *v })
                    .collect();
                quantize_activations(act_ty, &x, &mut act).unwrap();
                let mut sums = vec![];
                if wants_sums(ty) {
                    activation_sums(&act, &mut sums);
                }
                for g in 0..packed.groups {
                    let rows: Vec<&[u8]> = (0..8).map(|k| &data[(8 * g + k) * row_bytes..][..row_bytes]).collect();
                    let mut flavours = vec![false];
                    if tile::vnni_available() {
                        flavours.push(true);
                    }
                    let reference = tile::dot_in_place(ty, &rows, &act, &[]);
                    for vnni in flavours {
                        let got = dot_group_with(ty, packed.group(g), &act, &sums, &[], vnni);
                        for r in 0..8 {
                            assert_eq!(
                                got[r].to_bits(),
                                reference[r].to_bits(),
                                "{ty} cols {cols} group {g} row {r} vnni {vnni}: {} vs {}",
                                got[r],
                                reference[r]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn several_rows_give_the_bits_of_one_row_each() {
        let mut checked = 0;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
            if !packable(ty) {
                continue;
            }
            let act_ty = crate::quant::vec_dot_type(ty);
            for cols in [32, 576, 1536] {
                let row_bytes = ty.bytes_for(cols).unwrap();
                let data = rows_of(ty, 16, cols, 11 + cols as u32);
                let packed = PackedRows::pack(ty, &data, 16, row_bytes, |_| {});
                let act_bytes = act_ty.bytes_for(cols).unwrap();
                let n = 7;
                let mut acts = vec![0u8; n * act_bytes];
                let mut sums = vec![];
                for (t, a) in acts.chunks_exact_mut(act_bytes).enumerate() {
                    let x: Vec<f32> = values(40 + t as u32, cols)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| if i % 5 == t { 90.0 * v } else { *v })
                        .collect();
                    quantize_activations(act_ty, &x, a).unwrap();
                    if wants_sums(ty) {
                        activation_sums(a, &mut sums);
                    }
                }
                let blocks = if wants_sums(ty) { packed.blocks } else { 0 };
                for rows in 1..=n {
                    for g in 0..packed.groups {
                        let mut got = vec![[0f32; TILE_ROWS]; rows];
                        dot_group_rows(&packed, g, &acts, act_bytes, rows, &sums[..rows * blocks], &[], |t, v| {
                            got[t] = *v
                        });
                        for (t, got) in got.iter().enumerate() {
                            let alone = dot_group(
                                &packed,
                                g,
                                &acts[t * act_bytes..][..act_bytes],
                                &sums[t * blocks..(t + 1) * blocks],
                                &[],
                            );
                            assert_eq!(
                                got.map(f32::to_bits),
                                alone.map(f32::to_bits),
                                "{ty} cols {cols} rows {rows} row {t}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        // Nothing to compare where no type is packed on this CPU (under KILN_FORCE_SCALAR=1).
        assert!(checked > 0 || !packable(GgmlType::Q8_0));
    }
}
