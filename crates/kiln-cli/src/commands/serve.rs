//! `kiln serve`: the OpenAI-compatible server and chat page (kiln-serve) over one model.

use crate::load::{load, LoadedModel};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_serve::{ServeOptions, ServedModel};
use std::path::Path;
use std::sync::Arc;

/// Flags of `kiln serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: crate::args::ModelArgs,
    /// Address to listen on; loopback by default, so nothing outside this machine can reach it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests decoded together at most (each with its own KV cache of --ctx positions).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests waiting for a slot at most; beyond that the server answers 503.
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on the API (also read from KILN_API_KEY).
    #[arg(long, env = "KILN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Also serve a sentence-embedding model at /v1/embeddings (`minilm`, or a
    /// sentence-transformers directory); requests name it by its cache name or directory name.
    #[arg(long)]
    pub embedding_model: Option<String>,
    /// Also serve a saved assistant (kiln assistant create) under its own name: its
    /// instructions and its tools, run here, with the model of -m or else its own.
    #[arg(long)]
    pub assistant: Option<String>,
    #[command(flatten)]
    pub guard: super::guard::GuardFlags,
    /// `--lookup N`: the prompt lookup requests get unless they say (`"lookup": N`);
    /// `--draft MODEL` / `--draft-layers N`: a draft model for every request (`"draft_max": 0`
    /// turns it off for one).
    #[command(flatten)]
    pub speculate: super::speculate::SpeculateFlags,
}

/// Runs the command until Ctrl-C.
pub fn serve(args: &ServeArgs) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    args.speculate.validate()?;
    let profile = args.assistant.as_deref().map(|name| super::assistant::store().load(name)).transpose()?;
    let model_arg = args.model.model.clone().or_else(|| profile.as_ref().and_then(|p| p.model.clone()));
    let lm = load(model_arg.as_deref())?;
    let context = lm.context(args.model.ctx)?;
    if context < 2 {
        bail!("--ctx must be at least 2 to serve");
    }
    let assistant = match profile {
        Some(p) => {
            let flags = super::tool::ToolFlags {
                tools: p.tools.clone(),
                files: p.files.clone(),
                embedding_model: super::retrieve::DEFAULT_EMBEDDING_MODEL.into(),
                ..Default::default()
            };
            let toolbox = flags.toolbox()?;
            Some(kiln_serve::assistant::ServedAssistant {
                id: p.name.clone(),
                instructions: p.instructions.clone(),
                toolbox: Arc::new(toolbox),
                temperature: p.temperature,
                max_steps: 6,
                guard: if p.guard { Some(Arc::new(super::guard::load_guard(&args.guard.model, false)?)) } else { None },
            })
        }
        None => None,
    };
    let (id, aliases) = names(model_arg.as_deref(), &lm.path);
    let embedding = match &args.embedding_model {
        Some(name) => {
            let model = super::retrieve::EmbeddingModelArgs { embedding_model: name.clone() };
            let (embedder, _) = model.load()?;
            let (id, aliases) = match kiln_hub::find_known(name) {
                Some(k) => (k.name.to_string(), k.aliases.iter().map(|a| a.to_string()).collect()),
                None => names(Some(name), Path::new(name)),
            };
            Some(kiln_serve::EmbeddingModel { id, aliases, embedder: Arc::new(embedder) })
        }
        None => None,
    };
    let draft = args
        .speculate
        .load_draft(&lm)?
        .map(|model| kiln_generate::Draft { model: Arc::new(model), max: args.speculate.draft_max });
    let LoadedModel { model, tokenizer, template, .. } = lm;
    let served = ServedModel {
        model: Arc::new(model),
        tokenizer: Arc::new(tokenizer),
        template,
        id: id.clone(),
        aliases,
        embedding,
        assistant,
        guard: args.guard.load()?.map(Arc::new),
        draft,
    };
    let options = ServeOptions {
        host: args.host.clone(),
        port: args.port,
        parallel: args.parallel,
        queue: args.queue,
        context,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        lookup: args.speculate.lookup.unwrap_or(0),
    };
    let runtime = http_runtime()?;
    let (parallel, queue) = (args.parallel, args.queue);
    runtime
        .block_on(kiln_serve::serve(served, options, |addr| {
            // Tests and scripts read this line for the port.
            eprintln!("kiln serve: model {id}, {parallel} slots × {context} positions, queue {queue}");
            eprintln!("listening on http://{addr} (chat page at /, API at /v1)");
        }))
        .with_context(|| format!("cannot serve on {}:{}", args.host, args.port))
}

/// The async runtime of the HTTP servers (`kiln serve`, `kiln label`): two threads, as the
/// model work runs on its own threads.
pub fn http_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kiln-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The model's name in the API, and the other names accepted for it.
fn names(arg: Option<&str>, path: &Path) -> (String, Vec<String>) {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = path.file_stem().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let id = match arg {
        Some(a) if !Path::new(a).exists() => a.to_string(),
        _ => stem.clone(),
    };
    let mut aliases = vec![file, stem];
    if let Some(a) = arg {
        aliases.push(a.to_string());
    }
    aliases.retain(|a| !a.is_empty() && *a != id);
    aliases.dedup();
    (id, aliases)
}
