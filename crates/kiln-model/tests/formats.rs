//! One tiny random model, written by this test in every format kiln reads — GGUF (with
//! kiln_gguf's writer), a Hugging Face directory (config.json + safetensors, with the
//! safetensors crate) and llama2.c `.bin` (by hand, after llama2.c's export.py) — must give
//! the same logits for the same tokens. Then broken files of each format must give errors.
//!
//! Which weights each format holds (the heart of the llama RoPE question):
//! * Hugging Face stores Q/K rows in the order `rotate_half` expects: within a head, row `i`
//!   pairs with row `i + head_dim/2` (`RopeStyle::Halves`).
//! * llama.cpp's converter permutes Q/K rows (`permute` in convert_hf_to_gguf.py): new row
//!   `2i + j` of a head is old row `j·head_dim/2 + i`, so adjacent rows pair up and GGUF llama
//!   rotates adjacent pairs (`RopeStyle::Interleaved`). This restores Meta's original order.
//! * llama2.c rotates adjacent pairs too, on weights in Meta's order, so a llama2.c file holds
//!   exactly GGUF's (permuted) Q/K and no permutation happens when loading it.
//!
//! Gemma norms: Hugging Face stores `w` and computes `x·(1 + w)`; GGUF stores `1 + w`.

use kiln_gguf::{GgmlType, GgufWriter, TensorData, Value};
use kiln_model::config::RopeStyle;
use kiln_model::formats::{self, load_hf_dir, load_llama2c, open_model, ModelFormat};
use kiln_model::{Family, GgufFile, Model, ModelError};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
mod common;
use common::{logits, rel_diff, Rng};

/// GGUF vs Hugging Face on the same weights: the values agree, but permuted Q/K rows change the
/// order in which attention sums, so allow float noise relative to the largest logit.
const GGUF_VS_HF_REL_TOL: f32 = 1e-4;
/// A model loaded with the wrong RoPE pairing must miss by far more than the tolerance.
const WRONG_ROPE_MIN_REL_DIFF: f32 = 1e-2;

const TOKENS: [u32; 12] = [1, 17, 299, 42, 0, 5, 123, 250, 7, 7, 88, 3];

#[derive(Clone, Copy, Debug)]
struct Shape {
    family: Family,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    ctx: usize,
    tied: bool,
}

const LLAMA: Shape = Shape {
    family: Family::Llama,
    dim: 64,
    n_layers: 2,
    n_heads: 4,
    n_kv_heads: 2,
    head_dim: 16,
    ffn: 96,
    vocab: 300,
    ctx: 64,
    tied: false,
};
const QWEN2: Shape = Shape { family: Family::Qwen2, ..LLAMA };
/// Qwen3 and Gemma 3 with q_dim (4 × 32) wider than dim, as in the real models.
const QWEN3: Shape = Shape { family: Family::Qwen3, head_dim: 32, tied: true, ..LLAMA };
const GEMMA3: Shape = Shape { family: Family::Gemma3, head_dim: 32, tied: true, ..LLAMA };
/// Small enough to truncate and corrupt at every byte.
const MICRO: Shape = Shape {
    family: Family::Llama,
    dim: 16,
    n_layers: 1,
    n_heads: 2,
    n_kv_heads: 1,
    head_dim: 8,
    ffn: 24,
    vocab: 20,
    ctx: 16,
    tied: false,
};

/// Gemma 3 in these tests: layer 0 slides over a window shorter than TOKENS, layer 1 is global.
const GEMMA_WINDOW: usize = 4;
const GEMMA_PATTERN: usize = 2;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Matrix,
    QProj,
    KProj,
    Norm,
    Bias,
}

/// One weight: its names in both schemes (written out here, independently of kiln's table),
/// its Hugging Face (row-major) shape and its Hugging Face values.
struct Tensor {
    hf: String,
    gguf: String,
    shape: Vec<usize>,
    values: Vec<f32>,
    kind: Kind,
}

/// Element types the tests store matrices in; values are pre-rounded to them so every format
/// holds exactly the same numbers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Storage {
    F32,
    F16,
    BF16,
}

impl Storage {
    fn round(self, x: f32) -> f32 {
        match self {
            Storage::F32 => x,
            Storage::F16 => half::f16::from_f32(x).to_f32(),
            Storage::BF16 => half::bf16::from_f32(x).to_f32(),
        }
    }

    fn bytes(self, values: &[f32]) -> Vec<u8> {
        match self {
            Storage::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Storage::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            Storage::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        }
    }

