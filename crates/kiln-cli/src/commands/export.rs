//! `kiln export`: a trained model (a run directory or a Hugging Face directory) as GGUF, or as
//! a standalone Hugging Face directory, which a GGUF can also be written as (dequantized
//! to f32, what fine-tuning starts from). The formats are kiln-model's
//! ([`kiln_model::formats`]) and the tokenizer entries kiln-text's: no trainer involved.

use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_gguf::GgmlType;
use kiln_model::formats::{write_hf_dir, F32Model, TokenizerFiles};
use std::path::{Path, PathBuf};

/// What `kiln export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One GGUF file (llama.cpp, kiln).
    Gguf,
    /// A Hugging Face directory: config.json, model.safetensors, tokenizer files.
    Hf,
}

/// `kiln export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run directory (its model/) or a Hugging Face directory; with --format hf also a GGUF
    /// file (dequantized to f32). Any family kiln runs.
    #[arg(short, long)]
    pub model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Gguf)]
    pub format: ExportFormat,
    /// GGUF weight type (any type `kiln quantize` writes).
    #[arg(long = "type", value_name = "TYPE", default_value = "F16", ignore_case = true, value_parser = crate::args::weight_type())]
    pub ty: GgmlType,
    /// The file (gguf) or directory (hf) to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Runs the command.
pub fn export(args: &ExportArgs) -> Result<()> {
    if args.model.is_file() {
        if args.format != ExportFormat::Hf {
            bail!(
                "--model {}: a GGUF file is exported with --format hf (to requantize it, use kiln quantize)",
                args.model.display()
            );
        }
        let load = || -> Result<_> {
            let file = kiln_model::GgufFile::open(&args.model)?;
            let tok = kiln_text::Tokenizer::from_gguf(&file)?;
            Ok((kiln_model::formats::f32::read_gguf_f32(file)?, tok))
        };
        let (model, tok) = load().with_context(|| format!("cannot load {}", args.model.display()))?;
        write_hf(&model, &tok, &args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
        outln!("wrote {} (Hugging Face layout, f32, {} tensors)", args.out.display(), model.tensors.len());
        return Ok(());
    }
    let dir = kiln_model::formats::model_dir(&args.model)?;
    match args.format {
        ExportFormat::Gguf => {
            let ty = args.ty;
            let report = kiln_model::threads::pool()
                .install(|| -> Result<_> {
                    let tokenizer = kiln_text::gguf_tokenizer_metadata(&dir)?;
                    Ok(kiln_model::formats::export_gguf(&dir, ty, &args.out, &tokenizer, |_, _| {})?)
                })
                .with_context(|| format!("cannot export {} to {}", dir.display(), args.out.display()))?;
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            outln!(
                "wrote {} ({ty}, {} tensors, {:.2} MB)",
                args.out.display(),
                report.tensors.len(),
                report.bytes_out as f64 / 1e6
            );
        }
        ExportFormat::Hf => {
            copy_dir(&dir, &args.out)?;
            outln!("wrote {} (Hugging Face layout)", args.out.display());
        }
    }
    Ok(())
}

/// Writes `model` with the tokenizer `tok` as a Hugging Face directory at `out`.
fn write_hf(model: &F32Model, tok: &kiln_text::Tokenizer, out: &Path) -> Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let tok_dir = out.with_file_name(format!(".{name}.tokenizer{}", std::process::id()));
    let written = tok.save_hf_files(&tok_dir).map_err(anyhow::Error::from).and_then(|()| {
        let files = TokenizerFiles { dir: &tok_dir, chat_template: None, bos: tok.bos_id(), eos: tok.eos_id() };
        Ok(write_hf_dir(out, &model.tensors, &model.config, model.tied, &files)?)
    });
    let _ = std::fs::remove_dir_all(&tok_dir);
    written
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
