//! Parameters files other than GGUF, and [`open_model`], which picks the reader for a path:
//! a GGUF file, a Hugging Face directory (config.json + safetensors) or a llama2.c checkpoint.
//! Every reader hands its tensors to [`crate::loader::load_weights`] under GGUF names
//! ([`names`] is the one table between the naming schemes).
//!
//! The other direction, for training and export: [`f32`] reads any of them as f32 tensors in
//! Hugging Face's layout, [`hf_write`] writes a Hugging Face directory, [`gguf_from_hf`] turns
//! one into GGUF and [`gguf_export`] requantizes GGUF.

pub mod f32;
pub mod gguf_export;
pub mod gguf_from_hf;
pub mod hf_config;
pub mod hf_write;
pub mod llama2c;
pub mod names;
pub mod safetensors;

pub use self::safetensors::{load_hf_dir, SafetensorsSource};
pub use f32::{model_dir, F32Model, F32Tensor};
pub use gguf_from_hf::export_gguf;
pub use hf_config::{hf_config, parse_hf_config, HfConfig};
pub use hf_write::{write_hf_dir, TokenizerFiles};
pub use llama2c::load_llama2c;

use crate::{Model, ModelError};
use memmap2::Mmap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The parameters-file formats kiln reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// llama.cpp's GGUF (one file).
    Gguf,
    /// A Hugging Face directory: config.json and `*.safetensors`.
    HfDir,
    /// A llama2.c `.bin` checkpoint.
    Llama2c,
}

const SUPPORTED: &str = "kiln reads a GGUF file, a Hugging Face directory (config.json + *.safetensors) \
                         or a llama2.c .bin checkpoint";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.display().to_string(), source }
}

/// Maps `path` read-only.
pub(crate) fn map_file(path: &Path) -> Result<Mmap, ModelError> {
    let file = File::open(path).map_err(io_error(path))?;
    // SAFETY: the map is read-only; like every mmap-based loader (llama.cpp included) kiln
    // assumes the file is not truncated or rewritten while the model is loaded.
    unsafe { Mmap::map(&file) }.map_err(io_error(path))
}

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Format(format!("{}: not valid JSON: {e}", path.display())))
}

/// Which format `path` holds, judged by what it is (directory), its first bytes and its name.
pub fn detect_format(path: &Path) -> Result<ModelFormat, ModelError> {
    let meta = std::fs::metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        return Ok(ModelFormat::HfDir);
    }
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(io_error(path))?;
    let n = file.read(&mut magic).map_err(io_error(path))?;
    if n == 4 && &magic == b"GGUF" {
        return Ok(ModelFormat::Gguf);
    }
    if n == 4 && magic.starts_with(b"PK") {
        return Err(ModelError::Format(format!(
            "{}: a zip archive (a PyTorch checkpoint?); {SUPPORTED}",
            path.display()
        )));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name == "config.json" || name.ends_with(".safetensors") || name == "model.safetensors.index.json" {
        return Ok(ModelFormat::HfDir);
    }
    if name.ends_with(".bin") || (n == 4 && u32::from_le_bytes(magic) == 0x616b_3432) {
        return Ok(ModelFormat::Llama2c);
    }
    Err(ModelError::Format(format!("{}: not a model file kiln recognises; {SUPPORTED}", path.display())))
}

/// Opens the model at `path`, whatever its format: a directory is read as Hugging Face
/// (so is a file inside one: config.json or a `.safetensors` shard), a file starting with
/// `GGUF` as GGUF, and a `.bin` file as a llama2.c checkpoint.
pub fn open_model(path: &Path) -> Result<Model, ModelError> {
    match detect_format(path)? {
        ModelFormat::Gguf => Model::open_gguf(path),
        ModelFormat::Llama2c => load_llama2c(path),
        ModelFormat::HfDir if path.is_dir() => load_hf_dir(path),
        ModelFormat::HfDir => match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => load_hf_dir(dir),
            _ => load_hf_dir(Path::new(".")),
        },
    }
}
