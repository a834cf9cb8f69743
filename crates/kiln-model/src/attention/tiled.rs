//! Prompt attention (at least [`super::TILED_MIN_QUERIES`] queries): the queries that share a
//! key/value head are taken in blocks, and the keys in blocks of [`KEYS`], converted from f16
//! once per block and used by every query of it. Scores are an outer product (one lane per key),
//! the softmax runs on whole blocks with a vector `exp`, values are accumulated in f32.
//!
//! A query's result depends only on its own position, never on which queries share its block:
//! key blocks start at multiples of [`KEYS`], and keys a query may not see add exact zeros. The
//! prefix cache of `kiln serve` relies on that. The SIMD kernels give the bits of the scalar ones.

use super::AttentionSpec;
use half::f16;
use rayon::prelude::*;
use std::cell::RefCell;

/// Keys per block: four 8-lane vectors of scores per query.
pub const KEYS: usize = 32;
/// Queries per parallel task (times the query heads that share a key/value head).
const QUERIES: usize = 8;
/// The softmax denominator is kept in this many partial sums, one per vector lane.
const LANES: usize = 8;

/// Attention outputs for `n` queries at positions `pos0..pos0+n`, as [`super::attend`] describes.
pub fn attend_tiled(spec: &AttentionSpec, q: &[f32], pos0: usize, keys: &[f16], values: &[f16], out: &mut [f32]) {
    let hd = spec.head_dim;
    let q_dim = spec.n_heads * hd;
    let group = spec.n_heads / spec.n_kv_heads;
    let k = kernels(hd);
    // One task per (block of queries, key/value head); each owns its heads' slice of every row.
    let mut tasks: Vec<(usize, usize, Vec<&mut [f32]>)> = Vec::new();
    for (b, block) in out.chunks_mut(QUERIES * q_dim).enumerate() {
        let mut per_head: Vec<Vec<&mut [f32]>> = (0..spec.n_kv_heads).map(|_| Vec::new()).collect();
        for row in block.chunks_mut(q_dim) {
            for (g, heads) in row.chunks_mut(group * hd).enumerate() {
                per_head[g].push(heads);
            }
        }
        tasks.extend(per_head.into_iter().enumerate().map(|(g, rows)| (b * QUERIES, g, rows)));
    }
    tasks.into_par_iter().for_each(|(t0, g, mut rows)| {
        SCRATCH.with(|s| {
            let task = Task { spec, q, q_dim, group, pos0, t0, g, keys, values };
            task.run(k, &mut s.borrow_mut(), &mut rows);
        })
    });
}

/// Per-thread buffers, grown to the largest head seen.
#[derive(Default)]
struct Scratch {
    /// The key block transposed: `kt[d·KEYS + j]`.
    kt: Vec<f32>,
    /// The value block: `vf[j·head_dim + d]`.
    vf: Vec<f32>,
    /// Unnormalized outputs, `head_dim` per query row.
    acc: Vec<f32>,
    /// Running maximum score per query row.
    max: Vec<f32>,
    /// Partial softmax denominators per query row.
    sums: Vec<[f32; LANES]>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// One block of queries against one key/value head.
struct Task<'a> {
    spec: &'a AttentionSpec,
    q: &'a [f32],
    q_dim: usize,
    group: usize,
    pos0: usize,
    /// First query of the block (index into `q`'s rows).
    t0: usize,
    /// The key/value head.
    g: usize,
    keys: &'a [f16],
    values: &'a [f16],
}

