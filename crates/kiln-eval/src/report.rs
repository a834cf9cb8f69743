//! The report card: one Markdown file over a pipeline's runs (tokenizer, pretraining, SFT,
//! DPO, evals), after nanochat's report.md.
//!
//! A run is any directory (the root or below, three levels deep at most, `checkpoints/` not
//! entered) holding one of: `metrics.jsonl` (one JSON object per line: `step`, `loss`, `lr`,
//! `tokens_per_s`, optional `val_loss`, `val_bpb`, and whatever else a stage logs, e.g.
//! `rewards/chosen`), `tokenizer_report.json`, `kiln eval --out` results (any `*.json` that
//! parses as them), plots (`*.png`, `*.svg`), `samples.jsonl`. Its settings (`config.json`,
//! `train_config.json`, any other `*config.json` but the tokenizer's and generation's, and
//! `run.json`) are shown with it; a directory with only a config (an exported model) is not a
//! run. Reading is liberal: unknown fields are shown, unreadable lines are counted and skipped,
//! a missing file leaves its section out.

pub use crate::report_render::render;
use crate::results::EvalResults;
use crate::EvalError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Per-key summary of a metrics series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The field name.
    pub key: String,
    /// Values in file order, with the step each was logged at.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// First value.
    pub fn first(&self) -> f64 {
        self.points.first().map_or(f64::NAN, |p| p.1)
    }
    /// Last value.
    pub fn last(&self) -> f64 {
        self.points.last().map_or(f64::NAN, |p| p.1)
    }
    /// Smallest value.
    pub fn min(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min)
    }
    /// Largest value.
    pub fn max(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max)
    }
    /// Mean value.
    pub fn mean(&self) -> f64 {
        self.points.iter().map(|p| p.1).sum::<f64>() / self.points.len().max(1) as f64
    }
}

/// What `metrics.jsonl` held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Lines read.
    pub lines: usize,
    /// Lines that were not JSON objects.
    pub skipped: usize,
    /// Last `step` seen.
    pub last_step: Option<f64>,
    /// One series per numeric field except `step`, in order of first appearance.
    pub series: Vec<Series>,
}

impl Metrics {
    /// The series called `key`.
    pub fn get(&self, key: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.key == key)
    }
}

/// Parses metrics lines; anything not a JSON object is counted in `skipped`.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
            m.skipped += 1;
            continue;
        };
        m.lines += 1;
        let step = obj.get("step").and_then(Value::as_f64).unwrap_or(m.lines as f64 - 1.0);
        m.last_step = Some(step);
        for (k, v) in flatten(&obj) {
            if k == "step" {
                continue;
            }
            let Some(x) = v.as_f64().filter(|x| x.is_finite()) else { continue };
            match m.series.iter_mut().find(|s| s.key == k) {
                Some(s) => s.points.push((step, x)),
                None => m.series.push(Series { key: k, points: vec![(step, x)] }),
            }
        }
    }
    m
}

/// `{"rewards": {"chosen": 1}}` → `rewards/chosen`.
fn flatten(obj: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (k, v) in obj {
        match v {
            Value::Object(inner) => out.extend(flatten(inner).into_iter().map(|(ik, iv)| (format!("{k}/{ik}"), iv))),
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// One run directory's contents.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The directory.
    pub dir: PathBuf,
    /// Its name relative to the runs root (`.` for the root).
    pub name: String,
    /// Settings files (`config.json`, `train_config.json`, `run.json` …), by file name.
    pub configs: Vec<(String, Value)>,
    /// `tokenizer_report.json` (or `tokenizer.json`-adjacent report).
    pub tokenizer: Option<Value>,
    /// `metrics.jsonl`.
    pub metrics: Option<Metrics>,
    /// Eval results found in the directory, with their file.
    pub evals: Vec<(PathBuf, EvalResults)>,
    /// Plot images.
    pub plots: Vec<PathBuf>,
    /// `samples.jsonl` lines (as JSON).
    pub samples: Vec<Value>,
}

impl Run {
    fn is_empty(&self) -> bool {
        self.tokenizer.is_none()
            && self.metrics.is_none()
            && self.evals.is_empty()
            && self.plots.is_empty()
            && self.samples.is_empty()
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Reads one directory as a run (its files only, not its subdirectories).
pub fn read_run(dir: &Path, root: &Path) -> Result<Run, EvalError> {
    let name = match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.display().to_string(),
        Err(_) => dir.display().to_string(),
    };
    let mut run = Run { dir: dir.to_path_buf(), name, ..Run::default() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EvalError::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in files {
        let fname = f.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        match (fname.as_str(), ext) {
            ("metrics.jsonl", _) => run.metrics = std::fs::read_to_string(&f).ok().map(|t| parse_metrics(&t)),
            ("samples.jsonl", _) => {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                run.samples = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            }
            (n, "json") if n.starts_with("tokenizer_report") => run.tokenizer = read_json(&f),
            ("tokenizer_config.json" | "generation_config.json", _) => {}
            (n, "json") if n.ends_with("config.json") || n == "run.json" => {
                if let Some(v) = read_json(&f) {
                    run.configs.push((fname.clone(), v));
                }
            }
            (_, "json") => {
                if let Some(r) = read_json(&f).and_then(|v| serde_json::from_value::<EvalResults>(v).ok()) {
                    run.evals.push((f, r));
                }
            }
            (_, "png" | "svg") => run.plots.push(f),
            _ => {}
        }
    }
    Ok(run)
}

/// Every run under `root` (the root itself included), in path order.
pub fn gather(root: &Path) -> Result<Vec<Run>, EvalError> {
    if !root.is_dir() {
        return Err(EvalError::Other(format!("{}: not a directory of runs", root.display())));
    }
    let mut dirs = vec![root.to_path_buf()];
    let mut frontier = vec![root.to_path_buf()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for d in &frontier {
            let Ok(entries) = std::fs::read_dir(d) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                let skip =
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') || n == "checkpoints");
                if p.is_dir() && !skip {
                    next.push(p);
                }
            }
        }
        dirs.extend(next.iter().cloned());
        frontier = next;
    }
    dirs.sort();
    let mut runs = Vec::new();
    for d in dirs {
        let run = read_run(&d, root)?;
        if !run.is_empty() {
            runs.push(run);
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_liberally() {
        let text = "{\"step\": 0, \"loss\": 10.5, \"lr\": 0.001, \"tokens_per_s\": 900}\n\
                    not json\n\
                    {\"step\": 10, \"loss\": 4.0, \"lr\": 0.002, \"tokens_per_s\": 1100, \"val_loss\": 4.2, \"val_bpb\": 1.3}\n\
                    {\"step\": 20, \"loss\": 3.5, \"rewards\": {\"chosen\": 0.7}, \"note\": \"x\"}\n";
        let m = parse_metrics(text);
        assert_eq!((m.lines, m.skipped, m.last_step), (3, 1, Some(20.0)));
        let loss = m.get("loss").expect("loss");
        assert_eq!((loss.first(), loss.last(), loss.min(), loss.max()), (10.5, 3.5, 3.5, 10.5));
        assert_eq!(m.get("tokens_per_s").expect("tps").mean(), 1000.0);
        assert_eq!(m.get("val_bpb").expect("bpb").points, [(10.0, 1.3)]);
        assert_eq!(m.get("rewards/chosen").expect("flattened").last(), 0.7);
        assert!(m.get("note").is_none());
    }
}
