//! Accuracy and its uncertainty.
//!
//! Intervals are Wilson score intervals at 95 % (z = 1.95996…), the interval llama-perplexity
//! prints for HellaSwag: unlike the normal (Wald) interval it stays inside [0, 1] and keeps
//! its coverage for small counts and accuracies near 0 or 1.

use serde::{Deserialize, Serialize};

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_54;

/// A count of successes out of trials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proportion {
    /// Successes.
    pub hits: usize,
    /// Trials.
    pub total: usize,
}

impl Proportion {
    /// Records one trial and appends it to `log` as `1` or `0`.
    pub fn add_logged(&mut self, hit: bool, log: &mut String) {
        self.add(hit);
        log.push(if hit { '1' } else { '0' });
    }

    /// Records one trial.
    pub fn add(&mut self, hit: bool) {
        self.hits += hit as usize;
        self.total += 1;
    }

    /// The fraction of hits (0 when there were no trials).
    pub fn value(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.hits as f64 / self.total as f64
        }
    }

    /// The Wilson score interval at 95 %, as (low, high); (0, 1) with no trials.
    pub fn wilson95(&self) -> (f64, f64) {
        wilson(self.hits, self.total, Z95)
    }
}

/// The Wilson score interval for `hits` of `n` at normal quantile `z`.
pub fn wilson(hits: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = hits as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama-perplexity's form of the same interval (perplexity.cpp, hellaswag_score).
    fn llama_cpp_wilson(acc: usize, n: usize) -> (f64, f64) {
        let za = Z95;
        let n = n as f64;
        let freq = acc as f64 / n;
        let z = za * za / n;
        let cnf = z * (n * (4.0 * freq * (1.0 - freq) + z)).sqrt() / (za + za);
        ((freq + z * 0.5 - cnf) / (1.0 + z), (freq + z * 0.5 + cnf) / (1.0 + z))
    }

    #[test]
    fn wilson_matches_llama_cpp_form() {
        for (h, n) in [(0, 10), (3, 10), (10, 10), (163, 400), (1, 1), (5000, 10042)] {
            let (a, b) = wilson(h, n, Z95);
            let (c, d) = llama_cpp_wilson(h, n);
            assert!((a - c.max(0.0)).abs() < 1e-12 && (b - d.min(1.0)).abs() < 1e-12, "{h}/{n}: {a} {b} vs {c} {d}");
        }
    }

    #[test]
    fn wilson_known_value_and_bounds() {
        // 40 of 100: the textbook Wilson interval is [0.3094, 0.4980].
        let (lo, hi) = wilson(40, 100, Z95);
        assert!((lo - 0.3094).abs() < 5e-4 && (hi - 0.4980).abs() < 5e-4, "{lo} {hi}");
        let (lo, hi) = wilson(0, 20, Z95);
        assert!(lo.abs() < 1e-12, "{lo}");
        assert!(hi > 0.1 && hi < 0.2, "{hi}");
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
    }

    #[test]
    fn proportion_counts() {
        let mut p = Proportion::default();
        for i in 0..10 {
            p.add(i % 4 == 0);
        }
        assert_eq!((p.hits, p.total), (3, 10));
        assert!((p.value() - 0.3).abs() < 1e-12);
    }
}
