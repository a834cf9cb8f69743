//! Gated linear units of the feed-forward block, each one pass with its own backward:
//! SwiGLU `silu(gate)·up` (llama, Qwen; Shazeer 2020) and GeGLU `gelu(gate)·up` with GELU's
//! tanh approximation (Gemma; Hendrycks & Gimpel 2016), element-wise over equal shapes.

use super::{f32s, tensor, with_values, CResult, MIN_TASK_FLOATS};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// √(2/π), GELU's tanh-approximation constant.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of GELU's tanh approximation.
const GELU_A: f32 = 0.044715;

/// `silu(gate) · up` (`silu(x) = x·σ(x)`), element-wise over equal shapes.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> CResult<Tensor> {
    glu(gate, up, Gate::Silu)
}

/// `gelu(gate) · up` with `gelu(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³)))`, element-wise over
/// equal shapes. With `ggml_table` the forward value is kiln's inference GeGLU (ggml's f16
/// table, bit for bit), for parity tests; the gradient is always the exact GELU's.
pub fn geglu(gate: &Tensor, up: &Tensor, ggml_table: bool) -> CResult<Tensor> {
    glu(gate, up, Gate::Gelu { ggml_table })
}

fn glu(gate: &Tensor, up: &Tensor, kind: Gate) -> CResult<Tensor> {
    if gate.shape() != up.shape() {
        return Err(candle_core::Error::Msg(format!(
            "{}: shapes {:?} and {:?}",
            kind.name(),
            gate.shape(),
            up.shape()
        )));
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, kind)
}

#[derive(Clone, Copy)]
enum Gate {
    Silu,
    Gelu { ggml_table: bool },
}

/// `σ(x) = 1 / (1 + e^-x)` into `out`.
fn sigmoid(x: &[f32], out: &mut [f32]) {
    let n = x.len().min(out.len());
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut body = 0;
    #[cfg(target_arch = "x86_64")]
    if kiln_model::quant::simd_available() {
        body = n - n % 8;
        // SAFETY: simd_available() checked AVX2, FMA and F16C; both slices hold `body` floats.
        unsafe { sigmoid_avx2(&x[..body], &mut out[..body]) };
    }
    for (o, &v) in out[body..n].iter_mut().zip(&x[body..n]) {
        *o = 1.0 / (1.0 + kiln_model::math::exp(-v));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sigmoid_avx2(x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    for i in (0..x.len()).step_by(8) {
        let e = kiln_model::math::exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x.as_ptr().add(i))));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_div_ps(one, _mm256_add_ps(one, e)));
    }
}

/// `σ(2z)` for GELU's `z = √(2/π)(x + 0.044715x³)` of each `x` into `s`: `gelu(x) = x·σ(2z)`,
/// since `1 + tanh(z) = 2σ(2z)`, so GELU rides on the vector sigmoid.
fn gelu_sigmoid(x: &[f32], s: &mut [f32], scratch: &mut [f32]) {
    let z2 = &mut scratch[..x.len()];
    for (z, &v) in z2.iter_mut().zip(x) {
        *z = 2.0 * SQRT_2_OVER_PI * (v + GELU_A * v * v * v);
    }
    sigmoid(z2, s);
}

impl Gate {
    fn name(self) -> &'static str {
        match self {
            Gate::Silu => "kiln-swiglu",
            Gate::Gelu { .. } => "kiln-geglu",
        }
    }
}

