//! The tool interface and the built-in tools.

pub mod browse;
pub mod calc;
pub mod files;
pub mod python;

use serde_json::Value;

/// Why a tool call failed. The message is shown to the model as the tool's result, so it
/// says what was wrong in words a model (and a person) can act on.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool's schema or make no sense.
    #[error("bad arguments: {0}")]
    Arguments(String),
    /// The tool ran past its time limit and was stopped.
    #[error("stopped after {0} s (time limit)")]
    TimedOut(u64),
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
}

/// A tool the model can call.
pub trait Tool: Send + Sync {
    /// The name the model calls it by.
    fn name(&self) -> &str;
    /// One or two sentences for the model: what it does and when to use it.
    fn description(&self) -> &str;
    /// The JSON schema of its arguments (an object).
    fn parameters(&self) -> Value;
    /// Whether it touches the world outside kiln (runs code, reaches the network); such
    /// tools ask the user before each call unless told not to.
    fn touches_outside_world(&self) -> bool {
        false
    }
    /// Whether its output is text from outside (pages, files, a program's output) that may
    /// carry instructions: under a guard it is datamarked, and calls copying from it are refused.
    fn returns_outside_text(&self) -> bool {
        self.touches_outside_world()
    }
    /// Runs the tool; the result is text for the model, at most the tool's output cap.
    fn call(&self, arguments: &Value) -> Result<String, ToolError>;
}

/// The built-in tools kiln knows, by name.
pub const BUILTIN: &[&str] = &["calc", "python", "browse"];

/// A built-in tool by name.
pub fn builtin(name: &str) -> Option<Box<dyn Tool>> {
    match name {
        "calc" => Some(Box::new(calc::Calc::default())),
        "python" => Some(Box::new(python::Python::default())),
        "browse" => Some(Box::new(browse::Browse::default())),
        _ => None,
    }
}

/// A tool as the model sees it.
pub fn spec_of(tool: &dyn Tool) -> crate::format::ToolSpec {
    crate::format::ToolSpec {
        name: tool.name().into(),
        description: tool.description().into(),
        parameters: tool.parameters(),
    }
}

/// Cuts `text` to at most `cap` bytes (on a character boundary), saying how much was cut.
pub fn cap_output(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    let cut = (0..=cap).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}\n[… {} more bytes cut]", &text[..cut], text.len() - cut)
}
