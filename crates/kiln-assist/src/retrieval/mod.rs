//! Retrieval over a folder of the user's documents: passages ([`chunk`]), each embedded once
//! and kept in an index on disk that a new `index` run updates file by file (unchanged files
//! keep their vectors), and three searches over it: keyword (BM25, [`keyword`]), vector
//! (cosine of sentence embeddings) and hybrid (the two rankings fused by reciprocal rank).
//! Every hit names its file and lines.

pub mod chunk;
pub mod keyword;

use chunk::Passage;
use keyword::KeywordIndex;
use kiln_model::embed::{EmbedError, Embedder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Files larger than this are left out of an index (logs, dumps): say so rather than stall.
pub const MAX_FILE_BYTES: u64 = 20 << 20;

/// The rank constant of reciprocal rank fusion (Cormack et al. use 60).
const RRF_K: f64 = 60.0;

/// Why an index could not be built, read or searched.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading the folder or writing the index failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The stored index is unreadable or made by another embedding model.
    #[error("{0}")]
    Stored(String),
    /// Embedding failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io { path: path.display().to_string(), source }
}

/// How a search ranks passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// BM25 over words.
    Keyword,
    /// Cosine similarity of sentence embeddings.
    Vector,
    /// Both rankings fused by reciprocal rank.
    Hybrid,
}

impl std::str::FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SearchMode, String> {
        match s {
            "keyword" => Ok(SearchMode::Keyword),
            "vector" => Ok(SearchMode::Vector),
            "hybrid" => Ok(SearchMode::Hybrid),
            other => Err(format!("unknown search mode {other:?}: keyword, vector or hybrid")),
        }
    }
}

/// One indexed file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    /// Path relative to the indexed folder, with `/`.
    path: String,
    size: u64,
    /// Modification time, nanoseconds since the epoch.
    modified: u128,
    passages: Vec<Passage>,
    /// One vector per passage, `dim` wide each.
    vectors: Vec<Vec<f32>>,
}

/// What is stored on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// The folder, as given when the index was made (canonical).
    root: PathBuf,
    /// Which embedding model made the vectors (they cannot be mixed).
    model: String,
    dim: usize,
    files: Vec<FileEntry>,
}

const FORMAT_VERSION: u32 = 2;

/// What an `update` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpdateReport {
    /// Files seen for the first time.
    pub added: usize,
    /// Files whose size or time changed, indexed again.
    pub changed: usize,
    /// Files that are gone.
    pub removed: usize,
    /// Files kept as they were.
    pub unchanged: usize,
    /// Files left out (too large, unreadable), with the reason.
    pub skipped: Vec<(String, String)>,
    /// Passages in the index now.
    pub passages: usize,
}

/// A passage found by a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// File, relative to the indexed folder.
    pub file: String,
    /// First line of the passage (1-based).
    pub start_line: usize,
    /// Last line (inclusive).
    pub end_line: usize,
    /// The passage.
    pub text: String,
    /// The ranking's score (BM25, cosine, or fused reciprocal rank).
    pub score: f64,
}

impl Hit {
    /// `notes/dentist.md:12-18`.
    pub fn location(&self) -> String {
        if self.start_line == self.end_line {
            format!("{}:{}", self.file, self.start_line)
        } else {
            format!("{}:{}-{}", self.file, self.start_line, self.end_line)
        }
    }
}

/// A folder's index, loaded for searching.
pub struct Index {
    stored: Stored,
    /// (file, passage) of each passage in search order.
    order: Vec<(usize, usize)>,
    keyword: KeywordIndex,
}

/// The file under `index_dir` that holds an index.
fn index_file(index_dir: &Path) -> PathBuf {
    index_dir.join("index.json")
}

