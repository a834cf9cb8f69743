//! `kiln label`: a page for comparing two sampled answers per prompt (kiln-serve's `label`).

use crate::load::{load, LoadedModel};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_serve::label::{prompt_from_json, LabelOptions, LabelState, DEFAULT_INSTRUCTIONS};
use kiln_serve::ServedModel;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `kiln label`.
#[derive(Args, Debug)]
pub struct LabelArgs {
    #[command(flatten)]
    pub model: crate::args::ModelArgs,
    /// Prompts, JSON Lines or a JSON array: `{"prompt": text or messages}`, `{"messages": …}`
    /// (up to the last user turn) or Alpaca `{"instruction", "input"}`.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Comparisons go here as preference rows (`kiln dpo` and `kiln rm` read them); ties and
    /// both-bad verdicts go to `NAME.others.jsonl`, written answers to `NAME.better.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    /// Labeling instructions shown on the page (a text file; default: helpful, truthful, harmless).
    #[arg(long)]
    pub instructions: Option<PathBuf>,
    /// Most tokens per sampled answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature of both answers.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    /// Do not open a browser.
    #[arg(long)]
    pub no_open: bool,
}

/// Runs the command until Ctrl-C.
pub fn label(args: &LabelArgs) -> Result<()> {
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        bail!("--temp must be above 0: two greedy answers would be the same");
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let rows = kiln_text::conversation::read_rows(&args.prompts, prompt_from_json)
        .with_context(|| format!("cannot read {}", args.prompts.display()))?;
    if let Some(bad) = rows.bad.first() {
        bail!("{} {}: {}", args.prompts.display(), bad.location, bad.message);
    }
    if rows.rows.is_empty() {
        bail!("{}: no prompts", args.prompts.display());
    }
    let prompts: Vec<_> = rows.rows.into_iter().map(|(_, p)| p).collect();
    let instructions = match &args.instructions {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => DEFAULT_INSTRUCTIONS.to_string(),
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let lm = load(args.model.model.as_deref())?;
    let context = lm.context(args.model.ctx)?;
    let id = lm.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let LoadedModel { model, tokenizer, template, .. } = lm;
    let served = ServedModel {
        model: Arc::new(model),
        tokenizer: Arc::new(tokenizer),
        template,
        id,
        aliases: Vec::new(),
        embedding: None,
        assistant: None,
        guard: None,
        draft: None,
    };
    let options = LabelOptions {
        out: args.out.clone(),
        instructions,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        context,
    };
    let state = Arc::new(
        LabelState::new(served, prompts, options)
            .with_context(|| format!("cannot read the labels in {}", args.out.display()))?,
    );
    let (done, total) = state.progress();
    let runtime = super::serve::http_runtime()?;
    let open = !args.no_open;
    runtime
        .block_on(kiln_serve::serve_labeling(state, &args.host, args.port, |addr| {
            let url = format!("http://{addr}/");
            eprintln!("kiln label: {done} of {total} prompts labeled; comparisons go to {}", args.out.display());
            // Tests and scripts read this line for the port.
            eprintln!("labeling page at {url}");
            if open {
                // Best effort: without a desktop the URL above is the way in.
                let _ = std::process::Command::new("xdg-open")
                    .arg(&url)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
            }
        }))
        .with_context(|| format!("cannot serve on {}:{}", args.host, args.port))
}
