//! `e^x` in vector form and what is built on it (SiLU), and ggml's table GELU. The scalar,
//! AVX2 and NEON versions do the same operations lane by lane, so they give the same bits:
//! results never depend on the CPU path.

use half::f16;
use std::sync::OnceLock;

/// Below this, `2^n` would be subnormal: the result is 0.
const LOW: f32 = -87.33654;
/// Above this the result is infinity (`e^x` is within 2^-0.5 of the largest f32).
const HIGH: f32 = 88.37626;

/// Cephes' `expf` (within 2 ulp): `x = n·ln 2 + r` with ln 2 in two parts, a degree-6
/// polynomial for `e^r`, `2^n` built in the exponent bits; 0 below -87.3, infinity above 88.37.
#[inline]
pub fn exp(x: f32) -> f32 {
    if x < LOW {
        return 0.0;
    }
    if x > HIGH {
        return f32::INFINITY;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(0.693_359_4, x);
    let r = (-n).mul_add(-2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p.mul_add(r, c);
    }
    let e_r = p.mul_add(r * r, r) + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// `e^x` for eight lanes: [`exp`] in vector form.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOW));
    let overflow = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HIGH));
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LOW)), _mm256_set1_ps(HIGH));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let e_r = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
    let two_n =
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    let e = _mm256_andnot_ps(underflow, _mm256_mul_ps(e_r, two_n));
    _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), overflow)
}

/// `e^x` for four lanes: [`exp`] in NEON form (the same fused multiply-adds, ties-to-even
/// rounding of `n`, and limits).
#[cfg(target_arch = "aarch64")]
#[inline]
pub(crate) fn exp4(x: std::arch::aarch64::float32x4_t) -> std::arch::aarch64::float32x4_t {
    use std::arch::aarch64::*;
    // SAFETY: NEON is part of the AArch64 baseline; no memory is touched.
    unsafe {
        let underflow = vcltq_f32(x, vdupq_n_f32(LOW));
        let overflow = vcgtq_f32(x, vdupq_n_f32(HIGH));
        let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(LOW)), vdupq_n_f32(HIGH));
        let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
        let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
        let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
        let mut p = vdupq_n_f32(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = vfmaq_f32(vdupq_n_f32(c), p, r);
        }
        let e_r = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0));
        let two_n = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127))));
        let e = vbslq_f32(underflow, vdupq_n_f32(0.0), vmulq_f32(e_r, two_n));
        vbslq_f32(overflow, vdupq_n_f32(f32::INFINITY), e)
    }
}

/// `gate = silu(gate) · up`, where `silu(x) = x / (1 + e^-x)`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let mut body = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd_available() {
        body = n - n % 8;
        // SAFETY: simd_available() checked AVX2, FMA and F16C; indices stay below `body ≤ n`.
        unsafe { swiglu_avx2(&mut gate[..body], &up[..body]) };
    }
    #[cfg(target_arch = "aarch64")]
    if crate::quant::neon_available() {
        body = n - n % 4;
        swiglu_neon(&mut gate[..body], &up[..body]);
    }
    for (g, &u) in gate[body..n].iter_mut().zip(&up[body..n]) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    for i in (0..gate.len()).step_by(8) {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
    }
}

/// [`swiglu`] four lanes at a time, with [`exp4`].
#[cfg(target_arch = "aarch64")]
fn swiglu_neon(gate: &mut [f32], up: &[f32]) {
    use std::arch::aarch64::*;
    for (g, u) in gate.chunks_exact_mut(4).zip(up.chunks_exact(4)) {
        // SAFETY: NEON is baseline; each chunk holds four floats.
        unsafe {
            let x = vld1q_f32(g.as_ptr());
            let silu = vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), exp4(vnegq_f32(x))));
            vst1q_f32(g.as_mut_ptr(), vmulq_f32(silu, vld1q_f32(u.as_ptr())));
        }
    }
}

/// GELU in ggml's tanh form.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU through the error function, `x·Φ(x)`: BERT's `gelu`, as PyTorch computes it.
pub fn gelu_erf(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

/// The error function (musl's rational approximations, through the `libm` crate: within an
/// ulp of f64, at the cost of a few dozen operations).
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// GELU of every f16 value, rounded to f16: ggml evaluates GELU through this table. One zero
/// entry of padding at the end: the vector lookup reads four bytes at each index.
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX).map(|b| f16::from_f32(gelu_tanh(f16::from_bits(b).to_f32()))).chain([f16::ZERO]).collect()
    })
}

