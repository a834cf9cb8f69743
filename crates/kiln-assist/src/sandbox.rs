//! Running untrusted Python (model-written code: the `python` tool, HumanEval solutions)
//! outside kiln's process.
//!
//! Each run gets a fresh scratch directory and a child process in its own session and process
//! group, with a wall-clock limit (the whole group is killed when it passes), CPU-time,
//! address-space, file-size and process-count limits, no core dumps, an empty environment but
//! `PATH`, and stdout and stderr written to files whose size is limited and of which at most
//! [`Limits::output_cap`] bytes are read back.
//!
//! How far the program is fenced in depends on what works here, checked once per process by
//! running a probe program (see [`Isolation`]):
//!
//! 1. [`Isolation::Full`]: `bwrap` (bubblewrap) with new namespaces for everything (no
//!    network, its own process tree), a root file system that holds only read-only `/usr`,
//!    `/bin`, `/lib*` and the Python installation, a tmpfs at `/tmp`, and the scratch
//!    directory read-write at `/scratch`, the working directory.
//! 2. [`Isolation::NetworkOnly`]: `unshare` (a network namespace holding only a down
//!    loopback, and a process namespace where available); the file system is kiln's.
//! 3. [`Isolation::None`]: limits only.
//!
//! The process limit (`RLIMIT_NPROC`) is set inside the namespaces, so it counts the
//! program's processes only (without a user namespace it counts every process of the user).
//! The kernel does not apply it to root, so when kiln runs as root the program runs as
//! `nobody` (uid 65534) where that works.
//!
//! This is containment for honest mistakes and careless code (infinite loops, memory
//! blow-ups, fork loops, stray sockets, writes to the wrong place), not a hardened security
//! boundary: with [`Isolation::Full`] it is close to what Flatpak relies on, without it the
//! program can read whatever kiln's user can.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time; the program and everything it started are killed when it passes.
    pub timeout: Duration,
    /// Address space of each process, in MiB (also the size of the tmpfs at `/tmp`).
    pub memory_mib: u64,
    /// Processes (and threads) the program may have at once.
    pub max_processes: u64,
    /// Bytes of stdout and of stderr kept in a [`RunReport`].
    pub output_cap: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), memory_mib: 1024, max_processes: 64, output_cap: 16 * 1024 }
    }
}

/// The largest file a program may write, stdout and stderr included: a chatty or runaway
/// program gets `EFBIG` (Python raises `OSError`) instead of filling the disk.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The user a program runs as when kiln runs as root (`nobody` on Linux distributions).
const NOBODY: u32 = 65534;

/// How a program ended, for pass/fail checks such as HumanEval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// Non-zero exit or killed by a signal; the last lines of its stderr.
    Failed(String),
    /// Still running at the time limit; killed.
    TimedOut,
}

/// How far programs are fenced in; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// bubblewrap: no network, no file system but the Python installation, the system's
    /// `/usr` (read-only) and the scratch directory; its own process tree.
    Full,
    /// `unshare`: no network; the file system is kiln's.
    NetworkOnly,
    /// Resource limits only.
    None,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Full => "isolated by bwrap (no network, no files outside the python installation)",
            Isolation::NetworkOnly => "no network (unshare), FILE SYSTEM NOT ISOLATED",
            Isolation::None => "NETWORK AND FILE SYSTEM NOT ISOLATED (neither bwrap nor unshare works here)",
        })
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The exit status (killed by `SIGKILL` when it timed out).
    pub status: ExitStatus,
    /// Whether it was still running at the time limit.
    pub timed_out: bool,
    /// The start of its stdout, at most [`Limits::output_cap`] bytes (invalid UTF-8 replaced).
    pub stdout: String,
    /// How many bytes it wrote to stdout in all.
    pub stdout_bytes: u64,
    /// The end of its stderr (where a traceback is), at most [`Limits::output_cap`] bytes.
    pub stderr: String,
    /// How many bytes it wrote to stderr in all.
    pub stderr_bytes: u64,
    /// Wall-clock time it ran.
    pub elapsed: Duration,
}

impl RunReport {
    /// Whether it exited with status 0 within the time limit.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.success()
    }
}

