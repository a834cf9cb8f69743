//! Running the built `kiln` binary from tests (after ripgrep's `tests/util.rs`): a command with
//! its own `KILN_HOME`, stdin closed or given, and assertions on what came back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// A `kiln` invocation being built.
pub struct Kiln {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    shown: String,
}

impl Kiln {
    /// `kiln` with `KILN_HOME` set to `home` (a test's own temp dir, so nothing is pulled into,
    /// or read from, the user's cache unless a test puts it there).
    pub fn new(home: &Path) -> Kiln {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.env("KILN_HOME", home).env_remove("RUST_BACKTRACE");
        Kiln { cmd, stdin: None, shown: "kiln".into() }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Kiln
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for a in args {
            self.shown.push(' ');
            self.shown.push_str(&a.as_ref().to_string_lossy());
            self.cmd.arg(a);
        }
        self
    }

    /// Appends one argument (a path, usually).
    pub fn arg(self, a: impl AsRef<std::ffi::OsStr>) -> Kiln {
        self.args([a])
    }

    /// Gives the process `input` on stdin (otherwise stdin is closed: reads see end of file).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Kiln {
        self.stdin = Some(input.into());
        self
    }

    /// Runs to completion.
    pub fn run(mut self) -> Output {
        self.cmd.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn the kiln binary");
        if let Some(input) = self.stdin.take() {
            let mut w = child.stdin.take().expect("piped stdin");
            // The process may exit before reading everything (e.g. /quit); that is its business.
            let _ = w.write_all(&input);
        }
        let out = child.wait_with_output().expect("wait for kiln");
        Output {
            shown: self.shown,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the process with stdout piped and stderr captured; the caller reads (or closes)
    /// stdout, then calls [`Running::finish`].
    pub fn spawn(mut self) -> Running {
        self.cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Running { shown: self.shown, child: self.cmd.spawn().expect("spawn the kiln binary") }
    }
}

/// A process started by [`Kiln::spawn`].
pub struct Running {
    shown: String,
    /// The process; `child.stdout` is the read end of its stdout.
    pub child: Child,
}

impl Running {
    /// Waits for the process; stdout is whatever was not read yet (empty if it was dropped).
    pub fn finish(self) -> Output {
        let out = self.child.wait_with_output().expect("wait for kiln");
        Output {
            shown: self.shown,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a finished `kiln` process left.
pub struct Output {
    shown: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.shown, self.status, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Asserts success and no panic; returns self for chaining.
    #[track_caller]
    pub fn success(&self) -> &Output {
        assert!(self.status.success(), "expected success: {self:?}");
        self.no_panic()
    }

    /// Asserts that no panic message reached stderr.
    #[track_caller]
    pub fn no_panic(&self) -> &Output {
        assert!(!self.stderr.contains("panicked"), "kiln panicked: {self:?}");
        self
    }

    /// Asserts a clean failure — non-zero exit (`code` when given), no panic, and stderr
    /// exactly one line starting with `error:` — and returns that line.
    #[track_caller]
    pub fn error_line(&self, code: Option<i32>) -> &str {
        self.no_panic();
        assert!(!self.status.success(), "expected failure: {self:?}");
        if let Some(c) = code {
            assert_eq!(self.status.code(), Some(c), "exit code: {self:?}");
        }
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one error line: {self:?}");
        assert!(lines[0].starts_with("error: "), "expected `error: …`: {self:?}");
        lines[0]
    }
}

/// The lines of a run's `metrics.jsonl` (none when it is missing).
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A temp directory for one test (KILN_HOME, or inputs the test writes).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kiln-cli-test-").tempdir().expect("temp dir")
}

/// A training corpus of `bytes` bytes in `dir`: the start of Tiny Shakespeare where a data
/// mirror or cache has it (so figures stay comparable), else the committed public-domain-style
/// fixture `tests/fixtures/text/potters-year.txt` (written for kiln) repeated to length.
pub fn corpus(dir: &Path, bytes: usize) -> PathBuf {
    let text = match kiln_test_models::data_file("pretrain/tinyshakespeare.txt") {
        Some(p) => std::fs::read(p).expect("read tinyshakespeare"),
        None => {
            let one = std::fs::read(kiln_test_models::fixture("text/potters-year.txt")).expect("fixture");
            one.iter().copied().cycle().take(bytes).collect()
        }
    };
    let path = dir.join("corpus.txt");
    std::fs::write(&path, &text[..bytes.min(text.len())]).expect("write corpus");
    path
}

/// `kiln tokenizer train` of a `vocab`-token tokenizer on `data` into `out` (which must succeed).
pub fn train_tokenizer(home: &Path, data: &Path, vocab: usize, out: &Path) {
    Kiln::new(home)
        .args(["tokenizer", "train", "--vocab", &vocab.to_string(), "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .run()
        .success();
}
