//! `kiln quantize`: write a GGUF model with its weights in another type
//! ([`kiln_model::formats::gguf_export`] does the work; this adds the progress bar and summary).

use crate::args::QuantizeArgs;
use crate::load::resolve;
use crate::output::outln;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_gguf::GgufFile;
use kiln_model::formats::gguf_export::{requantize_gguf, ExportReport};
use kiln_model::formats::{detect_format, ModelFormat};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Instant;

/// Runs the command.
pub fn quantize(args: &QuantizeArgs) -> Result<()> {
    let target = args.ty;
    let path = resolve(args.model.as_deref())?;
    if detect_format(&path)? != ModelFormat::Gguf {
        bail!("{}: kiln quantize reads GGUF files only", path.display());
    }
    if same_file(&path, &args.out) {
        bail!("--out {} is the model itself; write to another file", args.out.display());
    }
    let src = GgufFile::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let bar = progress_bar(format!("{target}"));
    let start = Instant::now();
    let report = requantize_gguf(&src, target, &args.out, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot write {}", args.out.display()))?;
    bar.finish_and_clear();
    summary(&report, &args.out.display().to_string(), start.elapsed().as_secs_f64());
    Ok(())
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A bar on stderr counting weights, hidden when stderr is not a terminal.
fn progress_bar(message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {percent}% {elapsed} eta {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::new(0).with_style(style);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_message(message);
    bar
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn summary(report: &ExportReport, out: &str, seconds: f64) {
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &report.tensors {
        *types.entry(t.to.name()).or_default() += 1;
    }
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} ×{n}")).collect();
    outln!("wrote     {out} ({}, general.file_type {})", report.target, report.file_type);
    outln!("tensors   {} converted, {} copied unchanged ({})", report.converted(), report.copied(), types.join(", "));
    outln!(
        "size      {:.1} MiB → {:.1} MiB ({:.2}×)",
        mib(report.bytes_in),
        mib(report.bytes_out),
        report.bytes_out as f64 / report.bytes_in.max(1) as f64
    );
    outln!("time      {seconds:.1} s");
    // Notes are "tensor: reason"; one line per reason.
    let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
    for note in &report.notes {
        let (tensor, reason) = note.split_once(": ").unwrap_or(("", note));
        match reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, tensors)) => tensors.push(tensor),
            None => reasons.push((reason, vec![tensor])),
        }
    }
    for (reason, tensors) in reasons {
        let more = if tensors.len() > 1 { format!(" and {} more", tensors.len() - 1) } else { String::new() };
        outln!("note      {}{more}: {reason}", tensors[0]);
    }
}