    fn ggml(self) -> GgmlType {
        match self {
            Storage::F32 => GgmlType::F32,
            Storage::F16 => GgmlType::F16,
            Storage::BF16 => GgmlType::BF16,
        }
    }

    fn dtype(self) -> Dtype {
        match self {
            Storage::F32 => Dtype::F32,
            Storage::F16 => Dtype::F16,
            Storage::BF16 => Dtype::BF16,
        }
    }
}

fn random_model(s: &Shape, storage: Storage, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    let (d, q, kv, f, h) = (s.dim, s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim, s.ffn, s.head_dim);
    let gemma = s.family == Family::Gemma3;
    let mut out = Vec::new();
    let mut add = |hf: String, gguf: String, shape: Vec<usize>, kind: Kind| {
        let n: usize = shape.iter().product();
        let scale = match kind {
            Kind::Norm | Kind::Bias => 0.2,
            _ => 1.5 / (*shape.last().unwrap() as f32).sqrt(),
        };
        let offset = if kind == Kind::Norm && !gemma { 1.0 } else { 0.0 };
        let values = (0..n).map(|_| storage.round(offset + scale * rng.uniform())).collect();
        out.push(Tensor { hf, gguf, shape, values, kind });
    };
    add("model.embed_tokens.weight".into(), "token_embd.weight".into(), vec![s.vocab, d], Kind::Matrix);
    for l in 0..s.n_layers {
        let hf = |n: &str| format!("model.layers.{l}.{n}");
        let gg = |n: &str| format!("blk.{l}.{n}");
        add(hf("input_layernorm.weight"), gg("attn_norm.weight"), vec![d], Kind::Norm);
        add(hf("self_attn.q_proj.weight"), gg("attn_q.weight"), vec![q, d], Kind::QProj);
        add(hf("self_attn.k_proj.weight"), gg("attn_k.weight"), vec![kv, d], Kind::KProj);
        add(hf("self_attn.v_proj.weight"), gg("attn_v.weight"), vec![kv, d], Kind::Matrix);
        add(hf("self_attn.o_proj.weight"), gg("attn_output.weight"), vec![d, q], Kind::Matrix);
        if s.family == Family::Qwen2 {
            add(hf("self_attn.q_proj.bias"), gg("attn_q.bias"), vec![q], Kind::Bias);
            add(hf("self_attn.k_proj.bias"), gg("attn_k.bias"), vec![kv], Kind::Bias);
            add(hf("self_attn.v_proj.bias"), gg("attn_v.bias"), vec![kv], Kind::Bias);
        }
        if matches!(s.family, Family::Qwen3 | Family::Gemma3) {
            add(hf("self_attn.q_norm.weight"), gg("attn_q_norm.weight"), vec![h], Kind::Norm);
            add(hf("self_attn.k_norm.weight"), gg("attn_k_norm.weight"), vec![h], Kind::Norm);
        }
        if gemma {
            add(hf("post_attention_layernorm.weight"), gg("post_attention_norm.weight"), vec![d], Kind::Norm);
            add(hf("pre_feedforward_layernorm.weight"), gg("ffn_norm.weight"), vec![d], Kind::Norm);
            add(hf("post_feedforward_layernorm.weight"), gg("post_ffw_norm.weight"), vec![d], Kind::Norm);
        } else {
            add(hf("post_attention_layernorm.weight"), gg("ffn_norm.weight"), vec![d], Kind::Norm);
        }
        add(hf("mlp.gate_proj.weight"), gg("ffn_gate.weight"), vec![f, d], Kind::Matrix);
        add(hf("mlp.up_proj.weight"), gg("ffn_up.weight"), vec![f, d], Kind::Matrix);
        add(hf("mlp.down_proj.weight"), gg("ffn_down.weight"), vec![d, f], Kind::Matrix);
    }
    add("model.norm.weight".into(), "output_norm.weight".into(), vec![d], Kind::Norm);
    if !s.tied {
        add("lm_head.weight".into(), "output.weight".into(), vec![s.vocab, d], Kind::Matrix);
    }
    out
}

/// llama.cpp's `permute(weights, n_head)`: within each head, row `j·half + i` moves to `2i + j`.
fn permute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let (dst, src) = (h * hd + 2 * i + j, h * hd + j * half + i);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The values GGUF (and llama2.c) hold for tensor `t`.
fn gguf_values(s: &Shape, t: &Tensor) -> Vec<f32> {
    let llama = s.family == Family::Llama;
    match t.kind {
        Kind::QProj if llama => permute_rows(&t.values, t.shape[0], t.shape[1], s.n_heads),
        Kind::KProj if llama => permute_rows(&t.values, t.shape[0], t.shape[1], s.n_kv_heads),
        Kind::Norm if s.family == Family::Gemma3 => t.values.iter().map(|v| v + 1.0).collect(),
        _ => t.values.clone(),
    }
}

