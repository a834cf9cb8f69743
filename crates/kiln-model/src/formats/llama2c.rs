//! Karpathy's llama2.c checkpoints (`run.c`, `export.py` in github.com/karpathy/llama2.c).
//!
//! Version 0 ("legacy"): seven little-endian i32 — dim, hidden_dim, n_layers, n_heads,
//! n_kv_heads, vocab_size (negative: the classifier is not shared with the embedding), seq_len —
//! then f32 arrays: token_embedding `[vocab, dim]`, rms_att `[L, dim]`, wq `[L, dim, dim]`,
//! wk `[L, kv_dim, dim]`, wv `[L, kv_dim, dim]`, wo `[L, dim, dim]`, rms_ffn `[L, dim]`,
//! w1 `[L, hidden, dim]`, w2 `[L, dim, hidden]`, w3 `[L, hidden, dim]`, rms_final `[dim]`,
//! freq_cis_real and freq_cis_imag `[seq_len, head_size/2]` (skipped: kiln computes RoPE),
//! then wcls `[vocab, dim]` if unshared.
//!
//! Versions 1 and 2 start with a 256-byte header: magic `0x616b3432` ("ak42"), version, the
//! seven ints, a shared-classifier byte (and for v2 an i32 group size). v1 then holds f32
//! arrays: rms_att, rms_ffn, rms_final, token_embedding, wq, wk, wv, wo, w1, w2, w3, [wcls].
//! v2 keeps the norms in f32 and stores the rest as int8 groups with one f32 scale per group
//! (all int8 arrays first, then all scales); kiln widens those to f32 on load.
//!
//! llama2.c rotates adjacent pairs (like GGUF llama, whose Q/K are in the same order), with
//! θ = 10000, RMSNorm ε = 1e-5 and SwiGLU: w1 is the gate, w3 the up and w2 the down projection.

use super::map_file;
use crate::config::{Family, ModelConfig, RopeStyle};
use crate::loader::{load_weights, RawTensor, TensorSource};
use crate::weights::Backing;
use crate::{GgmlType, Model, ModelError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// `"ak42"` read as a little-endian u32.
const MAGIC: u32 = 0x616b_3432;
/// Bytes of the v1/v2 header.
const HEADER_V1: usize = 256;
/// Bytes of the legacy header.
const HEADER_V0: usize = 7 * 4;
/// Largest dimension accepted from a header (guards the size arithmetic against nonsense).
const MAX_DIM: usize = 1 << 24;

/// The checkpoint's header, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    version: u32,
    dim: usize,
    hidden_dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    vocab_size: usize,
    seq_len: usize,
    shared_classifier: bool,
    /// Weights per int8 group (v2 only).
    group_size: usize,
    /// Where the tensors start.
    data_start: usize,
}

impl Header {
    fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }
}

fn err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Format(format!("{}: {msg}", path.display()))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse_header(b: &[u8], path: &Path) -> Result<Header, ModelError> {
    let short = || err(path, format!("{} bytes is too short for a llama2.c checkpoint header", b.len()));
    let versioned = b.len() >= 4 && u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == MAGIC;
    let (version, ints_at, data_start) = if versioned {
        let v = i32_at(b, 4).ok_or_else(short)?;
        if v != 1 && v != 2 {
            return Err(err(
                path,
                format!("llama2.c checkpoint version {v} is not supported (kiln reads versions 0, 1 and 2)"),
            ));
        }
        (v as u32, 8, HEADER_V1)
    } else {
        (0, 0, HEADER_V0)
    };
    if b.len() < data_start {
        return Err(short());
    }
    let ints: Vec<i32> = (0..7).map(|i| i32_at(b, ints_at + 4 * i).expect("length checked")).collect();
    let raw_vocab = ints[5];
    let (shared_classifier, group_size) = if versioned {
        let gs = if version == 2 { i32_at(b, 37).expect("length checked") } else { 0 };
        (b[36] != 0, gs)
    } else {
        (raw_vocab > 0, 0)
    };
    let names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
    let mut v = [0usize; 7];
    for (i, (&x, name)) in ints.iter().zip(names).enumerate() {
        let x = if i == 5 && !versioned { x.unsigned_abs() as usize } else { usize::try_from(x).unwrap_or(0) };
        if x == 0 || x > MAX_DIM {
            return Err(err(
                path,
                format!("header field {name} = {} is impossible; not a llama2.c checkpoint?", ints[i]),
            ));
        }
        v[i] = x;
    }
    let h = Header {
        version,
        dim: v[0],
        hidden_dim: v[1],
        n_layers: v[2],
        n_heads: v[3],
        n_kv_heads: v[4],
        vocab_size: v[5],
        seq_len: v[6],
        shared_classifier,
        group_size: usize::try_from(group_size).unwrap_or(0),
        data_start,
    };
    if h.head_size() * h.n_heads != h.dim {
        return Err(err(path, format!("dim {} does not split into {} heads", h.dim, h.n_heads)));
    }
    // Head counts, head width and the rest, as for any model.
    config(&h).validate().map_err(|e| err(path, e))?;
    if version == 2 && h.group_size == 0 {
        return Err(err(path, format!("version 2 group size {group_size} is impossible")));
    }
    Ok(h)
}

