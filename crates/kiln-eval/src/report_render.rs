//! Writing the report card's Markdown from gathered [`crate::report::Run`]s.

use crate::report::{Metrics, Run};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

/// Fields shown first in a run's metrics table, in this order; the rest follow as logged.
const KNOWN: [&str; 6] = ["loss", "val_loss", "val_bpb", "lr", "tokens_per_s", "grad_norm"];
/// Sample lines shown per run.
const SAMPLES_SHOWN: usize = 3;
/// Config entries shown per run.
const CONFIG_SHOWN: usize = 24;

/// The report's Markdown. Links to files are relative to `report_dir`, where the report goes.
pub fn render(runs: &[Run], root: &Path, report_dir: &Path) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# kiln report card\n");
    let _ = writeln!(md, "Runs under `{}`: {}.\n", root.display(), runs.len());
    if runs.is_empty() {
        let _ = writeln!(
            md,
            "No runs found (looked for metrics.jsonl, tokenizer_report.json, kiln eval results, plots, samples.jsonl)."
        );
        return md;
    }
    summary(&mut md, runs);
    for run in runs {
        let _ = writeln!(md, "\n## {}\n", run.name);
        if let Some(t) = &run.tokenizer {
            let _ = writeln!(md, "**Tokenizer**\n");
            key_values(&mut md, t, CONFIG_SHOWN);
        }
        for (name, c) in &run.configs {
            let _ = writeln!(md, "<details><summary>{name}</summary>\n");
            key_values(&mut md, c, CONFIG_SHOWN);
            let _ = writeln!(md, "</details>\n");
        }
        if let Some(m) = &run.metrics {
            metrics_table(&mut md, m);
        }
        for p in &run.plots {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("plot");
            let _ = writeln!(md, "![{name}]({})\n", link(p, report_dir));
        }
        for (file, r) in &run.evals {
            let _ = writeln!(
                md,
                "**Evaluation** (`{}`, model sha256 `{}`, {:.0} s)\n",
                link(file, report_dir),
                short(&r.model_sha256),
                r.elapsed_s
            );
            let _ = writeln!(md, "| task | items | scores |\n|---|---:|---|");
            for t in &r.tasks {
                let scores: Vec<String> = t.metrics.iter().map(|m| m.display()).collect();
                let _ = writeln!(md, "| {} | {} | {} |", t.task, t.items, scores.join(", "));
            }
            md.push('\n');
            for t in r.tasks.iter().filter(|t| !t.samples.is_empty()) {
                let _ = writeln!(
                    md,
                    "*{} answers* ({} of {} shown)\n",
                    t.task,
                    t.samples.len().min(SAMPLES_SHOWN),
                    t.items
                );
                for s in t.samples.iter().take(SAMPLES_SHOWN) {
                    let verdict = if s.correct { "right".to_string() } else { format!("wrong: {}", s.note) };
                    let _ = writeln!(
                        md,
                        "> **Q:** {}\n>\n> **A:** {}\n>\n> *{}*\n",
                        quote(&s.prompt),
                        quote(&s.answer),
                        quote(&verdict)
                    );
                }
            }
        }
        if !run.samples.is_empty() {
            let _ = writeln!(md, "**Samples** ({} of {})\n", run.samples.len().min(SAMPLES_SHOWN), run.samples.len());
            for s in run.samples.iter().take(SAMPLES_SHOWN) {
                let prompt = field(s, &["prompt", "question", "input", "instruction"]);
                let answer = field(s, &["answer", "output", "completion", "response", "text"]);
                let _ = writeln!(md, "> **Q:** {}\n>\n> **A:** {}\n", quote(&prompt), quote(&answer));
            }
        }
    }
    md
}