fn gguf_bytes(s: &Shape, tensors: &[Tensor], storage: Storage) -> Vec<u8> {
    let arch = s.family.architecture();
    let mut w = GgufWriter::new();
    let u = |x: usize| Value::U32(x as u32);
    w.set("general.architecture", Value::String(arch.into()));
    let meta = [
        ("context_length", u(s.ctx)),
        ("embedding_length", u(s.dim)),
        ("block_count", u(s.n_layers)),
        ("feed_forward_length", u(s.ffn)),
        ("attention.head_count", u(s.n_heads)),
        ("attention.head_count_kv", u(s.n_kv_heads)),
        ("attention.key_length", u(s.head_dim)),
        ("attention.value_length", u(s.head_dim)),
        ("vocab_size", u(s.vocab)),
        ("attention.layer_norm_rms_epsilon", Value::F32(rms_eps(s))),
        ("rope.freq_base", Value::F32(rope_theta(s))),
    ];
    for (k, v) in meta {
        w.set(&format!("{arch}.{k}"), v);
    }
    if s.family == Family::Gemma3 {
        w.set(&format!("{arch}.attention.sliding_window"), u(GEMMA_WINDOW));
        w.set(&format!("{arch}.attention.sliding_window_pattern"), u(GEMMA_PATTERN));
    }
    for t in tensors {
        let values = gguf_values(s, t);
        // Like llama.cpp's converter: 1-D tensors stay F32.
        let ty = if t.shape.len() == 1 { Storage::F32 } else { storage };
        let dims = t.shape.iter().rev().map(|&x| x as u64).collect();
        w.add_tensor(TensorData { name: t.gguf.clone(), dims, ty: ty.ggml(), data: ty.bytes(&values) });
    }
    let mut out = Vec::new();
    w.write(&mut out).unwrap();
    out
}

fn rms_eps(s: &Shape) -> f32 {
    if s.family == Family::Gemma3 {
        1e-6
    } else {
        1e-5
    }
}

fn rope_theta(s: &Shape) -> f32 {
    if s.family == Family::Gemma3 {
        1_000_000.0
    } else {
        10_000.0
    }
}

fn hf_config_json(s: &Shape) -> serde_json::Value {
    let mut c = json!({
        "model_type": match s.family { Family::Gemma3 => "gemma3_text", f => f.architecture() },
        "hidden_size": s.dim, "intermediate_size": s.ffn, "num_hidden_layers": s.n_layers,
        "num_attention_heads": s.n_heads, "num_key_value_heads": s.n_kv_heads, "head_dim": s.head_dim,
        "max_position_embeddings": s.ctx, "rms_norm_eps": rms_eps(s), "rope_theta": rope_theta(s),
        "vocab_size": s.vocab, "tie_word_embeddings": s.tied, "hidden_act": "silu", "torch_dtype": "float32",
    });
    if s.family == Family::Gemma3 {
        let types: Vec<&str> = (0..s.n_layers)
            .map(|l| if l % GEMMA_PATTERN < GEMMA_PATTERN - 1 { "sliding_attention" } else { "full_attention" })
            .collect();
        let extra = json!({
            "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": s.head_dim,
            "sliding_window": GEMMA_WINDOW, "layer_types": types, "rope_local_base_freq": 10000.0,
            "final_logit_softcapping": null, "attn_logit_softcapping": null,
        });
        let obj = c.as_object_mut().unwrap();
        obj.remove("hidden_act");
        obj.extend(extra.as_object().unwrap().clone());
    }
    c
}

