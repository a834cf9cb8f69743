//! Every family kiln runs is trainable: for llama, qwen2, qwen3 and gemma3, on small random
//! configurations that switch on each feature (Q/K/V biases, q/k-norm, post-norms, GeGLU,
//! scaled embeddings, sliding-window layers with a window shorter than the sequence and their
//! own RoPE base, an attention scale of its own, final-logit soft-capping, grouped-query
//! attention, tied and untied output), the trainer's gradients match finite differences, its
//! fused kernels match its candle ops, its logits match kiln's inference executor on the
//! Hugging Face directory and the GGUF it exports, that GGUF loads back for fine-tuning with
//! the same logits, and LoRA adapters merge into every family.

mod common;

use candle_core::{DType, Device, Tensor};
use kiln_gguf::GgmlType;
use kiln_model::config::Family;
use kiln_model::{Model, ModelConfig};
use kiln_train::finetune::{load_base, weighted_logps, Example};
use kiln_train::lora::{Lora, LoraConfig};
use kiln_train::model::Transformer;
use kiln_train::rng::Rng;
use std::collections::HashMap;
use std::path::Path;

/// The trainer with inference rounding (f16 keys and values, ggml's GELU table) against
/// kiln's inference over exactly 64 positions (its f32-query attention path, in one pass):
/// they differ only in f32 summation order (see tests/model.rs).
const LOGIT_REL_TOL: f32 = 1e-4;
/// A GGUF written in f32 and loaded back for training differs from the original only where
/// Gemma's norms went through `1 + w` and back.
const RELOAD_REL_TOL: f32 = 1e-5;
/// Gemma 3 270M's 18 layers through the same rounding: a real model's agreement, with a GELU
/// input rounded to a neighbouring f16 value now and then (see `random_model`).
const REAL_MODEL_REL_TOL: f32 = 1e-3;
/// Positions of the parity runs.
const PROBE_LEN: usize = 64;

/// One random configuration of a family, and what it switches on.
#[derive(Clone, Copy, Debug)]
struct Case {
    family: Family,
    tied: bool,
    dim: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
    /// Gemma: the sliding window and the period of global layers.
    window: Option<(usize, usize)>,
    /// Gemma: `query_pre_attn_scalar` in place of the head width.
    query_scalar: Option<f32>,
    /// Gemma: final-logit soft-cap.
    softcap: Option<f32>,
}

impl Case {
    fn config(&self, vocab: usize, ctx: usize) -> ModelConfig {
        let base = ModelConfig::for_family(self.family);
        let gemma = self.family == Family::Gemma3;
        ModelConfig {
            vocab_size: vocab,
            dim: self.dim,
            n_layers: self.layers,
            n_heads: self.heads,
            n_kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            ffn_dim: 2 * self.dim + 8,
            context_length: ctx,
            rms_eps: 1e-6,
            rope_theta: if gemma { 1_000_000.0 } else { 10_000.0 },
            rope_theta_local: 10_000.0,
            rope_dim: self.head_dim,
            sliding_window: self.window.map(|(w, _)| w),
            sliding_pattern: self.window.map_or(base.sliding_pattern, |(_, p)| p),
            attn_scale: 1.0 / self.query_scalar.unwrap_or(self.head_dim as f32).sqrt(),
            final_logit_softcap: self.softcap,
            ..base
        }
    }
}

/// Two configurations per family: together they switch on every feature, tied and untied,
/// with and without shared key/value heads.
fn cases() -> Vec<Case> {
    let plain = |family, tied, heads, kv_heads| Case {
        family,
        tied,
        dim: 32,
        heads,
        kv_heads,
        head_dim: 32 / heads,
        layers: 2,
        window: None,
        query_scalar: None,
        softcap: None,
    };
    vec![
        plain(Family::Llama, false, 4, 2),
        plain(Family::Llama, true, 4, 4),
        plain(Family::Qwen2, true, 4, 2),
        plain(Family::Qwen2, false, 4, 4),
        // Qwen3's heads are wider than dim / heads.
        Case { head_dim: 12, ..plain(Family::Qwen3, false, 4, 2) },
        plain(Family::Qwen3, true, 4, 4),
        // Sliding, global, sliding: a window of 5 on a 64-token probe.
        Case {
            layers: 3,
            window: Some((5, 2)),
            query_scalar: Some(20.0),
            softcap: Some(3.0),
            ..plain(Family::Gemma3, true, 4, 2)
        },
        Case { layers: 3, window: Some((7, 3)), softcap: Some(4.0), ..plain(Family::Gemma3, false, 4, 4) },
    ]
}

