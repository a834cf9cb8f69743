//! `kiln rl` end to end on SmolLM2 with LoRA (skipped when the model is absent): the run
//! directory and its metrics, and a run killed after its first checkpoint resuming to the
//! same metrics (samples are seeded by the data position, which checkpoints keep).

#[allow(dead_code)] // shared helpers; this file uses some of them
mod util;

use kiln_test_models::SMOLLM2;
use serde_json::Value;
use util::{metrics, temp_dir, Kiln};

#[test]
fn rl_trains_logs_and_resumes_to_the_same_metrics() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let run = home.path().join("rl");
    let out = Kiln::new(home.path())
        .args(["-t", "2", "rl", "-q", "--lora", "--method", "grpo", "--steps", "2", "--problems", "2", "--group", "4"])
        .args(["--max-new-tokens", "24", "--val", "4", "--val-k", "2", "--eval-every", "1", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&run)
        .run();
    out.success();
    assert!(out.stdout.contains("held out: pass@1"), "{out:?}");
    let lines = metrics(&run);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        for key in ["reward", "val_pass@1", "val_pass@k", "groups_with_signal", "answer_tokens"] {
            let v = line[key].as_f64().unwrap_or_else(|| panic!("no {key} in {line}"));
            assert!(v.is_finite() && v >= 0.0, "{key} {v}");
        }
        assert!(line["val_pass@1"].as_f64() <= line["val_pass@k"].as_f64(), "{line}");
    }
    let start: Value = serde_json::from_str(&std::fs::read_to_string(run.join("start.json")).unwrap()).unwrap();
    assert!(start["val_pass@1"].is_number(), "{start}");
    assert!(run.join("problems-train.jsonl").is_file() && run.join("model/model.safetensors").is_file());
    let svg = std::fs::read_to_string(run.join("rl.svg")).expect("the RL plot");
    assert!(svg.contains("held-out pass@1") && svg.contains("reward"), "{svg:.300}");

    // Killed after step 1: its newest checkpoint and the model gone, then resumed.
    let copy = home.path().join("copy");
    assert!(std::process::Command::new("cp").arg("-r").arg(&run).arg(&copy).status().unwrap().success());
    let mut steps: Vec<_> = std::fs::read_dir(copy.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    steps.sort();
    assert_eq!(steps.len(), 2, "{steps:?}");
    std::fs::remove_dir_all(steps.last().unwrap()).unwrap();
    std::fs::remove_dir_all(copy.join("model")).unwrap();
    Kiln::new(home.path()).args(["-t", "2", "rl", "-q", "--resume"]).arg(&copy).run().success();
    let (a, b) = (lines, metrics(&copy));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for key in ["step", "loss", "reward", "grad_norm", "answer_tokens", "val_pass@1", "val_pass@k"] {
            assert_eq!(x.get(key), y.get(key), "{key}: uninterrupted {x} vs resumed {y}");
        }
    }
}

#[test]
fn bad_rl_settings_are_one_line_errors() {
    let home = temp_dir();
    let d = home.path();
    let out = d.join("x");
    let e = Kiln::new(d).args(["rl", "--group", "1", "--out"]).arg(&out).run();
    assert!(e.error_line(Some(1)).contains("GRPO needs a group of at least 2"), "{e:?}");
    let e = Kiln::new(d).args(["rl", "--temp", "0", "--out"]).arg(&out).run();
    assert!(e.error_line(Some(1)).contains("--temp must be positive"), "{e:?}");
    assert!(!out.exists(), "a refused run left files behind");
    let e = Kiln::new(d).args(["rl", "--resume", "/nonexistent/run"]).run();
    assert!(e.error_line(Some(1)).contains("cannot resume /nonexistent/run"), "{e:?}");
}
