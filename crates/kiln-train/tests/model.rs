//! The trainer's model is the model `kiln run` executes: gradients against finite differences,
//! a tiny model memorizes a text and kiln's inference path (safetensors and GGUF) reproduces
//! its logits and its greedy continuation.

mod common;

use candle_core::{DType, Device, Tensor};
use kiln_gguf::GgmlType;
use kiln_model::config::Family;
use kiln_model::{Model, ModelConfig};
use kiln_train::model::Transformer;
use kiln_train::optim::{AdamW, GradAccum, Muon};
use kiln_train::rng::Rng;
use std::collections::HashMap;
use std::path::Path;

/// With keys and values rounded to f16 as kiln's KV cache stores them, and exactly 64 positions
/// (kiln's `TILED_MIN_QUERIES` and `MAX_BATCH`) so that kiln takes its f32-query attention path
/// in one pass (shorter batches round queries and the value accumulator to f16 as llama.cpp
/// does), candle and kiln
/// differ only in f32 summation order: logits agree to this fraction of the largest logit.
const LOGIT_REL_TOL: f32 = 1e-4;
/// Without that rounding, the f16 cache alone moves logits of a model with large weights by
/// about 0.3% of their range.
const F16_CACHE_REL_TOL: f32 = 1e-2;
/// Q8_0 weights move logits by about 1% of their range.
const Q8_REL_TOL: f32 = 0.05;

fn tiny_config(vocab: usize, dim: usize, heads: usize, kv_heads: usize, ctx: usize) -> ModelConfig {
    let head_dim = dim / heads;
    ModelConfig {
        vocab_size: vocab,
        dim,
        n_layers: 2,
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim,
        ffn_dim: 2 * dim + 8,
        context_length: ctx,
        rope_dim: head_dim,
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        ..ModelConfig::for_family(Family::Llama)
    }
}

/// A model with large random weights (so every nonlinearity is exercised) in `dtype`.
fn random_model(cfg: &ModelConfig, tied: bool, dtype: DType, seed: u64) -> Transformer {
    let mut rng = Rng::new(seed);
    let tensors: HashMap<String, Tensor> = Transformer::param_shapes(cfg, tied)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data: Vec<f64> = if shape.len() == 1 {
                (0..n).map(|_| 1.0 + 0.3 * rng.normal()).collect()
            } else {
                (0..n).map(|_| 0.4 * rng.normal()).collect()
            };
            (name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap())
        })
        .collect();
    Transformer::from_tensors(cfg.clone(), tied, tensors, dtype).unwrap()
}

#[test]
fn every_parameter_gradient_matches_finite_differences() {
    for (tied, kv_heads) in [(true, 2), (false, 4)] {
        let cfg = tiny_config(37, 16, 4, kv_heads, 8);
        let model = random_model(&cfg, tied, DType::F64, 11);
        common::assert_gradients_match_finite_differences(&model, 37, 4, &format!("llama (tied {tied})"));
    }
}

fn tokenizer_dir(dir: &Path, text: &str) -> kiln_text::Tokenizer {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, text.repeat(20)).unwrap();
    kiln_train::tokenizer_train::train_tokenizer(&corpus, 320, u64::MAX, &dir.join("tok")).unwrap();
    kiln_text::Tokenizer::from_dir(&dir.join("tok")).unwrap()
}

/// Logits of kiln's inference forward pass, all positions.
fn kiln_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut state = model.new_state(model.config.context_length);
    model.forward(&mut state, ids, true).unwrap().to_vec()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn argmaxes(logits: &[f32], vocab: usize) -> Vec<usize> {
    logits
        .chunks(vocab)
        .map(|row| row.iter().enumerate().fold(0, |b, (i, &x)| if x > row[b] { i } else { b }))
        .collect()
}

/// The trainer's logits for one sequence, flattened.
fn trainer_logits(model: &Transformer, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&input).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The line the tiny models memorize.
const MEMORIZED: &str =
    "ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n";

