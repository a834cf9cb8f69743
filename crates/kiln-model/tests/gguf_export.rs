//! `requantize_gguf` (`kiln quantize`): a tiny random llama written here in F32 is requantized
//! to several types; each file must load, give logits close to the F32 model's (named error
//! budgets per type), keep its metadata, and give each tensor the type the rules say. Then
//! SmolLM2 (when present) requantized to Q8_0 must still know the capital of France.

use kiln_gguf::{GgmlType, GgufWriter, TensorData, Value};
use kiln_model::formats::gguf_export::{llama_file_type, requantize_gguf, ExportReport};
use kiln_model::{GgufFile, Model};
use kiln_test_models::SMOLLM2;
use std::path::{Path, PathBuf};
mod common;
use common::{logits, rel_diff, Rng};

/// Largest logit difference from the F32 model, relative to its largest logit, per target type.
/// The random tiny models amplify weight error about 3–4× into the logits (F16's rounding, 0.05 %
/// per weight, moves them 0.15 %), and Q8_0/Q4_0/Q4_K weights also quantize the activations to
/// Q8, so the budgets are wide: measured Q8_0 ≈ 2.4 %, Q6_K ≈ 4.4 %, Q4_0 ≈ 23–25 %, Q4_K ≈ 17 %,
/// about 1.4–1.8× below each budget.
const Q8_0_REL_TOL: f32 = 0.04;
const Q6_K_REL_TOL: f32 = 0.08;
const Q4_0_REL_TOL: f32 = 0.35;
const Q4_K_REL_TOL: f32 = 0.25;
/// The budget when every matrix fell back to F16 or Q8_0.
const FALLBACK_REL_TOL: f32 = 0.04;

const TOKENS: [u32; 10] = [1, 17, 299, 42, 0, 5, 123, 250, 7, 88];

/// A tiny llama: `dim` wide, `ffn` hidden, 2 layers, 4 query and 2 key/value heads, 300 tokens.
struct Tiny {
    dim: usize,
    ffn: usize,
}

const VOCAB: usize = 300;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

