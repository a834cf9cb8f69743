//! Fine-tuning pieces against references: the SFT mask on a real Alpaca row covers exactly the
//! answer and its end-of-turn marker, LoRA's merged weights give the adapter model's logits, a
//! LoRA step moves only the adapters, and a model dequantized from GGUF reproduces the logits
//! of the Hugging Face directory it was exported from.

#[allow(dead_code)] // each test binary uses part of the helpers
mod common;

use candle_core::{DType, Device, Tensor};
use kiln_gguf::GgmlType;
use kiln_model::config::Family;
use kiln_model::ModelConfig;
use kiln_text::conversation::{conversation_from_json, read_rows};
use kiln_text::{ChatTemplate, Tokenizer};
use kiln_train::finetune::{encode_example, load_base, weighted_logp, Example};
use kiln_train::lora::{Lora, LoraConfig};
use kiln_train::model::Transformer;
use kiln_train::optim::{AdamW, GradAccum};
use kiln_train::rng::Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn config(vocab: usize) -> ModelConfig {
    let (dim, heads) = (32, 4);
    ModelConfig {
        vocab_size: vocab,
        dim,
        n_layers: 2,
        n_heads: heads,
        n_kv_heads: 2,
        head_dim: dim / heads,
        ffn_dim: 72,
        context_length: 64,
        rope_dim: dim / heads,
        attn_scale: 1.0 / ((dim / heads) as f32).sqrt(),
        ..ModelConfig::for_family(Family::Llama)
    }
}

fn random_model(cfg: &ModelConfig, seed: u64) -> Transformer {
    let mut rng = Rng::new(seed);
    let tensors: HashMap<String, Tensor> = Transformer::param_shapes(cfg, true)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let std = if shape.len() == 1 { 0.0 } else { 0.3 };
            let base = if shape.len() == 1 { 1.0 } else { 0.0 };
            let data: Vec<f32> = (0..n).map(|_| (base + std * rng.normal()) as f32).collect();
            (name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap())
        })
        .collect();
    Transformer::from_tensors(cfg.clone(), true, tensors, DType::F32).unwrap()
}

fn lora_config(dropout: f64) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout,
        targets: ["q", "k", "v", "o", "gate", "up", "down"].iter().map(|s| s.to_string()).collect(),
    }
}

fn logits(model: &Transformer, ids: &[u32]) -> Vec<f32> {
    let x = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Adapters with random B (a trained state), so the update is not zero.
fn trained_lora(cfg: &ModelConfig) -> Lora {
    let fresh = Lora::init(lora_config(0.0), cfg, 1).unwrap();
    let mut rng = Rng::new(2);
    let tensors = fresh
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let data: Vec<f32> = (0..t.elem_count()).map(|_| (0.2 * rng.normal()) as f32).collect();
            (n, Tensor::from_vec(data, t.shape(), &Device::Cpu).unwrap())
        })
        .collect();
    Lora::from_tensors(lora_config(0.0), cfg, tensors, 1).unwrap()
}

#[test]
fn merged_lora_gives_the_adapter_models_logits() {
    let cfg = config(61);
    let ids: Vec<u32> = (0..20).map(|i| (i * 13 % 61) as u32).collect();
    let mut model = random_model(&cfg, 7);
    let base_logits = logits(&model, &ids);
    model.adapters = Some(trained_lora(&cfg));
    let adapted = logits(&model, &ids);
    let merged_tensors = model.adapters.as_ref().unwrap().merge(&model.tensors()).unwrap();
    let merged = Transformer::from_tensors(cfg.clone(), true, merged_tensors, DType::F32).unwrap();
    let merged_logits = logits(&merged, &ids);
    let moved = max_abs_diff(&base_logits, &adapted);
    let d = max_abs_diff(&adapted, &merged_logits);
    assert!(moved > 0.1, "the adapters should change the logits (moved {moved})");
    assert!(d < 1e-4 * moved.max(1.0), "merged vs adapter logits differ by {d}");

    // Saved and loaded in PEFT's layout, the adapters merge to the same weights.
    let dir = tempfile::tempdir().unwrap();
    let lora = model.adapters.as_ref().unwrap();
    lora.save(dir.path()).unwrap();
    let back = Lora::load(dir.path(), &cfg).unwrap();
    assert_eq!(back.config, lora.config);
    let again =
        Transformer::from_tensors(cfg.clone(), true, back.merge(&model.tensors()).unwrap(), DType::F32).unwrap();
    assert_eq!(logits(&again, &ids), merged_logits);
}

