//! End-to-end tests of `kiln eval` and `kiln report`: the binary on SmolLM2 (skipped when
//! absent) and on broken inputs, checking what a user sees and what the JSON holds.

#[allow(dead_code)] // shared helpers; this file uses some of them
mod util;

use kiln_test_models::SMOLLM2;
use serde_json::Value;
use std::path::{Path, PathBuf};
use util::{temp_dir, Kiln};

/// HellaSwag items in the end-to-end run (~1 s of CPU each).
const HELLASWAG_ITEMS: usize = 12;

/// HellaSwag's data directory and item count: the real set where a mirror or cache has it,
/// else twelve items in its format written for these tests.
fn hellaswag_data() -> (PathBuf, usize) {
    match kiln_test_models::data_file("eval/hellaswag_val_full.txt.bz2") {
        Some(file) => (file.parent().expect("parent").to_path_buf(), 10042),
        None => (kiln_test_models::fixture("eval/hellaswag-format"), 12),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn eval_hellaswag_writes_results_a_report_reads() {
    let (data, total) = hellaswag_data();
    // Fewer than all, so the summary line says "of N" (the made-up set has twelve).
    let items = HELLASWAG_ITEMS.min(total - 2);
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let runs = temp_dir();
    let out_json = runs.path().join("eval").join("results.json");
    std::fs::create_dir_all(out_json.parent().expect("parent")).expect("mkdir");
    let out = Kiln::new(home.path())
        .args(["eval", "-q", "-t", "2", "--task", "hellaswag", "--limit", &items.to_string(), "--data"])
        .arg(&data)
        .arg("-m")
        .arg(&model)
        .arg("--out")
        .arg(&out_json)
        .run();
    out.success();
    assert!(out.stdout.starts_with(&format!("hellaswag        {items} items of {total}  acc_llama_cpp ")), "{out:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).expect("results")).expect("JSON");
    assert_eq!(v["model_sha256"].as_str().map(str::len), Some(64));
    let task = &v["tasks"][0];
    assert_eq!(task["task"], "hellaswag");
    assert_eq!(task["items"], items);
    let per_item = task["per_item"].as_str().expect("per_item");
    assert_eq!(per_item.len(), items);
    assert_eq!(per_item.matches('1').count() as u64, task["metrics"][0]["hits"].as_u64().expect("hits"));
    let names: Vec<&str> =
        task["metrics"].as_array().expect("metrics").iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["acc_llama_cpp", "acc", "acc_norm"]);
    for m in task["metrics"].as_array().expect("metrics") {
        let (val, lo, hi) =
            (m["value"].as_f64().expect("value"), m["low"].as_f64().expect("low"), m["high"].as_f64().expect("high"));
        // A 135M model on the real items: above nothing, below a strong model; the interval
        // holds the value (the twelve made-up items are too few to bound the value).
        assert!(lo <= val && val <= hi, "{m}");
        if total == 10042 {
            assert!((0.05..=0.8).contains(&val), "{m}");
        }
    }
    assert!(v["elapsed_s"].as_f64().expect("elapsed") > 0.0);

    // The report card picks the results up beside a training run's metrics.
    let pre = runs.path().join("pretrain");
    std::fs::create_dir_all(&pre).expect("mkdir");
    write(&pre, "metrics.jsonl", "{\"step\": 0, \"loss\": 8.5, \"lr\": 0.001, \"tokens_per_s\": 5000}\n{\"step\": 50, \"loss\": 4.0, \"lr\": 0.001, \"tokens_per_s\": 5000, \"val_loss\": 4.5, \"val_bpb\": 1.5}\n");
    Kiln::new(home.path()).arg("report").arg(runs.path()).run().success();
    let md = std::fs::read_to_string(runs.path().join("report.md")).expect("report.md");
    assert!(md.contains("| eval | – | – | – | – | – | – | results: hellaswag acc_llama_cpp "), "{md}");
    assert!(md.contains("| pretrain | 50 | 4 | 4.5000 | 1.5000 | 5000 | – | – |"), "{md}");
}

#[test]
fn suite_failures_exit_non_zero_and_say_which() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let suite = write(
        home.path(),
        "checks.jsonl",
        "{\"name\": \"never\", \"prompt\": \"Say hello.\", \"contains\": \"xyzzy-never-said\", \"max_tokens\": 16}\n\
         {\"name\": \"always\", \"prompt\": \"Say hello.\", \"not_contains\": \"xyzzy-never-said\", \"max_tokens\": 400}\n",
    );
    let out = Kiln::new(home.path()).args(["eval", "-q", "-t", "2", "--suite"]).arg(&suite).arg("-m").arg(&model).run();
    assert_eq!(out.error_line(Some(1)), "error: 1 suite case(s) failed");
    assert!(out.stdout.contains("FAIL never: Say hello."), "{out:?}");
    assert!(out.stdout.contains("does not contain \"xyzzy-never-said\""), "{out:?}");
    assert!(!out.stdout.contains("FAIL always"), "{out:?}");
}

#[test]
fn bad_eval_inputs_are_one_line_errors() {
    let home = temp_dir();
    let d = home.path();
    let model = SMOLLM2.path();
    let e = Kiln::new(d).args(["eval", "--task", "hellaswag,bogus"]).run();
    assert!(e.error_line(Some(1)).starts_with("error: unknown task \"bogus\""), "{e:?}");
    let e = Kiln::new(d).args(["eval", "-m", "x.gguf"]).run();
    assert!(e.error_line(Some(1)).contains("nothing to evaluate"), "{e:?}");
    let e = Kiln::new(d).args(["eval", "--suite", "/nonexistent/checks.jsonl"]).run();
    assert_eq!(e.error_line(Some(1)), "error: /nonexistent/checks.jsonl: no such suite file");
    let e = Kiln::new(d).args(["report", "/nonexistent/runs"]).run();
    assert_eq!(e.error_line(Some(1)), "error: /nonexistent/runs: not a directory of runs");
    let Some(model) = model else { return };
    let bad = write(d, "bad.jsonl", "{\"prompt\": \"hi\", \"contains\": \"x\"}\n{\"prompt\": \n");
    let e = Kiln::new(d).args(["eval", "-q", "--suite"]).arg(&bad).arg("-m").arg(&model).run();
    assert!(e.error_line(Some(1)).starts_with(&format!("error: {}:2: bad JSON line", bad.display())), "{e:?}");
    let e = Kiln::new(d).args(["eval", "-q", "--task", "mmlu", "--data", "/nonexistent/eval", "-m"]).arg(&model).run();
    assert!(
        e.error_line(Some(1)).starts_with("error: /nonexistent/eval/mmlu/test not found: pass --data DIR"),
        "{e:?}"
    );
}

#[test]
fn eval_ppl_equals_kiln_ppl_and_reports_bits_per_byte() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    // Any English text serves: WikiText-2 where present, else the committed fixture prose.
    let text = kiln_test_models::data_file("eval/wikitext2_test.txt")
        .unwrap_or_else(|| kiln_test_models::fixture("text/potters-year.txt"));
    let ppl = Kiln::new(home.path())
        .args(["ppl", "-t", "2", "-c", "128", "--chunks", "3", "-m"])
        .arg(&model)
        .arg("--text")
        .arg(&text)
        .run();
    ppl.success();
    let want: f64 = ppl
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("PPL = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no PPL line: {ppl:?}"));
    let out_json = home.path().join("ppl.json");
    let task = format!("ppl:{}", text.display());
    let out = Kiln::new(home.path())
        .args(["eval", "-q", "-t", "2", "-c", "128", "--limit", "3", "--task", &task, "-m"])
        .arg(&model)
        .arg("--out")
        .arg(&out_json)
        .run();
    out.success();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).expect("results")).expect("JSON");
    let metrics = &v["tasks"][0]["metrics"];
    let got = metrics[0]["value"].as_f64().expect("ppl");
    // The same method on the same chunks: equal to kiln ppl's four printed decimals.
    assert!((got - want).abs() < 1e-3, "eval {got} vs ppl {want}");
    assert_eq!(metrics[1]["name"], "bpb");
    // English text under a 135M model: about one bit per byte, never 0 or 8.
    let bpb = metrics[1]["value"].as_f64().expect("bpb");
    assert!((0.5..2.0).contains(&bpb), "{bpb}");
}

#[test]
fn missing_text_file_is_named_once() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let e = Kiln::new(home.path()).args(["eval", "-q", "--task", "ppl:/nonexistent/text.txt", "-m"]).arg(&model).run();
    assert_eq!(e.error_line(Some(1)), "error: /nonexistent/text.txt: No such file or directory (os error 2)");
}
