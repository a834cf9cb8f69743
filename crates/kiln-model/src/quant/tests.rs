//! Unit tests of the quantized kernels: SIMD against scalar, dot products against f32 dots of
//! dequantized rows, quantization error budgets and ggml's rounding rules.

use kiln_gguf::GgmlType::{self, *};

use super::blocks::*;
use super::*;

/// SIMD and scalar dot products may differ only by f32 reassociation: at most this much
/// relative to the sum of |w_i a_i|.
const SIMD_REL_TOL: f64 = 1e-5;
/// `vec_dot` against the f64 dot of the dequantized rows, relative to the sum of |w_i a_i|.
const DOT_REL_TOL: f64 = 1e-5;
/// As `DOT_REL_TOL` for Q4_1 / Q5_1, whose Q8_1 activations carry `d * sum(q)` rounded to f16:
/// the offset term `m * s` is off by up to 2^-11 of `|m| * sum|a|`.
const DOT_REL_TOL_Q8_1: f64 = 2e-3;

/// Quantize → dequantize RMS error over RMS of the input, for Gaussian data.
const ROUND_TRIP_RMS_BUDGET: &[(GgmlType, f64)] = &[
    (F32, 0.0),
    (F16, 2.5e-4),
    (BF16, 2e-3),
    (Q4_0, 0.1),
    (Q4_1, 0.09),
    (Q5_0, 0.05),
    (Q5_1, 0.045),
    (Q8_0, 0.0065),
    (Q8_1, 0.0065),
    (Q8K, 0.0075),
    (Q2K, 0.33),
    (Q3K, 0.18),
    (Q4K, 0.085),
    (Q5K, 0.045),
    (Q6K, 0.021),
];

/// Block counts for the SIMD tests: odd, so pairing and tails are exercised.
const BLOCK_COUNTS: [usize; 4] = [1, 3, 7, 33];

/// Every type with a dot product.
const WEIGHT_TYPES: [GgmlType; 13] = [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K];

/// The types with an AVX2 kernel.
const SIMD_TYPES: [GgmlType; 8] = [F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4K, Q6K];

/// SplitMix64: a tiny deterministic generator, so tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-a, a).
    fn sym(&mut self, a: f32) -> f32 {
        (2.0 * self.unit() - 1.0) * a
    }

    /// Roughly Gaussian (sum of four uniforms), unit variance.
    fn gauss(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3f32.sqrt()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    fn gauss_row(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.gauss()).collect()
    }
}

/// `n_blocks` blocks of random weights of `ty`: random quant bits, with every f16 scale
/// replaced by `scale()` (so no NaN or infinity). Float types get Gaussian values.
fn random_weights(ty: GgmlType, n_blocks: usize, rng: &mut Rng, mut scale: impl FnMut(&mut Rng) -> f32) -> Vec<u8> {
    let n = n_blocks * ty.block_size();
    if !ty.is_quantized() {
        let x = rng.gauss_row(n);
        let mut out = vec![0u8; ty.bytes_for(n).unwrap()];
        quantize_row(ty, &x, &mut out).unwrap();
        return out;
    }
    let mut out = rng.bytes(ty.bytes_for(n).unwrap());
    let mut h = |rng: &mut Rng| F16Le::from_f32(scale(rng));
    match ty {
        Q4_0 => as_blocks_mut::<BlockQ4_0>(&mut out).iter_mut().for_each(|b| b.d = h(rng)),
        Q4_1 => as_blocks_mut::<BlockQ4_1>(&mut out).iter_mut().for_each(|b| (b.d, b.m) = (h(rng), h(rng))),
        Q5_0 => as_blocks_mut::<BlockQ5_0>(&mut out).iter_mut().for_each(|b| b.d = h(rng)),
        Q5_1 => as_blocks_mut::<BlockQ5_1>(&mut out).iter_mut().for_each(|b| (b.d, b.m) = (h(rng), h(rng))),
        Q8_0 => as_blocks_mut::<BlockQ8_0>(&mut out).iter_mut().for_each(|b| b.d = h(rng)),
        Q2K => as_blocks_mut::<BlockQ2K>(&mut out).iter_mut().for_each(|b| (b.d, b.dmin) = (h(rng), h(rng))),
        Q3K => as_blocks_mut::<BlockQ3K>(&mut out).iter_mut().for_each(|b| b.d = h(rng)),
        Q4K => as_blocks_mut::<BlockQ4K>(&mut out).iter_mut().for_each(|b| (b.d, b.dmin) = (h(rng), h(rng))),
        Q5K => as_blocks_mut::<BlockQ5K>(&mut out).iter_mut().for_each(|b| (b.d, b.dmin) = (h(rng), h(rng))),
        Q6K => as_blocks_mut::<BlockQ6K>(&mut out).iter_mut().for_each(|b| b.d = h(rng)),
        _ => unreachable!("{ty} is not a weight type"),
    }
    out
}

