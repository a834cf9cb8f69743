//! Fused CPU kernels, each with its own backward pass, for the parts of a training step that
//! candle would run as chains of single-threaded element-wise ops: the cross-entropy of the
//! output layer, RMSNorm, SwiGLU and GeGLU, splitting projections into (rotated, repeated)
//! heads, and causal (sliding-window) attention. One pass over the data instead of five to ten, vector `e^x`,
//! and rows spread over rayon's pool (the one candle's matrix products use, so nothing spins
//! against it). On `micro` these were about half of a step (docs/LOG.md).
//!
//! They take contiguous f32 tensors on the CPU; [`crate::model::Transformer`] uses them when its
//! dtype is f32 and otherwise builds the same functions from candle ops, which the tests
//! below use as the reference (values and gradients).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

mod attention;
mod glu;
pub use attention::attention;
pub use glu::{geglu, swiglu};

type CResult<T> = candle_core::Result<T>;

/// Rows handed to one rayon task at least (tasks much smaller than this cost more to schedule
/// than to run).
const MIN_TASK_FLOATS: usize = 16 << 10;

fn rows_per_task(width: usize) -> usize {
    (MIN_TASK_FLOATS / width.max(1)).max(1)
}

fn f32s<'a>(storage: &'a CpuStorage, layout: &Layout) -> CResult<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(candle_core::Error::Msg("fused kernels take contiguous f32 tensors".into())),
    }
}

/// Calls `f` with the values of contiguous f32 CPU tensors, read in place.
fn with_values<R, const N: usize>(ts: [&Tensor; N], f: impl FnOnce([&[f32]; N]) -> R) -> CResult<R> {
    let ts = ts.map(|t| t.contiguous());
    let ts: Vec<Tensor> = ts.into_iter().collect::<CResult<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        match &**storage {
            candle_core::Storage::Cpu(s) => slices.push(f32s(s, layout)?),
            _ => return Err(candle_core::Error::Msg("fused kernels run on the CPU".into())),
        }
    }
    let slices: [&[f32]; N] = slices.try_into().expect("one slice per tensor");
    Ok(f(slices))
}

fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> CResult<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Whether the backward pass needs a gradient for `t` (a detached frozen weight does not).
fn wants_grad(t: &Tensor) -> bool {
    t.track_op()
}

/// `out[i] = e^(x[i] - shift)`; returns `Σ out`.
fn exp_shifted(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    let n = x.len().min(out.len());
    // Only x86 has a vector path here (the others take the scalar loop for every element).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let (mut body, mut sum) = (0, 0.0f32);
    #[cfg(target_arch = "x86_64")]
    if kiln_model::quant::simd_available() {
        body = n - n % 8;
        // SAFETY: simd_available() checked AVX2, FMA and F16C; both slices hold `body` floats.
        sum = unsafe { exp_shifted_avx2(&x[..body], shift, &mut out[..body]) };
    }
    for (o, &v) in out[body..n].iter_mut().zip(&x[body..n]) {
        *o = kiln_model::math::exp(v - shift);
        sum += *o;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_shifted_avx2(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm256_set1_ps(shift);
    let mut acc = _mm256_setzero_ps();
    for i in (0..x.len()).step_by(8) {
        let e = kiln_model::math::exp8(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), s));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), e);
        acc = _mm256_add_ps(acc, e);
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    lanes.iter().sum()
}

/// The largest value (eight running maxima, so the compiler keeps them in vector registers).
fn max_of(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            m[k] = if c[k] > m[k] { c[k] } else { m[k] };
        }
    }
    tail.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

/// `log softmax(logits)[target]` per row of `logits` `[n, vocab]`: the log-probability of each
/// row's target token. Backward: `g · (onehot − softmax)`, with the log-sum-exp recovered from
/// the result (`lse = logit[target] − logp`), so nothing but the op's inputs is kept.
pub fn target_logp(logits: &Tensor, targets: &[u32]) -> CResult<Tensor> {
    let (n, vocab) = logits.dims2()?;
    if targets.len() != n {
        return Err(candle_core::Error::Msg(format!("{} targets for {n} rows", targets.len())));
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(candle_core::Error::Msg(format!("target {t} is outside the vocabulary of {vocab}")));
    }
    logits.contiguous()?.apply_op1(TargetLogp { targets: Arc::from(targets) })
}

