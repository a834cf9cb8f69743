//! Where data files come from besides the cache — a local copy (`KILN_DATA`), a mirror
//! (`KILN_DATA_MIRROR`), the canonical source — and the tools that fetch from them: curl for
//! URLs, python3's tarfile for members of an archive (as wheels are read with its zipfile).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{last_line, HubError};
use crate::fetch;

/// The places besides the cache that data files are looked for, from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSources {
    /// `KILN_DATA`: a directory in kiln's data layout whose files are used in place.
    pub local: Option<PathBuf>,
    /// `KILN_DATA_MIRROR`: where missing files are copied from before the canonical source.
    pub mirror: Option<Mirror>,
}

impl DataSources {
    /// Reads `KILN_DATA` and `KILN_DATA_MIRROR` (empty means unset).
    pub fn from_env() -> Result<DataSources, HubError> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        DataSources::from_values(var("KILN_DATA"), var("KILN_DATA_MIRROR"))
    }

    /// The sources the two variables' values describe.
    pub fn from_values(local: Option<OsString>, mirror: Option<OsString>) -> Result<DataSources, HubError> {
        let local = match local {
            None => None,
            Some(dir) => {
                let dir = absolute(PathBuf::from(dir));
                if !dir.is_dir() {
                    return Err(HubError::BadDataLocation {
                        variable: "KILN_DATA",
                        value: dir.display().to_string(),
                        reason: "not a directory (it should hold kiln's data layout: eval/, pretrain/, sft/, prefs/)"
                            .into(),
                    });
                }
                Some(dir)
            }
        };
        let mirror = match mirror {
            None => None,
            Some(value) => Some(Mirror::parse(&value.to_string_lossy())?),
        };
        Ok(DataSources { local, mirror })
    }
}

/// `dir` made absolute where it can be (manifests and messages then say where it was).
fn absolute(dir: PathBuf) -> PathBuf {
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// A copy of kiln's data layout to fetch files from: `<mirror>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// A local directory (or `file://` URL).
    Dir(PathBuf),
    /// An `http://` or `https://` base URL, without a trailing `/`.
    Url(String),
}

impl Mirror {
    /// Parses a `KILN_DATA_MIRROR` value: an http(s) base URL, a `file://` URL or a directory.
    pub fn parse(value: &str) -> Result<Mirror, HubError> {
        let trimmed = value.trim();
        let bad = |reason: &str| HubError::BadDataLocation {
            variable: "KILN_DATA_MIRROR",
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = trimmed.trim_end_matches('/');
            if url.split_once("://").is_none_or(|(_, host)| host.is_empty()) {
                return Err(bad("the URL has no host"));
            }
            return Ok(Mirror::Url(url.to_string()));
        }
        let dir = match trimmed.strip_prefix("file://") {
            Some(path) => PathBuf::from(path),
            None if trimmed.contains("://") => {
                return Err(bad("a mirror is a directory or an http://, https:// or file:// URL"))
            }
            None => PathBuf::from(trimmed),
        };
        if dir.is_dir() {
            Ok(Mirror::Dir(absolute(dir)))
        } else {
            Err(bad(
                "not a directory, nor an http:// or https:// URL (a mirror holds kiln's data layout: eval/, pretrain/, ...)",
            ))
        }
    }

    /// Where the mirror keeps `path` (kiln's data layout): a URL or a file path.
    pub fn locate(&self, path: &str) -> String {
        match self {
            Mirror::Dir(dir) => dir.join(path).display().to_string(),
            Mirror::Url(base) => format!("{base}/{path}"),
        }
    }
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mirror::Dir(dir) => write!(f, "{}", dir.display()),
            Mirror::Url(url) => f.write_str(url),
        }
    }
}

/// Why a fetch failed, in a few words for a list of places tried.
pub(crate) fn failure_reason(error: &HubError) -> String {
    match error {
        HubError::NoInternet { host } => format!("cannot reach {host}"),
        HubError::HttpFailed { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

const EXTRACT_TAR_MEMBERS: &str = r#"
import json, shutil, sys, tarfile
pairs = json.load(sys.stdin)
with tarfile.open(sys.argv[1]) as tar:
    for member, dest in pairs:
        try:
            src = tar.extractfile(member)
        except KeyError:
            sys.exit(f"it has no member {member}")
        if src is None:
            sys.exit(f"its member {member} is not a regular file")
        with src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
"#;

/// Copies each `(member, dest)` out of the tar archive `archive` (compressed or not, fetched
/// from `shown`, which errors name) into the file `dest`. Members are read by name; nothing
/// else in the archive is written anywhere.
pub(crate) fn extract_tar_members(archive: &Path, shown: &str, members: &[(String, PathBuf)]) -> Result<(), HubError> {
    let bad = |message: String| HubError::BadArchive { archive: shown.to_string(), message };
    let pairs: Vec<(&str, String)> =
        members.iter().map(|(member, dest)| (member.as_str(), dest.to_string_lossy().into_owned())).collect();
    let input = serde_json::to_vec(&pairs).map_err(|e| bad(e.to_string()))?;
    let python = fetch::python();
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(EXTRACT_TAR_MEMBERS)
        .arg(archive)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HubError::PipMissing { detail: format!("cannot run {python} (it reads tar archives): {e}") })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A failed write shows as the script's own error below.
        let _ = stdin.write_all(&input);
    }
    let out = child.wait_with_output().map_err(|e| HubError::io(format!("waiting for {python}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(bad(last_line(&String::from_utf8_lossy(&out.stderr))))
    }
}