/// One row per run: the numbers a reader compares across stages.
fn summary(md: &mut String, runs: &[Run]) {
    let _ = writeln!(md, "| run | steps | final loss | best val_loss | best val_bpb | tokens/s | bytes/token | evals |\n|---|---:|---:|---:|---:|---:|---:|---|");
    for run in runs {
        let m = run.metrics.as_ref();
        let num = |key: &str, f: fn(&crate::report::Series) -> f64| {
            m.and_then(|m| m.get(key)).map(|s| fmt(f(s))).unwrap_or_else(|| "–".into())
        };
        let steps = m.and_then(|m| m.last_step).map(|s| format!("{s}")).unwrap_or_else(|| "–".into());
        let mut evals = Vec::new();
        for (file, r) in &run.evals {
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            for t in &r.tasks {
                if let Some(h) = t.metrics.first() {
                    let v = if h.hits.is_some() { format!("{:.1} %", 100.0 * h.value) } else { fmt(h.value) };
                    evals.push(format!("{stem}: {} {} {v}", short_task(&t.task), h.name));
                }
            }
        }
        let bpt = run.tokenizer.as_ref().and_then(|t| t.get("bytes_per_token")).and_then(Value::as_f64).map(fmt);
        let _ = writeln!(
            md,
            "| {} | {steps} | {} | {} | {} | {} | {} | {} |",
            run.name,
            num("loss", |s| s.last()),
            num("val_loss", |s| s.min()),
            num("val_bpb", |s| s.min()),
            num("tokens_per_s", |s| s.mean()),
            bpt.unwrap_or_else(|| "–".into()),
            if evals.is_empty() { "–".into() } else { evals.join("; ") }
        );
    }
}

fn metrics_table(md: &mut String, m: &Metrics) {
    let _ = writeln!(
        md,
        "**Training metrics** ({} lines{})\n",
        m.lines,
        if m.skipped > 0 { format!(", {} unreadable skipped", m.skipped) } else { String::new() }
    );
    let _ = writeln!(md, "| metric | first | last | min | max | points |\n|---|---:|---:|---:|---:|---:|");
    let mut keys: Vec<&str> = KNOWN.iter().copied().filter(|k| m.get(k).is_some()).collect();
    keys.extend(m.series.iter().map(|s| s.key.as_str()).filter(|k| !KNOWN.contains(k)));
    for k in keys {
        if let Some(s) = m.get(k) {
            let _ = writeln!(
                md,
                "| {k} | {} | {} | {} | {} | {} |",
                fmt(s.first()),
                fmt(s.last()),
                fmt(s.min()),
                fmt(s.max()),
                s.points.len()
            );
        }
    }
    md.push('\n');
}

fn key_values(md: &mut String, v: &Value, max: usize) {
    let Some(obj) = v.as_object() else {
        let _ = writeln!(md, "`{}`\n", v);
        return;
    };
    let _ = writeln!(md, "| key | value |\n|---|---|");
    for (k, v) in obj.iter().take(max) {
        let shown = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.as_f64().map(fmt).unwrap_or_else(|| n.to_string()),
            other => {
                let s = other.to_string();
                if s.len() > 80 {
                    format!("{}…", s.chars().take(80).collect::<String>())
                } else {
                    s
                }
            }
        };
        let _ = writeln!(md, "| {k} | {} |", shown.replace('|', "\\|"));
    }
    if obj.len() > max {
        let _ = writeln!(md, "| … | {} more |", obj.len() - max);
    }
    md.push('\n');
}

/// A number in a few significant digits.
fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{x:.3e}")
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

fn field(v: &Value, keys: &[&str]) -> String {
    for k in keys {
        if let Some(s) = v.get(k) {
            return s.as_str().map(String::from).unwrap_or_else(|| s.to_string());
        }
    }
    String::new()
}

fn quote(s: &str) -> String {
    let s: String =
        if s.chars().count() > 400 { format!("{}…", s.chars().take(400).collect::<String>()) } else { s.to_string() };
    s.replace('\n', "\n> ")
}