impl Task<'_> {
    /// Position of query row `r` (rows run over queries, then the heads of the group).
    fn pos(&self, r: usize) -> usize {
        self.pos0 + self.t0 + r / self.group
    }

    /// The first key position row `r` may see.
    fn first(&self, r: usize) -> usize {
        match self.spec.window {
            Some(w) => (self.pos(r) + 1).saturating_sub(w),
            None => 0,
        }
    }

    fn query(&self, r: usize) -> &[f32] {
        let hd = self.spec.head_dim;
        let (t, h) = (self.t0 + r / self.group, self.g * self.group + r % self.group);
        &self.q[t * self.q_dim + h * hd..][..hd]
    }

    fn run(&self, k: &Kernels, s: &mut Scratch, out: &mut [&mut [f32]]) {
        let hd = self.spec.head_dim;
        let kv_dim = self.spec.n_kv_heads * hd;
        let n_rows = out.len() * self.group;
        grow(&mut s.kt, hd * KEYS);
        grow(&mut s.vf, hd * KEYS);
        grow(&mut s.acc, n_rows * hd);
        s.acc[..n_rows * hd].fill(0.0);
        s.max.clear();
        s.max.resize(n_rows, f32::NEG_INFINITY);
        s.sums.clear();
        s.sums.resize(n_rows, [0.0; LANES]);
        let last = self.pos(n_rows - 1);
        let mut j0 = self.first(0) / KEYS * KEYS;
        while j0 <= last {
            let n = KEYS.min(last + 1 - j0);
            let head = j0 * kv_dim + self.g * hd;
            (k.load_keys)(&self.keys[head..], kv_dim, n, hd, &mut s.kt);
            (k.load_values)(&self.values[head..], kv_dim, n, hd, &mut s.vf);
            for r in (0..n_rows).step_by(2) {
                let pair = [r, (r + 1).min(n_rows - 1)];
                let mut scores = [[0f32; KEYS]; 2];
                let [s0, s1] = &mut scores;
                (k.scores)(self.query(pair[0]), self.query(pair[1]), &s.kt, self.spec.scale, s0, s1);
                for (i, &row) in pair.iter().enumerate().take(if pair[0] == pair[1] { 1 } else { 2 }) {
                    let p = &mut scores[i];
                    let (pos, first) = (self.pos(row), self.first(row));
                    if j0 > pos || j0 + KEYS <= first {
                        continue; // nothing visible: the row's sums would not change
                    }
                    if j0 + KEYS > pos || j0 < first {
                        for (j, v) in p.iter_mut().enumerate() {
                            if j0 + j > pos || j0 + j < first {
                                *v = f32::NEG_INFINITY;
                            }
                        }
                    }
                    let block_max = (k.max)(p);
                    let acc = &mut s.acc[row * hd..][..hd];
                    if block_max > s.max[row] {
                        let rescale = (s.max[row] - block_max).exp();
                        acc.iter_mut().for_each(|a| *a *= rescale);
                        s.sums[row].iter_mut().for_each(|a| *a *= rescale);
                        s.max[row] = block_max;
                    }
                    (k.softmax)(p, s.max[row], &mut s.sums[row]);
                    (k.accumulate)(acc, p, n, &s.vf);
                }
            }
            j0 += KEYS;
        }
        for (r, o) in out.iter_mut().flat_map(|heads| heads.chunks_mut(hd)).enumerate() {
            let inv = 1.0 / total(&s.sums[r]);
            for (od, &a) in o.iter_mut().zip(&s.acc[r * hd..][..hd]) {
                *od = a * inv;
            }
        }
    }
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// The lane sums added in one fixed order.
fn total(s: &[f32; LANES]) -> f32 {
    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
}

/// Two queries' scores against a key block (see [`Kernels::scores`]).
type ScoresFn = fn(&[f32], &[f32], &[f32], f32, &mut [f32; KEYS], &mut [f32; KEYS]);

