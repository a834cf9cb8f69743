//! Helpers shared by kiln-model's integration tests: a seeded generator, so every run writes
//! the same random models, and logit comparison.
#![allow(dead_code)]

use kiln_model::Model;

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    /// The generator for input `i` of a run with base seed `seed`.
    pub fn for_input(seed: u64, i: u64) -> Rng {
        let mut r = Rng(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Logits of every position of `tokens`, from a fresh state.
pub fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut state = model.new_state(tokens.len());
    model.forward(&mut state, tokens, true).unwrap().to_vec()
}

/// max |a − b| / max |b|.
pub fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0 && scale.is_finite(), "degenerate logits");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}
