//! The fine-tuning loop and its run directory, shared by SFT, DPO and the reward model: the
//! configuration, the data order, the metrics log, checkpoints and resume, the final model.

use super::{load_base, template_of, write_tokenizer, Base};
use crate::checkpoint::{self, TrainState};
use crate::export::write_hf_dir;
use crate::lora::{Lora, LoraConfig};
use crate::metrics::Record;
use crate::model::Transformer;
use crate::optim::{AdamW, GradAccum};
use crate::rng::Rng;
use crate::schedule::{lr_at, Decay};
use crate::{io_err, plot, Result, TrainError};
use candle_core::{DType, Tensor, Var};
use kiln_model::ModelConfig;
use kiln_text::{ChatTemplate, Tokenizer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Hyper-parameters of a fine-tuning run (`finetune.json`). One struct for the three tasks;
/// each reads the fields it needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// `sft`, `dpo` or `rm`.
    pub task: String,
    /// The starting model.
    pub base: PathBuf,
    /// Data files.
    pub data: Vec<PathBuf>,
    /// Total optimizer steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub min_lr_frac: f64,
    /// AdamW weight decay (matrices).
    pub weight_decay: f64,
    /// Gradient-norm clip (0: off).
    pub grad_clip: f64,
    /// SFT: trained tokens per optimizer step (whole conversations until reached).
    pub batch_tokens: usize,
    /// SFT: conversations per optimizer step instead of `batch_tokens` (a fixed batch, as
    /// TRL's `per_device_train_batch_size`).
    #[serde(default)]
    pub batch_rows: Option<usize>,
    /// DPO / RM: comparisons per optimizer step.
    pub batch_pairs: usize,
    /// Longest sequence in tokens (longer ones are cut).
    pub max_len: usize,
    /// SFT: pack short conversations into rows of `max_len`.
    pub pack: bool,
    /// Rows held out for validation.
    pub val_rows: usize,
    /// Validation every N steps (and at the end).
    pub eval_every: usize,
    /// A checkpoint every N steps (and at the end).
    pub ckpt_every: usize,
    /// Checkpoints kept.
    pub keep: usize,
    /// Seed of the data order, adapter initialisation and dropout.
    pub seed: u64,
    /// LoRA instead of full fine-tuning.
    pub lora: Option<LoraConfig>,
    /// A malformed row stops the run instead of being skipped.
    pub fail_on_bad_row: bool,
    /// DPO's β.
    pub beta: f64,
    /// RL: how answers are sampled and scored.
    #[serde(default)]
    pub rl: Option<crate::rl::RlConfig>,
}

impl FinetuneConfig {
    /// Defaults for `task` on `base` and `data`.
    pub fn new(task: &str, base: PathBuf, data: Vec<PathBuf>) -> FinetuneConfig {
        FinetuneConfig {
            task: task.into(),
            base,
            data,
            steps: 100,
            lr: if task == "sft" { 2e-5 } else { 5e-6 },
            warmup: 5,
            min_lr_frac: 0.1,
            weight_decay: 0.0,
            grad_clip: 1.0,
            batch_tokens: 2048,
            batch_rows: None,
            batch_pairs: 4,
            max_len: 512,
            pack: false,
            val_rows: 20,
            eval_every: 25,
            ckpt_every: 25,
            keep: 2,
            seed: 42,
            lora: None,
            fail_on_bad_row: false,
            beta: 0.1,
            rl: None,
        }
    }

    /// Sets the number of optimizer steps; warm-up (a tenth, 1 to 20 steps) and the evaluation
    /// and checkpoint intervals (a quarter) follow it. Set those after this call to override them.
    pub fn set_steps(&mut self, steps: usize) {
        self.steps = steps;
        self.warmup = (steps / 10).clamp(1, 20);
        self.eval_every = (steps / 4).max(1);
        self.ckpt_every = (steps / 4).max(1);
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        if self.steps == 0 {
            return bad("--steps must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be positive");
        }
        if self.max_len < 8 {
            return bad("--max-len must be at least 8");
        }
        if self.batch_tokens == 0 || self.batch_pairs == 0 || self.batch_rows == Some(0) {
            return bad("batch sizes must be positive");
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return bad("--beta must be positive");
        }
        if let Some(l) = &self.lora {
            l.validate()?;
        }
        if let Some(r) = &self.rl {
            r.validate()?;
        }
        Ok(())
    }
}

