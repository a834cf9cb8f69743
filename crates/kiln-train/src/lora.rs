//! LoRA (Hu et al. 2021): a frozen weight `W` `[out, in]` plus a trainable low-rank update,
//! `y = x·Wᵀ + (α/r)·dropout(x)·Aᵀ·Bᵀ` with `A` `[r, in]` small and random and `B` `[out, r]`
//! zero, so training starts from the base model exactly. Only `A` and `B` are optimized;
//! [`Lora::merge`] folds `W + (α/r)·B·A` into plain weights afterwards.
//!
//! Adapters are saved as PEFT does (`adapter_model.safetensors` with
//! `base_model.model.<module>.lora_A.weight` names, `adapter_config.json` with `r`,
//! `lora_alpha`, `lora_dropout`, `target_modules`), so `peft` can load them too.

use crate::checkpoint::{load_tensors, save_tensors, write_atomic};
use crate::rng::Rng;
use crate::{io_err, Result, TrainError};
use candle_core::{DType, Device, Tensor, Var};
use kiln_model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The short target names and the Hugging Face modules they mean.
pub const TARGETS: &[(&str, &str)] = &[
    ("q", "self_attn.q_proj"),
    ("k", "self_attn.k_proj"),
    ("v", "self_attn.v_proj"),
    ("o", "self_attn.o_proj"),
    ("gate", "mlp.gate_proj"),
    ("up", "mlp.up_proj"),
    ("down", "mlp.down_proj"),
];

/// PEFT's prefix for adapter tensor names.
const PEFT_PREFIX: &str = "base_model.model.";

