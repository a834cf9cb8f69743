//! A reward model: the transformer's final hidden state at the last token, times a learned
//! vector (`score.weight` `[1, dim]`, as Hugging Face's `LlamaForSequenceClassification` with one
//! label), trained with the Bradley–Terry loss `−log σ(r_c − r_r)` on comparisons. The head
//! starts at zero, so every pair starts at loss ln 2 and accuracy is reported on held-out pairs.
//! Sequences are packed without padding, so the last token of each is its own last token.

use crate::checkpoint::{load_tensors, save_tensors};
use crate::dpo::{load_pairs, pair_groups, Pair};
use crate::finetune::{log_sigmoid, pass_budget, scalar, sigmoid, sign_test_p, Example, Loader, Net, StepStats, Task};
use crate::model::Transformer;
use crate::optim::GradAccum;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The head's tensor name.
pub const HEAD: &str = "score.weight";
/// The head's file in a reward-model run directory.
pub const HEAD_FILE: &str = "reward_head.safetensors";

/// A zero head for a model of width `dim`.
pub fn zero_head(dim: usize) -> Result<Tensor> {
    Ok(Tensor::zeros((1, dim), DType::F32, &Device::Cpu)?)
}

/// The reward of a whole sequence: `head · h_last` (a differentiable scalar).
pub fn score(model: &Transformer, head: &Tensor, ids: &[u32]) -> Result<Tensor> {
    let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let h = model.hidden(&x)?;
    let last = h.narrow(0, ids.len() - 1, 1)?;
    Ok(last.matmul(&head.t()?)?.sum_all()?)
}

/// The rewards of several sequences in one forward pass, `[seqs.len()]`: packed into one row,
/// each isolated from the others (positions restart, attention per sequence), so each gets
/// what [`score`] gives it alone, up to float reassociation.
pub fn scores(model: &Transformer, head: &Tensor, seqs: &[&[u32]]) -> Result<Tensor> {
    let (mut ids, mut starts, mut last) = (Vec::new(), Vec::new(), Vec::new());
    for seq in seqs {
        starts.push(ids.len());
        ids.extend_from_slice(seq);
        last.push((ids.len() - 1) as u32);
    }
    let dev = &Device::Cpu;
    let x = Tensor::new(ids.as_slice(), dev)?.unsqueeze(0)?;
    let h = model.hidden_packed(&x, &starts)?.index_select(&Tensor::new(last.as_slice(), dev)?, 0)?;
    Ok(h.matmul(&head.t()?)?.squeeze(1)?)
}

/// The reward of an encoded example (its whole sequence).
pub fn score_example(model: &Transformer, head: &Tensor, ex: &Example) -> Result<f64> {
    scalar(&score(model, head, &ex.ids)?.detach())
}

/// The rewards of a group of pairs, `[chosen₀, rejected₀, chosen₁, …]`, in one pass.
fn pair_scores(model: &Transformer, head: &Tensor, group: &[&Pair]) -> Result<Tensor> {
    let seqs: Vec<&[u32]> = group.iter().flat_map(|p| [&p.chosen.ids[..], &p.rejected.ids[..]]).collect();
    scores(model, head, &seqs)
}

/// Mean Bradley–Terry loss and accuracy (r_c > r_r) of a model on pairs.
pub fn pair_metrics(model: &Transformer, head: &Tensor, pairs: &[Pair]) -> Result<(f64, f64)> {
    let (mut loss, mut right) = (0.0, 0usize);
    let refs: Vec<&Pair> = pairs.iter().collect();
    let longest = pairs.iter().map(|p| p.chosen.ids.len().max(p.rejected.ids.len())).max();
    for group in pair_groups(&refs, pass_budget(longest.unwrap_or(0))) {
        let r = pair_scores(model, head, &group)?.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?;
        for cr in r.chunks(2) {
            let d = cr[0] - cr[1];
            loss -= log_sigmoid(d);
            right += usize::from(d > 0.0);
        }
    }
    let n = pairs.len().max(1) as f64;
    Ok((loss / n, right as f64 / n))
}

/// Saves the head beside the model.
pub fn save_head(run_dir: &Path, head: &Tensor) -> Result<()> {
    let t: HashMap<String, Tensor> = [(HEAD.to_string(), head.copy()?)].into_iter().collect();
    save_tensors(&run_dir.join(HEAD_FILE), &t)
}

/// Loads the head of a reward-model run directory.
pub fn load_head(run_dir: &Path) -> Result<Tensor> {
    let path = run_dir.join(HEAD_FILE);
    if !path.is_file() {
        return Err(TrainError::Checkpoint(format!(
            "{}: not a reward model (no {HEAD_FILE}; train one with `kiln rm`)",
            run_dir.display()
        )));
    }
    load_tensors(&path)?.remove(HEAD).ok_or_else(|| TrainError::Checkpoint(format!("{}: no {HEAD}", path.display())))
}

/// The reward model's data.
pub struct Rm {
    train: Vec<Pair>,
    val: Vec<Pair>,
    batch_pairs: usize,
    /// Tokens per forward pass ([`pass_budget`]).
    pass_tokens: usize,
}

