//! `kiln rl`: reinforcement learning on a task with checkable answers (the generated
//! arithmetic task, or GSM8K), by GRPO or rejection-sampling fine-tuning, LoRA or full
//! weights, into a run directory like every fine-tuning run ([`kiln_train::rl`] does the work).

use crate::commands::sft::{describe, train_and_write, BadRow, FinetuneArgs};
use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_eval::tasks::{arith, gsm8k};
use kiln_train::rl::{write_problems, Problem, Rl, RlConfig};
use std::path::{Path, PathBuf};

/// Training problems drawn for the arithmetic task.
const ARITH_TRAIN: usize = 20_000;

/// `kiln rl`.
#[derive(Args, Debug)]
pub struct RlArgs {
    /// Starting model: a kiln run directory, a Hugging Face directory, a GGUF file or a name
    /// (default: the default model).
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// The task: arith (multi-digit arithmetic kiln generates; held out: the start of `kiln eval
    /// --task arith`'s set) or gsm8k (the training set; held out: the start of the test set).
    #[arg(long, default_value = "arith", value_parser = ["arith", "gsm8k"])]
    pub task: String,
    /// grpo (group-relative policy gradient) or rft (fine-tune on the correct samples).
    #[arg(long, default_value = "grpo", value_parser = ["grpo", "rft"])]
    pub method: String,
    /// Run directory to create.
    #[arg(short, long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, conflicts_with = "model")]
    pub resume: Option<PathBuf>,
    /// Total optimizer steps (default 100; on --resume, the run's own).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate (default: 1e-5 full, 1e-4 LoRA).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Answers sampled per problem.
    #[arg(long, default_value_t = 8)]
    pub group: usize,
    /// Problems per optimizer step.
    #[arg(long, default_value_t = 4)]
    pub problems: usize,
    /// Sampling temperature.
    #[arg(long = "temp", default_value_t = 1.0)]
    pub temperature: f32,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Held-out problems scored at each evaluation.
    #[arg(long, default_value_t = 100)]
    pub val: usize,
    /// Samples per held-out problem (val_pass@1 is their mean, val_pass@k whether any is right).
    #[arg(long, default_value_t = 4)]
    pub val_k: usize,
    /// Evaluation every N steps (and at the end).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Weight of a KL penalty to the starting model (GRPO).
    #[arg(long, default_value_t = 0.0)]
    pub kl: f64,
    /// The type the policy is sampled in: q8_0 (fast; logits within about 1 % of the trained
    /// weights') or f32 (exactly the trained weights).
    #[arg(long, default_value = "q8_0", value_parser = ["q8_0", "f32"])]
    pub sample_type: String,
    /// Random seed (problem order, samples, adapter initialisation).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train LoRA adapters instead of every weight.
    #[arg(long)]
    pub lora: bool,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// Directory with kiln's data layout (default: `KILN_DATA`, else fetched into the cache).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// No per-step lines.
    #[arg(short, long)]
    pub quiet: bool,
}

/// A user message: GSM8K's instruction, as `kiln eval` asks, then the question.
fn ask(question: &str) -> String {
    format!("{}\n\n{question}", gsm8k::INSTRUCTION)
}

