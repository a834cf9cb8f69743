//! Running untrusted Python (model-written HumanEval solutions) outside kiln's process.
//!
//! Each program runs as `sh -c 'ulimit …; exec [unshare -rn] python3 -I prog.py'` in a fresh
//! temporary directory, in its own process group, with: a wall-clock limit (the whole group is
//! killed when it passes), a CPU-time limit, an address-space limit (`ulimit -v`), a file-size
//! limit, an empty environment but PATH, and no network when unprivileged user namespaces are
//! available (`unshare -rn`: a new network namespace holding only a down loopback). Where they
//! are not, [`Sandbox::network_isolated`] is false and results say so. This is containment for
//! honest mistakes (infinite loops, memory blow-ups, stray sockets), not a security boundary
//! against a hostile program; run untrusted evaluations in a container for that.

use crate::EvalError;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Limits for one program.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time.
    pub timeout: Duration,
    /// Address space, in MiB.
    pub memory_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), memory_mib: 1024 }
    }
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// Non-zero exit or killed by a signal; the end of its stderr.
    Failed(String),
    /// Still running at the time limit; killed.
    TimedOut,
}

/// Runs Python programs under [`Limits`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    python: String,
    unshare: bool,
}

impl Sandbox {
    /// A sandbox using `python3`, with network isolation if `unshare -rn` works here.
    pub fn new() -> Sandbox {
        let unshare = Command::new("unshare")
            .args(["-rn", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Sandbox { python: "python3".into(), unshare }
    }

    /// Whether programs run without network.
    pub fn network_isolated(&self) -> bool {
        self.unshare
    }

    /// Runs `program` and reports how it ended.
    pub fn run_python(&self, program: &str, limits: Limits) -> Result<Outcome, EvalError> {
        let dir = tempfile::tempdir().map_err(|e| EvalError::io(Path::new("temporary directory"), e))?;
        let prog = dir.path().join("prog.py");
        std::fs::write(&prog, program).map_err(|e| EvalError::io(&prog, e))?;
        let err_path = dir.path().join("stderr.txt");
        let err_file = std::fs::File::create(&err_path).map_err(|e| EvalError::io(&err_path, e))?;
        let cpu = limits.timeout.as_secs() + 1;
        let kib = limits.memory_mib * 1024;
        let net = if self.unshare { "unshare -rn " } else { "" };
        let script = format!("ulimit -v {kib}; ulimit -t {cpu}; ulimit -f 65536; exec {net}{} -I prog.py", self.python);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .process_group(0)
            .spawn()
            .map_err(|e| EvalError::Other(format!("cannot start sh for {}: {e}", self.python)))?;
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| EvalError::Other(format!("waiting for python3: {e}")))? {
                break Some(s);
            }
            if t0.elapsed() >= limits.timeout {
                // The whole group: the program may have started children of its own.
                // SAFETY: kill(2) on our own child's process group; no memory is involved.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let Some(status) = status else { return Ok(Outcome::TimedOut) };
        if status.success() {
            return Ok(Outcome::Passed);
        }
        let mut stderr = String::new();
        if let Ok(mut f) = std::fs::File::open(&err_path) {
            let _ = f.read_to_string(&mut stderr);
        }
        let tail: String =
            stderr.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
        Ok(Outcome::Failed(if tail.is_empty() { format!("exit status {status}") } else { tail }))
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_python() -> bool {
        let ok = Command::new("python3").arg("-c").arg("pass").status().is_ok_and(|s| s.success());
        if !ok {
            kiln_test_models::skip("python3 not found");
        }
        ok
    }

    #[test]
    fn passing_failing_and_timing_out_programs() {
        if !have_python() {
            return;
        }
        let sb = Sandbox::new();
        let lim = Limits { timeout: Duration::from_secs(2), memory_mib: 512 };
        assert_eq!(
            sb.run_python("def f(x):\n    return x + 1\nassert f(1) == 2\n", lim).expect("ran"),
            Outcome::Passed
        );
        match sb.run_python("assert 1 + 1 == 3, 'wrong sum'\n", lim).expect("ran") {
            Outcome::Failed(msg) => assert!(msg.contains("AssertionError: wrong sum"), "{msg}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let t0 = Instant::now();
        assert_eq!(
            sb.run_python("import time\nwhile True:\n    time.sleep(0.01)\n", lim).expect("ran"),
            Outcome::TimedOut
        );
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    }

    #[test]
    fn memory_and_network_are_limited() {
        if !have_python() {
            return;
        }
        let sb = Sandbox::new();
        let lim = Limits { timeout: Duration::from_secs(5), memory_mib: 256 };
        // 1 GiB does not fit in 256 MiB of address space.
        assert!(
            matches!(sb.run_python("x = bytearray(1 << 30)\n", lim).expect("ran"), Outcome::Failed(m) if m.contains("MemoryError"))
        );
        // The environment is empty, so nothing of kiln's leaks in.
        assert_eq!(sb.run_python("import os\nassert 'HOME' not in os.environ\n", lim).expect("ran"), Outcome::Passed);
        if sb.network_isolated() {
            let probe = "import socket\ns = socket.socket()\ns.settimeout(1)\ntry:\n    s.connect(('1.1.1.1', 80))\nexcept OSError:\n    pass\nelse:\n    raise SystemExit('network reachable')\n";
            assert_eq!(sb.run_python(probe, lim).expect("ran"), Outcome::Passed);
        } else {
            eprintln!("NOTE: unshare -rn unavailable here; programs run with the network");
        }
    }
}
