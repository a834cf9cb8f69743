//! What this machine can do at most, on kiln's threads, so benchmarks can state a speed as a
//! share of its limit: how fast memory streams into the cores (decoding reads every weight
//! once per token), and how many int8 multiply-adds per second the cores retire (prompt
//! processing is that many products per weight and token).

use rayon::prelude::*;
use std::time::Instant;

/// Bytes the read probe streams per pass: far past every cache.
const READ_BYTES: usize = 1 << 30;

/// Memory read bandwidth in GB/s (10⁹ bytes): the best of `passes` passes in which every
/// thread sums its share of a 1 GiB buffer.
pub fn memory_read_gbs(passes: usize) -> f64 {
    let words = READ_BYTES / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    crate::threads::pool().install(|| {
        let chunk = words / (rayon::current_num_threads() * 4).max(1);
        let mut best = f64::MAX;
        for _ in 0..passes.max(1) {
            let t = Instant::now();
            let total: u64 = buf.par_chunks(chunk.max(1)).map(sum_words).sum();
            std::hint::black_box(total);
            best = best.min(t.elapsed().as_secs_f64());
        }
        READ_BYTES as f64 / best / 1e9
    })
}

/// Sums with eight independent lanes, so the adds never wait on each other and the loads set
/// the pace (the compiler vectorises this).
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    chunks.remainder().iter().fold(acc.iter().fold(0u64, |a, &b| a.wrapping_add(b)), |a, &b| a.wrapping_add(b))
}

/// Peak int8 multiply-adds per second (10⁹ MAC/s) over all threads: independent chains of
/// the widest int8 dot product the CPU has (`vpdpbusd` with AVX-512 VNNI, else AVX2's
/// `maddubs` + `madd`), on registers only. None where kiln has no int8 kernel for the CPU.
pub fn int8_peak_gmacs() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !crate::quant::simd_available() {
            return None;
        }
        let vnni = crate::quant::tile::vnni_available();
        const ITERS: u64 = 20_000_000;
        let threads = crate::threads::pool().current_num_threads();
        let t = Instant::now();
        let macs: u64 = crate::threads::pool().install(|| {
            (0..threads)
                .into_par_iter()
                // SAFETY: simd_available() checked AVX2 (vnni_available() the VNNI set).
                .map(|i| unsafe {
                    if vnni {
                        x86::vnni_chains(ITERS, i as i32)
                    } else {
                        x86::avx2_chains(ITERS, i as i32)
                    }
                })
                .sum()
        });
        Some(macs as f64 / t.elapsed().as_secs_f64() / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Eight independent `vpdpbusd` chains on 256-bit registers (the width kiln's kernels
    /// use): 8 × 32 MACs per iteration.
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub unsafe fn vnni_chains(iters: u64, seed: i32) -> u64 {
        let (a, b) = (_mm256_set1_epi8(3), _mm256_set1_epi8(5));
        let mut acc = [_mm256_set1_epi32(seed); 8];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_dpbusd_epi32(*x, a, b);
            }
        }
        let sum = acc.iter().fold(_mm256_setzero_si256(), |s, &x| _mm256_add_epi32(s, x));
        std::hint::black_box(sum);
        iters * 8 * 32
    }

    /// Eight independent `maddubs` + `madd` + add chains (AVX2's int8 dot product); each
    /// multiplies its own accumulator's bytes, so nothing can be hoisted out of the loop.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2_chains(iters: u64, seed: i32) -> u64 {
        let (b, ones) = (_mm256_set1_epi8(5), _mm256_set1_epi16(1));
        let mut acc = [_mm256_set1_epi32(seed); 8];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(_mm256_maddubs_epi16(*x, b), ones));
            }
        }
        let sum = acc.iter().fold(_mm256_setzero_si256(), |s, &x| _mm256_add_epi32(s, x));
        std::hint::black_box(sum);
        iters * 8 * 32
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_probes_report_plausible_limits() {
        let gbs = super::memory_read_gbs(1);
        assert!(gbs > 0.1 && gbs < 10_000.0, "{gbs} GB/s");
        if let Some(g) = super::int8_peak_gmacs() {
            assert!(g > 1.0 && g < 1_000_000.0, "{g} GMAC/s");
        }
    }
}
