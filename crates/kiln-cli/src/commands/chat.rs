//! `kiln chat`: an interactive conversation. The KV cache keeps the conversation so far, so
//! each turn only computes the new tokens.

use crate::args::ChatArgs;
use crate::load::{load, LoadedModel};
use crate::output::Stdout;
use anyhow::Result;
use kiln_generate::{GenerateOptions, SamplingParams, Session};
use kiln_text::ChatMessage;
use std::io::{BufRead, IsTerminal, Write};

const HELP: &str = "commands: /reset (new conversation), /system TEXT (set the system message and reset), \
/set temp|top_k|top_p|min_p|repeat_penalty|seed|max_tokens VALUE, /show (current settings), /quit";

/// Runs the command.
pub fn chat(args: &ChatArgs) -> Result<()> {
    let mut opts = GenerateOptions {
        max_tokens: args.sampling.max_tokens,
        stop: args.sampling.stop.clone(),
        sampling: args.sampling.params(),
        logprobs: None,
        ignore_eos: false,
    };
    // Bad flags are reported before a model is loaded (or pulled).
    opts.sampling.validate().map_err(anyhow::Error::msg)?;
    let lm = load(args.model.model.as_deref())?;
    let ctx = lm.context(args.model.ctx)?;
    let mut session = Session::new(&lm.model, ctx);
    let mut system = args.system.clone();
    let mut history: Vec<ChatMessage> = Vec::new();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("kiln chat — {} (context {ctx}). {HELP}", lm.path.display());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = Stdout::new();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if let Some(cmd) = input.strip_prefix('/') {
            match command(cmd, &mut opts.sampling, &mut opts.max_tokens, &mut system) {
                Command::Quit => break,
                Command::Reset => {
                    history.clear();
                    session.reset();
                    eprintln!("(new conversation)");
                }
                Command::Message(m) => eprintln!("{m}"),
            }
            continue;
        }
        history.push(ChatMessage { role: "user".into(), content: input.to_string() });
        let ids = prompt_ids(&lm, system.as_deref(), &mut history, ctx, opts.max_tokens)?;
        let gen = session.generate(&lm.tokenizer, &ids, &opts, |ev| out.write(ev.text).unwrap_or(false))?;
        if out.closed() {
            break;
        }
        out.write("\n")?;
        history.push(ChatMessage { role: "assistant".into(), content: gen.text });
    }
    Ok(())
}

/// Renders the conversation; drops the oldest turns when it would not leave room to answer.
fn prompt_ids(lm: &LoadedModel, system: Option<&str>, history: &mut Vec<ChatMessage>, ctx: usize, max_tokens: usize) -> Result<Vec<u32>> {
    let room = ctx.saturating_sub(max_tokens.min(ctx / 2));
    loop {
        let mut messages = Vec::with_capacity(history.len() + 1);
        if let Some(s) = system {
            messages.push(ChatMessage { role: "system".into(), content: s.to_string() });
        }
        messages.extend(history.iter().cloned());
        let ids = lm.tokenizer.encode_prompt(&lm.template.render(&messages, true)?)?;
        if ids.len() <= room || history.len() <= 1 {
            return Ok(ids);
        }
        // Drop the oldest user/assistant pair.
        let n = history.len().min(2);
        history.drain(..n);
        eprintln!("(conversation too long for the context: dropped the oldest turn)");
    }
}

enum Command {
    Quit,
    Reset,
    Message(String),
}

fn command(cmd: &str, sampling: &mut SamplingParams, max_tokens: &mut usize, system: &mut Option<String>) -> Command {
    let mut parts = cmd.splitn(2, ' ');
    let name = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("").trim();
    match name {
        "quit" | "exit" | "bye" => Command::Quit,
        "reset" | "clear" => Command::Reset,
        "system" => {
            *system = (!rest.is_empty()).then(|| rest.to_string());
            Command::Reset
        }
        "show" => Command::Message(format!("{sampling:?}, max_tokens {max_tokens}, system {system:?}")),
        "set" => {
            let mut kv = rest.split_whitespace();
            let (Some(key), Some(value)) = (kv.next(), kv.next()) else {
                return Command::Message("usage: /set NAME VALUE (e.g. /set temp 0.7)".into());
            };
            let mut next = sampling.clone();
            let parsed = match key {
                "temp" | "temperature" => value.parse().map(|v| next.temperature = v).is_ok(),
                "top_k" | "top-k" => value.parse().map(|v| next.top_k = v).is_ok(),
                "top_p" | "top-p" => value.parse().map(|v| next.top_p = v).is_ok(),
                "min_p" | "min-p" => value.parse().map(|v| next.min_p = v).is_ok(),
                "repeat_penalty" | "repeat-penalty" => value.parse().map(|v| next.repeat_penalty = v).is_ok(),
                "seed" => value.parse().map(|v| next.seed = v).is_ok(),
                "max_tokens" | "max-tokens" | "n" => match value.parse() {
                    Ok(v) => {
                        *max_tokens = v;
                        return Command::Message(format!("max_tokens = {v}"));
                    }
                    Err(_) => false,
                },
                _ => return Command::Message(format!("unknown setting {key:?}. {HELP}")),
            };
            if !parsed {
                return Command::Message(format!("{value:?} is not a valid value for {key}"));
            }
            match next.validate() {
                Ok(()) => {
                    *sampling = next;
                    Command::Message(format!("{key} = {value}"))
                }
                Err(e) => Command::Message(e),
            }
        }
        _ => Command::Message(HELP.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_commands_change_settings_and_reject_bad_values() {
        let mut s = SamplingParams::default();
        let mut n = 10;
        let mut sys = None;
        command("set temp 0.2", &mut s, &mut n, &mut sys);
        assert_eq!(s.temperature, 0.2);
        command("set temp -3", &mut s, &mut n, &mut sys);
        assert_eq!(s.temperature, 0.2);
        command("set max_tokens 7", &mut s, &mut n, &mut sys);
        assert_eq!(n, 7);
        assert!(matches!(command("system be brief", &mut s, &mut n, &mut sys), Command::Reset));
        assert_eq!(sys.as_deref(), Some("be brief"));
        assert!(matches!(command("quit", &mut s, &mut n, &mut sys), Command::Quit));
    }
}