/// One lane of [`geglu`].
#[inline]
fn geglu_one(table: &[f16], x: f32, u: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x * u
    } else {
        table[f16::from_f32(x).to_bits() as usize].to_f32() * u
    }
}

/// `gate = gelu(gate) · up`, with ggml's f16-table GELU.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    let n = gate.len().min(up.len());
    let mut body = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd_available() {
        body = n - n % 8;
        // SAFETY: simd_available() checked AVX2, FMA and F16C; indices stay below `body ≤ n`,
        // and the table has its padding entry.
        unsafe { geglu_avx2(table, &mut gate[..body], &up[..body]) };
    }
    #[cfg(target_arch = "aarch64")]
    if crate::quant::neon_available() {
        body = n - n % 4;
        geglu_neon(table, &mut gate[..body], &up[..body]);
    }
    for (g, &u) in gate[body..n].iter_mut().zip(&up[body..n]) {
        *g = geglu_one(table, *g, u);
    }
}

/// Eight lanes of [`geglu_one`]: the table read with a gather (four bytes at `2·index`, the
/// low half kept).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn geglu_avx2(table: &[f16], gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let (low, high, halves) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0), _mm256_set1_epi32(0xFFFF));
    for i in (0..gate.len()).step_by(8) {
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let index = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
        let words = _mm256_and_si256(_mm256_i32gather_epi32::<2>(table.as_ptr().cast(), index), halves);
        // Eight 16-bit values from the low halves of eight 32-bit lanes, in order.
        let packed = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(words, _mm256_setzero_si256()));
        let gelu = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
        let value = _mm256_blendv_ps(gelu, x, _mm256_cmp_ps::<_CMP_GE_OQ>(x, high));
        let product = _mm256_mul_ps(value, _mm256_loadu_ps(up.as_ptr().add(i)));
        let out = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, low), product);
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), out);
    }
}

