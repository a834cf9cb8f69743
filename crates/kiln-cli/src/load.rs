//! Finding and opening a model: a path or a cache name becomes a model, its tokenizer and its
//! chat template.

use anyhow::{bail, Context, Result};
use kiln_gguf::GgufFile;
use kiln_hub::Hub;
use kiln_model::formats::{detect_format, open_model, ModelFormat};
use kiln_model::Model;
use kiln_text::{ChatTemplate, Tokenizer};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// A model with everything needed to talk to it.
pub struct LoadedModel {
    /// The weights and forward pass.
    pub model: Model,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template (own, or a family default).
    pub template: ChatTemplate,
    /// Where it was loaded from.
    pub path: PathBuf,
}

impl LoadedModel {
    /// A context length: the requested one, or the model's own capped at 4096.
    pub fn context(&self, requested: Option<usize>) -> Result<usize> {
        match requested {
            Some(0) => bail!("--ctx must be at least 1"),
            Some(n) => Ok(n),
            None => Ok(self.model.config.context_length.clamp(1, 4096)),
        }
    }
}

/// Resolves `arg` (path, name or default) to a file on disk, pulling a known model on first use.
pub fn resolve(arg: Option<&str>) -> Result<PathBuf> {
    let hub = Hub::from_env();
    let path = hub.resolve_model(arg, std::io::stderr().is_terminal())?;
    // A training run directory (`kiln train --out RUN`) keeps its latest weights in RUN/model.
    let inner = path.join("model");
    if path.is_dir() && !path.join("config.json").exists() && inner.join("config.json").is_file() {
        return Ok(inner);
    }
    Ok(path)
}

/// Opens the model named by `arg`.
pub fn load(arg: Option<&str>) -> Result<LoadedModel> {
    let path = resolve(arg)?;
    open(&path)
}

/// Opens a model file or directory: GGUF (tokenizer and template from its metadata), a
/// Hugging Face directory (tokenizer.json beside the weights), or a llama2.c checkpoint (a
/// tokenizer.json in the same directory).
pub fn open(path: &Path) -> Result<LoadedModel> {
    let context = || format!("cannot load {}", path.display());
    // detect_format's errors already name the file.
    match detect_format(path)? {
        ModelFormat::Gguf => {
            let file = GgufFile::open(path).with_context(context)?;
            let arch = file.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
            let tokenizer = Tokenizer::from_gguf(&file)
                .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
            let template = ChatTemplate::for_model(&tokenizer, &arch)?;
            let model = Model::from_gguf(file).with_context(context)?;
            Ok(LoadedModel { model, tokenizer, template, path: path.to_path_buf() })
        }
        format => {
            let model = open_model(path).with_context(context)?;
            let dir = if path.is_dir() {
                path.to_path_buf()
            } else {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            let tokenizer = if format == ModelFormat::HfDir || dir.join("tokenizer_config.json").is_file() {
                Tokenizer::from_dir(&dir)
            } else {
                Tokenizer::from_file(&dir.join("tokenizer.json"))
            }
            .with_context(|| {
                format!("{}: cannot load the tokenizer (kiln looks for tokenizer.json beside the model)", dir.display())
            })?;
            let template = ChatTemplate::for_model(&tokenizer, model.config.family.architecture())?;
            Ok(LoadedModel { model, tokenizer, template, path: path.to_path_buf() })
        }
    }
}
