//! The `--out` JSON: what was measured, on which model file, how many items, the scores with
//! their intervals and the time taken. `kiln report` reads it back.

use crate::stats::Proportion;
use crate::EvalError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// One number a task produces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    /// Short name (`acc`, `acc_norm`, `ppl`, `bpb`, `pass@1` …).
    pub name: String,
    /// The value (a fraction for accuracies).
    pub value: f64,
    /// Lower end of the 95 % interval (Wilson for accuracies; ±1.96 s.e. for perplexity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Upper end of the 95 % interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// For accuracies, the count of correct items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<usize>,
    /// What it measures, in a few words.
    #[serde(default)]
    pub about: String,
}

impl Metric {
    /// An accuracy with its Wilson interval.
    pub fn accuracy(name: &str, p: Proportion, about: &str) -> Metric {
        let (lo, hi) = p.wilson95();
        Metric {
            name: name.into(),
            value: p.value(),
            low: Some(lo),
            high: Some(hi),
            hits: Some(p.hits),
            about: about.into(),
        }
    }

    /// A plain value.
    pub fn value(name: &str, value: f64, about: &str) -> Metric {
        Metric { name: name.into(), value, low: None, high: None, hits: None, about: about.into() }
    }

    /// One line for the terminal: `acc_norm 41.25 % [36.5, 46.2]` or `ppl 12.345`.
    pub fn display(&self) -> String {
        match (self.hits, self.low, self.high) {
            (Some(_), Some(lo), Some(hi)) => {
                format!("{} {:.2} % [{:.2}, {:.2}]", self.name, 100.0 * self.value, 100.0 * lo, 100.0 * hi)
            }
            (_, Some(lo), Some(hi)) => format!("{} {:.4} [{:.4}, {:.4}]", self.name, self.value, lo, hi),
            _ => format!("{} {:.4}", self.name, self.value),
        }
    }
}

/// One task's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskResult {
    /// The task (`hellaswag`, `mmlu`, `ppl:FILE` …).
    pub task: String,
    /// Items evaluated.
    pub items: usize,
    /// Items the data holds (more than `items` under `--limit`).
    pub available: usize,
    /// The scores; the first is the task's headline.
    pub metrics: Vec<Metric>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// How the task was run (prompt format, shots, limits), for the record.
    #[serde(default)]
    pub setting: String,
    /// A few model answers (generative tasks and suites), for reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
    /// The headline metric's outcome per item in evaluation order (`1` right, `0` wrong), so
    /// two runs (or kiln and llama.cpp) compare item by item.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub per_item: String,
}

impl TaskResult {
    /// The metric called `name`.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// One prompt and what the model answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// The question or prompt (shortened).
    pub prompt: String,
    /// The model's answer.
    pub answer: String,
    /// Whether it was judged correct.
    pub correct: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A whole `kiln eval` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalResults {
    /// kiln's version.
    pub kiln_version: String,
    /// The model as given (path or name).
    pub model: String,
    /// sha256 of the model file (hex), so results name the exact weights.
    pub model_sha256: String,
    /// Context length used.
    pub ctx: usize,
    /// `--limit`, if any.
    pub limit: Option<usize>,
    /// `--seed`.
    pub seed: u32,
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    /// Wall-clock seconds for all tasks.
    pub elapsed_s: f64,
    /// One entry per task.
    pub tasks: Vec<TaskResult>,
}

impl EvalResults {
    /// Writes pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| EvalError::Other(e.to_string()))?;
        std::fs::write(path, json + "\n").map_err(|e| EvalError::io(path, e))
    }

    /// Reads results written by [`EvalResults::write`].
    pub fn read(path: &Path) -> Result<EvalResults, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| EvalError::parse(path, e.line(), format!("not kiln eval results: {e}")))
    }
}

/// sha256 of a file (of `model.safetensors`-style files inside a directory, in name order).
pub fn sha256_file(path: &Path) -> Result<String, EvalError> {
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| EvalError::io(path, e))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "safetensors" || x == "gguf" || x == "bin") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let mut file = std::fs::File::open(&f).map_err(|e| EvalError::io(&f, e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| EvalError::io(&f, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(sha256_file(&p).expect("hash"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn metric_display() {
        let m = Metric::accuracy("acc", Proportion { hits: 40, total: 100 }, "");
        assert_eq!(m.display(), "acc 40.00 % [30.94, 49.80]");
        assert_eq!(Metric::value("ppl", 12.5, "").display(), "ppl 12.5000");
    }
}
