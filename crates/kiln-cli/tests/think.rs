//! Thinking longer, end to end on SmolLM2 (skipped when absent): `kiln run --think N` prints
//! one of its samples, the same seed gives the same run, and `kiln eval --think N` reports
//! every chooser at k = 1, 2, 4 … N with pass@k on the same samples.

#[allow(dead_code)] // shared helpers; this file uses some of them
mod util;

use kiln_test_models::SMOLLM2;
use serde_json::Value;
use util::{temp_dir, Kiln};

#[test]
fn run_think_prints_a_chosen_sample_and_repeats_with_its_seed() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let question = "Tom has 3 boxes of 12 pencils. How many pencils does he have? End with '#### <number>'.";
    let run = || {
        Kiln::new(home.path())
            .args(["run", "-t", "2", "--think", "4", "--seed", "5", "-n", "64", "-m"])
            .arg(&model)
            .arg(question)
            .run()
    };
    let first = run();
    first.success();
    assert!(!first.stdout.trim().is_empty(), "{first:?}");
    assert!(first.stderr.contains("[4 samples, final answers"), "{first:?}");
    assert!(first.stderr.contains("chosen: sample"), "{first:?}");
    let again = run();
    assert_eq!(first.stdout, again.stdout);
    // The line after `chosen:` names the vote; --choose calc says how the calculator sorted them.
    let calc = Kiln::new(home.path())
        .args(["run", "-t", "2", "--think", "4", "--choose", "calc", "--seed", "5", "-n", "64", "-m"])
        .arg(&model)
        .arg(question)
        .run();
    calc.success();
    assert!(calc.stderr.contains(", vote "), "{calc:?}");
}

#[test]
fn bad_think_flags_are_one_line_errors() {
    let home = temp_dir();
    let d = home.path();
    let e = Kiln::new(d).args(["run", "--think", "0", "-m", "x.gguf", "hi"]).run();
    assert!(e.error_line(Some(1)).contains("--think must be at least 1"), "{e:?}");
    let e = Kiln::new(d).args(["run", "--think", "4", "--think-budget", "soon", "-m", "x.gguf", "hi"]).run();
    assert!(e.error_line(Some(1)).contains("cannot read the budget \"soon\""), "{e:?}");
    let e = Kiln::new(d).args(["run", "--think", "4", "--choose", "oracle", "-m", "x.gguf", "hi"]).run();
    assert!(e.error_line(Some(1)).contains("unknown way to choose \"oracle\""), "{e:?}");
    let e = Kiln::new(d)
        .args(["eval", "--task", "arith", "--think", "4", "--choose", "rm:/nonexistent/rm", "-m", "x.gguf"])
        .run();
    assert!(e.error_line(Some(1)).contains("cannot load the reward model /nonexistent/rm"), "{e:?}");
}

#[test]
fn eval_think_reports_each_chooser_at_each_k_on_the_same_samples() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let out = home.path().join("arith.json");
    let run = Kiln::new(home.path())
        .args(["eval", "-q", "-t", "2", "--task", "arith", "--limit", "3", "--think", "4", "--choose", "vote,calc"])
        .args(["-n", "48", "--out"])
        .arg(&out)
        .arg("-m")
        .arg(&model)
        .run();
    run.success();
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("results")).expect("JSON");
    let task = &results["tasks"][0];
    let metric = |name: &str| {
        task["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {task}"))["value"]
            .as_f64()
            .expect("a value")
    };
    for name in ["exact_match", "single@1", "vote@2", "calc@2", "pass@2", "vote@4", "calc@4", "pass@4", "sample_acc"] {
        let v = metric(name);
        assert!((0.0..=1.0).contains(&v), "{name} = {v}");
    }
    assert_eq!(metric("exact_match"), metric("vote@4"));
    // pass@k never falls as k grows, and bounds every chooser at k.
    assert!(metric("pass@2") <= metric("pass@4"));
    assert!(metric("vote@4") <= metric("pass@4") && metric("calc@4") <= metric("pass@4"));
    assert_eq!(metric("samples_per_item"), 4.0);
    assert!(task["setting"].as_str().expect("setting").contains("4 samples"), "{task}");
    // Accuracy against samples, drawn beside the results.
    let svg = std::fs::read_to_string(home.path().join("arith-arith-think.svg")).expect("the plot");
    assert!(svg.contains("accuracy against samples") && svg.contains("calc") && svg.contains("pass@k"), "{svg:.300}");
    assert!(home.path().join("arith-arith-think.png").is_file());
}

#[test]
fn chat_think_answers_each_turn_with_a_chosen_sample() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let out = Kiln::new(home.path())
        .args(["chat", "-t", "2", "--think", "3", "--seed", "2", "-n", "24", "-m"])
        .arg(&model)
        .stdin("What is 3 + 4?\nAnd 5 + 6?\n")
        .run();
    out.success();
    assert_eq!(out.stderr.matches("[3 samples, final answers").count(), 2, "{out:?}");
    assert!(out.stdout.lines().filter(|l| !l.trim().is_empty()).count() >= 2, "{out:?}");
    let e = Kiln::new(home.path())
        .args(["chat", "--think", "3", "--think-budget", "10s", "-m"])
        .arg(&model)
        .stdin("hi\n")
        .run();
    assert!(e.error_line(Some(1)).contains("--think-budget is for run, eval and serve"), "{e:?}");
}
