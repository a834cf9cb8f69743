//! The element-wise and reduction operations of the forward pass, in f32, written to give
//! the same numbers as ggml's CPU backend (accumulation order and precision included), so
//! that greedy outputs match llama.cpp token for token.

mod matmul;
pub use matmul::{matmul, matmul_prepared, matmul_prepared_fused, prepare_activations, same_activations};

/// `out = x / rms(x) * weight`, for each row of `x` (`weight.len()` wide).
/// ggml sums the squares in f64 and multiplies by the weight in a separate step.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = (v * scale) * w;
        }
    }
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, &w) in xr.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

/// Cosines and sines of RoPE for one position: `cos[i], sin[i]` rotate pair `i`.
/// θ_i = pos · base^(−2i/n) is built by repeated multiplication in f32, as ggml does.
pub fn rope_angles(
    pos: usize,
    base: f32,
    rope_dim: usize,
    freq_divisors: Option<&[f32]>,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let theta_scale = base.powf(-2.0 / rope_dim as f32);
    let mut theta = pos as f32;
    for i in 0..rope_dim / 2 {
        let t = match freq_divisors {
            Some(f) => theta / f[i],
            None => theta,
        };
        cos[i] = t.cos();
        sin[i] = t.sin();
        theta *= theta_scale;
    }
}

/// Rotates every head of `x` (`head_dim` wide) by the angles of one position.
pub fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = cos.len();
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

pub use crate::math::{geglu, swiglu};

/// Adds `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 2.0, 0.5, 1.0];
        let mut out = [0.0; 4];
        rms_norm(&x, &w, 1e-6, &mut out);
        let rms = ((1.0 + 4.0 + 9.0 + 0.25) / 4.0f32 + 1e-6).sqrt();
        for i in 0..4 {
            assert!((out[i] - x[i] / rms * w[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_is_a_rotation_and_position_zero_is_identity() {
        let mut cos = [0.0; 4];
        let mut sin = [0.0; 4];
        rope_angles(0, 10000.0, 8, None, &mut cos, &mut sin);
        let orig: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let mut x = orig.clone();
        rope(&mut x, 8, &cos, &sin, true);
        assert_eq!(x, orig);
        rope_angles(17, 10000.0, 8, None, &mut cos, &mut sin);
        for interleaved in [true, false] {
            let mut x = orig.clone();
            rope(&mut x, 8, &cos, &sin, interleaved);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
            assert_ne!(x, orig);
        }
    }

    #[test]
    fn geglu_table_is_close_to_exact_gelu() {
        for i in -300..300 {
            let x = i as f32 * 0.03;
            let mut g = [x];
            geglu(&mut g, &[1.0]);
            assert!((g[0] - crate::math::gelu_tanh(x)).abs() < 1e-2 * (1.0 + x.abs()), "{x}");
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, -1000.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }
}
