//! Why an evaluation could not run.

use kiln_generate::GenerateError;
use kiln_model::ModelError;
use kiln_text::TextError;

/// Everything that can stop an evaluation, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A data or results file could not be read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The cause (shown in the message, so not chained again as a source).
        err: std::io::Error,
    },
    /// A data file has a malformed line or row.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line (or row) number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// `--task` names a task kiln does not know.
    #[error("unknown task {0:?}: kiln knows hellaswag, mmlu, mmlu0, mmlu_cloze, arc, arc_easy, arc_challenge, truthfulqa, gsm8k, humaneval and ppl:FILE")]
    UnknownTask(String),
    /// The data directory does not hold a task's files.
    #[error("{path} not found: {hint}")]
    MissingData {
        /// The missing path.
        path: String,
        /// How to fix it.
        hint: String,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The tokenizer or chat template failed.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Generation failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// Anything else, said in one line.
    #[error("{0}")]
    Other(String),
}

impl EvalError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> EvalError {
        EvalError::Io { path: path.display().to_string(), err: source }
    }

    /// A parse error at `line` of `path`.
    pub fn parse(path: &std::path::Path, line: usize, msg: impl Into<String>) -> EvalError {
        EvalError::Parse { path: path.display().to_string(), line, msg: msg.into() }
    }
}