/// Activations for a weight row of `ty`: Gaussian values quantized to `vec_dot_type(ty)`.
fn random_activations(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let at = vec_dot_type(ty);
    let x = rng.gauss_row(n);
    let mut out = vec![0u8; at.bytes_for(n).unwrap()];
    quantize_row(at, &x, &mut out).unwrap();
    out
}

fn dequant(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    dequantize_row(ty, bytes, &mut out);
    out
}

/// The f64 dot of the dequantized rows and the sum of |w_i a_i|.
fn f64_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> (f64, f64) {
    let (wf, af) = (dequant(ty, w), dequant(vec_dot_type(ty), a));
    let dot = wf.iter().zip(&af).map(|(&x, &y)| x as f64 * y as f64).sum();
    let mag = wf.iter().zip(&af).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
    (dot, mag)
}

/// The AVX2 kernel's result, if this CPU has AVX2 and `ty` has a kernel (ignores
/// `KILN_FORCE_SCALAR`, so both paths are tested in every run).
fn simd_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> Option<f32> {
    check_dot(ty, n, w, a);
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avx2() {
        // SAFETY: features checked just above.
        return unsafe { avx2_dot(ty, w, a) };
    }
    None
}

#[test]
fn simd_matches_scalar_on_random_rows() {
    if !cpu_has_avx2() {
        eprintln!("no AVX2 on this CPU: SIMD kernels not tested");
        return;
    }
    let mut rng = Rng(1);
    for ty in SIMD_TYPES {
        for blocks in BLOCK_COUNTS {
            // Float rows are 32 values per "block" here, plus a ragged tail of 5.
            let n = if ty.is_quantized() { blocks * ty.block_size() } else { blocks * 32 + 5 };
            let w = random_weights(ty, n / ty.block_size(), &mut rng, |r| r.sym(0.1));
            let a = random_activations(ty, n, &mut rng);
            let scalar = reference::vec_dot(ty, n, &w, &a) as f64;
            let simd = simd_dot(ty, n, &w, &a).expect("a SIMD kernel") as f64;
            let (_, mag) = f64_dot(ty, &w, &a);
            assert!(
                (simd - scalar).abs() <= SIMD_REL_TOL * mag,
                "{ty} x {blocks}: simd {simd} scalar {scalar} (sum |terms| {mag})"
            );
        }
    }
}

