//! Causal self-attention (optionally in a sliding window) as one op with its own backward:
//! `softmax(q·kᵀ·scale + mask)·v` per head, in blocks of query rows so the masked upper
//! triangle is mostly not computed, with every head of every row a rayon task whose products
//! run on that task's thread. candle
//! would run one pool-wide GEMM per head and product (small ones, dominated by their start-up),
//! plus copies for `kᵀ`, the mask, the softmax and the output transpose.

use super::{exp_shifted, f32s, max_of, tensor, with_values, CResult};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Query rows per block: a block's scores reach only up to its last row's key.
const BLOCK: usize = 64;

/// Attention of heads `q`, `k`, `v` `[b, h, t, d]` (keys and values already repeated per query
/// head), each row attending to itself and the earlier rows of its own document (`documents`:
/// (start, length) per packed document; empty for one), and with a sliding `window` only to
/// the last `window` of them (itself included). The result is `[b·t, h·d]`, the layout the
/// output projection reads.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    window: Option<usize>,
    documents: &[(usize, usize)],
) -> CResult<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    if k.dims() != q.dims() || v.dims() != q.dims() {
        return Err(candle_core::Error::Msg(format!(
            "attention: q {:?}, k {:?}, v {:?} differ",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    let documents = if documents.is_empty() { vec![(0, t)] } else { documents.to_vec() };
    if documents.iter().any(|&(s, n)| s + n > t) {
        return Err(candle_core::Error::Msg("attention: a document runs past the row".into()));
    }
    if window == Some(0) {
        return Err(candle_core::Error::Msg("attention: a window of no positions".into()));
    }
    let op = Attention { b, h, t, d, scale, window, documents, probs: Mutex::new(None) };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

struct Attention {
    b: usize,
    h: usize,
    t: usize,
    d: usize,
    scale: f32,
    /// Keys a row sees at most (sliding-window layers); the probabilities of the others are 0,
    /// so the backward pass needs no change.
    window: Option<usize>,
    documents: Vec<(usize, usize)>,
    /// The softmax of the forward pass, kept for backward: per (batch row, head), each
    /// document's `[n, n]` block in turn (0 where masked), so packed rows of short documents
    /// keep Σ n² scores rather than t².
    probs: Mutex<Option<Arc<Vec<f32>>>>,
}

/// A row-major matrix view: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst = a·b` (`accumulate`: `dst += a·b`) for `a` `[m, k]`, `b` `[k, n]` and `dst` `[m, n]`
/// with row stride `dst_rs`, on the calling thread.
///
/// # Safety
/// The views must cover their matrices, and `dst` must be writable and not overlap them.
unsafe fn matmul((m, n, k): (usize, usize, usize), dst: *mut f32, dst_rs: usize, accumulate: bool, a: View, b: View) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// A pointer handed to tasks that write disjoint parts of its buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes only the rows and columns of its own (batch row, head).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The element `offset` places in (a method, so closures capture the whole `Shared`).
    ///
    /// # Safety
    /// `offset` must lie inside the buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

impl Attention {
    /// Each query block of each document: the document's start `s` and length `n`, where its
    /// `[n, n]` probabilities start in a head's share of `probs`, the block's first row `r0`
    /// (within the document) and its number of rows.
    fn blocks(&self) -> impl Iterator<Item = Block> + '_ {
        let offsets = self.documents.iter().scan(0, |off, &(_, n)| {
            let at = *off;
            *off += n * n;
            Some(at)
        });
        self.documents.iter().zip(offsets).flat_map(|(&(s, n), off)| {
            (0..n).step_by(BLOCK).map(move |r0| Block { s, n, off, r0, rows: BLOCK.min(n - r0) })
        })
    }

    /// Probabilities kept per (batch row, head): Σ n² over the documents.
    fn probs_per_head(&self) -> usize {
        self.documents.iter().map(|&(_, n)| n * n).sum()
    }
}

/// One block of query rows of one document (see [`Attention::blocks`]).
struct Block {
    s: usize,
    n: usize,
    off: usize,
    r0: usize,
    rows: usize,
}

impl Block {
    /// Where the block's first row of probabilities starts in a head's share.
    fn first_prob(&self) -> usize {
        self.off + self.r0 * self.n
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "kiln-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (q, k, v) = (f32s(s1, l1)?, f32s(s2, l2)?, f32s(s3, l3)?);
        let (b, h, t, d) = (self.b, self.h, self.t, self.d);
        let mut out = vec![0.0f32; b * t * h * d];
        let per_head = self.probs_per_head();
        let mut probs = vec![0.0f32; b * h * per_head];
        let out_ptr = Shared(out.as_mut_ptr());
        probs.par_chunks_mut(per_head).enumerate().for_each_init(
            || vec![0.0f32; t],
            |scratch, (bh, p)| {
                let (bi, hi) = (bh / h, bh % h);
                let (qb, kb, vb) = (&q[bh * t * d..][..t * d], &k[bh * t * d..][..t * d], &v[bh * t * d..][..t * d]);
                for blk in self.blocks() {
                    let Block { s, n, r0, rows: rb, .. } = blk;
                    let (c, rows) = (r0 + rb, blk.first_prob());
                    // SAFETY: scores of the block's rows and keys s..s+c lie inside this
                    // head's [n, n] block of this document; q and k rows inside its [t, d].
                    unsafe {
                        matmul(
                            (rb, c, d),
                            p[rows..].as_mut_ptr(),
                            n,
                            false,
                            View { ptr: qb[(s + r0) * d..].as_ptr(), rs: d as isize, cs: 1 },
                            View { ptr: kb[s * d..].as_ptr(), rs: 1, cs: d as isize },
                        );
                    }
                    for j in 0..rb {
                        let row = &mut p[rows + j * n..][..c];
                        let seen = r0 + j + 1;
                        let first = self.window.map_or(0, |w| seen.saturating_sub(w));
                        for (x, s) in scratch[first..seen].iter_mut().zip(&row[first..seen]) {
                            *x = s * self.scale;
                        }
                        let max = max_of(&scratch[first..seen]);
                        let inv = 1.0 / exp_shifted(&scratch[first..seen], max, &mut row[first..seen]);
                        row[first..seen].iter_mut().for_each(|x| *x *= inv);
                        row[..first].iter_mut().for_each(|x| *x = 0.0);
                        row[seen..].iter_mut().for_each(|x| *x = 0.0);
                    }
                    // SAFETY: this (batch row, head)'s columns hi·d.. of output rows
                    // bi·t+s+r0.. are written by this task only.
                    unsafe {
                        let dst = out_ptr.at((bi * t + s + r0) * h * d + hi * d);
                        matmul(
                            (rb, d, c),
                            dst,
                            h * d,
                            false,
                            View { ptr: p[rows..].as_ptr(), rs: n as isize, cs: 1 },
                            View { ptr: vb[s * d..].as_ptr(), rs: d as isize, cs: 1 },
                        );
                    }
                }
            },
        );
        *self.probs.lock().expect("attention probabilities lock") = Some(Arc::new(probs));
        Ok((CpuStorage::F32(out), Shape::from((b * t, h * d))))
    }

    fn bwd(
        &self,
        q_t: &Tensor,
        k_t: &Tensor,
        v_t: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let probs = self
            .probs
            .lock()
            .expect("attention probabilities lock")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("attention: backward before forward".into()))?;
        let (b, h, t, d) = (self.b, self.h, self.t, self.d);
        let n = b * h * t * d;
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        with_values([q_t, k_t, v_t, res, grad], |[q, k, v, o, g]| {
            dq.par_chunks_mut(t * d)
                .zip(dk.par_chunks_mut(t * d))
                .zip(dv.par_chunks_mut(t * d))
                .enumerate()
                .for_each_init(
                    || vec![0.0f32; BLOCK * t],
                    |ds, (bh, ((dq, dk), dv))| {
                        let (bi, hi) = (bh / h, bh % h);
                        let (qb, kb, vb) =
                            (&q[bh * t * d..][..t * d], &k[bh * t * d..][..t * d], &v[bh * t * d..][..t * d]);
                        let per_head = self.probs_per_head();
                        let p = &probs[bh * per_head..][..per_head];
                        for blk in self.blocks() {
                            let Block { s, n, r0, rows: rb, .. } = blk;
                            let (c, rows) = (r0 + rb, blk.first_prob());
                            let go = (bi * t + s + r0) * h * d + hi * d;
                            // SAFETY (all four products): views stay inside this head's blocks
                            // of q, k, v, p, and its columns of the [b·t, h·d] o and g; `ds`
                            // holds BLOCK × t floats.
                            unsafe {
                                // dP = dO·Vᵀ
                                matmul(
                                    (rb, c, d),
                                    ds.as_mut_ptr(),
                                    c,
                                    false,
                                    View { ptr: g[go..].as_ptr(), rs: (h * d) as isize, cs: 1 },
                                    View { ptr: vb[s * d..].as_ptr(), rs: 1, cs: d as isize },
                                );
                            }
                            for j in 0..rb {
                                let (oj, gj) = (&o[go + j * h * d..][..d], &g[go + j * h * d..][..d]);
                                let dot: f32 = oj.iter().zip(gj).map(|(a, b)| a * b).sum();
                                let pj = &p[rows + j * n..][..c];
                                for (x, &pv) in ds[j * c..(j + 1) * c].iter_mut().zip(pj) {
                                    *x = self.scale * pv * (*x - dot);
                                }
                            }
                            unsafe {
                                // dQ = dS·K
                                matmul(
                                    (rb, d, c),
                                    dq[(s + r0) * d..].as_mut_ptr(),
                                    d,
                                    false,
                                    View { ptr: ds.as_ptr(), rs: c as isize, cs: 1 },
                                    View { ptr: kb[s * d..].as_ptr(), rs: d as isize, cs: 1 },
                                );
                                // dK += dSᵀ·Q
                                matmul(
                                    (c, d, rb),
                                    dk[s * d..].as_mut_ptr(),
                                    d,
                                    true,
                                    View { ptr: ds.as_ptr(), rs: 1, cs: c as isize },
                                    View { ptr: qb[(s + r0) * d..].as_ptr(), rs: d as isize, cs: 1 },
                                );
                                // dV += Pᵀ·dO
                                matmul(
                                    (c, d, rb),
                                    dv[s * d..].as_mut_ptr(),
                                    d,
                                    true,
                                    View { ptr: p[rows..].as_ptr(), rs: 1, cs: n as isize },
                                    View { ptr: g[go..].as_ptr(), rs: (h * d) as isize, cs: 1 },
                                );
                            }
                        }
                    },
                );
        })?;
        let shape = q_t.shape().clone();
        Ok((Some(tensor(dq, shape.clone())?), Some(tensor(dk, shape.clone())?), Some(tensor(dv, shape)?)))
    }
}
