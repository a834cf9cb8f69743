//! End-to-end tests of `kiln tokenizer train`, `kiln train` and `kiln export`: a run killed with
//! SIGKILL and resumed logs the same losses as an uninterrupted one, the result runs in
//! `kiln run` (as a run directory and as exported GGUF), and bad inputs get one error line.
//!
//! The corpus is the first 200 KB of Tiny Shakespeare where a data mirror or cache has it, else
//! the committed fixture text repeated to 200 KB (see `util::corpus`).

#[allow(dead_code)] // each test binary uses part of the helpers
mod util;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use util::{metrics, temp_dir, Kiln};

/// A 200 KB training corpus in `dir`.
fn corpus(dir: &Path) -> PathBuf {
    util::corpus(dir, 200_000)
}

/// A model small enough to take a few milliseconds per step, with gradient accumulation (2
/// micro-batches per step), evaluation and checkpoints every few steps.
const TINY: &[&str] = &[
    "--preset",
    "nano",
    "--dim",
    "32",
    "--layers",
    "2",
    "--heads",
    "4",
    "--kv-heads",
    "2",
    "--ffn",
    "64",
    "--context",
    "32",
    "--micro-batch",
    "4",
    "--batch-tokens",
    "256",
    "--ckpt-every",
    "10",
    "--eval-every",
    "15",
    "--eval-batches",
    "2",
    "--sample-every",
    "0",
    "--warmup",
    "10",
    "-q",
];