/// The order training rows are visited in: a fresh permutation each epoch, so the whole state
/// is the number of rows consumed (saved in checkpoints as the loader position).
pub struct Loader {
    n: usize,
    seed: u64,
    /// Rows consumed so far.
    pub cursor: u64,
    perm: Vec<usize>,
    perm_epoch: u64,
}

impl Loader {
    /// Visits `0..n` (n > 0) from position `cursor`.
    pub fn new(n: usize, seed: u64, cursor: u64) -> Loader {
        Loader { n, seed, cursor, perm: Vec::new(), perm_epoch: u64::MAX }
    }

    /// The next row index.
    pub fn next_index(&mut self) -> usize {
        let epoch = self.cursor / self.n as u64;
        if epoch != self.perm_epoch {
            self.perm = permutation(self.n, self.seed ^ epoch.wrapping_mul(0x9e37));
            self.perm_epoch = epoch;
        }
        let i = self.perm[(self.cursor % self.n as u64) as usize];
        self.cursor += 1;
        i
    }
}

/// A Fisher–Yates permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// Splits rows into (train, validation): a seeded shuffle, the first `val_rows` held out (fewer
/// when there are few rows, so that training keeps at least as many as it holds out).
pub fn split<T: Clone>(rows: &[T], val_rows: usize, seed: u64) -> (Vec<T>, Vec<T>) {
    let p = permutation(rows.len(), seed ^ 0x5911);
    let nv = val_rows.min(rows.len() / 2);
    let val = p[..nv].iter().map(|&i| rows[i].clone()).collect();
    let train = p[nv..].iter().map(|&i| rows[i].clone()).collect();
    (train, val)
}

/// `metrics.jsonl` with any extra keys (DPO's `rewards/*`): like [`crate::metrics::MetricsLog`],
/// truncated to the resumed step, but lines are kept whole.
pub struct JsonLog {
    path: PathBuf,
}

impl JsonLog {
    /// The log in `run`, keeping lines up to `resume_step` (none when starting).
    pub fn open(run: &Path, resume_step: Option<usize>) -> Result<JsonLog> {
        let path = run.join("metrics.jsonl");
        let mut keep = String::new();
        if let (Some(s), Ok(text)) = (resume_step, std::fs::read_to_string(&path)) {
            for line in text.lines() {
                let step = serde_json::from_str::<Json>(line).ok().and_then(|v| v["step"].as_u64());
                if step.is_some_and(|st| st as usize <= s) {
                    keep.push_str(line);
                    keep.push('\n');
                }
            }
        }
        checkpoint::write_atomic(&path, keep.as_bytes())?;
        Ok(JsonLog { path })
    }

    /// Appends one line.
    pub fn append(&self, v: &Json) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path).map_err(io_err(&self.path))?;
        writeln!(f, "{v}").map_err(io_err(&self.path))
    }

    /// The last line, if any.
    pub fn last_line(&self) -> Result<Option<Json>> {
        let text = std::fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
        Ok(text.lines().rev().find_map(|l| serde_json::from_str(l).ok()))
    }

    /// Every line.
    pub fn lines(&self) -> Result<Vec<Json>> {
        let text = std::fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// The lines as pretraining records (for the loss plot).
    pub fn records(&self) -> Result<Vec<Record>> {
        crate::metrics::read(&self.path)
    }
}

/// The trainable side of a run: the model (with adapters when LoRA) and extra parameters such
/// as a reward head.
pub struct Net {
    /// The transformer.
    pub model: Transformer,
    /// Extra trainable parameters by name (the reward head).
    pub extra: Vec<(String, Var)>,
}

