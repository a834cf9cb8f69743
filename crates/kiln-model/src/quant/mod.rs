//! Quantized tensor kernels in ggml's formats (block layouts of ggml-common.h, numerics of
//! ggml-quants.c and ggml-cpu): dequantization, quantization of activations and weights, and
//! the dot product of a quantized weight row with an activation row.
//!
//! Numerics follow llama.cpp's CPU reference exactly: [`dequantize_row`] is bit-exact with
//! ggml's `dequantize_row_*`, [`quantize_row`] with `quantize_row_*_ref`, and the scalar
//! [`reference::vec_dot`] with `ggml_vec_dot_*_generic` (tests/quant_fixtures.rs checks all
//! three against numbers recorded from llama.cpp).
//!
//! AVX2 kernels are picked at run time when the CPU has AVX2, FMA and F16C; set
//! `KILN_FORCE_SCALAR=1` to force the scalar ones. The SIMD quantizers produce the same bytes
//! as the scalar ones; the SIMD dot products compute the same exact integer block sums and
//! differ from the scalar ones only in the order of f32 additions.
//!
//! Weight rows are `bytes_for(n)` bytes of their type; an activation row for a weight of type
//! `ty` is `n` values quantized to [`vec_dot_type`]`(ty)` with [`quantize_row`].

pub mod blocks;
mod dequant;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "aarch64")]
mod dot_neon;
mod dot_scalar;
pub mod packed;
#[cfg(target_arch = "aarch64")]
mod packed_neon;
#[cfg(target_arch = "x86_64")]
mod packed_x86;
mod quantize;
pub mod tile;
#[cfg(target_arch = "x86_64")]
mod tile_avx2;
#[cfg(target_arch = "aarch64")]
mod tile_neon;
#[cfg(target_arch = "x86_64")]
mod tile_vnni;

pub use quantize::Q8Rounding;
#[cfg(target_arch = "x86_64")]
mod quantize_avx2;
mod quantize_k;
#[cfg(target_arch = "aarch64")]
mod quantize_neon;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use kiln_gguf::GgmlType;

use blocks::{as_blocks, as_blocks_mut};

/// Why a quantization request cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// kiln cannot quantize to this type. (Every type `GgmlType` names is supported today;
    /// the variant keeps room for formats the reader learns before the writer does.)
    #[error("quantizing to {0} is not supported")]
    Unsupported(GgmlType),
    /// The number of values is not a whole number of blocks.
    #[error("{elements} values do not fill whole {ty} blocks of {block} values")]
    PartialBlock {
        /// The target type.
        ty: GgmlType,
        /// How many values were given.
        elements: usize,
        /// Values per block of `ty`.
        block: usize,
    },
    /// The output buffer has the wrong size.
    #[error("{elements} values of {ty} take {expected} bytes, but the output buffer has {got}")]
    OutputSize {
        /// The target type.
        ty: GgmlType,
        /// How many values were given.
        elements: usize,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Whether the AVX2 kernels are used: the CPU has AVX2, FMA and F16C and `KILN_FORCE_SCALAR`
/// is not `1`. Decided once per process.
pub fn simd_available() -> bool {
    static SIMD: OnceLock<bool> = OnceLock::new();
    *SIMD.get_or_init(|| {
        let forced_scalar = std::env::var("KILN_FORCE_SCALAR").is_ok_and(|v| v == "1");
        !forced_scalar && cpu_has_avx2()
    })
}

/// Asks the CPU to bring `data` into cache ahead of use (a hint; a no-op where unsupported).
/// Readers of several rows at once need it: the hardware prefetchers follow one stream well,
/// eight short interleaved ones badly.
#[inline]
pub fn prefetch(data: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..data.len()).step_by(64) {
        // SAFETY: a prefetch never faults, and the address lies inside `data`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(data.as_ptr().add(line).cast())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Whether the CPU can run the AVX2 kernels, regardless of `KILN_FORCE_SCALAR`.
fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The format activations are converted to before a dot product with a row of `ty`, as
/// llama.cpp's CPU backend does: Q4_0, Q5_0, Q8_0 → Q8_0; Q4_1, Q5_1 → Q8_1; the K types →
/// Q8_K; F32, F16, BF16 → themselves. Q8_1 and Q8_K, which are activation formats only, map to
/// themselves (and have no [`vec_dot`]).
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2K | Q3K | Q4K | Q5K | Q6K => Q8K,
        F32 | F16 | BF16 | Q8_1 | Q8K => ty,
    }
}

