//! Finding the test models (never committed): an environment variable, else the machine's
//! model cache, else kiln's own cache. Tests skip, with a message, when a model is absent.
#![allow(dead_code)]

use kiln_text::Tokenizer;
use std::sync::OnceLock;

pub use kiln_test_models::{TestModel, GEMMA3, SMOLLM2};

/// Loads a test model's tokenizer once per test binary.
pub trait TokenizerOf {
    /// The model's tokenizer, or None when the model is absent.
    fn tokenizer(&'static self) -> Option<&'static Tokenizer>;
}

impl TokenizerOf for TestModel {
    /// The model's tokenizer, loaded once per test binary.
    fn tokenizer(&'static self) -> Option<&'static Tokenizer> {
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