impl Index {
    /// Reads the index stored in `index_dir`; `None` when there is none yet.
    pub fn load(index_dir: &Path) -> Result<Option<Index>, IndexError> {
        let path = index_file(index_dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
            IndexError::Stored(format!("{}: unreadable index ({e}); run `kiln index` again", path.display()))
        })?;
        if stored.version != FORMAT_VERSION {
            return Err(IndexError::Stored(format!(
                "{}: index format {} (this kiln reads {FORMAT_VERSION}); run `kiln index` again",
                path.display(),
                stored.version
            )));
        }
        Ok(Some(Index::from_stored(stored)))
    }

    fn from_stored(stored: Stored) -> Index {
        let order: Vec<(usize, usize)> = stored
            .files
            .iter()
            .enumerate()
            .flat_map(|(f, file)| (0..file.passages.len()).map(move |p| (f, p)))
            .collect();
        let keyword = KeywordIndex::new(order.iter().map(|&(f, p)| stored.files[f].passages[p].text.as_str()));
        Index { stored, order, keyword }
    }

    /// Builds or updates the index of `folder` in `index_dir`: new and changed files are read,
    /// cut into passages and embedded; unchanged ones keep their vectors; vanished ones go.
    /// The index file is replaced whole at the end, so a run killed half-way leaves the old
    /// one intact. `model` names the embedder (an index made with another is rebuilt).
    pub fn update(
        folder: &Path,
        index_dir: &Path,
        embedder: &Embedder,
        model: &str,
        mut progress: impl FnMut(&str),
    ) -> Result<(Index, UpdateReport), IndexError> {
        let root = folder.canonicalize().map_err(io_err(folder))?;
        let old = match Index::load(index_dir) {
            Ok(Some(i)) if i.stored.model == model && i.stored.dim == embedder.dim() => Some(i.stored),
            _ => None,
        };
        let mut old_files: HashMap<String, FileEntry> =
            old.map(|s| s.files.into_iter().map(|f| (f.path.clone(), f)).collect()).unwrap_or_default();
        let mut report = UpdateReport::default();
        let mut files = Vec::new();
        for path in documents(&root)? {
            let rel = path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    report.skipped.push((rel, e.to_string()));
                    continue;
                }
            };
            if meta.len() > MAX_FILE_BYTES {
                report.skipped.push((rel, format!("larger than {} MiB", MAX_FILE_BYTES >> 20)));
                continue;
            }
            let modified =
                meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            match old_files.remove(&rel) {
                Some(entry) if entry.size == meta.len() && entry.modified == modified => {
                    report.unchanged += 1;
                    files.push(entry);
                    continue;
                }
                Some(_) => report.changed += 1,
                None => report.added += 1,
            }
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    report.skipped.push((rel, e.to_string()));
                    continue;
                }
            };
            progress(&rel);
            // Passages fit the encoder with its two special tokens, so nothing is cut off.
            let budget = embedder.max_tokens.saturating_sub(2);
            let passages = chunk::passages(&chunk::readable_text(&path, &bytes), budget, &|t| embedder.count_tokens(t));
            let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
            let vectors = embedder.embed_all(&texts)?;
            files.push(FileEntry { path: rel, size: meta.len(), modified, passages, vectors });
        }
        report.removed = old_files.len();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let stored = Stored { version: FORMAT_VERSION, root, model: model.to_string(), dim: embedder.dim(), files };
        fs::create_dir_all(index_dir).map_err(io_err(index_dir))?;
        let path = index_file(index_dir);
        let tmp = index_dir.join(format!(".index.json.{}", std::process::id()));
        let json = serde_json::to_vec(&stored).expect("an index serializes");
        fs::write(&tmp, json).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let index = Index::from_stored(stored);
        report.passages = index.len();
        Ok((index, report))
    }

    /// Number of passages.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the index holds no passage.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The embedding model the vectors come from.
    pub fn model(&self) -> &str {
        &self.stored.model
    }

    fn hit(&self, i: usize, score: f64) -> Hit {
        let (f, p) = self.order[i];
        let file = &self.stored.files[f];
        let passage = &file.passages[p];
        Hit {
            file: file.path.clone(),
            start_line: passage.start_line,
            end_line: passage.end_line,
            text: passage.text.clone(),
            score,
        }
    }

    fn vector(&self, i: usize) -> &[f32] {
        let (f, p) = self.order[i];
        &self.stored.files[f].vectors[p]
    }

    /// The `k` passages most like `query` (best first). Vector and hybrid search need the
    /// embedder that made the index.
    pub fn search(
        &self,
        query: &str,
        mode: SearchMode,
        k: usize,
        embedder: Option<&Embedder>,
    ) -> Result<Vec<Hit>, IndexError> {
        // Each ranking contributes this many candidates to the fusion.
        let pool = (k * 10).max(50);
        let keyword = || self.keyword.search(query, pool);
        let vector = |embedder: Option<&Embedder>| -> Result<Vec<(usize, f64)>, IndexError> {
            let e = embedder.ok_or_else(|| IndexError::Stored("vector search needs the embedding model".into()))?;
            let q = e.embed(query)?;
            let mut scored: Vec<(usize, f64)> =
                (0..self.len()).map(|i| (i, kiln_model::embed::cosine(&q, self.vector(i)) as f64)).collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            scored.truncate(pool);
            Ok(scored)
        };
        let ranked = match mode {
            SearchMode::Keyword => keyword(),
            SearchMode::Vector => vector(embedder)?,
            SearchMode::Hybrid => fuse(&[keyword(), vector(embedder)?]),
        };
        Ok(ranked.into_iter().take(k).map(|(i, s)| self.hit(i, s)).collect())
    }
}