/// Whether [`vec_dot`] accepts weights of type `ty` (every type but Q8_1 and Q8_K).
pub fn has_vec_dot(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8K)
}

/// Bytes for `n` values of `ty`, panicking with a clear message when `n` is not a whole number
/// of blocks (a caller bug: row lengths are validated when a model is loaded).
fn row_bytes(ty: GgmlType, n: usize) -> usize {
    ty.bytes_for(n).unwrap_or_else(|| panic!("{n} values are not a whole number of {ty} blocks of {}", ty.block_size()))
}

/// Dequantizes `dst.len()` weights stored in `src` (exactly `bytes_for(dst.len())` bytes of
/// `ty`), bit-exact with ggml's `dequantize_row_*`.
///
/// # Panics
/// If the lengths do not match.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let expected = row_bytes(ty, dst.len());
    assert_eq!(src.len(), expected, "{} {ty} values take {expected} bytes, got {}", dst.len(), src.len());
    use GgmlType::*;
    match ty {
        F32 => dequant::f32(src, dst),
        F16 => dequant::f16(src, dst),
        BF16 => dequant::bf16(src, dst),
        Q4_0 => dequant::q4_0(as_blocks(src), dst),
        Q4_1 => dequant::q4_1(as_blocks(src), dst),
        Q5_0 => dequant::q5_0(as_blocks(src), dst),
        Q5_1 => dequant::q5_1(as_blocks(src), dst),
        Q8_0 => dequant::q8_0(as_blocks(src), dst),
        Q8_1 => dequant::q8_1(as_blocks(src), dst),
        Q2K => dequant::q2k(as_blocks(src), dst),
        Q3K => dequant::q3k(as_blocks(src), dst),
        Q4K => dequant::q4k(as_blocks(src), dst),
        Q5K => dequant::q5k(as_blocks(src), dst),
        Q6K => dequant::q6k(as_blocks(src), dst),
        Q8K => dequant::q8k(as_blocks(src), dst),
    }
}

/// Quantizes or converts `src` into `dst` (`bytes_for(src.len())` bytes of `ty`), bit-exact
/// with ggml's reference quantizers (`quantize_row_*_ref`; for F16 / BF16 ggml's rounding).
/// Every type is supported. Uses AVX2 for the activation formats (Q8_0, Q8_1, Q8_K, F16) when
/// [`simd_available`], NEON for Q8_K when [`neon_available`]; the K weight formats run ggml's scale search and are slow (they are
/// for writing model files, not for activations).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_quantize(ty, src, dst)?;
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: simd_available() checked AVX2, FMA and F16C; sizes checked above.
        if unsafe { avx2_quantize(ty, src, dst) } {
            return Ok(());
        }
    }
    #[cfg(target_arch = "aarch64")]
    if neon_available() && ty == GgmlType::Q8K {
        quantize_neon::q8k(src, as_blocks_mut(dst));
        return Ok(());
    }
    reference::quantize_unchecked(ty, src, dst);
    Ok(())
}

/// Converts activations into `ty` (a [`vec_dot_type`]) for the forward pass. Q8_0 and Q8_1
/// follow ggml's x86 run-time quantizer rather than the `_ref` one that [`quantize_row`]
/// reproduces (they differ in the scale's reciprocal and in rounding ties), so that kiln's
/// matrix products see the activations llama.cpp's do.
pub fn quantize_activations(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_quantize(ty, src, dst)?;
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: simd_available() checked AVX2, FMA and F16C; sizes checked above.
        match ty {
            GgmlType::Q8_0 => unsafe { quantize_avx2::q8_0(src, as_blocks_mut(dst), Q8Rounding::Runtime) },
            GgmlType::Q8_1 => unsafe { quantize_avx2::q8_1(src, as_blocks_mut(dst), Q8Rounding::Runtime) },
            _ => return quantize_row(ty, src, dst),
        }
        return Ok(());
    }
    #[cfg(target_arch = "aarch64")]
    if neon_available() && matches!(ty, GgmlType::Q8_0 | GgmlType::Q8_1) {
        match ty {
            GgmlType::Q8_0 => quantize_neon::q8_0(src, as_blocks_mut(dst)),
            _ => quantize_neon::q8_1(src, as_blocks_mut(dst)),
        }
        return Ok(());
    }
    match ty {
        GgmlType::Q8_0 => quantize::q8_0(src, as_blocks_mut(dst), Q8Rounding::Runtime),
        GgmlType::Q8_1 => quantize::q8_1(src, as_blocks_mut(dst), Q8Rounding::Runtime),
        _ => return quantize_row(ty, src, dst),
    }
    Ok(())
}

