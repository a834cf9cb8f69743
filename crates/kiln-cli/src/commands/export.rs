//! `kiln export`: a trained model (a run directory or a Hugging Face directory) as GGUF, or as
//! a standalone Hugging Face directory, which a llama GGUF can also be written as (dequantized
//! to f32, what fine-tuning starts from) ([`kiln_train::export`] does the work).

use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_gguf::GgmlType;
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
    /// A run directory (its model/) or a Hugging Face llama directory; with --format hf also a
    /// llama GGUF file (dequantized to f32).
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
        let base = kiln_train::finetune::load_base(&args.model)
            .with_context(|| format!("cannot load {}", args.model.display()))?;
        kiln_train::finetune::write_hf(&base, &base.tensors, &args.out)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        outln!("wrote {} (Hugging Face layout, f32, {} tensors)", args.out.display(), base.tensors.len());
        return Ok(());
    }
    let dir = kiln_train::export::model_dir(&args.model)?;
    match args.format {
        ExportFormat::Gguf => {
            let ty = args.ty;
            let report = kiln_model::threads::pool()
                .install(|| kiln_train::export::export_gguf(&dir, ty, &args.out, |_, _| {}))
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