impl Net {
    /// What the optimizer updates: the adapters (LoRA) or every model parameter, then `extra`.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out: Vec<(String, Var)> = match &self.model.adapters {
            Some(l) => l.params().to_vec(),
            None => self.model.params().to_vec(),
        };
        out.extend(self.extra.iter().cloned());
        out
    }

    /// Dropout on (training) or off.
    pub fn set_training(&self, on: bool) {
        if let Some(l) = &self.model.adapters {
            l.set_training(on);
        }
    }

    /// The model's weights with adapters merged.
    pub fn merged_tensors(&self) -> Result<HashMap<String, Tensor>> {
        match &self.model.adapters {
            Some(l) => l.merge(&self.model.tensors()),
            None => Ok(self.model.tensors()),
        }
    }
}

/// One optimizer step's numbers from a task.
pub struct StepStats {
    /// The loss (for `loss` in metrics.jsonl).
    pub loss: f64,
    /// Tokens processed (forward passes).
    pub tokens: usize,
    /// Extra metrics (`rewards/chosen`…).
    pub extra: Vec<(String, f64)>,
}

/// What SFT, DPO and the reward model plug into the shared loop.
pub trait Task: Send {
    /// One optimizer step's forward and backward passes over rows taken from `loader`,
    /// gradients of `net.trainable()` accumulated into `acc`, already averaged.
    fn step(&mut self, net: &Net, loader: &mut Loader, acc: &mut GradAccum) -> Result<StepStats>;
    /// Validation metrics (`val_loss`, …).
    fn evaluate(&mut self, net: &Net) -> Result<Vec<(String, f64)>>;
    /// Validation metrics of the starting model (DPO knows them from its reference numbers).
    fn evaluate_start(&mut self, net: &Net) -> Result<Vec<(String, f64)>> {
        self.evaluate(net)
    }
    /// Training rows.
    fn n_train(&self) -> usize;
}

/// A fine-tuning run in progress.
pub struct Run {
    /// The run directory.
    pub dir: PathBuf,
    /// The configuration.
    pub cfg: FinetuneConfig,
    /// Model and trainable parameters.
    pub net: Net,
    /// The base weights' tokenizer, with the training chat template.
    pub tok: Tokenizer,
    /// The chat template.
    pub template: ChatTemplate,
    opt: AdamW,
    /// Optimizer steps done.
    pub step: usize,
    resume_cursor: u64,
    tokens_seen: u64,
    log: JsonLog,
}

fn read_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint(format!("{}: corrupted ({e})", path.display())))
}

/// Extra parameters a task adds (name, initial value).
pub type Extra = Vec<(String, Tensor)>;

