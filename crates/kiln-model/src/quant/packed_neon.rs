//! The kernels of [`super::packed`] in NEON (baseline on AArch64): eight packed rows against
//! one activation row. A packed step holds four bytes of each row side by side (rows 0-3 in
//! one 16-byte vector, rows 4-7 in the next), so multiplying by the four matching activation
//! bytes repeated in every 32-bit lane gives each row its products in its own lanes, no
//! gathering. Per block the integer sums are exact; the float steps are
//! [`super::packed::dot_group_scalar`]'s, in its order (`(d_w · d_y) · sum + acc`, fused), so
//! the results have its bits.
//!
//! Each function asserts that `group` holds `act.len()` packed blocks; every load stays
//! inside it.

use super::blocks::{BlockQ8_0, BlockQ8_1, F16Le};
use super::tile::TILE_ROWS;
use std::arch::aarch64::*;

/// Bytes of a packed Q4_0 block of eight rows: eight scales, 128 bytes of nibbles.
const Q4_0_BLOCK: usize = 144;
/// Bytes of a packed Q4_1 block of eight rows: eight scales, eight minimums, the nibbles.
const Q4_1_BLOCK: usize = 160;
/// Bytes of a packed Q5_0 block of eight rows: eight scales, eight fifth-bit words, nibbles.
const Q5_0_BLOCK: usize = 176;
/// Bytes of a packed Q8_0 block of eight rows: eight scales, 256 bytes of quants.
const Q8_0_BLOCK: usize = 272;

/// Per-row i32 sums of one block, kept as pairs: `pairs[k]` holds rows `2k` and `2k + 1`, two
/// lanes each, until [`Sums::rows`] adds each row's two lanes.
struct Sums {
    pairs: [int32x4_t; 4],
}

impl Sums {
    #[inline(always)]
    fn new() -> Sums {
        // SAFETY: NEON is baseline on AArch64; no memory is touched.
        Sums { pairs: unsafe { [vdupq_n_s32(0); 4] } }
    }

    /// Adds the products of one step: `w` holds four signed quants of every row (rows 0-3,
    /// rows 4-7), `y` the four activation bytes they meet, repeated in every 32-bit lane.
    /// The i16 products are widened at once (pairs of them fit, sums of more might not).
    #[inline(always)]
    fn add(&mut self, w: [int8x16_t; 2], y: int8x16_t) {
        // SAFETY: NEON is baseline on AArch64; registers only.
        unsafe {
            for (h, w) in w.iter().enumerate() {
                self.pairs[2 * h] = vpadalq_s16(self.pairs[2 * h], vmull_s8(vget_low_s8(*w), vget_low_s8(y)));
                self.pairs[2 * h + 1] = vpadalq_s16(self.pairs[2 * h + 1], vmull_high_s8(*w, y));
            }
        }
    }

    /// The row sums: rows 0-3, rows 4-7.
    #[inline(always)]
    fn rows(&self) -> [int32x4_t; 2] {
        // SAFETY: NEON is baseline on AArch64; registers only.
        unsafe { [vpaddq_s32(self.pairs[0], self.pairs[1]), vpaddq_s32(self.pairs[2], self.pairs[3])] }
    }
}

/// Activation bytes `4k..4k+4` in every 32-bit lane.
#[inline(always)]
fn quad(qs: &[i8; 32], k: usize) -> int8x16_t {
    assert!(k < 8);
    // SAFETY: NEON is baseline; `4k + 4 <= 32` bytes are read.
    unsafe { vreinterpretq_s8_u32(vdupq_n_u32(qs.as_ptr().cast::<u32>().add(k).read_unaligned())) }
}

/// Eight packed f16 values (scales or minimums) at `p` as f32: rows 0-3, rows 4-7 (exact).
///
/// # Safety
/// `p` must be valid for 16 bytes.
#[inline(always)]
pub(super) unsafe fn halves(p: *const u8) -> [float32x4_t; 2] {
    let h = vreinterpretq_u16_u8(vld1q_u8(p));
    [vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))), vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)))]
}

/// `acc + (scales · d_y) · sums`, fused, for both halves: the one float step of a block,
/// shared with the tile kernels (`super::tile_neon`) so that both give the same bits.
#[inline(always)]
pub(super) fn accumulate(acc: &mut [float32x4_t; 2], scales: [float32x4_t; 2], dy: F16Le, sums: [int32x4_t; 2]) {
    // SAFETY: NEON is baseline on AArch64; registers only.
    unsafe {
        for h in 0..2 {
            acc[h] = vfmaq_f32(acc[h], vmulq_n_f32(scales[h], dy.to_f32()), vcvtq_f32_s32(sums[h]));
        }
    }
}

pub(super) fn store(acc: [float32x4_t; 2]) -> [f32; TILE_ROWS] {
    let mut out = [0f32; TILE_ROWS];
    // SAFETY: `out` holds eight f32.
    unsafe {
        vst1q_f32(out.as_mut_ptr(), acc[0]);
        vst1q_f32(out.as_mut_ptr().add(4), acc[1]);
    }
    out
}

/// The two 16-byte vectors of step `s` of a block's quants at `quants`.
///
/// # Safety
/// `quants` must be valid for `32 (s + 1)` bytes.
#[inline(always)]
unsafe fn step(quants: *const u8, s: usize) -> [uint8x16_t; 2] {
    [vld1q_u8(quants.add(32 * s)), vld1q_u8(quants.add(32 * s + 16))]
}