/// Why a program could not be run at all (its own failures are in the [`RunReport`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No usable `python3` on `PATH`.
    #[error("python3 is not usable here: {0}")]
    NoPython(String),
    /// The scratch directory or the output files could not be set up or read.
    #[error("sandbox {what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause (shown in the message, so not chained again as a source).
        err: std::io::Error,
    },
}

impl SandboxError {
    fn io(what: impl Into<String>, err: std::io::Error) -> SandboxError {
        SandboxError::Io { what: what.into(), err }
    }
}

/// Where Python lives, as the `python3` on `PATH` says.
#[derive(Debug, Clone)]
struct PythonInstall {
    /// The interpreter itself (a pyenv shim resolves to this), run directly.
    executable: PathBuf,
    /// `sys.base_prefix` and `sys.prefix` (the same outside a virtual environment).
    prefixes: Vec<PathBuf>,
}

/// What a program runs inside.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wrapper {
    /// `bwrap` with these leading arguments; each run adds its scratch directory and program.
    Bwrap(Vec<OsString>),
    /// `unshare` with these arguments.
    Unshare(Vec<OsString>),
    /// Nothing.
    Plain,
}

/// Runs Python programs under [`Limits`], as isolated as this machine allows.
#[derive(Debug, Clone)]
pub struct Sandbox {
    python: Result<PythonInstall, String>,
    isolation: Isolation,
    wrapper: Wrapper,
    /// Run as `nobody` (kiln runs as root, where the process limit would not hold).
    as_nobody: bool,
    /// bwrap understands `--size` (0.7 and later), so `/tmp` can be bounded.
    bwrap_sized_tmpfs: bool,
    note: Option<String>,
}

impl Sandbox {
    /// A sandbox using the `python3` on `PATH`, as isolated as works here. What works is
    /// found out once per process (by running a probe program) and remembered.
    pub fn new() -> Sandbox {
        static DETECTED: OnceLock<Sandbox> = OnceLock::new();
        DETECTED.get_or_init(Sandbox::detect).clone()
    }

    /// How far programs are fenced in.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Whether programs run without network.
    pub fn network_isolated(&self) -> bool {
        self.isolation != Isolation::None
    }

    /// Why isolation is weaker than it could be, or the process limit does not hold (for
    /// diagnostics); `None` when everything works.
    pub fn isolation_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Runs `program` and reports how it ended, for pass/fail checks.
    pub fn run_python(&self, program: &str, limits: Limits) -> Result<Outcome, SandboxError> {
        let report = self.run(program, limits)?;
        if report.timed_out {
            return Ok(Outcome::TimedOut);
        }
        if report.status.success() {
            return Ok(Outcome::Passed);
        }
        let lines: Vec<&str> = report.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        Ok(Outcome::Failed(if tail.is_empty() { describe_status(report.status) } else { tail }))
    }

    /// Runs `program` in a fresh scratch directory (deleted afterwards) and reports its exit
    /// status and (capped) output.
    pub fn run(&self, program: &str, limits: Limits) -> Result<RunReport, SandboxError> {
        let run_dir = tempfile::Builder::new()
            .prefix("kiln-sandbox-")
            .tempdir()
            .map_err(|e| SandboxError::io("cannot create a scratch directory", e))?;
        let scratch = run_dir.path().join("scratch");
        std::fs::create_dir(&scratch).map_err(|e| SandboxError::io(format!("{}", scratch.display()), e))?;
        let report = self.run_with_scratch(program, limits, run_dir.path(), &scratch);
        make_removable(&scratch);
        report
    }

    /// Runs `program` with `scratch` as its working directory; `run_dir` (which holds
    /// `scratch` or not) takes the program and its output files.
    fn run_with_scratch(
        &self,
        program: &str,
        limits: Limits,
        run_dir: &Path,
        scratch: &Path,
    ) -> Result<RunReport, SandboxError> {
        let python = self.python.as_ref().map_err(|e| SandboxError::NoPython(e.clone()))?;
        let prog = run_dir.join("prog.py");
        std::fs::write(&prog, program).map_err(|e| SandboxError::io(format!("{}", prog.display()), e))?;
        if self.as_nobody {
            give_to_nobody(run_dir, scratch, &prog)?;
        }
        let stdout_path = run_dir.join("stdout");
        let stderr_path = run_dir.join("stderr");
        let create = |p: &Path| File::create(p).map_err(|e| SandboxError::io(format!("{}", p.display()), e));
        let (stdout, stderr) = (create(&stdout_path)?, create(&stderr_path)?);

        let mut command = self.command(python, limits, scratch, &prog);
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        set_limits_on_exec(&mut command, limits);
        let started = Instant::now();
        let mut child =
            command.spawn().map_err(|e| SandboxError::io(format!("cannot start {:?}", command.get_program()), e))?;
        let (status, timed_out) = wait_or_kill(&mut child, limits.timeout)?;
        let elapsed = started.elapsed();

        let (stdout, stdout_bytes) = read_head(&stdout_path, limits.output_cap)?;
        let (stderr, stderr_bytes) = read_tail(&stderr_path, limits.output_cap)?;
        Ok(RunReport { status, timed_out, stdout, stdout_bytes, stderr, stderr_bytes, elapsed })
    }

