//! AdamW with decoupled weight decay (Loshchilov & Hutter 2019), Muon for hidden weight matrices
//! as an option, gradient accumulation and global-norm clipping. The updates run on plain `f32`
//! vectors, and the optimizer state is ordinary vectors that checkpoints save bit-exactly.

use crate::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor, Var};
use rayon::prelude::*;
use std::collections::HashMap;

/// Elements per parallel task in the element-wise optimizer loops (memory-bound; large enough
/// that scheduling is noise, small enough to spread SmolLM2's 28M-element embedding).
const CHUNK: usize = 1 << 16;

/// Calls `f` with `t`'s values as f32: in place for a contiguous f32 CPU tensor (no copy of a
/// gradient or weight that may be hundreds of megabytes), else through a converted copy.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(f(&data[a..b]));
        }
    }
    let copy = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(f(&copy))
}

/// Gradients summed over the micro-batches of one optimizer step, one vector per parameter.
pub struct GradAccum {
    sums: Vec<Vec<f32>>,
}

impl GradAccum {
    /// Zeroed sums shaped like `params`.
    pub fn new(params: &[(String, Var)]) -> GradAccum {
        GradAccum { sums: params.iter().map(|(_, v)| vec![0.0; v.elem_count()]).collect() }
    }

    /// The sums kept in `slot` from the last step, zeroed, or new ones for `params` on the first.
    pub fn reuse<'a>(slot: &'a mut Option<GradAccum>, params: &[(String, Var)]) -> &'a mut GradAccum {
        match slot {
            Some(acc) => {
                acc.reset();
                acc
            }
            None => slot.insert(GradAccum::new(params)),
        }
    }

    /// Zeroes the sums for the next step, keeping their memory (a fresh zeroed vector of
    /// SmolLM2's embedding size is mapped in page by page on every step).
    pub fn reset(&mut self) {
        self.sums.iter_mut().for_each(|v| v.par_chunks_mut(CHUNK).for_each(|c| c.fill(0.0)));
    }

    /// Adds `scale ·` the gradients of `grads` (a parameter with no gradient adds nothing).
    pub fn add(&mut self, params: &[(String, Var)], grads: &GradStore, scale: f32) -> Result<()> {
        for ((_, var), sum) in params.iter().zip(&mut self.sums) {
            if let Some(g) = grads.get(var.as_tensor()) {
                with_f32(g, |g| {
                    sum.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(s, g)| s.iter_mut().zip(g).for_each(|(s, x)| *s += scale * x))
                })?;
            }
        }
        Ok(())
    }

    /// The global L2 norm of all gradients.
    pub fn norm(&self) -> f64 {
        // Partial sums over fixed chunks, added in order: the same bits on every run.
        let partial = |v: &Vec<f32>| -> Vec<f64> {
            v.par_chunks(CHUNK).map(|c| c.iter().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>()).collect()
        };
        self.sums.iter().flat_map(partial).sum::<f64>().sqrt()
    }

    /// Scales the gradients so that their global norm is at most `max` (0 disables); returns the
    /// norm before clipping.
    pub fn clip(&mut self, max: f64) -> f64 {
        let norm = self.norm();
        if max > 0.0 && norm > max {
            let s = (max / (norm + 1e-6)) as f32;
            self.sums.iter_mut().for_each(|v| v.par_iter_mut().for_each(|g| *g *= s));
        }
        norm
    }

    /// The summed gradients, parameter by parameter.
    pub fn grads(&self) -> &[Vec<f32>] {
        &self.sums
    }
}