/// The memorization task both optimizers are checked on: 200 full-batch steps over
/// [`MEMORIZED`], each applied by `update(model, gradients)`. Returns the tokenizer, the ids,
/// the config, the trained model and the last loss.
fn memorize(
    dir: &Path,
    mut update: impl FnMut(&Transformer, &GradAccum),
) -> (kiln_text::Tokenizer, Vec<u32>, ModelConfig, Transformer, f32) {
    let tok = tokenizer_dir(dir, MEMORIZED);
    let mut ids = vec![tok.bos_id().unwrap()];
    ids.extend(tok.encode(MEMORIZED, false).unwrap());
    let n = ids.len() - 1;
    let cfg = tiny_config(tok.vocab_size(), 32, 4, 2, 128);
    let model = Transformer::init(cfg.clone(), true, 3, DType::F32).unwrap();
    let x = Tensor::new(&ids[..n], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let y = Tensor::new(&ids[1..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let mut loss = f32::MAX;
    for _ in 0..200 {
        let l = model.loss(&x, &y).unwrap();
        loss = l.to_scalar::<f32>().unwrap();
        let mut acc = GradAccum::new(model.params());
        acc.add(model.params(), &l.backward().unwrap(), 1.0).unwrap();
        update(&model, &acc);
    }
    (tok, ids, cfg, model, loss)
}

#[test]
fn tiny_model_memorizes_and_kiln_inference_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = MEMORIZED;
    let mut opt = None;
    let (tok, ids, cfg, model, loss) = memorize(dir.path(), |model, acc| {
        let opt = opt.get_or_insert_with(|| AdamW::new(model.params(), (0.9, 0.99), 1e-8, 0.0));
        opt.step(model.params(), acc.grads(), 1e-2).unwrap();
    });
    assert!(loss < 0.05, "loss {loss} after 200 full-batch steps");

    // Saved as a Hugging Face directory, kiln's own forward pass gives the same logits...
    let hf = dir.path().join("model");
    kiln_train::export::write_hf_dir(&hf, &model.tensors(), &cfg, true, &dir.path().join("tok"), None).unwrap();
    let mut model = model;
    model.inference_rounding = true;
    let probe: Vec<u32> = ids.iter().cycle().take(64).copied().collect();
    let ours = trainer_logits(&model, &probe);
    let kiln = kiln_model::formats::load_hf_dir(&hf).unwrap();
    let theirs = kiln_logits(&kiln, &probe);
    let d = max_rel_diff(&ours, &theirs);
    assert!(d < LOGIT_REL_TOL, "candle vs kiln (safetensors): {d}");

    // ...and greedy decoding through kiln's KV-cached path reproduces the text.
    let mut state = kiln.new_state(64);
    let mut out = vec![ids[0]];
    let mut logits = kiln.forward(&mut state, &ids[..1], false).unwrap().to_vec();
    while out.len() < ids.len() {
        let next = argmaxes(&logits, cfg.vocab_size)[0] as u32;
        out.push(next);
        logits = kiln.forward(&mut state, &[next], false).unwrap().to_vec();
    }
    assert_eq!(tok.decode(&out, true).unwrap(), text);

    // GGUF export: f32 gives the same logits, q8_0 nearly the same and the same predictions.
    for (ty, tol) in [(GgmlType::F32, LOGIT_REL_TOL), (GgmlType::F16, 0.01), (GgmlType::Q8_0, Q8_REL_TOL)] {
        let path = dir.path().join(format!("m-{ty}.gguf"));
        common::export_gguf(&hf, ty, &path).unwrap();
        let g = Model::open_gguf(&path).unwrap();
        let logits = kiln_logits(&g, &probe);
        let d = max_rel_diff(&ours, &logits);
        assert!(d < tol, "{ty}: {d}");
        assert_eq!(argmaxes(&logits, cfg.vocab_size), argmaxes(&ours, cfg.vocab_size), "{ty}");
        let gtok = kiln_text::Tokenizer::from_gguf(&kiln_gguf::GgufFile::open(&path).unwrap()).unwrap();
        assert_eq!(gtok.encode(text, false).unwrap(), ids[1..].to_vec(), "GGUF tokenizer ({ty})");
    }
}

#[test]
fn untied_gqa_model_logits_match_kiln() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer_dir(dir.path(), "abc def ghi jkl mno pqr stu vwx yz\n");
    let cfg = tiny_config(tok.vocab_size(), 48, 6, 2, 80);
    let mut model = random_model(&cfg, false, DType::F32, 9);
    let ids: Vec<u32> = (0..64).map(|i| (i * 7 % tok.vocab_size()) as u32).collect();
    let plain = trainer_logits(&model, &ids);
    model.inference_rounding = true;
    let ours = trainer_logits(&model, &ids);
    let hf = dir.path().join("model");
    kiln_train::export::write_hf_dir(&hf, &model.tensors(), &cfg, false, &dir.path().join("tok"), None).unwrap();
    let kiln = kiln_logits(&kiln_model::formats::load_hf_dir(&hf).unwrap(), &ids);
    let d = max_rel_diff(&ours, &kiln);
    assert!(d < LOGIT_REL_TOL, "safetensors: {d}");
    let d = max_rel_diff(&plain, &kiln);
    assert!(d < F16_CACHE_REL_TOL, "safetensors, f32 keys and values: {d}");
    let path = dir.path().join("m.gguf");
    common::export_gguf(&hf, GgmlType::F32, &path).unwrap();
    let d = max_rel_diff(&ours, &kiln_logits(&Model::open_gguf(&path).unwrap(), &ids));
    assert!(d < LOGIT_REL_TOL, "gguf: {d}");
}

/// With Muon on the hidden matrices (AdamW on the rest, as `--optimizer muon` runs it) the
/// tiny model memorizes the text too.
#[test]
fn tiny_model_memorizes_with_muon() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts: Option<(AdamW, Muon)> = None;
    let (.., loss) = memorize(dir.path(), |model, acc| {
        let (adam, muon) = opts.get_or_insert_with(|| {
            let mut adam = AdamW::new(model.params(), (0.9, 0.99), 1e-8, 0.0);
            let muon = Muon::new(model.params(), 0.95, 0.0);
            adam.skip = muon.mask(model.params().len());
            assert!(adam.skip.iter().filter(|&&s| s).count() >= 4, "the attention and MLP matrices go to Muon");
            (adam, muon)
        });
        adam.step(model.params(), acc.grads(), 1e-2).unwrap();
        muon.step(model.params(), acc.grads(), 0.02).unwrap();
    });
    assert!(loss < 0.05, "loss {loss} after 200 full-batch steps");
}

