//! kiln-eval: measuring a model the way the field does.
//!
//! - [`score`]: log-likelihood of continuations after a shared context (the
//!   lm-evaluation-harness method), reusing the context's KV cache across choices and items.
//! - [`tasks`]: HellaSwag (llama-perplexity's method), MMLU, ARC, TruthfulQA MC1, GSM8K,
//!   HumanEval, perplexity / bits-per-byte of a file, and user regression suites.
//! - [`stats`]: accuracy with a Wilson 95 % interval.
//! - [`results`]: the `--out` JSON; [`report`]: the Markdown report card over training runs.
#![deny(missing_docs)]

pub mod data;
mod error;
pub mod report;
mod report_render;
pub mod results;
pub mod rng;
pub mod score;
pub mod stats;
pub mod tasks;

pub use error::EvalError;
pub use results::{EvalResults, Metric, TaskResult};
pub use score::Scorer;
pub use stats::Proportion;
