//! `kiln embed`, `kiln index` and `kiln search`: sentence embeddings, and retrieval over a
//! folder of the user's documents (the index lives in `$KILN_HOME/index/`).

use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_assist::retrieval::{index_dir_for, Index, SearchMode};
use kiln_hub::Hub;
use kiln_model::embed::Embedder;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The embedding model used when none is named.
pub const DEFAULT_EMBEDDING_MODEL: &str = "minilm";

/// `--embedding-model`.
#[derive(Args, Debug, Clone)]
pub struct EmbeddingModelArgs {
    /// The sentence-embedding model: a name (`minilm`) or a sentence-transformers / BERT directory.
    #[arg(long, default_value = DEFAULT_EMBEDDING_MODEL)]
    pub embedding_model: String,
}

impl EmbeddingModelArgs {
    /// Loads the model, pulling it on first use; returns it with the name an index records.
    pub fn load(&self) -> Result<(Embedder, String)> {
        let hub = Hub::from_env();
        let dir = hub.resolve_model(Some(&self.embedding_model), std::io::stderr().is_terminal())?;
        let embedder =
            Embedder::open(&dir).with_context(|| format!("cannot load the embedding model {}", dir.display()))?;
        let name = match kiln_hub::find_known(&self.embedding_model) {
            Some(k) => k.name.to_string(),
            None => dir.canonicalize().unwrap_or(dir).display().to_string(),
        };
        Ok((embedder, name))
    }
}

/// `kiln embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// The texts; one JSON array of numbers per text is printed, one per line.
    #[arg(required_unless_present = "file")]
    pub texts: Vec<String>,
    /// Read the texts from a file instead: one per line, or JSON Lines of strings.
    #[arg(short, long, conflicts_with = "texts")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub model: EmbeddingModelArgs,
}

/// `kiln index`.
#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The folder of documents (txt, md, rst, html); indexed again only where files changed.
    pub folder: PathBuf,
    #[command(flatten)]
    pub model: EmbeddingModelArgs,
}

/// `kiln search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The indexed folder.
    pub folder: PathBuf,
    /// What to look for.
    pub query: String,
    /// Passages to show.
    #[arg(short = 'k', long, default_value_t = 5)]
    pub top: usize,
    /// keyword (BM25), vector (embeddings) or hybrid (both, fused).
    #[arg(long, default_value = "hybrid")]
    pub mode: SearchMode,
    /// One JSON object per hit instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: EmbeddingModelArgs,
}

/// Runs `kiln embed`.
pub fn embed(args: &EmbedArgs) -> Result<()> {
    let from_file = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                    Ok(serde_json::Value::String(s)) => s,
                    _ => l.to_string(),
                })
                .collect()
        }
        None => Vec::new(),
    };
    let (embedder, _) = args.model.load()?;
    let texts: Vec<&str> = args.texts.iter().chain(&from_file).map(String::as_str).collect();
    for v in embedder.embed_all(&texts)? {
        outln!("{}", serde_json::to_string(&v)?);
    }
    Ok(())
}

/// The index directory of `folder` in kiln's cache.
fn index_dir(folder: &Path) -> Result<PathBuf> {
    if !folder.is_dir() {
        bail!("{} is not a folder", folder.display());
    }
    Ok(index_dir_for(&Hub::from_env().root().join("index"), folder)?)
}

/// Brings the index of `folder` up to date; progress on stderr.
pub fn update_index(folder: &Path, embedder: &Embedder, model: &str) -> Result<Index> {
    let dir = index_dir(folder)?;
    let started = std::time::Instant::now();
    let (index, report) = Index::update(folder, &dir, embedder, model, |file| eprintln!("indexing {file}"))?;
    for (file, why) in &report.skipped {
        eprintln!("skipped {file}: {why}");
    }
    eprintln!(
        "{}: {} passages; {} files added, {} changed, {} removed, {} unchanged ({:.1} s; index in {})",
        folder.display(),
        report.passages,
        report.added,
        report.changed,
        report.removed,
        report.unchanged,
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(index)
}

/// Runs `kiln index`.
pub fn index(args: &IndexArgs) -> Result<()> {
    index_dir(&args.folder)?; // a bad folder is reported before the model loads
    let (embedder, name) = args.model.load()?;
    update_index(&args.folder, &embedder, &name)?;
    Ok(())
}

/// Runs `kiln search`.
pub fn search(args: &SearchArgs) -> Result<()> {
    let dir = index_dir(&args.folder)?;
    let Some(index) = Index::load(&dir)? else {
        bail!("{} has no index yet: run `kiln index {}` first", args.folder.display(), args.folder.display());
    };
    let embedder = match args.mode {
        SearchMode::Keyword => None,
        _ => {
            let (embedder, name) = args.model.load()?;
            if name != index.model() {
                bail!(
                    "the index of {} was made with {}, not {name}: pass --embedding-model {} or index again",
                    args.folder.display(),
                    index.model(),
                    index.model()
                );
            }
            Some(embedder)
        }
    };
    for hit in index.search(&args.query, args.mode, args.top, embedder.as_ref())? {
        if args.json {
            outln!("{}", serde_json::to_string(&hit)?);
        } else {
            outln!("{}  ({:.3})", hit.location(), hit.score);
            for line in hit.text.lines() {
                outln!("    {line}");
            }
            outln!();
        }
    }
    Ok(())
}