/// The inner loops. Every one gives the same bits in its scalar and SIMD form.
struct Kernels {
    /// `kt[d·KEYS + j] = keys[j·stride + d]` for `j < n`, zero beyond.
    load_keys: fn(&[f16], usize, usize, usize, &mut [f32]),
    /// `vf[j·hd + d] = values[j·stride + d]` for `j < n`.
    load_values: fn(&[f16], usize, usize, usize, &mut [f32]),
    /// Scores of two queries against the key block: `s[j] = (Σ_d q[d]·kt[d·KEYS + j]) · scale`,
    /// the sum taken in order of `d` with one rounding per step.
    scores: ScoresFn,
    /// The largest score.
    max: fn(&[f32; KEYS]) -> f32,
    /// `p = e^(p − max)`, then `sums[l] += p[8i + l]` in order of `i`.
    softmax: fn(&mut [f32; KEYS], f32, &mut [f32; LANES]),
    /// `acc[d] += p[j] · vf[j·hd + d]` in order of `j < n`, one rounding per step.
    accumulate: fn(&mut [f32], &[f32; KEYS], usize, &[f32]),
}

fn kernels(head_dim: usize) -> &'static Kernels {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd_available() && head_dim.is_multiple_of(8) {
        return &simd::KERNELS;
    }
    #[cfg(target_arch = "aarch64")]
    if crate::quant::neon_available() && head_dim.is_multiple_of(4) {
        return &neon::KERNELS;
    }
    let _ = head_dim;
    &scalar::KERNELS
}

/// Plain loops: the reference, and the path for CPUs without AVX2 or NEON.
mod scalar {
    use super::{f16, Kernels, KEYS, LANES};

    pub static KERNELS: Kernels = Kernels { load_keys, load_values, scores, max, softmax, accumulate };

    fn load_keys(keys: &[f16], stride: usize, n: usize, hd: usize, kt: &mut [f32]) {
        for d in 0..hd {
            for j in 0..KEYS {
                kt[d * KEYS + j] = if j < n { keys[j * stride + d].to_f32() } else { 0.0 };
            }
        }
    }

    fn load_values(values: &[f16], stride: usize, n: usize, hd: usize, vf: &mut [f32]) {
        for j in 0..n {
            for d in 0..hd {
                vf[j * hd + d] = values[j * stride + d].to_f32();
            }
        }
    }

    fn scores(q0: &[f32], q1: &[f32], kt: &[f32], scale: f32, s0: &mut [f32; KEYS], s1: &mut [f32; KEYS]) {
        for (q, s) in [(q0, s0), (q1, s1)] {
            let mut sum = [0f32; KEYS];
            for (d, &qd) in q.iter().enumerate() {
                for (j, a) in sum.iter_mut().enumerate() {
                    *a = qd.mul_add(kt[d * KEYS + j], *a);
                }
            }
            for (v, a) in s.iter_mut().zip(sum) {
                *v = a * scale;
            }
        }
    }

