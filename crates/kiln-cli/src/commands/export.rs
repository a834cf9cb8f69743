//! `kiln export`: a trained model (a run directory or a Hugging Face directory) as GGUF, or as
//! a standalone Hugging Face directory, which a llama GGUF can also be written as (dequantized
//! to f32, what fine-tuning starts from) ([`kiln_train::export`] does the work).

use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_gguf::GgmlType;
use kiln_model::formats::gguf_export::export_types;
use std::path::{Path, PathBuf};

/// `kiln export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run directory (its model/) or a Hugging Face llama directory; with --format hf also a
    /// llama GGUF file (dequantized to f32).
    #[arg(short, long)]
    pub model: PathBuf,
    /// Output format: gguf or hf.
    #[arg(long, default_value = "gguf")]
    pub format: String,
    /// GGUF weight type: f32, f16, q8_0, q4_0 (or any type `kiln quantize` writes).
    #[arg(long = "type", value_name = "TYPE", default_value = "f16")]
    pub ty: String,
    /// The file (gguf) or directory (hf) to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Runs the command.
pub fn export(args: &ExportArgs) -> Result<()> {
    if args.model.is_file() {
        if args.format != "hf" {
            bail!(
                "--model {}: a GGUF file is exported with --format hf (to requantize it, use kiln quantize)",
                args.model.display()
            );
        }
        let base = kiln_train::finetune::load_base(&args.model)
            .with_context(|| format!("cannot load {}", args.model.display()))?;
        kiln_train::finetune::write_hf(&base, &base.tensors, &args.out)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        outln!(
            "wrote {} (Hugging Face layout, f32, {} tensors)",
            args.out.display(),
            base.tensors.len()
        );
        return Ok(());
    }
    let dir = kiln_train::export::model_dir(&args.model)?;
    match args.format.as_str() {
        "gguf" => {
            let ty = match GgmlType::from_name(&args.ty) {
                Some(t) if export_types().any(|e| e == t) => t,
                _ => bail!(
                    "--type {}: kiln writes {}",
                    args.ty,
                    export_types()
                        .map(|t| t.name().to_lowercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let report = kiln_model::threads::pool()
                .install(|| kiln_train::export::export_gguf(&dir, ty, &args.out, |_, _| {}))
                .with_context(|| {
                    format!("cannot export {} to {}", dir.display(), args.out.display())
                })?;
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
        "hf" => {
            copy_dir(&dir, &args.out)?;
            outln!("wrote {} (Hugging Face layout)", args.out.display());
        }
        other => bail!("--format {other}: use gguf or hf"),
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
