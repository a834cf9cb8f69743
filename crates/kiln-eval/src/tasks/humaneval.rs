//! HumanEval pass@1: the model completes each function greedily from the raw prompt (stopping
//! at the next top-level statement, the Codex paper's stop strings), and the prompt +
//! completion + the problem's tests run in [`kiln_assist::sandbox`], never in kiln's process.

use super::{clip, EvalContext};
use crate::data::{parse_jsonl, read_text};
use crate::results::{Metric, Sample, TaskResult};
use crate::stats::Proportion;
use crate::EvalError;
use kiln_assist::sandbox::{Limits, Outcome, Sandbox};
use kiln_generate::{GenerateOptions, SamplingParams, Session};
use serde::Deserialize;

/// One HumanEval problem.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    /// `HumanEval/0` …
    pub task_id: String,
    /// Signature and docstring to complete.
    pub prompt: String,
    /// The reference body (used by tests to check the harness, never shown to the model).
    pub canonical_solution: String,
    /// `def check(candidate): …`.
    pub test: String,
    /// The function's name.
    pub entry_point: String,
}

/// Where a completion ends: the Codex paper's stop strings.
pub const STOPS: [&str; 5] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/// The program that tests `completion`.
pub fn program(p: &Problem, completion: &str) -> String {
    format!("{}{}\n\n{}\n\ncheck({})\n", p.prompt, completion, p.test, p.entry_point)
}

/// Runs the task.
pub fn run(cx: &EvalContext) -> Result<TaskResult, EvalError> {
    let path = cx.data("HumanEval.jsonl.gz")?;
    let all: Vec<Problem> = parse_jsonl(&read_text(&path)?, &path)?;
    let chosen = cx.select(all.len());
    let sandbox = Sandbox::new();
    let limits = Limits { timeout: cx.exec_timeout, ..Limits::default() };
    let opts = GenerateOptions {
        max_tokens: cx.max_tokens.unwrap_or(384),
        stop: STOPS.iter().map(|s| s.to_string()).collect(),
        sampling: SamplingParams::greedy(),
        ..GenerateOptions::default()
    };
    let mut session = Session::new(cx.model, cx.ctx);
    let mut pass = Proportion::default();
    let mut samples = Vec::new();
    let mut per_item = String::with_capacity(chosen.len());
    let bar = cx.bar(chosen.len(), "humaneval");
    for &i in &chosen {
        let p = &all[i];
        let ids = cx.tokenizer.encode(&p.prompt, true)?;
        let generation = session.generate(cx.tokenizer, &ids, &opts, |_| true)?;
        let outcome = sandbox
            .run_python(&program(p, &generation.text), limits)
            .map_err(|e| EvalError::Other(format!("humaneval {}: {e}", p.task_id)))?;
        let ok = outcome == Outcome::Passed;
        pass.add_logged(ok, &mut per_item);
        if samples.len() < 5 {
            let note = match outcome {
                Outcome::Passed => String::new(),
                Outcome::Failed(e) => clip(&e, 200),
                Outcome::TimedOut => format!("timed out after {:?}", limits.timeout),
            };
            samples.push(Sample { prompt: p.task_id.clone(), answer: clip(&generation.text, 600), correct: ok, note });
        }
        bar.inc(1);
        bar.set_message(format!("{:.1} %", 100.0 * pass.value()));
    }
    bar.finish_and_clear();
    let isolation = sandbox.isolation();
    Ok(TaskResult {
        task: String::new(),
        items: chosen.len(),
        available: all.len(),
        metrics: vec![Metric::accuracy("pass@1", pass, "greedy completion passes the problem's tests")],
        elapsed_s: 0.0,
        setting: format!(
            "raw prompt, greedy, at most {} tokens, python3 with {:?} / {} MiB / {} process limits, {isolation}",
            opts.max_tokens, limits.timeout, limits.memory_mib, limits.max_processes
        ),
        samples,
        per_item,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real problems where a mirror or cache has them, else three in the same format
    /// written for kiln's tests.
    fn problems() -> (Vec<Problem>, std::path::PathBuf) {
        let (path, count) = match kiln_test_models::data_file("eval/HumanEval.jsonl.gz") {
            Some(p) => (p, 164),
            None => (kiln_test_models::fixture("eval/humaneval-format/problems.jsonl"), 3),
        };
        let all: Vec<Problem> = parse_jsonl(&read_text(&path).expect("read"), &path).expect("parse");
        assert_eq!(all.len(), count, "{}", path.display());
        (all, path)
    }

    #[test]
    fn canonical_solutions_pass_and_wrong_ones_fail() {
        if !std::process::Command::new("python3").arg("-c").arg("pass").status().is_ok_and(|s| s.success()) {
            kiln_test_models::skip("python3 not found");
            return;
        }
        let (all, _) = problems();
        let sb = Sandbox::new();
        let lim = Limits::default();
        for p in &all[..3] {
            assert_eq!(
                sb.run_python(&program(p, &p.canonical_solution), lim).expect("ran"),
                Outcome::Passed,
                "{}",
                p.task_id
            );
            let wrong = "    return None\n";
            assert!(
                matches!(sb.run_python(&program(p, wrong), lim).expect("ran"), Outcome::Failed(_)),
                "{}",
                p.task_id
            );
        }
    }
}