/// With every scale 1 (and the Q4_1 offset 0), both paths compute the integer dot product,
/// which f32 holds exactly: they must agree bit for bit, for any i8 activations including -128.
#[test]
fn simd_integer_parts_are_exact() {
    if !cpu_has_avx2() {
        return;
    }
    let mut rng = Rng(2);
    for ty in SIMD_TYPES.into_iter().filter(|t| t.is_quantized()) {
        for blocks in BLOCK_COUNTS {
            let n = blocks * ty.block_size();
            let mut w = random_weights(ty, blocks, &mut rng, |_| 1.0);
            if ty == Q4_1 {
                as_blocks_mut::<BlockQ4_1>(&mut w).iter_mut().for_each(|b| b.m = F16Le::from_f32(0.0));
            }
            let mut a = rng.bytes(vec_dot_type(ty).bytes_for(n).unwrap());
            match vec_dot_type(ty) {
                Q8_0 => as_blocks_mut::<BlockQ8_0>(&mut a).iter_mut().for_each(|b| b.d = F16Le::from_f32(1.0)),
                Q8_1 => as_blocks_mut::<BlockQ8_1>(&mut a).iter_mut().for_each(|b| {
                    (b.d, b.s) = (F16Le::from_f32(1.0), F16Le::from_f32(0.0));
                }),
                Q8K => as_blocks_mut::<BlockQ8K>(&mut a).iter_mut().for_each(|b| {
                    b.d = 1f32.to_le_bytes();
                    for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                        *s = (q.iter().map(|&v| v as i16).sum::<i16>()).to_le_bytes();
                    }
                }),
                _ => unreachable!(),
            }
            let scalar = reference::vec_dot(ty, n, &w, &a);
            let simd = simd_dot(ty, n, &w, &a).unwrap();
            assert_eq!(simd.to_bits(), scalar.to_bits(), "{ty} x {blocks}: simd {simd} scalar {scalar}");
            assert_eq!(scalar.fract(), 0.0, "{ty}: unit scales give an integer");
        }
    }
}

#[test]
fn vec_dot_matches_dequantized_f32_dot() {
    let mut rng = Rng(3);
    for ty in WEIGHT_TYPES {
        for blocks in [1, 5] {
            let n = blocks * ty.block_size().max(32);
            let w = random_weights(ty, n / ty.block_size(), &mut rng, |r| r.sym(0.1));
            let a = random_activations(ty, n, &mut rng);
            let (want, mag) = f64_dot(ty, &w, &a);
            let tol = if vec_dot_type(ty) == Q8_1 { DOT_REL_TOL_Q8_1 } else { DOT_REL_TOL };
            for (path, got) in [("dispatch", vec_dot(ty, n, &w, &a)), ("scalar", reference::vec_dot(ty, n, &w, &a))] {
                let got = got as f64;
                assert!(
                    (got - want).abs() <= tol * mag,
                    "{ty} ({path}) x {blocks}: got {got}, f64 dot of dequantized rows {want} (sum |terms| {mag})"
                );
            }
        }
    }
}

