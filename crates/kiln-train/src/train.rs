//! The pretraining loop and the run directory.
//!
//! A run directory holds `train_config.json` (the resolved [`TrainConfig`]), `run.json` (where
//! the data is), `tokenizer/` (a copy of the tokenizer), `shards/`, `checkpoints/`, `model/` (the
//! latest weights as a Hugging Face directory: what `kiln run --model RUN` loads),
//! `metrics.jsonl` and `loss.png`/`loss.svg`.
//!
//! One optimizer step: micro-batches of random windows until the token batch is full, gradients
//! accumulated (each micro-batch's loss scaled by 1/accum), clipped to a global norm, one AdamW
//! update at the scheduled learning rate (with `--optimizer muon`, Muon updates the hidden
//! matrices at its own peak rate on the same schedule). Everything random comes from two [`Rng`]s whose states
//! go into checkpoints, so a resumed run repeats the uninterrupted one step for step.

use crate::checkpoint::{self, TrainState};
use crate::data::{self, Batches};
use crate::export::write_hf_dir;
use crate::metrics::{MetricsLog, Record};
use crate::model::Transformer;
use crate::optim::{AdamW, GradAccum, Muon};
use crate::preset::MatrixOptimizer;
use crate::preset::TrainConfig;
use crate::rng::Rng;
use crate::schedule::lr_at;
use crate::{io_err, plot, Result, TrainError};
use candle_core::{DType, Device, Tensor};
use kiln_model::formats::hf_write::TOKENIZER_FILES;
use kiln_text::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tokens generated for the periodic sample.
const SAMPLE_TOKENS: usize = 48;

/// `run.json`: what `--resume` needs besides the config.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunInfo {
    data: PathBuf,
}

/// A training run in progress.
pub struct Trainer {
    run: PathBuf,
    /// The resolved configuration.
    pub cfg: TrainConfig,
    /// The model being trained.
    pub model: Transformer,
    opt: AdamW,
    /// Muon for the hidden matrices, when the run uses it (AdamW then skips them).
    muon: Option<Muon>,
    train: Batches,
    val: Batches,
    /// Validation tokens per validation byte (for bits per byte).
    tokens_per_byte: f64,
    sample_rng: Rng,
    /// Optimizer steps done.
    pub step: usize,
    tokens_seen: u64,
    log: MetricsLog,
    tok: Tokenizer,
}

/// What `train` reports at the end.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Steps done in total.
    pub steps: usize,
    /// Last training loss.
    pub loss: f64,
    /// Last validation loss and bits per byte.
    pub val: Option<(f64, f64)>,
    /// Mean training throughput of this session.
    pub tokens_per_s: f64,
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    checkpoint::write_atomic(path, serde_json::to_string_pretty(v).expect("serializes").as_bytes())
}

fn read_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint(format!("{}: corrupted ({e})", path.display())))
}

