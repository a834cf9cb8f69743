//! What supervised fine-tuning, DPO and the reward model share: loading the starting model from
//! any format kiln reads (dequantized to f32 candle tensors under Hugging Face names), conversation
//! and comparison data encoded with the chat template exactly as inference renders it, masked
//! log-probabilities, and a run directory with the pretraining conventions (`metrics.jsonl` with
//! `step` and `loss`, `checkpoints/`, `loss.png`, `--resume`, a final `model/`).
//!
//! A fine-tuning run directory holds `finetune.json` (the resolved [`FinetuneConfig`]),
//! `tokenizer/` (the starting model's tokenizer with the chat template training used),
//! `start.json` (the starting model's held-out numbers),
//! `checkpoints/step_NNNNNN/` (the trainable tensors: the whole model, or only the LoRA
//! adapters and heads, with AdamW's moments), `metrics.jsonl`, `loss.png`/`loss.svg`, and at the
//! end `model/` (a Hugging Face directory; LoRA adapters merged) and, with LoRA, `adapter/`.

use crate::checkpoint;
use crate::export::from_f32_tensors;
use crate::model::Transformer;
use crate::{io_err, Result, TrainError};
use candle_core::{DType, Device, Tensor};
use kiln_gguf::GgufFile;
use kiln_model::ModelConfig;
use kiln_text::conversation::{read_rows, BadRow};
use kiln_text::{ChatMessage, ChatTemplate, Tokenizer};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The starting model of a fine-tuning run, as f32 tensors with Hugging Face names.
pub struct Base {
    /// Family, shape and switches (half-split RoPE, as the trainer computes it).
    pub config: ModelConfig,
    /// Whether the output projection is the embedding.
    pub tied: bool,
    /// Parameters by Hugging Face name.
    pub tensors: HashMap<String, Tensor>,
    /// tokenizer.json text.
    pub tokenizer_json: String,
    /// tokenizer_config.json (special tokens, chat template).
    pub tokenizer_config: Json,
}

/// Loads the model at `path`: a kiln run directory (its `model/`), a Hugging Face directory or
/// a GGUF file of any family kiln runs (every tensor dequantized to f32, in Hugging Face's
/// layout: llama Q/K rows back in half-split order, Gemma norms back to `w` from `1 + w`).
pub fn load_base(path: &Path) -> Result<Base> {
    let (model, tokenizer_json, tokenizer_config) = if path.is_dir() {
        let dir = kiln_model::formats::model_dir(path)?;
        let model = kiln_model::formats::f32::read_hf_dir_f32(&dir)?;
        let tj = dir.join("tokenizer.json");
        let tokenizer_json = std::fs::read_to_string(&tj).map_err(io_err(&tj))?;
        let tc = dir.join("tokenizer_config.json");
        let tokenizer_config = match std::fs::read_to_string(&tc) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| TrainError::Checkpoint(format!("{}: not valid JSON ({e})", tc.display())))?,
            Err(_) => json!({}),
        };
        (model, tokenizer_json, tokenizer_config)
    } else {
        let file = GgufFile::open(path).map_err(|e| {
            TrainError::Config(format!(
                "{}: not a run directory, a Hugging Face directory or a readable GGUF file ({e})",
                path.display()
            ))
        })?;
        let tok = Tokenizer::from_gguf(&file)?;
        let (tokenizer_json, tokenizer_config) = (tok.to_json()?, tok.hf_tokenizer_config());
        (kiln_model::formats::f32::read_gguf_f32(file)?, tokenizer_json, tokenizer_config)
    };
    if model.scaled_rope {
        return Err(TrainError::Config(format!(
            "{}: scaled RoPE (Llama 3.1's rope_freqs / rope_scaling) is not implemented in kiln's trainer",
            path.display()
        )));
    }
    let tensors = from_f32_tensors(model.tensors)?;
    Ok(Base { config: model.config, tied: model.tied, tensors, tokenizer_json, tokenizer_config })
}