/// `ppl:../long/path/file.txt` → `ppl:file.txt`.
fn short_task(task: &str) -> String {
    match task.split_once(':') {
        Some((kind, path)) => {
            format!("{kind}:{}", Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path))
        }
        None => task.to_string(),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `p` relative to `base` when below it, else as given.
fn link(p: &Path, base: &Path) -> String {
    p.strip_prefix(base).unwrap_or(p).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::gather;

    #[test]
    fn report_over_a_pipeline() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        let pre = r.join("pretrain");
        std::fs::create_dir_all(&pre).expect("mkdir");
        std::fs::write(pre.join("metrics.jsonl"), "{\"step\":0,\"loss\":9.0,\"lr\":0.0006,\"tokens_per_s\":1000}\n{\"step\":100,\"loss\":3.25,\"lr\":0.0003,\"tokens_per_s\":1200,\"val_loss\":3.5,\"val_bpb\":1.125}\n").expect("w");
        std::fs::write(pre.join("train_config.json"), "{\"dim\": 256, \"n_layers\": 4}").expect("w");
        // An exported model (config only) and checkpoints are not runs.
        std::fs::create_dir_all(pre.join("model")).expect("mkdir");
        std::fs::write(pre.join("model/config.json"), "{}").expect("w");
        std::fs::create_dir_all(pre.join("checkpoints/step_1")).expect("mkdir");
        std::fs::write(pre.join("checkpoints/step_1/metrics.jsonl"), "{\"step\": 1}").expect("w");
        std::fs::write(pre.join("loss.svg"), "<svg/>").expect("w");
        std::fs::write(pre.join("samples.jsonl"), "{\"prompt\":\"Once\",\"answer\":\"upon a time\"}\n").expect("w");
        let tok = r.join("tokenizer");
        std::fs::create_dir_all(&tok).expect("mkdir");
        std::fs::write(tok.join("tokenizer_report.json"), "{\"vocab_size\": 4096, \"bytes_per_token\": 3.9}")
            .expect("w");
        std::fs::write(r.join("unrelated.txt"), "x").expect("w");
        let ev = crate::results::EvalResults {
            kiln_version: "0".into(),
            model: "m.gguf".into(),
            model_sha256: "ab".repeat(32),
            ctx: 512,
            limit: Some(1),
            seed: 1,
            started_unix: 0,
            elapsed_s: 3.0,
            tasks: vec![crate::results::TaskResult {
                task: "gsm8k".into(),
                items: 1,
                available: 1319,
                metrics: vec![crate::results::Metric::accuracy(
                    "exact_match",
                    crate::stats::Proportion { hits: 0, total: 1 },
                    "",
                )],
                elapsed_s: 3.0,
                setting: String::new(),
                samples: vec![crate::results::Sample {
                    prompt: "2+2?".into(),
                    answer: "5".into(),
                    correct: false,
                    note: "expected 4, extracted 5".into(),
                }],
                per_item: "0".into(),
            }],
        };
        ev.write(&pre.join("eval.json")).expect("write results");
        let runs = gather(r).expect("gather");
        assert_eq!(runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["pretrain", "tokenizer"]);
        let md = render(&runs, r, r);
        assert!(
            md.contains("| pretrain | 100 | 3.2500 | 3.5000 | 1.1250 | 1100 | – | eval: gsm8k exact_match 0.0 % |"),
            "{md}"
        );
        assert!(md.contains("| tokenizer | – | – | – | – | – | 3.9000 | – |"), "{md}");
        assert!(md.contains("| loss | 9 | 3.2500 | 3.2500 | 9 | 2 |"), "{md}");
        assert!(md.contains("![loss.svg](pretrain/loss.svg)"), "{md}");
        assert!(md.contains("| bytes_per_token | 3.9000 |"), "{md}");
        assert!(md.contains("<summary>train_config.json</summary>") && md.contains("| n_layers | 4 |"), "{md}");
        assert!(md.contains("> **A:** upon a time"), "{md}");
        assert!(md.contains("| gsm8k | 1 | exact_match 0.00 % [0.00, 79.35] |"), "{md}");
        assert!(md.contains("> *wrong: expected 4, extracted 5*"), "{md}");
    }
}