    pub fn max(p: &[f32; KEYS]) -> f32 {
        p.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    pub fn softmax(p: &mut [f32; KEYS], max: f32, sums: &mut [f32; LANES]) {
        for v in p.iter_mut() {
            *v = crate::math::exp(*v - max);
        }
        for chunk in p.chunks_exact(LANES) {
            for (s, &v) in sums.iter_mut().zip(chunk) {
                *s += v;
            }
        }
    }

    fn accumulate(acc: &mut [f32], p: &[f32; KEYS], n: usize, vf: &[f32]) {
        let hd = acc.len();
        for (j, &w) in p.iter().enumerate().take(n) {
            for (a, &v) in acc.iter_mut().zip(&vf[j * hd..][..hd]) {
                *a = v.mul_add(w, *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{f16, Kernels, KEYS, LANES};
    use crate::math::exp8;
    use std::arch::x86_64::*;

    pub static KERNELS: Kernels = Kernels { load_keys, load_values, scores, max, softmax, accumulate };

    // SAFETY (all of them): only chosen when simd_available() found AVX2, FMA and F16C and the
    // head width is a multiple of 8; every access stays within the slices, whose lengths the
    // driver sizes (`hd·KEYS` for the blocks, `n` keys of `stride` in the cache).

    fn load_keys(keys: &[f16], stride: usize, n: usize, hd: usize, kt: &mut [f32]) {
        assert!(kt.len() >= hd * KEYS && (n == 0 || keys.len() >= (n - 1) * stride + hd));
        unsafe { load_keys_avx2(keys, stride, n, hd, kt) }
    }
    fn load_values(values: &[f16], stride: usize, n: usize, hd: usize, vf: &mut [f32]) {
        assert!(vf.len() >= n * hd && (n == 0 || values.len() >= (n - 1) * stride + hd));
        unsafe { load_values_avx2(values, stride, n, hd, vf) }
    }
    fn scores(q0: &[f32], q1: &[f32], kt: &[f32], scale: f32, s0: &mut [f32; KEYS], s1: &mut [f32; KEYS]) {
        assert!(q0.len() == q1.len() && kt.len() >= q0.len() * KEYS);
        unsafe { scores_avx2(q0, q1, kt, scale, s0, s1) }
    }
    fn max(p: &[f32; KEYS]) -> f32 {
        unsafe { max_avx2(p) }
    }
    fn softmax(p: &mut [f32; KEYS], max: f32, sums: &mut [f32; LANES]) {
        unsafe { softmax_avx2(p, max, sums) }
    }
    fn accumulate(acc: &mut [f32], p: &[f32; KEYS], n: usize, vf: &[f32]) {
        assert!(acc.len().is_multiple_of(8) && vf.len() >= n * acc.len());
        unsafe { accumulate_avx2(acc, p, n, vf) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_h(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// Eight keys × eight dimensions at a time: convert, transpose in registers, store.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_keys_avx2(keys: &[f16], stride: usize, n: usize, hd: usize, kt: &mut [f32]) {
        for jb in (0..KEYS).step_by(8) {
            for db in (0..hd).step_by(8) {
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, ri) in r.iter_mut().enumerate() {
                    if jb + i < n {
                        *ri = load_h(keys.as_ptr().add((jb + i) * stride + db));
                    }
                }
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let cols = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (dd, c) in cols.iter().enumerate() {
                    _mm256_storeu_ps(kt.as_mut_ptr().add((db + dd) * KEYS + jb), *c);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_values_avx2(values: &[f16], stride: usize, n: usize, hd: usize, vf: &mut [f32]) {
        for j in 0..n {
            for d in (0..hd).step_by(8) {
                _mm256_storeu_ps(vf.as_mut_ptr().add(j * hd + d), load_h(values.as_ptr().add(j * stride + d)));
            }
        }
    }

    /// Two queries at once: eight independent accumulator chains keep both FMA units busy.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_avx2(q0: &[f32], q1: &[f32], kt: &[f32], scale: f32, s0: &mut [f32; KEYS], s1: &mut [f32; KEYS]) {
        let mut a = [_mm256_setzero_ps(); 4];
        let mut b = [_mm256_setzero_ps(); 4];
        for d in 0..q0.len() {
            let x = _mm256_broadcast_ss(&*q0.as_ptr().add(d));
            let y = _mm256_broadcast_ss(&*q1.as_ptr().add(d));
            let row = kt.as_ptr().add(d * KEYS);
            for v in 0..4 {
                let k = _mm256_loadu_ps(row.add(8 * v));
                a[v] = _mm256_fmadd_ps(x, k, a[v]);
                b[v] = _mm256_fmadd_ps(y, k, b[v]);
            }
        }
        let sc = _mm256_set1_ps(scale);
        for v in 0..4 {
            _mm256_storeu_ps(s0.as_mut_ptr().add(8 * v), _mm256_mul_ps(a[v], sc));
            _mm256_storeu_ps(s1.as_mut_ptr().add(8 * v), _mm256_mul_ps(b[v], sc));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn max_avx2(p: &[f32; KEYS]) -> f32 {
        let ptr = p.as_ptr();
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_loadu_ps(ptr), _mm256_loadu_ps(ptr.add(8))),
            _mm256_max_ps(_mm256_loadu_ps(ptr.add(16)), _mm256_loadu_ps(ptr.add(24))),
        );
        let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_max_ss(h, _mm_movehdup_ps(h));
        _mm_cvtss_f32(h)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn softmax_avx2(p: &mut [f32; KEYS], max: f32, sums: &mut [f32; LANES]) {
        let m = _mm256_set1_ps(max);
        let mut s = _mm256_loadu_ps(sums.as_ptr());
        for v in 0..KEYS / 8 {
            let ptr = p.as_mut_ptr().add(8 * v);
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(ptr), m));
            _mm256_storeu_ps(ptr, e);
            s = _mm256_add_ps(s, e);
        }
        _mm256_storeu_ps(sums.as_mut_ptr(), s);
    }

    /// Eight output vectors stay in registers across the keys.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn accumulate_avx2(acc: &mut [f32], p: &[f32; KEYS], n: usize, vf: &[f32]) {
        let hd = acc.len();
        let mut d0 = 0;
        while d0 < hd {
            let width = (hd - d0).min(64) / 8;
            let mut a = [_mm256_setzero_ps(); 8];
            for (i, ai) in a.iter_mut().enumerate().take(width) {
                *ai = _mm256_loadu_ps(acc.as_ptr().add(d0 + 8 * i));
            }
            for (j, &pj) in p.iter().enumerate().take(n) {
                let w = _mm256_set1_ps(pj);
                let row = vf.as_ptr().add(j * hd + d0);
                for (i, ai) in a.iter_mut().enumerate().take(width) {
                    *ai = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8 * i)), w, *ai);
                }
            }
            for (i, ai) in a.iter().enumerate().take(width) {
                _mm256_storeu_ps(acc.as_mut_ptr().add(d0 + 8 * i), *ai);
            }
            d0 += 64;
        }
    }
}

/// [`scalar`]'s loops four lanes at a time, for head widths that are multiples of 4 (NEON is
/// baseline on AArch64). The softmax uses [`crate::math::exp4`], which gives [`crate::math::exp`]'s
/// bits lane by lane.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{f16, Kernels, KEYS, LANES};
    use crate::math::exp4;
    use std::arch::aarch64::*;

    pub static KERNELS: Kernels = Kernels { load_keys, load_values, scores, max, softmax, accumulate };

    // SAFETY (all of them): NEON is baseline on AArch64; chosen only for head widths that are
    // multiples of 4; every access stays within the slices, whose lengths the asserts check
    // (`hd·KEYS` for the blocks, `n` keys of `stride` in the cache).

    /// Four halves widened to f32 (`fcvtl`, exact); f16 is a u16 underneath.
    #[inline(always)]
    unsafe fn load_h(p: *const f16) -> float32x4_t {
        vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p as *const u16)))
    }

