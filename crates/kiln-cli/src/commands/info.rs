//! `kiln info`: what is inside a model file.

use crate::args::InfoArgs;
use crate::load::resolve;
use crate::output::outln;
use anyhow::{Context, Result};
use kiln_gguf::GgufFile;
use kiln_model::formats::{detect_format, ModelFormat};
use kiln_model::ModelConfig;
use kiln_text::Tokenizer;
use std::collections::BTreeMap;

/// Runs the command.
pub fn info(args: &InfoArgs) -> Result<()> {
    let path = resolve(args.model.as_deref())?;
    if detect_format(&path)? != ModelFormat::Gguf {
        return info_other(&path);
    }
    let file = GgufFile::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = |k: &str| file.get(k).map(|v| v.summary()).unwrap_or_else(|| "-".into());
    outln!("file          {}", path.display());
    outln!(
        "format        GGUF v{}, {:.1} MiB, {} tensors, {} metadata entries",
        file.version,
        file.file_len() as f64 / (1 << 20) as f64,
        file.tensors.len(),
        file.metadata.len()
    );
    outln!("name          {}", meta("general.name"));
    outln!("architecture  {}", meta("general.architecture"));
    match ModelConfig::from_gguf(&file) {
        Ok(c) => {
            let params: u64 = file.tensors.iter().map(|t| t.n_elements()).sum();
            outln!("parameters    {:.1} M", params as f64 / 1e6);
            print_config(&c);
        }
        Err(e) => outln!("config        cannot run: {e}"),
    }
    let mut types: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in &file.tensors {
        let e = types.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes() as u64;
    }
    let types: Vec<String> =
        types.iter().map(|(k, (n, b))| format!("{k} ×{n} ({:.1} MiB)", *b as f64 / (1 << 20) as f64)).collect();
    outln!("tensor types  {}", types.join(", "));
    outln!("file type     {}", meta("general.file_type"));
    match Tokenizer::from_gguf(&file) {
        Ok(tok) => {
            let piece = |id: Option<u32>| {
                id.map(|i| format!("{i} {:?}", tok.id_to_piece(i).unwrap_or_default())).unwrap_or_else(|| "-".into())
            };
            outln!(
                "tokenizer     {} (pre {}), {} tokens",
                meta("tokenizer.ggml.model"),
                meta("tokenizer.ggml.pre"),
                tok.vocab_size()
            );
            outln!("bos / eos     {} / {}", piece(tok.bos_id()), piece(tok.eos_id()));
            let eog: Vec<String> = tok.end_of_generation_ids().into_iter().map(|i| piece(Some(i))).collect();
            outln!("stops at      {}", eog.join(", "));
            match tok.chat_template() {
                Some(t) => {
                    outln!("chat template ({} chars)", t.len());
                    for line in t.lines().take(if args.all { usize::MAX } else { 12 }) {
                        outln!("    {line}");
                    }
                }
                None => outln!("chat template none in the file (kiln uses its built-in one for the family)"),
            }
        }
        Err(e) => outln!("tokenizer     cannot build: {e}"),
    }
    if args.all {
        outln!("\nmetadata:");
        for (k, v) in &file.metadata {
            outln!("  {k} = {}", v.summary());
        }
        outln!("\ntensors:");
        for t in &file.tensors {
            outln!("  {:<40} {:<6} {:?}", t.name, t.ty.name(), t.dims);
        }
    }
    Ok(())
}

/// The hyper-parameters, as every format shows them.
fn print_config(c: &ModelConfig) {
    outln!("layers        {}", c.n_layers);
    outln!("width         {} (ffn {})", c.dim, c.ffn_dim);
    outln!("heads         {} query, {} key/value, {} wide", c.n_heads, c.n_kv_heads, c.head_dim);
    outln!("context       {}", c.context_length);
    outln!("rope          base {}, {} dims, {:?}", c.rope_theta, c.rope_dim, c.rope_style);
    if let Some(w) = c.sliding_window {
        outln!(
            "sliding       window {w}, every {}th layer global (local base {})",
            c.sliding_pattern,
            c.rope_theta_local
        );
    }
    outln!("norm eps      {}", c.rms_eps);
    outln!("vocabulary    {}", c.vocab_size);
}

/// A Hugging Face directory or llama2.c checkpoint: what the loader makes of it.
fn info_other(path: &std::path::Path) -> Result<()> {
    let lm = crate::load::open(path)?;
    let w = &lm.model.weights;
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    let matrices = w.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
    for m in matrices.chain([&w.token_embd, &w.output]) {
        *types.entry(m.ty.name()).or_default() += 1;
    }
    outln!("file          {}", path.display());
    outln!("format        {:?}", detect_format(path)?);
    outln!("architecture  {}", lm.model.config.family.architecture());
    print_config(&lm.model.config);
    let types: Vec<String> = types.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    outln!("matrix types  {}", types.join(", "));
    outln!("tokenizer     {} tokens", lm.tokenizer.vocab_size());
    outln!(
        "chat template {}",
        if lm.tokenizer.chat_template().is_some() { "the model's own" } else { "built-in for the family" }
    );
    Ok(())
}
