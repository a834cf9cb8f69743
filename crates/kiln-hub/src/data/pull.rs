//! Fetching data files into the cache: from `KILN_DATA` or the mirror when they have them,
//! else from each file's source (an archive downloaded once for all its members). Every file
//! is checked against the table in the work directory before any is installed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::source::{extract_tar_members, failure_reason};
use super::{DataFile, DataOrigin, DataSet, DataStore, LocalDataFile, Mirror};
use crate::{bar, hash_file, manifest_path, move_into_place, with_polling, HubError, Manifest, WorkDir};

/// A file fetched into the work directory, checked, waiting to be installed.
struct Staged {
    set: &'static DataSet,
    file: &'static DataFile,
    tmp: PathBuf,
    origin: String,
}

impl DataStore {
    /// Makes every `wanted` file intact in the cache and returns them in order. Missing files
    /// are fetched into one work directory — from `KILN_DATA` when `copy_local`, else from the
    /// mirror, else from their sources (each archive downloaded once) — and checked, all of
    /// them before any is installed.
    pub(super) fn ensure_cached(
        &self,
        wanted: &[(&'static DataSet, &'static DataFile)],
        copy_local: bool,
        progress: bool,
    ) -> Result<Vec<LocalDataFile>, HubError> {
        self.hub.clean_stale_tmp();
        let missing: Vec<_> = wanted.iter().filter(|(_, f)| self.cached(f).is_none()).copied().collect();
        // Path in the layout -> where it was fetched from just now.
        let mut fetched = BTreeMap::new();
        if !missing.is_empty() {
            let tmp = self.hub.tmp_dir();
            fs::create_dir_all(&tmp).map_err(|e| HubError::io(format!("cannot create {}", tmp.display()), e))?;
            let work = WorkDir::new(&tmp)?;
            let staged = self.fetch_all(&missing, copy_local, &work.0, progress)?;
            for (i, s) in staged.into_iter().enumerate() {
                self.install(&s, &work.0.join(format!("manifest{i}.json")))?;
                fetched.insert(s.file.path.as_str(), s.origin);
            }
        }
        wanted
            .iter()
            .map(|(set, f)| {
                let mut found = self.cached(f).ok_or_else(|| HubError::Corrupt {
                    path: self.cache_dir().join(&f.path),
                    reason: format!("just installed for data set {}, but not intact", set.name),
                })?;
                if let Some(origin) = fetched.get(f.path.as_str()) {
                    found.origin = DataOrigin::Fetched(origin.clone());
                }
                Ok(found)
            })
            .collect()
    }

    /// Fetches each of `missing` into `work` and checks it: from a copy (`KILN_DATA` when
    /// `copy_local`, the mirror) where there is one, else from its source.
    fn fetch_all(
        &self,
        missing: &[(&'static DataSet, &'static DataFile)],
        copy_local: bool,
        work: &Path,
        progress: bool,
    ) -> Result<Vec<Staged>, HubError> {
        let n = missing.len();
        let label = |i: usize, file: &DataFile| {
            if n > 1 {
                format!("[{}/{n}] {}", i + 1, file.path)
            } else {
                file.path.clone()
            }
        };
        let mut staged = Vec::new();
        // Archive URL -> its members still to fetch (index in `missing`, places tried).
        let mut archives: BTreeMap<&str, Vec<(usize, Vec<String>)>> = BTreeMap::new();
        for (i, &(set, file)) in missing.iter().enumerate() {
            let tmp = work.join(format!("file{i}"));
            let mut tried = Vec::new();
            let copied = self.fetch_copy(file, &tmp, copy_local, &label(i, file), progress, &mut tried);
            if let Some(origin) = copied {
                staged.push(check(set, file, tmp, origin)?);
            } else if file.member.is_some() {
                archives.entry(&file.url).or_default().push((i, tried));
            } else {
                self.download(&file.url, &tmp, Some(file.size), &label(i, file), progress)
                    .map_err(|e| unavailable(set, file, tried, &file.url, &e))?;
                staged.push(check(set, file, tmp, file.url.clone())?);
            }
        }
        for (k, (url, members)) in archives.into_iter().enumerate() {
            let archive = work.join(format!("archive{k}"));
            let wanted: Vec<_> =
                members.into_iter().map(|(i, tried)| (missing[i], work.join(format!("file{i}")), tried)).collect();
            staged.extend(self.fetch_members(url, &archive, wanted, progress)?);
        }
        Ok(staged)
    }