    /// Four keys × four dimensions at a time: convert, transpose in registers, store.
    fn load_keys(keys: &[f16], stride: usize, n: usize, hd: usize, kt: &mut [f32]) {
        assert!(hd.is_multiple_of(4) && kt.len() >= hd * KEYS && (n == 0 || keys.len() >= (n - 1) * stride + hd));
        unsafe {
            for jb in (0..KEYS).step_by(4) {
                for db in (0..hd).step_by(4) {
                    let mut r = [vdupq_n_f32(0.0); 4];
                    for (i, ri) in r.iter_mut().enumerate() {
                        if jb + i < n {
                            *ri = load_h(keys.as_ptr().add((jb + i) * stride + db));
                        }
                    }
                    // Pairs of lanes, then pairs of pairs: column `dd` holds dimension `db + dd`
                    // of the four keys.
                    let t0 = vreinterpretq_f64_f32(vtrn1q_f32(r[0], r[1]));
                    let t1 = vreinterpretq_f64_f32(vtrn2q_f32(r[0], r[1]));
                    let t2 = vreinterpretq_f64_f32(vtrn1q_f32(r[2], r[3]));
                    let t3 = vreinterpretq_f64_f32(vtrn2q_f32(r[2], r[3]));
                    let cols = [vtrn1q_f64(t0, t2), vtrn1q_f64(t1, t3), vtrn2q_f64(t0, t2), vtrn2q_f64(t1, t3)];
                    for (dd, c) in cols.iter().enumerate() {
                        vst1q_f32(kt.as_mut_ptr().add((db + dd) * KEYS + jb), vreinterpretq_f32_f64(*c));
                    }
                }
            }
        }
    }

