//! The defaults people expect from a chat CLI: a fresh seed each run unless `--seed` is given
//! (and `--verbose` saying which), a readable `/show`, unknown `/commands` caught, and Ctrl-C
//! stopping an answer without ending `kiln chat`.

// Shared helpers; this file uses only some of them.
#[allow(dead_code)]
mod util;

use kiln_test_models::SMOLLM2;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::{temp_dir, Kiln};

fn smollm2() -> Option<PathBuf> {
    SMOLLM2.path()
}

/// `kiln run` sampling a short continuation; `extra` adds flags (a seed, --verbose).
fn sample(home: &Path, model: &Path, extra: &[&str]) -> util::Output {
    // The whole distribution (no top-k/top-p/min-p cut) at temperature 1: two seeds agreeing on
    // 24 tokens is practically impossible.
    let out = Kiln::new(home)
        .args(["run", "--raw", "-q", "-n", "24", "--temp", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0"])
        .args(extra)
        .args(["Once upon a time", "-m"])
        .arg(model)
        .run();
    out.success();
    assert!(!out.stdout.trim().is_empty(), "{out:?}");
    out
}

/// The number on the `seed: N` line that --verbose prints.
fn seed_line(stderr: &str) -> u64 {
    let line = stderr.lines().find(|l| l.starts_with("seed:")).unwrap_or_else(|| panic!("a seed line in {stderr}"));
    line["seed:".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number in {line:?}"))
}

#[test]
fn runs_without_a_seed_differ_and_runs_with_one_repeat() {
    let Some(model) = smollm2() else { return };
    let home = temp_dir();
    let a = sample(home.path(), &model, &[]);
    let b = sample(home.path(), &model, &[]);
    assert_ne!(a.stdout, b.stdout, "no --seed: a fresh seed each run\n{a:?}\n{b:?}");
    let c = sample(home.path(), &model, &["--seed", "11"]);
    let d = sample(home.path(), &model, &["--seed", "11"]);
    assert_eq!(c.stdout, d.stdout, "same --seed, same text");
}

#[test]
fn verbose_prints_the_seed_that_repeats_the_run() {
    let Some(model) = smollm2() else { return };
    let home = temp_dir();
    let first = sample(home.path(), &model, &["--verbose"]);
    let seed = seed_line(&first.stderr);
    assert!(first.stderr.contains("context:") && first.stderr.contains(&model.display().to_string()), "{first:?}");
    let again = sample(home.path(), &model, &["--seed", &seed.to_string()]);
    assert_eq!(first.stdout, again.stdout, "--seed {seed} repeats the run");
    assert!(again.stderr.is_empty(), "no --verbose, -q: nothing on stderr: {again:?}");
}

#[test]
fn chat_show_is_readable_and_unknown_commands_are_not_sent() {
    let Some(model) = smollm2() else { return };
    let home = temp_dir();
    let out = Kiln::new(home.path())
        .args(["chat", "-v", "--temp", "0.5", "--system", "Be brief.", "-m"])
        .arg(&model)
        .stdin("/show\n/bogus\n/quit\n")
        .run();
    out.success();
    assert!(out.stdout.is_empty(), "no message reached the model: {out:?}");
    assert!(out.stderr.contains("unknown command /bogus: /help lists the commands"), "{out:?}");
    assert!(!out.stderr.contains("SamplingParams"), "no debug dump: {out:?}");
    let show = |key: &str| -> String {
        // The last such line: --verbose's own `model:` and `context:` lines come first.
        let line = out
            .stderr
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("a {key} line: {out:?}"));
        line[key.len() + 1..].trim().to_string()
    };
    assert_eq!(show("temperature"), "0.5");
    assert_eq!(show("architecture"), "llama");
    assert_eq!(show("system prompt"), "\"Be brief.\"");
    assert_eq!(show("turns in history"), "0");
    assert!(show("chat template").contains("ChatML"), "{out:?}");
    assert!(show("context").ends_with("tokens used"), "{out:?}");
    // The fresh seed --verbose reported is the one the session uses.
    assert_eq!(show("seed"), seed_line(&out.stderr).to_string());
}

/// `kiln chat` with stdin, stdout and stderr piped; a thread drains each output into a buffer
/// the test can watch while the process runs.
struct Chat {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Chat {
    fn spawn(home: &Path, args: &[&str], model: &Path) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_HOME", home)
            .arg("chat")
            .args(args)
            .arg("-m")
            .arg(model)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the kiln binary");
        let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let drain = |mut from: Box<dyn Read + Send>, into: Arc<Mutex<String>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        let readers = vec![
            drain(Box::new(child.stdout.take().unwrap()), Arc::clone(&stdout)),
            drain(Box::new(child.stderr.take().unwrap()), Arc::clone(&stderr)),
        ];
        Chat { child, stdout, stderr, readers }
    }

    fn send(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).and_then(|_| stdin.flush()).expect("write to kiln chat");
    }

    fn interrupt(&self) {
        let status = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -INT failed");
    }

    /// Waits (up to a minute) until `ready` holds for (stdout, stderr).
    fn wait_for(&self, what: &str, ready: impl Fn(&str, &str) -> bool) {
        let start = Instant::now();
        loop {
            let (out, err) = (self.stdout.lock().unwrap().clone(), self.stderr.lock().unwrap().clone());
            if ready(&out, &err) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to ten seconds) for the process to end on its own.
    fn wait_exit(&mut self) {
        let start = Instant::now();
        while self.alive() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Closes stdin and waits: (exit code, stdout, stderr).
    fn finish(mut self) -> (Option<i32>, String, String) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait for kiln");
        for r in self.readers {
            r.join().unwrap();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status.code(), out, err)
    }
}

#[test]
fn ctrl_c_stops_the_answer_and_keeps_the_session() {
    let Some(model) = smollm2() else { return };
    let home = temp_dir();
    let mut chat = Chat::spawn(home.path(), &["--temp", "0", "-n", "400"], &model);
    chat.send("Write a long story about a dragon who learns to fly.\n");
    chat.wait_for("the first answer to start", |out, _| !out.is_empty());
    chat.interrupt();
    chat.wait_for("the answer to stop", |_, err| err.contains("(stopped"));
    // The partial answer is closed with a newline before the note on stderr.
    chat.wait_for("the partial answer's newline", |out, _| out.ends_with('\n'));
    std::thread::sleep(Duration::from_millis(200));
    assert!(chat.alive(), "the first Ctrl-C ends the answer, not kiln chat");
    let first_len = chat.stdout.lock().unwrap().len();
    chat.send("What is the capital of France?\n/show\n/quit\n");
    let (code, out, err) = chat.finish();
    let report = format!("--- stdout ---\n{out}\n--- stderr ---\n{err}");
    assert_eq!(code, Some(0), "/quit after the stop: {report}");
    assert!(!err.contains("panicked"), "{report}");
    assert!(!out[first_len..].trim().is_empty(), "the second message is answered: {report}");
    // The stopped answer stays in the history: two user turns.
    let turns =
        err.lines().find(|l| l.starts_with("turns in history:")).unwrap_or_else(|| panic!("/show output: {report}"));
    assert!(turns.ends_with(" 2"), "{turns}\n{report}");
}

#[test]
fn ctrl_c_twice_at_the_prompt_quits() {
    let Some(model) = smollm2() else { return };
    let home = temp_dir();
    let mut chat = Chat::spawn(home.path(), &["-n", "4"], &model);
    // Once /show has answered, the model is loaded and Ctrl-C is kiln's to handle.
    chat.send("/show\n");
    chat.wait_for("/show", |_, err| err.contains("temperature:"));
    chat.interrupt();
    chat.wait_for("the hint", |_, err| err.contains("(Ctrl-C again"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(chat.alive(), "one Ctrl-C at the prompt only warns");
    chat.interrupt();
    // Stdin stays open: the process must end by itself, not at the end of its input.
    chat.wait_exit();
    let (code, out, err) = chat.finish();
    assert_eq!(code, Some(130), "the second Ctrl-C quits as a shell reports SIGINT\n{out}\n{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}
