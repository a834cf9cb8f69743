//! Tokenizers and chat templates for kiln.
//!
//! - [`Tokenizer`]: from a GGUF file's metadata (tokenizing exactly as llama.cpp does), or from a
//!   Hugging Face tokenizer.json / model directory. Wraps the `tokenizers` crate.
//! - [`TokenStream`]: detokenizing one token at a time without splitting characters.
//! - [`ChatTemplate`]: the model's Jinja chat template (or a built-in one), rendered as Hugging
//!   Face transformers renders it, also cut into trained and untrained [`Segment`]s for SFT.
//! - [`conversation`]: conversations and comparisons in the ecosystem's JSON shapes.
#![deny(missing_docs)]

pub mod bpe_train;
mod chat;
pub mod conversation;
mod error;
mod gguf_vocab;
mod gguf_write;
mod hf_config;
mod pretokenize;
mod special;
mod stream;
mod strftime;
mod tokenizer;
pub mod tool_calls;

pub use chat::{builtin_template, ChatMessage, ChatTemplate, Segment, CHATML};
pub use error::TextError;
pub use gguf_write::gguf_tokenizer_metadata;
pub use stream::TokenStream;
pub use tokenizer::Tokenizer;

/// The server and generation loop share these across threads.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Tokenizer>();
    is::<ChatTemplate>();
}
