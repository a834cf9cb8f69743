//! Learning-rate schedule: linear warm-up to the peak, then cosine or linear decay to a floor.

use serde::{Deserialize, Serialize};

/// The shape of the decay after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half a cosine from the peak to the floor (Loshchilov & Hutter 2017).
    Cosine,
    /// A straight line from the peak to the floor.
    Linear,
    /// Stay at the peak.
    Constant,
}

/// The learning rate for optimizer step `step` (0-based) of `steps`: `peak·(step+1)/warmup`
/// during warm-up, then decaying to `peak·min_frac` at the last step.
pub fn lr_at(step: usize, steps: usize, warmup: usize, peak: f64, min_frac: f64, decay: Decay) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = steps.saturating_sub(warmup + 1).max(1);
    let p = ((step - warmup) as f64 / span as f64).min(1.0);
    let floor = peak * min_frac;
    match decay {
        Decay::Cosine => floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        Decay::Linear => peak - (peak - floor) * p,
        Decay::Constant => peak,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_to_floor() {
        let lr = |s, d| lr_at(s, 100, 10, 1.0, 0.1, d);
        assert!((lr(0, Decay::Cosine) - 0.1).abs() < 1e-12);
        assert!((lr(9, Decay::Cosine) - 1.0).abs() < 1e-12);
        assert!((lr(10, Decay::Cosine) - 1.0).abs() < 1e-12);
        assert!((lr(99, Decay::Cosine) - 0.1).abs() < 1e-12);
        assert!((lr(99, Decay::Linear) - 0.1).abs() < 1e-12);
        assert!(lr(50, Decay::Cosine) < 1.0 && lr(50, Decay::Cosine) > 0.1);
        assert_eq!(lr(70, Decay::Constant), 1.0);
        let xs: Vec<f64> = (10..100).map(|s| lr(s, Decay::Cosine)).collect();
        assert!(xs.windows(2).all(|w| w[1] <= w[0]), "monotone after warm-up");
    }
}