impl Run {
    /// Starts a run in `dir` (which must not hold checkpoints yet).
    pub fn start(dir: &Path, cfg: FinetuneConfig, extra: impl FnOnce(&ModelConfig) -> Result<Extra>) -> Result<Run> {
        cfg.validate()?;
        if !checkpoint::list(dir)?.is_empty() {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints; continue it with --resume {0} or choose another --out",
                dir.display()
            )));
        }
        let base = load_base(&cfg.base)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_tokenizer(&base, &dir.join("tokenizer"))?;
        let text = serde_json::to_string_pretty(&cfg).expect("config serializes");
        checkpoint::write_atomic(&dir.join("finetune.json"), text.as_bytes())?;
        Run::open(dir, base, None, extra)
    }

    /// Continues the run in `dir` from its latest checkpoint; `steps` changes the total.
    pub fn resume(
        dir: &Path,
        steps: Option<usize>,
        task: &str,
        extra: impl FnOnce(&ModelConfig) -> Result<Extra>,
    ) -> Result<Run> {
        let path = dir.join("finetune.json");
        if !path.is_file() {
            return Err(TrainError::Checkpoint(format!(
                "{}: not a fine-tuning run directory (no finetune.json)",
                dir.display()
            )));
        }
        let mut cfg: FinetuneConfig = read_json(&path)?;
        if cfg.task != task {
            return Err(TrainError::Config(format!(
                "{} is a `kiln {}` run, not `kiln {task}`",
                dir.display(),
                cfg.task
            )));
        }
        if let Some(s) = steps {
            cfg.steps = s;
            cfg.validate()?;
            let text = serde_json::to_string_pretty(&cfg).expect("config serializes");
            checkpoint::write_atomic(&path, text.as_bytes())?;
        }
        let base = load_base(&cfg.base)?;
        let latest = checkpoint::list(dir)?.pop().map(|(_, p)| p);
        Run::open(dir, base, latest, extra)
    }

    fn open(
        dir: &Path,
        base: Base,
        ckpt: Option<PathBuf>,
        extra: impl FnOnce(&ModelConfig) -> Result<Extra>,
    ) -> Result<Run> {
        crate::runtime::tune();
        let cfg: FinetuneConfig = read_json(&dir.join("finetune.json"))?;
        let tok = Tokenizer::from_dir(&dir.join("tokenizer"))?;
        let template = template_of(&tok)?;
        let config = base.config.clone();
        let extra_init = extra(&config)?;
        let ck = match &ckpt {
            Some(p) => Some(checkpoint::load(p)?),
            None => None,
        };
        let mut model_tensors = base.tensors;
        if let (Some(c), None) = (&ck, &cfg.lora) {
            for (n, t) in &c.model {
                if model_tensors.contains_key(n) {
                    model_tensors.insert(n.clone(), t.clone());
                }
            }
        }
        let mut model = Transformer::from_tensors(config.clone(), base.tied, model_tensors, DType::F32)?;
        if let Some(lc) = &cfg.lora {
            let lora = match &ck {
                Some(c) => {
                    let t = c
                        .model
                        .iter()
                        .filter(|(n, _)| n.contains(".lora_"))
                        .map(|(n, t)| (n.clone(), t.clone()))
                        .collect();
                    Lora::from_tensors(lc.clone(), &config, t, cfg.seed)?
                }
                None => Lora::init(lc.clone(), &config, cfg.seed)?,
            };
            model.adapters = Some(lora);
            model.frozen = true;
        }
        let mut extra = Vec::new();
        for (name, init) in extra_init {
            let t = match &ck {
                Some(c) => c
                    .model
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| TrainError::Checkpoint(format!("the checkpoint has no tensor {name:?}")))?,
                None => init,
            };
            extra.push((name, Var::from_tensor(&t)?));
        }
        let net = Net { model, extra };
        let mut opt = AdamW::new(&net.trainable(), (0.9, 0.999), 1e-8, cfg.weight_decay);
        let (mut step, mut cursor, mut tokens_seen) = (0, 0, 0);
        if let Some(c) = &ck {
            opt.load_state(&net.trainable(), &c.optim, c.state.adam_t)?;
            step = c.state.step;
            cursor = c.state.loader_rng;
            tokens_seen = c.state.tokens_seen;
            if let Some(l) = &net.model.adapters {
                l.set_rng_state(c.state.sample_rng);
            }
        }
        let log = JsonLog::open(dir, ck.as_ref().map(|c| c.state.step))?;
        Ok(Run { dir: dir.to_path_buf(), cfg, net, tok, template, opt, step, resume_cursor: cursor, tokens_seen, log })
    }

    /// Trains until `cfg.steps`, reporting one line per step; returns the last metrics line.
    pub fn train(&mut self, task: &mut dyn Task, report: &mut dyn FnMut(&str)) -> Result<Json> {
        let cfg = self.cfg.clone();
        let mut loader = Loader::new(task.n_train(), cfg.seed, self.resume_cursor);
        let mut last = json!({});
        if self.step == 0 {
            // The starting model's held-out numbers, for comparison with the end (start.json).
            let start = self.net.model.no_grad(|| task.evaluate_start(&self.net))?;
            if !start.is_empty() {
                let mut line = json!({"step": 0});
                let mut text = "before training".to_string();
                for (k, v) in &start {
                    line[k] = json!(v);
                    text.push_str(&format!(" | {k} {v:.4}"));
                }
                report(&text);
                let path = self.dir.join("start.json");
                checkpoint::write_atomic(&path, line.to_string().as_bytes())?;
            }
        }
        // Kept across steps: reset rather than reallocated.
        let mut acc: Option<GradAccum> = None;
        while self.step < cfg.steps {
            let t0 = Instant::now();
            let lr = lr_at(self.step, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr_frac, Decay::Cosine);
            let params = self.net.trainable();
            let acc = GradAccum::reuse(&mut acc, &params);
            self.net.set_training(true);
            let stats = task.step(&self.net, &mut loader, acc)?;
            self.net.set_training(false);
            if !stats.loss.is_finite() {
                return Err(TrainError::Config(format!(
                    "the loss became {} at step {}; lower --lr",
                    stats.loss,
                    self.step + 1
                )));
            }
            let grad_norm = acc.clip(cfg.grad_clip);
            self.opt.step(&params, acc.grads(), lr)?;
            self.step += 1;
            self.tokens_seen += stats.tokens as u64;
            let dt = t0.elapsed().as_secs_f64();
            let mut line = json!({
                "step": self.step,
                "loss": stats.loss,
                "lr": lr,
                "tokens_per_s": stats.tokens as f64 / dt,
                "grad_norm": grad_norm,
            });
            let mut text = format!(
                "step {}/{} | loss {:.4} | lr {lr:.2e} | {:.0} tok/s | {:.1}s",
                self.step,
                cfg.steps,
                stats.loss,
                stats.tokens as f64 / dt,
                dt
            );
            for (k, v) in &stats.extra {
                line[k] = json!(v);
                text.push_str(&format!(" | {k} {v:.4}"));
            }
            let eval_now = (cfg.eval_every > 0 && self.step.is_multiple_of(cfg.eval_every)) || self.step == cfg.steps;
            if eval_now {
                for (k, v) in self.net.model.no_grad(|| task.evaluate(&self.net))? {
                    line[&k] = json!(v);
                    text.push_str(&format!(" | {k} {v:.4}"));
                }
            }
            self.log.append(&line)?;
            report(&text);
            if (cfg.ckpt_every > 0 && self.step.is_multiple_of(cfg.ckpt_every)) || self.step == cfg.steps {
                self.checkpoint(loader.cursor)?;
            }
            last = line;
        }
        if self.step > 0 && last == json!({}) {
            // A finished run resumed: nothing to train, so its final model is evaluated again
            // (with this kiln's metrics) and reported with its last logged step; nothing is
            // logged.
            last = self.log.last_line()?.unwrap_or_else(|| json!({"step": self.step}));
            let mut text = format!("step {} (finished) re-evaluated", self.step);
            for (k, v) in self.net.model.no_grad(|| task.evaluate(&self.net))? {
                last[&k] = json!(v);
                text.push_str(&format!(" | {k} {v:.4}"));
            }
            report(&text);
        }
        Ok(last)
    }

    fn checkpoint(&self, cursor: u64) -> Result<()> {
        let params = self.net.trainable();
        let tensors: HashMap<String, Tensor> = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        let state = TrainState {
            step: self.step,
            adam_t: self.opt.t,
            loader_rng: cursor,
            sample_rng: self.net.model.adapters.as_ref().map_or(0, |l| l.rng_state()),
            tokens_seen: self.tokens_seen,
        };
        checkpoint::save(&self.dir, &tensors, &self.opt.state_tensors(&params)?, &state, self.cfg.keep)?;
        if self.cfg.rl.is_some() {
            crate::rl::plot(&self.dir, &self.log.lines()?)?;
        }
        plot::plot_loss(&self.dir, &self.log.records()?)
    }

    /// Writes `model/` (adapters merged) and, with LoRA, `adapter/`.
    pub fn write_outputs(&self) -> Result<()> {
        let tensors = self.net.merged_tensors()?;
        let m = &self.net.model;
        write_hf_dir(&self.dir.join("model"), &tensors, &m.config, m.tied, &self.dir.join("tokenizer"), None)?;
        if let Some(l) = &m.adapters {
            l.save(&self.dir.join("adapter"))?;
        }
        Ok(())
    }
}
