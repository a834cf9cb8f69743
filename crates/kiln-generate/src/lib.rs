//! kiln-generate: sampling, stop rules and the generation loop over a [`kiln_model::Model`].
#![deny(missing_docs)]

pub mod generate;
pub mod sampler;

pub use generate::{FinishReason, GenerateError, GenerateOptions, Generation, Session, TokenEvent};
pub use sampler::{logprobs, Sampler, SamplingParams, TokenLogprob};
