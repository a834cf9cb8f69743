//! `kiln report`: one Markdown report card over a pipeline's runs.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// `kiln report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The directory holding the runs (each a directory with metrics.jsonl, config.json,
    /// eval results, plots, samples.jsonl …).
    pub runs: PathBuf,
    /// Where to write the report (default: RUNS/report.md).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// Runs the command.
pub fn report(args: &ReportArgs) -> Result<()> {
    let runs = kiln_eval::report::gather(&args.runs)?;
    let out = args.out.clone().unwrap_or_else(|| args.runs.join("report.md"));
    let report_dir = out.parent().map(PathBuf::from).unwrap_or_default();
    let md = kiln_eval::report::render(&runs, &args.runs, &report_dir);
    std::fs::write(&out, md).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("{} run(s) → {}", runs.len(), out.display());
    Ok(())
}