/// AdamW's hyper-parameters and moment estimates.
pub struct AdamW {
    /// β1, β2, ε.
    pub betas: (f64, f64),
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not norms).
    pub weight_decay: f64,
    /// Updates applied so far (for bias correction).
    pub t: u64,
    /// Parameters AdamW leaves alone (another optimizer owns them, see [`Muon::mask`]).
    pub skip: Vec<bool>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Fresh state for `params`.
    pub fn new(params: &[(String, Var)], betas: (f64, f64), eps: f64, weight_decay: f64) -> AdamW {
        let zeros = || params.iter().map(|(_, v)| vec![0.0f32; v.elem_count()]).collect();
        AdamW { betas, eps, weight_decay, t: 0, skip: vec![false; params.len()], m: zeros(), v: zeros() }
    }

    /// One update with learning rate `lr`: `θ ← θ − lr·(m̂/(√v̂+ε) + λ·θ)`.
    pub fn step(&mut self, params: &[(String, Var)], grads: &[Vec<f32>], lr: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (i, (_, var)) in params.iter().enumerate() {
            if self.skip.get(i) == Some(&true) {
                continue;
            }
            let t = var.as_tensor();
            let decay = if t.rank() >= 2 { self.weight_decay } else { 0.0 };
            let (m, v, g) = (&mut self.m[i], &mut self.v[i], &grads[i]);
            let (b1f, b2f) = (b1 as f32, b2 as f32);
            let (step, shrink) = ((lr / bc1) as f32, (1.0 - lr * decay) as f32);
            let (inv_bc2, eps) = ((1.0 / bc2) as f32, self.eps as f32);
            let mut next = vec![0f32; m.len()];
            with_f32(t, |w| {
                (next.par_chunks_mut(CHUNK), m.par_chunks_mut(CHUNK), v.par_chunks_mut(CHUNK))
                    .into_par_iter()
                    .zip(w.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
                    .for_each(|((next, m, v), (w, g))| {
                        for j in 0..next.len() {
                            m[j] = b1f * m[j] + (1.0 - b1f) * g[j];
                            v[j] = b2f * v[j] + (1.0 - b2f) * g[j] * g[j];
                            next[j] = w[j] * shrink - step * m[j] / ((v[j] * inv_bc2).sqrt() + eps);
                        }
                    })
            })?;
            var.set(&Tensor::from_vec(next, t.shape(), &Device::Cpu)?.to_dtype(t.dtype())?)?;
        }
        Ok(())
    }

    /// The moment estimates as named tensors (`m.<param>`, `v.<param>`) for a checkpoint.
    pub fn state_tensors(&self, params: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, (name, var)) in params.iter().enumerate() {
            let shape = var.as_tensor().shape();
            out.insert(format!("m.{name}"), Tensor::from_vec(self.m[i].clone(), shape, &Device::Cpu)?);
            out.insert(format!("v.{name}"), Tensor::from_vec(self.v[i].clone(), shape, &Device::Cpu)?);
        }
        Ok(out)
    }

    /// Restores moment estimates saved by [`AdamW::state_tensors`], after `t` updates.
    pub fn load_state(&mut self, params: &[(String, Var)], tensors: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for (i, (name, var)) in params.iter().enumerate() {
            for (key, dst) in [(format!("m.{name}"), &mut self.m[i]), (format!("v.{name}"), &mut self.v[i])] {
                let src = tensors
                    .get(&key)
                    .ok_or_else(|| TrainError::Checkpoint(format!("the optimizer state has no tensor {key:?}")))?;
                if src.elem_count() != var.elem_count() {
                    return Err(TrainError::Checkpoint(format!("optimizer tensor {key:?} has the wrong size")));
                }
                *dst = src.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
            }
        }
        self.t = t;
        Ok(())
    }
}

/// Muon (Jordan et al. 2024; the matrix optimizer of modded-nanogpt and nanochat) for the
/// hidden weight matrices: Nesterov momentum whose update is replaced by its nearest
/// semi-orthogonal matrix (five Newton–Schulz iterations, [`orthogonalize`]), scaled by
/// √max(1, rows/cols), with decoupled weight decay. Embeddings, the output head and norm
/// weights stay with AdamW ([`Muon::takes`]).
pub struct Muon {
    /// Momentum coefficient.
    pub momentum: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// The parameters Muon owns (indices into the parameter list) and their momentum buffers.
    owned: Vec<usize>,
    buffers: Vec<Vec<f32>>,
}

impl Muon {
    /// Whether Muon takes the parameter `name` of rank `rank`: matrices other than the token
    /// embedding and the output head.
    pub fn takes(name: &str, rank: usize) -> bool {
        rank == 2 && !name.contains("embed_tokens") && !name.starts_with("lm_head")
    }