/// Writes the tiny model as an F32 GGUF file with tokenizer metadata; returns its path.
fn write_tiny(dir: &Path, s: &Tiny, seed: u64) -> PathBuf {
    let mut rng = Rng(seed);
    let (d, f) = (s.dim, s.ffn);
    let kv = d / HEADS * KV_HEADS;
    let mut w = GgufWriter::new();
    let u = |x: usize| Value::U32(x as u32);
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.name", Value::String("tiny".into()));
    w.set("general.file_type", u(0));
    for (k, v) in [
        ("context_length", u(64)),
        ("embedding_length", u(d)),
        ("block_count", u(LAYERS)),
        ("feed_forward_length", u(f)),
        ("attention.head_count", u(HEADS)),
        ("attention.head_count_kv", u(KV_HEADS)),
        ("vocab_size", u(VOCAB)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("rope.freq_base", Value::F32(10_000.0)),
    ] {
        w.set(&format!("llama.{k}"), v);
    }
    let tokens = (0..VOCAB).map(|i| Value::String(format!("t{i}"))).collect();
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.set("tokenizer.ggml.tokens", Value::Array(tokens));
    w.set("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(1); VOCAB]));
    w.set("tokenizer.ggml.merges", Value::Array(vec![Value::String("t 1".into())]));
    w.set("tokenizer.chat_template", Value::String("{{ messages }}".into()));
    w.set("general.alignment", u(32));

    let mut add = |name: String, dims: Vec<usize>| {
        let n: usize = dims.iter().product();
        let norm = dims.len() == 1;
        let scale = if norm { 0.2 } else { 1.5 / (dims[0] as f32).sqrt() };
        let offset = if norm { 1.0 } else { 0.0 };
        let values: Vec<f32> = (0..n).map(|_| offset + scale * rng.uniform()).collect();
        w.add_tensor(TensorData {
            name,
            dims: dims.iter().map(|&x| x as u64).collect(),
            ty: GgmlType::F32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    };
    // ggml order: dims[0] is the row length.
    add("token_embd.weight".into(), vec![d, VOCAB]);
    for l in 0..LAYERS {
        let n = |x: &str| format!("blk.{l}.{x}");
        add(n("attn_norm.weight"), vec![d]);
        add(n("attn_q.weight"), vec![d, d]);
        add(n("attn_k.weight"), vec![d, kv]);
        add(n("attn_v.weight"), vec![d, kv]);
        add(n("attn_output.weight"), vec![d, d]);
        add(n("ffn_norm.weight"), vec![d]);
        add(n("ffn_gate.weight"), vec![d, f]);
        add(n("ffn_up.weight"), vec![d, f]);
        add(n("ffn_down.weight"), vec![f, d]);
    }
    add("output_norm.weight".into(), vec![d]);
    add("output.weight".into(), vec![d, VOCAB]);
    let path = dir.join(format!("tiny-{}x{}-f32.gguf", s.dim, s.ffn));
    let mut bytes = Vec::new();
    w.write(&mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Requantizes `src` to `target` beside it; returns the report, the written file, and the
/// relative logit difference from `src`.
fn requantize(src: &Path, target: GgmlType) -> (ExportReport, GgufFile, f32) {
    let out = src.with_file_name(format!("out-{target}.gguf"));
    let file = GgufFile::open(src).unwrap();
    let mut calls = Vec::new();
    let report = requantize_gguf(&file, target, &out, |done, total| calls.push((done, total))).unwrap();
    let total: u64 = file.tensors.iter().map(|t| t.n_elements()).sum();
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "progress goes forward");
    assert_eq!(report.bytes_out, std::fs::metadata(&out).unwrap().len());
    let diff =
        rel_diff(&logits(&Model::open_gguf(&out).unwrap(), &TOKENS), &logits(&Model::open_gguf(src).unwrap(), &TOKENS));
    eprintln!("{target}: relative logit difference {diff:.5}, {} notes", report.notes.len());
    (report, GgufFile::open(&out).unwrap(), diff)
}

/// Metadata is the source's, in order, but for the two keys a requantization sets and the
/// alignment, which the writer fixes at 32.
fn check_metadata(src: &GgufFile, out: &GgufFile, target: GgmlType) {
    let skip = ["general.file_type", "general.quantization_version", "general.alignment"];
    let kept = |f: &GgufFile| -> Vec<(String, Value)> {
        f.metadata.iter().filter(|(k, _)| !skip.contains(&k.as_str())).cloned().collect()
    };
    assert_eq!(kept(out), kept(src));
    assert_eq!(out.get("general.file_type"), Some(&Value::U32(llama_file_type(target).unwrap())));
    assert_eq!(out.get("general.quantization_version"), Some(&Value::U32(2)));
}

fn ty(f: &GgufFile, name: &str) -> GgmlType {
    f.tensor(name).unwrap().ty
}

#[test]
fn q8_0_and_q4_0_load_and_stay_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let src = write_tiny(dir.path(), &Tiny { dim: 64, ffn: 96 }, 7);
    let src_file = GgufFile::open(&src).unwrap();
    for (target, tol) in [(GgmlType::Q8_0, Q8_0_REL_TOL), (GgmlType::Q4_0, Q4_0_REL_TOL)] {
        let (report, out, diff) = requantize(&src, target);
        assert!(diff <= tol, "{target}: logits differ from F32 by {diff} (budget {tol})");
        check_metadata(&src_file, &out, target);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        assert_eq!(report.tensors.len(), src_file.tensors.len());
        // The norms are copied, every matrix converted.
        assert_eq!(report.copied(), 1 + 2 * LAYERS);
        assert_eq!(report.converted(), 2 + 7 * LAYERS);
        assert_eq!(ty(&out, "blk.1.attn_norm.weight"), GgmlType::F32);
        assert_eq!(ty(&out, "blk.1.ffn_down.weight"), target);
        assert_eq!(ty(&out, "token_embd.weight"), GgmlType::Q8_0);
        assert_eq!(ty(&out, "output.weight"), GgmlType::Q8_0);
        assert!(report.bytes_out < report.bytes_in / 3, "{target}: {} → {} bytes", report.bytes_in, report.bytes_out);
    }
}

#[test]
fn k_types_load_and_stay_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let src = write_tiny(dir.path(), &Tiny { dim: 256, ffn: 512 }, 11);
    let src_file = GgufFile::open(&src).unwrap();
    for (target, tol) in [(GgmlType::Q6K, Q6_K_REL_TOL), (GgmlType::Q4K, Q4_K_REL_TOL)] {
        let (report, out, diff) = requantize(&src, target);
        assert!(diff <= tol, "{target}: logits differ from F32 by {diff} (budget {tol})");
        check_metadata(&src_file, &out, target);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        assert_eq!(ty(&out, "blk.0.attn_q.weight"), target);
        let embd = if target == GgmlType::Q4K { GgmlType::Q8_0 } else { target };
        assert_eq!(ty(&out, "token_embd.weight"), embd);
    }
}

#[test]
fn rows_that_do_not_fill_blocks_fall_back_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    // ffn_down rows are 80 long: not whole Q4_0 blocks (32), so F16; every 64-long row is not
    // a whole Q4_K block (256), so Q8_0.
    let src = write_tiny(dir.path(), &Tiny { dim: 64, ffn: 80 }, 3);
    let (report, out, diff) = requantize(&src, GgmlType::Q4_0);
    assert_eq!(ty(&out, "blk.0.ffn_down.weight"), GgmlType::F16);
    assert_eq!(ty(&out, "blk.0.ffn_up.weight"), GgmlType::Q4_0);
    assert_eq!(report.notes.len(), LAYERS, "{:?}", report.notes);
    assert!(report.notes[0].starts_with("blk.0.ffn_down.weight: row length 80"), "{}", report.notes[0]);
    assert!(diff <= Q4_0_REL_TOL);

    let (report, out, diff) = requantize(&src, GgmlType::Q4K);
    assert_eq!(ty(&out, "blk.0.attn_q.weight"), GgmlType::Q8_0);
    assert_eq!(ty(&out, "blk.0.ffn_down.weight"), GgmlType::F16);
    assert_eq!(report.notes.len(), 7 * LAYERS, "{:?}", report.notes);
    assert!(diff <= FALLBACK_REL_TOL, "all-fallback logits differ by {diff}");
}

#[test]
fn a_refused_target_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = write_tiny(dir.path(), &Tiny { dim: 64, ffn: 96 }, 5);
    let file = GgufFile::open(&src).unwrap();
    let out = dir.path().join("q8k.gguf");
    let err = requantize_gguf(&file, GgmlType::Q8K, &out, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("activation format"), "{err}");
    let missing_dir = dir.path().join("no/such/dir/x.gguf");
    assert!(requantize_gguf(&file, GgmlType::Q8_0, &missing_dir, |_, _| {}).is_err());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "only the source is left: {names:?}");
}