#[test]
fn fresh_lora_is_the_base_model_and_a_step_moves_only_adapters() {
    let cfg = config(61);
    let ids: Vec<u32> = (0..24).map(|i| (i * 7 % 61) as u32).collect();
    let mut model = random_model(&cfg, 3);
    let before = logits(&model, &ids);
    let base = snapshot(model.tensors());
    model.adapters = Some(Lora::init(lora_config(0.1), &cfg, 5).unwrap());
    model.frozen = true;
    assert_eq!(logits(&model, &ids), before, "B = 0: the adapted model starts as the base");
    let lora = model.adapters.as_ref().unwrap();
    lora.set_training(true);
    let params = lora.params().to_vec();
    let adapters_before = snapshot(lora.tensors());
    let ex = Example { ids: ids.clone(), weights: vec![1.0; ids.len() - 1], starts: Vec::new() };
    let loss = (weighted_logp(&model, &ex).unwrap() * -1.0).unwrap();
    let grads = loss.backward().unwrap();
    for (name, v) in model.params() {
        assert!(grads.get(v.as_tensor()).is_none(), "{name}: a frozen weight got a gradient");
    }
    let mut acc = GradAccum::new(&params);
    acc.add(&params, &grads, 1.0).unwrap();
    assert!(acc.norm() > 0.0);
    let mut opt = AdamW::new(&params, (0.9, 0.999), 1e-8, 0.0);
    opt.step(&params, acc.grads(), 1e-2).unwrap();
    for (name, t) in model.tensors() {
        let same = (t - &base[&name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(same, 0.0, "{name} changed");
    }
    let after = lora.tensors();
    let changed = adapters_before
        .iter()
        .filter(|(n, t)| {
            let d = (*t - &after[*n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            d > 0.0
        })
        .count();
    // Every B moves (its gradient is nonzero); A's gradient is zero while B is zero.
    assert_eq!(changed, adapters_before.len() / 2, "{changed} of {} adapter tensors moved", adapters_before.len());
    lora.set_training(false);
    assert_ne!(logits(&model, &ids), before, "the step changed the adapted model");
    // A held-out pass records no graph, through the adapters either, and computes the same.
    let tracked = weighted_logp(&model, &ex).unwrap();
    let free = model.no_grad(|| weighted_logp(&model, &ex)).unwrap();
    assert!(tracked.track_op() && !free.track_op(), "no_grad left a graph");
    assert_eq!(tracked.to_scalar::<f32>().unwrap(), free.to_scalar::<f32>().unwrap());
    assert!(model.tracking(), "no_grad is undone after its pass");
}

/// Deep copies (a [`candle_core::Var`] is updated in place, so plain clones follow it).
fn snapshot(t: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    t.into_iter().map(|(n, t)| (n, t.copy().unwrap())).collect()
}

/// The first Alpaca demo row where a mirror or cache has the set, else a row in its shape
/// written for kiln's tests.
fn alpaca_rows() -> PathBuf {
    kiln_test_models::data_file("sft/alpaca_en_demo.json")
        .unwrap_or_else(|| kiln_test_models::fixture("sft/alpaca-format.json"))
}

fn small_tokenizer(dir: &Path) -> Tokenizer {
    let corpus = dir.join("c.txt");
    std::fs::write(&corpus, "Give three tips for staying healthy. Eat a balanced diet and exercise.\n".repeat(30))
        .unwrap();
    kiln_train::tokenizer_train::train_tokenizer(&corpus, 300, u64::MAX, &dir.join("tok")).unwrap();
    Tokenizer::from_dir(&dir.join("tok")).unwrap()
}

#[test]
fn sft_mask_covers_exactly_the_answer_on_a_real_alpaca_row() {
    let rows = read_rows(&alpaca_rows(), conversation_from_json).unwrap();
    assert!(rows.bad.is_empty());
    let conv = &rows.rows[0].1;
    let dir = tempfile::tempdir().unwrap();
    let tok = small_tokenizer(dir.path());
    let template = ChatTemplate::chatml();
    let ex = encode_example(&tok, &template, &conv.messages, 0, 4096).unwrap().unwrap();
    let trained: Vec<u32> = ex.ids[1..].iter().zip(&ex.weights).filter(|(_, &w)| w > 0.0).map(|(&id, _)| id).collect();
    let untrained: Vec<u32> =
        ex.ids[1..].iter().zip(&ex.weights).filter(|(_, &w)| w == 0.0).map(|(&id, _)| id).collect();
    let answer = &conv.messages.last().unwrap().content;
    assert_eq!(tok.decode(&trained, false).unwrap(), format!("{answer}<|im_end|>\n"));
    let prompt = tok.decode(&untrained, false).unwrap();
    assert!(prompt.starts_with("<|im_start|>user\n") || prompt.contains("<|im_start|>user\n"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    assert!(!prompt.contains(answer.as_str()));
    // The trained span is one contiguous run at the end.
    let first = ex.weights.iter().position(|&w| w > 0.0).unwrap();
    assert!(ex.weights[first..].iter().all(|&w| w > 0.0));
    eprintln!("mask of {} tokens: {} prompt, {} trained", ex.weights.len(), first, ex.weights.len() - first);
}

#[test]
fn gguf_base_is_dequantized_into_the_trainers_layout() {
    // A model written as an f32 GGUF (Q and K rows permuted to GGUF order) and loaded back for
    // fine-tuning gives the same logits as the original.
    let dir = tempfile::tempdir().unwrap();
    let tok = small_tokenizer(dir.path());
    let cfg = config(tok.vocab_size());
    let model = random_model(&cfg, 11);
    let hf = dir.path().join("hf");
    kiln_train::export::write_hf_dir(&hf, &model.tensors(), &cfg, true, &dir.path().join("tok"), None).unwrap();
    let gguf = dir.path().join("m.gguf");
    common::export_gguf(&hf, GgmlType::F32, &gguf).unwrap();
    let base = load_base(&gguf).unwrap();
    assert!(base.tied);
    let back = Transformer::from_tensors(base.config.clone(), base.tied, base.tensors, DType::F32).unwrap();
    let ids: Vec<u32> = (0..16).map(|i| (i * 5 % tok.vocab_size()) as u32).collect();
    let d = max_abs_diff(&logits(&model, &ids), &logits(&back, &ids));
    assert!(d < 1e-4, "{d}");
    let from_dir = load_base(&hf).unwrap();
    assert_eq!(from_dir.tensors.len(), model.params().len());
}

/// Synthetic comparisons: a shared prompt, then a reply that is one of two fixed patterns
/// (chosen: tokens 0–3, rejected: tokens 4–7), so a model can learn to tell them apart and
/// generalize to held-out pairs.
fn synthetic_pairs(n: usize, vocab: usize, seed: u64) -> Vec<kiln_train::dpo::Pair> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let prompt: Vec<u32> = (0..6).map(|_| rng.below(vocab as u64) as u32).collect();
            let side = |parity: u32, rng: &mut Rng| {
                let reply: Vec<u32> = (0..5).map(|_| rng.below(4) as u32 + 4 * parity).collect();
                let ids: Vec<u32> = prompt.iter().chain(&reply).copied().collect();
                let weights = (1..ids.len()).map(|i| if i >= prompt.len() { 1.0 } else { 0.0 }).collect();
                Example { ids, weights, starts: Vec::new() }
            };
            kiln_train::dpo::Pair { chosen: side(0, &mut rng), rejected: side(1, &mut rng) }
        })
        .collect()
}

fn train_steps(
    task: &mut dyn kiln_train::finetune::Task,
    net: &kiln_train::finetune::Net,
    steps: usize,
    lr: f64,
) -> Vec<f64> {
    let params = net.trainable();
    let mut opt = AdamW::new(&params, (0.9, 0.999), 1e-8, 0.0);
    let mut loader = kiln_train::finetune::Loader::new(task.n_train(), 1, 0);
    (0..steps)
        .map(|_| {
            let mut acc = GradAccum::new(&params);
            let s = task.step(net, &mut loader, &mut acc).unwrap();
            opt.step(&params, acc.grads(), lr).unwrap();
            s.loss
        })
        .collect()
}

#[test]
fn dpo_starts_at_ln2_moves_the_margin_the_right_way_and_learns() {
    use kiln_train::dpo::{dpo_stats, pair_logps, Dpo};
    use kiln_train::finetune::{Net, Task};
    let cfg = config(40);
    let net = Net { model: random_model(&cfg, 21), extra: Vec::new() };
    let pairs = synthetic_pairs(12, 40, 4);
    let (train, val) = (pairs[..8].to_vec(), pairs[8..].to_vec());
    let ref_train = pair_logps(&net, &train).unwrap();
    let ref_val = pair_logps(&net, &val).unwrap();
    // Policy = reference: every margin is 0 and the loss is exactly ln 2.
    let s0 = dpo_stats(0.1, &pair_logps(&net, &train).unwrap(), &ref_train);
    assert!((s0.loss - std::f64::consts::LN_2).abs() < 1e-12, "{}", s0.loss);
    assert_eq!((s0.margin, s0.accuracy), (0.0, 0.0));
    let mut dpo = Dpo::new(train.clone(), val, ref_train.clone(), ref_val, 0.1, 8);
    // One small step along the gradient raises π_c − π_r on the batch (gradient sign).
    let first = train_steps(&mut dpo, &net, 1, 1e-3);
    assert!((first[0] - std::f64::consts::LN_2).abs() < 1e-9, "step 0 loss {}", first[0]);
    let s1 = dpo_stats(0.1, &pair_logps(&net, &train).unwrap(), &ref_train);
    assert!(s1.margin > 0.0 && s1.loss < s0.loss, "after one step: margin {} loss {}", s1.margin, s1.loss);
    assert!(s1.chosen > s1.rejected);
    let losses = train_steps(&mut dpo, &net, 30, 1e-2);
    let end = dpo_stats(0.1, &pair_logps(&net, &train).unwrap(), &ref_train);
    assert!(end.loss < 0.4 && end.accuracy == 1.0, "after 30 steps: {end:?} (losses {losses:?})");
    let v = dpo.evaluate(&net).unwrap();
    let keys = [
        "val_loss",
        "val_rewards/margins",
        "val_rewards/accuracies",
        "val_logp_accuracy",
        "val_mean_logp_accuracy",
        "val_logp_gained",
        "val_logp_lost",
        "val_logp_sign_p",
        "val_mean_logp_gained",
        "val_mean_logp_lost",
        "val_mean_logp_sign_p",
    ];
    assert_eq!(v.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), keys);
    // The pairs gained minus those lost are the change in accuracy against the start.
    let (start, m) = (dpo.evaluate_start(&net).unwrap(), |v: &[(String, f64)], i: usize| v[i].1);
    for (acc, gained, lost) in [(3, 5, 6), (4, 8, 9)] {
        let n_val = 4.0;
        assert!(
            ((m(&v, acc) - m(&start, acc)) * n_val - (m(&v, gained) - m(&v, lost))).abs() < 1e-9,
            "{}: {v:?} vs {start:?}",
            keys[acc]
        );
    }
}

#[test]
fn reward_model_starts_at_ln2_and_separates_held_out_pairs() {
    use kiln_train::finetune::Net;
    use kiln_train::reward::{pair_metrics, zero_head, Rm, HEAD};
    let cfg = config(40);
    let head = candle_core::Var::from_tensor(&zero_head(cfg.dim).unwrap()).unwrap();
    let net = Net { model: random_model(&cfg, 8), extra: vec![(HEAD.to_string(), head)] };
    let pairs = synthetic_pairs(50, 40, 9);
    let (train, val) = (pairs[..30].to_vec(), rm_val(&pairs));
    let w = net.extra[0].1.as_tensor().clone();
    let (loss0, _) = pair_metrics(&net.model, &w, &val).unwrap();
    assert!((loss0 - std::f64::consts::LN_2).abs() < 1e-12, "zero head: {loss0}");
    let mut rm = Rm::new(train, val, 6);
    let losses = train_steps(&mut rm, &net, 25, 5e-3);
    assert!((losses[0] - std::f64::consts::LN_2).abs() < 1e-9);
    let (loss, acc) = rm.held_out(&net).unwrap();
    // Chance would give 50% (P(≥ 80% of 20) < 0.6%); the model overfits its 30 pairs, so the
    // held-out loss is only asked to be below the start.
    assert!(acc >= 0.8 && loss < loss0, "held out: loss {loss} accuracy {acc} (train losses {losses:?})");
    // A wrong-way head (negated) gets the complementary accuracy.
    let neg = (net.extra[0].1.as_tensor() * -1.0).unwrap();
    let (_, flipped) = pair_metrics(&net.model, &neg, &rm_val(&pairs)).unwrap();
    assert!((flipped - (1.0 - acc)).abs() < 1e-9);
}

fn rm_val(pairs: &[kiln_train::dpo::Pair]) -> Vec<kiln_train::dpo::Pair> {
    pairs[30..].to_vec()
}
