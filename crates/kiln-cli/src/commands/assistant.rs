//! `kiln assistant create|list|show|rm`, and `--assistant NAME` on `run` and `chat`: a named
//! profile (model, instructions, tools, files, sampling) in `$KILN_HOME/assistants/`.

use crate::args::{given, SamplingArgs};
use crate::output::outln;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_assist::assistant::{Assistant, AssistantStore};
use kiln_hub::Hub;
use std::path::PathBuf;

/// `kiln assistant`.
#[derive(Args, Debug)]
pub struct AssistantArgs {
    #[command(subcommand)]
    pub command: AssistantCommand,
}

/// What to do with profiles.
#[derive(Subcommand, Debug)]
pub enum AssistantCommand {
    /// Save a profile: `kiln assistant create tutor --model smollm2 --instructions "…" --tools calc,files --files docs/`.
    Create(CreateArgs),
    /// The saved profiles.
    List,
    /// One profile, as stored.
    Show {
        /// Its name.
        name: String,
    },
    /// Delete a profile.
    Rm {
        /// Its name.
        name: String,
    },
}

/// `kiln assistant create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The name (lower-case letters, digits, '-', '_', '.').
    pub name: String,
    /// The model: a name (`kiln list`) or a path.
    #[arg(short, long)]
    pub model: Option<String>,
    /// The system message.
    #[arg(long)]
    pub instructions: Option<String>,
    /// Tools it may call, comma-separated (calc, python, browse, files).
    #[arg(long, value_delimiter = ',')]
    pub tools: Vec<String>,
    /// The folder the files tool searches.
    #[arg(long)]
    pub files: Option<PathBuf>,
    /// Sampling temperature.
    #[arg(long = "temp")]
    pub temperature: Option<f32>,
    /// Most tokens per answer.
    #[arg(short = 'n', long)]
    pub max_tokens: Option<usize>,
    /// Run it behind kiln guard wherever it is used (as --guard).
    #[arg(long)]
    pub guard: bool,
    /// Replace a profile of the same name.
    #[arg(long)]
    pub force: bool,
}

/// The profiles in `$KILN_HOME/assistants`.
pub fn store() -> AssistantStore {
    AssistantStore::new(Hub::from_env().root().join("assistants"))
}

/// Runs `kiln assistant …`.
pub fn assistant(args: &AssistantArgs) -> Result<()> {
    let store = store();
    match &args.command {
        AssistantCommand::Create(c) => {
            let toolbox_names = c.tools.iter().map(|t| t.trim()).filter(|t| !t.is_empty() && *t != "files");
            for name in toolbox_names {
                if kiln_assist::tools::builtin(name).is_none() {
                    bail!("unknown tool {name:?}: kiln's built-in tools are calc, python, browse, files");
                }
            }
            let files = match &c.files {
                Some(dir) => Some(dir.canonicalize().with_context(|| format!("--files {}", dir.display()))?),
                None => None,
            };
            if c.tools.iter().any(|t| t.trim() == "files") && files.is_none() {
                bail!("the files tool searches a folder: pass --files DIR");
            }
            if let Some(t) = c.temperature.filter(|t| !(0.0..=10.0).contains(t)) {
                bail!("--temp {t} is out of range (0 to 10)");
            }
            let a = Assistant {
                name: c.name.clone(),
                model: c.model.clone(),
                instructions: c.instructions.clone(),
                tools: c.tools.clone(),
                files,
                temperature: c.temperature,
                max_tokens: c.max_tokens,
                guard: c.guard,
            };
            let path = store.save(&a, c.force)?;
            outln!("saved {}", path.display());
        }
        AssistantCommand::List => {
            for name in store.names() {
                let a = store.load(&name)?;
                outln!(
                    "{name:<16} model {:<14} tools {}",
                    a.model.as_deref().unwrap_or("default"),
                    if a.tools.is_empty() { "-".to_string() } else { a.tools.join(",") }
                );
            }
        }
        AssistantCommand::Show { name } => outln!("{}", serde_json::to_string_pretty(&store.load(name)?)?),
        AssistantCommand::Rm { name } => {
            store.remove(name)?;
            outln!("removed {name}");
        }
    }
    Ok(())
}

/// What `--assistant NAME` fills in: the model, system message and tools unless the command
/// line gives them, and the profile's sampling unless `--temp` / `--max-tokens` are given.
pub fn apply(
    name: &str,
    model: &mut Option<String>,
    system: &mut Option<String>,
    sampling: &mut SamplingArgs,
    tools: &mut super::tool::ToolFlags,
    guard: &mut super::guard::GuardFlags,
) -> Result<()> {
    let a = store().load(name)?;
    guard.guard |= a.guard;
    if model.is_none() {
        model.clone_from(&a.model);
    }
    if system.is_none() {
        system.clone_from(&a.instructions);
    }
    if !tools.any() {
        tools.tools.clone_from(&a.tools);
        tools.files.clone_from(&a.files);
    }
    if let (Some(t), false) = (a.temperature, given("temperature")) {
        sampling.temperature = t;
    }
    if let (Some(n), false) = (a.max_tokens, given("max_tokens")) {
        sampling.max_tokens = n;
    }
    Ok(())
}
