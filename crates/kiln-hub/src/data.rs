//! Public data sets, fetched as models are: `kiln data pull NAME`, `kiln data list`.
//!
//! Every file has a path in kiln's data layout (`eval/hellaswag_val_full.txt.bz2`,
//! `eval/mmlu/test/anatomy_test.csv`, `pretrain/tinyshakespeare.txt`, ...), a size and a sha256
//! (the table in `data/datasets.json`). A file is looked for, in order:
//!
//! 1. in `KILN_DATA`, a directory in that layout, used in place;
//! 2. in the cache, `$KILN_HOME/data/<path>`, beside its manifest (`<path>.json`, as models);
//! 3. in the mirror `KILN_DATA_MIRROR` (a directory or an http(s) base URL: `<mirror>/<path>`);
//! 4. at its canonical source (a URL, or a member of a tar archive at a URL).
//!
//! Fetched files land in the cache as models do: in a work directory under `$KILN_HOME/tmp`,
//! checked against the table's sha256, then renamed into place with their manifests. A pull
//! installs nothing unless every file it fetched is right.

mod pull;
mod source;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

pub use source::{DataSources, Mirror};
pub use table::{known_data_sets, DataFile, DataSet};

use crate::{read_manifest, Fetcher, Hub, HubError, SystemFetcher};
use table::{data_set_names, is_plain_relative};

/// Where a data file on this machine came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOrigin {
    /// Used in place from the `KILN_DATA` directory.
    Local,
    /// Already in kiln's data cache.
    Cache,
    /// Fetched into the cache just now, from this place (mirror path or URL, source URL).
    Fetched(String),
}

/// One data file on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDataFile {
    /// Its path in kiln's data layout (`eval/TruthfulQA.csv`).
    pub path: String,
    /// The directory in that layout that holds it: `KILN_DATA` or the cache's `data/`.
    pub root: PathBuf,
    /// Where it came from.
    pub origin: DataOrigin,
}

impl LocalDataFile {
    /// The file itself.
    pub fn location(&self) -> PathBuf {
        self.root.join(&self.path)
    }
}

/// The files of one data set that are on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSetFiles {
    /// The data set.
    pub set: &'static DataSet,
    /// Its files on this machine, in the table's order (all of them after a pull).
    pub files: Vec<LocalDataFile>,
}

impl DataSetFiles {
    /// Whether every file of the set is there.
    pub fn is_complete(&self) -> bool {
        self.files.len() == self.set.files.len()
    }

    /// How many files were fetched just now.
    pub fn fetched(&self) -> usize {
        self.files.iter().filter(|f| matches!(f.origin, DataOrigin::Fetched(_))).count()
    }

    /// What to show a user: the one file, else the deepest directory holding every file (such
    /// as `data/eval/mmlu`), else (files spread over `eval/`, `sft/`, ...) each file.
    pub fn locations(&self) -> Vec<PathBuf> {
        let Some(first) = self.files.first() else {
            return Vec::new();
        };
        if self.files.len() == 1 {
            return vec![first.location()];
        }
        let parent_parts = |p: &str| -> Vec<String> {
            let mut parts: Vec<String> = p.split('/').map(String::from).collect();
            parts.pop();
            parts
        };
        let mut common = parent_parts(&first.path);
        for f in &self.files[1..] {
            let parts = parent_parts(&f.path);
            let same = common.iter().zip(&parts).take_while(|(a, b)| a == b).count();
            common.truncate(same);
        }
        let one_root = self.files.iter().all(|f| f.root == first.root);
        if one_root && !common.is_empty() {
            vec![first.root.join(common.join("/"))]
        } else {
            self.files.iter().map(LocalDataFile::location).collect()
        }
    }
}

/// The data sets and where their files are: the table, the cache, and the other sources.
#[derive(Clone)]
pub struct DataStore {
    hub: Hub,
    sources: DataSources,
    sets: &'static [DataSet],
    fetcher: Arc<dyn Fetcher>,
}

impl std::fmt::Debug for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStore")
            .field("hub", &self.hub)
            .field("sources", &self.sources)
            .field("sets", &self.sets.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// `$KILN_HOME/data`: the data cache, in kiln's data layout.
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    /// The known data sets over this cache, with `KILN_DATA` and `KILN_DATA_MIRROR` as sources.
    pub fn data_store(&self) -> Result<DataStore, HubError> {
        Ok(DataStore::new(self.clone(), DataSources::from_env()?))
    }

    /// A data set's files (its one file, or the directory holding them) or one data file by
    /// its path in kiln's layout, pulled on first use; see [`DataStore::resolve`].
    pub fn data_file(&self, name_or_path: &str, progress: bool) -> Result<PathBuf, HubError> {
        self.data_store()?.resolve(name_or_path, progress)
    }
}

impl DataStore {
    /// The known data sets over `hub`'s cache, looking in `sources` too, fetching with curl.
    pub fn new(hub: Hub, sources: DataSources) -> DataStore {
        DataStore { hub, sources, sets: known_data_sets(), fetcher: Arc::new(SystemFetcher) }
    }

    /// The same store over another table (tests use small made-up ones).
    pub fn with_sets(mut self, sets: &'static [DataSet]) -> DataStore {
        self.sets = sets;
        self
    }

    /// The same store, fetching with `fetcher` (tests use fakes).
    pub fn with_fetcher(mut self, fetcher: Arc<dyn Fetcher>) -> DataStore {
        self.fetcher = fetcher;
        self
    }