    /// Fresh state for the parameters of `params` that Muon takes.
    pub fn new(params: &[(String, Var)], momentum: f64, weight_decay: f64) -> Muon {
        let owned: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|(_, (name, var))| Muon::takes(name, var.as_tensor().rank()))
            .map(|(i, _)| i)
            .collect();
        let buffers = owned.iter().map(|&i| vec![0.0; params[i].1.elem_count()]).collect();
        Muon { momentum, weight_decay, owned, buffers }
    }

    /// For [`AdamW::skip`]: true where Muon updates the parameter.
    pub fn mask(&self, n_params: usize) -> Vec<bool> {
        let mut mask = vec![false; n_params];
        self.owned.iter().for_each(|&i| mask[i] = true);
        mask
    }

    /// One update of Muon's parameters with learning rate `lr`.
    pub fn step(&mut self, params: &[(String, Var)], grads: &[Vec<f32>], lr: f64) -> Result<()> {
        let mu = self.momentum as f32;
        for (&i, buffer) in self.owned.iter().zip(&mut self.buffers) {
            let var = &params[i].1;
            let t = var.as_tensor();
            let (rows, cols) = t.dims2()?;
            // Nesterov: the step looks ahead along the updated momentum.
            let ahead: Vec<f32> = buffer
                .iter_mut()
                .zip(&grads[i])
                .map(|(b, &g)| {
                    *b = mu * *b + g;
                    g + mu * *b
                })
                .collect();
            let update = orthogonalize(&Tensor::from_vec(ahead, (rows, cols), &Device::Cpu)?)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let scale = (lr * (rows as f64 / cols as f64).max(1.0).sqrt()) as f32;
            let shrink = (1.0 - lr * self.weight_decay) as f32;
            let w: Vec<f32> = t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?
                .iter()
                .zip(&update)
                .map(|(&w, &o)| w * shrink - scale * o)
                .collect();
            var.set(&Tensor::from_vec(w, t.shape(), &Device::Cpu)?.to_dtype(t.dtype())?)?;
        }
        Ok(())
    }

    /// The momentum buffers as named tensors (`mu.<param>`) for a checkpoint.
    pub fn state_tensors(&self, params: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (&i, buffer) in self.owned.iter().zip(&self.buffers) {
            let (name, var) = &params[i];
            out.insert(format!("mu.{name}"), Tensor::from_vec(buffer.clone(), var.as_tensor().shape(), &Device::Cpu)?);
        }
        Ok(out)
    }

    /// Restores buffers saved by [`Muon::state_tensors`].
    pub fn load_state(&mut self, params: &[(String, Var)], tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (&i, buffer) in self.owned.iter().zip(&mut self.buffers) {
            let (name, var) = &params[i];
            let key = format!("mu.{name}");
            let src = tensors.get(&key).ok_or_else(|| {
                TrainError::Checkpoint(format!(
                    "the optimizer state has no tensor {key:?} (was the run started with Muon?)"
                ))
            })?;
            if src.elem_count() != var.elem_count() {
                return Err(TrainError::Checkpoint(format!("optimizer tensor {key:?} has the wrong size")));
            }
            *buffer = src.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        }
        Ok(())
    }
}

