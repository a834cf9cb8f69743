//! Choosing items as llama-perplexity chooses HellaSwag tasks: a 32-bit Mersenne Twister
//! (`std::mt19937`) and libstdc++'s `uniform_int_distribution` (Lemire's multiply-shift with
//! rejection), each pick removed from the pool. Same seed, same items as llama.cpp.

/// `std::mt19937`.
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    /// Seeded as `std::mt19937 rng(seed)`.
    pub fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32.wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `0..n` (n ≤ 2³²) as libstdc++ draws it from a 32-bit engine.
    pub fn below(&mut self, n: u32) -> u32 {
        let mut product = self.next_u32() as u64 * n as u64;
        let mut low = product as u32;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                product = self.next_u32() as u64 * n as u64;
                low = product as u32;
            }
        }
        (product >> 32) as u32
    }
}

/// Indices of `count` items drawn without replacement from `n`, in llama-perplexity's order
/// (`count` ≥ `n` still shuffles, as llama.cpp does with all tasks).
pub fn pick(n: usize, count: usize, seed: u32) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    let mut rng = Mt19937::new(seed);
    let mut out = Vec::with_capacity(count.min(n));
    for _ in 0..count.min(n) {
        // As llama.cpp: `uniform_int_distribution(0, remaining - 1)`, then erase the pick.
        let i = rng.below(pool.len() as u32) as usize;
        out.push(pool.remove(i));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_output() {
        // The C++ standard requires the 10000th output of a default-seeded mt19937 (5489).
        let mut r = Mt19937::new(5489);
        for _ in 0..9999 {
            r.next_u32();
        }
        assert_eq!(r.next_u32(), 4_123_659_995);
    }

    #[test]
    fn pick_is_a_permutation_prefix_and_deterministic() {
        let a = pick(100, 30, 1);
        assert_eq!(a, pick(100, 30, 1));
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 30);
        assert!(a.iter().all(|&i| i < 100));
        assert_ne!(a, pick(100, 30, 2));
        assert_eq!(pick(5, 10, 1).len(), 5);
    }

    #[test]
    fn pick_matches_libstdcpp() {
        // Printed by scripts/hellaswag-pick.cpp (g++ 12, libstdc++): the first HellaSwag tasks
        // llama-perplexity --hellaswag selects from the 10,042 of the full validation file.
        assert_eq!(pick(10042, 12, 1), [4187, 10013, 7233, 9363, 1, 1286, 3036, 10032, 1474, 2371, 927, 3984]);
    }
}