/// Writes config.json and the weights as `n_shards` safetensors files (with an index when
/// there is more than one). `prefix` renames `model.` (multimodal Gemma 3 layouts).
fn write_hf_dir(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &[Tensor],
    storage: Storage,
    n_shards: usize,
    prefix: &str,
) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let name = |t: &Tensor| match t.hf.strip_prefix("model.") {
        Some(rest) if !prefix.is_empty() => format!("{prefix}{rest}"),
        _ => t.hf.clone(),
    };
    let data: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|t| (name(t), t.shape.clone(), storage.bytes(&t.values))).collect();
    let mut weight_map = serde_json::Map::new();
    for shard in 0..n_shards {
        let file = if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n_shards:05}.safetensors", shard + 1)
        };
        let views: Vec<(String, TensorView)> = data
            .iter()
            .enumerate()
            .filter(|(i, _)| i % n_shards == shard)
            .map(|(_, (n, shape, bytes))| {
                weight_map.insert(n.clone(), json!(file));
                (n.clone(), TensorView::new(storage.dtype(), shape.clone(), bytes).unwrap())
            })
            .collect();
        std::fs::write(dir.join(&file), safetensors::serialize(views, &None).unwrap()).unwrap();
    }
    if n_shards > 1 {
        let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

const LLAMA2C_MAGIC: u32 = 0x616b_3432;

/// llama2.c int8 groups, as export.py's `quantize_q80`: scale = max|w| / 127, q = round(w / scale).
fn quantize_q80(w: &[f32], gs: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::new();
    for g in w.chunks(gs) {
        let scale = g.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        scales.push(scale);
        q.extend(g.iter().map(|&v| (v / scale).round() as i8));
    }
    (q, scales)
}

/// Writes a llama2.c checkpoint of `version` 0, 1 or 2 (int8 groups of `gs`).
fn llama2c_bytes(s: &Shape, tensors: &[Tensor], version: u32, gs: usize) -> Vec<u8> {
    let get = |name: &str| gguf_values(s, tensors.iter().find(|t| t.gguf == name).unwrap_or_else(|| panic!("{name}")));
    let layers = |name: &str| (0..s.n_layers).map(|l| get(&format!("blk.{l}.{name}"))).collect::<Vec<_>>();
    let vocab = s.vocab as i32;
    let ints =
        [s.dim as i32, s.ffn as i32, s.n_layers as i32, s.n_heads as i32, s.n_kv_heads as i32, vocab, s.ctx as i32];
    let mut out = Vec::new();
    let f32s =
        |out: &mut Vec<u8>, arrays: &[Vec<f32>]| arrays.iter().flatten().for_each(|v| out.extend(v.to_le_bytes()));
    let matrices =
        [layers("attn_q.weight"), layers("attn_k.weight"), layers("attn_v.weight"), layers("attn_output.weight")]
            .concat();
    let ffn = [layers("ffn_gate.weight"), layers("ffn_down.weight"), layers("ffn_up.weight")].concat();
    let classifier = if s.tied { vec![] } else { vec![get("output.weight")] };
    if version == 0 {
        let ints = [&ints[..5], &[if s.tied { vocab } else { -vocab }], &ints[6..]].concat();
        ints.iter().for_each(|i| out.extend(i.to_le_bytes()));
        f32s(&mut out, &[get("token_embd.weight")]);
        f32s(&mut out, &layers("attn_norm.weight"));
        f32s(&mut out, &matrices);
        f32s(&mut out, &layers("ffn_norm.weight"));
        f32s(&mut out, &ffn);
        f32s(&mut out, &[get("output_norm.weight")]);
        // freq_cis_real and freq_cis_imag: NaN, so reading them as weights would poison logits.
        f32s(&mut out, &[vec![f32::NAN; s.ctx * s.head_dim]]);
        f32s(&mut out, &classifier);
        return out;
    }
    out.extend(LLAMA2C_MAGIC.to_le_bytes());
    out.extend((version as i32).to_le_bytes());
    ints.iter().for_each(|i| out.extend(i.to_le_bytes()));
    out.push(u8::from(s.tied));
    if version == 2 {
        out.extend((gs as i32).to_le_bytes());
    }
    out.resize(256, 0);
    f32s(&mut out, &layers("attn_norm.weight"));
    f32s(&mut out, &layers("ffn_norm.weight"));
    f32s(&mut out, &[get("output_norm.weight")]);
    let weights = [vec![get("token_embd.weight")], matrices, ffn, classifier].concat();
    if version == 1 {
        f32s(&mut out, &weights);
    } else {
        let quantized: Vec<_> = weights.iter().map(|w| quantize_q80(w, gs)).collect();
        quantized.iter().for_each(|(q, _)| out.extend(q.iter().map(|&x| x as u8)));
        quantized.iter().for_each(|(_, sc)| sc.iter().for_each(|v| out.extend(v.to_le_bytes())));
    }
    out
}

fn gguf_model(s: &Shape, tensors: &[Tensor], storage: Storage) -> Model {
    Model::from_gguf(GgufFile::from_vec(gguf_bytes(s, tensors, storage)).unwrap()).unwrap()
}

/// GGUF vs Hugging Face for one family and storage; returns the GGUF logits.
fn check_gguf_matches_hf(s: &Shape, storage: Storage, n_shards: usize, seed: u64) -> Vec<f32> {
    let tensors = random_model(s, storage, seed);
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &hf_config_json(s), &tensors, storage, n_shards, "");
    let hf = load_hf_dir(dir.path()).unwrap();
    let gguf = gguf_model(s, &tensors, storage);
    assert_eq!(hf.config.rope_style, RopeStyle::Halves);
    let (a, b) = (logits(&hf, &TOKENS), logits(&gguf, &TOKENS));
    let diff = rel_diff(&a, &b);
    assert!(diff <= GGUF_VS_HF_REL_TOL, "{:?} {storage:?}: HF vs GGUF relative difference {diff}", s.family);
    b
}