    /// The command line for one run: wrapper, then the launcher (which sets the process
    /// limit inside the namespaces, drops root, and execs the program).
    fn command(&self, python: &PythonInstall, limits: Limits, scratch: &Path, prog: &Path) -> Command {
        let (mut command, prog_inside) = match &self.wrapper {
            Wrapper::Bwrap(leading) => {
                let mut c = Command::new("bwrap");
                c.args(leading);
                c.arg("--bind").arg(scratch).arg("/scratch").args(["--chdir", "/scratch"]);
                c.arg("--ro-bind").arg(prog).arg("/prog.py");
                if self.bwrap_sized_tmpfs {
                    c.arg("--size").arg(limits.memory_mib.saturating_mul(1 << 20).to_string());
                }
                if self.as_nobody {
                    c.args(["--perms", "1777"]);
                }
                // Last: the root itself read-only, so only /scratch and /tmp take writes.
                c.args(["--tmpfs", "/tmp", "--remount-ro", "/", "--"]);
                c.arg(&python.executable);
                (c, PathBuf::from("/prog.py"))
            }
            Wrapper::Unshare(args) => {
                let mut c = Command::new("unshare");
                c.args(args).arg("--").arg(&python.executable).current_dir(scratch);
                (c, prog.to_path_buf())
            }
            Wrapper::Plain => {
                let mut c = Command::new(&python.executable);
                c.current_dir(scratch);
                (c, prog.to_path_buf())
            }
        };
        let drop_to = if self.as_nobody { NOBODY.to_string() } else { String::new() };
        command.args(["-I", "-c", LAUNCHER]).arg(limits.max_processes.to_string()).arg(drop_to).arg(prog_inside);
        command.env_clear().env("PATH", host_path());
        command
    }

    /// Finds Python and the strongest isolation that runs a probe program here.
    fn detect() -> Sandbox {
        let as_root = effective_uid() == 0;
        let python = find_python();
        let mut sandbox = Sandbox {
            python: python.clone(),
            isolation: Isolation::None,
            wrapper: Wrapper::Plain,
            as_nobody: false,
            bwrap_sized_tmpfs: bwrap_supports_size(),
            note: None,
        };
        let Ok(python) = python else {
            sandbox.note = sandbox.python.as_ref().err().cloned();
            return sandbox;
        };
        let mut failures = Vec::new();
        for (isolation, wrapper, as_nobody) in candidates(&python, as_root) {
            let candidate = Sandbox { isolation, wrapper, as_nobody, note: None, ..sandbox.clone() };
            match candidate.probe() {
                Ok(()) => {
                    if as_root && !as_nobody {
                        failures.push(ROOT_WITHOUT_PROCESS_LIMIT.to_string());
                    }
                    let note = (!failures.is_empty()).then(|| failures.join("; "));
                    return Sandbox { note, ..candidate };
                }
                Err(why) => failures.push(why),
            }
        }
        failures.push("python3 does not run even without isolation".into());
        sandbox.note = Some(failures.join("; "));
        sandbox
    }