/// The semi-orthogonal matrix nearest `g` (`U Vᵀ` of its SVD), approximately: five steps of
/// the quintic Newton–Schulz iteration with Muon's coefficients, which drive every singular
/// value into roughly [0.7, 1.2] fast rather than to exactly 1 slowly. Works on the wide
/// orientation (fewer rows than columns) for the smaller Gram matrix.
pub fn orthogonalize(g: &Tensor) -> Result<Tensor> {
    let (a, b, c) = (3.4445, -4.7750, 2.0315);
    let (rows, cols) = g.dims2()?;
    let tall = rows > cols;
    let mut x = if tall { g.t()?.contiguous()? } else { g.clone() };
    let norm = f64::from(x.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt();
    x = (x / (norm + 1e-7))?;
    for _ in 0..5 {
        let gram = x.matmul(&x.t()?.contiguous()?)?;
        let poly = ((&gram * b)? + (gram.matmul(&gram)? * c)?)?;
        x = ((&x * a)? + poly.matmul(&x)?)?;
    }
    Ok(if tall { x.t()?.contiguous()? } else { x })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AdamW on f(w) = ½‖w − c‖² walks w to c; the first step has size lr in every coordinate
    /// (bias correction makes m̂/√v̂ = sign(g)).
    #[test]
    fn adamw_first_step_is_lr_and_converges() {
        let params = vec![(
            "w".to_string(),
            Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap(),
        )];
        let target = [0.5f32, 0.5, 0.5];
        let mut opt = AdamW::new(&params, (0.9, 0.999), 1e-8, 0.0);
        let w0 = params[0].1.as_tensor().to_vec1::<f32>().unwrap();
        let g: Vec<f32> = w0.iter().zip(&target).map(|(w, c)| w - c).collect();
        opt.step(&params, &[g], 0.1).unwrap();
        let w1 = params[0].1.as_tensor().to_vec1::<f32>().unwrap();
        for (a, b) in w0.iter().zip(&w1) {
            assert!(((a - b).abs() - 0.1).abs() < 1e-5, "{a} -> {b}");
        }
        for _ in 0..500 {
            let w = params[0].1.as_tensor().to_vec1::<f32>().unwrap();
            let g: Vec<f32> = w.iter().zip(&target).map(|(w, c)| w - c).collect();
            opt.step(&params, &[g], 0.02).unwrap();
        }
        let w = params[0].1.as_tensor().to_vec1::<f32>().unwrap();
        assert!(w.iter().all(|x| (x - 0.5).abs() < 1e-2), "{w:?}");
    }

    #[test]
    fn clip_bounds_the_norm() {
        let params = vec![(
            "w".to_string(),
            Var::from_tensor(&Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap(),
        )];
        let mut acc = GradAccum::new(&params);
        acc.sums[0] = vec![3.0, 4.0];
        assert!((acc.clip(1.0) - 5.0).abs() < 1e-9);
        assert!((acc.norm() - 1.0).abs() < 1e-5);
    }

    fn matrix(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        (0..rows * cols)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Newton–Schulz gives rows (of the wide orientation) that are nearly orthonormal —
    /// singular values within Muon's band — and an update that still points along `g`.
    #[test]
    fn orthogonalize_gives_a_near_orthogonal_matrix_along_g() {
        for (rows, cols) in [(8, 24), (24, 8), (16, 16)] {
            let g = Tensor::from_vec(matrix(rows, cols, 7), (rows, cols), &Device::Cpu).unwrap();
            let o = orthogonalize(&g).unwrap();
            assert_eq!(o.dims2().unwrap(), (rows, cols));
            let wide = if rows > cols { o.t().unwrap().contiguous().unwrap() } else { o.clone() };
            let gram = wide.matmul(&wide.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
            for (i, row) in gram.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    if i == j {
                        // σ² of each direction: Muon's iteration leaves σ in about [0.7, 1.2].
                        assert!((0.4..1.5).contains(&v), "{rows}x{cols}: σ²[{i}] = {v}");
                    } else {
                        assert!(v.abs() < 0.35, "{rows}x{cols}: off-diagonal [{i},{j}] = {v}");
                    }
                }
            }
            let along: f32 = (&o * &g).unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(along > 0.0, "{rows}x{cols}: the update opposes the gradient");
        }
    }

    /// Muon takes the hidden matrices only, AdamW skips them, and a saved state restores the
    /// same next step.
    #[test]
    fn muon_owns_hidden_matrices_and_its_state_round_trips() {
        let var = |rows: usize, cols: usize, seed: u32| {
            Var::from_tensor(&Tensor::from_vec(matrix(rows, cols, seed), (rows, cols), &Device::Cpu).unwrap()).unwrap()
        };
        let params = vec![
            ("model.embed_tokens.weight".to_string(), var(10, 4, 1)),
            ("model.layers.0.mlp.up_proj.weight".to_string(), var(6, 4, 2)),
            (
                "model.norm.weight".to_string(),
                Var::from_tensor(&Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap(),
            ),
        ];
        let mut muon = Muon::new(&params, 0.95, 0.0);
        assert_eq!(muon.mask(3), vec![false, true, false]);
        let grads: Vec<Vec<f32>> = params.iter().map(|(_, v)| vec![0.1; v.elem_count()]).collect();
        muon.step(&params, &grads, 0.02).unwrap();
        let saved = muon.state_tensors(&params).unwrap();
        let snapshot: Vec<Vec<f32>> =
            params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
        muon.step(&params, &grads, 0.02).unwrap();
        let after: Vec<f32> = params[1].1.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // Restore the weights and a fresh optimizer from the checkpoint; the step repeats exactly.
        params[1].1.set(&Tensor::from_vec(snapshot[1].clone(), (6, 4), &Device::Cpu).unwrap()).unwrap();
        let mut restored = Muon::new(&params, 0.95, 0.0);
        restored.load_state(&params, &saved).unwrap();
        restored.step(&params, &grads, 0.02).unwrap();
        let again: Vec<f32> = params[1].1.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(after, again);
        // The embedding and the norm were never touched.
        for i in [0, 2] {
            let now: Vec<f32> = params[i].1.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(now, snapshot[i]);
        }
    }
}