/// Writes the base's tokenizer into `dir` with the chat template fine-tuning trains: the
/// model's own, or the family's built-in one (Gemma's turns, else ChatML) when it has none or
/// only kiln's pass-through template for base models.
pub fn write_tokenizer(base: &Base, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    checkpoint::write_atomic(&dir.join("tokenizer.json"), base.tokenizer_json.as_bytes())?;
    let mut cfg = base.tokenizer_config.clone();
    let template = cfg.get("chat_template").and_then(Json::as_str);
    if template.is_none() || template == Some(kiln_text::bpe_train::BASE_TEMPLATE) {
        cfg["chat_template"] = kiln_text::builtin_template(base.config.family.architecture()).into();
    }
    let text = serde_json::to_string_pretty(&cfg).expect("json serializes");
    checkpoint::write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
}

/// Writes `tensors` (the base's own, or merged variants of them) with the base's shape and
/// tokenizer (the template fine-tuning trains, as [`write_tokenizer`]) as a Hugging Face
/// directory `out`: what `kiln merge` writes, and `kiln export --format hf` for a GGUF.
pub fn write_hf(base: &Base, tensors: &HashMap<String, Tensor>, out: &Path) -> Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let tok_dir = out.with_file_name(format!(".{name}.tokenizer"));
    write_tokenizer(base, &tok_dir)?;
    let result = crate::export::write_hf_dir(out, tensors, &base.config, base.tied, &tok_dir, None);
    let _ = std::fs::remove_dir_all(&tok_dir);
    result
}

/// The chat template of the tokenizer in `dir`.
pub fn template_of(tok: &Tokenizer) -> Result<ChatTemplate> {
    Ok(ChatTemplate::for_model(tok, "llama")?)
}

