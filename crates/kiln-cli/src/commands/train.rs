//! `kiln train`: pretrain a model from raw text into a run directory, or continue one
//! ([`kiln_train::train`] does the work; this maps flags onto a [`TrainConfig`]).

use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_model::config::Family;
use kiln_train::preset::{MatrixOptimizer, TrainConfig, PRESETS};
use kiln_train::schedule::Decay;
use kiln_train::train::Trainer;
use std::path::PathBuf;

/// `kiln train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Text files or folders (.txt and other text, .jsonl with a "text" field, .parquet).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Tokenizer directory made by `kiln tokenizer train`.
    #[arg(long, required_unless_present = "resume")]
    pub tokenizer: Option<PathBuf>,
    /// Model size: nano, micro, mini, small, gpt2-small (default micro).
    #[arg(long)]
    pub preset: Option<String>,
    /// The block's family: llama (default), qwen2 (Q/K/V biases), qwen3 (Q/K norms) or gemma3
    /// (Q/K norms, post-norms, GELU, scaled embeddings, sliding-window layers).
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
    /// Run directory to create.
    #[arg(short, long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, conflicts_with_all = ["data", "tokenizer"])]
    pub resume: Option<PathBuf>,
    /// Total optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Residual width.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Transformer blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads (grouped-query attention when fewer than --heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Feed-forward hidden width.
    #[arg(long)]
    pub ffn: Option<usize>,
    /// Context length (training sequence length).
    #[arg(long)]
    pub context: Option<usize>,
    /// Separate output projection instead of the tied embedding.
    #[arg(long)]
    pub untied: bool,
    /// Sequences per forward/backward pass.
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Tokens per optimizer step (gradient accumulation reaches it).
    #[arg(long)]
    pub batch_tokens: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate as a fraction of the peak.
    #[arg(long)]
    pub min_lr_frac: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Decay after warm-up.
    #[arg(long, value_enum)]
    pub decay: Option<DecayArg>,
    /// AdamW weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// AdamW beta1.
    #[arg(long)]
    pub beta1: Option<f64>,
    /// AdamW beta2.
    #[arg(long)]
    pub beta2: Option<f64>,
    /// Optimizer of the hidden weight matrices: adamw, or muon (Newton–Schulz orthogonalized
    /// momentum, as in nanochat; embeddings, head and norms stay on AdamW).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Muon's peak learning rate (default 0.02; same schedule as --lr).
    #[arg(long)]
    pub muon_lr: Option<f64>,
    /// Muon's momentum (default 0.95).
    #[arg(long)]
    pub muon_momentum: Option<f64>,
    /// Gradient-norm clip (0: off).
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Validation every N steps.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Micro-batches per validation estimate.
    #[arg(long)]
    pub eval_batches: Option<usize>,
    /// A sample every N steps (0: never).
    #[arg(long)]
    pub sample_every: Option<usize>,
    /// A checkpoint every N steps.
    #[arg(long)]
    pub ckpt_every: Option<usize>,
    /// Checkpoints kept.
    #[arg(long)]
    pub keep: Option<usize>,
    /// Random seed (initialisation and batches).
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar or per-step lines (the final summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// The run-shaping flags present on the command line (which a resumed run cannot take).
fn settings_given(a: &TrainArgs) -> Vec<&'static str> {
    let flags: [(&str, bool); 28] = [
        ("--preset", a.preset.is_some()),
        ("--family", a.family.is_some()),
        ("--dim", a.dim.is_some()),
        ("--layers", a.layers.is_some()),
        ("--heads", a.heads.is_some()),
        ("--kv-heads", a.kv_heads.is_some()),
        ("--ffn", a.ffn.is_some()),
        ("--context", a.context.is_some()),
        ("--untied", a.untied),
        ("--micro-batch", a.micro_batch.is_some()),
        ("--batch-tokens", a.batch_tokens.is_some()),
        ("--lr", a.lr.is_some()),
        ("--min-lr-frac", a.min_lr_frac.is_some()),
        ("--warmup", a.warmup.is_some()),
        ("--decay", a.decay.is_some()),
        ("--weight-decay", a.weight_decay.is_some()),
        ("--beta1", a.beta1.is_some()),
        ("--beta2", a.beta2.is_some()),
        ("--optimizer", a.optimizer.is_some()),
        ("--muon-lr", a.muon_lr.is_some()),
        ("--muon-momentum", a.muon_momentum.is_some()),
        ("--grad-clip", a.grad_clip.is_some()),
        ("--eval-every", a.eval_every.is_some()),
        ("--eval-batches", a.eval_batches.is_some()),
        ("--sample-every", a.sample_every.is_some()),
        ("--ckpt-every", a.ckpt_every.is_some()),
        ("--keep", a.keep.is_some()),
        ("--seed", a.seed.is_some()),
    ];
    flags.iter().filter(|(_, given)| *given).map(|(name, _)| *name).collect()
}

/// `--family`: the families kiln trains from scratch (those it runs).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FamilyArg {
    /// Llama 3 / SmolLM2 blocks.
    Llama,
    /// Qwen2.5: biases on Q, K and V.
    Qwen2,
    /// Qwen3: RMSNorm on each Q and K head.
    Qwen3,
    /// Gemma 3: Q/K norms, norms after attention and MLP, GELU, sliding-window layers.
    Gemma3,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Family {
        match f {
            FamilyArg::Llama => Family::Llama,
            FamilyArg::Qwen2 => Family::Qwen2,
            FamilyArg::Qwen3 => Family::Qwen3,
            FamilyArg::Gemma3 => Family::Gemma3,
        }
    }
}

