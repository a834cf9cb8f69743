//! End-to-end tests of `kiln data` (and `kiln eval` fetching its data): the binary with its own
//! `KILN_HOME`, the data mirror beside the checkout (`../shared/data`) standing in for the
//! sources where it is there, and what a user sees. Nothing here downloads from the internet.

use kiln_test_models::SMOLLM2;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `kiln ARGS` with `KILN_HOME=home`, `KILN_DATA` unset and `KILN_DATA_MIRROR=mirror` (when
/// given), stdin closed.
fn kiln(home: &Path, mirror: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .env("KILN_HOME", home)
        .env_remove("KILN_DATA")
        .env_remove("KILN_DATA_MIRROR")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    if let Some(m) = mirror {
        cmd.env("KILN_DATA_MIRROR", m);
    }
    cmd.output().expect("run the kiln binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn success(out: &Output) -> String {
    assert!(out.status.success(), "expected success: {out:?}\n{}", text(&out.stderr));
    text(&out.stdout)
}

/// Asserts a clean failure: exit 1, and stderr exactly one line starting with `error: `.
#[track_caller]
fn error_line(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// The data mirror beside the checkout, when there is one.
fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    dir.join("pretrain/tinyshakespeare.txt").is_file().then(|| dir.canonicalize().expect("canonical path"))
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kiln-data-test-").tempdir().expect("temp dir")
}

#[test]
fn data_list_names_every_set_with_its_source_and_state() {
    let home = temp_dir();
    let out = success(&kiln(home.path(), None, &["data", "list"]));
    let cache = home.path().join("data");
    assert!(out.starts_with(&format!("data cache: {}\n", cache.display())), "{out}");
    for name in ["hellaswag", "mmlu", "core (arc)", "tinyshakespeare", "alpaca", "hh-rlhf"] {
        assert!(out.contains(&format!("\n{name} ")), "{name} listed: {out}");
    }
    assert!(out.contains("licence: MIT; from https://github.com/klosax/hellaswag_text_data"), "{out}");
    assert!(out.contains("not here: `kiln data pull tinyshakespeare` fetches it"), "{out}");

    // No name: the list, and how to name one.
    let out = success(&kiln(home.path(), None, &["data", "pull"]));
    assert!(out.contains("\nhellaswag ") && out.ends_with("e.g. `kiln data pull hellaswag mmlu`\n"), "{out}");
}

#[test]
fn data_pull_from_a_mirror_then_from_the_cache() {
    let home = temp_dir();
    let Some(shared) = shared_data() else {
        // Without the real file nothing matches the table's sha256: a mirror holding another
        // file is refused in one line, and nothing is installed.
        eprintln!("no ../shared/data: checking the refusal of a wrong file instead");
        let mirror = temp_dir();
        std::fs::create_dir_all(mirror.path().join("pretrain")).expect("mkdir");
        std::fs::write(mirror.path().join("pretrain/tinyshakespeare.txt"), "not Shakespeare").expect("write");
        let out = kiln(home.path(), Some(mirror.path()), &["data", "pull", "tinyshakespeare"]);
        let line = error_line(&out);
        assert!(line.starts_with("error: checksum mismatch for pretrain/tinyshakespeare.txt from "), "{line}");
        assert!(line.ends_with("; nothing was installed"), "{line}");
        assert!(!home.path().join("data/pretrain/tinyshakespeare.txt").exists());
        return;
    };
    let file = home.path().join("data/pretrain/tinyshakespeare.txt");
    let out = success(&kiln(home.path(), Some(&shared), &["data", "pull", "tinyshakespeare"]));
    assert_eq!(out, format!("tinyshakespeare: {} (1 file, 1.1 MB, fetched)\n", file.display()));
    let want = std::fs::read(shared.join("pretrain/tinyshakespeare.txt")).expect("mirror file");
    assert!(std::fs::read(&file).expect("pulled file") == want, "the mirror's bytes");
    let manifest = std::fs::read_to_string(home.path().join("data/pretrain/tinyshakespeare.txt.json"))
        .expect("a manifest beside the file");
    assert!(manifest.contains("\"spec\": \"data:tinyshakespeare\""), "{manifest}");

    // Again, with no mirror at all: the cache answers.
    let out = success(&kiln(home.path(), None, &["data", "pull", "tinyshakespeare"]));
    assert_eq!(out, format!("tinyshakespeare: {} (1 file, 1.1 MB, already here)\n", file.display()));
    let out = success(&kiln(home.path(), None, &["data", "path", "tinyshakespeare"]));
    assert_eq!(out, format!("{}\n", file.display()));
    let out = success(&kiln(home.path(), None, &["data", "list"]));
    assert!(out.contains(&format!("cached: {}\n", file.display())), "{out}");
}

#[test]
fn data_errors_are_one_line() {
    let home = temp_dir();
    let line = error_line(&kiln(home.path(), None, &["data", "pull", "hellaswag", "nope"]));
    assert!(line.starts_with("error: no data set named nope: kiln knows hellaswag, mmlu, core (arc), "), "{line}");
    assert!(!home.path().join("data").exists(), "an unknown name fetches nothing");

    let line = error_line(&kiln(home.path(), None, &["data", "path", "eval/nope.txt"]));
    assert!(line.starts_with("error: eval/nope.txt is not a file of any data set kiln knows"), "{line}");

    let nowhere = home.path().join("no-such-mirror");
    let line = error_line(&kiln(home.path(), Some(&nowhere), &["data", "list"]));
    assert!(
        line.starts_with(&format!(
            "error: KILN_DATA_MIRROR={:?}: not a directory, nor an http:// or https:// URL",
            nowhere.display().to_string()
        )),
        "{line}"
    );
}

/// `kiln eval` without `--data` fetches the task's data set into the cache (here from the
/// mirror), and runs on it.
#[test]
fn eval_without_data_fetches_the_task_data() {
    let Some(shared) = shared_data() else {
        eprintln!("SKIP: no ../shared/data to stand in for the sources");
        return;
    };
    let Some(model) = SMOLLM2.path() else { return };
    let home = temp_dir();
    let model = model.display().to_string();
    let args = ["eval", "-q", "-t", "2", "--task", "truthfulqa", "--limit", "1", "-m", &model];
    let out = success(&kiln(home.path(), Some(&shared), &args));
    assert!(out.starts_with("truthfulqa_mc1   1 items of 817 "), "{out}");
    let pulled = home.path().join("data/eval/TruthfulQA.csv");
    let want = std::fs::read(shared.join("eval/TruthfulQA.csv")).expect("mirror file");
    assert!(std::fs::read(pulled).expect("pulled into the cache") == want);
}
