//! The machine's peak f32 FLOP/s, measured, as the denominator of MFU.
//!
//! A formula (FMA lanes × pipes × clock) needs the clock, which a virtual machine may not
//! report, and the FMA width, which differs between CPUs with the same instruction set (Zen 4
//! runs AVX-512 on 256-bit pipes). So a loop of independent FMA chains, as wide as the CPU's
//! vectors, runs a few times, and the best run is the peak.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Instant;

/// FMA steps per chain in one timed run: about 5–20 ms on a current core.
const STEPS: usize = 1 << 20;

/// Peak f32 FLOP/s of `threads` cores: one core's, measured once per process (about 50 ms),
/// times `threads`. One core is measured rather than all at once because training calls this
/// from inside its thread pool, whose idle workers spin for a while and would share the cores.
pub fn peak_flops(threads: usize) -> f64 {
    static ONE_CORE: OnceLock<f64> = OnceLock::new();
    let one = *ONE_CORE.get_or_init(|| (0..5).map(|_| timed_run()).fold(0.0, f64::max));
    one * threads.max(1) as f64
}

/// FLOP/s of one run of the FMA chains on this thread.
fn timed_run() -> f64 {
    let t0 = Instant::now();
    let flops = fma_chains(STEPS);
    flops / t0.elapsed().as_secs_f64().max(1e-9)
}

/// Runs `steps` rounds of independent FMA chains at the widest width this CPU has; returns the
/// FLOPs done (2 per lane per FMA).
fn fma_chains(steps: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { x86::chains_avx512(steps) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected at run time.
            return unsafe { x86::chains_avx2(steps) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        // SAFETY: NEON was detected at run time.
        return unsafe { arm::chains_neon(steps) };
    }
    chains_scalar(steps)
}

/// Each step multiplies by a value just under one and adds a small one, so the chains stay
/// finite and normal for any number of steps.
const MUL: f32 = 0.999_999;
const ADD: f32 = 1e-6;

fn chains_scalar(steps: usize) -> f64 {
    let mut acc = [1.0f32; 8];
    let (m, a) = (black_box(MUL), black_box(ADD));
    for _ in 0..steps {
        for x in &mut acc {
            *x = x.mul_add(m, a);
        }
    }
    black_box(acc);
    (steps * acc.len() * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{black_box, ADD, MUL};
    use std::arch::x86_64::*;

    /// Enough chains to cover FMA latency × pipes on current cores (4 × 2 = 8 in flight).
    const CHAINS: usize = 12;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains_avx512(steps: usize) -> f64 {
        let m = _mm512_set1_ps(black_box(MUL));
        let a = _mm512_set1_ps(black_box(ADD));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..steps {
            for x in &mut acc {
                *x = _mm512_fmadd_ps(*x, m, a);
            }
        }
        black_box(acc);
        (steps * CHAINS * 16 * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn chains_avx2(steps: usize) -> f64 {
        let m = _mm256_set1_ps(black_box(MUL));
        let a = _mm256_set1_ps(black_box(ADD));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..steps {
            for x in &mut acc {
                *x = _mm256_fmadd_ps(*x, m, a);
            }
        }
        black_box(acc);
        (steps * CHAINS * 8 * 2) as f64
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{black_box, ADD, MUL};
    use std::arch::aarch64::*;

    /// FMA latency 4 × up to 4 pipes on wide cores.
    const CHAINS: usize = 16;

    #[target_feature(enable = "neon")]
    pub unsafe fn chains_neon(steps: usize) -> f64 {
        let m = vdupq_n_f32(black_box(MUL));
        let a = vdupq_n_f32(black_box(ADD));
        let mut acc = [vdupq_n_f32(1.0); CHAINS];
        for _ in 0..steps {
            for x in &mut acc {
                *x = vfmaq_f32(a, *x, m);
            }
        }
        black_box(acc);
        (steps * CHAINS * 4 * 2) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The peak must bound what a real kernel reaches: a large f32 matrix product (candle's
    /// GEMM, on all of rayon's threads) may not beat it.
    #[test]
    fn no_matrix_product_beats_the_measured_peak() {
        let threads = rayon::current_num_threads().max(1);
        let peak = peak_flops(threads);
        assert!(peak > 1e8, "implausible peak {peak}");
        let n = 384;
        let a = Tensor::ones((n, n), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t0 = Instant::now();
            black_box(a.matmul(&a).unwrap());
            best = best.max(2.0 * (n * n * n) as f64 / t0.elapsed().as_secs_f64());
        }
        assert!(best <= 1.1 * peak, "GEMM {best:.3e} FLOP/s beats the measured peak {peak:.3e} of {threads} threads");
    }

    #[test]
    fn chains_count_their_flops() {
        assert_eq!(chains_scalar(10), 160.0);
        assert!(fma_chains(10) >= 160.0);
    }
}
