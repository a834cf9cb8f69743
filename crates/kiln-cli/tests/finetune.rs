//! End-to-end tests of `kiln sft`, `kiln merge`, `kiln dpo` and `kiln rm` on a tiny model
//! pretrained here with `kiln train`: run directories with the pretraining conventions, resume
//! from a checkpoint that repeats the uninterrupted run exactly, the result loading in
//! `kiln run`, bad rows reported by line (or fatal), and one-line errors.
//!
//! The pretraining corpus is 100 KB of Tiny Shakespeare where a data mirror or cache has it,
//! else of the committed fixture text (see `util::corpus`).

#[allow(dead_code)] // each test binary uses part of the helpers
mod util;

use std::path::{Path, PathBuf};
use util::{metrics, temp_dir, Kiln};

/// A tokenizer and a 2-layer llama pretrained for a few steps in `dir`: returns the run.
fn tiny_base(home: &Path, dir: &Path) -> PathBuf {
    tiny_base_of(home, dir, "llama")
}

/// [`tiny_base`] of the family `family`.
fn tiny_base_of(home: &Path, dir: &Path, family: &str) -> PathBuf {
    let data = util::corpus(dir, 100_000);
    let tok = dir.join("tok");
    util::train_tokenizer(home, &data, 400, &tok);
    let base = dir.join("base");
    Kiln::new(home)
        .args(["-t", "2", "train", "--family", family, "--data"])
        .arg(&data)
        .arg("--tokenizer")
        .arg(&tok)
        .arg("--out")
        .arg(&base)
        .args(["--preset", "nano", "--dim", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "64"])
        .args([
            "--context",
            "96",
            "--micro-batch",
            "2",
            "--batch-tokens",
            "192",
            "--sample-every",
            "0",
            "--steps",
            "10",
            "-q",
        ])
        .run()
        .success();
    base
}

const SFT_ROWS: &[&str] = &[
    r#"{"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am kiln, a small model."}]}"#,
    r#"{"instruction": "Name a colour.", "input": "", "output": "Blue."}"#,
    r#"{"prompt": "Say hi.", "completion": "Hi there!"}"#,
    r#"{"conversations": [{"from": "human", "value": "Count to three."}, {"from": "gpt", "value": "One, two, three."}]}"#,
    r#"{"question": "What is 2 + 2?", "answer": "2 + 2 = 4. #### 4"}"#,
    r#"{"messages": [{"role": "user", "content": "Good night."}, {"role": "assistant", "content": "Sleep well."}]}"#,
];

const PREF_ROWS: &[&str] = &[
    r#"{"prompt": "Who are you?", "chosen": "I am kiln.", "rejected": "Go away."}"#,
    r#"{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."}"#,
    r#"{"chosen": "\n\nHuman: Say hi.\n\nAssistant: Hi there!", "rejected": "\n\nHuman: Say hi.\n\nAssistant: Whatever."}"#,
    r#"{"conversations": [{"from": "human", "value": "Count to three."}], "chosen": {"from": "gpt", "value": "One, two, three."}, "rejected": {"from": "gpt", "value": "Four."}}"#,
    r#"{"prompt": "Good night.", "chosen": "Sleep well.", "rejected": "Stay up."}"#,
    r#"{"prompt": "Thanks!", "chosen": "You are welcome.", "rejected": "Hmph."}"#,
];

/// `kiln rm score` of a good and a bad answer to "Who are you?" with the reward model `rm`.
fn score_two_answers(home: &Path, rm: &Path) -> util::Output {
    let out = Kiln::new(home)
        .args(["rm", "score", "--model"])
        .arg(rm)
        .args(["--prompt", "Who are you?", "--answer", "I am kiln.", "--answer", "Go away."])
        .run();
    out.success();
    out
}

