//! The `files` tool: hybrid search over an index of the user's documents; the model gets the
//! best passages, each headed by its file and lines so the answer can cite them.

use super::{cap_output, Tool, ToolError};
use crate::retrieval::{Index, SearchMode};
use kiln_model::embed::Embedder;
use serde_json::{json, Value};
use std::sync::Arc;

/// The most bytes of passages the model gets, by default.
pub const OUTPUT_CAP: usize = 6 * 1024;

/// Passages returned per call, by default.
pub const PASSAGES: usize = 4;

/// Search over one indexed folder.
pub struct Files {
    index: Index,
    embedder: Arc<Embedder>,
    passages: usize,
    output_cap: usize,
}

impl Files {
    /// The tool over `index`, whose vectors `embedder` made.
    pub fn new(index: Index, embedder: Arc<Embedder>) -> Files {
        Files { index, embedder, passages: PASSAGES, output_cap: OUTPUT_CAP }
    }
}

impl Tool for Files {
    fn name(&self) -> &str {
        "files"
    }

    fn returns_outside_text(&self) -> bool {
        true
    }

    fn description(&self) -> &str {
        "Searches the user's own documents and returns the most relevant passages, each with \
         its file and line numbers. Use it for any question about the user's notes or files, \
         and cite the file and lines in the answer."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "description": "What to look for, in words likely to appear in the passage, e.g. \"dentist appointment date\".",
                    "pattern": "^[^\\n]{1,300}$"
                }
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }

    fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        let query = arguments
            .get("query")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .ok_or_else(|| ToolError::Arguments("expected {\"query\": \"words to look for\"}".into()))?;
        let hits = self
            .index
            .search(query, SearchMode::Hybrid, self.passages, Some(&self.embedder))
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        if hits.is_empty() {
            return Ok(format!("no passage matches {query:?}"));
        }
        let text: Vec<String> = hits.iter().map(|h| format!("[{}]\n{}", h.location(), h.text)).collect();
        Ok(cap_output(&text.join("\n\n"), self.output_cap))
    }
}