#[test]
fn round_trip_error_within_budget() {
    let mut rng = Rng(4);
    for &(ty, budget) in ROUND_TRIP_RMS_BUDGET {
        let n = 16 * 256;
        let x = rng.gauss_row(n);
        let mut q = vec![0u8; ty.bytes_for(n).unwrap()];
        quantize_row(ty, &x, &mut q).unwrap();
        let y = dequant(ty, &q);
        let err: f64 = x.iter().zip(&y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
        let norm: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
        let rel = (err / norm).sqrt();
        assert!(rel <= budget, "{ty}: relative RMS error {rel} over budget {budget}");
        // The budget should be tight enough to catch a lost bit: measured within 1.5x of it.
        assert!(rel >= budget / 1.5 || ty == F32, "{ty}: error {rel} far below budget {budget}; tighten it");
    }
}

/// Rows that stress the activation quantizers: Gaussian values, exact ties, zeros, signed
/// zeros, subnormals, huge values, infinities and NaN, in odd block counts.
fn awkward_rows(rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
    let special = [0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 1e-40, -1e-42, 3e38, -3e38, f32::INFINITY, f32::NAN];
    let mut rows = vec![rng.gauss_row(n), vec![0.0; n], (0..n).map(|i| (i % 17) as f32 - 8.5).collect()];
    let mut mixed = rng.gauss_row(n);
    for v in mixed.iter_mut() {
        if rng.unit() < 0.1 {
            *v = special[(rng.next_u64() % special.len() as u64) as usize];
        }
    }
    rows.push(mixed);
    // Equal magnitudes of both signs: the first must win the signed maximum.
    let mut pm = rng.gauss_row(n);
    for (i, v) in pm.iter_mut().enumerate() {
        if i % 64 == 3 {
            *v = if i % 128 == 3 { -9.0 } else { 9.0 };
        }
    }
    rows.push(pm);
    rows
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_quantizers_match_scalar_bytes() {
    if !cpu_has_avx2() {
        return;
    }
    let mut rng = Rng(9);
    for ty in [Q8_0, Q8_1, Q8K, F16] {
        for blocks in BLOCK_COUNTS {
            let n = blocks * ty.block_size().max(32) + if ty == F16 { 3 } else { 0 };
            for (r, x) in awkward_rows(&mut rng, n).into_iter().enumerate() {
                let mut want = vec![0u8; ty.bytes_for(n).unwrap()];
                let mut got = want.clone();
                reference::quantize_row(ty, &x, &mut want).unwrap();
                // SAFETY: features checked at the top.
                assert!(unsafe { avx2_quantize(ty, &x, &mut got) });
                if ty == F16 {
                    // NaN payloads may differ between F16C and the software conversion.
                    for (i, (g, w)) in got.chunks(2).zip(want.chunks(2)).enumerate() {
                        let (g, w) = (F16Le([g[0], g[1]]), F16Le([w[0], w[1]]));
                        assert!(g == w || (g.to_f32().is_nan() && w.to_f32().is_nan()), "F16 value {i} of row {r}");
                    }
                } else {
                    let i = (0..want.len()).find(|&i| got[i] != want[i]);
                    assert!(i.is_none(), "{ty} x {blocks}, row {r}: byte {i:?} differs");
                }
            }
        }
    }
}

#[test]
fn q8k_block_sums_and_scale() {
    let mut rng = Rng(5);
    let mut x = rng.gauss_row(3 * 256);
    x[256..512].iter_mut().for_each(|v| *v = 0.0);
    let mut q = vec![0u8; Q8K.bytes_for(x.len()).unwrap()];
    quantize_row(Q8K, &x, &mut q).unwrap();
    let blocks = as_blocks::<BlockQ8K>(&q);
    for (i, b) in blocks.iter().enumerate() {
        for j in 0..16 {
            let sum: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum();
            assert_eq!(b.bsum(j) as i32, sum, "block {i} sum {j}");
        }
        let xs = &x[256 * i..256 * (i + 1)];
        let (max, amax) = xs.iter().fold((0f32, 0f32), |(m, a), &v| if v.abs() > a { (v, v.abs()) } else { (m, a) });
        if amax == 0.0 {
            assert_eq!(b.d(), 0.0);
            assert!(b.qs.iter().all(|&v| v == 0));
        } else {
            // The largest value maps to -127 exactly and d = 1 / (-127 / max).
            assert_eq!(b.d(), 1.0 / (-127.0 / max));
            let k = xs.iter().position(|&v| v == max).unwrap();
            assert_eq!(b.qs[k], -127);
        }
    }
}

#[test]
fn ggml_rounding_rules() {
    // Q8_0 uses roundf: ties away from zero. amax 127 makes d = 1 exactly.
    let mut x = vec![0f32; 32];
    x[..6].copy_from_slice(&[127.0, 0.5, -0.5, 2.5, -2.5, 0.49999997]);
    let mut q = vec![0u8; 34];
    quantize_row(Q8_0, &x, &mut q).unwrap();
    let b = &as_blocks::<BlockQ8_0>(&q)[0];
    assert_eq!(&b.qs[..6], &[127, 1, -1, 3, -3, 0]);

    // Q8_K uses nearest_int: ties to even. max -127 makes iscale = 1.
    let mut x = vec![0f32; 256];
    x[..6].copy_from_slice(&[-127.0, 0.5, 1.5, 2.5, -2.5, -0.5]);
    let mut q = vec![0u8; 292];
    quantize_row(Q8K, &x, &mut q).unwrap();
    let b = &as_blocks::<BlockQ8K>(&q)[0];
    assert_eq!(&b.qs[..6], &[-127, 0, 2, 2, -2, 0]);
    assert_eq!(b.d(), 1.0);

    // round_away agrees with f32::round, nearest_int with round_ties_even, over many values.
    let mut rng = Rng(6);
    for _ in 0..100_000 {
        let v = rng.sym(130.0);
        let h = (v * 2.0).round() / 2.0; // also hit exact halves
        for v in [v, h] {
            assert_eq!(quantize::round_away_for_test(v), v.round() as i32, "{v}");
            assert_eq!(quantize::nearest_int_for_test(v), v.round_ties_even() as i32, "{v}");
        }
    }
}

#[test]
fn bf16_conversion_matches_ggml() {
    // Round to nearest even, and NaN stays a (quiet) NaN.
    assert_eq!(quantize::bf16_bits(1.0), 0x3f80);
    assert_eq!(quantize::bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even below
    assert_eq!(quantize::bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, even above
    assert_eq!(quantize::bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(quantize::bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
    assert_eq!(quantize::bf16_bits(f32::INFINITY), 0x7f80);
}

#[test]
fn k4_scale_unpacking_agrees() {
    let mut rng = Rng(7);
    for _ in 0..1000 {
        let packed: [u8; 12] = rng.bytes(12).try_into().unwrap();
        let (scales, mins) = k4_unpack(&packed);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &packed), (scales[j], mins[j]));
        }
    }
}

#[test]
fn quantize_row_rejects_bad_sizes() {
    let x = vec![0f32; 256];
    let mut out = vec![0u8; 1024];
    assert!(matches!(quantize_row(Q8_0, &x[..31], &mut out), Err(QuantError::PartialBlock { .. })));
    let err = quantize_row(Q4K, &x, &mut out).unwrap_err();
    assert!(matches!(err, QuantError::OutputSize { expected: 144, .. }));
    assert!(err.to_string().contains("Q4_K"), "{err}");
}

#[test]
fn vec_dot_types_follow_llama_cpp() {
    let pairs = [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (Q4_0, Q8_0),
        (Q5_0, Q8_0),
        (Q8_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_1, Q8_1),
        (Q2K, Q8K),
        (Q3K, Q8K),
        (Q4K, Q8K),
        (Q5K, Q8K),
        (Q6K, Q8K),
    ];
    for (w, a) in pairs {
        assert_eq!(vec_dot_type(w), a, "{w}");
        assert!(has_vec_dot(w));
    }
}

#[test]
#[should_panic(expected = "activations take")]
fn vec_dot_checks_lengths() {
    let w = vec![0u8; 18];
    vec_dot(Q4_0, 32, &w, &[0u8; 18]);
}

/// Throughput of the SIMD kernels against their scalar twins, as a ratio measured in the same
/// run: `cargo test --release -p kiln-model quant::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_simd_against_scalar() {
    use std::hint::black_box;
    use std::time::Instant;
    if !cpu_has_avx2() {
        return;
    }
    let mut rng = Rng(8);
    let n = 4096;
    for ty in SIMD_TYPES.into_iter().chain([Q5_1, Q2K, Q3K, Q5K]) {
        let w = random_weights(ty, n / ty.block_size(), &mut rng, |r| r.sym(0.1));
        let a = random_activations(ty, n, &mut rng);
        // The best of 20 runs of 100 calls: these machines are shared, so take the quietest.
        let time = |f: &mut dyn FnMut() -> f32| {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let t = Instant::now();
                for _ in 0..100 {
                    black_box(f());
                }
                best = best.min(t.elapsed().as_secs_f64() / 100.0 * 1e9);
            }
            best
        };
        let scalar = time(&mut || reference::vec_dot(ty, n, black_box(&w), black_box(&a)));
        let fast = time(&mut || vec_dot(ty, n, black_box(&w), black_box(&a)));
        let act = vec_dot_type(ty);
        let x = rng.gauss_row(n);
        let mut q = vec![0u8; act.bytes_for(n).unwrap()];
        let q_scalar = time(&mut || {
            reference::quantize_row(act, black_box(&x), black_box(&mut q)).unwrap();
            0.0
        });
        let q_fast = time(&mut || {
            quantize_row(act, black_box(&x), black_box(&mut q)).unwrap();
            0.0
        });
        eprintln!(
            "{ty:>5} dot: scalar {scalar:6.0} ns, dispatch {fast:5.0} ns ({:4.1}x) | \
             quantize to {act:>4}: scalar {q_scalar:6.0} ns, dispatch {q_fast:5.0} ns ({:4.1}x)",
            scalar / fast,
            q_scalar / q_fast
        );
    }
}

/// The run-time activation rounding (ggml's x86 quantizer) gives the same bytes in its SIMD
/// and scalar forms, for every finite row (NaN activations are garbage in either form).
#[cfg(target_arch = "x86_64")]
#[test]
fn runtime_activation_rounding_simd_matches_scalar() {
    if !cpu_has_avx2() {
        return;
    }
    let mut rng = Rng(11);
    for ty in [Q8_0, Q8_1] {
        for blocks in BLOCK_COUNTS {
            let n = blocks * 32;
            let rows = awkward_rows(&mut rng, n).into_iter().filter(|x| x.iter().all(|v| v.is_finite()));
            for (r, x) in rows.enumerate() {
                let mut want = vec![0u8; ty.bytes_for(n).unwrap()];
                let mut got = want.clone();
                // SAFETY: features checked at the top.
                unsafe {
                    if ty == Q8_0 {
                        quantize::q8_0(&x, as_blocks_mut(&mut want), Q8Rounding::Runtime);
                        quantize_avx2::q8_0(&x, as_blocks_mut(&mut got), Q8Rounding::Runtime);
                    } else {
                        quantize::q8_1(&x, as_blocks_mut(&mut want), Q8Rounding::Runtime);
                        quantize_avx2::q8_1(&x, as_blocks_mut(&mut got), Q8Rounding::Runtime);
                    }
                }
                assert_eq!(got, want, "{ty} x {blocks}, row {r}");
            }
        }
    }
}

/// The NEON kernels follow the scalar reference's float steps, so they give its bits, on
/// random rows with any i8 activations (-128 included).
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_gives_the_scalar_bits() {
    let mut rng = Rng(3);
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4K, Q5K, Q6K] {
        for blocks in BLOCK_COUNTS {
            let n = blocks * ty.block_size();
            let w = random_weights(ty, blocks, &mut rng, |r| r.sym(0.1));
            let mut a = random_activations(ty, n, &mut rng);
            let scalar = reference::vec_dot(ty, n, &w, &a);
            let neon = neon_dot(ty, &w, &a).expect("a NEON kernel");
            assert_eq!(neon.to_bits(), scalar.to_bits(), "{ty} x {blocks}: neon {neon} scalar {scalar}");
            // Extreme quants: every activation byte -128 or 127 in turn (the 32-quant formats).
            if ty.block_size() == 32 {
                let block = vec_dot_type(ty).type_size();
                for (i, byte) in a.iter_mut().enumerate() {
                    if i % block >= block - 32 {
                        *byte = if i % 3 == 0 { 0x80 } else { 0x7f };
                    }
                }
                let (scalar, neon) = (reference::vec_dot(ty, n, &w, &a), neon_dot(ty, &w, &a).unwrap());
                assert_eq!(neon.to_bits(), scalar.to_bits(), "{ty} x {blocks}, extreme activations");
            }
        }
    }
}