struct TargetLogp {
    targets: Arc<[u32]>,
}

impl CustomOp1 for TargetLogp {
    fn name(&self) -> &'static str {
        "kiln-target-logp"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, vocab) = layout.shape().dims2()?;
        let x = f32s(storage, layout)?;
        let mut out = vec![0.0f32; n];
        let per = rows_per_task(vocab);
        out.par_chunks_mut(per).enumerate().for_each_init(
            || vec![0.0f32; vocab],
            |scratch, (c, out)| {
                for (k, o) in out.iter_mut().enumerate() {
                    let i = c * per + k;
                    let row = &x[i * vocab..(i + 1) * vocab];
                    let max = max_of(row);
                    let lse = max + exp_shifted(row, max, scratch).ln();
                    *o = row[self.targets[i] as usize] - lse;
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (n, vocab) = arg.dims2()?;
        let mut dx = vec![0.0f32; n * vocab];
        with_values([arg, res, grad], |[x, logp, g]| {
            dx.par_chunks_mut(vocab * rows_per_task(vocab)).enumerate().for_each(|(c, block)| {
                for (k, d) in block.chunks_mut(vocab).enumerate() {
                    let i = c * rows_per_task(vocab) + k;
                    let row = &x[i * vocab..(i + 1) * vocab];
                    let t = self.targets[i] as usize;
                    exp_shifted(row, row[t] - logp[i], d);
                    for v in d.iter_mut() {
                        *v *= -g[i];
                    }
                    d[t] += g[i];
                }
            });
        })?;
        Ok(Some(tensor(dx, (n, vocab))?))
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `x / √(mean(x²) + ε) · w` over the rows of `x` `[n, dim]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> CResult<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

struct RmsNorm {
    eps: f32,
}

/// `1 / √(mean(x²) + ε)` (summed in f64: rows are short and the sum is the whole result).
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    (1.0 / (ss / row.len() as f64 + f64::from(eps)).sqrt()) as f32
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "kiln-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let dim = *l1.shape().dims().last().unwrap_or(&0);
        let (x, w) = (f32s(s1, l1)?, f32s(s2, l2)?);
        if w.len() != dim || dim == 0 {
            return Err(candle_core::Error::Msg(format!("rms_norm: weight of {} for rows of {dim}", w.len())));
        }
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(dim * rows_per_task(dim)).zip(x.par_chunks(dim * rows_per_task(dim))).for_each(
            |(out, x)| {
                for (o, row) in out.chunks_mut(dim).zip(x.chunks(dim)) {
                    let r = inv_rms(row, self.eps);
                    for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
                        *o = v * r * w;
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x_t: &Tensor,
        w_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let dim = x_t.dim(candle_core::D::Minus1)?;
        let mut dx = vec![0.0f32; x_t.elem_count()];
        // Each task returns its rows' share of dw; the shares are summed in task order, so the
        // result does not depend on the number of threads.
        let per = rows_per_task(dim);
        let dw_parts = with_values([x_t, w_t, grad], |[x, w, g]| {
            dx.par_chunks_mut(dim * per)
                .enumerate()
                .map(|(c, dx)| {
                    let mut dw = vec![0.0f32; dim];
                    let base = c * per * dim;
                    for (k, dx) in dx.chunks_mut(dim).enumerate() {
                        let off = base + k * dim;
                        let (row, g) = (&x[off..off + dim], &g[off..off + dim]);
                        let r = inv_rms(row, self.eps);
                        // mean(g·w·x̂) with x̂ = x·r
                        let mut dot = 0.0f32;
                        for j in 0..dim {
                            let xh = row[j] * r;
                            dw[j] += g[j] * xh;
                            dot += g[j] * w[j] * xh;
                        }
                        let mean = dot / dim as f32;
                        for j in 0..dim {
                            dx[j] = r * (g[j] * w[j] - row[j] * r * mean);
                        }
                    }
                    dw
                })
                .collect::<Vec<_>>()
        })?;
        let dw = if wants_grad(w_t) {
            let mut dw = vec![0.0f32; dim];
            for part in dw_parts {
                for (a, b) in dw.iter_mut().zip(part) {
                    *a += b;
                }
            }
            Some(tensor(dw, dim)?)
        } else {
            None
        };
        Ok((Some(tensor(dx, x_t.shape().clone())?), dw))
    }
}

// ---------------------------------------------------------------------------------------------
// Heads

/// Rotary tables for [`heads`]: `cos`/`sin` of each position's angles, `[t, d/2]`.
#[derive(Clone)]
pub struct Rotary {
    /// `[t · d/2]`.
    pub cos: Arc<[f32]>,
    /// `[t · d/2]`.
    pub sin: Arc<[f32]>,
}

/// Splits a projection `[b·t, n·d]` into heads `[b, n·rep, t, d]`: each of the `n` heads is
/// repeated `rep` times (grouped-query attention's shared keys and values) and, with `rotary`,
/// rotated in half-split order (`x·cos + rotate_half(x)·sin`, Hugging Face's RoPE). The
/// reshape, transpose, rotation and repeat candle would do in five ops and copies.
pub fn heads(x: &Tensor, b: usize, t: usize, d: usize, rep: usize, rotary: Option<&Rotary>) -> CResult<Tensor> {
    let (rows, width) = x.dims2()?;
    if rows != b * t || d == 0 || !width.is_multiple_of(d) || rep == 0 || (rotary.is_some() && !d.is_multiple_of(2)) {
        return Err(candle_core::Error::Msg(format!("heads: [{rows}, {width}] is not [{b}·{t}, n·{d}]")));
    }
    if let Some(r) = rotary {
        if r.cos.len() != t * d / 2 || r.sin.len() != t * d / 2 {
            return Err(candle_core::Error::Msg("heads: rotary tables do not match the row length".into()));
        }
    }
    x.contiguous()?.apply_op1(Heads { b, t, n: width / d, d, rep, rotary: rotary.cloned() })
}

struct Heads {
    b: usize,
    t: usize,
    n: usize,
    d: usize,
    rep: usize,
    rotary: Option<Rotary>,
}

impl Heads {
    /// Rotates one head's row `src` at position `pos` into `dst` (`inverse`: by −θ).
    fn rotate(&self, src: &[f32], pos: usize, inverse: bool, dst: &mut [f32]) {
        let half = self.d / 2;
        match &self.rotary {
            None => dst.copy_from_slice(src),
            Some(r) => {
                let (cos, sin) = (&r.cos[pos * half..(pos + 1) * half], &r.sin[pos * half..(pos + 1) * half]);
                let sign = if inverse { -1.0 } else { 1.0 };
                for k in 0..half {
                    let (a, b) = (src[k], src[k + half]);
                    let s = sign * sin[k];
                    dst[k] = a * cos[k] - b * s;
                    dst[k + half] = b * cos[k] + a * s;
                }
            }
        }
    }
}

impl CustomOp1 for Heads {
    fn name(&self) -> &'static str {
        "kiln-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32s(storage, layout)?;
        let (b, t, n, d, rep) = (self.b, self.t, self.n, self.d, self.rep);
        let mut out = vec![0.0f32; b * n * rep * t * d];
        // One task per output head of one batch row: [t, d] written from column block h/rep.
        out.par_chunks_mut(t * d).enumerate().for_each(|(bh, dst)| {
            let (bi, h) = (bh / (n * rep), (bh % (n * rep)) / rep);
            for p in 0..t {
                let src = &x[(bi * t + p) * n * d + h * d..][..d];
                self.rotate(src, p, false, &mut dst[p * d..(p + 1) * d]);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, n * rep, t, d))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (b, t, n, d, rep) = (self.b, self.t, self.n, self.d, self.rep);
        let mut dx = vec![0.0f32; b * t * n * d];
        with_values([grad], |[g]| {
            // One task per input row (b, p): every head's gradient summed over its repeats.
            dx.par_chunks_mut(n * d).enumerate().for_each_init(
                || vec![0.0f32; d],
                |tmp, (row, dst)| {
                    let (bi, p) = (row / t, row % t);
                    for h in 0..n {
                        let acc = &mut dst[h * d..(h + 1) * d];
                        for r in 0..rep {
                            let src = &g[((bi * n * rep + h * rep + r) * t + p) * d..][..d];
                            self.rotate(src, p, true, tmp);
                            for (a, v) in acc.iter_mut().zip(tmp.iter()) {
                                *a += v;
                            }
                        }
                    }
                },
            );
        })?;
        Ok(Some(tensor(dx, arg.shape().clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Var, D};

    pub(super) fn rand(seed: u64, shape: &[usize], scale: f64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0f32, f32::max);
        assert!(worst < tol, "{what}: off by {worst}");
    }

    /// Forward values and the gradients of `Σ out · probe` for every input agree between the
    /// fused op and the candle-op reference.
    pub(super) fn check(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Tensor,
        reference: impl Fn(&[Tensor]) -> Tensor,
        what: &str,
    ) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (fused(&ts), reference(&ts));
        close(&a, &b, 2e-5, &format!("{what} forward"));
        let probe = rand(99, a.dims(), 1.0);
        let ga = (&a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            close(ga.get(v).unwrap(), gb.get(v).unwrap(), 2e-5, &format!("{what} gradient {i}"));
        }
    }

    #[test]
    fn target_logp_matches_log_softmax() {
        // Odd sizes: rows not a multiple of the task size, vocab not a multiple of 8.
        let (n, vocab) = (37, 1003);
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 97) % vocab as u32).collect();
        let picked = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap().unsqueeze(1).unwrap();
        check(
            &[rand(1, &[n, vocab], 3.0)],
            |x| target_logp(&x[0], &targets).unwrap(),
            |x| {
                let m = x[0].max_keepdim(D::Minus1).unwrap().detach();
                let s = x[0].broadcast_sub(&m).unwrap();
                let lse = s.exp().unwrap().sum_keepdim(D::Minus1).unwrap().log().unwrap();
                s.gather(&picked, 1).unwrap().sub(&lse).unwrap().squeeze(1).unwrap()
            },
            "target_logp",
        );
        assert!(target_logp(&rand(1, &[2, 5], 1.0), &[0, 5]).is_err());
    }

    #[test]
    fn rms_norm_matches_its_definition() {
        let eps = 1e-5;
        check(
            &[rand(2, &[45, 19], 2.0), rand(3, &[19], 1.0)],
            |x| rms_norm(&x[0], &x[1], eps).unwrap(),
            |x| {
                let r = (x[0].sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + f64::from(eps))
                    .unwrap()
                    .sqrt()
                    .unwrap()
                    .recip()
                    .unwrap();
                x[0].broadcast_mul(&r).unwrap().broadcast_mul(&x[1]).unwrap()
            },
            "rms_norm",
        );
    }

    #[test]
    fn heads_split_rotate_and_repeat() {
        let (b, t, n, d, rep) = (2, 5, 3, 6, 2);
        let angles: Vec<f32> = (0..t * d / 2).map(|i| 0.3 * i as f32).collect();
        let rotary =
            Rotary { cos: angles.iter().map(|a| a.cos()).collect(), sin: angles.iter().map(|a| a.sin()).collect() };
        // The reference tables in candle's [t, d] layout: each half repeated.
        let full = |f: &Arc<[f32]>| {
            let v: Vec<f32> = (0..t)
                .flat_map(|p| {
                    let h = &f[p * d / 2..(p + 1) * d / 2];
                    h.iter().chain(h).copied().collect::<Vec<_>>()
                })
                .collect();
            Tensor::from_vec(v, (t, d), &Device::Cpu).unwrap()
        };
        let (cos, sin) = (full(&rotary.cos), full(&rotary.sin));
        let split = |x: &Tensor| x.reshape((b, t, n, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let repeat = |x: Tensor| {
            x.unsqueeze(2)
                .unwrap()
                .broadcast_as((b, n, rep, t, d))
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b, n * rep, t, d))
                .unwrap()
        };
        for rotate in [false, true] {
            check(
                &[rand(6, &[b * t, n * d], 1.0)],
                |x| heads(&x[0], b, t, d, rep, rotate.then_some(&rotary)).unwrap(),
                |x| {
                    let h = split(&x[0]);
                    let h = if rotate {
                        let lo = h.narrow(D::Minus1, 0, d / 2).unwrap();
                        let hi = h.narrow(D::Minus1, d / 2, d / 2).unwrap();
                        let rot = Tensor::cat(&[&hi.neg().unwrap(), &lo], D::Minus1).unwrap();
                        (h.broadcast_mul(&cos).unwrap() + rot.broadcast_mul(&sin).unwrap()).unwrap()
                    } else {
                        h
                    };
                    repeat(h)
                },
                &format!("heads (rotate {rotate})"),
            );
        }
    }

    #[test]
    fn attention_matches_masked_softmax_of_products() {
        // t spans two query blocks and a partial third; packed documents cut across blocks;
        // windows shorter than a block, than a document and longer than the row.
        let (b, h, t, d, scale) = (2, 3, 150, 8, 0.3f32);
        let mask = |n: usize, window: Option<usize>| {
            let m: Vec<f32> = (0..n * n)
                .map(|k| {
                    let (q, key) = (k / n, k % n);
                    let visible = key <= q && window.is_none_or(|w| q - key < w);
                    if visible {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            Tensor::from_vec(m, (n, n), &Device::Cpu).unwrap()
        };
        let reference = |x: &[Tensor], docs: &[(usize, usize)], window: Option<usize>| {
            let parts: Vec<Tensor> = docs
                .iter()
                .map(|&(s, n)| {
                    let part = |y: &Tensor| y.narrow(2, s, n).unwrap().contiguous().unwrap();
                    let sc = (part(&x[0]).matmul(&part(&x[1]).t().unwrap()).unwrap() * f64::from(scale)).unwrap();
                    let sc = sc.broadcast_add(&mask(n, window)).unwrap();
                    let m = sc.max_keepdim(D::Minus1).unwrap().detach();
                    let e = sc.broadcast_sub(&m).unwrap().exp().unwrap();
                    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
                    p.matmul(&part(&x[2])).unwrap()
                })
                .collect();
            Tensor::cat(&parts, 2).unwrap().transpose(1, 2).unwrap().reshape((b * t, h * d)).unwrap()
        };
        for window in [None, Some(1), Some(20), Some(100), Some(400)] {
            for docs in [vec![], vec![(0, 70), (70, 3), (73, 77)]] {
                let whole = if docs.is_empty() { vec![(0, t)] } else { docs.clone() };
                check(
                    &[rand(10, &[b, h, t, d], 1.0), rand(11, &[b, h, t, d], 1.0), rand(12, &[b, h, t, d], 1.0)],
                    |x| attention(&x[0], &x[1], &x[2], scale, window, &docs).unwrap(),
                    |x| reference(x, &whole, window),
                    &format!("attention {docs:?}, window {window:?}"),
                );
            }
        }
        assert!(attention(
            &rand(1, &[1, 1, 4, 2], 1.0),
            &rand(2, &[1, 1, 4, 2], 1.0),
            &rand(3, &[1, 1, 4, 2], 1.0),
            1.0,
            Some(0),
            &[]
        )
        .is_err());
    }
}
