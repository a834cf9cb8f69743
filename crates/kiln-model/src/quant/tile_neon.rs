//! NEON kernels of [`super::tile`] (baseline on AArch64): eight weight rows against one
//! activation row, from an unpacked [`Tile`] or read in place from the weight blocks.
//!
//! Both flavours compute a block the same way: each row's 32 quants become signed bytes (zero
//! point subtracted, exact since every quant fits), meet the activations in widening multiplies
//! whose i32 sums are exact, and the eight row totals are gathered into two vectors (rows 0-3,
//! rows 4-7). Those are scaled and accumulated by the packed kernels' own step
//! ([`super::packed_neon::accumulate`]: `(scale · d_y) · sum + acc`, fused, block after
//! block; Q4_1's minimums in a second accumulator added at the end), so the tile, the in-place
//! rows and the packed groups give the same bits, those of
//! [`super::packed::dot_group_scalar`].
//!
//! Every function is safe: lengths are checked (or come checked from [`Tile`]) before any
//! load, and NEON is part of every AArch64 CPU.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, F16Le};
use super::packed_neon::{accumulate, halves, store};
use super::tile::{Tile, TILE_ROWS};
use std::arch::aarch64::*;

/// The 32 quants of an activation block: elements 0-15, 16-31.
#[inline(always)]
fn act_quants(qs: &[i8; 32]) -> [int8x16_t; 2] {
    // SAFETY: NEON is baseline; `qs` holds 32 bytes.
    unsafe { [vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))] }
}

/// `Σ w·y` of one row's block in four i32 lanes: i16 products (-128 · -128 fits), widened
/// pairwise at once, so the sum is exact.
#[inline(always)]
fn row_sum(w: [int8x16_t; 2], y: [int8x16_t; 2]) -> int32x4_t {
    // SAFETY: NEON is baseline on AArch64; registers only.
    unsafe {
        let mut acc = vdupq_n_s32(0);
        for (w, y) in w.iter().zip(&y) {
            acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(*w), vget_low_s8(*y)));
            acc = vpadalq_s16(acc, vmull_high_s8(*w, *y));
        }
        acc
    }
}

/// Eight rows' lane sums in, each row's total in lane r out: rows 0-3, rows 4-7.
#[inline(always)]
fn totals(s: [int32x4_t; TILE_ROWS]) -> [int32x4_t; 2] {
    // SAFETY: NEON is baseline on AArch64; registers only.
    unsafe {
        [
            vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3])),
            vpaddq_s32(vpaddq_s32(s[4], s[5]), vpaddq_s32(s[6], s[7])),
        ]
    }
}

/// The eight f32 values of one tile block (scales or minimums): rows 0-3, rows 4-7.
#[inline(always)]
fn lanes(v: &[f32; TILE_ROWS]) -> [float32x4_t; 2] {
    // SAFETY: NEON is baseline; `v` holds eight f32.
    unsafe { [vld1q_f32(v.as_ptr()), vld1q_f32(v.as_ptr().add(4))] }
}

/// The eight rows' f16 field `field(r)` of one block as f32 (exact): rows 0-3, rows 4-7.
#[inline(always)]
fn gather(field: impl Fn(usize) -> F16Le) -> [float32x4_t; 2] {
    let bits: [u16; TILE_ROWS] = std::array::from_fn(|r| u16::from_le_bytes(field(r).0));
    // SAFETY: `bits` holds 16 bytes.
    unsafe { halves(bits.as_ptr().cast()) }
}

/// Unpacked tile quants (bytes with zero point `off`, or signed bytes with `off` 0) as signed
/// values.
#[inline(always)]
fn unpacked(q: &[u8; 32], off: int8x16_t) -> [int8x16_t; 2] {
    // SAFETY: NEON is baseline; `q` holds 32 bytes.
    unsafe { [vsubq_s8(vld1q_s8(q.as_ptr().cast()), off), vsubq_s8(vld1q_s8(q.as_ptr().add(16).cast()), off)] }
}

/// The 32 nibbles of a 4-bit block: elements 0-15 (low nibbles), 16-31 (high).
#[inline(always)]
fn nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    // SAFETY: NEON is baseline; `qs` holds 16 bytes.
    unsafe {
        let v = vld1q_u8(qs.as_ptr());
        [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
    }
}

/// Nibbles or-ed with `high` (fifth bits, or zero), minus `off`, as signed values.
#[inline(always)]
fn signed(n: [uint8x16_t; 2], high: [uint8x16_t; 2], off: i8) -> [int8x16_t; 2] {
    // SAFETY: NEON is baseline on AArch64; registers only.
    unsafe {
        let off = vdupq_n_s8(off);
        [0, 1].map(|h| vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(n[h], high[h])), off))
    }
}

/// Q5_0's fifth bits as 0x10 in the bytes of their quants (bit j of `qh` is bit 4 of quant
/// j): elements 0-15, 16-31.
#[inline(always)]
fn fifth_bits(qh: [u8; 4]) -> [uint8x16_t; 2] {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: NEON is baseline; `BIT` holds 16 bytes.
    unsafe {
        let bit = vld1q_u8(BIT.as_ptr());
        // Each qh byte fills eight lanes, each lane testing its own bit.
        let spread = |a: u8, b: u8| vandq_u8(vtstq_u8(vcombine_u8(vdup_n_u8(a), vdup_n_u8(b)), bit), vdupq_n_u8(0x10));
        [spread(qh[0], qh[1]), spread(qh[2], qh[3])]
    }
}