/// Four lanes of [`geglu_one`]: the f16 index from the hardware conversion (`fcvtn`, round to
/// nearest even with the default FPCR, as `f16::from_f32`), four table reads (NEON has no
/// gather), and the same selects and multiply.
#[cfg(target_arch = "aarch64")]
fn geglu_neon(table: &[f16], gate: &mut [f32], up: &[f32]) {
    use std::arch::aarch64::*;
    for (g, u) in gate.chunks_exact_mut(4).zip(up.chunks_exact(4)) {
        // SAFETY: NEON is baseline; each chunk holds four floats and `index` four halves; the
        // asm converts one register to another and touches no memory.
        unsafe {
            let x = vld1q_f32(g.as_ptr());
            let halves: uint16x4_t;
            std::arch::asm!("fcvtn {h:v}.4h, {x:v}.4s", x = in(vreg) x, h = out(vreg) halves, options(pure, nomem, nostack, preserves_flags));
            let mut index = [0u16; 4];
            vst1_u16(index.as_mut_ptr(), halves);
            // Any u16 is an index into the 65 537-entry table.
            let looked_up = index.map(|i| table[i as usize].to_f32());
            let gelu = vld1q_f32(looked_up.as_ptr());
            let value = vbslq_f32(vcgeq_f32(x, vdupq_n_f32(10.0)), x, gelu);
            let product = vmulq_f32(value, vld1q_f32(u.as_ptr()));
            let out = vbslq_f32(vcleq_f32(x, vdupq_n_f32(-10.0)), vdupq_n_f32(0.0), product);
            vst1q_f32(g.as_mut_ptr(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_tabulated_values() {
        let table = [
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (-1.5, -0.9661051464753108),
            (3.5, 0.9999992569016276),
            (0.0, 0.0),
        ];
        for (x, want) in table {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {} want {want}", erf(x));
        }
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn exp_is_within_two_ulp() {
        let xs = (0..400_000).map(|i| -90.0 + i as f32 * 0.00047);
        for x in xs.chain([0.0, -0.0, 1.5, 20.0, -1e-8, -0.3, f32::NEG_INFINITY, 88.0]) {
            let (g, exact) = (exp(x), (x as f64).exp());
            if !(LOW..=HIGH).contains(&x) {
                assert_eq!(g, if x < LOW { 0.0 } else { f32::INFINITY }, "exp({x})");
                continue;
            }
            let ulp = (exact as f32).abs() * f32::EPSILON;
            assert!((g as f64 - exact).abs() <= 2.0 * ulp as f64, "exp({x}) = {g}, exact {exact}");
        }
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn vector_exp_and_swiglu_give_the_scalar_bits() {
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -95.0 + i as f32 * 0.00097)
            .chain([f32::NEG_INFINITY, f32::INFINITY, 1e30, -1e30, 0.0, -0.0, 88.5, -88.5])
            .collect();
        #[cfg(target_arch = "x86_64")]
        if crate::quant::simd_available() {
            for chunk in xs.chunks_exact(8) {
                let mut v = [0f32; 8];
                // SAFETY: simd_available() checked AVX2, FMA and F16C.
                unsafe {
                    use std::arch::x86_64::*;
                    _mm256_storeu_ps(v.as_mut_ptr(), exp8(_mm256_loadu_ps(chunk.as_ptr())));
                }
                for (x, g) in chunk.iter().zip(v) {
                    assert_eq!(g.to_bits(), exp(*x).to_bits(), "exp8({x})");
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        for chunk in xs.chunks_exact(4) {
            let mut v = [0f32; 4];
            // SAFETY: NEON is baseline; both arrays hold four floats.
            unsafe {
                use std::arch::aarch64::*;
                vst1q_f32(v.as_mut_ptr(), exp4(vld1q_f32(chunk.as_ptr())));
            }
            for (x, g) in chunk.iter().zip(v) {
                assert_eq!(g.to_bits(), exp(*x).to_bits(), "exp4({x})");
            }
        }
        // `swiglu` on whatever path this CPU takes, against the scalar formula.
        let up: Vec<f32> = xs.iter().map(|x| 0.5 - x * 0.01).collect();
        let gate: Vec<f32> = xs.iter().map(|x| x.clamp(-1e3, 1e3)).collect();
        let mut simd = gate.clone();
        swiglu(&mut simd, &up);
        for ((&g, &u), s) in gate.iter().zip(&up).zip(&simd) {
            let scalar = g / (1.0 + exp(-g)) * u;
            assert_eq!(s.to_bits(), scalar.to_bits(), "swiglu({g}, {u})");
        }
    }

    #[test]
    fn geglu_vector_lanes_give_the_scalar_bits() {
        let table = gelu_table();
        // f16 rounding ties (to even, up and down), f16 subnormals and the tie below the
        // smallest, NaN and infinities, and an odd length for the scalar tail.
        let ties = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            -(2.0 + 2f32.powi(-10)),
            2f32.powi(-25),
            3.0 * 2f32.powi(-25),
            2f32.powi(-24),
            -1e-6,
        ];
        let special = [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 65520.0, -9.999, 9.999];
        let xs: Vec<f32> = (0..4003)
            .map(|i| -12.0 + i as f32 * 0.006)
            .chain([-10.0, 10.0, 0.0, -0.0, 65504.0, -65504.0, 1e6, -1e6, 1e-8])
            .chain(ties)
            .chain(special)
            .collect();
        let ups: Vec<f32> = (0..xs.len()).map(|i| 0.5 + (i % 13) as f32 * 0.37 - 3.0).collect();
        let mut got = xs.clone();
        geglu(&mut got, &ups);
        for ((&x, &u), g) in xs.iter().zip(&ups).zip(&got) {
            assert_eq!(g.to_bits(), geglu_one(table, x, u).to_bits(), "gelu({x}) * {u}");
        }
    }

    #[test]
    fn swiglu_is_silu_times_up() {
        for i in -400..400 {
            let (x, u) = (i as f32 * 0.05, 1.0 - i as f32 * 0.001);
            let mut g = [x];
            swiglu(&mut g, &[u]);
            let want = x as f64 / (1.0 + (-x as f64).exp()) * u as f64;
            assert!((g[0] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "{x}: {} vs {want}", g[0]);
        }
        let mut g = [-200.0, 200.0];
        swiglu(&mut g, &[1.0, 1.0]);
        assert_eq!(g, [-0.0, 200.0]);
    }
}