impl Trainer {
    /// Starts a new run in `run` on `data` with the tokenizer in `tokenizer_dir`.
    pub fn start(data: &Path, tokenizer_dir: &Path, run: &Path, cfg: TrainConfig, quiet: bool) -> Result<Trainer> {
        cfg.validate()?;
        if !checkpoint::list(run)?.is_empty() {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints; continue it with --resume {0} or choose another --out",
                run.display()
            )));
        }
        let tok_copy = run.join("tokenizer");
        std::fs::create_dir_all(&tok_copy).map_err(io_err(&tok_copy))?;
        for f in TOKENIZER_FILES {
            let src = tokenizer_dir.join(f);
            if !src.is_file() {
                return Err(TrainError::Config(format!(
                    "{}: no {f}; train one with `kiln tokenizer train`",
                    tokenizer_dir.display()
                )));
            }
            std::fs::copy(&src, tok_copy.join(f)).map_err(io_err(&src))?;
        }
        let data = data.canonicalize().map_err(io_err(data))?;
        write_json(&run.join("run.json"), &RunInfo { data })?;
        write_json(&run.join("train_config.json"), &cfg)?;
        Trainer::open(run, None, quiet)
    }

    /// Continues the run in `run` from its latest checkpoint (or from the start when it has
    /// none); `steps` extends or shortens the total.
    pub fn resume(run: &Path, steps: Option<usize>, quiet: bool) -> Result<Trainer> {
        let path = run.join("train_config.json");
        if !path.is_file() {
            return Err(TrainError::Checkpoint(format!(
                "{}: not a kiln run directory (no train_config.json)",
                run.display()
            )));
        }
        let mut cfg: TrainConfig = read_json(&path)?;
        if let Some(s) = steps {
            cfg.steps = s;
            cfg.validate()?;
            write_json(&path, &cfg)?;
        }
        let latest = checkpoint::list(run)?.pop();
        Trainer::open(run, latest.map(|(_, p)| p), quiet)
    }

    fn open(run: &Path, ckpt: Option<PathBuf>, quiet: bool) -> Result<Trainer> {
        crate::runtime::tune();
        let cfg: TrainConfig = read_json(&run.join("train_config.json"))?;
        let info: RunInfo = read_json(&run.join("run.json"))?;
        let tok_dir = run.join("tokenizer");
        let tok = Tokenizer::from_dir(&tok_dir)?;
        if tok.vocab_size() != cfg.vocab_size {
            return Err(TrainError::Config(format!(
                "the tokenizer has {} tokens but the config says {}",
                tok.vocab_size(),
                cfg.vocab_size
            )));
        }
        let tok_json = std::fs::read(tok_dir.join("tokenizer.json")).map_err(io_err(&tok_dir))?;
        let shards = run.join("shards");
        let manifest = data::prepare(&info.data, &tok, &tok_json, &shards, quiet)?;
        let ctx = cfg.shape.context;
        let train_tokens = data::load_split(&shards, "train", &manifest, cfg.vocab_size)?;
        let mut val_tokens = data::load_split(&shards, "val", &manifest, cfg.vocab_size)?;
        if train_tokens.len() <= ctx + 1 {
            return Err(TrainError::Data(format!(
                "{}: {} training tokens, fewer than one sequence of {}",
                info.data.display(),
                train_tokens.len(),
                ctx + 1
            )));
        }
        let tokens_per_byte = if val_tokens.len() > ctx + 1 && manifest.val_bytes > 0 {
            manifest.val_tokens as f64 / manifest.val_bytes as f64
        } else {
            // Too little text to hold some out: validate on the training stream.
            val_tokens = train_tokens.clone();
            manifest.train_tokens as f64 / manifest.train_bytes.max(1) as f64
        };
        let model_cfg = cfg.model_config();
        let mut train = Batches::new(train_tokens, cfg.seed ^ 0x5eed);
        let val = Batches::new(val_tokens, 0);
        let mut sample_rng = Rng::new(cfg.seed ^ 0x5a3);
        let (model, step, tokens_seen, resume_step, state) = match &ckpt {
            None => {
                let model = Transformer::init(model_cfg, cfg.shape.tied, cfg.seed, DType::F32)?;
                (model, 0, 0, None, None)
            }
            Some(dir) => {
                let c = checkpoint::load(dir)?;
                let model = Transformer::from_tensors(model_cfg, cfg.shape.tied, c.model, DType::F32)?;
                train.rng = Rng::new(c.state.loader_rng);
                sample_rng = Rng::new(c.state.sample_rng);
                let (step, tokens_seen) = (c.state.step, c.state.tokens_seen);
                (model, step, tokens_seen, Some(step), Some((c.optim, c.state.adam_t)))
            }
        };
        let mut opt = AdamW::new(model.params(), (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay);
        let mut muon = (cfg.optimizer == MatrixOptimizer::Muon)
            .then(|| Muon::new(model.params(), cfg.muon_momentum, cfg.weight_decay));
        if let Some(m) = &muon {
            opt.skip = m.mask(model.params().len());
        }
        if let Some((tensors, adam_t)) = &state {
            opt.load_state(model.params(), tensors, *adam_t)?;
            if let Some(m) = &mut muon {
                m.load_state(model.params(), tensors)?;
            }
        }
        let log = MetricsLog::open(run, resume_step)?;
        Ok(Trainer {
            run: run.to_path_buf(),
            cfg,
            model,
            opt,
            muon,
            train,
            val,
            tokens_per_byte,
            sample_rng,
            step,
            tokens_seen,
            log,
            tok,
        })
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// Runs until `cfg.steps`, calling `report` with each progress line and sample.
    pub fn train(&mut self, threads: usize, report: &mut dyn FnMut(&str)) -> Result<Summary> {
        let cfg = self.cfg.clone();
        let accum = cfg.accum_steps();
        let per_step = cfg.tokens_per_step();
        let flops_per_step = cfg.flops_per_token(self.model.n_params()) * per_step as f64;
        let session = Instant::now();
        let first_step = self.step;
        let mut last = Summary { steps: self.step, loss: f64::NAN, val: None, tokens_per_s: 0.0 };
        if self.step >= cfg.steps {
            // A finished run resumed: report what it logged, and redraw its plots.
            let records = self.log.records()?;
            if let Some(r) = records.last() {
                last.loss = r.loss;
                last.tokens_per_s = r.tokens_per_s;
            }
            last.val = records.iter().rev().find_map(|r| r.val_loss.zip(r.val_bpb));
            report(&format!("the run is already at step {}/{}", self.step, cfg.steps));
            plot::plot_loss(&self.run, &records)?;
            return Ok(last);
        }
        let peak = crate::peak::peak_flops(threads);
        report(&format!("MFU is against {:.1} GFLOP/s, the f32 FMA peak measured on {threads} threads", peak / 1e9));
        // Kept across steps: reset rather than reallocated.
        let mut acc: Option<GradAccum> = None;
        while self.step < cfg.steps {
            let t0 = Instant::now();
            let lr = lr_at(self.step, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr_frac, cfg.decay);
            let acc = GradAccum::reuse(&mut acc, self.model.params());
            let mut loss_sum = 0.0;
            for _ in 0..accum {
                let (x, y) = self.train.next_batch(cfg.micro_batch, cfg.shape.context);
                let shape = (cfg.micro_batch, cfg.shape.context);
                let x = Tensor::from_vec(x, shape, &Device::Cpu)?;
                let y = Tensor::from_vec(y, shape, &Device::Cpu)?;
                let loss = self.model.loss(&x, &y)?;
                loss_sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                let grads = loss.backward()?;
                acc.add(self.model.params(), &grads, 1.0 / accum as f32)?;
            }
            let grad_norm = acc.clip(cfg.grad_clip);
            self.opt.step(self.model.params(), acc.grads(), lr)?;
            if let Some(muon) = &mut self.muon {
                // Muon's own peak rate, on the same schedule.
                muon.step(self.model.params(), acc.grads(), lr * cfg.muon_lr / cfg.lr)?;
            }
            self.step += 1;
            self.tokens_seen += per_step as u64;
            let dt = t0.elapsed().as_secs_f64();
            let loss = loss_sum / accum as f64;
            if !loss.is_finite() {
                return Err(TrainError::Config(format!(
                    "the loss became {loss} at step {}; lower --lr or raise --warmup",
                    self.step
                )));
            }
            let eval_now = (cfg.eval_every > 0 && self.step.is_multiple_of(cfg.eval_every)) || self.step == cfg.steps;
            let val = if eval_now { Some(self.evaluate()?) } else { None };
            let rec = Record {
                step: self.step,
                loss,
                lr,
                tokens_per_s: per_step as f64 / dt,
                grad_norm: Some(grad_norm),
                val_loss: val.map(|v| v.0),
                val_bpb: val.map(|v| v.1),
            };
            self.log.append(&rec)?;
            let done = self.step - first_step;
            let elapsed = session.elapsed().as_secs_f64();
            let eta = elapsed / done as f64 * (cfg.steps - self.step) as f64;
            let mut line = format!(
                "step {}/{} | loss {loss:.4} | lr {lr:.2e} | {:.0} tok/s | MFU {:.1}% | eta {}",
                self.step,
                cfg.steps,
                rec.tokens_per_s,
                100.0 * flops_per_step / dt / peak,
                fmt_secs(eta)
            );
            if let Some((vl, bpb)) = val {
                line.push_str(&format!(" | val {vl:.4} ({bpb:.3} bpb)"));
            }
            report(&line);
            if cfg.sample_every > 0 && self.step.is_multiple_of(cfg.sample_every) {
                report(&format!("sample: {}", self.sample()?));
            }
            if (cfg.ckpt_every > 0 && self.step.is_multiple_of(cfg.ckpt_every)) || self.step == cfg.steps {
                self.checkpoint()?;
            }
            last = Summary {
                steps: self.step,
                loss,
                val: val.or(last.val),
                tokens_per_s: (self.step - first_step) as f64 * per_step as f64 / elapsed,
            };
        }
        Ok(last)
    }

    /// Mean validation loss over the fixed validation batches, and bits per byte.
    pub fn evaluate(&self) -> Result<(f64, f64)> {
        let cfg = &self.cfg;
        let batches = self.val.fixed_batches(cfg.eval_batches.max(1), cfg.micro_batch, cfg.shape.context);
        let mut sum = 0.0;
        for (x, y) in &batches {
            let shape = (cfg.micro_batch, cfg.shape.context);
            let x = Tensor::from_vec(x.clone(), shape, &Device::Cpu)?;
            let y = Tensor::from_vec(y.clone(), shape, &Device::Cpu)?;
            sum += f64::from(self.model.no_grad(|| self.model.loss(&x, &y))?.to_scalar::<f32>()?);
        }
        let loss = sum / batches.len() as f64;
        Ok((loss, loss / std::f64::consts::LN_2 * self.tokens_per_byte))
    }

    /// A short continuation of BOS, sampled at temperature 0.8.
    pub fn sample(&mut self) -> Result<String> {
        let prompt: Vec<u32> = self.tok.bos_id().into_iter().collect();
        let prompt = if prompt.is_empty() { vec![0] } else { prompt };
        let ids = self.model.generate(&prompt, SAMPLE_TOKENS, 0.8, &mut self.sample_rng)?;
        Ok(self.tok.decode(&ids, true)?.replace('\n', " ⏎ "))
    }

    /// Writes a checkpoint, refreshes `model/` and the loss plots.
    pub fn checkpoint(&self) -> Result<()> {
        let state = TrainState {
            step: self.step,
            adam_t: self.opt.t,
            loader_rng: self.train.rng.state,
            sample_rng: self.sample_rng.state,
            tokens_seen: self.tokens_seen,
        };
        let tensors = self.model.tensors();
        let mut optim = self.opt.state_tensors(self.model.params())?;
        if let Some(muon) = &self.muon {
            optim.extend(muon.state_tensors(self.model.params())?);
        }
        checkpoint::save(&self.run, &tensors, &optim, &state, self.cfg.keep)?;
        write_hf_dir(
            &self.run.join("model"),
            &tensors,
            &self.model.config,
            self.model.tied,
            &self.run.join("tokenizer"),
            Some(kiln_text::bpe_train::BASE_TEMPLATE),
        )?;
        plot::plot_loss(&self.run, &self.log.records()?)
    }
}

fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