    /// The data sets it knows.
    pub fn sets(&self) -> &'static [DataSet] {
        self.sets
    }

    /// Where it looks besides the cache.
    pub fn sources(&self) -> &DataSources {
        &self.sources
    }

    /// The cache directory, `$KILN_HOME/data`.
    pub fn cache_dir(&self) -> PathBuf {
        self.hub.data_dir()
    }

    /// The data set called `name` (or an alias of it, case-insensitive).
    pub fn find(&self, name: &str) -> Result<&'static DataSet, HubError> {
        self.sets
            .iter()
            .find(|s| s.is_named(name))
            .ok_or_else(|| HubError::UnknownDataSet { name: name.trim().to_string(), known: data_set_names(self.sets) })
    }

    /// The data set holding the file at `path` (kiln's layout), and that file's entry.
    pub fn find_file(&self, path: &str) -> Option<(&'static DataSet, &'static DataFile)> {
        self.sets.iter().find_map(|s| s.file(path).map(|f| (s, f)))
    }

    /// The files of `set` on this machine (in `KILN_DATA` or intact in the cache); fetches
    /// nothing.
    pub fn present(&self, set: &'static DataSet) -> DataSetFiles {
        let files = set.files.iter().filter_map(|f| self.local_copy(f).or_else(|| self.cached(f))).collect();
        DataSetFiles { set, files }
    }

    /// Makes every file of the data set `name` available, fetching what is neither in
    /// `KILN_DATA` nor in the cache.
    pub fn pull(&self, name: &str, progress: bool) -> Result<DataSetFiles, HubError> {
        let set = self.find(name)?;
        let mut local = BTreeMap::new();
        let mut wanted = Vec::new();
        for (i, f) in set.files.iter().enumerate() {
            match self.local_copy(f) {
                Some(found) => {
                    local.insert(i, found);
                }
                None => wanted.push((set, f)),
            }
        }
        let mut cached = self.ensure_cached(&wanted, false, progress)?.into_iter();
        let files = (0..set.files.len()).filter_map(|i| local.remove(&i).or_else(|| cached.next())).collect();
        Ok(DataSetFiles { set, files })
    }

    /// The data file at `path` (kiln's layout): from `KILN_DATA`, else the cache, else fetched
    /// into the cache. A path no data set has is found only in `KILN_DATA`.
    pub fn file(&self, path: &str, progress: bool) -> Result<LocalDataFile, HubError> {
        let path = path.trim().trim_start_matches("./");
        let unknown = || HubError::UnknownDataFile { path: path.to_string() };
        if !is_plain_relative(path) {
            return Err(unknown());
        }
        if let Some(local) = &self.sources.local {
            if local.join(path).is_file() {
                return Ok(LocalDataFile { path: path.to_string(), root: local.clone(), origin: DataOrigin::Local });
            }
        }
        let (set, file) = self.find_file(path).ok_or_else(unknown)?;
        let mut got = self.ensure_cached(&[(set, file)], false, progress)?;
        Ok(got.remove(0))
    }

    /// A data set's name (its [`DataSetFiles::locations`], the first when several) or a file's
    /// path in kiln's layout (that file), made available first.
    pub fn resolve(&self, name_or_path: &str, progress: bool) -> Result<PathBuf, HubError> {
        if name_or_path.contains('/') {
            return Ok(self.file(name_or_path, progress)?.location());
        }
        let pulled = self.pull(name_or_path, progress)?;
        Ok(pulled.locations().into_iter().next().unwrap_or_else(|| self.cache_dir()))
    }

    /// One directory in kiln's layout holding every file of `items` (data set names and file
    /// paths): `KILN_DATA` when it has them all, else the cache, where the missing ones are
    /// fetched (copied from `KILN_DATA` where it has them).
    pub fn root_for(&self, items: &[&str], progress: bool) -> Result<PathBuf, HubError> {
        let mut wanted: Vec<(&'static DataSet, &'static DataFile)> = Vec::new();
        for item in items {
            let item = item.trim();
            let files: Vec<_> = if item.contains('/') {
                let found = self
                    .find_file(item.trim_start_matches("./"))
                    .ok_or_else(|| HubError::UnknownDataFile { path: item.to_string() })?;
                vec![found]
            } else {
                let set = self.find(item)?;
                set.files.iter().map(|f| (set, f)).collect()
            };
            for pair in files {
                if !wanted.iter().any(|(_, f)| f.path == pair.1.path) {
                    wanted.push(pair);
                }
            }
        }
        if let Some(local) = &self.sources.local {
            if wanted.iter().all(|(_, f)| local.join(&f.path).is_file()) {
                return Ok(local.clone());
            }
        }
        self.ensure_cached(&wanted, true, progress)?;
        Ok(self.cache_dir())
    }

    /// `file` in `KILN_DATA`, if there.
    fn local_copy(&self, file: &DataFile) -> Option<LocalDataFile> {
        let local = self.sources.local.as_ref()?;
        local.join(&file.path).is_file().then(|| LocalDataFile {
            path: file.path.clone(),
            root: local.clone(),
            origin: DataOrigin::Local,
        })
    }

    /// `file` in the cache, if it is there beside a manifest that matches the table (the cheap
    /// check: size and recorded sha256).
    fn cached(&self, file: &DataFile) -> Option<LocalDataFile> {
        let root = self.cache_dir();
        let path = root.join(&file.path);
        let manifest = read_manifest(&path)?;
        let size = fs::metadata(&path).ok().filter(|m| m.is_file())?.len();
        let intact = size == file.size && manifest.size == file.size && manifest.sha256 == file.sha256;
        intact.then(|| LocalDataFile { path: file.path.clone(), root, origin: DataOrigin::Cache })
    }
}
