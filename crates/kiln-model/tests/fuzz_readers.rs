//! Fuzzing the parameters-file readers: seeded random mutations of real files must give `Ok` or
//! `Err` from every reader, never a panic, and a model that loads must run a forward pass.
//!
//! Seeds (each built once per test):
//! - GGUF: a tiny llama and a tiny gemma3 written with kiln_gguf's writer, carrying the real
//!   SmolLM2 / Gemma 3 files' metadata (hyper-parameters shrunk, vocabulary cut to 64 tokens) and
//!   their tensor names and types; plus the real SmolLM2 header (~2 MB: 49152 tokens, 48900
//!   merges) over a truncated data section. Without the models, synthetic metadata stands in.
//! - Hugging Face: config.json + model.safetensors (llama, F32/F16/BF16) and a gemma3_text
//!   directory split into two shards with model.safetensors.index.json.
//! - llama2.c: v0 and v1 checkpoints.
//!
//! Mutations, one to three stacked: bit flips, interesting bytes, structure-aware number
//! fields (GGUF string/array lengths, counts, value types, dims, offsets; llama2.c header ints;
//! numbers and strings inside JSON) set to huge, zero, negative or off-by-one values,
//! truncation, splices from other seeds, insertions and deletions.
//!
//! `KILN_FUZZ_ITERS` sets the inputs per test (default: a few seconds in CI),
//! `KILN_FUZZ_SEED` the base seed (input `i` depends only on the seed and `i`, so a crash
//! replays from the two numbers printed), `KILN_FUZZ_KEEP_GOING=1` collects every crash
//! instead of stopping at the first. Crashing inputs are saved under the cargo target tmp dir.

use kiln_gguf::{GgmlType, GgufFile, GgufWriter, TensorData, Value};
use kiln_model::formats::{names, open_model};
use kiln_model::{quant, Family, Model};
use kiln_test_models::{TestModel, GEMMA3, SMOLLM2};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
mod common;
use common::Rng;

/// Inputs per test when `KILN_FUZZ_ITERS` is unset: under 2 s per test in release on 2 cores
/// (measured: 5000 GGUF inputs 1.0 s, 5000 Hugging Face dirs 1.8 s, 5000 llama2.c files 1.2 s).
const DEFAULT_GGUF_ITERS: usize = 8000;
/// See [`DEFAULT_GGUF_ITERS`]; a Hugging Face input costs a few small file writes.
const DEFAULT_HF_ITERS: usize = 4000;
/// See [`DEFAULT_GGUF_ITERS`].
const DEFAULT_LLAMA2C_ITERS: usize = 6000;
/// One input in this many uses the real 2 MB SmolLM2 header (slow to parse: ~100k strings).
const REAL_HEADER_EVERY: usize = 32;
/// An input that takes longer than this is a finding too: a file that makes a reader allocate
/// or loop in proportion to a number it claims (inputs normally take well under 10 ms).
const SLOW_INPUT: Duration = Duration::from_secs(5);
/// Base seed when `KILN_FUZZ_SEED` is unset (CI runs the same inputs every time).
const DEFAULT_SEED: u64 = 0x6b69_6c6e_f022;

// ---- settings and randomness ---------------------------------------------------------------

fn env_number(key: &str) -> Option<u64> {
    let v = std::env::var(key).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{key}={v:?} is not a number")))
}

fn iters(default: usize) -> usize {
    env_number("KILN_FUZZ_ITERS").map_or(default, |n| n as usize)
}

fn base_seed() -> u64 {
    env_number("KILN_FUZZ_SEED").unwrap_or(DEFAULT_SEED)
}

fn keep_going() -> bool {
    std::env::var("KILN_FUZZ_KEEP_GOING").is_ok_and(|v| v == "1")
}

// ---- mutations -----------------------------------------------------------------------------

/// A little-endian number field in a binary seed whose value the reader trusts for structure.
#[derive(Clone, Copy, Debug)]
enum Field {
    U32(usize),
    U64(usize),
    I32(usize),
}

fn interesting_u64(rng: &mut Rng, old: u64, len: usize) -> u64 {
    let len = len as u64;
    match rng.below(12) {
        0 => u64::MAX,
        1 => u64::MAX / 2 + 1,
        2 => i64::MAX as u64,
        3 => 1 << 32,
        4 => 1 << 40,
        5 => 0,
        6 => len,
        7 => len + 1,
        8 => old.wrapping_add(1),
        9 => old.wrapping_sub(1),
        10 => old.wrapping_mul(2).wrapping_add(rng.below(8) as u64),
        _ => rng.next_u64() >> rng.below(64),
    }
}

fn interesting_u32(rng: &mut Rng, old: u32) -> u32 {
    match rng.below(10) {
        0 => u32::MAX,
        1 => 0,
        2 => 1,
        // GGUF value types: string, array, one past the last, ggml type ids past the table.
        3 => rng.pick(&[8, 9, 13, 39, 40]),
        4 => old.wrapping_add(1),
        5 => old.wrapping_sub(1),
        6 => 1 << 31,
        7 => old.wrapping_mul(2),
        _ => rng.next_u64() as u32 >> rng.below(32),
    }
}