/// Checks that `dst` is the size of `src` in `ty`.
fn check_quantize(ty: GgmlType, src: &[f32], dst: &[u8]) -> Result<(), QuantError> {
    let elements = src.len();
    let expected = ty.bytes_for(elements).ok_or(QuantError::PartialBlock { ty, elements, block: ty.block_size() })?;
    if dst.len() != expected {
        return Err(QuantError::OutputSize { ty, elements, expected, got: dst.len() });
    }
    Ok(())
}

/// Quantizes with the AVX2 kernel for `ty`, if there is one; returns whether there was.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    use GgmlType::*;
    match ty {
        F16 => quantize_avx2::f16(src, dst),
        Q8_0 => quantize_avx2::q8_0(src, as_blocks_mut(dst), Q8Rounding::Reference),
        Q8_1 => quantize_avx2::q8_1(src, as_blocks_mut(dst), Q8Rounding::Reference),
        Q8K => quantize_avx2::q8k(src, as_blocks_mut(dst)),
        _ => return false,
    }
    true
}

/// Checks the row lengths of a dot product.
fn check_dot(ty: GgmlType, n: usize, weights: &[u8], activations: &[u8]) {
    assert!(has_vec_dot(ty), "{ty} is an activation format; there is no {ty} weight dot product");
    let wb = row_bytes(ty, n);
    let at = vec_dot_type(ty);
    let ab = row_bytes(at, n);
    assert_eq!(weights.len(), wb, "{n} {ty} weights take {wb} bytes, got {}", weights.len());
    assert_eq!(activations.len(), ab, "{n} {at} activations take {ab} bytes, got {}", activations.len());
}

