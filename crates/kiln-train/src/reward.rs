//! A reward model: the transformer's final hidden state at the last token, times a learned
//! vector (`score.weight` `[1, dim]`, as Hugging Face's `LlamaForSequenceClassification` with one
//! label), trained with the Bradley–Terry loss `−log σ(r_c − r_r)` on comparisons. The head
//! starts at zero, so every pair starts at loss ln 2 and accuracy is reported on held-out pairs.
//! Sequences are scored one at a time, so the last token is the last non-padding token.

use crate::checkpoint::{load_tensors, save_tensors};
use crate::dpo::{load_pairs, Pair};
use crate::finetune::{log_sigmoid, scalar, sigmoid, Example, Loader, Net, StepStats, Task};
use crate::model::Llama;
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
pub fn score(model: &Llama, head: &Tensor, ids: &[u32]) -> Result<Tensor> {
    let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let h = model.hidden(&x)?;
    let last = h.narrow(0, ids.len() - 1, 1)?;
    Ok(last.matmul(&head.t()?)?.sum_all()?)
}

/// The reward of an encoded example (its whole sequence).
pub fn score_example(model: &Llama, head: &Tensor, ex: &Example) -> Result<f64> {
    scalar(&score(model, head, &ex.ids)?.detach())
}

/// Mean Bradley–Terry loss and accuracy (r_c > r_r) of a model on pairs.
pub fn pair_metrics(model: &Llama, head: &Tensor, pairs: &[Pair]) -> Result<(f64, f64)> {
    let (mut loss, mut right) = (0.0, 0usize);
    for p in pairs {
        let d = score_example(model, head, &p.chosen)? - score_example(model, head, &p.rejected)?;
        loss -= log_sigmoid(d);
        right += usize::from(d > 0.0);
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
    load_tensors(&path)?
        .remove(HEAD)
        .ok_or_else(|| TrainError::Checkpoint(format!("{}: no {HEAD}", path.display())))
}

/// The reward model's data.
pub struct Rm {
    train: Vec<Pair>,
    val: Vec<Pair>,
    batch_pairs: usize,
}

impl Rm {
    /// A reward model trained on `train`, measured on `val`.
    pub fn new(train: Vec<Pair>, val: Vec<Pair>, batch_pairs: usize) -> Rm {
        Rm {
            train,
            val,
            batch_pairs,
        }
    }

    /// Reads the comparisons of `run`'s data.
    pub fn load(run: &crate::finetune::Run, report: &mut dyn FnMut(&str)) -> Result<Rm> {
        let (train, val) = load_pairs(run, report)?;
        Ok(Rm {
            train,
            val,
            batch_pairs: run.cfg.batch_pairs,
        })
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
        for _ in 0..self.batch_pairs {
            let p = &self.train[loader.next_index()];
            let c = score(&net.model, w, &p.chosen.ids)?;
            let r = score(&net.model, w, &p.rejected.ids)?;
            let d = scalar(&c)? - scalar(&r)?;
            loss -= log_sigmoid(d) / n;
            right += f64::from(u8::from(d > 0.0)) / n;
            // d/dd of −log σ(d) is −σ(−d).
            let surrogate = ((c - r)? * (-sigmoid(-d) / n))?;
            acc.add(&params, &surrogate.backward()?, 1.0)?;
            tokens += p.chosen.ids.len() + p.rejected.ids.len();
        }
        Ok(StepStats {
            loss,
            tokens,
            extra: vec![("accuracy".into(), right)],
        })
    }

    fn evaluate(&mut self, net: &Net) -> Result<Vec<(String, f64)>> {
        if self.val.is_empty() {
            return Ok(Vec::new());
        }
        let (loss, accuracy) = self.held_out(net)?;
        Ok(vec![
            ("val_loss".into(), loss),
            ("val_accuracy".into(), accuracy),
        ])
    }
}

/// A reward-model run directory made by `kiln rm`: the model (adapters merged), its head and
/// its tokenizer.
pub fn load_reward_model(run_dir: &Path) -> Result<(Llama, Tensor, kiln_text::Tokenizer)> {
    let head = load_head(run_dir)?;
    let base = crate::finetune::load_base(run_dir)?;
    let model = Llama::from_tensors(base.config, base.tied, base.tensors, DType::F32)?;
    let tok = kiln_text::Tokenizer::from_dir(&crate::export::model_dir(run_dir)?)?;
    Ok((model, head, tok))
}
