//! The data sets kiln knows: `datasets.json` (written by `scripts/data-table.py` from the data
//! mirror), read once.

use std::sync::OnceLock;

use serde::Deserialize;

/// A public data set: a name, what it is, and its files in kiln's data layout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DataSet {
    /// Canonical name (`hellaswag`, `mmlu`, `core`, ...).
    pub name: String,
    /// Other names accepted for it (`arc` for `core`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line saying what it is.
    pub description: String,
    /// The licence of the data.
    pub licence: String,
    /// Where the data set lives upstream, for people (a repository or project page).
    pub homepage: String,
    /// Its files.
    pub files: Vec<DataFile>,
}

/// One file of a data set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DataFile {
    /// Path in kiln's data layout (`eval/hellaswag_val_full.txt.bz2`), relative to the cache's
    /// `data/`, to `KILN_DATA` and to a mirror.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// The canonical public source: the file itself, or the tar archive holding [`Self::member`].
    pub url: String,
    /// When set, `url` is a tar archive and the file is this member of it.
    #[serde(default)]
    pub member: Option<String>,
}

impl DataSet {
    /// Whether `name` (case-insensitive) names this data set.
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        self.name == name || self.aliases.contains(&name)
    }

    /// Total size of its files in bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The file at `path` (kiln's data layout), if this set has it.
    pub fn file(&self, path: &str) -> Option<&DataFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

impl DataFile {
    /// Where the canonical bytes are, as one string: the URL, or `URL:MEMBER` for an archive.
    pub fn source(&self) -> String {
        match &self.member {
            Some(member) => format!("{}:{member}", self.url),
            None => self.url.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Table {
    sets: Vec<DataSet>,
}

/// The data sets kiln knows, in the table's order.
pub fn known_data_sets() -> &'static [DataSet] {
    static TABLE: OnceLock<Vec<DataSet>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let table: Table = serde_json::from_str(include_str!("datasets.json"))
            .expect("the built-in data table (src/data/datasets.json) parses; a unit test checks it");
        table.sets
    })
}

/// Names for error messages: `hellaswag, mmlu, core (arc), ...`.
pub(crate) fn data_set_names(sets: &[DataSet]) -> String {
    sets.iter()
        .map(|s| if s.aliases.is_empty() { s.name.clone() } else { format!("{} ({})", s.name, s.aliases.join(", ")) })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `path` is a plain relative path (`eval/x.csv`): no root, no `.`/`..`, no empty part,
/// no backslash. Only such paths are joined onto data directories and mirror URLs.
pub(crate) fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !path.contains(':')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}