impl Rm {
    /// A reward model trained on `train`, measured on `val`.
    pub fn new(train: Vec<Pair>, val: Vec<Pair>, batch_pairs: usize) -> Rm {
        Rm { train, val, batch_pairs, pass_tokens: pass_budget(0) }
    }

    /// Reads the comparisons of `run`'s data.
    pub fn load(run: &crate::finetune::Run, report: &mut dyn FnMut(&str)) -> Result<Rm> {
        let (train, val) = load_pairs(run, report)?;
        Ok(Rm { train, val, batch_pairs: run.cfg.batch_pairs, pass_tokens: pass_budget(run.cfg.max_len) })
    }

    /// Held-out (loss, accuracy) of `net` as it is.
    pub fn held_out(&self, net: &Net) -> Result<(f64, f64)> {
        pair_metrics(&net.model, head(net)?, &self.val)
    }
}

fn head(net: &Net) -> Result<&Tensor> {
    net.extra
        .iter()
        .find(|(n, _)| n == HEAD)
        .map(|(_, v)| v.as_tensor())
        .ok_or_else(|| TrainError::Config("the reward model has no head".into()))
}

impl Task for Rm {
    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn step(&mut self, net: &Net, loader: &mut Loader, acc: &mut GradAccum) -> Result<StepStats> {
        let params = net.trainable();
        let w = head(net)?;
        let n = self.batch_pairs as f64;
        let (mut loss, mut right, mut tokens) = (0.0, 0.0, 0);
        let pairs: Vec<&Pair> = (0..self.batch_pairs).map(|_| &self.train[loader.next_index()]).collect();
        for group in pair_groups(&pairs, self.pass_tokens) {
            let r = pair_scores(&net.model, w, &group)?;
            let values = r.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let mut coefs = Vec::with_capacity(values.len());
            for (p, cr) in group.iter().zip(values.chunks(2)) {
                let d = cr[0] - cr[1];
                loss -= log_sigmoid(d) / n;
                right += f64::from(u8::from(d > 0.0)) / n;
                // d/dd of −log σ(d) is −σ(−d); backward through Σ coef·r.
                let coef = -sigmoid(-d) / n;
                coefs.extend([coef, -coef]);
                tokens += p.chosen.ids.len() + p.rejected.ids.len();
            }
            let coefs = Tensor::new(coefs.as_slice(), &Device::Cpu)?.to_dtype(r.dtype())?;
            acc.add(&params, &(r * coefs)?.sum_all()?.backward()?, 1.0)?;
        }
        Ok(StepStats { loss, tokens, extra: vec![("accuracy".into(), right)] })
    }

    fn evaluate(&mut self, net: &Net) -> Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        let (loss, accuracy) = self.held_out(net)?;
        let n = self.val.len();
        let right = (accuracy * n as f64).round() as usize;
        Ok(vec![
            ("val_loss".into(), loss),
            ("val_accuracy".into(), accuracy),
            // The chance of at least this many right from coin flips (one-sided binomial).
            ("val_accuracy_p".into(), sign_test_p(right, n)),
        ])
    }
}

/// A reward-model run directory made by `kiln rm`: the model (adapters merged), its head and
/// its tokenizer.
pub fn load_reward_model(run_dir: &Path) -> Result<(Transformer, Tensor, kiln_text::Tokenizer)> {
    let head = load_head(run_dir)?;
    let base = crate::finetune::load_base(run_dir)?;
    let model = Transformer::from_tensors(base.config, base.tied, base.tensors, DType::F32)?;
    let tok = kiln_text::Tokenizer::from_dir(&kiln_model::formats::model_dir(run_dir)?)?;
    Ok((model, head, tok))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sequences scored in one packed pass get the rewards they get alone.
    #[test]
    fn packed_scores_are_the_scores_alone() {
        let cfg = crate::preset::TrainConfig::preset("nano", 97).unwrap().model_config();
        let dim = cfg.dim;
        let model = Transformer::init(cfg, true, 7, DType::F32).unwrap();
        let head_values: Vec<f32> = (0..dim).map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0).collect();
        let head = Tensor::from_vec(head_values, (1, dim), &Device::Cpu).unwrap();
        let seqs: Vec<Vec<u32>> = [(1u32, 7usize), (2, 15), (3, 4)]
            .iter()
            .map(|&(seed, len)| (0..len as u32).map(|i| (i * 23 + seed * 13) % 97).collect())
            .collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let together = scores(&model, &head, &refs).unwrap().to_vec1::<f32>().unwrap();
        for (seq, t) in seqs.iter().zip(&together) {
            let alone = scalar(&score(&model, &head, seq).unwrap()).unwrap() as f32;
            assert!((t - alone).abs() < 1e-5 * alone.abs().max(1.0), "together {t} vs alone {alone}");
        }
        assert!(together.iter().any(|&r| r.abs() > 1e-3), "the test head must give non-zero rewards");
    }
}
