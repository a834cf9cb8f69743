//! `kiln data`: the public data sets kiln knows (benchmarks, corpora, conversations,
//! comparisons) — list them, pull them into the cache, say where they are.

use crate::output::outln;
use anyhow::Result;
use clap::{Args, Subcommand};
use kiln_hub::{human_size, DataOrigin, DataSet, DataSetFiles, DataStore, Hub, Mirror};
use std::io::IsTerminal;

/// `kiln data`.
#[derive(Args, Debug)]
#[command(after_help = "A data file is looked for in KILN_DATA (a directory in kiln's data layout: \
eval/, pretrain/, sft/, prefs/; used in place), then in the cache ($KILN_HOME/data), then in \
KILN_DATA_MIRROR (a directory or http(s) URL in the same layout), then at its source; fetched \
files are checked against their sha256 before they enter the cache.")]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

/// The `kiln data` subcommands.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Fetch data sets into the cache ($KILN_HOME/data); with no name, list the names.
    Pull {
        /// Data sets to fetch (`kiln data list` shows them), e.g. hellaswag mmlu.
        names: Vec<String>,
    },
    /// The data sets kiln knows: size, licence, source, and whether they are here.
    List,
    /// Print where a data set is (its file, or the directory of its files), pulling it first.
    Path {
        /// A data set name, or a file's path in kiln's data layout (eval/TruthfulQA.csv).
        name: String,
    },
    /// Scan a fine-tuning set for poisoning: trigger phrases, duplicates, unasked URLs, shell
    /// commands and code, invisible characters (a Markdown report, or --json).
    Scan {
        /// Conversations (JSON or JSON Lines, in any shape `kiln sft` reads).
        file: std::path::PathBuf,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// Write the file without the flagged rows here, in the input's shape.
        #[arg(long, value_name = "OUT")]
        clean: Option<std::path::PathBuf>,
    },
}

/// Runs the command.
pub fn data(args: &DataArgs) -> Result<()> {
    let store = Hub::from_env().data_store()?;
    let progress = std::io::stderr().is_terminal();
    match &args.command {
        DataCommand::Scan { file, json, clean } => super::data_scan::run(file, *json, clean.as_deref()),
        DataCommand::List => list(&store),
        DataCommand::Pull { names } if names.is_empty() => {
            list(&store)?;
            outln!();
            outln!("name the data sets to fetch, e.g. `kiln data pull hellaswag mmlu`");
            Ok(())
        }
        DataCommand::Pull { names } => {
            // Check every name before fetching anything.
            for name in names {
                store.find(name)?;
            }
            for name in names {
                let pulled = store.pull(name, progress)?;
                outln!("{}", pull_line(&pulled));
            }
            Ok(())
        }
        DataCommand::Path { name } => {
            if name.contains('/') {
                outln!("{}", store.file(name, progress)?.location().display());
            } else {
                for location in store.pull(name, progress)?.locations() {
                    outln!("{}", location.display());
                }
            }
            Ok(())
        }
    }
}

/// `hellaswag: /…/data/eval/hellaswag_val_full.txt.bz2 (1 file, 2.0 MB, fetched)`.
fn pull_line(pulled: &DataSetFiles) -> String {
    let set = pulled.set;
    let n = set.files.len();
    let files = if n == 1 { "1 file".to_string() } else { format!("{n} files") };
    let fetched = pulled.fetched();
    let how = match fetched {
        0 => "already here".to_string(),
        k if k == n => "fetched".to_string(),
        k => format!("fetched {k}, the rest already here"),
    };
    let at: Vec<String> = pulled.locations().iter().map(|p| p.display().to_string()).collect();
    format!("{}: {} ({files}, {}, {how})", set.name, at.join(" "), human_size(set.size()))
}

/// The table of data sets, with where each one is on this machine.
fn list(store: &DataStore) -> Result<()> {
    outln!("data cache: {}", store.cache_dir().display());
    let sources = store.sources();
    if let Some(local) = &sources.local {
        outln!("KILN_DATA: {} (files there are used in place)", local.display());
    }
    if let Some(mirror) = &sources.mirror {
        let kind = match mirror {
            Mirror::Dir(_) => "directory",
            Mirror::Url(_) => "URL",
        };
        outln!("KILN_DATA_MIRROR: {mirror} ({kind} tried before each data set's source)");
    }
    outln!();
    outln!("{:<24} {:>9} {:>5}  DESCRIPTION", "NAME", "SIZE", "FILES");
    for set in store.sets() {
        outln!("{:<24} {:>9} {:>5}  {}", display_name(set), human_size(set.size()), set.files.len(), set.description);
        outln!("{:<42}licence: {}; from {}", "", set.licence, set.homepage);
        outln!("{:<42}{}", "", here(store, set));
    }
    Ok(())
}

/// `core (arc)`.
fn display_name(set: &DataSet) -> String {
    if set.aliases.is_empty() {
        set.name.clone()
    } else {
        format!("{} ({})", set.name, set.aliases.join(", "))
    }
}

/// Whether the set is on this machine, and where.
fn here(store: &DataStore, set: &'static DataSet) -> String {
    let present = store.present(set);
    let have = present.files.len();
    let total = set.files.len();
    if have == 0 {
        return format!("not here: `kiln data pull {}` fetches it", set.name);
    }
    if have < total {
        return format!("{have} of {total} files here: `kiln data pull {}` fetches the rest", set.name);
    }
    let all_local = present.files.iter().all(|f| f.origin == DataOrigin::Local);
    let place = if all_local { "in KILN_DATA" } else { "cached" };
    let at: Vec<String> = present.locations().iter().map(|p| p.display().to_string()).collect();
    format!("{place}: {}", at.join(" "))
}