/// The NEON activation quantizer gives the scalar run-time bytes for every row, exact ties,
/// NaN and infinities included (`vcvtnq` and the saturating narrows map them as the scalar
/// cast does).
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_activation_quantization_matches_scalar() {
    let mut rng = Rng(12);
    for ty in [Q8_0, Q8_1] {
        for blocks in BLOCK_COUNTS {
            let n = blocks * 32;
            // Exact ties: amax 127 makes the multiplier 1, so every x.5 must round to even.
            let ties = (0..n).map(|i| if i % 32 == 0 { 127.0 } else { (i % 32) as f32 - 16.5 }).collect();
            let rows = awkward_rows(&mut rng, n).into_iter().chain([ties]);
            for (r, x) in rows.enumerate() {
                let mut want = vec![0u8; ty.bytes_for(n).unwrap()];
                let mut got = want.clone();
                if ty == Q8_0 {
                    quantize::q8_0(&x, as_blocks_mut(&mut want), Q8Rounding::Runtime);
                    quantize_neon::q8_0(&x, as_blocks_mut(&mut got));
                } else {
                    quantize::q8_1(&x, as_blocks_mut(&mut want), Q8Rounding::Runtime);
                    quantize_neon::q8_1(&x, as_blocks_mut(&mut got));
                }
                assert_eq!(got, want, "{ty} x {blocks}, row {r}");
            }
        }
    }
}