/// Greedy continuation of `prompt`, decoded with the GGUF vocabulary (gpt2 byte-level: `Ġ` is
/// a space).
fn greedy_text(model: &Model, vocab: &[Value], prompt: &[u32], n: usize) -> String {
    let mut state = model.new_state(prompt.len() + n + 1);
    let mut logits = model.forward(&mut state, prompt, false).unwrap().to_vec();
    let mut text = String::new();
    for _ in 0..n {
        let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        text.push_str(vocab[next as usize].as_str().unwrap());
        logits.copy_from_slice(model.forward(&mut state, &[next], false).unwrap());
    }
    text.replace('Ġ', " ")
}

#[test]
fn smollm2_requantized_to_q8_0_still_knows_paris() {
    let Some(path) = SMOLLM2.path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = GgufFile::open(&path).unwrap();
    let out = dir.path().join("smollm2-q8_0.gguf");
    let report = requantize_gguf(&src, GgmlType::Q8_0, &out, |_, _| {}).unwrap();
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let file = GgufFile::open(&out).unwrap();
    check_metadata(&src, &file, GgmlType::Q8_0);
    let vocab = file.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap().to_vec();
    // "The capital of France is", as llama.cpp tokenizes it (tests/fixtures/reference/greedy-smollm2.json).
    let prompt = [504, 3575, 282, 4649, 314];
    let prompt_text: String = prompt.iter().map(|&t| vocab[t as usize].as_str().unwrap()).collect();
    assert_eq!(prompt_text.replace('Ġ', " "), "The capital of France is");
    let model = Model::from_gguf(file).unwrap();
    let text = greedy_text(&model, &vocab, &prompt, 8);
    eprintln!("SmolLM2 Q8_0 (requantized): The capital of France is{text}");
    assert!(text.contains("Paris"), "greedy continuation {text:?} does not name Paris");
}
