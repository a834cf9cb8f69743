//! Speculative decoding from the command line on SmolLM2 (skipped when absent): `--lookup N`
//! and `--draft-layers N` print what plain decoding prints and report the guesses kept; the
//! bench checks the tokens match before its ratio; bad flags are one-line errors.

#[allow(dead_code)] // shared helpers; this file uses some of them
mod util;

use kiln_test_models::SMOLLM2;
use util::{temp_dir, Kiln};

#[test]
fn lookup_and_a_draft_print_what_plain_decoding_prints() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let prompt = "Repeat this list exactly:\n- red apples\n- green pears\n- yellow bananas";
    let run = |extra: &[&str]| {
        let out = Kiln::new(home.path())
            .args(["run", "-t", "2", "--temp", "0", "-n", "40", "-m"])
            .arg(&model)
            .args(extra)
            .arg(prompt)
            .run();
        out.success();
        out
    };
    let plain = run(&[]);
    let lookup = run(&["--lookup", "6"]);
    let draft = run(&["--draft-layers", "12", "--draft-max", "4"]);
    assert_eq!(plain.stdout, lookup.stdout);
    assert_eq!(plain.stdout, draft.stdout);
    assert!(lookup.stderr.contains("guesses kept"), "{lookup:?}");
    assert!(draft.stderr.contains("guesses kept"), "{draft:?}");
    assert!(!plain.stderr.contains("guesses kept"), "{plain:?}");
}

#[test]
fn bench_lookup_checks_the_tokens_and_prints_the_ratio() {
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let out = Kiln::new(home.path())
        .args(["bench", "-t", "2", "--lookup", "4", "-n", "8", "-r", "2", "-m"])
        .arg(&model)
        .run();
    out.success();
    assert!(out.stdout.contains("| 24 prompts,"), "{out:?}");
    assert!(out.stdout.contains("guesses kept"), "{out:?}");
    assert!(out.stdout.contains("speed-up") && out.stdout.contains("the same tokens both ways"), "{out:?}");
}

#[test]
fn bad_speculation_flags_are_one_line_errors() {
    let home = temp_dir();
    let d = home.path();
    let e = Kiln::new(d).args(["run", "--lookup", "0", "-m", "x.gguf", "hi"]).run();
    assert!(e.error_line(Some(1)).contains("--lookup must be at least 1"), "{e:?}");
    let e = Kiln::new(d).args(["run", "--lookup", "64", "-m", "x.gguf", "hi"]).run();
    assert!(e.error_line(Some(1)).contains("more than the 32 tokens one check takes"), "{e:?}");
    let e = Kiln::new(d).args(["run", "--lookup", "4", "--think", "4", "-m", "x.gguf", "hi"]).run();
    assert!(e.error_line(Some(1)).contains("cannot be used with --think"), "{e:?}");
    let e = Kiln::new(d).args(["bench", "--lookup", "4", "--think", "4", "-m", "x.gguf"]).run();
    assert!(e.error_line(Some(1)).contains("separate benches"), "{e:?}");
    if let Some(model) = SMOLLM2.path() {
        let e = Kiln::new(d).args(["run", "--draft-layers", "99", "-m"]).arg(&model).arg("hi").run();
        assert!(e.error_line(Some(1)).contains("the model has 30 layers"), "{e:?}");
    }
}