#[test]
fn llama_gguf_hf_and_llama2c_agree() {
    let s = LLAMA;
    let tensors = random_model(&s, Storage::F32, 1);
    let dir = tempfile::tempdir().unwrap();
    let hf_dir = dir.path().join("hf");
    write_hf_dir(&hf_dir, &hf_config_json(&s), &tensors, Storage::F32, 1, "");
    let gguf = gguf_model(&s, &tensors, Storage::F32);
    let hf = load_hf_dir(&hf_dir).unwrap();
    let reference = logits(&gguf, &TOKENS);
    assert_eq!(gguf.config.rope_style, RopeStyle::Interleaved);
    let diff = rel_diff(&logits(&hf, &TOKENS), &reference);
    assert!(diff <= GGUF_VS_HF_REL_TOL, "HF vs GGUF relative difference {diff}");

    // The comparison can see a RoPE mistake: HF weights rotated as adjacent pairs miss badly.
    let mut wrong = load_hf_dir(&hf_dir).unwrap();
    wrong.config.rope_style = RopeStyle::Interleaved;
    let miss = rel_diff(&logits(&wrong, &TOKENS), &reference);
    assert!(miss > WRONG_ROPE_MIN_REL_DIFF, "wrong RoPE pairing only moved logits by {miss}");

    // llama2.c holds GGUF's values and runs the same arithmetic: the logits are identical.
    for version in [0, 1] {
        let path = dir.path().join(format!("v{version}.bin"));
        std::fs::write(&path, llama2c_bytes(&s, &tensors, version, 0)).unwrap();
        let model = load_llama2c(&path).unwrap();
        assert_eq!(model.config.rope_style, RopeStyle::Interleaved);
        assert_eq!(logits(&model, &TOKENS), reference, "llama2.c v{version} vs GGUF");
    }
}

#[test]
fn llama_bf16_sharded_hf_matches_gguf_bf16() {
    check_gguf_matches_hf(&LLAMA, Storage::BF16, 3, 2);
}

#[test]
fn qwen2_f16_with_biases_matches_gguf() {
    check_gguf_matches_hf(&QWEN2, Storage::F16, 1, 3);
}

#[test]
fn qwen3_gguf_matches_hf() {
    check_gguf_matches_hf(&QWEN3, Storage::F32, 1, 4);
}

#[test]
fn gemma3_gguf_matches_hf_with_norms_plus_one() {
    let reference = check_gguf_matches_hf(&GEMMA3, Storage::F32, 1, 5);

    // The multimodal layout: model_type gemma3, keys in text_config, tensors under
    // `language_model.model.`, the sliding pattern given as a number.
    let s = GEMMA3;
    let tensors = random_model(&s, Storage::F32, 5);
    let mut text = hf_config_json(&s);
    text.as_object_mut().unwrap().remove("layer_types");
    text["sliding_window_pattern"] = json!(GEMMA_PATTERN);
    let config = json!({"model_type": "gemma3", "text_config": text, "vision_config": {"hidden_size": 8}});
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &config, &tensors, Storage::F32, 2, "language_model.model.");
    let hf = load_hf_dir(dir.path()).unwrap();
    assert_eq!((hf.config.sliding_window, hf.config.sliding_pattern), (Some(GEMMA_WINDOW), GEMMA_PATTERN));
    let diff = rel_diff(&logits(&hf, &TOKENS), &reference);
    assert!(diff <= GGUF_VS_HF_REL_TOL, "multimodal-layout HF vs GGUF relative difference {diff}");
}

