//! `metrics.jsonl`: one JSON object per optimizer step (`step`, `loss`, `lr`, `tokens_per_s`,
//! and on evaluation steps `val_loss` and `val_bpb`), appended and flushed as training goes.

use crate::{io_err, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Optimizer step (1-based: the number of updates done).
    pub step: usize,
    /// Mean training loss over the step's micro-batches (nats per token).
    pub loss: f64,
    /// Learning rate used for the step.
    pub lr: f64,
    /// Training throughput over the step.
    pub tokens_per_s: f64,
    /// Gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Validation loss, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation bits per byte (tokenizer-independent), on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
}

/// The metrics file of a run.
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// The log in `run`; when resuming from `step`, lines after it (written by the interrupted
    /// run after its last checkpoint) are dropped so the log matches an uninterrupted run.
    pub fn open(run: &Path, resume_step: Option<usize>) -> Result<MetricsLog> {
        let path = run.join("metrics.jsonl");
        let keep: Vec<Record> = match resume_step {
            Some(s) => read(&path)?.into_iter().filter(|r| r.step <= s).collect(),
            None => Vec::new(),
        };
        let mut text = String::new();
        for r in &keep {
            text.push_str(&serde_json::to_string(r).expect("record serializes"));
            text.push('\n');
        }
        crate::checkpoint::write_atomic(&path, text.as_bytes())?;
        Ok(MetricsLog { path })
    }

    /// Appends one record.
    pub fn append(&self, r: &Record) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path).map_err(io_err(&self.path))?;
        let line = serde_json::to_string(r).expect("record serializes");
        writeln!(f, "{line}").map_err(io_err(&self.path))
    }

    /// Every record so far.
    pub fn records(&self) -> Result<Vec<Record>> {
        read(&self.path)
    }
}

/// Reads a metrics file; a missing file is empty, a torn last line (a killed run) is skipped.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