impl CustomOp2 for Gate {
    fn name(&self) -> &'static str {
        Gate::name(*self)
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (gate, up) = (f32s(s1, l1)?, f32s(s2, l2)?);
        let mut out = gate.to_vec();
        let m = MIN_TASK_FLOATS;
        match *self {
            Gate::Silu => out.par_chunks_mut(m).zip(up.par_chunks(m)).for_each(|(o, u)| kiln_model::math::swiglu(o, u)),
            Gate::Gelu { ggml_table: true } => {
                out.par_chunks_mut(m).zip(up.par_chunks(m)).for_each(|(o, u)| kiln_model::math::geglu(o, u))
            }
            Gate::Gelu { ggml_table: false } => {
                out.par_chunks_mut(m).zip(gate.par_chunks(m)).zip(up.par_chunks(m)).for_each_init(
                    || vec![0.0f32; m],
                    |scratch, ((o, x), u)| {
                        gelu_sigmoid(x, o, scratch);
                        for ((o, &x), &u) in o.iter_mut().zip(x).zip(u) {
                            *o *= x * u;
                        }
                    },
                )
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate_t: &Tensor,
        up_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let n = gate_t.elem_count();
        let (mut dgate, mut dup) = (vec![0.0f32; n], vec![0.0f32; n]);
        let kind = *self;
        with_values([gate_t, up_t, grad], |[gate, up, g]| {
            let chunk = MIN_TASK_FLOATS;
            let tasks = dgate.par_chunks_mut(chunk).zip(dup.par_chunks_mut(chunk)).enumerate();
            let inputs = |c: usize, len: usize| {
                let off = c * chunk;
                (&gate[off..off + len], &up[off..off + len], &g[off..off + len])
            };
            match kind {
                Gate::Silu => tasks.for_each(|(c, (dg, du))| {
                    let (x, u, g) = inputs(c, dg.len());
                    sigmoid(x, dg);
                    for j in 0..dg.len() {
                        let s = dg[j];
                        du[j] = g[j] * x[j] * s;
                        dg[j] = g[j] * u[j] * s * (1.0 + x[j] * (1.0 - s));
                    }
                }),
                Gate::Gelu { .. } => tasks.for_each_init(
                    || vec![0.0f32; chunk],
                    |scratch, (c, (dg, du))| {
                        let (x, u, g) = inputs(c, dg.len());
                        // s = σ(2z); gelu = x·s; gelu' = s + x·s(1 − s)·2·dz/dx.
                        gelu_sigmoid(x, dg, scratch);
                        for j in 0..dg.len() {
                            let (s, v) = (dg[j], x[j]);
                            let dz = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_A * v * v);
                            du[j] = g[j] * v * s;
                            dg[j] = g[j] * u[j] * (s + 2.0 * v * s * (1.0 - s) * dz);
                        }
                    },
                ),
            }
        })?;
        let shape = gate_t.shape().clone();
        Ok((Some(tensor(dgate, shape.clone())?), Some(tensor(dup, shape)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, rand};
    use super::*;

    #[test]
    fn swiglu_matches_its_definition() {
        check(
            &[rand(4, &[33, 21], 3.0), rand(5, &[33, 21], 1.0)],
            |x| swiglu(&x[0], &x[1]).unwrap(),
            |x| (x[0].silu().unwrap() * &x[1]).unwrap(),
            "swiglu",
        );
    }

    /// The reference from candle ops: GELU's tanh form written out, so autograd
    /// differentiates the definition.
    fn gelu_reference(x: &Tensor) -> Tensor {
        let inner = ((x.sqr().unwrap() * f64::from(GELU_A)).unwrap() + 1.0).unwrap().mul(x).unwrap();
        let t = (inner * f64::from(SQRT_2_OVER_PI)).unwrap().tanh().unwrap();
        ((t + 1.0).unwrap() * 0.5).unwrap().mul(x).unwrap()
    }

    #[test]
    fn geglu_matches_its_definition() {
        // Odd sizes and large gates: both tails of GELU, chunks of uneven length.
        check(
            &[rand(6, &[37, 23], 4.0), rand(7, &[37, 23], 1.0)],
            |x| geglu(&x[0], &x[1], false).unwrap(),
            |x| (gelu_reference(&x[0]) * &x[1]).unwrap(),
            "geglu",
        );
    }

    #[test]
    fn geglu_with_the_ggml_table_is_kiln_inference() {
        let (g, u) = (rand(8, &[5, 40], 3.0), rand(9, &[5, 40], 1.0));
        let ours = geglu(&g, &u, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut theirs = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        kiln_model::math::geglu(&mut theirs, &u.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(ours, theirs);
    }
}