/// A random model in `dtype` whose every nonlinearity is exercised: norms scaling by about 1
/// (in the family's stored form), biases, and large matrices (0.4), except that the
/// projections writing into the residual stream (and Gemma's post-norms) are small and Q/K
/// moderate, as in trained models (and GPT-2's initialisation). A random model with all of
/// them large is chaotic: a single key, value or GELU input that the two executors round to
/// neighbouring f16 values (their f32 values differ in the last bits) then moves later logits
/// by up to 1e-3 of the largest; with these scales, over 32 seeds per configuration, rows
/// agree to ~3e-7 until such a rounding and the worst row of a run is 2e-5 to 2e-4 after it.
fn random_model(cfg: &ModelConfig, tied: bool, dtype: DType, seed: u64) -> Transformer {
    let mut rng = Rng::new(seed);
    let offset = f64::from(cfg.norm_weight_offset);
    let tensors: HashMap<String, Tensor> = Transformer::param_shapes(cfg, tied)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let post = name.contains("post_feedforward") || (cfg.post_norms && name.contains("post_attention"));
            let (mean, std) = if name.ends_with("norm.weight") {
                let scale = if post { 0.1 } else { 1.0 };
                (scale - offset, 0.3 * scale)
            } else if shape.len() == 1 {
                (0.0, 0.3)
            } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                (0.0, 0.05)
            } else if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
                (0.0, 0.1)
            } else {
                (0.0, 0.4)
            };
            let data: Vec<f64> = (0..n).map(|_| mean + std * rng.normal()).collect();
            (name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap())
        })
        .collect();
    Transformer::from_tensors(cfg.clone(), tied, tensors, dtype).unwrap()
}

fn tokenizer_dir(dir: &Path) -> kiln_text::Tokenizer {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, "abc def ghi jkl mno pqr stu vwx yz\n".repeat(20)).unwrap();
    kiln_train::tokenizer_train::train_tokenizer(&corpus, 320, u64::MAX, &dir.join("tok")).unwrap();
    kiln_text::Tokenizer::from_dir(&dir.join("tok")).unwrap()
}

fn trainer_logits(model: &Transformer, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&input).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn kiln_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut state = model.new_state(ids.len());
    model.forward(&mut state, ids, true).unwrap().to_vec()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn every_parameter_gradient_matches_finite_differences_in_every_family() {
    for case in cases() {
        // Narrow enough for f64 finite differences; seven positions against a window of 3.
        let case = Case { dim: 16, head_dim: case.head_dim / 2, window: case.window.map(|(_, p)| (3, p)), ..case };
        let cfg = case.config(37, 16);
        let model = random_model(&cfg, case.tied, DType::F64, 11);
        let label = format!("{:?} (tied {})", case.family, case.tied);
        common::assert_gradients_match_finite_differences(&model, 37, 3, &label);
    }
}

/// The fused f32 kernels (GeGLU, windowed attention, per-head norms, soft-capped
/// cross-entropy included) give the candle ops' loss and gradients, on plain and packed rows.
#[test]
fn fused_kernels_give_the_candle_ops_loss_and_gradients_in_every_family() {
    for case in cases() {
        let cfg = case.config(37, 32);
        let mut rng = Rng::new(9);
        let ids: Vec<u32> = (0..3 * 11).map(|_| rng.below(37) as u32).collect();
        let targets: Vec<u32> = (0..3 * 11).map(|_| rng.below(37) as u32).collect();
        let x = Tensor::from_vec(ids.clone(), (3, 11), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(targets, (3, 11), &Device::Cpu).unwrap();
        let packed = Example {
            ids: ids[..20].to_vec(),
            weights: (1..20).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect(),
            starts: vec![0, 5, 12],
        };
        let plain = Example { ids: ids[20..30].to_vec(), weights: vec![1.0; 9], starts: Vec::new() };
        let other = Example { ids: ids[22..33].to_vec(), weights: vec![0.5; 10], starts: Vec::new() };
        let run = |fused: bool| {
            let mut model = random_model(&cfg, case.tied, DType::F32, 13);
            model.fused = fused;
            let loss = model.loss(&x, &y).unwrap();
            // A row that packs documents itself, and two rows the function packs together.
            let logps = Tensor::cat(
                &[weighted_logps(&model, &[&packed]).unwrap(), weighted_logps(&model, &[&plain, &other]).unwrap()],
                0,
            )
            .unwrap();
            let grads = (&loss + logps.sum_all().unwrap()).unwrap().backward().unwrap();
            let values: Vec<f32> =
                [common::scalar(&loss) as f32].into_iter().chain(logps.to_vec1::<f32>().unwrap()).collect();
            let g: Vec<(String, Vec<f32>)> = model
                .params()
                .iter()
                .map(|(n, v)| (n.clone(), grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()))
                .collect();
            (values, g)
        };
        let ((va, ga), (vb, gb)) = (run(true), run(false));
        assert!(max_rel_diff(&va, &vb) < 1e-5, "{case:?}: values {va:?} vs {vb:?}");
        for ((name, a), (_, b)) in ga.iter().zip(&gb) {
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                worst <= 1e-4 * scale.max(1e-3),
                "{:?} {name}: gradients differ by {worst} (largest {scale})",
                case.family
            );
        }
    }
}

