//! `kiln pull` and `kiln list`.

use crate::args::PullArgs;
use crate::output::outln;
use anyhow::Result;
use kiln_hub::{known_models, Hub};
use std::io::IsTerminal;

/// Fetches a model into the cache and prints its path.
pub fn pull(args: &PullArgs) -> Result<()> {
    if args.list {
        return list_known();
    }
    let hub = Hub::from_env();
    let path = hub.pull(args.name.as_deref(), std::io::stderr().is_terminal())?;
    outln!("{}", path.display());
    Ok(())
}

fn list_known() -> Result<()> {
    outln!("{:<16} {}", "NAME", "SOURCE");
    for m in known_models() {
        outln!("{:<16} {}", m.name, m.description);
    }
    Ok(())
}

/// Lists cached models and known names.
pub fn list() -> Result<()> {
    let hub = Hub::from_env();
    let cached = hub.cached();
    outln!("cache: {}", hub.models_dir().display());
    if cached.is_empty() {
        outln!("  (empty: `kiln pull` fetches the default model)");
    }
    for m in cached {
        outln!("  {}", m.path.display());
    }
    outln!();
    list_known()
}
