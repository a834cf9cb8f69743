//! `kiln tool`: runs one built-in tool directly, as the model would call it; and what `run`
//! and `chat` share for `--tools`: showing calls and asking before outside-world ones.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_assist::format::ToolCall;
use kiln_assist::{AgentEvent, Toolbox};
use std::io::{BufRead, IsTerminal, Write};

/// `kiln tool`.
#[derive(Args, Debug)]
pub struct ToolArgs {
    /// The tool (calc, python, browse; files needs --files: use `kiln search` to try it).
    pub name: String,
    /// Its arguments, a JSON object (`'{"expression": "2^64"}'`).
    pub arguments: String,
    /// Print the tool's description and argument schema instead of running it.
    #[arg(long)]
    pub describe: bool,
}

/// `--tools` and `--yes` for `run` and `chat`.
#[derive(Args, Debug, Clone, Default)]
pub struct ToolFlags {
    /// Tools the model may call, comma-separated (calc, python, browse, files).
    #[arg(long, value_delimiter = ',')]
    pub tools: Vec<String>,
    /// A folder of documents the `files` tool searches (indexed first, again only where it changed).
    #[arg(long)]
    pub files: Option<std::path::PathBuf>,
    /// The sentence-embedding model of the `files` index.
    #[arg(long, default_value = super::retrieve::DEFAULT_EMBEDDING_MODEL)]
    pub embedding_model: String,
    /// Run calls that touch the outside world (python, browse) without asking.
    #[arg(long)]
    pub yes: bool,
    /// The most model turns per answer (tool calls happen between them).
    #[arg(long, default_value_t = 6)]
    pub max_steps: usize,
    /// Whether the model must call a tool in its first turn: auto (it decides) or required.
    #[arg(long, default_value = "auto", value_parser = ["auto", "required"])]
    pub tool_choice: String,
}

impl ToolFlags {
    /// Whether any tool is asked for.
    pub fn any(&self) -> bool {
        !self.tools.is_empty() || self.files.is_some()
    }

    /// The toolbox these flags ask for: the built-in tools by name, and `files` over the folder
    /// of `--files` (which implies it).
    pub fn toolbox(&self) -> Result<Toolbox> {
        let wants_files = self.files.is_some() || self.tools.iter().any(|t| t.trim() == "files");
        let builtin: Vec<String> = self.tools.iter().filter(|t| t.trim() != "files").cloned().collect();
        let mut toolbox = Toolbox::builtin(&builtin).map_err(anyhow::Error::msg)?;
        if wants_files {
            let Some(folder) = &self.files else {
                bail!("the files tool searches a folder: pass --files DIR");
            };
            if !folder.is_dir() {
                bail!("--files {}: not a folder", folder.display());
            }
            let model = super::retrieve::EmbeddingModelArgs { embedding_model: self.embedding_model.clone() };
            let (embedder, name) = model.load()?;
            let index = super::retrieve::update_index(folder, &embedder, &name)?;
            toolbox.push(Box::new(kiln_assist::tools::files::Files::new(index, std::sync::Arc::new(embedder))));
        }
        Ok(toolbox)
    }
}

/// Runs the command.
pub fn tool(args: &ToolArgs) -> Result<()> {
    let toolbox = Toolbox::builtin(std::slice::from_ref(&args.name)).map_err(anyhow::Error::msg)?;
    if args.describe {
        let spec = &toolbox.specs()[0];
        println!("{}\n{}", spec.description, serde_json::to_string_pretty(&spec.parameters)?);
        return Ok(());
    }
    serde_json::from_str::<serde_json::Value>(&args.arguments)
        .with_context(|| format!("the arguments are not JSON: {}", args.arguments))?;
    let call = ToolCall { id: "call_cli".into(), name: args.name.clone(), arguments: args.arguments.clone() };
    match toolbox.run(&call) {
        Ok(out) => {
            println!("{out}");
            Ok(())
        }
        Err(e) => bail!("{}: {e}", args.name),
    }
}

/// Shows an agent's events: text on stdout, calls and results on stderr.
pub fn show_event(event: AgentEvent, out: &mut crate::output::Stdout) -> Result<()> {
    match event {
        AgentEvent::Text(t) => {
            out.write(t)?;
        }
        AgentEvent::Call(c) => {
            eprintln!("\n→ {}({})", c.name, c.arguments);
        }
        AgentEvent::Result { output, ok, .. } => {
            let mark = if ok { "←" } else { "← (failed)" };
            let shown: String = output.chars().take(400).collect();
            let more = if shown.len() < output.len() { " …" } else { "" };
            eprintln!("{mark} {}{more}", shown.replace('\n', "\n  "));
        }
    }
    Ok(())
}

/// Asks on the terminal before a call that touches the outside world; without a terminal
/// (or with anything but yes) the call is declined.
pub fn approve(call: &ToolCall, yes: bool) -> bool {
    if yes {
        return true;
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("(declined {}: it touches the outside world; pass --yes to allow it)", call.name);
        return false;
    }
    eprint!("run {} {}? [y/N] ", call.name, call.arguments);
    std::io::stderr().flush().ok();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes")
}
