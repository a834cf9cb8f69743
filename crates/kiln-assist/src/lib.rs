//! kiln-assist: the model as the kernel of an operating system. The context window is its
//! working memory; tools are its peripherals.
//!
//! - [`tools`]: the [`Tool`] interface and the built-in tools (`calc`, `python`), each with a
//!   JSON schema, a time limit and a cap on its output.
//! - [`agent`]: the loop (model → calls → results → model) over a [`agent::Toolbox`].
//! - [`format`](mod@format): tool definitions, calls and results as prompt text (Hermes' format), the
//!   grammar calls are decoded under, and reading calls back from output, whole or streamed.
//! - [`assistant`]: named profiles (model, instructions, tools, files, sampling).
//! - [`retrieval`]: an index of the user's documents on disk, searched by keyword, vector or
//!   both; the `files` tool answers from it with file and line.
//! - [`verify`]: choosing one of N sampled answers: a vote, the calculator's check of the
//!   working, or a reward model's score.
//! - [`sandbox`]: untrusted code runs in a child process with its own namespaces and limits
//!   (the `python` tool and kiln-eval's HumanEval both use it).
#![deny(missing_docs)]

pub mod agent;
pub mod assistant;
pub mod format;
pub mod retrieval;
pub mod sandbox;
pub mod tools;
pub mod verify;

pub use agent::{Agent, AgentEvent, AgentOutcome, Toolbox};
pub use tools::{Tool, ToolError};
