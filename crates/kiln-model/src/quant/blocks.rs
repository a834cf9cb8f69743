//! ggml's quantized block layouts (`block_q4_0` … `block_q8_K` in ggml-common.h), as byte-exact
//! `#[repr(C)]` structs.
//!
//! Every field is a byte array, so every block has alignment 1 and any byte slice of the right
//! length can be viewed as a slice of blocks: tensor data comes from mmapped files and plain
//! `Vec<u8>` buffers, neither of which promises more alignment. Multi-byte fields (`f16` scales,
//! Q8_K's `f32` scale and `i16` block sums) are little-endian, as in GGUF, and are read through
//! the accessor methods.

use std::mem::{align_of, size_of};

/// Weights per block of the 32-wide formats (Q4_0 … Q8_1).
pub const QK: usize = 32;
/// Weights per super-block of the K formats (Q2_K … Q8_K).
pub const QK_K: usize = 256;

/// A little-endian IEEE half stored as two bytes.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    /// The value as f32 (exact). Plain integer arithmetic that inlines into any loop (the
    /// `half` crate's conversion is an out-of-line call behind a feature check).
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        let h = u16::from_le_bytes(self.0) as u32;
        let magnitude = (h & 0x7fff) << 13;
        let exponent = magnitude & (0x1f << 23);
        let bits = if exponent == 0x1f << 23 {
            magnitude + ((0xff - 0x1f) << 23) // infinity and NaN keep an all-ones exponent
        } else if exponent == 0 {
            // Zero and subnormals: scale the mantissa as a float, which is exact.
            (f32::from_bits(magnitude + (113 << 23)) - f32::from_bits(113 << 23)).to_bits()
        } else {
            magnitude + ((127 - 15) << 23)
        };
        f32::from_bits(bits | ((h & 0x8000) << 16))
    }

    /// `v` rounded to the nearest half, ties to even (ggml's `GGML_FP32_TO_FP16`).
    #[inline(always)]
    pub fn from_f32(v: f32) -> F16Le {
        F16Le(half::f16::from_f32(v).to_bits().to_le_bytes())
    }
}

/// Q4_0: 32 weights `d * (q - 8)`, q in 0..16; byte j holds weight j (low nibble) and j + 16 (high).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: F16Le,
    /// Packed 4-bit quants.
    pub qs: [u8; QK / 2],
}

/// Q4_1: 32 weights `d * q + m`, q in 0..16, nibbles packed as in Q4_0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: F16Le,
    /// Offset (the block minimum).
    pub m: F16Le,
    /// Packed 4-bit quants.
    pub qs: [u8; QK / 2],
}

/// Q5_0: 32 weights `d * (q - 16)`, q in 0..32; low nibbles as in Q4_0, bit j of `qh` (a
/// little-endian u32) is bit 4 of weight j.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: F16Le,
    /// Fifth bits, one per weight.
    pub qh: [u8; 4],
    /// Packed low 4 bits.
    pub qs: [u8; QK / 2],
}

/// Q5_1: 32 weights `d * q + m`, q in 0..32, bits packed as in Q5_0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: F16Le,
    /// Offset (the block minimum).
    pub m: F16Le,
    /// Fifth bits, one per weight.
    pub qh: [u8; 4],
    /// Packed low 4 bits.
    pub qs: [u8; QK / 2],
}

/// Q8_0: 32 weights `d * q`, q an i8.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: F16Le,
    /// Quants.
    pub qs: [i8; QK],
}

/// Q8_1: Q8_0 plus `s = d * sum(qs)`, used as the activation format for Q4_1 and Q5_1.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: F16Le,
    /// `d * sum(qs)`, rounded to f16.
    pub s: F16Le,
    /// Quants.
    pub qs: [i8; QK],
}

/// Q2_K: 16 groups of 16 weights `d * sc * q - dmin * m`, q in 0..4; `scales[g]` holds sc (low
/// nibble) and m (high nibble) of group g.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ2K {
    /// 4-bit group scales and mins.
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants: byte l of each 32-byte chunk holds four weights, 32 apart.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales.
    pub d: F16Le,
    /// Super-block scale of the mins.
    pub dmin: F16Le,
}

/// Q3_K: 16 groups of 16 weights `d * (sc - 32) * (q - 4 * !hbit)`, q in 0..4 plus a high bit
/// in `hmask`; the 16 six-bit group scales are packed into 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ3K {
    /// High bits: bit b of byte l belongs to weight 32 * b + l.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, packed as in Q2_K.
    pub qs: [u8; QK_K / 4],
    /// Packed 6-bit group scales.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: F16Le,
}

/// Q4_K: 8 groups of 32 weights `d * sc * q - dmin * m`, q in 0..16; six-bit sc and m packed
/// into 12 bytes (see `get_scale_min_k4`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    /// Super-block scale of the scales.
    pub d: F16Le,
    /// Super-block scale of the mins.
    pub dmin: F16Le,
    /// Packed 6-bit group scales and mins.
    pub scales: [u8; 12],
    /// 4-bit quants: each 32-byte chunk holds 64 weights (low nibbles first).
    pub qs: [u8; QK_K / 2],
}

/// Q5_K: Q4_K with a fifth bit per weight in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K {
    /// Super-block scale of the scales.
    pub d: F16Le,
    /// Super-block scale of the mins.
    pub dmin: F16Le,
    /// Packed 6-bit group scales and mins.
    pub scales: [u8; 12],
    /// Fifth bits: bit b of byte l belongs to weight 32 * b + l.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, packed as in Q4_K.
    pub qs: [u8; QK_K / 2],
}