/// The nibble products of a packed 4-bit block (quants at `quants`, four steps) with `y`,
/// each quant first taking `high(s, lo/hi)` (or-ed in) and then losing `offset`.
///
/// # Safety
/// `quants` must be valid for 128 bytes.
#[inline(always)]
unsafe fn nibble_sums(
    quants: *const u8,
    y: &[i8; 32],
    offset: i8,
    high: impl Fn(usize) -> [[uint8x16_t; 2]; 2],
) -> [int32x4_t; 2] {
    let (m4, off) = (vdupq_n_u8(0xF), vdupq_n_s8(offset));
    let mut sums = Sums::new();
    for s in 0..4 {
        let w = step(quants, s);
        let [high_lo, high_hi] = high(s);
        let q = |nibble: uint8x16_t, bit: uint8x16_t| vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(nibble, bit)), off);
        let lo = [q(vandq_u8(w[0], m4), high_lo[0]), q(vandq_u8(w[1], m4), high_lo[1])];
        let hi = [q(vshrq_n_u8::<4>(w[0]), high_hi[0]), q(vshrq_n_u8::<4>(w[1]), high_hi[1])];
        sums.add(lo, quad(y, s));
        sums.add(hi, quad(y, 4 + s));
    }
    sums.rows()
}

/// No fifth bits (Q4_0, Q4_1).
#[inline(always)]
fn no_high(_: usize) -> [[uint8x16_t; 2]; 2] {
    // SAFETY: NEON is baseline on AArch64; registers only.
    unsafe { [[vdupq_n_u8(0); 2]; 2] }
}

/// Checks that `group` holds `blocks` packed blocks of `size` bytes.
fn check(group: &[u8], blocks: usize, size: usize) {
    assert_eq!(group.len(), blocks * size, "packed group length");
}

/// Q4_0 · Q8_0: quants `q - 8` as signed bytes.
pub fn q4_0(group: &[u8], act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    check(group, act.len(), Q4_0_BLOCK);
    // SAFETY: NEON is baseline; each block read lies inside `group` (checked above).
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        for (b, y) in act.iter().enumerate() {
            let block = group.as_ptr().add(b * Q4_0_BLOCK);
            accumulate(&mut acc, halves(block), y.d, nibble_sums(block.add(16), &y.qs, 8, no_high));
        }
        store(acc)
    }
}

/// Q4_1 · Q8_1: unsigned quants; the minimums meet the activation sums `s` in a second
/// accumulator, added at the end.
pub fn q4_1(group: &[u8], act: &[BlockQ8_1]) -> [f32; TILE_ROWS] {
    check(group, act.len(), Q4_1_BLOCK);
    // SAFETY: as in `q4_0`.
    unsafe {
        let (mut acc, mut mins) = ([vdupq_n_f32(0.0); 2], [vdupq_n_f32(0.0); 2]);
        for (b, y) in act.iter().enumerate() {
            let block = group.as_ptr().add(b * Q4_1_BLOCK);
            accumulate(&mut acc, halves(block), y.d, nibble_sums(block.add(32), &y.qs, 0, no_high));
            let (m, s) = (halves(block.add(16)), y.s.to_f32());
            mins = [vfmaq_n_f32(mins[0], m[0], s), vfmaq_n_f32(mins[1], m[1], s)];
        }
        store([vaddq_f32(acc[0], mins[0]), vaddq_f32(acc[1], mins[1])])
    }
}

/// Q5_0 · Q8_0: the fifth bits (bit `j` of row r's word is bit 4 of its quant `j`) or-ed in,
/// then `q - 16`.
pub fn q5_0(group: &[u8], act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    check(group, act.len(), Q5_0_BLOCK);
    // Byte `4r + j` takes byte 0 of row r's (shifted) word and tests bit j.
    const SPREAD: [u8; 16] = [0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12];
    const BIT: [u8; 16] = [1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8];
    // SAFETY: as in `q4_0`; the constants hold 16 bytes.
    unsafe {
        let (spread, bit, bit4) = (vld1q_u8(SPREAD.as_ptr()), vld1q_u8(BIT.as_ptr()), vdupq_n_u8(0x10));
        let mut acc = [vdupq_n_f32(0.0); 2];
        for (b, y) in act.iter().enumerate() {
            let block = group.as_ptr().add(b * Q5_0_BLOCK);
            let words = [vreinterpretq_u32_u8(vld1q_u8(block.add(16))), vreinterpretq_u32_u8(vld1q_u8(block.add(32)))];
            // Bits `first..first + 4` of every row's word, as 0x10 in the bytes of their quants.
            let fifth = |first: i32| -> [uint8x16_t; 2] {
                words.map(|w| {
                    let shifted = vreinterpretq_u8_u32(vshlq_u32(w, vdupq_n_s32(-first)));
                    vandq_u8(vtstq_u8(vqtbl1q_u8(shifted, spread), bit), bit4)
                })
            };
            let high = |s: usize| [fifth(4 * s as i32), fifth(16 + 4 * s as i32)];
            accumulate(&mut acc, halves(block), y.d, nibble_sums(block.add(48), &y.qs, 16, high));
        }
        store(acc)
    }
}

/// Q8_0 · Q8_0: eight steps of signed quants.
pub fn q8_0(group: &[u8], act: &[BlockQ8_0]) -> [f32; TILE_ROWS] {
    check(group, act.len(), Q8_0_BLOCK);
    // SAFETY: as in `q4_0`.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        for (b, y) in act.iter().enumerate() {
            let block = group.as_ptr().add(b * Q8_0_BLOCK);
            let mut sums = Sums::new();
            for s in 0..8 {
                let w = step(block.add(16), s);
                sums.add([vreinterpretq_s8_u8(w[0]), vreinterpretq_s8_u8(w[1])], quad(&y.qs, s));
            }
            accumulate(&mut acc, halves(block), y.d, sums.rows());
        }
        store(acc)
    }
}
