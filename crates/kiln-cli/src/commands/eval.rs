//! `kiln eval`: benchmarks, perplexity and regression suites on any model kiln runs.

use crate::args::ModelArgs;
use crate::load::{open, resolve};
use crate::output::Stdout;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln_eval::results::sha256_file;
use kiln_eval::tasks::{self, EvalContext, Task, Thinking};
use kiln_eval::{EvalError, EvalResults, TaskResult};
use kiln_generate::SamplingParams;
use kiln_hub::{DataSet, DataStore, Hub};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `kiln eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tasks, comma-separated: hellaswag, mmlu (5-shot), mmlu0, mmlu_cloze, arc (arc_easy + arc_challenge),
    /// truthfulqa, gsm8k, humaneval, arith (multi-digit arithmetic kiln generates), ppl:FILE.
    #[arg(long, value_name = "TASKS")]
    pub task: Option<String>,
    /// A regression suite: JSON lines of prompts with checks (contains, not_contains, regex,
    /// max_tokens); the exit status is 1 when a check fails.
    #[arg(long, value_name = "FILE")]
    pub suite: Option<PathBuf>,
    /// At most this many items per task (chosen by --seed as llama-perplexity chooses HellaSwag tasks).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed for choosing items (1 is llama-perplexity's).
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Directory with the benchmark files (hellaswag_val_full.txt.bz2, mmlu/, core/, …; default:
    /// each task's data set, fetched into kiln's data cache on first use: see `kiln data list`).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Examples per MMLU prompt.
    #[arg(long, default_value_t = 5)]
    pub shots: usize,
    /// Most tokens per generated answer (default: gsm8k 256, humaneval 384, suite 256).
    #[arg(short = 'n', long = "max-tokens")]
    pub max_tokens: Option<usize>,
    /// Seconds each HumanEval program may run.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    #[command(flatten)]
    pub think: super::think::ThinkFlags,
    /// Sampling temperature of the --think samples (the seed is --seed).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs the command.
pub fn eval(args: &EvalArgs) -> Result<()> {
    if args.task.is_none() && args.suite.is_none() {
        bail!("nothing to evaluate: give --task (e.g. hellaswag,mmlu) or --suite FILE");
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    let task_list = match &args.task {
        Some(t) => Task::parse_list(t, args.shots)?,
        None => Vec::new(),
    };
    if let Some(s) = &args.suite {
        if !s.is_file() {
            bail!("{}: no such suite file", s.display());
        }
    }
    let progress = !args.quiet && std::io::stderr().is_terminal();
    // The data first: a missing data set fails before a model is loaded.
    let data_dir = match &args.data {
        Some(dir) => dir.clone(),
        None => pull_task_data(&task_list, progress)?,
    };
    let budget = args.think.budget()?;
    let choosers = budget.as_ref().map(|_| args.think.choosers()).transpose()?;
    let path = resolve(args.model.model.as_deref())?;
    let lm = open(&path)?;
    // Room for 5-shot MMLU; perplexity chunks are --ctx or 512, as llama-perplexity's.
    let ctx = args.model.ctx.unwrap_or_else(|| lm.model.config.context_length.clamp(1, 2048));
    let sha = sha256_file(&path).with_context(|| format!("cannot hash {}", path.display()))?;
    let (model, tokenizer, template) = (Arc::new(lm.model), Arc::new(lm.tokenizer), lm.template);
    let scheduler = budget.as_ref().map(|b| super::think::scheduler(model.clone(), tokenizer.clone(), b, ctx));
    let think = match (&scheduler, budget, choosers) {
        (Some(scheduler), Some(budget), Some(choosers)) => Some(Thinking {
            scheduler,
            budget,
            sampling: SamplingParams { temperature: args.temperature, seed: args.seed as u64, ..Default::default() },
            choosers: RefCell::new(choosers),
        }),
        _ => None,
    };
    let cx = EvalContext {
        model: &model,
        tokenizer: &tokenizer,
        template: &template,
        data_dir,
        ctx,
        ppl_chunk: args.model.ctx.unwrap_or(512),
        limit: args.limit,
        seed: args.seed,
        max_tokens: args.max_tokens,
        exec_timeout: Duration::from_secs(args.timeout.max(1)),
        progress,
        think,
    };
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let t0 = Instant::now();
    let mut out = Stdout::new();
    let mut results = Vec::new();
    for task in &task_list {
        if !args.quiet {
            eprintln!("{}: running", task.name());
        }
        let r = tasks::run(&cx, task).map_err(|e| explain_missing_data(e, task))?;
        print_result(&mut out, &r)?;
        results.push(r);
    }
    let mut suite_failed = 0;
    if let Some(suite) = &args.suite {
        let r = tasks::suite::run(&cx, suite)?;
        for s in r.samples.iter().filter(|s| !s.correct) {
            out.write(&format!("FAIL {}\n  answer: {:?}\n  {}\n", s.prompt, s.answer, s.note))?;
        }
        suite_failed = r.items - r.metrics[0].hits.unwrap_or(0);
        print_result(&mut out, &r)?;
        results.push(r);
    }
    let all = EvalResults {
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        model: path.display().to_string(),
        model_sha256: sha,
        ctx,
        limit: args.limit,
        seed: args.seed,
        started_unix,
        elapsed_s: t0.elapsed().as_secs_f64(),
        tasks: results,
    };
    if let Some(p) = &args.out {
        all.write(p)?;
        for t in &all.tasks {
            plot_think(p, t)?;
        }
        if !args.quiet {
            eprintln!("results written to {}", p.display());
        }
    }
    if suite_failed > 0 {
        bail!("{suite_failed} suite case(s) failed");
    }
    Ok(())
}

/// What each task reads, in kiln's data layout: data set names or file paths (`kiln data`).
fn task_data(task: &Task) -> &'static [&'static str] {
    match task {
        Task::Hellaswag => &["eval/hellaswag_val_full.txt.bz2"],
        Task::Mmlu { .. } | Task::MmluCloze => &["mmlu"],
        Task::ArcEasy => &["eval/core/world_knowledge_arc_easy.jsonl"],
        Task::ArcChallenge => &["eval/core/world_knowledge_arc_challenge.jsonl"],
        Task::TruthfulQa => &["eval/TruthfulQA.csv"],
        Task::Gsm8k => &["eval/gsm8k_test.jsonl"],
        Task::HumanEval => &["eval/HumanEval.jsonl.gz"],
        Task::Ppl(_) | Task::Arith => &[],
    }
}

/// The eval directory holding every file the tasks read: `$KILN_DATA/eval` when it has them
/// all, else the data cache's, where missing files are fetched first.
fn pull_task_data(task_list: &[Task], progress: bool) -> Result<PathBuf> {
    let hub = Hub::from_env();
    let items: Vec<&str> = task_list.iter().flat_map(|t| task_data(t).iter().copied()).collect();
    if items.is_empty() {
        // ppl:FILE and suites name their own files.
        return Ok(hub.data_dir().join("eval"));
    }
    let store = hub.data_store()?;
    Ok(store.root_for(&items, progress)?.join("eval"))
}

/// The data set a task reads.
fn task_data_set(store: &DataStore, task: &Task) -> Option<&'static DataSet> {
    let item = task_data(task).first()?;
    match store.find_file(item) {
        Some((set, _)) => Some(set),
        None => store.find(item).ok(),
    }
}

/// A task's missing data file (a `--data DIR` without it), said with where the data comes from.
fn explain_missing_data(e: EvalError, task: &Task) -> anyhow::Error {
    let EvalError::MissingData { path, .. } = &e else { return e.into() };
    let store = DataStore::new(Hub::from_env(), Default::default());
    let Some(set) = task_data_set(&store, task) else { return e.into() };
    anyhow!(
        "{path} not found: pass --data DIR holding kiln's eval files, or leave --data out to fetch data set {} from {} (licence: {}) into kiln's cache (`kiln data pull {}`)",
        set.name,
        set.homepage,
        set.licence,
        set.name
    )
}

/// `hellaswag  400 items  acc_llama_cpp 41.25 % [36.5, 46.2]  acc …  (83.1 s)`.
fn print_result(out: &mut Stdout, r: &TaskResult) -> Result<()> {
    let metrics: Vec<String> = r.metrics.iter().map(|m| m.display()).collect();
    let of = if r.items < r.available { format!(" of {}", r.available) } else { String::new() };
    out.write(&format!("{:<16} {} items{of}  {}  ({:.1} s)\n", r.task, r.items, metrics.join("  "), r.elapsed_s))?;
    Ok(())
}

/// For a task run with `--think N`: `OUT-TASK-think.svg/.png` beside the results, accuracy
/// against the number of samples for each chooser, and pass@k.
fn plot_think(out: &std::path::Path, t: &TaskResult) -> Result<()> {
    let Some(single) = t.metric("single@1").map(|m| m.value) else { return Ok(()) };
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in &t.metrics {
        let Some((name, k)) = m.name.split_once('@') else { continue };
        let Ok(k) = k.parse::<f64>() else { continue };
        if name == "single" {
            continue;
        }
        let label = if name == "pass" { "pass@k (a perfect verifier)".to_string() } else { name.to_string() };
        let i = match series.iter().position(|(n, _)| *n == label) {
            Some(i) => i,
            None => {
                series.push((label, vec![(1.0, single)]));
                series.len() - 1
            }
        };
        series[i].1.push((k, m.value));
    }
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("eval");
    let title = format!("{}: accuracy against samples", t.task);
    let lines =
        kiln_train::plot::Lines { title: &title, x_desc: "samples (N)", y_desc: "share right", log2_x: true, series };
    kiln_train::plot::plot_lines(dir, &format!("{stem}-{}-think", t.task), &lines)?;
    Ok(())
}