/// Q6_K: 16 groups of 16 weights `d * sc * (q - 32)`, q in 0..64 split into 4 low bits (`ql`)
/// and 2 high bits (`qh`); sc an i8.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// Group scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: F16Le,
}

/// Q8_K: 256 weights `d * q` with an f32 scale and the sum of each 16 quants, used as the
/// activation format for all K types.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    /// Scale, little-endian f32.
    pub d: [u8; 4],
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sums of each 16 quants, little-endian i16.
    pub bsums: [[u8; 2]; QK_K / 16],
}

impl BlockQ8K {
    /// The scale.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    /// The sum of quants 16 * j .. 16 * j + 16.
    #[inline(always)]
    pub fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes(self.bsums[j])
    }
}

const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(size_of::<BlockQ5_0>() == 22);
const _: () = assert!(size_of::<BlockQ5_1>() == 24);
const _: () = assert!(size_of::<BlockQ8_0>() == 34);
const _: () = assert!(size_of::<BlockQ8_1>() == 36);
const _: () = assert!(size_of::<BlockQ2K>() == 84);
const _: () = assert!(size_of::<BlockQ3K>() == 110);
const _: () = assert!(size_of::<BlockQ4K>() == 144);
const _: () = assert!(size_of::<BlockQ5K>() == 176);
const _: () = assert!(size_of::<BlockQ6K>() == 210);
const _: () = assert!(size_of::<BlockQ8K>() == 292);

/// A block type made only of byte arrays: alignment 1, no padding, every bit pattern valid.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs whose fields are all `u8`/`i8` arrays (or
/// transparent wrappers of them).
pub unsafe trait Block: Copy {
    /// Weights per block.
    const WEIGHTS: usize;
}

macro_rules! impl_block {
    ($($t:ty => $n:expr),* $(,)?) => {$(
        const _: () = assert!(align_of::<$t>() == 1);
        // SAFETY: the struct above is repr(C) with byte-array fields only; alignment checked.
        unsafe impl Block for $t {
            const WEIGHTS: usize = $n;
        }
    )*};
}

impl_block!(
    BlockQ4_0 => QK, BlockQ4_1 => QK, BlockQ5_0 => QK, BlockQ5_1 => QK,
    BlockQ8_0 => QK, BlockQ8_1 => QK,
    BlockQ2K => QK_K, BlockQ3K => QK_K, BlockQ4K => QK_K, BlockQ5K => QK_K,
    BlockQ6K => QK_K, BlockQ8K => QK_K,
);

/// Views `bytes` as blocks. Panics unless `bytes` is a whole number of blocks.
#[inline]
pub fn as_blocks<B: Block>(bytes: &[u8]) -> &[B] {
    let size = size_of::<B>();
    assert_eq!(bytes.len() % size, 0, "{} bytes is not a whole number of {size}-byte blocks", bytes.len());
    // SAFETY: B has alignment 1, no padding and no invalid bit patterns (the `Block` contract),
    // and the length was checked above.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) }
}

/// Views `bytes` as mutable blocks. Panics unless `bytes` is a whole number of blocks.
#[inline]
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let size = size_of::<B>();
    assert_eq!(bytes.len() % size, 0, "{} bytes is not a whole number of {size}-byte blocks", bytes.len());
    // SAFETY: as in `as_blocks`; the borrow of `bytes` is exclusive.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size) }
}

/// The 6-bit scale and min of group `j` (0..8) of a Q4_K / Q5_K super-block (ggml's
/// `get_scale_min_k4`): groups 0..4 keep theirs in the low 6 bits of bytes j and j + 4; groups
/// 4..8 split theirs between a nibble of byte j + 4 and the top 2 bits of bytes j - 4 and j.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 16 six-bit scales of a Q3_K super-block, unpacked and still biased by 32: the low 4 bits
/// of scale g are nibble (g / 8) of byte g % 8, the high 2 bits are bits 2 * (g / 4) of byte
/// 8 + g % 4.
#[inline(always)]
pub fn q3k_scales(packed: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (g, o) in out.iter_mut().enumerate() {
        let low = (packed[g % 8] >> (4 * (g / 8))) & 0xF;
        let high = (packed[8 + g % 4] >> (2 * (g / 4))) & 3;
        *o = (low | (high << 4)) as i8;
    }
    out
}

/// All 8 scales and 8 mins of a Q4_K / Q5_K super-block at once (the word-wise form of
/// `scale_min_k4` that ggml's kernels use).
#[inline(always)]
pub fn k4_unpack(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let scales_lo = w0 & LOW6;
    let scales_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let mins_lo = w1 & LOW6;
    let mins_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    scales[..4].copy_from_slice(&scales_lo.to_le_bytes());
    scales[4..].copy_from_slice(&scales_hi.to_le_bytes());
    mins[..4].copy_from_slice(&mins_lo.to_le_bytes());
    mins[4..].copy_from_slice(&mins_hi.to_le_bytes());
    (scales, mins)
}

#[cfg(test)]
mod tests {
    use super::F16Le;

    #[test]
    fn every_half_converts_exactly() {
        for bits in 0..=u16::MAX {
            let ours = F16Le(bits.to_le_bytes()).to_f32();
            let reference = half::f16::from_bits(bits).to_f32();
            if reference.is_nan() {
                assert!(ours.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(ours.to_bits(), reference.to_bits(), "{bits:#06x}");
            }
        }
    }
}