    /// Runs a trivial program; `Err` says why it did not work.
    fn probe(&self) -> Result<(), String> {
        let limits = Limits { timeout: Duration::from_secs(30), ..Limits::default() };
        let label = match (&self.wrapper, self.as_nobody) {
            (Wrapper::Bwrap(_), false) => "bwrap",
            (Wrapper::Bwrap(_), true) => "bwrap as nobody",
            (Wrapper::Unshare(_), false) => "unshare",
            (Wrapper::Unshare(_), true) => "unshare as nobody",
            (Wrapper::Plain, false) => "plain python3",
            (Wrapper::Plain, true) => "python3 as nobody",
        };
        match self.run("open('probe', 'w').write('ok')\nprint(open('probe').read())\n", limits) {
            Ok(report) if report.success() && report.stdout.trim() == "ok" => Ok(()),
            Ok(report) => {
                let why = report.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
                Err(format!(
                    "{label} fails ({}{}{why})",
                    describe_status(report.status),
                    if why.is_empty() { "" } else { ": " }
                ))
            }
            Err(e) => Err(format!("{label} fails ({e})")),
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// The note when kiln runs as root and programs cannot run as nobody.
const ROOT_WITHOUT_PROCESS_LIMIT: &str =
    "kiln runs as root and programs could not run as nobody, so the process limit does not hold";

/// Runs inside the sandbox before the program: the process limit must be set inside the
/// namespaces (set outside, it would count every process of kiln's user), and dropping root
/// must come after bwrap has set up the mounts.
const LAUNCHER: &str = "\
import os, resource, sys
nproc, uid, prog = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if uid:
    os.setgroups([])
    os.setgid(int(uid))
    os.setuid(int(uid))
hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
if hard != resource.RLIM_INFINITY:
    nproc = min(nproc, hard)
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
os.execv(sys.executable, [sys.executable, '-I', prog])
";

/// The ways to run programs, strongest first.
fn candidates(python: &PythonInstall, as_root: bool) -> Vec<(Isolation, Wrapper, bool)> {
    let mut out = Vec::new();
    // As root the program should run as nobody (the process limit does not apply to root);
    // that needs namespaces without a user namespace (root inside one is still root outside,
    // and cannot become anyone else).
    let owners: &[bool] = if as_root { &[true, false] } else { &[false] };
    if which("bwrap").is_some() {
        for &as_nobody in owners {
            out.push((Isolation::Full, Wrapper::Bwrap(bwrap_arguments(python, as_root && as_nobody)), as_nobody));
        }
    }
    if which("unshare").is_some() {
        let user: &[&str] = if as_root { &[] } else { &["--map-root-user"] };
        for &as_nobody in owners {
            for pid in [true, false] {
                let mut args: Vec<OsString> = user.iter().map(OsString::from).collect();
                args.push("--net".into());
                if pid {
                    // Its own process tree: when the first process dies, the kernel kills the rest.
                    args.extend(["--pid", "--fork", "--kill-child"].map(OsString::from));
                }
                out.push((Isolation::NetworkOnly, Wrapper::Unshare(args), as_nobody));
            }
        }
    }
    for &as_nobody in owners {
        out.push((Isolation::None, Wrapper::Plain, as_nobody));
    }
    out
}

/// bwrap's arguments before the per-run ones: namespaces, environment, and read-only binds
/// of the system and the Python installation.
fn bwrap_arguments(python: &PythonInstall, privileged_drop: bool) -> Vec<OsString> {
    let words = |items: &[&str]| items.iter().map(OsString::from).collect::<Vec<_>>();
    let mut args = if privileged_drop {
        // Everything but the user namespace, so the launcher can become nobody.
        words(&["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"])
    } else {
        words(&["--unshare-all"])
    };
    args.extend(words(&["--die-with-parent", "--clearenv", "--setenv", "PATH"]));
    let mut path = OsString::new();
    if let Some(bin) = python.executable.parent() {
        path.push(bin);
        path.push(":");
    }
    path.push("/usr/local/bin:/usr/bin:/bin");
    args.push(path);
    args.extend(words(&["--proc", "/proc", "--dev", "/dev"]));
    let system = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
    for dir in system {
        match std::fs::read_link(dir) {
            // Merged /usr: /bin -> usr/bin and so on.
            Ok(target) => args.extend(["--symlink".into(), target.into_os_string(), dir.into()]),
            Err(_) if Path::new(dir).is_dir() => args.extend(words(&["--ro-bind", dir, dir])),
            Err(_) => {}
        }
    }
    let mut bound: Vec<PathBuf> = system.iter().map(PathBuf::from).collect();
    for prefix in &python.prefixes {
        if prefix.parent().is_none() || bound.iter().any(|b| prefix.starts_with(b)) {
            continue;
        }
        if privileged_drop {
            // bwrap makes the directories above a bind 0700; nobody must get through them.
            let mut ancestors: Vec<&Path> = prefix.ancestors().skip(1).filter(|a| a.parent().is_some()).collect();
            ancestors.reverse();
            for dir in ancestors {
                args.extend(words(&["--perms", "0755", "--dir"]));
                args.push(dir.into());
            }
        }
        args.extend(["--ro-bind".into(), prefix.into(), prefix.into()]);
        bound.push(prefix.clone());
    }
    args
}

/// Asks the `python3` on `PATH` where it lives.
fn find_python() -> Result<PythonInstall, String> {
    let script = "import sys; print(sys.executable); print(sys.base_prefix); print(sys.prefix)";
    let out = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(format!("python3 fails: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let [executable, base_prefix, prefix] = lines[..] else {
        return Err(format!("python3 answered {text:?} when asked where it lives"));
    };
    if executable.is_empty() {
        return Err("python3 does not know its own executable".into());
    }
    let mut prefixes = vec![PathBuf::from(base_prefix)];
    if prefix != base_prefix {
        prefixes.push(PathBuf::from(prefix));
    }
    Ok(PythonInstall { executable: PathBuf::from(executable), prefixes })
}

/// Whether this bwrap can bound a tmpfs (`--size`, bwrap 0.7 and later).
fn bwrap_supports_size() -> bool {
    Command::new("bwrap")
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--size"))
}

/// `name` found on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// kiln's `PATH` (the only variable a program gets), or a plain default.
fn host_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

/// kiln's effective user id.
fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Lets `nobody` use the scratch directory and read the program (kiln runs as root).
fn give_to_nobody(run_dir: &Path, scratch: &Path, prog: &Path) -> Result<(), SandboxError> {
    let io = |p: &Path, e| SandboxError::io(format!("cannot hand {} to nobody", p.display()), e);
    std::os::unix::fs::chown(scratch, Some(NOBODY), Some(NOBODY)).map_err(|e| io(scratch, e))?;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o711)).map_err(|e| io(run_dir, e))?;
    std::fs::set_permissions(prog, std::fs::Permissions::from_mode(0o644)).map_err(|e| io(prog, e))
}

/// The limits the kernel enforces from the moment the wrapper starts, a new session (no
/// controlling terminal to inject keystrokes into) and process group to kill as a whole.
fn set_limits_on_exec(command: &mut Command, limits: Limits) {
    let address_space = limits.memory_mib.saturating_mul(1 << 20);
    // A busy program uses at most the wall-clock time in CPU; the second is slack.
    let cpu_seconds = limits.timeout.as_secs().saturating_add(1);
    let set = move |resource, value: u64| {
        let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
        // SAFETY: setrlimit(2) reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec, where only async-signal-safe calls are
    // allowed: setsid(2) and setrlimit(2) are system calls, and nothing allocates.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            set(libc::RLIMIT_AS, address_space)?;
            set(libc::RLIMIT_CPU, cpu_seconds)?;
            set(libc::RLIMIT_FSIZE, MAX_FILE_BYTES)?;
            set(libc::RLIMIT_CORE, 0)
        });
    }
}