/// `kiln rl` samples its policy from weights held in memory: they must run exactly as the
/// same weights written to a directory and read back, tied or not (and nearly so quantized
/// to Q8_0); and an RL training row
/// weighs the answer's log-probability as the inference engine computes it.
#[test]
fn in_memory_weights_run_as_written_and_rl_rows_weigh_the_sampled_answer() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer_dir(dir.path(), "abc def ghi jkl mno pqr stu vwx yz\n");
    for tied in [true, false] {
        // Rows of whole Q8_0 blocks (32), so that the quantized copy quantizes every matrix.
        let cfg = ModelConfig { ffn_dim: 128, ..tiny_config(tok.vocab_size(), 64, 8, 2, 80) };
        let mut model = random_model(&cfg, tied, DType::F32, 21);
        let ids: Vec<u32> = (0..40).map(|i| (i * 5 % tok.vocab_size()) as u32).collect();
        let hf = dir.path().join(format!("model-{tied}"));
        kiln_train::export::write_hf_dir(&hf, &model.tensors(), &cfg, tied, &dir.path().join("tok"), None).unwrap();
        let written = kiln_model::formats::load_hf_dir(&hf).unwrap();
        let f32s = kiln_train::export::to_f32_tensors(&model.tensors()).unwrap();
        let in_memory = kiln_model::formats::f32::model_from_f32(&written.config, &f32s).unwrap();
        assert_eq!(kiln_logits(&in_memory, &ids), kiln_logits(&written, &ids), "tied {tied}");
        // Sampled in Q8_0, as `kiln rl` does by default: as the Q8_0 GGUF kiln exports.
        let q8 = kiln_model::formats::f32::model_from_f32_as(&written.config, &f32s, GgmlType::Q8_0).unwrap();
        let path = dir.path().join(format!("q8-{tied}.gguf"));
        common::export_gguf(&hf, GgmlType::Q8_0, &path).unwrap();
        let d = max_rel_diff(&kiln_logits(&q8, &ids), &kiln_logits(&Model::open_gguf(&path).unwrap(), &ids));
        assert!(d < LOGIT_REL_TOL, "tied {tied}: q8_0 in memory against the Q8_0 GGUF: {d}");

        // An answer of 12 tokens after a prompt of 28: the row's weighted log-probability is
        // the weight times the answer's log-probability under inference.
        let (prompt, answer) = ids.split_at(28);
        let row = kiln_train::rl::answer_row(prompt, answer, -0.5);
        model.inference_rounding = true;
        let trained = kiln_train::finetune::weighted_logp(&model, &row).unwrap().to_scalar::<f32>().unwrap() as f64;
        let inferred = kiln_train::rl::answer_logp(&in_memory, prompt, answer).unwrap();
        assert!(
            (trained - (-0.5 * inferred)).abs() < 1e-3 * inferred.abs().max(1.0),
            "tied {tied}: {trained} vs -0.5 × {inferred}"
        );
    }
}