/// Writes the training and held-out problems of `task` into `dir`.
fn write_task(task: &str, dir: &Path, val: usize, data: Option<&Path>) -> Result<[PathBuf; 2]> {
    let (train, held_out): (Vec<Problem>, Vec<Problem>) = match task {
        "arith" => {
            let as_problem = |p: arith::Problem| Problem { prompt: ask(&p.question), answer: p.answer };
            let train = arith::problems(7, ARITH_TRAIN).into_iter().map(as_problem).collect();
            let test =
                arith::problems(arith::TEST_SEED, arith::TEST_SIZE).into_iter().take(val).map(as_problem).collect();
            (train, test)
        }
        _ => {
            let file = |rel: &str| -> Result<PathBuf> {
                match data {
                    Some(d) => Ok(d.join(rel)),
                    None => Ok(kiln_hub::Hub::from_env().data_store()?.file(rel, true)?.location()),
                }
            };
            let read = |path: PathBuf| -> Result<Vec<Problem>> {
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                let mut out = Vec::new();
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let p: gsm8k::Problem = serde_json::from_str(line)
                        .with_context(|| format!("{} line {}: not a GSM8K row", path.display(), i + 1))?;
                    let answer = gsm8k::extract_answer(&p.answer).with_context(|| {
                        format!("{} line {}: the answer has no final number", path.display(), i + 1)
                    })?;
                    out.push(Problem { prompt: ask(&p.question), answer });
                }
                Ok(out)
            };
            let train = read(file("sft/gsm8k_train.jsonl")?)?;
            let test = read(file("eval/gsm8k_test.jsonl")?)?.into_iter().take(val).collect();
            (train, test)
        }
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let paths = [dir.join("problems-train.jsonl"), dir.join("problems-heldout.jsonl")];
    write_problems(&paths[0], &train)?;
    write_problems(&paths[1], &held_out)?;
    Ok(paths)
}

/// Runs `kiln rl`.
pub fn rl(args: &RlArgs) -> Result<()> {
    let rl = RlConfig {
        method: args.method.clone(),
        task: args.task.clone(),
        group: args.group,
        problems_per_step: args.problems,
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
        val_k: args.val_k,
        kl: args.kl,
        sample_type: args.sample_type.clone(),
    };
    rl.validate()?;
    let data = match (&args.resume, &args.out) {
        (None, Some(out)) => {
            if out.join("finetune.json").exists() {
                bail!("{} already holds a run; continue it with --resume {0} or choose another --out", out.display());
            }
            write_task(&args.task, out, args.val, args.data.as_deref())?.to_vec()
        }
        _ => Vec::new(),
    };
    let model = match (&args.model, &args.resume) {
        (None, None) => Some(crate::load::resolve(None)?),
        (m, _) => m.clone(),
    };
    let common = FinetuneArgs {
        model,
        data,
        out: args.out.clone(),
        resume: args.resume.clone(),
        steps: args.steps.or(args.resume.is_none().then_some(100)),
        lr: args.lr,
        warmup: None,
        max_len: None,
        val_rows: None,
        eval_every: args.eval_every,
        ckpt_every: None,
        weight_decay: None,
        grad_clip: None,
        seed: Some(args.seed),
        on_bad_row: BadRow::Fail,
        lora: args.lora,
        rank: args.rank,
        alpha: 2.0 * args.rank as f64,
        lora_dropout: 0.0,
        target: "q,k,v,o,gate,up,down".into(),
        quiet: args.quiet,
    };
    let mut run = common.open(
        "rl",
        |c| {
            c.rl = Some(rl);
            if args.lr.is_none() {
                c.lr = if args.lora { 1e-4 } else { 1e-5 };
            }
            // Answers are sampled, not cut: rows hold a prompt and its answer.
            c.max_len = 4096;
            c.ckpt_every = c.eval_every;
            c.validate()?;
            Ok(())
        },
        |_| Ok(Vec::new()),
    )?;
    let mut task = kiln_model::threads::pool().install(|| Rl::load(&run)).context("cannot read the problems")?;
    describe(&run);
    let last = train_and_write(&mut run, &mut task, args.quiet)?;
    let start: Option<serde_json::Value> =
        std::fs::read_to_string(run.dir.join("start.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let val =
        |v: &serde_json::Value, k: &str| v[k].as_f64().map_or("–".to_string(), |x| format!("{:.1} %", 100.0 * x));
    let before = start
        .as_ref()
        .map(|s| format!(" (from {} / {})", val(s, "val_pass@1"), val(s, "val_pass@k")))
        .unwrap_or_default();
    outln!(
        "{}: step {}, reward {:.3}; held out: pass@1 {} pass@{} {}{before}; model in {}",
        run.dir.display(),
        run.step,
        last["reward"].as_f64().unwrap_or(f64::NAN),
        val(&last, "val_pass@1"),
        args.val_k,
        val(&last, "val_pass@k"),
        run.dir.join("model").display()
    );
    Ok(())
}