    fn load_values(values: &[f16], stride: usize, n: usize, hd: usize, vf: &mut [f32]) {
        assert!(hd.is_multiple_of(4) && vf.len() >= n * hd && (n == 0 || values.len() >= (n - 1) * stride + hd));
        unsafe {
            for j in 0..n {
                for d in (0..hd).step_by(4) {
                    vst1q_f32(vf.as_mut_ptr().add(j * hd + d), load_h(values.as_ptr().add(j * stride + d)));
                }
            }
        }
    }

    /// Two queries at once: sixteen accumulators (of 32 registers) share each key load.
    fn scores(q0: &[f32], q1: &[f32], kt: &[f32], scale: f32, s0: &mut [f32; KEYS], s1: &mut [f32; KEYS]) {
        assert!(q0.len() == q1.len() && kt.len() >= q0.len() * KEYS);
        unsafe {
            let mut a = [vdupq_n_f32(0.0); KEYS / 4];
            let mut b = [vdupq_n_f32(0.0); KEYS / 4];
            for (d, (&x, &y)) in q0.iter().zip(q1).enumerate() {
                let row = kt.as_ptr().add(d * KEYS);
                for (v, (av, bv)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
                    let k = vld1q_f32(row.add(4 * v));
                    // q·k + sum, fused like the scalar mul_add.
                    *av = vfmaq_n_f32(*av, k, x);
                    *bv = vfmaq_n_f32(*bv, k, y);
                }
            }
            for (v, (av, bv)) in a.iter().zip(&b).enumerate() {
                vst1q_f32(s0.as_mut_ptr().add(4 * v), vmulq_n_f32(*av, scale));
                vst1q_f32(s1.as_mut_ptr().add(4 * v), vmulq_n_f32(*bv, scale));
            }
        }
    }

    /// `fmaxnm`, as `f32::max` compiles on AArch64 (a NaN loses to a number); exact, so the
    /// order of the comparisons does not matter.
    fn max(p: &[f32; KEYS]) -> f32 {
        unsafe {
            let at = |i: usize| vld1q_f32(p.as_ptr().add(4 * i));
            let lo = vmaxnmq_f32(vmaxnmq_f32(at(0), at(1)), vmaxnmq_f32(at(2), at(3)));
            let hi = vmaxnmq_f32(vmaxnmq_f32(at(4), at(5)), vmaxnmq_f32(at(6), at(7)));
            vmaxnmvq_f32(vmaxnmq_f32(lo, hi))
        }
    }

    /// The scalar softmax's order: `e^(p - max)` per key, then the eight partial sums (two
    /// vectors here) take the keys eight at a time, lane `l` key `8c + l`.
    fn softmax(p: &mut [f32; KEYS], max: f32, sums: &mut [f32; LANES]) {
        unsafe {
            let m = vdupq_n_f32(max);
            let (mut lo, mut hi) = (vld1q_f32(sums.as_ptr()), vld1q_f32(sums.as_ptr().add(4)));
            for c in 0..KEYS / LANES {
                let ptr = p.as_mut_ptr().add(LANES * c);
                let (a, b) = (exp4(vsubq_f32(vld1q_f32(ptr), m)), exp4(vsubq_f32(vld1q_f32(ptr.add(4)), m)));
                vst1q_f32(ptr, a);
                vst1q_f32(ptr.add(4), b);
                lo = vaddq_f32(lo, a);
                hi = vaddq_f32(hi, b);
            }
            vst1q_f32(sums.as_mut_ptr(), lo);
            vst1q_f32(sums.as_mut_ptr().add(4), hi);
        }
    }

