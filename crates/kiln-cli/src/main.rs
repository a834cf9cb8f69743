//! The `kiln` command: one subcommand per stage, each a thin layer over the library crates.

mod args;
mod commands;
mod load;
mod output;

use anyhow::Result;
use args::{Cli, Command};

fn main() {
    let cli = args::parse();
    // `kiln guard check` exits 1 when it flags, so its errors take 2.
    let error_status = if matches!(&cli.command, Command::Guard(g) if matches!(g.command, commands::guard::GuardCommand::Check(_)))
    {
        2
    } else {
        1
    };
    match run(cli) {
        Ok(Outcome::Flagged) => std::process::exit(1),
        Ok(Outcome::Done) => {}
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::exit(error_status);
        }
    }
}

/// The error and its causes on one line. Many library errors already quote their cause in
/// their own message (`{path}: {source}`); such a cause is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

/// How a command ended when it did not fail.
enum Outcome {
    Done,
    /// `kiln guard check` flagged its text: exit status 1.
    Flagged,
}

fn run(cli: Cli) -> Result<Outcome> {
    let threads = cli.threads.unwrap_or_else(kiln_model::threads::default_threads);
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    if matches!(
        cli.command,
        Command::Train(_) | Command::Sft(_) | Command::Merge(_) | Command::Dpo(_) | Command::Rm(_) | Command::Rl(_)
    ) {
        // Allocator and candle settings for training; must precede the worker threads.
        kiln_train::runtime::tune();
    }
    kiln_model::threads::set_threads(threads);
    match &cli.command {
        Command::Pull(a) => commands::pull::pull(a),
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::chat(a),
        Command::Info(a) => commands::info::info(a),
        Command::Ppl(a) => commands::ppl::ppl(a),
        Command::List => commands::pull::list(),
        Command::Bench(a) => commands::bench::bench(a, threads),
        Command::Quantize(a) => commands::quantize::quantize(a),
        Command::Serve(a) => commands::serve::serve(a),
        Command::Eval(a) => commands::eval::eval(a),
        Command::Data(a) => commands::data::data(a),
        Command::Report(a) => commands::report::report(a),
        Command::Tokenizer(a) => commands::tokenizer::tokenizer(a),
        Command::Train(a) => commands::train::train(a, threads),
        Command::Export(a) => commands::export::export(a),
        Command::Sft(a) => commands::sft::sft(a),
        Command::Merge(a) => commands::sft::merge(a),
        Command::Label(a) => commands::label::label(a),
        Command::Dpo(a) => commands::dpo::dpo(a),
        Command::Rm(a) => commands::rm::rm(a),
        Command::Rl(a) => commands::rl::rl(a),
        Command::Tool(a) => commands::tool::tool(a),
        Command::Embed(a) => commands::retrieve::embed(a),
        Command::Index(a) => commands::retrieve::index(a),
        Command::Search(a) => commands::retrieve::search(a),
        Command::Assistant(a) => commands::assistant::assistant(a),
        Command::Guard(a) => {
            return commands::guard::guard(a).map(|flagged| if flagged { Outcome::Flagged } else { Outcome::Done })
        }
    }
    .map(|()| Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_cause_quoted_by_its_error_is_not_repeated() {
        let os = "No such file or directory (os error 2)";
        let quoted = anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::NotFound, os))
            .context(format!("corpus.txt: {os}"));
        assert_eq!(one_line(&quoted), format!("corpus.txt: {os}"));
        let nested = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(one_line(&nested), "outer: middle: inner");
    }
}