/// Reads the rows of `paths` with `parse`, reporting rows that fit no shape by file and line:
/// skipped (each reported through `report`) or, with `fail`, the first one is the error.
pub fn read_data<T>(
    paths: &[PathBuf],
    parse: impl Fn(&Json) -> std::result::Result<T, String> + Copy,
    fail: bool,
    report: &mut dyn FnMut(&str),
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for path in paths {
        let rows = read_rows(path, parse)?;
        let bad: Vec<BadRow> = rows.bad;
        if let Some(first) = bad.first() {
            if fail {
                return Err(TrainError::Data(format!(
                    "{} {}: {} (--on-bad-row skip skips such rows)",
                    path.display(),
                    first.location,
                    first.message
                )));
            }
            for b in &bad {
                report(&format!("skipped {} {}: {}", path.display(), b.location, b.message));
            }
        }
        out.extend(rows.rows.into_iter().map(|(loc, r)| (format!("{} {loc}", path.display()), r)));
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!(
            "no usable rows in {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

/// A token sequence and, per next-token target, its weight in the loss (1 where the target is
/// learned, 0 elsewhere; RL weighs a reply by its advantage, which may be negative).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `weights[i]` is the weight of predicting `ids[i + 1]`; length `ids.len() - 1`.
    pub weights: Vec<f32>,
    /// Where each packed document starts (empty: the row is one document).
    pub starts: Vec<usize>,
}

impl Example {
    /// Targets with positive weight.
    pub fn n_trained(&self) -> usize {
        self.weights.iter().filter(|&&w| w > 0.0).count()
    }
}

/// Encodes `messages` for training on the assistant turns from the `from_turn`-th assistant
/// message on (0: all of them; DPO counts only the reply after the prompt), cut to `max_len`
/// tokens. None when nothing trainable is left.
pub fn encode_example(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
    from_turn: usize,
    max_len: usize,
) -> std::result::Result<Option<Example>, String> {
    let mut segments = template.render_for_training(messages).map_err(|e| e.to_string())?;
    let mut k = 0;
    for s in &mut segments {
        if s.train {
            if k < from_turn {
                s.train = false;
            }
            k += 1;
        }
    }
    let (mut ids, mask) = tok.encode_segments(&segments).map_err(|e| e.to_string())?;
    ids.truncate(max_len + 1);
    if ids.len() < 2 {
        return Ok(None);
    }
    let weights: Vec<f32> = mask[1..ids.len()].iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    let ex = Example { ids, weights, starts: Vec::new() };
    Ok((ex.n_trained() > 0).then_some(ex))
}

/// Concatenates examples into rows of at most `max_len + 1` tokens, in order. The target that
/// crosses from one example into the next has weight 0, and `starts` marks each example so the
/// forward pass isolates them (positions restart, no attention across examples): a packed row
/// computes what its examples would alone, as TRL's padding-free packing does.
pub fn pack(examples: &[&Example], max_len: usize) -> Vec<Example> {
    let mut rows: Vec<Example> = Vec::new();
    let mut cur: Option<Example> = None;
    for ex in examples {
        match &mut cur {
            Some(c) if c.ids.len() + ex.ids.len() <= max_len + 1 => {
                c.weights.push(0.0);
                c.weights.extend_from_slice(&ex.weights);
                c.starts.push(c.ids.len());
                c.ids.extend_from_slice(&ex.ids);
            }
            _ => {
                if let Some(c) = cur.take() {
                    rows.push(c);
                }
                cur = Some(Example { starts: vec![0], ..(*ex).clone() });
            }
        }
    }
    rows.extend(cur);
    rows
}

/// `Σ weights[i]·log p(ids[i+1] | ids[..=i])` as a scalar tensor (differentiable). Logits are
/// computed only from the first weighted position on.
pub fn weighted_logp(model: &Transformer, ex: &Example) -> Result<Tensor> {
    let t = ex.ids.len() - 1;
    let start = ex.weights.iter().position(|&w| w != 0.0).unwrap_or(0);
    let x = Tensor::new(&ex.ids[..t], &Device::Cpu)?.unsqueeze(0)?;
    let h = model.hidden_packed(&x, &ex.starts)?.narrow(0, start, t - start)?;
    let picked = model.target_logp(&h, &ex.ids[start + 1..])?;
    let w = Tensor::new(&ex.weights[start..], &Device::Cpu)?.to_dtype(picked.dtype())?;
    Ok((picked * w)?.sum_all()?)
}

/// [`weighted_logp`] of several rows in one forward pass: a `[rows.len()]` tensor of each row's
/// sum. The rows are packed into one sequence, isolated from each other as [`pack`] isolates
/// examples (positions restart, no attention across rows), so each computes what it computes
/// alone, up to float reassociation in the matrix products. One pass instead of one per row
/// makes each weight's gradient once per batch, which is most of a short row's cost when every
/// weight is trained; packing rather than padding spends no work on padding. Logits are computed
/// only at weighted positions. A row that is itself packed must come alone.
pub fn weighted_logps(model: &Transformer, rows: &[&Example]) -> Result<Tensor> {
    if let [row] = rows {
        return Ok(weighted_logp(model, row)?.reshape(1)?);
    }
    if rows.iter().any(|r| r.starts.len() > 1) {
        return Err(TrainError::Config("a packed row cannot share a forward pass".into()));
    }
    let (mut ids, mut starts) = (Vec::new(), Vec::new());
    let (mut at, mut targets, mut weights, mut per_row) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let n = row.ids.len() - 1;
        let offset = ids.len();
        starts.push(offset);
        ids.extend_from_slice(&row.ids[..n]);
        let before = at.len();
        for (i, &w) in row.weights.iter().enumerate().filter(|(_, &w)| w != 0.0) {
            at.push((offset + i) as u32);
            targets.push(row.ids[i + 1]);
            weights.push(w);
        }
        per_row.push(before..at.len());
    }
    let dev = &Device::Cpu;
    let x = Tensor::new(ids.as_slice(), dev)?.unsqueeze(0)?;
    let h = model.hidden_packed(&x, &starts)?.index_select(&Tensor::new(at.as_slice(), dev)?, 0)?;
    let picked = model.target_logp(&h, &targets)?;
    let weighted = (picked * Tensor::new(weights.as_slice(), dev)?.to_dtype(h.dtype())?)?;
    let sums = per_row
        .into_iter()
        .map(|range| match range.len() {
            0 => Tensor::zeros((), weighted.dtype(), dev),
            n => weighted.narrow(0, range.start, n)?.sum_all(),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&sums, 0)?)
}

/// Tokens per forward pass (at least one row of `max_len`): enough to make each weight's
/// gradient once for a step of a few short conversations; the activations kept for backward
/// grow with it.
pub fn pass_budget(max_len: usize) -> usize {
    max_len.max(1024)
}

/// Consecutive groups of `rows` for [`weighted_logps`], each within `budget` tokens; a packed
/// row is a group of its own.
pub fn batches<'a>(rows: &[&'a Example], budget: usize) -> Vec<Vec<&'a Example>> {
    group_within(rows, budget, |row| row.ids.len() - 1, |row| row.starts.len() > 1)
}