/// Unsigned quants with a zero point (Q4_0, Q5_0 · Q8_0; Q8_0 · Q8_0 with `offset` 0, its
/// bytes then read back as the signed quants they are), unpacked. `act` has the tile's
/// number of blocks (checked by the caller).
pub fn tile_offset(tile: &Tile, act: &[BlockQ8_0], offset: i8) -> [f32; TILE_ROWS] {
    // SAFETY: NEON is baseline on AArch64; registers only.
    let (mut acc, off) = unsafe { ([vdupq_n_f32(0.0); 2], vdupq_n_s8(offset)) };
    for (b, y) in act.iter().enumerate() {
        let v = act_quants(&y.qs);
        let q = tile.quants(b);
        let sums = std::array::from_fn(|r| row_sum(unpacked(&q[r], off), v));
        accumulate(&mut acc, lanes(tile.scales(b)), y.d, totals(sums));
    }
    store(acc)
}

/// Unsigned quants with a per-block minimum (Q4_1 · Q8_1), unpacked: the minimums meet the
/// activation sums `s` in a second accumulator, added at the end.
pub fn tile_q4_1(tile: &Tile, act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
    // SAFETY: NEON is baseline on AArch64; registers only.
    let (mut acc, mut mins, zero) = unsafe { ([vdupq_n_f32(0.0); 2], [vdupq_n_f32(0.0); 2], vdupq_n_s8(0)) };
    for (b, y) in act.iter().enumerate() {
        let v = act_quants(&y.qs);
        let q = tile.quants(b);
        let sums = std::array::from_fn(|r| row_sum(unpacked(&q[r], zero), v));
        accumulate(&mut acc, lanes(tile.scales(b)), y.d, totals(sums));
        let (m, s) = (lanes(tile.mins(b)), y.s.to_f32());
        // SAFETY: NEON is baseline on AArch64; registers only.
        mins = unsafe { [vfmaq_n_f32(mins[0], m[0], s), vfmaq_n_f32(mins[1], m[1], s)] };
    }
    // SAFETY: as above.
    unsafe { store([vaddq_f32(acc[0], mins[0]), vaddq_f32(acc[1], mins[1])]) }
}

/// Checks that every row has `blocks` blocks.
fn check<B>(rows: &[&[B]; TILE_ROWS], blocks: usize) {
    assert!(rows.iter().all(|r| r.len() == blocks), "weight and activation rows of one length");
}

/// The Q8_0-activation kernels in place: `d` and `quants` read one row's block.
#[inline(always)]
fn in_place<B>(
    rows: [&[B]; TILE_ROWS],
    act: &[BlockQ8_0],
    d: impl Fn(&B) -> F16Le,
    quants: impl Fn(&B) -> [int8x16_t; 2],
) -> [f32; TILE_ROWS] {
    check(&rows, act.len());
    // SAFETY: NEON is baseline on AArch64; registers only.
    let mut acc = unsafe { [vdupq_n_f32(0.0); 2] };
    for (b, y) in act.iter().enumerate() {
        let v = act_quants(&y.qs);
        let sums = std::array::from_fn(|r| row_sum(quants(&rows[r][b]), v));
        accumulate(&mut acc, gather(|r| d(&rows[r][b])), y.d, totals(sums));
    }
    store(acc)
}

/// Q4_0 · Q8_0 with the eight rows read where they lie: the bits of [`tile_offset`].
pub fn in_place_q4_0(rows: [&[BlockQ4_0]; TILE_ROWS], act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    // SAFETY (zero vector): NEON is baseline on AArch64; registers only.
    in_place(rows, act, |w| w.d, |w| signed(nibbles(&w.qs), unsafe { [vdupq_n_u8(0); 2] }, 8))
}

/// Q5_0 · Q8_0 in place: the bits of [`tile_offset`].
pub fn in_place_q5_0(rows: [&[BlockQ5_0]; TILE_ROWS], act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    in_place(rows, act, |w| w.d, |w| signed(nibbles(&w.qs), fifth_bits(w.qh), 16))
}

/// Q8_0 · Q8_0 in place: the bits of [`tile_offset`].
pub fn in_place_q8_0(rows: [&[BlockQ8_0]; TILE_ROWS], act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    in_place(rows, act, |w| w.d, |w| act_quants(&w.qs))
}

/// Q4_1 · Q8_1 in place: the bits of [`tile_q4_1`].
pub fn in_place_q4_1(rows: [&[BlockQ4_1]; TILE_ROWS], act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
    check(&rows, act.len());
    // SAFETY: NEON is baseline on AArch64; registers only.
    let (mut acc, mut mins, zero) = unsafe { ([vdupq_n_f32(0.0); 2], [vdupq_n_f32(0.0); 2], [vdupq_n_u8(0); 2]) };
    for (b, y) in act.iter().enumerate() {
        let v = act_quants(&y.qs);
        let sums = std::array::from_fn(|r| row_sum(signed(nibbles(&rows[r][b].qs), zero, 0), v));
        accumulate(&mut acc, gather(|r| rows[r][b].d), y.d, totals(sums));
        let (m, s) = (gather(|r| rows[r][b].m), y.s.to_f32());
        // SAFETY: NEON is baseline on AArch64; registers only.
        mins = unsafe { [vfmaq_n_f32(mins[0], m[0], s), vfmaq_n_f32(mins[1], m[1], s)] };
    }
    // SAFETY: as above.
    unsafe { store([vaddq_f32(acc[0], mins[0]), vaddq_f32(acc[1], mins[1])]) }
}