/// Rank, scale, dropout and where the adapters go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r of the update.
    pub rank: usize,
    /// α: the update is scaled by α/r.
    pub alpha: f64,
    /// Dropout probability on the adapter's input (training only).
    pub dropout: f64,
    /// Short names of the adapted linear layers (q, k, v, o, gate, up, down).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// Checks the numbers and the target names.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.rank == 0 {
            return bad("--rank must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--lora-dropout {} must be in [0, 1)", self.dropout));
        }
        if self.targets.is_empty() {
            return bad("--target names no layer".into());
        }
        for t in &self.targets {
            if !TARGETS.iter().any(|(s, _)| s == t) {
                return bad(format!(
                    "--target {t}: use {}",
                    TARGETS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }

    /// α/r.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// The adapted weights of a model with `config`: (weight name, out, in).
    fn modules(&self, config: &ModelConfig) -> Vec<(String, usize, usize)> {
        let (c, q, kv, f) = (config.dim, config.q_dim(), config.kv_dim(), config.ffn_dim);
        let mut out = Vec::new();
        for i in 0..config.n_layers {
            for (short, module) in TARGETS {
                if !self.targets.iter().any(|t| t == short) {
                    continue;
                }
                let (o, n) = match *short {
                    "q" => (q, c),
                    "k" | "v" => (kv, c),
                    "o" => (c, q),
                    "gate" | "up" => (f, c),
                    _ => (c, f),
                };
                out.push((format!("model.layers.{i}.{module}.weight"), o, n));
            }
        }
        out
    }
}

/// The adapters of one model: for each adapted weight an `A` and a `B` [`Var`].
pub struct Lora {
    /// The configuration.
    pub config: LoraConfig,
    params: Vec<(String, Var)>,
    /// Weight name → (index of A, index of B) in `params`.
    index: HashMap<String, (usize, usize)>,
    /// Dropout is applied only while training.
    training: AtomicBool,
    dropout_rng: Mutex<Rng>,
}

/// `model.layers.0.self_attn.q_proj.weight` → `model.layers.0.self_attn.q_proj.lora_A.weight`.
fn adapter_name(weight: &str, which: char) -> String {
    format!("{}.lora_{which}.weight", weight.trim_end_matches(".weight"))
}

impl Lora {
    /// Fresh adapters for a model with `model`'s shape: `A` uniform in ±1/√in (PEFT's Kaiming
    /// default), `B` zero. Deterministic in `seed`.
    pub fn init(config: LoraConfig, model: &ModelConfig, seed: u64) -> Result<Lora> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let mut tensors = HashMap::new();
        for (w, out, inp) in config.modules(model) {
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..config.rank * inp).map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32).collect();
            tensors.insert(adapter_name(&w, 'A'), Tensor::from_vec(a, (config.rank, inp), &Device::Cpu)?);
            tensors.insert(adapter_name(&w, 'B'), Tensor::zeros((out, config.rank), DType::F32, &Device::Cpu)?);
        }
        Lora::from_tensors(config, model, tensors, seed)
    }

    /// Adapters from named tensors (a checkpoint or an adapter file); shapes are checked.
    pub fn from_tensors(
        config: LoraConfig,
        model: &ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        seed: u64,
    ) -> Result<Lora> {
        config.validate()?;
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (w, out, inp) in config.modules(model) {
            let mut take = |name: String, shape: [usize; 2]| -> Result<usize> {
                let t = tensors
                    .remove(&name)
                    .ok_or_else(|| TrainError::Checkpoint(format!("the adapter has no tensor {name:?}")))?;
                if t.dims() != shape {
                    return Err(TrainError::Checkpoint(format!(
                        "adapter tensor {name:?} has shape {:?}, expected {shape:?}",
                        t.dims()
                    )));
                }
                params.push((name, Var::from_tensor(&t.to_dtype(DType::F32)?)?));
                Ok(params.len() - 1)
            };
            let a = take(adapter_name(&w, 'A'), [config.rank, inp])?;
            let b = take(adapter_name(&w, 'B'), [out, config.rank])?;
            index.insert(w, (a, b));
        }
        Ok(Lora {
            config,
            params,
            index,
            training: AtomicBool::new(false),
            dropout_rng: Mutex::new(Rng::new(seed ^ 0xd40)),
        })
    }

    /// The trainable parameters (A and B of every adapted weight).
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The adapter tensors by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect()
    }

    /// Turns dropout on (training) or off (evaluation, reference log-probs).
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    /// The dropout generator's state (saved in checkpoints).
    pub fn rng_state(&self) -> u64 {
        self.dropout_rng.lock().map(|r| r.state).unwrap_or(0)
    }

    /// Restores the dropout generator's state.
    pub fn set_rng_state(&self, state: u64) {
        if let Ok(mut r) = self.dropout_rng.lock() {
            r.state = state;
        }
    }

    /// `y + (α/r)·dropout(x)·Aᵀ·Bᵀ` when `weight` is adapted, else `y`; with `track` false
    /// the adapters enter detached (no graph through them).
    pub fn apply(&self, weight: &str, x: &Tensor, y: Tensor, track: bool) -> Result<Tensor> {
        let Some(&(a, b)) = self.index.get(weight) else {
            return Ok(y);
        };
        let p = self.config.dropout;
        let x = if p > 0.0 && self.training.load(Ordering::Relaxed) {
            let n = x.elem_count();
            let keep = (1.0 / (1.0 - p)) as f32;
            let mask: Vec<f32> = {
                let mut rng =
                    self.dropout_rng.lock().map_err(|_| TrainError::Config("dropout generator poisoned".into()))?;
                (0..n).map(|_| if rng.next_f64() < p { 0.0 } else { keep }).collect()
            };
            let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
            (x * mask)?
        } else {
            x.clone()
        };
        let (a, b) = (self.params[a].1.as_tensor(), self.params[b].1.as_tensor());
        let (a, b) = if track { (a.clone(), b.clone()) } else { (a.detach(), b.detach()) };
        let delta = x.matmul(&a.t()?)?.matmul(&b.t()?)?;
        Ok((y + (delta * self.config.scale())?)?)
    }

    /// `base` with every adapted weight replaced by `W + (α/r)·B·A`.
    pub fn merge(&self, base: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
        let mut out = base.clone();
        for (w, &(a, b)) in &self.index {
            let base_w = base
                .get(w)
                .ok_or_else(|| TrainError::Checkpoint(format!("the base model has no tensor {w:?} to merge into")))?;
            let a = self.params[a].1.as_tensor();
            let b = self.params[b].1.as_tensor();
            let delta = (b.matmul(a)? * self.config.scale())?;
            out.insert(w.clone(), (base_w.to_dtype(DType::F32)? + delta)?);
        }
        Ok(out)
    }

    /// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` (PEFT's layout).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tensors: HashMap<String, Tensor> =
            self.tensors().into_iter().map(|(n, t)| (format!("{PEFT_PREFIX}{n}"), t)).collect();
        save_tensors(&dir.join("adapter_model.safetensors"), &tensors)?;
        let modules: Vec<&str> = TARGETS
            .iter()
            .filter(|(s, _)| self.config.targets.iter().any(|t| t == s))
            .map(|(_, m)| m.rsplit('.').next().unwrap_or(m))
            .collect();
        let json = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.config.rank,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": modules,
            "bias": "none",
            "fan_in_fan_out": false,
        });
        write_atomic(
            &dir.join("adapter_config.json"),
            serde_json::to_string_pretty(&json).expect("json serializes").as_bytes(),
        )
    }

    /// Reads adapters written by [`Lora::save`] (or by PEFT, for these seven modules, which every family has) for a model
    /// with `model`'s shape.
    pub fn load(dir: &Path, model: &ModelConfig) -> Result<Lora> {
        let path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let bad = |m: &str| TrainError::Checkpoint(format!("{}: {m}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON ({e})")))?;
        let rank = json["r"].as_u64().ok_or_else(|| bad("no r"))? as usize;
        let alpha = json["lora_alpha"].as_f64().ok_or_else(|| bad("no lora_alpha"))?;
        let modules: Vec<String> = json["target_modules"]
            .as_array()
            .ok_or_else(|| bad("no target_modules list"))?
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        let targets = TARGETS
            .iter()
            .filter(|(_, m)| modules.iter().any(|x| m.ends_with(x.as_str())))
            .map(|(s, _)| s.to_string())
            .collect();
        let config = LoraConfig { rank, alpha, dropout: json["lora_dropout"].as_f64().unwrap_or(0.0), targets };
        let tensors = load_tensors(&dir.join("adapter_model.safetensors"))?
            .into_iter()
            .map(|(n, t)| (n.strip_prefix(PEFT_PREFIX).unwrap_or(&n).to_string(), t))
            .collect();
        Lora::from_tensors(config, model, tensors, 0)
    }
}
