//! The benchmarks: which tasks exist, where their data lives, and how each is run.

pub mod answer;
pub mod arith;
pub mod choice;
pub mod gsm8k;
pub mod hellaswag;
pub mod humaneval;
pub mod mc;
pub mod mmlu;
pub mod ppl;
pub mod suite;

use crate::results::TaskResult;
use crate::EvalError;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_assist::verify::Chooser;
use kiln_generate::{Budget, SamplingParams, Scheduler};
use kiln_model::Model;
use kiln_text::{ChatTemplate, Tokenizer};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

/// A task named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// HellaSwag validation, scored as llama-perplexity --hellaswag (plus harness acc/acc_norm).
    Hellaswag,
    /// MMLU test split with `shots` examples from dev.
    Mmlu {
        /// Examples per prompt (5 is the standard setting).
        shots: usize,
    },
    /// MMLU test split in the cloze form (`Question: …\nAnswer:` + the option's text), 0-shot:
    /// the form SmolLM2's authors report.
    MmluCloze,
    /// ARC-Easy (from the CORE suite files).
    ArcEasy,
    /// ARC-Challenge.
    ArcChallenge,
    /// TruthfulQA MC1: the best answer against the incorrect ones.
    TruthfulQa,
    /// GSM8K test, greedy, exact match of the final number.
    Gsm8k,
    /// HumanEval pass@1, greedy, executed in a sandboxed python3.
    HumanEval,
    /// Multi-digit arithmetic kiln generates itself, exact match of the answer.
    Arith,
    /// Perplexity and bits-per-byte of a text file.
    Ppl(PathBuf),
}

impl Task {
    /// Parses a comma-separated list (`hellaswag,mmlu,arc,ppl:FILE`); `arc` is both ARC sets.
    pub fn parse_list(list: &str, mmlu_shots: usize) -> Result<Vec<Task>, EvalError> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "hellaswag" => out.push(Task::Hellaswag),
                "mmlu" => out.push(Task::Mmlu { shots: mmlu_shots }),
                "mmlu0" => out.push(Task::Mmlu { shots: 0 }),
                "mmlu_cloze" => out.push(Task::MmluCloze),
                "arc" => out.extend([Task::ArcEasy, Task::ArcChallenge]),
                "arc_easy" => out.push(Task::ArcEasy),
                "arc_challenge" => out.push(Task::ArcChallenge),
                "truthfulqa" | "truthfulqa_mc1" => out.push(Task::TruthfulQa),
                "gsm8k" => out.push(Task::Gsm8k),
                "humaneval" => out.push(Task::HumanEval),
                "arith" => out.push(Task::Arith),
                _ => match name.strip_prefix("ppl:") {
                    Some(file) if !file.is_empty() => out.push(Task::Ppl(PathBuf::from(file))),
                    _ => return Err(EvalError::UnknownTask(name.to_string())),
                },
            }
        }
        if out.is_empty() {
            return Err(EvalError::UnknownTask(list.to_string()));
        }
        Ok(out)
    }

    /// The name results carry.
    pub fn name(&self) -> String {
        match self {
            Task::Hellaswag => "hellaswag".into(),
            Task::Mmlu { shots } => format!("mmlu_{shots}shot"),
            Task::MmluCloze => "mmlu_cloze".into(),
            Task::ArcEasy => "arc_easy".into(),
            Task::ArcChallenge => "arc_challenge".into(),
            Task::TruthfulQa => "truthfulqa_mc1".into(),
            Task::Gsm8k => "gsm8k".into(),
            Task::HumanEval => "humaneval".into(),
            Task::Arith => "arith".into(),
            Task::Ppl(p) => format!("ppl:{}", p.display()),
        }
    }
}

/// Everything a task needs: the model, where the data is, and the run's settings.
pub struct EvalContext<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Its chat template (GSM8K prompts instruct models through it).
    pub template: &'a ChatTemplate,
    /// The directory holding hellaswag_val_full.txt.bz2, mmlu/, core/ … (`../shared/data/eval`).
    pub data_dir: PathBuf,
    /// Context length.
    pub ctx: usize,
    /// Chunk length for perplexity (llama-perplexity's default is 512).
    pub ppl_chunk: usize,
    /// At most this many items per task, chosen by `seed` as llama-perplexity chooses.
    pub limit: Option<usize>,
    /// Seed for item selection (and sampling, were it not greedy).
    pub seed: u32,
    /// Most new tokens per generative answer (None: the task's default).
    pub max_tokens: Option<usize>,
    /// Per-program time limit for HumanEval.
    pub exec_timeout: Duration,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Think longer on tasks judged by a final answer (GSM8K, arith): None answers greedily.
    pub think: Option<Thinking<'a>>,
}