/// Dot product of one weight row of `ty` (`n` elements) with one activation row already in
/// `vec_dot_type(ty)`. Uses the AVX2 kernel for Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K, F32 and F16
/// when [`simd_available`], the NEON one for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K
/// on AArch64 (unless `KILN_FORCE_SCALAR=1`), the scalar reference otherwise.
///
/// # Panics
/// If `ty` has no dot product ([`has_vec_dot`]) or the lengths do not match `n`.
pub fn vec_dot(ty: GgmlType, n: usize, weights: &[u8], activations: &[u8]) -> f32 {
    check_dot(ty, n, weights, activations);
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: simd_available() checked AVX2, FMA and F16C; lengths checked above.
        if let Some(v) = unsafe { avx2_dot(ty, weights, activations) } {
            return v;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if neon_available() {
        if let Some(v) = neon_dot(ty, weights, activations) {
            return v;
        }
    }
    reference::dot_unchecked(ty, weights, activations)
}

/// A row-dot kernel chosen once for a weight type, for loops over many rows: no dispatch and
/// no length checks per call. Built by [`RowDot::new`], which checks the row length once.
#[derive(Clone, Copy)]
pub struct RowDot {
    ty: GgmlType,
    weight_bytes: usize,
    act_bytes: usize,
    simd: bool,
}

impl RowDot {
    /// The kernel for rows of `n` elements of `ty`.
    ///
    /// # Panics
    /// If `ty` has no dot product or `n` is not a whole number of blocks.
    pub fn new(ty: GgmlType, n: usize) -> RowDot {
        assert!(has_vec_dot(ty), "{ty} is an activation format; there is no {ty} weight dot product");
        RowDot {
            ty,
            weight_bytes: row_bytes(ty, n),
            act_bytes: row_bytes(vec_dot_type(ty), n),
            simd: simd_available() || neon_available(),
        }
    }

    /// Bytes of one activation row.
    pub fn act_bytes(&self) -> usize {
        self.act_bytes
    }

    /// `weights · activations` for one row of each.
    ///
    /// # Panics
    /// If a slice is shorter than one row (a bounds check, not a per-element cost).
    #[inline]
    pub fn dot(&self, weights: &[u8], activations: &[u8]) -> f32 {
        let (w, a) = (&weights[..self.weight_bytes], &activations[..self.act_bytes]);
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: on x86 `simd` is simd_available() (AVX2, FMA, F16C); lengths sliced above.
            if let Some(v) = unsafe { avx2_dot(self.ty, w, a) } {
                return v;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if self.simd {
            if let Some(v) = neon_dot(self.ty, w, a) {
                return v;
            }
        }
        reference::dot_unchecked(self.ty, w, a)
    }

    /// One weight row against `R` activation rows: each result has the bits [`RowDot::dot`]
    /// gives it, and formats with a multi-row kernel (Q4_K, Q6_K; on AArch64 also Q5_K) unpack
    /// the weights once.
    #[inline]
    pub fn dot_rows<const R: usize>(&self, weights: &[u8], activations: [&[u8]; R]) -> [f32; R] {
        #[cfg(target_arch = "x86_64")]
        if self.simd && matches!(self.ty, GgmlType::Q4K | GgmlType::Q6K) {
            let w = &weights[..self.weight_bytes];
            let a = activations.map(|a| &a[..self.act_bytes]);
            // SAFETY: `simd` is simd_available() (AVX2, FMA, F16C); lengths sliced above.
            return unsafe {
                match self.ty {
                    GgmlType::Q4K => dot_avx2::q4k_q8k_rows::<R>(as_blocks(w), a.map(as_blocks)),
                    _ => dot_avx2::q6k_q8k_rows::<R>(as_blocks(w), a.map(as_blocks)),
                }
            };
        }
        #[cfg(target_arch = "aarch64")]
        if self.simd && matches!(self.ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K) {
            let w = &weights[..self.weight_bytes];
            let a = activations.map(|a| as_blocks(&a[..self.act_bytes]));
            return match self.ty {
                GgmlType::Q4K => dot_neon::q4k_q8k_rows::<R>(as_blocks(w), a),
                GgmlType::Q5K => dot_neon::q5k_q8k_rows::<R>(as_blocks(w), a),
                _ => dot_neon::q6k_q8k_rows::<R>(as_blocks(w), a),
            };
        }
        activations.map(|a| self.dot(weights, a))
    }
}

/// Whether the NEON kernels are used: on AArch64 (where NEON is always there) unless
/// `KILN_FORCE_SCALAR` is `1`. Decided once per process (the eight-row kernels ask for every
/// tile).
pub fn neon_available() -> bool {
    static NEON: OnceLock<bool> = OnceLock::new();
    *NEON.get_or_init(|| cfg!(target_arch = "aarch64") && !std::env::var("KILN_FORCE_SCALAR").is_ok_and(|v| v == "1"))
}

/// The NEON kernel for `ty`, if there is one.
#[cfg(target_arch = "aarch64")]
fn neon_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f32> {
    Some(match ty {
        GgmlType::Q4_0 => dot_neon::q4_0_q8_0(as_blocks(w), as_blocks(a)),
        GgmlType::Q4_1 => dot_neon::q4_1_q8_1(as_blocks(w), as_blocks(a)),
        GgmlType::Q5_0 => dot_neon::q5_0_q8_0(as_blocks(w), as_blocks(a)),
        GgmlType::Q5_1 => dot_neon::q5_1_q8_1(as_blocks(w), as_blocks(a)),
        GgmlType::Q8_0 => dot_neon::q8_0_q8_0(as_blocks(w), as_blocks(a)),
        GgmlType::Q4K => dot_neon::q4k_q8k_rows::<1>(as_blocks(w), [as_blocks(a)])[0],
        GgmlType::Q5K => dot_neon::q5k_q8k_rows::<1>(as_blocks(w), [as_blocks(a)])[0],
        GgmlType::Q6K => dot_neon::q6k_q8k_rows::<1>(as_blocks(w), [as_blocks(a)])[0],
        _ => return None,
    })
}

/// The AVX2 kernel for `ty`, if there is one.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f32> {
    use GgmlType::*;
    Some(match ty {
        F32 => dot_avx2::f32(w, a),
        F16 => dot_avx2::f16(w, a),
        Q4_0 => dot_avx2::q4_0_q8_0(as_blocks(w), as_blocks(a)),
        Q4_1 => dot_avx2::q4_1_q8_1(as_blocks(w), as_blocks(a)),
        Q5_0 => dot_avx2::q5_0_q8_0(as_blocks(w), as_blocks(a)),
        Q8_0 => dot_avx2::q8_0_q8_0(as_blocks(w), as_blocks(a)),
        Q4K => dot_avx2::q4k_q8k(as_blocks(w), as_blocks(a)),
        Q6K => dot_avx2::q6k_q8k(as_blocks(w), as_blocks(a)),
        _ => return None,
    })
}

/// The scalar kernels, following ggml's generic C code operation for operation; the SIMD
/// kernels are tested against these.
pub mod reference {
    use super::*;

    pub use super::dequantize_row;

    /// The scalar quantizer (ggml's `quantize_row_*_ref`), whatever the CPU. Produces the same
    /// bytes as [`super::quantize_row`].
    pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
        check_quantize(ty, src, dst)?;
        quantize_unchecked(ty, src, dst);
        Ok(())
    }

    /// The scalar quantizer for sizes already checked.
    pub(super) fn quantize_unchecked(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
        use GgmlType::*;
        match ty {
            F32 => quantize::f32(src, dst),
            F16 => quantize::f16(src, dst),
            BF16 => quantize::bf16(src, dst),
            Q4_0 => quantize::q4_0(src, as_blocks_mut(dst)),
            Q4_1 => quantize::q4_1(src, as_blocks_mut(dst)),
            Q5_0 => quantize::q5_0(src, as_blocks_mut(dst)),
            Q5_1 => quantize::q5_1(src, as_blocks_mut(dst)),
            Q8_0 => quantize::q8_0(src, as_blocks_mut(dst), Q8Rounding::Reference),
            Q8_1 => quantize::q8_1(src, as_blocks_mut(dst), Q8Rounding::Reference),
            Q8K => quantize::q8k(src, as_blocks_mut(dst)),
            Q2K => quantize_k::q2k(src, as_blocks_mut(dst)),
            Q3K => quantize_k::q3k(src, as_blocks_mut(dst)),
            Q4K => quantize_k::q4k(src, as_blocks_mut(dst)),
            Q5K => quantize_k::q5k(src, as_blocks_mut(dst)),
            Q6K => quantize_k::q6k(src, as_blocks_mut(dst)),
        }
    }

    /// The scalar dot product (ggml's `ggml_vec_dot_*_generic`), whatever the CPU.
    ///
    /// # Panics
    /// As [`super::vec_dot`].
    pub fn vec_dot(ty: GgmlType, n: usize, weights: &[u8], activations: &[u8]) -> f32 {
        check_dot(ty, n, weights, activations);
        dot_unchecked(ty, weights, activations)
    }

    /// The scalar dot product of rows whose lengths were already checked.
    pub(super) fn dot_unchecked(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
        use GgmlType::*;
        match ty {
            F32 => dot_scalar::f32(w, a),
            F16 => dot_scalar::f16(w, a),
            BF16 => dot_scalar::bf16(w, a),
            Q4_0 => dot_scalar::q4_0_q8_0(as_blocks(w), as_blocks(a)),
            Q4_1 => dot_scalar::q4_1_q8_1(as_blocks(w), as_blocks(a)),
            Q5_0 => dot_scalar::q5_0_q8_0(as_blocks(w), as_blocks(a)),
            Q5_1 => dot_scalar::q5_1_q8_1(as_blocks(w), as_blocks(a)),
            Q8_0 => dot_scalar::q8_0_q8_0(as_blocks(w), as_blocks(a)),
            Q2K => dot_scalar::q2k_q8k(as_blocks(w), as_blocks(a)),
            Q3K => dot_scalar::q3k_q8k(as_blocks(w), as_blocks(a)),
            Q4K => dot_scalar::q4k_q8k(as_blocks(w), as_blocks(a)),
            Q5K => dot_scalar::q5k_q8k(as_blocks(w), as_blocks(a)),
            Q6K => dot_scalar::q6k_q8k(as_blocks(w), as_blocks(a)),
            Q8_1 | Q8K => unreachable!("rejected by check_dot"),
        }
    }
}