/// One array of the file, in file order.
struct Slot {
    /// GGUF name, or `None` for arrays kiln skips (freq_cis).
    name: Option<String>,
    /// ggml-order dims (row length first).
    dims: Vec<usize>,
    /// Stored as int8 groups (v2).
    quantized: bool,
}

impl Slot {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// The arrays of a checkpoint in file order (call after [`Sizes`] has checked the file).
fn layout(h: &Header) -> Vec<Slot> {
    let (d, f, kv, v) = (h.dim, h.hidden_dim, h.kv_dim(), h.vocab_size);
    let per_layer = |name: &str, dims: Vec<usize>, quantized: bool| -> Vec<Slot> {
        (0..h.n_layers).map(|l| Slot { name: Some(format!("blk.{l}.{name}")), dims: dims.clone(), quantized }).collect()
    };
    let one = |name: &str, dims: Vec<usize>, quantized: bool| vec![Slot { name: Some(name.into()), dims, quantized }];
    let q = h.version == 2;
    let matrices = |slots: &mut Vec<Slot>| {
        slots.extend(per_layer("attn_q.weight", vec![d, d], q));
        slots.extend(per_layer("attn_k.weight", vec![d, kv], q));
        slots.extend(per_layer("attn_v.weight", vec![d, kv], q));
        slots.extend(per_layer("attn_output.weight", vec![d, d], q));
    };
    let ffn = |slots: &mut Vec<Slot>| {
        slots.extend(per_layer("ffn_gate.weight", vec![d, f], q));
        slots.extend(per_layer("ffn_down.weight", vec![f, d], q));
        slots.extend(per_layer("ffn_up.weight", vec![d, f], q));
    };
    let mut slots = Vec::new();
    if h.version == 0 {
        slots.extend(one("token_embd.weight", vec![d, v], false));
        slots.extend(per_layer("attn_norm.weight", vec![d], false));
        matrices(&mut slots);
        slots.extend(per_layer("ffn_norm.weight", vec![d], false));
        ffn(&mut slots);
        slots.extend(one("output_norm.weight", vec![d], false));
        for _ in ["freq_cis_real", "freq_cis_imag"] {
            slots.push(Slot { name: None, dims: vec![h.head_size() / 2, h.seq_len], quantized: false });
        }
    } else {
        slots.extend(per_layer("attn_norm.weight", vec![d], false));
        slots.extend(per_layer("ffn_norm.weight", vec![d], false));
        slots.extend(one("output_norm.weight", vec![d], false));
        slots.extend(one("token_embd.weight", vec![d, v], q));
        matrices(&mut slots);
        ffn(&mut slots);
    }
    if !h.shared_classifier {
        slots.extend(one("output.weight", vec![d, v], q));
    }
    slots
}

/// Tensors of a llama2.c checkpoint under their GGUF names.
pub struct Llama2cSource {
    backing: Arc<Backing>,
    tensors: HashMap<String, (Vec<usize>, usize)>,
}

impl TensorSource for Llama2cSource {
    fn tensor(&self, name: &str) -> Result<Option<RawTensor>, ModelError> {
        Ok(self.tensors.get(name).map(|(dims, offset)| RawTensor {
            ty: GgmlType::F32,
            dims: dims.clone(),
            backing: self.backing.clone(),
            offset: *offset,
        }))
    }
}

/// Index f32 slots laid out back to back from `start`.
fn index_f32(slots: &[Slot], start: usize) -> HashMap<String, (Vec<usize>, usize)> {
    let mut at = start;
    let mut tensors = HashMap::new();
    for s in slots {
        if let Some(name) = &s.name {
            tensors.insert(name.clone(), (s.dims.clone(), at));
        }
        at += 4 * s.numel();
    }
    tensors
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Counts of f32 values (norms, and matrices unless v2), int8 values (v2 matrices) and skipped
/// f32 values (freq_cis), computed with checked arithmetic: the header may be nonsense.
struct Sizes {
    norms: usize,
    matrices: usize,
    skipped: usize,
}

impl Sizes {
    fn of(h: &Header) -> Option<Sizes> {
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let (d, f, kv, v, l) = (h.dim, h.hidden_dim, h.kv_dim(), h.vocab_size, h.n_layers);
        let per_layer = mul(2, mul(d, d)?)?.checked_add(mul(2, mul(kv, d)?)?)?.checked_add(mul(3, mul(f, d)?)?)?;
        let classifiers = if h.shared_classifier { 1 } else { 2 };
        let matrices = mul(l, per_layer)?.checked_add(mul(classifiers, mul(v, d)?)?)?;
        let norms = mul(mul(2, l)?.checked_add(1)?, d)?;
        let skipped = if h.version == 0 { mul(h.seq_len, h.head_size())? } else { 0 };
        Some(Sizes { norms, matrices, skipped })
    }

    /// Bytes of the whole file.
    fn file_bytes(&self, h: &Header) -> Option<usize> {
        let f32s = |n: usize| n.checked_mul(4);
        let body = if h.version == 2 {
            f32s(self.norms)?.checked_add(self.matrices)?.checked_add(f32s(self.matrices / h.group_size)?)?
        } else {
            f32s(self.norms.checked_add(self.matrices)?.checked_add(self.skipped)?)?
        };
        body.checked_add(h.data_start)
    }
}

/// v2: widens the int8 groups to f32, giving the v1 layout (without header) in memory.
/// `data` has been checked to hold exactly the arrays `slots` describes.
fn widen_v2(h: &Header, slots: &[Slot], data: &[u8], path: &Path) -> Result<Vec<u8>, ModelError> {
    let gs = h.group_size;
    if let Some(s) = slots.iter().find(|s| s.quantized && s.numel() % gs != 0) {
        let name = s.name.as_deref().unwrap_or("?");
        return Err(err(path, format!("{name} has {} weights, not a multiple of the group size {gs}", s.numel())));
    }
    let norms: usize = slots.iter().filter(|s| !s.quantized).map(|s| 4 * s.numel()).sum();
    let quants: usize = slots.iter().filter(|s| s.quantized).map(Slot::numel).sum();
    let mut out = Vec::with_capacity(norms + 4 * quants);
    out.extend_from_slice(&data[..norms]);
    let (mut q_at, mut s_at) = (norms, norms + quants);
    for s in slots.iter().filter(|s| s.quantized) {
        let n = s.numel();
        let scales = f32s(&data[s_at..s_at + 4 * (n / gs)]);
        for (group, scale) in data[q_at..q_at + n].chunks_exact(gs).zip(scales) {
            out.extend(group.iter().flat_map(|&q| ((q as i8) as f32 * scale).to_le_bytes()));
        }
        q_at += n;
        s_at += 4 * (n / gs);
    }
    Ok(out)
}

fn size_error(path: &Path, needed: usize, found: usize) -> ModelError {
    if found < needed {
        err(path, format!("truncated: the header implies {needed} bytes but the file has {found}"))
    } else {
        err(path, format!("the header implies {needed} bytes but the file has {found}; not a llama2.c checkpoint?"))
    }
}

/// The model configuration a llama2.c header implies.
fn config(h: &Header) -> ModelConfig {
    let head_dim = h.head_size();
    ModelConfig {
        vocab_size: h.vocab_size,
        dim: h.dim,
        n_layers: h.n_layers,
        n_heads: h.n_heads,
        n_kv_heads: h.n_kv_heads,
        head_dim,
        ffn_dim: h.hidden_dim,
        context_length: h.seq_len,
        rope_dim: head_dim,
        rope_style: RopeStyle::Interleaved,
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        ..ModelConfig::for_family(Family::Llama)
    }
}

/// Loads a llama2.c `.bin` checkpoint (versions 0, 1 and 2).
pub fn load_llama2c(path: &Path) -> Result<Model, ModelError> {
    let map = map_file(path)?;
    let h = parse_header(&map, path)?;
    let cfg = config(&h);
    let needed = Sizes::of(&h).and_then(|s| s.file_bytes(&h));
    let Some(needed) = needed else {
        return Err(err(path, "the header's sizes overflow; not a llama2.c checkpoint?"));
    };
    if map.len() != needed {
        return Err(size_error(path, needed, map.len()));
    }
    let slots = layout(&h);
    let src = if h.version == 2 {
        let bytes = widen_v2(&h, &slots, &map[h.data_start..], path)?;
        Llama2cSource { tensors: index_f32(&slots, 0), backing: Arc::new(Backing::Owned(bytes)) }
    } else {
        Llama2cSource { tensors: index_f32(&slots, h.data_start), backing: Arc::new(Backing::Mapped(map)) }
    };
    let weights = load_weights(&cfg, &src)?;
    Ok(Model { config: cfg, weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_v0(ints: [i32; 7]) -> Vec<u8> {
        ints.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn legacy_header_and_sign_of_vocab() {
        let p = Path::new("x.bin");
        let h = parse_header(&header_v0([64, 96, 2, 4, 2, -300, 64]), p).unwrap();
        assert_eq!((h.version, h.dim, h.vocab_size, h.shared_classifier, h.kv_dim()), (0, 64, 300, false, 32));
        let h = parse_header(&header_v0([64, 96, 2, 4, 2, 300, 64]), p).unwrap();
        assert!(h.shared_classifier);
    }

    #[test]
    fn impossible_headers_are_errors() {
        let p = Path::new("x.bin");
        for ints in [
            [0, 96, 2, 4, 2, 300, 64],
            [64, 96, 2, 3, 3, 300, 64],
            [64, 96, 2, 4, 3, 300, 64],
            [64, -1, 2, 4, 2, 300, 64],
            [i32::MAX; 7],
        ] {
            assert!(parse_header(&header_v0(ints), p).is_err(), "{ints:?}");
        }
        assert!(parse_header(&[1, 2, 3], p).is_err());
        let huge =
            parse_header(&header_v0([1 << 24, 1 << 24, 1 << 24, 1 << 23, 1 << 23, 1 << 24, 1 << 24]), p).unwrap();
        assert!(Sizes::of(&huge).and_then(|s| s.file_bytes(&huge)).is_none());
        let mut v3 = MAGIC.to_le_bytes().to_vec();
        v3.extend(3i32.to_le_bytes());
        v3.resize(HEADER_V1, 0);
        assert!(parse_header(&v3, p).unwrap_err().to_string().contains("version 3"));
    }

    #[test]
    fn layout_sizes_match_run_c() {
        let p = Path::new("x.bin");
        let h = parse_header(&header_v0([64, 96, 2, 4, 2, -300, 64]), p).unwrap();
        let n: usize = layout(&h).iter().map(Slot::numel).sum();
        let (d, f, kv, v, l, hs, s) = (64, 96, 32, 300, 2, 16, 64);
        let expected = v * d + l * d + l * (d * d + 2 * kv * d + d * d) + l * d + l * 3 * f * d + d + s * hs + v * d;
        assert_eq!(n, expected);
        assert_eq!(Sizes::of(&h).unwrap().file_bytes(&h), Some(HEADER_V0 + 4 * expected));
    }
}