fn write_rows(path: &Path, rows: &[&str], bad: bool) {
    let mut text = rows.join("\n");
    if bad {
        text.push_str("\n{\"nothing\": 1}\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Copies a run directory, drops its newest checkpoint and final model, and resumes it: the
/// metrics must equal the uninterrupted run's.
fn assert_resume_repeats(home: &Path, cmd: &str, run: &Path, copy: &Path) {
    std::fs::create_dir_all(copy).unwrap();
    let status = std::process::Command::new("cp").arg("-r").arg(run).arg(copy).status().unwrap();
    assert!(status.success());
    let copy = copy.join(run.file_name().unwrap());
    let ckpts = copy.join("checkpoints");
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&ckpts).unwrap().map(|e| e.unwrap().path()).collect();
    steps.sort();
    assert!(steps.len() >= 2, "{steps:?}");
    std::fs::remove_dir_all(steps.last().unwrap()).unwrap();
    std::fs::remove_dir_all(copy.join("model")).unwrap();
    let out = Kiln::new(home).args(["-t", "2", cmd, "-q", "--resume"]).arg(&copy).run();
    out.success();
    assert!(!out.stderr.contains("reference log-probabilities of"), "{cmd}: resume recomputed the reference");
    let (a, b) = (metrics(run), metrics(&copy));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for key in ["step", "loss", "grad_norm", "rewards/margins", "val_loss"] {
            assert_eq!(x.get(key), y.get(key), "{cmd} {key}: uninterrupted {x} vs resumed {y}");
        }
    }
    assert!(copy.join("model/model.safetensors").is_file());
}

#[test]
fn sft_lora_merge_dpo_and_rm_end_to_end_with_resume() {
    let home = temp_dir();
    let dir = temp_dir();
    let base = tiny_base(home.path(), dir.path());
    let sft_data = dir.path().join("chats.jsonl");
    write_rows(&sft_data, SFT_ROWS, true);

    // A bad row is fatal on request, with its line, in one error line.
    let out = Kiln::new(home.path())
        .args(["sft", "--model"])
        .arg(&base)
        .arg("--data")
        .arg(&sft_data)
        .arg("--out")
        .arg(dir.path().join("never"))
        .args(["--on-bad-row", "fail", "--steps", "2"])
        .run();
    let line = out.error_line(Some(1));
    assert!(line.contains("line 7") && line.contains("--on-bad-row skip"), "{line}");

    // LoRA SFT: skipped row reported, 8 steps, checkpoints every 2, a merged model.
    let sft = dir.path().join("sft");
    let out = Kiln::new(home.path())
        .args(["-t", "2", "sft", "--model"])
        .arg(&base)
        .arg("--data")
        .arg(&sft_data)
        .arg("--out")
        .arg(&sft)
        .args([
            "--lora",
            "--rank",
            "4",
            "--steps",
            "8",
            "--ckpt-every",
            "2",
            "--batch-tokens",
            "24",
            "--val-rows",
            "1",
            "--lr",
            "3e-3",
            "--pack",
        ])
        .run();
    out.success();
    assert!(out.stderr.contains("skipped") && out.stderr.contains("line 7"), "{}", out.stderr);
    let m = metrics(&sft);
    assert_eq!(m.len(), 8);
    assert!(m.iter().all(|r| r["loss"].as_f64().unwrap().is_finite()));
    assert!(m[7]["val_loss"].is_number());
    for f in
        ["model/config.json", "model/model.safetensors", "adapter/adapter_config.json", "loss.png", "finetune.json"]
    {
        assert!(sft.join(f).is_file(), "{f}");
    }
    assert_resume_repeats(home.path(), "sft", &sft, &dir.path().join("resumed"));
    // --batch-rows: a fixed number of conversations per step, as TRL's batch size.
    let rows = dir.path().join("rows");
    Kiln::new(home.path())
        .args(["-t", "2", "sft", "--model"])
        .arg(&base)
        .arg("--data")
        .arg(&sft_data)
        .arg("--out")
        .arg(&rows)
        .args(["--lora", "--rank", "4", "--steps", "2", "--batch-rows", "3", "--val-rows", "1", "-q"])
        .run()
        .success();
    assert!(metrics(&rows).iter().all(|r| r["rows"] == 3.0), "{:?}", metrics(&rows));

    // kiln merge folds the same adapters into the same model: same greedy text in kiln run.
    let merged = dir.path().join("merged");
    Kiln::new(home.path())
        .args(["merge", "--model"])
        .arg(&base)
        .arg("--adapter")
        .arg(sft.join("adapter"))
        .arg("--out")
        .arg(&merged)
        .run()
        .success();
    let greedy = |model: &Path| {
        let out = Kiln::new(home.path())
            .args(["-t", "2", "run", "--temp", "0", "-n", "12", "-q", "--model"])
            .arg(model)
            .arg("Who are you?")
            .run();
        out.success();
        out.stdout.clone()
    };
    let text = greedy(&sft);
    assert_eq!(text, greedy(&merged));
    // The SFT model uses ChatML (the base had kiln's pass-through template).
    let cfg = std::fs::read_to_string(sft.join("model/tokenizer_config.json")).unwrap();
    assert!(cfg.contains("<|im_start|>"), "{cfg}");

    // DPO from the SFT run: TRL's metrics, the reference cached, resume without recomputing.
    let prefs = dir.path().join("prefs.jsonl");
    write_rows(&prefs, PREF_ROWS, false);
    let dpo = dir.path().join("dpo");
    Kiln::new(home.path())
        .args(["-t", "2", "dpo", "--model"])
        .arg(&sft)
        .arg("--data")
        .arg(&prefs)
        .arg("--out")
        .arg(&dpo)
        .args(["--steps", "6", "--ckpt-every", "2", "--batch-pairs", "2", "--val-rows", "2", "--lr", "1e-3", "-q"])
        .run()
        .success();
    let m = metrics(&dpo);
    assert_eq!(m.len(), 6);
    assert!((m[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6, "{}", m[0]);
    for k in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"] {
        assert!(m.iter().all(|r| r[k].is_number()), "{k}");
    }
    assert!(dpo.join("reference_logps.json").is_file());
    assert_resume_repeats(home.path(), "dpo", &dpo, &dir.path().join("resumed"));
    // A finished run resumed trains and logs nothing, and reports its final model's held-out
    // numbers again: those logged at its last step, with the pairs changed since the start.
    let out = Kiln::new(home.path()).args(["-t", "2", "dpo", "-q", "--resume"]).arg(&dpo).run();
    out.success();
    let again = metrics(&dpo);
    assert_eq!(again, m);
    let last = &m[5];
    let val = |k: &str| last[k].as_f64().unwrap_or_else(|| panic!("{k} in {last}"));
    for expect in [
        "step 6,".to_string(),
        format!("reward accuracy {:.3}", val("val_rewards/accuracies")),
        format!("by summed reply log-prob: {:.3}", val("val_logp_accuracy")),
        format!("{} pairs gained, {} lost", val("val_mean_logp_gained"), val("val_mean_logp_lost")),
    ] {
        assert!(out.stdout.contains(&expect), "{expect:?} in {}", out.stdout);
    }

    // Reward model: trains, reports held-out accuracy, scores answers.
    let rm = dir.path().join("rm");
    let out = Kiln::new(home.path())
        .args(["-t", "2", "rm", "--model"])
        .arg(&sft)
        .arg("--data")
        .arg(&prefs)
        .arg("--out")
        .arg(&rm)
        .args(["--steps", "4", "--batch-pairs", "2", "--val-rows", "2", "-q"])
        .run();
    out.success();
    assert!(out.stdout.contains("accuracy"), "{}", out.stdout);
    // Two held-out pairs: 0, 1 or 2 right from coin flips with chance 1, 3/4 or 1/4 of as many.
    let last = metrics(&rm).pop().unwrap();
    let (acc, p) = (last["val_accuracy"].as_f64().unwrap(), last["val_accuracy_p"].as_f64().unwrap());
    assert!((p - [1.0, 0.75, 0.25][(acc * 2.0).round() as usize]).abs() < 1e-12, "{last}");
    assert!(out.stdout.contains(&format!("binomial p against chance {p:.3}")), "{}", out.stdout);
    let out = score_two_answers(home.path(), &rm);
    let scores: Vec<f64> = out.stdout.lines().map(|l| l.split('\t').next().unwrap().parse().unwrap()).collect();
    assert_eq!(scores.len(), 2);

    // Wrong inputs: one line each.
    let out = Kiln::new(home.path())
        .args(["sft", "--model"])
        .arg(dir.path().join("nope"))
        .arg("--data")
        .arg(&sft_data)
        .arg("--out")
        .arg(dir.path().join("x"))
        .run();
    assert!(out.error_line(Some(1)).contains("nope"));
    let out = Kiln::new(home.path()).args(["dpo", "--resume"]).arg(&sft).run();
    assert!(out.error_line(Some(1)).contains("kiln sft"));
    let out = Kiln::new(home.path())
        .args(["rm", "score", "--model"])
        .arg(&sft)
        .args(["--prompt", "a", "--answer", "b"])
        .run();
    assert!(out.error_line(Some(1)).contains("not a reward model"));
}

#[test]
fn every_family_fine_tunes_with_lora_prefers_and_scores() {
    let home = temp_dir();
    for family in ["qwen2", "qwen3", "gemma3"] {
        let dir = temp_dir();
        let base = tiny_base_of(home.path(), dir.path(), family);
        let sft_data = dir.path().join("chats.jsonl");
        write_rows(&sft_data, SFT_ROWS, false);
        let prefs = dir.path().join("prefs.jsonl");
        write_rows(&prefs, PREF_ROWS, false);
        let run = |cmd: &str, out: &Path, data: &Path, extra: &[&str]| {
            Kiln::new(home.path())
                .args(["-t", "2", cmd, "--model"])
                .arg(&base)
                .arg("--data")
                .arg(data)
                .arg("--out")
                .arg(out)
                .args(["--steps", "3", "--val-rows", "1", "-q"])
                .args(extra)
                .run()
                .success();
            let m = metrics(out);
            assert_eq!(m.len(), 3, "{family} {cmd}");
            assert!(m.iter().all(|r| r["loss"].as_f64().unwrap().is_finite()), "{family} {cmd}: {m:?}");
        };
        let sft = dir.path().join("sft");
        run("sft", &sft, &sft_data, &["--lora", "--rank", "4", "--lr", "3e-3"]);
        let config = std::fs::read_to_string(sft.join("model/config.json")).unwrap();
        assert!(config.contains(&format!("\"model_type\": \"{family}")), "{family}: {config}");
        let out = Kiln::new(home.path())
            .args(["-t", "2", "run", "--temp", "0", "-n", "6", "-q", "--model"])
            .arg(&sft)
            .arg("Who are you?")
            .run();
        out.success();
        run("dpo", &dir.path().join("dpo"), &prefs, &["--lora", "--batch-pairs", "2"]);
        let rm = dir.path().join("rm");
        run("rm", &rm, &prefs, &["--batch-pairs", "2"]);
        let out = score_two_answers(home.path(), &rm);
        assert_eq!(out.stdout.lines().count(), 2, "{family}: {}", out.stdout);
    }
}
