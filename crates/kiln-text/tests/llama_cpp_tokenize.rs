//! Golden token ids from llama.cpp's `/tokenize` (recorded in
//! `tests/fixtures/reference/tokenize-<model>.json` at the workspace root): kiln's tokenizer, built
//! from the same GGUF, must produce exactly the same ids for every case.
//!
//! Fixture format: `{"cases": [{"text", "add_special", "parse_special", "ids"}]}`.

mod common;

use common::{TestModel, TokenizerOf, GEMMA3, SMOLLM2};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
struct Fixture {
    /// The GGUF file name the ids were recorded with.
    #[serde(default)]
    model: Option<String>,
    /// llama.cpp's version string.
    #[serde(default)]
    llama_cpp_version: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    text: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default = "yes")]
    parse_special: bool,
    ids: Vec<u32>,
}

fn yes() -> bool {
    true
}

/// `$KILN_TOKENIZE_FIXTURES` (a directory) overrides the default location.
fn fixture_path(name: &str) -> PathBuf {
    match std::env::var_os("KILN_TOKENIZE_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference").join(name),
    }
}

/// Compares every case of one fixture; fails listing each mismatch.
fn check(model: &'static TestModel, name: &str) {
    let path = fixture_path(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            kiln_test_models::skip(format!("llama.cpp fixture {} not readable ({e})", path.display()));
            return;
        }
    };
    let fixture: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let Some(model_path) = model.path() else { return };
    let Some(tok) = model.tokenizer() else { return };
    assert!(!fixture.cases.is_empty(), "{} has no cases", path.display());
    let file_name = model_path.file_name().map(|f| f.to_string_lossy().into_owned());
    if fixture.model.is_some() && fixture.model != file_name {
        eprintln!("note: {name} was recorded with {:?}, testing {}", fixture.model, model_path.display());
    }

    let mut failures = Vec::new();
    for (i, case) in fixture.cases.iter().enumerate() {
        let ours = match tok.encode_with(&case.text, case.add_special, case.parse_special) {
            Ok(ids) => ids,
            Err(e) => {
                failures.push(format!("case {i} {:?}: error {e}", case.text));
                continue;
            }
        };
        if ours != case.ids {
            let pieces = |ids: &[u32]| -> Vec<String> {
                ids.iter().map(|&id| format!("{id}:{}", tok.id_to_piece(id).unwrap_or_default())).collect()
            };
            failures.push(format!(
                "case {i} text={:?} add_special={} parse_special={}\n  llama.cpp: {:?}\n  kiln:      {:?}",
                case.text,
                case.add_special,
                case.parse_special,
                pieces(&case.ids),
                pieces(&ours)
            ));
        }
    }
    eprintln!(
        "{name}: {} of {} cases match llama.cpp ({})",
        fixture.cases.len() - failures.len(),
        fixture.cases.len(),
        fixture.llama_cpp_version.as_deref().unwrap_or("version not recorded")
    );
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn smollm2_matches_llama_cpp() {
    check(&SMOLLM2, "tokenize-smollm2.json");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check(&GEMMA3, "tokenize-gemma3.json");
}