/// The trainer's logits are kiln inference's on the Hugging Face directory and the GGUF it
/// exports, and the GGUF loads back for fine-tuning as the same model.
#[test]
fn trainer_logits_match_kiln_inference_in_every_family() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer_dir(dir.path());
    let probe: Vec<u32> = (0..PROBE_LEN).map(|i| (i * 7 % tok.vocab_size()) as u32).collect();
    for (n, case) in cases().into_iter().enumerate() {
        let cfg = case.config(tok.vocab_size(), 80);
        let mut model = random_model(&cfg, case.tied, DType::F32, 17 + n as u64);
        model.inference_rounding = true;
        let ours = trainer_logits(&model, &probe);
        let what = format!("{:?} (tied {})", case.family, case.tied);

        let hf = dir.path().join(format!("hf{n}"));
        kiln_train::export::write_hf_dir(&hf, &model.tensors(), &cfg, case.tied, &dir.path().join("tok"), None)
            .unwrap();
        let kiln = kiln_model::formats::load_hf_dir(&hf).unwrap();
        assert_eq!(kiln.config, ModelConfig { attn_scale: kiln.config.attn_scale, ..cfg.clone() }, "{what}");
        let d = max_rel_diff(&ours, &kiln_logits(&kiln, &probe));
        eprintln!("{what}: safetensors {d:.1e}");
        assert!(d < LOGIT_REL_TOL, "{what}, safetensors: {d}");

        let gguf = dir.path().join(format!("m{n}.gguf"));
        let exported = common::export_gguf(&hf, GgmlType::F32, &gguf);
        if case.query_scalar.is_some() {
            // GGUF (and llama.cpp) scale Gemma's queries by the head width: refused, not wrong.
            let e = exported.unwrap_err().to_string();
            assert!(e.contains("GGUF cannot express"), "{what}: {e}");
            continue;
        }
        exported.unwrap();
        let d = max_rel_diff(&ours, &kiln_logits(&Model::open_gguf(&gguf).unwrap(), &probe));
        eprintln!("{what}: gguf {d:.1e}");
        assert!(d < LOGIT_REL_TOL, "{what}, gguf: {d}");

        let base = load_base(&gguf).unwrap();
        assert_eq!(base.config, cfg, "{what}: the GGUF's configuration");
        assert_eq!(base.tied, case.tied, "{what}");
        let mut back = Transformer::from_tensors(base.config, base.tied, base.tensors, DType::F32).unwrap();
        back.inference_rounding = true;
        let d = max_rel_diff(&ours, &trainer_logits(&back, &probe));
        eprintln!("{what}: GGUF loaded for training {d:.1e}");
        assert!(d < RELOAD_REL_TOL, "{what}, GGUF loaded for training: {d}");
    }
}