/// The NEON Q8_K quantizer gives the scalar reference's bytes for every row: ties, zeros,
/// subnormals, infinities, NaN, and equal magnitudes of both signs.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_q8k_quantization_matches_scalar() {
    let mut rng = Rng(13);
    for blocks in BLOCK_COUNTS {
        let n = blocks * QK_K;
        // amax 127 makes the multiplier -1 (after the sign of the maximum), so x.5 are ties.
        let ties = (0..n).map(|i| if i % QK_K == 5 { 127.0 } else { (i % 64) as f32 - 31.5 }).collect();
        let rows = awkward_rows(&mut rng, n).into_iter().chain([ties]);
        for (r, x) in rows.enumerate() {
            let mut want = vec![0u8; Q8K.bytes_for(n).unwrap()];
            let mut got = want.clone();
            reference::quantize_row(Q8K, &x, &mut want).unwrap();
            quantize_neon::q8k(&x, as_blocks_mut(&mut got));
            let i = (0..want.len()).find(|&i| got[i] != want[i]);
            assert!(i.is_none(), "Q8_K x {blocks}, row {r}: byte {i:?} differs");
            let mut dispatched = vec![0u8; want.len()];
            quantize_activations(Q8K, &x, &mut dispatched).unwrap();
            assert_eq!(dispatched, want, "Q8_K x {blocks}, row {r}: quantize_activations");
        }
    }
}