    /// Sixteen output vectors stay in registers across the keys.
    fn accumulate(acc: &mut [f32], p: &[f32; KEYS], n: usize, vf: &[f32]) {
        let hd = acc.len();
        assert!(hd.is_multiple_of(4) && vf.len() >= n * hd);
        unsafe {
            for d0 in (0..hd).step_by(64) {
                let width = (hd - d0).min(64) / 4;
                let mut a = [vdupq_n_f32(0.0); 16];
                for (i, ai) in a.iter_mut().enumerate().take(width) {
                    *ai = vld1q_f32(acc.as_ptr().add(d0 + 4 * i));
                }
                for (j, &w) in p.iter().enumerate().take(n) {
                    let row = vf.as_ptr().add(j * hd + d0);
                    for (i, ai) in a.iter_mut().enumerate().take(width) {
                        // v·p + acc, fused like the scalar mul_add.
                        *ai = vfmaq_n_f32(*ai, vld1q_f32(row.add(4 * i)), w);
                    }
                }
                for (i, ai) in a.iter().enumerate().take(width) {
                    vst1q_f32(acc.as_mut_ptr().add(d0 + 4 * i), *ai);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64, range: f32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * range
            })
            .collect()
    }

    fn to_f16(x: &[f32]) -> Vec<f16> {
        x.iter().map(|&v| f16::from_f32(v)).collect()
    }

    struct Case {
        spec: AttentionSpec,
        q: Vec<f32>,
        keys: Vec<f16>,
        values: Vec<f16>,
        pos0: usize,
        n: usize,
    }

    fn case(
        n_heads: usize,
        n_kv_heads: usize,
        hd: usize,
        window: Option<usize>,
        pos0: usize,
        n: usize,
        seed: u64,
    ) -> Case {
        let spec = AttentionSpec { n_heads, n_kv_heads, head_dim: hd, scale: 1.0 / (hd as f32).sqrt(), window };
        let len = pos0 + n;
        Case {
            q: random(n * n_heads * hd, seed, 3.0),
            keys: to_f16(&random(len * n_kv_heads * hd, seed + 1, 3.0)),
            values: to_f16(&random(len * n_kv_heads * hd, seed + 2, 1.0)),
            spec,
            pos0,
            n,
        }
    }

    /// Softmax attention written out in f64.
    fn reference(c: &Case) -> Vec<f32> {
        let s = &c.spec;
        let (hd, q_dim, kv_dim) = (s.head_dim, s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
        let mut out = vec![0f32; c.n * q_dim];
        for t in 0..c.n {
            let pos = c.pos0 + t;
            let first = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for h in 0..s.n_heads {
                let kvh = h / (s.n_heads / s.n_kv_heads);
                let q = &c.q[t * q_dim + h * hd..][..hd];
                let scores: Vec<f64> = (first..=pos)
                    .map(|j| {
                        (0..hd).map(|d| q[d] as f64 * c.keys[j * kv_dim + kvh * hd + d].to_f64()).sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for d in 0..hd {
                    let v: f64 =
                        (first..=pos).zip(&w).map(|(j, wj)| wj * c.values[j * kv_dim + kvh * hd + d].to_f64()).sum();
                    out[t * q_dim + h * hd + d] = (v / z) as f32;
                }
            }
        }
        out
    }

    fn run(c: &Case, k: &Kernels) -> Vec<f32> {
        // The kernels chosen by `attend_tiled` (SIMD where available), or the given ones.
        let mut out = vec![0f32; c.q.len()];
        let hd = c.spec.head_dim;
        let q_dim = c.spec.n_heads * hd;
        let group = c.spec.n_heads / c.spec.n_kv_heads;
        for (b, block) in out.chunks_mut(QUERIES * q_dim).enumerate() {
            for g in 0..c.spec.n_kv_heads {
                let mut rows: Vec<&mut [f32]> =
                    block.chunks_mut(q_dim).map(|r| &mut r[g * group * hd..][..group * hd]).collect();
                let task = Task {
                    spec: &c.spec,
                    q: &c.q,
                    q_dim,
                    group,
                    pos0: c.pos0,
                    t0: b * QUERIES,
                    g,
                    keys: &c.keys,
                    values: &c.values,
                };
                task.run(k, &mut Scratch::default(), &mut rows);
            }
        }
        out
    }

    const SHAPES: [(usize, usize, usize, Option<usize>, usize, usize); 6] = [
        (9, 3, 64, None, 0, 64),       // SmolLM2, first chunk
        (9, 3, 64, None, 100, 64),     // a later chunk, not on a key-block boundary
        (4, 1, 256, Some(70), 37, 64), // Gemma 3's local layers: a window, one key/value head
        (2, 2, 24, None, 5, 19),       // odd sizes: a partial query block, head width not 64
        (3, 1, 8, Some(1), 0, 9),      // a window of one key
        (2, 1, 12, None, 3, 5),        // head width not a multiple of 8 (scalar kernels only)
    ];

    #[test]
    fn tiled_attention_matches_softmax_in_f64() {
        for (i, &(h, kvh, hd, w, pos0, n)) in SHAPES.iter().enumerate() {
            let c = case(h, kvh, hd, w, pos0, n, i as u64 + 1);
            let want = reference(&c);
            let mut got = vec![0f32; c.q.len()];
            attend_tiled(&c.spec, &c.q, c.pos0, &c.keys, &c.values, &mut got);
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "shape {i} element {j}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn simd_tiled_attention_gives_the_scalar_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::quant::simd_available() {
                eprintln!("SKIP: no AVX2/F16C");
                return;
            }
            for (i, &(h, kvh, hd, w, pos0, n)) in SHAPES.iter().enumerate().filter(|s| s.1 .2 % 8 == 0) {
                let c = case(h, kvh, hd, w, pos0, n, i as u64 + 10);
                let a = run(&c, &simd::KERNELS);
                let b = run(&c, &scalar::KERNELS);
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "shape {i}");
            }
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_tiled_attention_gives_the_scalar_bits() {
        if !crate::quant::neon_available() {
            eprintln!("SKIP: KILN_FORCE_SCALAR=1");
            return;
        }
        for (i, &(h, kvh, hd, w, pos0, n)) in SHAPES.iter().enumerate().filter(|s| s.1 .2 % 4 == 0) {
            for seed in [i as u64 + 10, i as u64 + 40] {
                let c = case(h, kvh, hd, w, pos0, n, seed);
                let a = run(&c, &neon::KERNELS);
                let b = run(&c, &scalar::KERNELS);
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "shape {i} seed {seed}");
            }
        }
    }

    /// Every query gets the same bits whether it is computed among 64 others or alone.
    #[test]
    fn a_query_does_not_depend_on_its_neighbours() {
        for (i, &(h, kvh, hd, w, pos0, n)) in SHAPES.iter().enumerate() {
            let c = case(h, kvh, hd, w, pos0, n, i as u64 + 20);
            let q_dim = h * hd;
            let mut all = vec![0f32; c.q.len()];
            attend_tiled(&c.spec, &c.q, c.pos0, &c.keys, &c.values, &mut all);
            for t in [0, n / 2, n - 1] {
                let mut one = vec![0f32; q_dim];
                let len = (c.pos0 + t + 1) * kvh * hd;
                attend_tiled(
                    &c.spec,
                    &c.q[t * q_dim..][..q_dim],
                    c.pos0 + t,
                    &c.keys[..len],
                    &c.values[..len],
                    &mut one,
                );
                let row = &all[t * q_dim..][..q_dim];
                assert!(row.iter().zip(&one).all(|(x, y)| x.to_bits() == y.to_bits()), "shape {i} query {t}");
            }
        }
    }
}