/// LoRA adapts the same seven projections in every family (after Qwen2's biases, beside
/// Gemma's norms), and merging gives the adapted model's logits.
#[test]
fn lora_merges_into_every_family() {
    for case in cases() {
        let cfg = case.config(37, 32);
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            targets: ["q", "k", "v", "o", "gate", "up", "down"].iter().map(|s| s.to_string()).collect(),
        };
        let mut adapters = Lora::init(lora, &cfg, 3).unwrap();
        // A trained state: B away from zero, so the update shows.
        let mut rng = Rng::new(4);
        let tensors: HashMap<String, Tensor> = adapters
            .tensors()
            .into_iter()
            .map(|(n, t)| {
                let v: Vec<f32> = (0..t.elem_count()).map(|_| (0.2 * rng.normal()) as f32).collect();
                (n, Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap())
            })
            .collect();
        adapters = Lora::from_tensors(adapters.config.clone(), &cfg, tensors, 3).unwrap();
        let mut model = random_model(&cfg, case.tied, DType::F32, 21);
        let ids: Vec<u32> = (0..20).map(|i| (i * 5 % 37) as u32).collect();
        let plain = trainer_logits(&model, &ids);
        let merged = adapters.merge(&model.tensors()).unwrap();
        model.adapters = Some(adapters);
        let adapted = trainer_logits(&model, &ids);
        let merged = Transformer::from_tensors(cfg.clone(), case.tied, merged, DType::F32).unwrap();
        assert!(max_rel_diff(&adapted, &plain) > 1e-2, "{:?}: the adapters change nothing", case.family);
        let d = max_rel_diff(&adapted, &trainer_logits(&merged, &ids));
        assert!(d < 1e-5, "{:?}: merged {d}", case.family);
    }
}

/// Gemma 3 270M from the cache, the real model: dequantized for training it computes what
/// kiln inference computes from the same f32 weights, predicts what kiln predicts from the
/// quantized file, and the GGUF its Hugging Face directory exports (SentencePiece vocabulary,
/// `1 + w` norms, gemma3 header) tokenizes as the original and predicts the same again.
#[test]
fn gemma3_270m_trains_from_and_exports_to_gguf() {
    let Some(path) = kiln_test_models::GEMMA3.path() else {
        return;
    };
    let base = load_base(&path).unwrap();
    assert_eq!(base.config.family, Family::Gemma3);
    let original = kiln_text::Tokenizer::from_gguf(&kiln_gguf::GgufFile::open(&path).unwrap()).unwrap();
    // 64 tokens: kiln's f32-query attention, as in the parity tests above.
    let text = "The capital of France is Paris. The capital of Italy is Rome. ".repeat(8);
    let ids = original.encode(&text, true).unwrap()[..PROBE_LEN].to_vec();
    let mut model =
        Transformer::from_tensors(base.config.clone(), base.tied, base.tensors.clone(), DType::F32).unwrap();
    model.inference_rounding = true;
    let ours = trainer_logits(&model, &ids);
    let vocab = base.config.vocab_size;
    let last = |l: &[f32]| l[l.len() - vocab..].to_vec();

    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    kiln_train::finetune::write_hf(&base, &base.tensors, &hf).unwrap();
    let f32_kiln = kiln_logits(&kiln_model::formats::load_hf_dir(&hf).unwrap(), &ids);
    let d = max_rel_diff(&ours, &f32_kiln);
    eprintln!("trainer vs kiln, same f32 weights: {d:.1e}");
    assert!(d < REAL_MODEL_REL_TOL, "trainer vs kiln on the same f32 weights: {d}");

    let quantized = kiln_logits(&Model::open_gguf(&path).unwrap(), &ids);
    eprintln!("trainer vs kiln on the Q4_K_M file: {:.1e}", max_rel_diff(&last(&ours), &last(&quantized)));
    assert_eq!(argmax(&last(&ours)), argmax(&last(&quantized)));

    let gguf = dir.path().join("m.gguf");
    common::export_gguf(&hf, GgmlType::Q8_0, &gguf).unwrap();
    let exported = kiln_text::Tokenizer::from_gguf(&kiln_gguf::GgufFile::open(&gguf).unwrap()).unwrap();
    for text in ["The capital of France is", "  two spaces, ünïcödé, 日本語 and <start_of_turn>user\n", "x\n\ny"]
    {
        assert_eq!(exported.encode(text, true).unwrap(), original.encode(text, true).unwrap(), "{text:?}");
    }
    let again = kiln_logits(&Model::open_gguf(&gguf).unwrap(), &ids);
    eprintln!("trainer vs kiln on the exported Q8_0 file: {:.1e}", max_rel_diff(&last(&ours), &last(&again)));
    assert_eq!(argmax(&last(&ours)), argmax(&last(&again)));
}

fn argmax(x: &[f32]) -> usize {
    x.iter().enumerate().fold(0, |b, (i, &v)| if v > x[b] { i } else { b })
}