fn interesting_i32(rng: &mut Rng, old: i32) -> i32 {
    match rng.below(10) {
        0 => i32::MAX,
        1 => i32::MIN,
        2 => 0,
        3 => -1,
        4 => 1 << 24,
        5 => old.wrapping_neg(),
        6 => old.wrapping_add(1),
        7 => old.wrapping_sub(1),
        8 => old.wrapping_mul(2),
        _ => rng.next_u64() as i32 >> rng.below(32),
    }
}

fn set_field(bytes: &mut [u8], field: Field, rng: &mut Rng) {
    let len = bytes.len();
    let at = |p: usize, n: usize| p + n <= len;
    match field {
        Field::U64(p) if at(p, 8) => {
            let old = u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
            bytes[p..p + 8].copy_from_slice(&interesting_u64(rng, old, len).to_le_bytes());
        }
        Field::U32(p) if at(p, 4) => {
            let old = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
            bytes[p..p + 4].copy_from_slice(&interesting_u32(rng, old).to_le_bytes());
        }
        Field::I32(p) if at(p, 4) => {
            let old = i32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
            bytes[p..p + 4].copy_from_slice(&interesting_i32(rng, old).to_le_bytes());
        }
        _ => {}
    }
}

/// Where mutations of a binary seed concentrate: `header` bytes at the front (the rest is
/// tensor data, which readers do not interpret), and the seed's number fields.
struct Target<'a> {
    header: usize,
    fields: &'a [Field],
    donors: &'a [&'a [u8]],
}

/// Applies one random mutation (half the time), two or three.
fn mutate(bytes: &mut Vec<u8>, t: &Target, rng: &mut Rng) {
    let n = [1, 1, 2, 3][rng.below(4)];
    for _ in 0..n {
        let len = bytes.len();
        if len == 0 {
            bytes.push(rng.next_u64() as u8);
            continue;
        }
        // Mostly the header, sometimes anywhere.
        let span = if rng.below(4) == 0 { len } else { t.header.clamp(1, len) };
        match rng.below(8) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let p = rng.below(span);
                    bytes[p] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let p = rng.below(span);
                bytes[p] = rng.pick(&[0x00, 0xff, 0x7f, 0x80, 0x01, b'"', b'0', b'9']);
            }
            2 | 3 if !t.fields.is_empty() => {
                for _ in 0..1 + rng.below(2) {
                    let f = t.fields[rng.below(t.fields.len())];
                    set_field(bytes, f, rng);
                }
            }
            4 => {
                // Truncate: near the header's end or anywhere.
                let cut = if rng.below(2) == 0 { rng.below(span + 1) } else { rng.below(len + 1) };
                bytes.truncate(cut);
            }
            5 if !t.donors.is_empty() => {
                // Splice a chunk of another seed (or this one) over this input.
                let donor = t.donors[rng.below(t.donors.len())];
                if donor.is_empty() {
                    continue;
                }
                let from = rng.below(donor.len());
                let n = (1 + rng.below(64)).min(donor.len() - from);
                let to = rng.below(span);
                let n = n.min(len - to);
                bytes[to..to + n].copy_from_slice(&donor[from..from + n]);
            }
            6 => {
                // Insert a copy of a chunk of itself, or random bytes.
                let to = rng.below(span + 1);
                let chunk: Vec<u8> = if rng.below(2) == 0 {
                    let from = rng.below(len);
                    bytes[from..(from + 1 + rng.below(32)).min(len)].to_vec()
                } else {
                    (0..1 + rng.below(16)).map(|_| rng.next_u64() as u8).collect()
                };
                bytes.splice(to..to, chunk);
            }
            _ => {
                let from = rng.below(span);
                let to = (from + 1 + rng.below(32)).min(len);
                bytes.drain(from..to);
            }
        }
    }
}

// ---- running inputs ------------------------------------------------------------------------

/// Counts and crashes of one test.
struct Fuzz {
    name: &'static str,
    seed: u64,
    inputs: usize,
    /// What each count of `accepted` counts.
    stages: &'static [&'static str],
    accepted: Vec<usize>,
    crashes: Vec<String>,
}