/// Waits for `child` until `timeout`; then, or when it has exited, kills its whole process
/// group (the program may have left children behind) and reaps it. Returns the status and
/// whether it timed out.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<(ExitStatus, bool), SandboxError> {
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut nap = Duration::from_millis(1);
    let timed_out = loop {
        if has_exited(pid).map_err(|e| SandboxError::io("waiting for the program", e))? {
            break false;
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            break true;
        }
        std::thread::sleep(nap.min(timeout - elapsed));
        nap = (nap * 2).min(Duration::from_millis(10));
    };
    // The leader is not reaped yet, so the group's id cannot have been reused by now.
    // SAFETY: kill(2) on the process group of our own child; no memory is involved.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = child.wait().map_err(|e| SandboxError::io("reaping the program", e))?;
    Ok((status, timed_out))
}

/// Whether `pid` (our child) has exited, without reaping it.
fn has_exited(pid: libc::pid_t) -> std::io::Result<bool> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value for waitid(2) to fill in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: waitid(2) writes only into `info`, which lives across the call.
        if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } == 0 {
            // SAFETY: waitid filled `info` (or left it zeroed: si_pid 0 means still running).
            return Ok(unsafe { info.si_pid() } != 0);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The first `cap` bytes of the file at `path` (cut on a character boundary) and its size.
fn read_head(path: &Path, cap: usize) -> Result<(String, u64), SandboxError> {
    let io = |e| SandboxError::io(format!("reading {}", path.display()), e);
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut bytes = Vec::with_capacity(cap.min(size as usize));
    file.take(cap as u64).read_to_end(&mut bytes).map_err(io)?;
    if (bytes.len() as u64) < size {
        // Drop a character the cut split in two.
        if let Err(e) = std::str::from_utf8(&bytes) {
            if e.error_len().is_none() {
                bytes.truncate(e.valid_up_to());
            }
        }
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), size))
}

