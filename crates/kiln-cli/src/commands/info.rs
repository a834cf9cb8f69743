//! `kiln info`: what is inside a model file.

use crate::args::InfoArgs;
use crate::load::resolve;
use anyhow::{Context, Result};
use kiln_gguf::GgufFile;
use kiln_model::ModelConfig;
use kiln_text::Tokenizer;
use std::collections::BTreeMap;

/// Runs the command.
pub fn info(args: &InfoArgs) -> Result<()> {
    let path = resolve(args.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = |k: &str| file.get(k).map(|v| v.summary()).unwrap_or_else(|| "-".into());
    println!("file          {}", path.display());
    println!("format        GGUF v{}, {:.1} MiB, {} tensors, {} metadata entries", file.version, file.file_len() as f64 / (1 << 20) as f64, file.tensors.len(), file.metadata.len());
    println!("name          {}", meta("general.name"));
    println!("architecture  {}", meta("general.architecture"));
    match ModelConfig::from_gguf(&file) {
        Ok(c) => {
            let params: u64 = file.tensors.iter().map(|t| t.n_elements()).sum();
            println!("parameters    {:.1} M", params as f64 / 1e6);
            println!("layers        {}", c.n_layers);
            println!("width         {} (ffn {})", c.dim, c.ffn_dim);
            println!("heads         {} query, {} key/value, {} wide", c.n_heads, c.n_kv_heads, c.head_dim);
            println!("context       {}", c.context_length);
            println!("rope          base {}, {} dims, {:?}", c.rope_theta, c.rope_dim, c.rope_style);
            if let Some(w) = c.sliding_window {
                println!("sliding       window {w}, every {}th layer global (local base {})", c.sliding_pattern, c.rope_theta_local);
            }
            println!("norm eps      {}", c.rms_eps);
            println!("vocabulary    {}", c.vocab_size);
        }
        Err(e) => println!("config        cannot run: {e}"),
    }
    let mut types: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in &file.tensors {
        let e = types.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes() as u64;
    }
    let types: Vec<String> = types.iter().map(|(k, (n, b))| format!("{k} ×{n} ({:.1} MiB)", *b as f64 / (1 << 20) as f64)).collect();
    println!("tensor types  {}", types.join(", "));
    println!("file type     {}", meta("general.file_type"));
    match Tokenizer::from_gguf(&file) {
        Ok(tok) => {
            let piece = |id: Option<u32>| id.map(|i| format!("{i} {:?}", tok.id_to_piece(i).unwrap_or_default())).unwrap_or_else(|| "-".into());
            println!("tokenizer     {} (pre {}), {} tokens", meta("tokenizer.ggml.model"), meta("tokenizer.ggml.pre"), tok.vocab_size());
            println!("bos / eos     {} / {}", piece(tok.bos_id()), piece(tok.eos_id()));
            let eog: Vec<String> = tok.end_of_generation_ids().into_iter().map(|i| piece(Some(i))).collect();
            println!("stops at      {}", eog.join(", "));
            match tok.chat_template() {
                Some(t) => {
                    println!("chat template ({} chars)", t.len());
                    for line in t.lines().take(if args.all { usize::MAX } else { 12 }) {
                        println!("    {line}");
                    }
                }
                None => println!("chat template none in the file (kiln uses its built-in one for the family)"),
            }
        }
        Err(e) => println!("tokenizer     cannot build: {e}"),
    }
    if args.all {
        println!("\nmetadata:");
        for (k, v) in &file.metadata {
            println!("  {k} = {}", v.summary());
        }
        println!("\ntensors:");
        for t in &file.tensors {
            println!("  {:<40} {:<6} {:?}", t.name, t.ty.name(), t.dims);
        }
    }
    Ok(())
}