impl Fuzz {
    fn new(name: &'static str, stages: &'static [&'static str]) -> Fuzz {
        let accepted = vec![0; stages.len()];
        Fuzz { name, seed: base_seed(), inputs: 0, stages, accepted, crashes: Vec::new() }
    }

    /// Counts one input and the stages it passed.
    fn record(&mut self, passed: &[bool]) {
        self.inputs += 1;
        for (n, &p) in self.accepted.iter_mut().zip(passed) {
            *n += usize::from(p);
        }
    }

    /// Runs `f` on input `i`; a panic saves `files` (name, bytes) and is reported (at once, or
    /// at the end with `KILN_FUZZ_KEEP_GOING=1`).
    fn guard(&mut self, i: u64, stage: &str, files: &[(&str, &[u8])], f: impl FnOnce()) {
        let start = Instant::now();
        let panicked = catch_unwind(AssertUnwindSafe(f)).is_err();
        let took = start.elapsed();
        if !panicked && took < SLOW_INPUT {
            return;
        }
        let stage = if panicked { format!("panicked in {stage}") } else { format!("took {took:.1?} in {stage}") };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-crash-{}-{:#x}-{i}", self.name, self.seed));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let msg =
            format!("{}: input {i} (KILN_FUZZ_SEED={:#x}) {stage}; saved in {}", self.name, self.seed, dir.display());
        eprintln!("CRASH {msg}");
        self.crashes.push(msg);
        assert!(keep_going(), "{}", self.crashes.last().unwrap());
    }

    fn progress(&self, i: usize, total: usize) {
        if total >= 100_000 && i > 0 && i * 20 / total != (i - 1) * 20 / total {
            eprintln!(
                "fuzz {}: {i}/{total} inputs, accepted {:?}, {} crashes",
                self.name,
                self.accepted,
                self.crashes.len()
            );
        }
    }

    fn finish(self) {
        let counts: Vec<String> = self.accepted.iter().zip(self.stages).map(|(n, s)| format!("{n} {s}")).collect();
        eprintln!(
            "fuzz {}: {} inputs (KILN_FUZZ_SEED={:#x}): {}; {} crashes",
            self.name,
            self.inputs,
            self.seed,
            counts.join(", "),
            self.crashes.len()
        );
        assert!(self.crashes.is_empty(), "{}", self.crashes.join("\n"));
    }
}

/// A loaded model must run: two tokens, then one more from the cache.
fn run_model(m: &Model) -> bool {
    let mut state = m.new_state(4);
    let vocab = m.config.vocab_size as u32;
    m.forward(&mut state, &[0, 1 % vocab], false).is_ok() && m.forward(&mut state, &[2 % vocab], false).is_ok()
}

// ---- GGUF seeds ----------------------------------------------------------------------------

/// A small model shape every tensor type fits (K-quant rows need multiples of 256).
#[derive(Clone, Copy)]
struct Tiny {
    family: Family,
    dim: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

const TINY_LLAMA: Tiny =
    Tiny { family: Family::Llama, dim: 256, ffn: 256, layers: 2, heads: 2, kv_heads: 1, head_dim: 128, vocab: 64 };
const TINY_GEMMA: Tiny = Tiny { family: Family::Gemma3, ..TINY_LLAMA };

/// GGUF dims (row length first) of tensor `name` in a `t`-shaped model.
fn tiny_dims(name: &str, t: &Tiny) -> Option<Vec<usize>> {
    let (d, q, kv, f, h) = (t.dim, t.heads * t.head_dim, t.kv_heads * t.head_dim, t.ffn, t.head_dim);
    let rest = match name.strip_prefix("blk.") {
        Some(tail) => {
            let (layer, rest) = tail.split_once('.')?;
            if layer.parse::<usize>().ok()? >= t.layers {
                return None;
            }
            rest
        }
        None => name,
    };
    Some(match rest {
        "token_embd.weight" | "output.weight" => vec![d, t.vocab],
        "output_norm.weight"
        | "attn_norm.weight"
        | "ffn_norm.weight"
        | "post_attention_norm.weight"
        | "post_ffw_norm.weight" => vec![d],
        "rope_freqs.weight" => vec![h / 2],
        "attn_q.weight" => vec![d, q],
        "attn_k.weight" | "attn_v.weight" => vec![d, kv],
        "attn_output.weight" => vec![q, d],
        "attn_q.bias" => vec![q],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        "attn_q_norm.weight" | "attn_k_norm.weight" => vec![h],
        "ffn_gate.weight" | "ffn_up.weight" => vec![d, f],
        "ffn_down.weight" => vec![f, d],
        _ => return None,
    })
}

/// Tensor names of a family, for when no real file is at hand.
fn default_tensor_names(t: &Tiny) -> Vec<String> {
    let mut block = vec![
        "attn_norm.weight",
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_output.weight",
        "ffn_norm.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ];
    if t.family == Family::Gemma3 {
        block.extend([
            "attn_q_norm.weight",
            "attn_k_norm.weight",
            "post_attention_norm.weight",
            "post_ffw_norm.weight",
        ]);
    }
    let mut names = vec!["token_embd.weight".to_string(), "output_norm.weight".to_string()];
    for l in 0..t.layers {
        names.extend(block.iter().map(|s| format!("blk.{l}.{s}")));
    }
    names
}

fn default_type(name: &str) -> GgmlType {
    if name.ends_with("norm.weight") || name.ends_with(".bias") {
        GgmlType::F32
    } else if name.contains("ffn_down") {
        GgmlType::Q6K
    } else if name.contains("attn_v") {
        GgmlType::Q8_0
    } else if name.contains("ffn") {
        GgmlType::Q4K
    } else {
        GgmlType::Q4_1
    }
}

/// Random weights of `ty` (norms near 1).
fn tensor_bytes(name: &str, ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let norm = name.ends_with("norm.weight");
    let values: Vec<f32> = (0..n).map(|_| if norm { 1.0 + 0.1 * rng.uniform() } else { 0.5 * rng.uniform() }).collect();
    let mut out = vec![0u8; ty.bytes_for(n).expect("whole blocks")];
    quant::quantize_row(ty, &values, &mut out).expect("quantize");
    out
}

/// A tiny model of `t`'s shape carrying the metadata, tensor names and types of `real` (when
/// present; synthetic otherwise).
fn tiny_gguf(t: &Tiny, real: Option<&GgufFile>) -> Vec<u8> {
    let arch = t.family.architecture();
    let mut w = GgufWriter::new();
    let mut names = default_tensor_names(t);
    let mut types: Vec<(String, GgmlType)> = Vec::new();
    if let Some(f) = real {
        for (k, v) in &f.metadata {
            let v = match (k.as_str(), v) {
                ("tokenizer.ggml.merges", Value::Array(a)) => Value::Array(a.iter().take(16).cloned().collect()),
                (_, Value::Array(a)) if k.starts_with("tokenizer.") => {
                    Value::Array(a.iter().take(t.vocab).cloned().collect())
                }
                _ => v.clone(),
            };
            w.set(k, v);
        }
        names = f.tensors.iter().map(|t| t.name.clone()).collect();
        types = f.tensors.iter().map(|t| (t.name.clone(), t.ty)).collect();
    } else {
        w.set("general.architecture", Value::String(arch.into()));
        w.set("general.name", Value::String(format!("tiny {arch}")));
        let tokens: Vec<Value> = (0..t.vocab).map(|i| Value::String(format!("t{i}"))).collect();
        w.set("tokenizer.ggml.model", Value::String("llama".into()));
        w.set("tokenizer.ggml.tokens", Value::Array(tokens));
        w.set("tokenizer.ggml.scores", Value::Array((0..t.vocab).map(|i| Value::F32(-(i as f32))).collect()));
        w.set("tokenizer.ggml.token_type", Value::Array((0..t.vocab).map(|_| Value::I32(1)).collect()));
    }
    let u = |x: usize| Value::U32(x as u32);
    for (k, v) in [
        ("embedding_length", u(t.dim)),
        ("feed_forward_length", u(t.ffn)),
        ("block_count", u(t.layers)),
        ("attention.head_count", u(t.heads)),
        ("attention.head_count_kv", u(t.kv_heads)),
        ("attention.key_length", u(t.head_dim)),
        ("attention.value_length", u(t.head_dim)),
        ("rope.dimension_count", u(t.head_dim)),
        ("context_length", u(64)),
        ("vocab_size", u(t.vocab)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
    ] {
        w.set(&format!("{arch}.{k}"), v);
    }
    if t.family == Family::Gemma3 {
        w.set("gemma3.attention.sliding_window", u(4));
    }
    let mut rng = Rng(0x5eed);
    for name in names {
        let Some(dims) = tiny_dims(&name, t) else {
            continue;
        };
        let real_ty = types.iter().find(|(n, _)| *n == name).map(|&(_, ty)| ty);
        let ty = real_ty.unwrap_or_else(|| default_type(&name));
        let ty = if dims[0] % ty.block_size() == 0 { ty } else { GgmlType::F32 };
        let n = dims.iter().product();
        let data = tensor_bytes(&name, ty, n, &mut rng);
        w.add_tensor(TensorData { name, dims: dims.iter().map(|&d| d as u64).collect(), ty, data });
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes).unwrap();
    bytes
}

/// The real file's bytes up to its tensor data, plus `data` bytes of the data section.
fn real_header(path: &Path, data: usize) -> Option<(Vec<u8>, usize)> {
    let f = GgufFile::open(path).ok()?;
    let start = f.tensors.iter().map(|t| f.tensor_file_offset(t)).min()?;
    Some((f.bytes()[..(start + data).min(f.file_len())].to_vec(), start))
}

/// The GGUF number fields the reader trusts: counts, lengths, value types, dims, tensor types
/// and offsets. Stops where the bytes stop making sense.
fn gguf_fields(b: &[u8]) -> Vec<Field> {
    struct Walk<'a> {
        b: &'a [u8],
        pos: usize,
        fields: Vec<Field>,
    }
    impl Walk<'_> {
        fn u32(&mut self) -> Option<u32> {
            let v = u32::from_le_bytes(self.b.get(self.pos..self.pos + 4)?.try_into().ok()?);
            self.fields.push(Field::U32(self.pos));
            self.pos += 4;
            Some(v)
        }
        fn u64(&mut self) -> Option<u64> {
            let v = u64::from_le_bytes(self.b.get(self.pos..self.pos + 8)?.try_into().ok()?);
            self.fields.push(Field::U64(self.pos));
            self.pos += 8;
            Some(v)
        }
        fn skip(&mut self, n: u64) -> Option<()> {
            self.pos = self.pos.checked_add(usize::try_from(n).ok()?).filter(|&p| p <= self.b.len())?;
            Some(())
        }
        fn string(&mut self) -> Option<()> {
            let n = self.u64()?;
            self.skip(n)
        }
        fn value(&mut self, ty: u32) -> Option<()> {
            match ty {
                0 | 1 | 7 => self.skip(1),
                2 | 3 => self.skip(2),
                4..=6 => self.skip(4),
                10..=12 => self.skip(8),
                8 => self.string(),
                9 => {
                    let elem = self.u32()?;
                    let n = self.u64()?;
                    match elem {
                        8 | 9 => (0..n).try_for_each(|_| self.value(elem)),
                        _ => {
                            let width = match elem {
                                0 | 1 | 7 => 1,
                                2 | 3 => 2,
                                4..=6 => 4,
                                _ => 8,
                            };
                            self.skip(n.checked_mul(width)?)
                        }
                    }
                }
                _ => None,
            }
        }
    }
    let mut w = Walk { b, pos: 4, fields: Vec::new() };
    let _ = (|| {
        w.u32()?; // version
        let n_tensors = w.u64()?;
        let n_kv = w.u64()?;
        for _ in 0..n_kv {
            w.string()?;
            let ty = w.u32()?;
            w.value(ty)?;
        }
        for _ in 0..n_tensors {
            w.string()?;
            let n_dims = w.u32()?;
            for _ in 0..n_dims {
                w.u64()?;
            }
            w.u32()?;
            w.u64()?;
        }
        Some(())
    })();
    w.fields
}

struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    header: usize,
    fields: Vec<Field>,
}

impl Seed {
    fn gguf(name: &'static str, bytes: Vec<u8>, header: usize) -> Seed {
        let fields = gguf_fields(&bytes);
        Seed { name, bytes, header, fields }
    }
}

fn open_real(m: &TestModel) -> Option<(PathBuf, GgufFile)> {
    let path = m.path()?;
    let f = GgufFile::open(&path).ok()?;
    Some((path, f))
}

/// Tiny llama and gemma3 GGUF seeds, and the real SmolLM2 header when the model is present.
fn gguf_seeds() -> (Vec<Seed>, Option<Seed>) {
    let smol = open_real(&SMOLLM2);
    let gemma = open_real(&GEMMA3);
    let mut seeds = Vec::new();
    for (name, t, real) in [("tiny-llama", TINY_LLAMA, &smol), ("tiny-gemma3", TINY_GEMMA, &gemma)] {
        let bytes = tiny_gguf(&t, real.as_ref().map(|(_, f)| f));
        let file = GgufFile::from_vec(bytes.clone()).expect("seed parses");
        let header = file.tensors.iter().map(|t| file.tensor_file_offset(t)).min().unwrap();
        let model = Model::from_gguf(file).unwrap_or_else(|e| panic!("{name} seed loads: {e}"));
        assert!(run_model(&model), "{name} seed runs");
        seeds.push(Seed::gguf(name, bytes, header));
    }
    let real = smol
        .and_then(|(path, _)| real_header(&path, 64 << 10))
        .map(|(bytes, header)| Seed::gguf("smollm2-header", bytes, header));
    (seeds, real)
}

/// Reader, loader and forward pass on one GGUF image.
fn check_gguf(fuzz: &mut Fuzz, i: u64, seed: &str, bytes: Vec<u8>) {
    let saved = bytes.clone();
    let mut accepted = [false; 3];
    let stage = format!("GgufFile::from_vec / Model::from_gguf / forward (seed {seed})");
    fuzz.guard(i, &stage, &[("input.gguf", &saved)], || {
        let Ok(file) = GgufFile::from_vec(bytes) else {
            return;
        };
        accepted[0] = true;
        let Ok(model) = Model::from_gguf(file) else {
            return;
        };
        accepted[1] = true;
        accepted[2] = run_model(&model);
    });
    fuzz.record(&accepted);
}

#[test]
fn mutated_gguf_files_never_panic_the_reader_or_loader() {
    let (seeds, real) = gguf_seeds();
    let mut fuzz = Fuzz::new("gguf", &["parsed", "loaded as models", "ran"]);
    let donors: Vec<&[u8]> = seeds.iter().map(|s| s.bytes.as_slice()).collect();
    let total = iters(DEFAULT_GGUF_ITERS);
    for i in 0..total {
        fuzz.progress(i, total);
        let mut rng = Rng::for_input(fuzz.seed, i as u64);
        let seed = match &real {
            Some(r) if rng.below(REAL_HEADER_EVERY) == 0 => r,
            _ => &seeds[rng.below(seeds.len())],
        };
        let mut bytes = seed.bytes.clone();
        mutate(&mut bytes, &Target { header: seed.header, fields: &seed.fields, donors: &donors }, &mut rng);
        check_gguf(&mut fuzz, i as u64, seed.name, bytes);
    }
    if real.is_none() {
        eprintln!("(the real SmolLM2 header seed was skipped: model absent)");
    }
    fuzz.finish();
}

/// Found by this fuzzer: a weight matrix stored as Q8_K or Q8_1 (activation formats, with no
/// weight dot product) loaded, and the first forward pass panicked in the matrix product.
#[test]
fn gguf_weight_matrix_in_an_activation_format_is_an_error() {
    for ty in [GgmlType::Q8K, GgmlType::Q8_1] {
        for victim in ["blk.1.ffn_up.weight", "token_embd.weight"] {
            let mut bytes = tiny_gguf(&TINY_LLAMA, None);
            // Retype in place (the type id sits just before the offset field) and pad the
            // file so the wider type's bytes still lie inside it.
            let info_end = tensor_info_end(&bytes, victim);
            bytes[info_end - 12..info_end - 8].copy_from_slice(&ty.id().to_le_bytes());
            bytes.resize(bytes.len() + (1 << 17), 0);
            let file = GgufFile::from_vec(bytes).expect("still a valid GGUF file");
            assert_eq!(file.tensor(victim).unwrap().ty, ty);
            let e = Model::from_gguf(file).err().unwrap_or_else(|| panic!("{victim} as {ty} loaded"));
            assert!(e.to_string().contains(victim), "{e}");
        }
    }
}

/// Where the tensor info of `name` ends (after its type id and offset).
fn tensor_info_end(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend(name.as_bytes());
    let at = bytes.windows(key.len()).position(|w| w == key.as_slice()).expect("tensor name in the header");
    let n_dims = u32::from_le_bytes(bytes[at + key.len()..at + key.len() + 4].try_into().unwrap()) as usize;
    at + key.len() + 4 + 8 * n_dims + 4 + 8
}

// ---- Hugging Face seeds --------------------------------------------------------------------

/// A safetensors file of `tensors` (name, dtype, HF shape, values).
fn safetensors_bytes(tensors: &[(String, &str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, values) in tensors {
        let start = data.len();
        for &v in values {
            match *dtype {
                "F32" => data.extend(v.to_le_bytes()),
                "F16" => data.extend(half::f16::from_f32(v).to_le_bytes()),
                "BF16" => data.extend(half::bf16::from_f32(v).to_le_bytes()),
                other => unreachable!("{other}"),
            }
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(data);
    out
}

/// A Hugging Face directory: file name → bytes.
type HfDir = Vec<(String, Vec<u8>)>;

fn hf_seed(t: &Tiny, shards: usize) -> HfDir {
    let gemma = t.family == Family::Gemma3;
    let mut rng = Rng(0xbeef);
    let mut tensors = Vec::new();
    let mut names = default_tensor_names(t);
    if !gemma {
        names.push("output.weight".into());
    }
    for (k, gguf) in names.iter().enumerate() {
        let hf = names::gguf_to_hf(gguf, t.family).unwrap_or_else(|| panic!("{gguf}"));
        let mut shape = tiny_dims(gguf, t).unwrap();
        shape.reverse();
        let n = shape.iter().product();
        let norm = gguf.ends_with("norm.weight");
        let values = (0..n).map(|_| if norm && !gemma { 1.0 } else { 0.5 * rng.uniform() }).collect();
        tensors.push((hf, ["F32", "F16", "BF16"][k % 3], shape, values));
    }
    let mut config = serde_json::json!({
        "model_type": if gemma { "gemma3_text" } else { "llama" },
        "hidden_size": t.dim, "intermediate_size": t.ffn, "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads, "num_key_value_heads": t.kv_heads, "head_dim": t.head_dim,
        "vocab_size": t.vocab, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": gemma, "hidden_act": "silu",
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    });
    if gemma {
        let c = config.as_object_mut().unwrap();
        c.remove("hidden_act");
        c.remove("rope_scaling");
        c.insert("sliding_window".into(), 4.into());
        c.insert("query_pre_attn_scalar".into(), 16.into());
        c.insert("layer_types".into(), serde_json::json!(["sliding_attention", "full_attention"]));
        c.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
    }
    let mut dir = vec![("config.json".to_string(), serde_json::to_vec_pretty(&config).unwrap())];
    if shards == 1 {
        dir.push(("model.safetensors".into(), safetensors_bytes(&tensors)));
        return dir;
    }
    let per = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (s, chunk) in tensors.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        for (name, ..) in chunk {
            weight_map.insert(name.clone(), file.clone().into());
        }
        dir.push((file, safetensors_bytes(chunk)));
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    dir.push(("model.safetensors.index.json".into(), serde_json::to_vec_pretty(&index).unwrap()));
    dir
}

/// Replaces a number or a quoted string in JSON text by another.
fn mutate_json_token(text: &mut Vec<u8>, rng: &mut Rng) {
    let numbers: Vec<(usize, usize)> = spans(text, |b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'e');
    let strings: Vec<(usize, usize)> = quoted_spans(text);
    let use_number = rng.below(3) != 0 && !numbers.is_empty();
    let (from, to, new): (usize, usize, String) = if use_number {
        let (a, b) = numbers[rng.below(numbers.len())];
        let old: f64 = std::str::from_utf8(&text[a..b]).ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
        let new = match rng.below(12) {
            0 => "0".to_string(),
            1 => "-1".into(),
            2 => "4294967296".into(),
            3 => "18446744073709551615".into(),
            4 => "18446744073709551616".into(),
            5 => "1e309".into(),
            6 => "9007199254740993".into(),
            7 => "0.5".into(),
            8 => format!("{}", old + 1.0),
            9 => format!("{}", old - 1.0),
            10 => format!("{}", old * 2.0),
            _ => format!("{}", rng.next_u64() >> rng.below(64)),
        };
        (a, b, new)
    } else if !strings.is_empty() {
        let (a, b) = strings[rng.below(strings.len())];
        let new = rng.pick(&[
            "F32",
            "F16",
            "BF16",
            "I8",
            "U8",
            "F64",
            "BOOL",
            "llama",
            "gemma3",
            "gemma3_text",
            "qwen3",
            "qwen2",
            "mistral",
            "linear",
            "llama3",
            "yarn",
            "silu",
            "sliding_attention",
            "full_attention",
            "model.norm.weight",
            "lm_head.weight",
            "model.embed_tokens.weight",
            "data_offsets",
            "shape",
            "dtype",
            "",
            "model.safetensors",
            "../model.safetensors",
            "model-00001-of-00002.safetensors",
        ]);
        (a, b, new.to_string())
    } else {
        return;
    };
    text.splice(from..to, new.into_bytes());
}

fn spans(text: &[u8], member: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if member(text[i]) && text[i] != b'e' {
            let start = i;
            while i < text.len() && member(text[i]) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Contents of `"…"` strings (no escapes in these seeds).
fn quoted_spans(text: &[u8]) -> Vec<(usize, usize)> {
    let quotes: Vec<usize> = text.iter().enumerate().filter(|(_, &b)| b == b'"').map(|(i, _)| i).collect();
    quotes.chunks_exact(2).map(|q| (q[0] + 1, q[1])).collect()
}

/// Mutates one file of a Hugging Face directory (or drops one).
fn mutate_hf(dir: &mut HfDir, donors: &[&[u8]], rng: &mut Rng) {
    for _ in 0..1 + rng.below(2) {
        let k = rng.below(dir.len());
        if dir.len() > 1 && rng.below(10) == 0 {
            dir.remove(k);
            continue;
        }
        let (name, bytes) = &mut dir[k];
        let json = name.ends_with(".json");
        match rng.below(9) {
            0..=4 if json => mutate_json_token(bytes, rng),
            0..=4 => {
                // The JSON header inside the safetensors file, or its length.
                let header_end = bytes
                    .get(..8)
                    .map(|h| u64::from_le_bytes(h.try_into().unwrap()))
                    .and_then(|n| usize::try_from(n).ok()?.checked_add(8))
                    .filter(|&end| end <= bytes.len());
                match header_end {
                    Some(end) if rng.below(4) != 0 => {
                        let mut header = bytes[8..end].to_vec();
                        mutate_json_token(&mut header, rng);
                        let new_len = header.len() as u64;
                        bytes.splice(8..end, header);
                        if rng.below(2) == 0 {
                            // Keep the length field honest so the JSON is what gets checked.
                            bytes[..8].copy_from_slice(&new_len.to_le_bytes());
                        }
                    }
                    _ => set_field(bytes, Field::U64(0), rng),
                }
            }
            _ => {
                let header = if json { bytes.len() } else { 8 + 512 };
                mutate(bytes, &Target { header, fields: &[Field::U64(0)], donors }, rng);
            }
        }
    }
}

#[test]
fn mutated_hugging_face_dirs_never_panic_the_loader() {
    let tiny =
        Tiny { family: Family::Llama, dim: 8, ffn: 16, layers: 2, heads: 2, kv_heads: 1, head_dim: 4, vocab: 16 };
    let seeds = [hf_seed(&tiny, 1), hf_seed(&Tiny { family: Family::Gemma3, ..tiny }, 2)];
    let tmp = tempfile::tempdir().unwrap();
    for (k, seed) in seeds.iter().enumerate() {
        let dir = tmp.path().join(format!("seed{k}"));
        std::fs::create_dir(&dir).unwrap();
        for (name, bytes) in seed {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let m = open_model(&dir).unwrap_or_else(|e| panic!("HF seed {k} loads: {e}"));
        assert!(run_model(&m), "HF seed {k} runs");
    }
    let donors: Vec<&[u8]> = seeds.iter().flatten().map(|(_, b)| b.as_slice()).collect();
    let mut fuzz = Fuzz::new("hf", &["loaded as models", "ran"]);
    let total = iters(DEFAULT_HF_ITERS);
    for i in 0..total {
        fuzz.progress(i, total);
        let mut rng = Rng::for_input(fuzz.seed, i as u64);
        let mut files = seeds[rng.below(seeds.len())].clone();
        mutate_hf(&mut files, &donors, &mut rng);
        let dir = tmp.path().join("input");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        // Opened as a directory, and through one of its files (as `kiln run -m dir/config.json`).
        let path = if rng.below(4) == 0 { dir.join(&files[rng.below(files.len())].0) } else { dir.clone() };
        let saved: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let mut accepted = [false; 2];
        fuzz.guard(i as u64, "open_model / forward", &saved, || {
            let Ok(model) = open_model(&path) else { return };
            accepted[0] = true;
            accepted[1] = run_model(&model);
        });
        fuzz.record(&accepted);
    }
    fuzz.finish();
}

/// Found by this fuzzer: config.json's `head_dim` sized the RoPE frequency table (llama3 or
/// linear `rope_scaling`) before any tensor could contradict it, so 2^32 allocated 8 GiB and
/// took a minute, and 2^40 aborted the process on allocation.
#[test]
fn hf_config_with_a_huge_head_dim_is_an_error_not_an_allocation() {
    let tiny =
        Tiny { family: Family::Llama, dim: 8, ffn: 16, layers: 2, heads: 2, kv_heads: 1, head_dim: 4, vocab: 16 };
    let tmp = tempfile::tempdir().unwrap();
    for rope_scaling in [
        serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 32}),
        serde_json::json!({"type": "linear", "factor": 2.0}),
    ] {
        for head_dim in [1u64 << 32, 1 << 40, (1 << 62) + 2] {
            let mut files = hf_seed(&tiny, 1);
            let mut config: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
            config["head_dim"] = head_dim.into();
            config["rope_scaling"] = rope_scaling.clone();
            files[0].1 = serde_json::to_vec(&config).unwrap();
            for (name, bytes) in &files {
                std::fs::write(tmp.path().join(name), bytes).unwrap();
            }
            let start = std::time::Instant::now();
            let e = open_model(tmp.path()).err().expect("a huge head_dim is an error");
            assert!(start.elapsed().as_secs_f64() < 1.0, "head_dim {head_dim}: {:?}", start.elapsed());
            assert!(e.to_string().contains("head_dim"), "{e}");
        }
    }
}

/// Found by this fuzzer (with overflow checks on): `num_attention_heads` × `head_dim` was
/// computed unchecked, so 2^64 − 1 heads panicked in debug builds, and 2^62 + 2 heads of width
/// 4 wrapped around to the 8 columns the tensors have: the model loaded in release builds with
/// 4.6·10^18 heads.
#[test]
fn head_count_times_head_width_overflow_is_an_error() {
    let tiny =
        Tiny { family: Family::Llama, dim: 8, ffn: 16, layers: 2, heads: 2, kv_heads: 1, head_dim: 4, vocab: 16 };
    let tmp = tempfile::tempdir().unwrap();
    for family in [Family::Llama, Family::Gemma3] {
        for (key, n) in [
            ("num_attention_heads", u64::MAX),
            ("num_attention_heads", (1 << 62) + 2),
            ("num_key_value_heads", (1 << 62) + 1),
        ] {
            let mut files = hf_seed(&Tiny { family, ..tiny }, 1);
            let mut config: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
            config[key] = n.into();
            if key == "num_key_value_heads" {
                config["num_attention_heads"] = ((1u64 << 62) + 1).into();
            }
            files[0].1 = serde_json::to_vec(&config).unwrap();
            for (name, bytes) in &files {
                std::fs::write(tmp.path().join(name), bytes).unwrap();
            }
            let result = catch_unwind(|| open_model(tmp.path()).map(|_| ()));
            let e = result.unwrap_or_else(|_| panic!("{key} = {n} panicked")).err();
            let e = e.unwrap_or_else(|| panic!("{family:?} with {key} = {n} loaded"));
            assert!(e.to_string().contains("heads"), "{e}");
        }
    }
}

// ---- llama2.c seeds ------------------------------------------------------------------------

/// A llama2.c checkpoint of version 0 or 1 with random weights (layout: see llama2c.rs).
fn llama2c_seed(t: &Tiny, version: u32, shared: bool) -> Vec<u8> {
    let (d, f, l, kv) = (t.dim, t.ffn, t.layers, t.kv_heads * t.head_dim);
    let seq = 8;
    let vocab = t.vocab as i32;
    let ints = [d as i32, f as i32, l as i32, t.heads as i32, t.kv_heads as i32, vocab, seq];
    let mut rng = Rng(0xc0de);
    let mut out = Vec::new();
    let mut floats = |out: &mut Vec<u8>, n: usize, norm: bool| {
        for _ in 0..n {
            let v = if norm { 1.0 } else { 0.5 * rng.uniform() };
            out.extend(v.to_le_bytes());
        }
    };
    if version == 0 {
        let sign = if shared { 1 } else { -1 };
        for (k, x) in ints.iter().enumerate() {
            out.extend((if k == 5 { sign * x } else { *x }).to_le_bytes());
        }
        floats(&mut out, t.vocab * d, false);
        floats(&mut out, l * d, true);
        floats(&mut out, l * (2 * d * d + 2 * kv * d), false);
        floats(&mut out, l * d, true);
        floats(&mut out, l * 3 * f * d, false);
        floats(&mut out, d, true);
        floats(&mut out, seq as usize * t.head_dim, false);
    } else {
        out.extend(0x616b_3432u32.to_le_bytes());
        out.extend((version as i32).to_le_bytes());
        ints.iter().for_each(|x| out.extend(x.to_le_bytes()));
        out.push(u8::from(shared));
        out.resize(256, 0);
        floats(&mut out, 2 * l * d + d, true);
        floats(&mut out, t.vocab * d + l * (2 * d * d + 2 * kv * d) + l * 3 * f * d, false);
    }
    if !shared {
        floats(&mut out, t.vocab * d, false);
    }
    out
}

#[test]
fn mutated_llama2c_checkpoints_never_panic_the_loader() {
    let tiny =
        Tiny { family: Family::Llama, dim: 16, ffn: 32, layers: 2, heads: 4, kv_heads: 2, head_dim: 4, vocab: 32 };
    let seeds = [llama2c_seed(&tiny, 0, true), llama2c_seed(&tiny, 0, false), llama2c_seed(&tiny, 1, true)];
    let tmp = tempfile::tempdir().unwrap();
    for (k, seed) in seeds.iter().enumerate() {
        let path = tmp.path().join(format!("seed{k}.bin"));
        std::fs::write(&path, seed).unwrap();
        let m = open_model(&path).unwrap_or_else(|e| panic!("llama2.c seed {k} loads: {e}"));
        assert!(run_model(&m), "llama2.c seed {k} runs");
    }
    let v0_fields: Vec<Field> = (0..7).map(|k| Field::I32(4 * k)).collect();
    let v1_fields: Vec<Field> =
        [Field::U32(0), Field::I32(4)].into_iter().chain((0..7).map(|k| Field::I32(8 + 4 * k))).collect();
    let donors: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let mut fuzz = Fuzz::new("llama2c", &["loaded as models", "ran"]);
    let total = iters(DEFAULT_LLAMA2C_ITERS);
    let path = tmp.path().join("input.bin");
    for i in 0..total {
        fuzz.progress(i, total);
        let mut rng = Rng::for_input(fuzz.seed, i as u64);
        let k = rng.below(seeds.len());
        let mut bytes = seeds[k].clone();
        let (header, fields) = if k < 2 { (28, &v0_fields) } else { (64, &v1_fields) };
        mutate(&mut bytes, &Target { header, fields, donors: &donors }, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        let mut accepted = [false; 2];
        fuzz.guard(i as u64, "open_model / forward", &[("input.bin", &bytes)], || {
            let Ok(model) = open_model(&path) else { return };
            accepted[0] = true;
            accepted[1] = run_model(&model);
        });
        fuzz.record(&accepted);
    }
    fuzz.finish();
}
