//! AdamW with decoupled weight decay (Loshchilov & Hutter 2019), gradient accumulation and
//! global-norm clipping. The update runs on plain `f32` slices: one pass per parameter, and the
//! moment estimates are ordinary vectors that checkpoints save bit-exactly.

use crate::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// Gradients summed over the micro-batches of one optimizer step, one vector per parameter.
pub struct GradAccum {
    sums: Vec<Vec<f32>>,
}

impl GradAccum {
    /// Zeroed sums shaped like `params`.
    pub fn new(params: &[(String, Var)]) -> GradAccum {
        GradAccum {
            sums: params
                .iter()
                .map(|(_, v)| vec![0.0; v.elem_count()])
                .collect(),
        }
    }

    /// Adds `scale ·` the gradients of `grads` (a parameter with no gradient adds nothing).
    pub fn add(&mut self, params: &[(String, Var)], grads: &GradStore, scale: f32) -> Result<()> {
        for ((_, var), sum) in params.iter().zip(&mut self.sums) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?;
                sum.iter_mut().zip(&g).for_each(|(s, x)| *s += scale * x);
            }
        }
        Ok(())
    }

    /// The global L2 norm of all gradients.
    pub fn norm(&self) -> f64 {
        self.sums
            .iter()
            .flatten()
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt()
    }

    /// Scales the gradients so that their global norm is at most `max` (0 disables); returns the
    /// norm before clipping.
    pub fn clip(&mut self, max: f64) -> f64 {
        let norm = self.norm();
        if max > 0.0 && norm > max {
            let s = (max / (norm + 1e-6)) as f32;
            self.sums.iter_mut().flatten().for_each(|g| *g *= s);
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
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Fresh state for `params`.
    pub fn new(params: &[(String, Var)], betas: (f64, f64), eps: f64, weight_decay: f64) -> AdamW {
        let zeros = || {
            params
                .iter()
                .map(|(_, v)| vec![0.0f32; v.elem_count()])
                .collect()
        };
        AdamW {
            betas,
            eps,
            weight_decay,
            t: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    /// One update with learning rate `lr`: `θ ← θ − lr·(m̂/(√v̂+ε) + λ·θ)`.
    pub fn step(&mut self, params: &[(String, Var)], grads: &[Vec<f32>], lr: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (i, (_, var)) in params.iter().enumerate() {
            let t = var.as_tensor();
            let dtype = t.dtype();
            let mut w = t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            let decay = if t.rank() >= 2 {
                self.weight_decay
            } else {
                0.0
            };
            let (m, v, g) = (&mut self.m[i], &mut self.v[i], &grads[i]);
            let (b1f, b2f) = (b1 as f32, b2 as f32);
            let (step, shrink) = ((lr / bc1) as f32, (1.0 - lr * decay) as f32);
            let (inv_bc2, eps) = ((1.0 / bc2) as f32, self.eps as f32);
            for j in 0..w.len() {
                m[j] = b1f * m[j] + (1.0 - b1f) * g[j];
                v[j] = b2f * v[j] + (1.0 - b2f) * g[j] * g[j];
                w[j] = w[j] * shrink - step * m[j] / ((v[j] * inv_bc2).sqrt() + eps);
            }
            var.set(&Tensor::from_vec(w, t.shape(), &Device::Cpu)?.to_dtype(dtype)?)?;
        }
        Ok(())
    }

    /// The moment estimates as named tensors (`m.<param>`, `v.<param>`) for a checkpoint.
    pub fn state_tensors(&self, params: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, (name, var)) in params.iter().enumerate() {
            let shape = var.as_tensor().shape();
            out.insert(
                format!("m.{name}"),
                Tensor::from_vec(self.m[i].clone(), shape, &Device::Cpu)?,
            );
            out.insert(
                format!("v.{name}"),
                Tensor::from_vec(self.v[i].clone(), shape, &Device::Cpu)?,
            );
        }
        Ok(out)
    }

    /// Restores moment estimates saved by [`AdamW::state_tensors`], after `t` updates.
    pub fn load_state(
        &mut self,
        params: &[(String, Var)],
        tensors: &HashMap<String, Tensor>,
        t: u64,
    ) -> Result<()> {
        for (i, (name, var)) in params.iter().enumerate() {
            for (key, dst) in [
                (format!("m.{name}"), &mut self.m[i]),
                (format!("v.{name}"), &mut self.v[i]),
            ] {
                let src = tensors.get(&key).ok_or_else(|| {
                    TrainError::Checkpoint(format!("the optimizer state has no tensor {key:?}"))
                })?;
                if src.elem_count() != var.elem_count() {
                    return Err(TrainError::Checkpoint(format!(
                        "optimizer tensor {key:?} has the wrong size"
                    )));
                }
                *dst = src
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?;
            }
        }
        self.t = t;
        Ok(())
    }
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
            Var::from_tensor(&Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap(),
        )];
        let mut acc = GradAccum::new(&params);
        acc.sums[0] = vec![3.0, 4.0];
        assert!((acc.clip(1.0) - 5.0).abs() < 1e-9);
        assert!((acc.norm() - 1.0).abs() < 1e-5);
    }
}