    /// Copies `file` into `tmp` from `KILN_DATA` (when `copy_local`) or from the mirror, and
    /// returns where it came from; `None` (with the places in `tried`) when neither has it.
    fn fetch_copy(
        &self,
        file: &DataFile,
        tmp: &Path,
        copy_local: bool,
        label: &str,
        progress: bool,
        tried: &mut Vec<String>,
    ) -> Option<String> {
        let mut copies = Vec::new();
        if let (true, Some(local)) = (copy_local, &self.sources.local) {
            let src = local.join(&file.path);
            if src.is_file() {
                copies.push(src);
            }
        }
        if let Some(Mirror::Dir(dir)) = &self.sources.mirror {
            copies.push(dir.join(&file.path));
        }
        for src in copies {
            let shown = src.display().to_string();
            if !src.is_file() {
                tried.push(format!("{shown} (no such file)"));
                continue;
            }
            match self.copy_file(&src, tmp, file.size, label, progress) {
                Ok(()) => return Some(shown),
                Err(reason) => tried.push(format!("{shown} ({reason})")),
            }
        }
        if let Some(mirror @ Mirror::Url(_)) = &self.sources.mirror {
            let url = mirror.locate(&file.path);
            match self.download(&url, tmp, Some(file.size), label, progress) {
                Ok(()) => return Some(url),
                Err(e) => tried.push(format!("{url} ({})", failure_reason(&e))),
            }
        }
        None
    }

    /// Downloads the tar archive at `url` once into `archive`, takes each wanted member out
    /// into its work file and checks it.
    fn fetch_members(
        &self,
        url: &str,
        archive: &Path,
        wanted: Vec<((&'static DataSet, &'static DataFile), PathBuf, Vec<String>)>,
        progress: bool,
    ) -> Result<Vec<Staged>, HubError> {
        let name = url.rsplit('/').next().unwrap_or(url);
        let label = format!("downloading {name}");
        if let Err(e) = self.download(url, archive, None, &label, progress) {
            let ((set, file), _, tried) = wanted.into_iter().next().expect("an archive has members");
            return Err(unavailable(set, file, tried, url, &e));
        }
        let pairs: Vec<(String, PathBuf)> =
            wanted.iter().map(|((_, file), tmp, _)| (file.member.clone().unwrap_or_default(), tmp.clone())).collect();
        let pb = bar(progress, None, format!("extracting {} files from {name}", pairs.len()));
        let extracted = with_polling(&pb, || 0, || extract_tar_members(archive, url, &pairs));
        pb.finish_and_clear();
        let _ = fs::remove_file(archive);
        extracted?;
        wanted.into_iter().map(|((set, file), tmp, _)| check(set, file, tmp, file.source())).collect()
    }

    /// Copies a file (from `KILN_DATA` or a directory mirror) into the work directory.
    fn copy_file(&self, src: &Path, dest: &Path, size: u64, label: &str, progress: bool) -> Result<(), String> {
        let pb = bar(progress, Some(size), format!("copying {label}"));
        let measured = || fs::metadata(dest).map_or(0, |m| m.len());
        let result = with_polling(&pb, measured, || fs::copy(src, dest));
        pb.finish_and_clear();
        result.map(drop).map_err(|e| e.to_string())
    }

    /// Downloads `url` into `dest` with the fetcher, showing a bar.
    fn download(&self, url: &str, dest: &Path, size: Option<u64>, label: &str, progress: bool) -> Result<(), HubError> {
        let pb = bar(progress, size, label.to_string());
        let measured = || fs::metadata(dest).map_or(0, |m| m.len());
        let result = with_polling(&pb, measured, || self.fetcher.http_get(url, dest));
        pb.finish_and_clear();
        result
    }

    /// Moves a checked file into the cache, then its manifest beside it (written to
    /// `tmp_manifest` first), so a manifest is only ever beside a complete file.
    fn install(&self, staged: &Staged, tmp_manifest: &Path) -> Result<(), HubError> {
        let dest = self.cache_dir().join(&staged.file.path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(format!("cannot create {}", parent.display()), e))?;
        }
        let mpath = manifest_path(&dest);
        match fs::remove_file(&mpath) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(HubError::io(format!("cannot replace {}", mpath.display()), e))
            }
            _ => {}
        }
        move_into_place(&staged.tmp, &dest)?;
        let manifest = Manifest {
            spec: format!("data:{}", staged.set.name),
            sha256: staged.file.sha256.clone(),
            size: staged.file.size,
            source: staged.origin.clone(),
            verified: true,
            pulled_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        let json = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
        fs::write(tmp_manifest, json + "\n")
            .map_err(|e| HubError::io(format!("cannot write {}", tmp_manifest.display()), e))?;
        move_into_place(tmp_manifest, &mpath)
    }
}

/// Checks a fetched file against the table.
fn check(set: &'static DataSet, file: &'static DataFile, tmp: PathBuf, origin: String) -> Result<Staged, HubError> {
    let (sha256, _) = hash_file(&tmp, false)?;
    if sha256 != file.sha256 {
        return Err(HubError::DataChecksumMismatch {
            file: file.path.clone(),
            origin,
            expected: file.sha256.clone(),
            actual: sha256,
        });
    }
    Ok(Staged { set, file, tmp, origin })
}

/// The error for a file that no place could give.
fn unavailable(set: &DataSet, file: &DataFile, mut tried: Vec<String>, url: &str, error: &HubError) -> HubError {
    tried.push(format!("{url} ({})", failure_reason(error)));
    HubError::DataUnavailable { set: set.name.clone(), file: file.path.clone(), tried: tried.join(" nor from ") }
}