#[test]
fn llama2c_v2_int8_matches_v1_of_the_widened_weights() {
    const GROUP: usize = 32;
    let s = Shape { tied: true, ..LLAMA };
    let tensors = random_model(&s, Storage::F32, 6);
    // What v2 stores, widened back: the weights v1 must hold to give the same model.
    let mut widened = random_model(&s, Storage::F32, 6);
    for t in widened.iter_mut().filter(|t| t.shape.len() == 2) {
        let (q, scales) = quantize_q80(&gguf_values(&s, t), GROUP);
        t.values = q.chunks(GROUP).zip(&scales).flat_map(|(g, &sc)| g.iter().map(move |&x| x as f32 * sc)).collect();
        t.kind = Kind::Matrix; // already in GGUF order
    }
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1.bin"), dir.path().join("v2.bin"));
    std::fs::write(&v1, llama2c_bytes(&s, &widened, 1, 0)).unwrap();
    std::fs::write(&v2, llama2c_bytes(&s, &tensors, 2, GROUP)).unwrap();
    assert_eq!(logits(&load_llama2c(&v2).unwrap(), &TOKENS), logits(&load_llama2c(&v1).unwrap(), &TOKENS));
}

#[test]
fn open_model_dispatches_by_format() {
    let s = LLAMA;
    let tensors = random_model(&s, Storage::F32, 7);
    let dir = tempfile::tempdir().unwrap();
    let (gguf, bin, hf) = (dir.path().join("m.gguf"), dir.path().join("m.bin"), dir.path().join("hf"));
    std::fs::write(&gguf, gguf_bytes(&s, &tensors, Storage::F32)).unwrap();
    std::fs::write(&bin, llama2c_bytes(&s, &tensors, 0, 0)).unwrap();
    write_hf_dir(&hf, &hf_config_json(&s), &tensors, Storage::F32, 1, "");
    let reference = logits(&Model::open_gguf(&gguf).unwrap(), &TOKENS);
    for (path, format) in [
        (gguf.clone(), ModelFormat::Gguf),
        (bin.clone(), ModelFormat::Llama2c),
        (hf.clone(), ModelFormat::HfDir),
        (hf.join("config.json"), ModelFormat::HfDir),
        (hf.join("model.safetensors"), ModelFormat::HfDir),
    ] {
        assert_eq!(formats::detect_format(&path).unwrap(), format, "{}", path.display());
        let diff = rel_diff(&logits(&open_model(&path).unwrap(), &TOKENS), &reference);
        assert!(diff <= GGUF_VS_HF_REL_TOL, "{}: {diff}", path.display());
    }
    // A GGUF file is recognised by its magic, whatever its name.
    let renamed = dir.path().join("weights.bin");
    std::fs::copy(&gguf, &renamed).unwrap();
    assert_eq!(formats::detect_format(&renamed).unwrap(), ModelFormat::Gguf);

    let pickle = dir.path().join("pytorch_model.bin");
    std::fs::write(&pickle, b"PK\x03\x04rest of a zip").unwrap();
    assert!(error_line(open_model(&pickle)).contains("PyTorch"));

    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "hello").unwrap();
    let e = error_line(open_model(&other));
    assert!(e.contains("GGUF") && e.contains("safetensors") && e.contains("llama2.c"), "{e}");
    assert!(matches!(open_model(&dir.path().join("missing.gguf")), Err(ModelError::Io { .. })));
}

/// The error of a load that must fail.
fn error_line(r: Result<Model, ModelError>) -> String {
    match r {
        Ok(_) => panic!("a broken model loaded"),
        Err(e) => e.to_string(),
    }
}

/// Runs `load`, turning a panic into a test failure that names `what`.
fn no_panic<T>(what: &str, load: impl FnOnce() -> Result<T, ModelError>) -> Result<T, ModelError> {
    match catch_unwind(AssertUnwindSafe(load)) {
        Ok(r) => r,
        Err(_) => panic!("loading {what} panicked instead of returning an error"),
    }
}

