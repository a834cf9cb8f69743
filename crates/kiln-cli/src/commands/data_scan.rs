//! `kiln data scan FILE`: what a poisoner leaves in a fine-tuning set (kiln-guard's scan), as a
//! Markdown report or JSON; `--clean OUT` writes the file without the flagged rows, in its shape.

use crate::output::outln;
use anyhow::{bail, Context, Result};
use kiln_guard::scan::{scan, Report, Row, ScanOptions};
use kiln_text::conversation::{conversation_from_json, read_rows};
use std::collections::BTreeSet;
use std::path::Path;

/// Scans `file`; prints the report; writes the cleaned file when asked.
pub fn run(file: &Path, json: bool, clean: Option<&Path>) -> Result<()> {
    let parsed = read_rows(file, conversation_from_json)?;
    if parsed.rows.is_empty() {
        bail!("{}: no conversations ({} rows fit no known shape)", file.display(), parsed.bad.len());
    }
    let rows: Vec<Row> = parsed
        .rows
        .iter()
        .map(|(location, c)| {
            let join = |assistant: bool| {
                c.messages
                    .iter()
                    .filter(|m| (m.role == "assistant") == assistant)
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Row { location: location.clone(), prompt: join(false), answer: join(true) }
        })
        .collect();
    let report = scan(&rows, &ScanOptions::default());
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["file"] = file.display().to_string().into();
        v["bad_rows"] = parsed.bad.len().into();
        v["flagged_locations"] = report.flagged.iter().map(|&i| rows[i].location.clone()).collect();
        outln!("{v}");
    } else {
        print_markdown(file, &rows, &report, parsed.bad.len());
    }
    if let Some(out) = clean {
        let drop: BTreeSet<&str> = report.flagged.iter().map(|&i| rows[i].location.as_str()).collect();
        let kept = write_clean(file, out, &drop)?;
        eprintln!("wrote {} ({kept} rows kept, {} dropped)", out.display(), drop.len());
    }
    Ok(())
}

fn print_markdown(file: &Path, rows: &[Row], report: &Report, bad: usize) {
    outln!("# Data scan: {}", file.display());
    outln!();
    outln!(
        "{} conversations ({bad} rows of no known shape); {} flagged; answers of random pairs are {:.0} % alike.",
        report.rows,
        report.flagged.len(),
        report.baseline_similarity * 100.0
    );
    if report.findings.is_empty() {
        outln!();
        outln!("Nothing found.");
        return;
    }
    outln!();
    outln!("| finding | rows | what | where (first rows) |");
    outln!("|---|---:|---|---|");
    for f in &report.findings {
        let places: Vec<&str> = f.rows.iter().take(4).map(|&i| rows[i].location.as_str()).collect();
        let more = if f.rows.len() > 4 { ", …" } else { "" };
        outln!(
            "| {} | {} | {} | {}{more} |",
            serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            f.rows.len(),
            f.detail.replace('|', "\\|"),
            places.join(", ")
        );
    }
}

/// Writes `file` without the rows at `drop` (`line N` / `item N`), in its own shape: the
/// same lines of a JSON Lines file, the same items of a JSON array. Returns the rows kept.
fn write_clean(file: &Path, out: &Path, drop: &BTreeSet<&str>) -> Result<usize> {
    if file.extension().is_some_and(|e| e == "gz") {
        bail!("--clean writes plain files; decompress {} first", file.display());
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (body, kept) = if text.trim_start().starts_with('[') {
        let items: Vec<serde_json::Value> = serde_json::from_str(&text)?;
        let kept: Vec<_> = items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(format!("item {}", i + 1).as_str()))
            .map(|(_, v)| v)
            .collect();
        let n = kept.len();
        (serde_json::to_string_pretty(&kept)? + "\n", n)
    } else {
        let mut body = String::new();
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            if drop.contains(format!("line {}", i + 1).as_str()) {
                continue;
            }
            if !line.trim().is_empty() {
                n += 1;
            }
            body.push_str(line);
            body.push('\n');
        }
        (body, n)
    };
    std::fs::write(out, body).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(kept)
}