/// `--decay`: the learning-rate schedule after warm-up.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DecayArg {
    /// Half a cosine down to --min-lr-frac of the peak.
    Cosine,
    /// A straight line down to --min-lr-frac of the peak.
    Linear,
    /// The peak until the end.
    Constant,
}

impl From<DecayArg> for Decay {
    fn from(d: DecayArg) -> Decay {
        match d {
            DecayArg::Cosine => Decay::Cosine,
            DecayArg::Linear => Decay::Linear,
            DecayArg::Constant => Decay::Constant,
        }
    }
}

/// `--optimizer`: what updates the hidden weight matrices.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OptimizerArg {
    /// AdamW, as every other parameter.
    Adamw,
    /// Muon: Newton–Schulz orthogonalized momentum (nanochat's choice for matrices).
    Muon,
}

impl From<OptimizerArg> for MatrixOptimizer {
    fn from(o: OptimizerArg) -> MatrixOptimizer {
        match o {
            OptimizerArg::Adamw => MatrixOptimizer::AdamW,
            OptimizerArg::Muon => MatrixOptimizer::Muon,
        }
    }
}

/// The preset with the flags applied.
fn config(args: &TrainArgs, vocab_size: usize) -> Result<TrainConfig> {
    let mut c = TrainConfig::preset(args.preset.as_deref().unwrap_or("micro"), vocab_size)
        .with_context(|| format!("presets: {}", PRESETS.join(", ")))?;
    if let Some(steps) = args.steps {
        // Schedules and intervals follow the step count unless set explicitly (below).
        c.set_steps(steps);
    }
    let s = &mut c.shape;
    if let Some(f) = args.family {
        s.family = f.into();
    }
    macro_rules! set {
        ($($flag:ident => $field:expr),* $(,)?) => { $( if let Some(v) = args.$flag { $field = v; } )* };
    }
    set!(dim => s.dim, layers => s.n_layers, heads => s.n_heads, kv_heads => s.n_kv_heads, ffn => s.ffn_dim,
         context => s.context);
    if args.untied {
        s.tied = false;
    }
    if args.heads.is_some() && args.kv_heads.is_none() {
        s.n_kv_heads = s.n_heads;
    }
    set!(micro_batch => c.micro_batch, batch_tokens => c.batch_tokens, lr => c.lr, min_lr_frac => c.min_lr_frac,
         warmup => c.warmup, weight_decay => c.weight_decay, beta1 => c.beta1, beta2 => c.beta2,
         muon_lr => c.muon_lr, muon_momentum => c.muon_momentum, grad_clip => c.grad_clip, eval_every => c.eval_every, eval_batches => c.eval_batches,
         sample_every => c.sample_every, ckpt_every => c.ckpt_every, keep => c.keep, seed => c.seed);
    if let Some(d) = args.decay {
        c.decay = d.into();
    }
    if let Some(o) = args.optimizer {
        c.optimizer = o.into();
    }
    c.validate()?;
    Ok(c)
}

/// Runs the command.
pub fn train(args: &TrainArgs, threads: usize) -> Result<()> {
    // main.rs has called kiln_train::runtime::tune() before starting the worker threads.
    let pool = kiln_model::threads::pool();
    let mut trainer = match (&args.resume, &args.out, &args.data, &args.tokenizer) {
        (Some(run), _, _, _) => {
            let given = settings_given(args);
            if !given.is_empty() {
                bail!(
                    "--resume continues a run with the settings it was started with (only --steps can change); drop {}",
                    given.join(", ")
                );
            }
            pool.install(|| Trainer::resume(run, args.steps, args.quiet))
                .with_context(|| format!("cannot resume {}", run.display()))?
        }
        (None, Some(out), Some(data), Some(tok_dir)) => {
            let tok = kiln_text::Tokenizer::from_dir(tok_dir).with_context(|| {
                format!("{}: no tokenizer here; make one with `kiln tokenizer train`", tok_dir.display())
            })?;
            let cfg = config(args, tok.vocab_size())?;
            pool.install(|| Trainer::start(data, tok_dir, out, cfg, args.quiet))
                .with_context(|| format!("cannot start a run in {}", out.display()))?
        }
        _ => bail!("kiln train needs --data, --tokenizer and --out, or --resume RUN"),
    };
    let c = &trainer.cfg;
    eprintln!(
        "{} {} model: {:.2}M parameters, {} layers × {} wide, context {}; {} tokens/step ({} × {} × {} accumulated); {} steps from step {}",
        c.preset,
        c.shape.family.architecture(),
        trainer.model.n_params() as f64 / 1e6,
        c.shape.n_layers,
        c.shape.dim,
        c.shape.context,
        c.tokens_per_step(),
        c.accum_steps(),
        c.micro_batch,
        c.shape.context,
        c.steps,
        trainer.step
    );
    let quiet = args.quiet;
    let summary = pool
        .install(|| {
            trainer.train(threads, &mut |line| {
                if !quiet {
                    eprintln!("{line}")
                }
            })
        })
        .context("training failed")?;
    let val = summary.val.map(|(l, b)| format!(", val loss {l:.4} ({b:.3} bits/byte)")).unwrap_or_default();
    outln!(
        "{}: step {}, loss {:.4}{val}, {:.0} tokens/s; weights in {}",
        trainer.run_dir().display(),
        summary.steps,
        summary.loss,
        summary.tokens_per_s,
        trainer.run_dir().join("model").display()
    );
    Ok(())
}