/// The last `cap` bytes of the file at `path` (cut on a character boundary) and its size.
fn read_tail(path: &Path, cap: usize) -> Result<(String, u64), SandboxError> {
    let io = |e| SandboxError::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let start = size.saturating_sub(cap as u64);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut bytes = Vec::with_capacity(cap.min(size as usize));
    file.take(cap as u64).read_to_end(&mut bytes).map_err(io)?;
    if start > 0 {
        // Drop the continuation bytes of a character the cut split in two.
        let split = bytes.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count();
        bytes.drain(..split);
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), size))
}

/// "exit status 3", "killed by signal 9".
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Makes every directory under `dir` writable by us again (a program may have taken the
/// permissions away), so that the scratch directory can be deleted. Best effort.
fn make_removable(dir: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_removable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Option<Sandbox> {
        let sb = Sandbox::new();
        if let Err(e) = &sb.python {
            kiln_test_models::skip(format!("python3 not usable: {e}"));
            return None;
        }
        eprintln!("sandbox: {:?} ({}), note: {:?}", sb.isolation(), sb.isolation(), sb.isolation_note());
        Some(sb)
    }

    fn limits(timeout_s: u64) -> Limits {
        Limits { timeout: Duration::from_secs(timeout_s), memory_mib: 512, ..Limits::default() }
    }

    #[test]
    fn passing_failing_and_timing_out_programs() {
        let Some(sb) = sandbox() else { return };
        let lim = limits(2);
        assert_eq!(
            sb.run_python("def f(x):\n    return x + 1\nassert f(1) == 2\n", lim).expect("ran"),
            Outcome::Passed
        );
        match sb.run_python("assert 1 + 1 == 3, 'wrong sum'\n", lim).expect("ran") {
            Outcome::Failed(msg) => assert!(msg.contains("AssertionError: wrong sum"), "{msg}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        match sb.run_python("import sys\nsys.exit(3)\n", lim).expect("ran") {
            Outcome::Failed(msg) => assert_eq!(msg, "exit status 3"),
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
    fn stdout_and_stderr_are_captured_and_capped() {
        let Some(sb) = sandbox() else { return };
        let lim = Limits { output_cap: 1000, ..limits(10) };
        let report = sb
            .run("import sys\nprint('hello', 6 * 7)\nprint('oops', file=sys.stderr)\nsys.exit(1)\n", lim)
            .expect("ran");
        assert_eq!(report.stdout, "hello 42\n");
        assert_eq!(report.stderr, "oops\n");
        assert!(!report.success() && !report.timed_out && report.status.code() == Some(1));

        // 10 MB of output: kiln keeps the head of stdout and the tail of stderr.
        let flood = "import sys\nsys.stdout.write('ab' * 5_000_000)\nsys.stderr.write('x' * 5_000_000 + 'END')\n";
        let report = sb.run(flood, lim).expect("ran");
        assert!(report.success(), "{report:?}");
        assert_eq!(report.stdout.len(), 1000);
        assert!(report.stdout.starts_with("abab"));
        assert_eq!(report.stdout_bytes, 10_000_000);
        assert_eq!(report.stderr.len(), 1000);
        assert!(report.stderr.ends_with("xxEND"));
        assert_eq!(report.stderr_bytes, 5_000_003);

        // A character split by the cap is dropped rather than mangled.
        let report = sb.run("print('é' * 1000)\n", Limits { output_cap: 101, ..lim }).expect("ran");
        assert_eq!(report.stdout, "é".repeat(50));

        // Past the file-size limit, writing fails instead of filling the disk.
        let endless = "import sys\nchunk = 'y' * (1 << 20)\nwhile True:\n    sys.stdout.write(chunk)\n";
        let report = sb.run(endless, lim).expect("ran");
        assert!(!report.timed_out && !report.success(), "{report:?}");
        assert!(report.stderr.contains("File too large"), "{}", report.stderr);
        assert!(report.stdout_bytes <= MAX_FILE_BYTES);
    }

    #[test]
    fn memory_is_limited_and_environment_empty() {
        let Some(sb) = sandbox() else { return };
        let lim = Limits { memory_mib: 256, ..limits(5) };
        // 1 GiB does not fit in 256 MiB of address space.
        assert!(
            matches!(sb.run_python("x = bytearray(1 << 30)\n", lim).expect("ran"), Outcome::Failed(m) if m.contains("MemoryError"))
        );
        // The environment is empty, so nothing of kiln's leaks in.
        // (Python adds LC_CTYPE itself when no locale is set, bwrap PWD.)
        let report = sb.run("import os\nprint(sorted(set(os.environ) - {'LC_CTYPE', 'PWD'}))\n", lim).expect("ran");
        assert_eq!(report.stdout.trim(), "['PATH']", "{report:?}");
    }

    #[test]
    fn network_is_unreachable() {
        let Some(sb) = sandbox() else { return };
        if !sb.network_isolated() {
            eprintln!("NOTE: neither bwrap nor unshare works here; programs run with the network");
            return;
        }
        // A server on kiln's own loopback: reachable from any process that shares kiln's
        // network, so a refused connection shows the namespace, not a missing route.
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = server.local_addr().expect("address").port();
        let probe = format!(
            "import socket\nfor host in ['127.0.0.1', '1.1.1.1']:\n    s = socket.socket()\n    s.settimeout(1)\n    try:\n        s.connect((host, {port}))\n    except OSError as e:\n        print(host, 'unreachable')\n    else:\n        print(host, 'REACHED')\n"
        );
        let report = sb.run(&probe, limits(10)).expect("ran");
        assert_eq!(report.stdout, "127.0.0.1 unreachable\n1.1.1.1 unreachable\n", "{report:?}");
    }

    #[test]
    fn files_outside_scratch_are_out_of_reach() {
        let Some(sb) = sandbox() else { return };
        if sb.isolation() != Isolation::Full {
            eprintln!(
                "NOTE: bwrap does not work here ({}); file-system isolation is not tested",
                sb.isolation_note().unwrap_or("no note")
            );
            return;
        }
        let checkout = env!("CARGO_MANIFEST_DIR");
        let home_cargo = std::env::var("HOME").map(|h| format!("{h}/.cargo")).unwrap_or_default();
        let secrets: Vec<&str> = ["/etc/passwd", "/etc/hostname", checkout, home_cargo.as_str()]
            .into_iter()
            .filter(|p| Path::new(p).exists())
            .collect();
        assert!(secrets.len() >= 2, "{secrets:?}");
        let run_dir = tempfile::tempdir().expect("tempdir");
        let scratch = run_dir.path().join("work");
        std::fs::create_dir(&scratch).expect("mkdir");
        let program = format!(
            "import os\n\
             for p in {secrets:?}:\n    print(p, 'visible' if os.path.exists(p) else 'absent')\n\
             try:\n    open('/etc/passwd').read()\nexcept OSError:\n    print('passwd unreadable')\n\
             open('made-here.txt', 'w').write('hi')\n\
             try:\n    open('/usr/kiln-was-here', 'w')\nexcept OSError:\n    print('usr read-only')\n\
             try:\n    open('/kiln-was-here', 'w')\nexcept OSError:\n    print('root read-only')\n\
             open('/tmp/t', 'w').write('tmp is writable')\n\
             print(os.getcwd(), sorted(os.listdir('.')))\n"
        );
        let report = sb.run_with_scratch(&program, limits(10), run_dir.path(), &scratch).expect("ran");
        assert!(report.success(), "{report:?}");
        let mut expected: String = secrets.iter().map(|p| format!("{p} absent\n")).collect();
        expected += "passwd unreadable\nusr read-only\nroot read-only\n/scratch ['made-here.txt']\n";
        assert_eq!(report.stdout, expected, "{report:?}");
        assert_eq!(std::fs::read_to_string(scratch.join("made-here.txt")).expect("landed in scratch"), "hi");
        make_removable(&scratch);
    }

    /// Every way of running programs that works here (the weaker ones are fallbacks on other
    /// machines) runs programs, stops them at the time limit, and cuts the network it says
    /// it cuts.
    #[test]
    fn every_working_fallback_runs_and_stops_programs() {
        let Some(sb) = sandbox() else { return };
        let Ok(python) = sb.python.clone() else { return };
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = server.local_addr().expect("address").port();
        let connect = format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n");
        let mut working = 0;
        for (isolation, wrapper, as_nobody) in candidates(&python, effective_uid() == 0) {
            let candidate = Sandbox { isolation, wrapper: wrapper.clone(), as_nobody, ..sb.clone() };
            let label = format!("{isolation:?} {wrapper:?} as_nobody={as_nobody}");
            if let Err(why) = candidate.probe() {
                eprintln!("does not work here: {label}: {why}");
                continue;
            }
            working += 1;
            let lim = limits(1);
            assert_eq!(candidate.run_python("print(1)\n", lim).expect("ran"), Outcome::Passed, "{label}");
            let t0 = Instant::now();
            assert_eq!(
                candidate.run_python("while True:\n    pass\n", lim).expect("ran"),
                Outcome::TimedOut,
                "{label}"
            );
            assert!(t0.elapsed() < Duration::from_secs(3), "{label}: {:?}", t0.elapsed());
            let reached = candidate.run_python(&connect, lim).expect("ran") == Outcome::Passed;
            assert_eq!(reached, isolation == Isolation::None, "{label}: loopback reached: {reached}");
        }
        assert!(working >= 2, "only {working} ways of running programs work here");
    }

    /// Processes whose command line holds `marker`.
    fn processes_with(marker: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(marker) {
                    found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
                }
            }
        }
        found
    }

    #[test]
    fn a_timed_out_program_dies_with_its_children() {
        let Some(sb) = sandbox() else { return };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let marker = format!("kiln-sandbox-test-{}-{nanos}", std::process::id());
        // A child in the program's process group, and (where the program has its own process
        // tree, so that this can be cleaned up) one that leaves it.
        let escape = sb.isolation() == Isolation::Full;
        let program = format!(
            "import subprocess, sys\n\
             sleeper = [sys.executable, '-c', 'import time; time.sleep(1000)', {marker:?}]\n\
             subprocess.Popen(sleeper)\n\
             if {escape}:\n    subprocess.Popen(sleeper, start_new_session=True)\n\
             while True:\n    pass\n",
            escape = if escape { "True" } else { "False" }
        );
        let t0 = Instant::now();
        let report = sb.run(&program, limits(2)).expect("ran");
        assert!(report.timed_out, "{report:?}");
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        // Killing is asynchronous; give the kernel a moment.
        let mut left = processes_with(&marker);
        for _ in 0..100 {
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            left = processes_with(&marker);
        }
        assert!(left.is_empty(), "still running: {left:?}");
    }

    #[test]
    fn fork_loops_are_bounded_by_the_process_limit() {
        let Some(sb) = sandbox() else { return };
        if let Some(note) = sb.isolation_note().filter(|n| n.contains(ROOT_WITHOUT_PROCESS_LIMIT)) {
            eprintln!("NOTE: {note}; fork loops are not tested");
            return;
        }
        let lim = Limits { max_processes: 32, ..limits(3) };
        // First a bounded loop (at most 500 children, each sleeping) that counts its forks,
        // so a missing limit shows up as a failure here rather than as a fork bomb.
        let counting = "import os, time\nn = 0\ntry:\n    for _ in range(500):\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n";
        let report = sb.run(counting, lim).expect("ran");
        let forks: u64 = report.stdout.trim().parse().unwrap_or_else(|_| panic!("{report:?}"));
        assert!(forks < lim.max_processes, "{forks} forks with a limit of {}", lim.max_processes);
        // Then a real fork bomb: every process forks forever; it must end at the time limit.
        let t0 = Instant::now();
        let bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n";
        assert_eq!(sb.run_python(bomb, lim).expect("ran"), Outcome::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
        // kiln can still start processes.
        assert_eq!(sb.run_python("pass\n", lim).expect("ran"), Outcome::Passed);
    }
}