/// N samples per item, decoded together on a scheduler, and how one is chosen.
pub struct Thinking<'a> {
    /// Decodes the samples (as many slots as samples, for one batch).
    pub scheduler: &'a Scheduler,
    /// Samples per item, and token or time limits.
    pub budget: Budget,
    /// How samples are drawn (the seed fixes them all).
    pub sampling: SamplingParams,
    /// Ways to choose one answer per item, each with the name results give it (`vote`,
    /// `calc`, `rm:DIR`); the first gives `exact_match`. At least one.
    pub choosers: RefCell<Vec<(String, Chooser<'a>)>>,
}

impl EvalContext<'_> {
    /// A data file under the data directory, or an error saying where it was looked for.
    pub fn data(&self, rel: &str) -> Result<PathBuf, EvalError> {
        let p = self.data_dir.join(rel);
        if p.exists() {
            Ok(p)
        } else {
            Err(EvalError::MissingData {
                path: p.display().to_string(),
                hint: "pass --data DIR (the directory with hellaswag_val_full.txt.bz2, mmlu/, core/ …), or leave --data out to have kiln fetch the public data sets (`kiln data list` says where each comes from)".into(),
            })
        }
    }

    /// Which of `n` items to evaluate: all in file order without `--limit`, else `limit` of
    /// them drawn as llama-perplexity draws HellaSwag tasks.
    pub fn select(&self, n: usize) -> Vec<usize> {
        match self.limit {
            Some(l) if l < n => crate::rng::pick(n, l, self.seed),
            _ => (0..n).collect(),
        }
    }

    /// A progress bar with an ETA (hidden unless `progress`).
    pub fn bar(&self, len: usize, name: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len as u64);
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        bar
    }
}

/// Runs one task.
pub fn run(cx: &EvalContext, task: &Task) -> Result<TaskResult, EvalError> {
    let t0 = std::time::Instant::now();
    let mut result = match task {
        Task::Hellaswag => hellaswag::run(cx)?,
        Task::Mmlu { shots } => mmlu::run(cx, *shots)?,
        Task::MmluCloze => mmlu::run_cloze(cx)?,
        Task::ArcEasy => choice::run_arc(cx, "arc_easy", "core/world_knowledge_arc_easy.jsonl")?,
        Task::ArcChallenge => choice::run_arc(cx, "arc_challenge", "core/world_knowledge_arc_challenge.jsonl")?,
        Task::TruthfulQa => choice::run_truthfulqa(cx)?,
        Task::Gsm8k => gsm8k::run(cx)?,
        Task::HumanEval => humaneval::run(cx)?,
        Task::Arith => arith::run(cx)?,
        Task::Ppl(path) => ppl::run(cx, path)?,
    };
    result.task = task.name();
    result.elapsed_s = t0.elapsed().as_secs_f64();
    Ok(result)
}

/// Shortens `s` to about `n` characters for samples.
pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lists_parse() {
        let t = Task::parse_list("hellaswag, arc,mmlu,ppl:x.txt", 5).expect("valid list");
        assert_eq!(
            t,
            [
                Task::Hellaswag,
                Task::ArcEasy,
                Task::ArcChallenge,
                Task::Mmlu { shots: 5 },
                Task::Ppl(PathBuf::from("x.txt"))
            ]
        );
        assert_eq!(Task::parse_list("mmlu0", 5).expect("valid"), [Task::Mmlu { shots: 0 }]);
        let e = Task::parse_list("hellaswag,bogus", 5).expect_err("unknown");
        assert!(e.to_string().starts_with("unknown task \"bogus\""), "{e}");
        assert!(Task::parse_list("ppl:", 5).is_err());
        assert!(Task::parse_list(" , ", 5).is_err());
    }
}