/// The NEON K-quant kernels give the scalar bits row by row, through `RowDot::dot_rows` too,
/// with extreme activations (every quant -128 or 127) and the largest weights of each format.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_k_quant_rows_give_the_scalar_bits() {
    let mut rng = Rng(14);
    for ty in [Q4K, Q5K, Q6K] {
        for blocks in BLOCK_COUNTS {
            let n = blocks * ty.block_size();
            let w = random_weights(ty, blocks, &mut rng, |r| r.sym(0.1));
            // Weights with every quant bit set: the largest quants (and, for Q6_K, +31).
            let mut full = w.clone();
            let block = ty.type_size();
            for (i, byte) in full.iter_mut().enumerate() {
                let at = i % block;
                let quant_bytes = match ty {
                    Q6K => at < QK_K / 2 + QK_K / 4,
                    _ => at >= 16,
                };
                if quant_bytes {
                    *byte = 0xFF;
                }
            }
            let mut acts: Vec<Vec<u8>> = (0..3).map(|_| random_activations(ty, n, &mut rng)).collect();
            let mut extreme = acts[0].clone();
            for b in as_blocks_mut::<BlockQ8K>(&mut extreme) {
                for (k, q) in b.qs.iter_mut().enumerate() {
                    *q = if k % 3 == 0 { -128 } else { 127 };
                }
            }
            acts.push(extreme);
            let kernel = RowDot::new(ty, n);
            for w in [&w, &full] {
                let rows = kernel.dot_rows::<4>(w, [&acts[0], &acts[1], &acts[2], &acts[3]]);
                for (r, a) in acts.iter().enumerate() {
                    let scalar = reference::vec_dot(ty, n, w, a);
                    assert_eq!(
                        rows[r].to_bits(),
                        scalar.to_bits(),
                        "{ty} x {blocks}, row {r}: neon {} scalar {scalar}",
                        rows[r]
                    );
                    let one = neon_dot(ty, w, a).unwrap();
                    assert_eq!(one.to_bits(), scalar.to_bits(), "{ty} x {blocks}, row {r}: single-row");
                }
            }
        }
    }
}