/// Reciprocal rank fusion: each ranking gives an item `1 / (60 + rank)`; the sums rank it.
fn fuse(rankings: &[Vec<(usize, f64)>]) -> Vec<(usize, f64)> {
    let mut scores: HashMap<usize, f64> = HashMap::new();
    for ranking in rankings {
        for (rank, &(item, _)) in ranking.iter().enumerate() {
            *scores.entry(item).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(usize, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

/// The documents under `root`, sorted: hidden files and folders are skipped, symbolic links
/// are not followed (an index stays inside its folder).
fn documents(root: &Path) -> Result<Vec<PathBuf>, IndexError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(io_err(&dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && chunk::is_document(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where the index of `folder` lives under `cache` (kiln's `$KILN_HOME/index`): a directory
/// named after the folder and a hash of its full path, so two folders called `notes` differ.
pub fn index_dir_for(cache: &Path, folder: &Path) -> Result<PathBuf, IndexError> {
    let root = folder.canonicalize().map_err(io_err(folder))?;
    let name: String = root
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned())
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    // FNV-1a: stable across runs and builds (std's hasher is not).
    let hash = root
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    Ok(cache.join(format!("{name}-{hash:016x}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement() {
        let a = vec![(1, 9.0), (2, 5.0), (3, 1.0)];
        let b = vec![(2, 0.9), (4, 0.8), (1, 0.1)];
        let fused = fuse(&[a, b]);
        assert_eq!(fused[0].0, 2, "second in one list and first in the other beats first and third");
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn documents_skip_hidden_and_unknown_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("sub/.git")).unwrap();
        for f in ["a.md", "sub/b.txt", "sub/.git/c.txt", ".hidden.md", "image.png", "sub/page.HTML"] {
            fs::write(tmp.path().join(f), "x").unwrap();
        }
        let root = tmp.path().canonicalize().unwrap();
        let found: Vec<String> =
            documents(&root).unwrap().iter().map(|p| p.strip_prefix(&root).unwrap().display().to_string()).collect();
        assert_eq!(found, ["a.md", "sub/b.txt", "sub/page.HTML"]);
    }

    #[test]
    fn index_dirs_differ_for_folders_of_the_same_name() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["x/notes", "y/notes"] {
            fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let a = index_dir_for(Path::new("/cache"), &tmp.path().join("x/notes")).unwrap();
        let b = index_dir_for(Path::new("/cache"), &tmp.path().join("y/notes")).unwrap();
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("notes-"));
    }
}