/// Consecutive groups of `items` whose `len`s add up to at most `budget` (an item over it
/// alone is a group of its own), and an item that must be `alone` always is.
pub fn group_within<'a, T>(
    items: &[&'a T],
    budget: usize,
    len: impl Fn(&T) -> usize,
    alone: impl Fn(&T) -> bool,
) -> Vec<Vec<&'a T>> {
    let mut out: Vec<Vec<&T>> = Vec::new();
    let mut used = 0;
    for &item in items {
        let n = len(item);
        match out.last_mut() {
            Some(group) if !alone(group[0]) && !alone(item) && used + n <= budget => {
                group.push(item);
                used += n;
            }
            _ => {
                out.push(vec![item]);
                used = n;
            }
        }
    }
    out
}

/// A scalar tensor as f64.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// `log σ(z)`, stable for large |z|.
pub fn log_sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        -(-z).exp().ln_1p()
    } else {
        z - z.exp().ln_1p()
    }
}

/// P(X ≥ k) for X ~ Binomial(n, ½), summed in log space (no overflow for large n).
pub fn sign_test_p(k: usize, n: usize) -> f64 {
    let mut ln_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut tail = 0.0;
    for j in 0..=n {
        if j >= k {
            tail += ln_pmf.exp();
        }
        // C(n, j+1) = C(n, j)·(n − j)/(j + 1); past j = n it is never used.
        ln_pmf += ((n - j) as f64).ln() - ((j + 1) as f64).ln();
    }
    tail.min(1.0)
}

/// σ(z).
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

