//! GGUF, llama.cpp's parameters-file format: a checked reader over mmap and a writer.
#![deny(missing_docs)]

mod reader;
mod types;
mod value;
mod writer;

pub use reader::{release_pages, GgufError, GgufFile, TensorInfo};
pub use types::GgmlType;
pub use value::Value;
pub use writer::{GgufWriter, TensorData};

#[cfg(test)]
mod tests;
