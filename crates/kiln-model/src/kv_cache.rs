//! The key/value cache: per layer, one f16 row of `n_kv_heads·head_dim` keys and one of values
//! per position, allocated once for the whole context (f16 as llama.cpp stores them by default).

use half::f16;

/// Keys and values of every position seen so far, for every layer.
pub struct KvCache {
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
    kv_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    /// Room for `capacity` positions of `n_layers` layers.
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> KvCache {
        KvCache {
            keys: (0..n_layers).map(|_| vec![f16::ZERO; capacity * kv_dim]).collect(),
            values: (0..n_layers).map(|_| vec![f16::ZERO; capacity * kv_dim]).collect(),
            kv_dim,
            capacity,
            len: 0,
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything after the first `len` positions (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes this cache hold the first `len` positions of `other` (same shape), so several
    /// continuations can each start from one computed prefix.
    pub fn copy_prefix_from(&mut self, other: &KvCache, len: usize) {
        assert!(
            len <= other.len
                && len <= self.capacity
                && self.kv_dim == other.kv_dim
                && self.keys.len() == other.keys.len()
        );
        let n = len * self.kv_dim;
        for (dst, src) in self.keys.iter_mut().zip(&other.keys) {
            dst[..n].copy_from_slice(&src[..n]);
        }
        for (dst, src) in self.values.iter_mut().zip(&other.values) {
            dst[..n].copy_from_slice(&src[..n]);
        }
        self.len = len;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Stores keys and values (`n·kv_dim` each) for positions `pos..pos+n` of `layer`.
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let start = pos * self.kv_dim;
        for (dst, &x) in self.keys[layer][start..start + k.len()].iter_mut().zip(k) {
            *dst = f16::from_f32(x);
        }
        for (dst, &x) in self.values[layer][start..start + v.len()].iter_mut().zip(v) {
            *dst = f16::from_f32(x);
        }
    }

    /// Marks positions up to `len` as filled, once every layer has stored them.
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// All cached keys and values of `layer`, `kv_dim` per position.
    pub(crate) fn layer(&self, layer: usize) -> (&[f16], &[f16]) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        2 * self.keys.len() * self.capacity * self.kv_dim * 2
    }
}