#[test]
fn train_killed_with_sigkill_then_resumed_logs_the_same_losses_and_runs_in_kiln() {
    let home = temp_dir();
    let dir = temp_dir();
    let data = corpus(dir.path());
    let tok = dir.path().join("tok");
    util::train_tokenizer(home.path(), &data, 512, &tok);
    assert!(tok.join("tokenizer_report.json").is_file());

    let train = |out: &Path| {
        Kiln::new(home.path())
            .args(["-t", "2", "train", "--data"])
            .arg(&data)
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(out)
            .args(TINY)
            .args(["--steps", "150"])
    };
    let whole = dir.path().join("whole");
    train(&whole).run().success();
    let expected = metrics(&whole);
    assert_eq!(expected.len(), 150);
    let first = expected[0]["loss"].as_f64().unwrap();
    let last = expected[149]["loss"].as_f64().unwrap();
    assert!(last < first - 0.8, "the loss fell from {first} to {last}");

    // Kill the second run between two checkpoints, then resume it.
    let killed = dir.path().join("killed");
    let mut running = train(&killed).spawn();
    let start = Instant::now();
    while metrics(&killed).len() < 45 {
        assert!(running.child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(start.elapsed() < Duration::from_secs(120), "the run made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    running.child.kill().unwrap(); // SIGKILL on Unix
    running.finish();
    let at_kill = metrics(&killed).len();
    assert!(at_kill < 150, "killed after {at_kill} steps");
    Kiln::new(home.path()).args(["-t", "2", "train", "-q", "--resume"]).arg(&killed).run().success();
    let resumed = metrics(&killed);
    assert_eq!(resumed.len(), expected.len());
    for (a, b) in expected.iter().zip(&resumed) {
        assert_eq!(a["step"], b["step"]);
        for key in ["loss", "lr", "val_loss", "val_bpb"] {
            let (x, y) = (a[key].as_f64(), b[key].as_f64());
            assert_eq!(x.is_some(), y.is_some(), "step {}: {key}", a["step"]);
            if let (Some(x), Some(y)) = (x, y) {
                assert!(x.to_bits() == y.to_bits(), "step {} {key}: uninterrupted {x}, resumed {y}", a["step"]);
            }
        }
    }
    for f in ["loss.png", "loss.svg", "model/config.json", "model/model.safetensors", "model/tokenizer.json"] {
        assert!(killed.join(f).is_file(), "{f}");
    }

    // The run directory runs in kiln, and so does its f32 GGUF export, token for token.
    let run_out = |model: &Path| {
        let out =
            Kiln::new(home.path()).args(["run", "--temp", "0", "-n", "12", "--model"]).arg(model).arg("ROMEO:").run();
        out.success();
        out.stdout
    };
    let from_dir = run_out(&killed);
    assert!(!from_dir.trim().is_empty());
    let gguf = dir.path().join("tiny-f32.gguf");
    Kiln::new(home.path())
        .args(["export", "--type", "f32", "--model"])
        .arg(&killed)
        .arg("--out")
        .arg(&gguf)
        .run()
        .success();
    assert_eq!(run_out(&gguf), from_dir);
    // A GGUF back to a Hugging Face directory (what fine-tuning and transformers start from):
    // the same text from the same prompt tokens.
    let back = dir.path().join("tiny-back-hf");
    Kiln::new(home.path())
        .args(["export", "--format", "hf", "--model"])
        .arg(&gguf)
        .arg("--out")
        .arg(&back)
        .run()
        .success();
    let raw_out = |model: &Path| {
        let out = Kiln::new(home.path())
            .args(["run", "--raw", "--temp", "0", "-n", "12", "--model"])
            .arg(model)
            .arg("ROMEO:")
            .run();
        out.success();
        out.stdout
    };
    assert_eq!(raw_out(&back), raw_out(&gguf));
    let out = Kiln::new(home.path())
        .args(["export", "--model"])
        .arg(&gguf)
        .arg("--out")
        .arg(dir.path().join("never.gguf"))
        .run();
    assert!(out.error_line(Some(1)).contains("kiln quantize"));
    let q8 = dir.path().join("tiny-q8.gguf");
    Kiln::new(home.path())
        .args(["export", "--type", "q8_0", "--model"])
        .arg(&killed)
        .arg("--out")
        .arg(&q8)
        .run()
        .success();
    assert!(!run_out(&q8).trim().is_empty());
}

#[test]
fn bad_inputs_get_one_error_line() {
    let home = temp_dir();
    let dir = temp_dir();
    let corpus = dir.path().join("c.jsonl");
    std::fs::write(&corpus, "{\"text\": \"to be or not to be\"}\n{\"txt\": 3}\n").unwrap();
    let out = Kiln::new(home.path())
        .args(["tokenizer", "train", "--vocab", "300", "--data"])
        .arg(&corpus)
        .arg("--out")
        .arg(dir.path().join("t"))
        .run();
    let line = out.error_line(Some(1));
    assert!(line.contains("c.jsonl:2") && line.contains("\"text\""), "{line}");

    let out = Kiln::new(home.path())
        .args(["train", "--data"])
        .arg(&corpus)
        .arg("--tokenizer")
        .arg(dir.path().join("missing"))
        .arg("--out")
        .arg(dir.path().join("r"))
        .run();
    assert!(out.error_line(Some(1)).contains("missing"));

    let out = Kiln::new(home.path()).args(["train", "--resume"]).arg(dir.path()).run();
    assert!(out.error_line(Some(1)).contains("not a kiln run directory"));

    // A resumed run keeps its settings: flags that would change them are refused, not ignored.
    let out = Kiln::new(home.path()).args(["train", "--lr", "0.1", "--steps", "9", "--resume"]).arg(dir.path()).run();
    let line = out.error_line(Some(1));
    assert!(line.contains("only --steps can change") && line.ends_with("drop --lr"), "{line}");

    let out = Kiln::new(home.path())
        .args(["export", "--type", "q8_0", "--model"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("x.gguf"))
        .run();
    assert!(out.error_line(Some(1)).contains("config.json"));
}

#[test]
fn corrupted_checkpoint_is_named_on_resume() {
    let home = temp_dir();
    let dir = temp_dir();
    let data = corpus(dir.path());
    let tok = dir.path().join("tok");
    util::train_tokenizer(home.path(), &data, 300, &tok);
    let run = dir.path().join("run");
    Kiln::new(home.path())
        .args(["train", "--data"])
        .arg(&data)
        .arg("--tokenizer")
        .arg(&tok)
        .arg("--out")
        .arg(&run)
        .args(TINY)
        .args(["--steps", "10"])
        .run()
        .success();
    let ckpt = run.join("checkpoints/step_000010/optim.safetensors");
    std::fs::write(&ckpt, b"not safetensors").unwrap();
    let out = Kiln::new(home.path()).args(["train", "--steps", "12", "--resume"]).arg(&run).run();
    let line = out.error_line(Some(1));
    assert!(line.contains("optim.safetensors") && line.contains("not a readable"), "{line}");
}

#[test]
fn every_family_trains_from_scratch_and_its_gguf_runs_token_for_token() {
    let home = temp_dir();
    let dir = temp_dir();
    let data = corpus(dir.path());
    let tok = dir.path().join("tok");
    util::train_tokenizer(home.path(), &data, 400, &tok);
    for family in ["qwen2", "qwen3", "gemma3"] {
        let run = dir.path().join(family);
        Kiln::new(home.path())
            .args(["-t", "2", "train", "--family", family, "--data"])
            .arg(&data)
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(&run)
            .args(TINY)
            .args(["--steps", "40"])
            .run()
            .success();
        let losses: Vec<f64> = metrics(&run).iter().map(|m| m["loss"].as_f64().unwrap()).collect();
        assert!(losses[39] < losses[0] - 0.5, "{family}: the loss went from {} to {}", losses[0], losses[39]);
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("model/config.json")).unwrap()).unwrap();
        assert!(config["model_type"].as_str().unwrap().starts_with(family), "{family}: {config}");

        let greedy = |model: &Path| {
            let out = Kiln::new(home.path())
                .args(["run", "--raw", "--temp", "0", "-n", "16", "--model"])
                .arg(model)
                .arg("ROMEO:")
                .run();
            out.success();
            out.stdout
        };
        let gguf = dir.path().join(format!("{family}.gguf"));
        Kiln::new(home.path())
            .args(["export", "--type", "f32", "--model"])
            .arg(&run)
            .arg("--out")
            .arg(&gguf)
            .run()
            .success();
        let info = Kiln::new(home.path()).args(["info"]).arg(&gguf).run();
        info.success();
        assert!(info.stdout.contains(family), "{family}: {}", info.stdout);
        let text = greedy(&run);
        assert!(!text.trim().is_empty(), "{family}");
        assert_eq!(greedy(&gguf), text, "{family}");
    }
}
