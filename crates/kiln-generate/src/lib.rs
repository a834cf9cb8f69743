//! kiln-generate: sampling, stop rules, the generation loop over a [`kiln_model::Model`], and
//! the continuous-batching scheduler that serves many requests at once, and N samples of one
//! prompt with an answer chosen among them.
#![deny(missing_docs)]

pub mod constraint;
pub mod generate;
pub mod sampler;
pub mod scheduler;
pub mod speculate;
pub mod think;

pub use constraint::{Constraint, ConstraintError, Grammar, GrammarCompiler};
pub use generate::{Decoder, FinishReason, GenerateError, GenerateOptions, Generation, Session, TokenEvent};
pub use sampler::{logprobs, Sampler, SamplingParams, TokenLogprob};
pub use scheduler::{Draft, Event, Job, Metrics, Scheduler, SchedulerConfig, SubmitError, Summary};
pub use speculate::SpeculationStats;
pub use think::{Budget, Samples, ThinkError, Vote};