mod run;
pub use run::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_zeroes_the_boundary_target() {
        let a = Example { ids: vec![1, 2, 3], weights: vec![0.0, 1.0], starts: Vec::new() };
        let b = Example { ids: vec![4, 5], weights: vec![1.0], starts: Vec::new() };
        let rows = pack(&[&a, &b, &a], 6);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(rows[0].weights, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(rows[0].starts, vec![0, 3]);
        assert_eq!((&rows[1].ids, &rows[1].weights), (&a.ids, &a.weights));
    }

    /// A packed row scores each of its examples exactly as the example alone (no attention
    /// across the boundary, positions restarting), up to float reassociation.
    #[test]
    fn packed_rows_compute_what_their_examples_compute_alone() {
        let cfg = crate::preset::TrainConfig::preset("nano", 97).unwrap().model_config();
        let model = Transformer::init(cfg, true, 5, DType::F32).unwrap();
        let example = |seed: u32, len: usize| {
            let ids: Vec<u32> = (0..len as u32).map(|i| (i * 31 + seed * 7) % 97).collect();
            Example { weights: (1..len).map(|i| if i > 2 { 1.0 } else { 0.0 }).collect(), ids, starts: Vec::new() }
        };
        let examples = [example(1, 9), example(2, 14), example(3, 6)];
        let rows = pack(&examples.iter().collect::<Vec<_>>(), 64);
        assert_eq!(rows.len(), 1);
        let packed = scalar(&weighted_logp(&model, &rows[0]).unwrap()).unwrap();
        let alone: f64 = examples.iter().map(|e| scalar(&weighted_logp(&model, e).unwrap()).unwrap()).sum();
        assert!((packed - alone).abs() < 1e-4 * alone.abs(), "packed {packed} vs alone {alone}");
        // Without the isolation the later examples would see the earlier ones.
        let leaky = Example { starts: Vec::new(), ..rows[0].clone() };
        let mixed = scalar(&weighted_logp(&model, &leaky).unwrap()).unwrap();
        assert!((mixed - alone).abs() > 1e-3 * alone.abs(), "the test model must notice cross-attention");
    }

    /// Rows scored in one pass give each row's own sum, and the same gradients as one pass per
    /// row, up to float reassociation.
    #[test]
    fn rows_in_one_pass_compute_what_they_compute_alone() {
        let cfg = crate::preset::TrainConfig::preset("nano", 97).unwrap().model_config();
        let model = Transformer::init(cfg, true, 5, DType::F32).unwrap();
        let example = |seed: u32, len: usize, from: usize| {
            let ids: Vec<u32> = (0..len as u32).map(|i| (i * 29 + seed * 11) % 97).collect();
            Example { weights: (1..len).map(|i| if i > from { 1.0 } else { 0.0 }).collect(), ids, starts: Vec::new() }
        };
        let rows = [example(1, 9, 2), example(2, 17, 5), example(3, 6, 0)];
        let refs: Vec<&Example> = rows.iter().collect();
        let together = weighted_logps(&model, &refs).unwrap();
        let sums = together.to_vec1::<f32>().unwrap();
        let alone: Vec<f32> = rows.iter().map(|r| scalar(&weighted_logp(&model, r).unwrap()).unwrap() as f32).collect();
        for (t, a) in sums.iter().zip(&alone) {
            assert!((t - a).abs() < 1e-5 * a.abs().max(1.0), "together {t} vs alone {a}");
        }
        let grads_together = together.sum_all().unwrap().backward().unwrap();
        let mut grads_alone: Option<Tensor> = None;
        let w = model.param("model.layers.1.mlp.down_proj.weight").unwrap().as_tensor();
        for r in &rows {
            let g = weighted_logp(&model, r).unwrap().backward().unwrap().get(w).unwrap().clone();
            grads_alone = Some(match grads_alone {
                Some(s) => (s + g).unwrap(),
                None => g,
            });
        }
        let (a, b) = (grads_together.get(w).unwrap(), grads_alone.unwrap());
        let diff = (a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(scale > 0.0 && diff < 1e-4 * scale, "gradients differ by {diff} (largest {scale})");
        // A packed row is refused in company, and grouping keeps it alone.
        let packed = pack(&[&rows[0], &rows[2]], 64).remove(0);
        assert!(weighted_logps(&model, &[&packed, &rows[1]]).is_err());
        let groups = batches(&[&rows[0], &packed, &rows[1], &rows[2]], 24);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 2], "8 tokens; the packed row; 16 + 5 tokens within 24");
    }

    #[test]
    fn loader_visits_every_row_once_per_epoch_and_resumes() {
        let mut l = Loader::new(7, 3, 0);
        let first: Vec<usize> = (0..14).map(|_| l.next_index()).collect();
        let mut e0 = first[..7].to_vec();
        e0.sort();
        assert_eq!(e0, (0..7).collect::<Vec<_>>());
        let mut r = Loader::new(7, 3, 5);
        assert_eq!((5..14).map(|_| r.next_index()).collect::<Vec<_>>(), first[5..].to_vec());
    }

    #[test]
    fn log_sigmoid_is_stable() {
        assert!((log_sigmoid(0.0) + std::f64::consts::LN_2).abs() < 1e-12);
        assert!((log_sigmoid(-800.0) + 800.0).abs() < 1e-9);
        assert!(log_sigmoid(800.0).abs() < 1e-12);
        assert!((sigmoid(2.0) - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-15);
    }
}