/// Lengths to cut a file of `len` bytes to: every length through its first `header` bytes
/// (where the structure is), then about 64 spread over the rest, then the last 8.
fn cut_lengths(len: usize, header: usize) -> Vec<usize> {
    let header = header.min(len);
    let mut cuts: Vec<usize> = (0..header).chain((header..len).step_by((len - header) / 64 + 1)).collect();
    cuts.extend(len.saturating_sub(8)..len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// GGUF images are cut at every length (in memory); files at every length through their
/// headers and at points through their data.
#[test]
fn truncated_files_are_errors() {
    let s = MICRO;
    let tensors = random_model(&s, Storage::F32, 8);
    let dir = tempfile::tempdir().unwrap();

    let gguf = gguf_bytes(&s, &tensors, Storage::F32);
    assert!(Model::from_gguf(GgufFile::from_vec(gguf.clone()).unwrap()).is_ok());
    for n in 0..gguf.len() {
        let r = no_panic(&format!("GGUF cut at {n}"), || Model::from_gguf(GgufFile::from_vec(gguf[..n].to_vec())?));
        assert!(r.is_err(), "GGUF cut at {n} of {} loaded", gguf.len());
    }

    for version in [0, 1, 2] {
        let bytes = llama2c_bytes(&s, &tensors, version, 8);
        let path = dir.path().join(format!("v{version}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        assert!(load_llama2c(&path).is_ok());
        for n in cut_lengths(bytes.len(), 256 + 64).into_iter().chain([bytes.len() + 1, bytes.len() + 4]) {
            let mut cut = bytes.clone();
            cut.resize(n, 0);
            std::fs::write(&path, &cut).unwrap();
            let r = no_panic(&format!("llama2.c v{version} cut at {n}"), || load_llama2c(&path));
            let e = r.err().unwrap_or_else(|| panic!("llama2.c v{version} of length {n} (of {}) loaded", bytes.len()));
            assert!(!e.to_string().contains('\n'), "error is one line: {e}");
        }
    }

    let hf = dir.path().join("hf");
    write_hf_dir(&hf, &hf_config_json(&s), &tensors, Storage::F32, 1, "");
    let st = std::fs::read(hf.join("model.safetensors")).unwrap();
    assert!(load_hf_dir(&hf).is_ok());
    let header_end = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    for n in cut_lengths(st.len(), header_end + 64) {
        std::fs::write(hf.join("model.safetensors"), &st[..n]).unwrap();
        let r = no_panic(&format!("safetensors cut at {n}"), || load_hf_dir(&hf));
        assert!(r.is_err(), "safetensors cut at {n} of {} loaded", st.len());
    }
    std::fs::write(hf.join("model.safetensors"), &st).unwrap();
    let config = std::fs::read(hf.join("config.json")).unwrap();
    for n in 0..config.len() - 1 {
        std::fs::write(hf.join("config.json"), &config[..n]).unwrap();
        assert!(
            no_panic(&format!("config.json cut at {n}"), || load_hf_dir(&hf)).is_err(),
            "config.json cut at {n} loaded"
        );
    }
}

/// Overwrites each header byte with a few values; loading may succeed or fail but must not
/// panic, and a model that loads must run.
#[test]
fn corrupt_headers_never_panic() {
    let s = MICRO;
    let tensors = random_model(&s, Storage::F32, 9);
    let dir = tempfile::tempdir().unwrap();
    let run = |m: Model| {
        let mut state = m.new_state(4);
        let _ = m.forward(&mut state, &[1, 2], false);
    };

    let gguf = gguf_bytes(&s, &tensors, Storage::F32);
    let data_start = gguf.len() - tensors.iter().map(|t| t.values.len() * 4).sum::<usize>();
    for at in 0..data_start {
        for v in [0x00, 0xff, gguf[at] ^ 0x01, gguf[at] ^ 0x80] {
            let mut b = gguf.clone();
            b[at] = v;
            let what = format!("GGUF with byte {at} = {v:#x}");
            if block_count_beyond_file_size(&b) {
                continue; // see gguf_with_a_huge_block_count_is_an_error
            }
            if let Ok(m) = no_panic(&what, || Model::from_gguf(GgufFile::from_vec(b)?)) {
                no_panic(&what, || {
                    run(m);
                    Ok(())
                })
                .unwrap();
            }
        }
    }

    for version in [0, 1, 2] {
        let bytes = llama2c_bytes(&s, &tensors, version, 8);
        let path = dir.path().join("c.bin");
        for at in 0..if version == 0 { 28 } else { 41 } {
            for v in [0x00, 0xff, bytes[at] ^ 0x01, bytes[at] ^ 0x80] {
                let mut b = bytes.clone();
                b[at] = v;
                std::fs::write(&path, &b).unwrap();
                let what = format!("llama2.c v{version} with byte {at} = {v:#x}");
                if let Ok(m) = no_panic(&what, || load_llama2c(&path)) {
                    no_panic(&what, || {
                        run(m);
                        Ok(())
                    })
                    .unwrap();
                }
            }
        }
    }

    let hf = dir.path().join("hf");
    write_hf_dir(&hf, &hf_config_json(&s), &tensors, Storage::F32, 1, "");
    let st = std::fs::read(hf.join("model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    for at in 0..header_end {
        for v in [b'0', b'"', b'9', st[at] ^ 0x01] {
            let mut b = st.clone();
            b[at] = v;
            std::fs::write(hf.join("model.safetensors"), &b).unwrap();
            let what = format!("safetensors with byte {at} = {v:#x}");
            if let Ok(m) = no_panic(&what, || load_hf_dir(&hf)) {
                no_panic(&what, || {
                    run(m);
                    Ok(())
                })
                .unwrap();
            }
        }
    }
}

/// Whether a GGUF image declares more blocks than it has bytes.
fn block_count_beyond_file_size(b: &[u8]) -> bool {
    let Ok(f) = GgufFile::from_vec(b.to_vec()) else {
        return false;
    };
    let blocks = f.get("llama.block_count").and_then(|v| v.as_u64()).unwrap_or(0);
    blocks > b.len() as u64
}

/// KNOWN BUG (loader.rs, not this module): `load_weights` reserves `cfg.n_layers` blocks before
/// it looks for any tensor, so a GGUF claiming 4·10⁹ blocks aborts the process on allocation
/// instead of reporting the missing tensors. Un-ignore once fixed;
/// `corrupt_headers_never_panic` skips such images until then.
#[test]
fn gguf_with_a_huge_block_count_is_an_error() {
    let s = MICRO;
    let tensors = random_model(&s, Storage::F32, 11);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    for (k, v) in [("embedding_length", s.dim), ("feed_forward_length", s.ffn), ("attention.head_count", s.n_heads)] {
        w.set(&format!("llama.{k}"), Value::U32(v as u32));
    }
    w.set("llama.block_count", Value::U32(u32::MAX));
    for t in &tensors {
        let dims = t.shape.iter().rev().map(|&x| x as u64).collect();
        w.add_tensor(TensorData { name: t.gguf.clone(), dims, ty: GgmlType::F32, data: Storage::F32.bytes(&t.values) });
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes).unwrap();
    assert!(Model::from_gguf(GgufFile::from_vec(bytes).unwrap()).is_err());
}

#[test]
fn hf_directory_problems_are_clear_errors() {
    let s = MICRO;
    let tensors = random_model(&s, Storage::F32, 10);
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    let config = hf_config_json(&s);

    // A dtype kiln does not read: the error names the tensor and the dtype.
    write_hf_dir(&hf, &config, &tensors, Storage::F32, 1, "");
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let bytes = if t.hf.ends_with("up_proj.weight") {
                t.values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect()
            } else {
                Storage::F32.bytes(&t.values)
            };
            (t.hf.clone(), t.shape.clone(), bytes)
        })
        .collect();
    let mut views = Vec::new();
    for (n, shape, bytes) in &data {
        let dtype = if n.ends_with("up_proj.weight") { Dtype::F64 } else { Dtype::F32 };
        views.push((n.clone(), TensorView::new(dtype, shape.clone(), bytes).unwrap()));
    }
    std::fs::write(hf.join("model.safetensors"), safetensors::serialize(views, &None).unwrap()).unwrap();
    let e = error_line(load_hf_dir(&hf));
    assert!(e.contains("model.layers.0.mlp.up_proj.weight") && e.contains("F64"), "{e}");

    // Untied config without lm_head.
    let untied_missing = dir.path().join("untied");
    let without_head: Vec<Tensor> =
        random_model(&s, Storage::F32, 10).into_iter().filter(|t| t.hf != "lm_head.weight").collect();
    write_hf_dir(&untied_missing, &config, &without_head, Storage::F32, 1, "");
    assert!(error_line(load_hf_dir(&untied_missing)).contains("lm_head.weight"));

    // config.json disagrees with the tensors.
    let wrong = dir.path().join("wrong");
    let mut wide = config.clone();
    wide["intermediate_size"] = json!(s.ffn * 2);
    write_hf_dir(&wrong, &wide, &tensors, Storage::F32, 1, "");
    assert!(matches!(load_hf_dir(&wrong), Err(ModelError::Shape { .. })));

    // No config.json; no weights; an index naming a missing shard.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(error_line(load_hf_dir(&empty)).contains("config.json"));
    std::fs::write(empty.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    assert!(error_line(load_hf_dir(&empty)).contains("safetensors"));
    let sharded = dir.path().join("sharded");
    write_hf_dir(&sharded, &config, &tensors, Storage::F32, 2, "");
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    assert!(matches!(load_hf_dir(&sharded), Err(ModelError::Io { .. })));
}
