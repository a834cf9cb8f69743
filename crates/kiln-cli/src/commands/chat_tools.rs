//! `kiln chat --tools …`: the conversation goes through the agent loop, so each answer may call
//! tools first; calls and results are shown on stderr as they happen. Working memory: when the
//! conversation outgrows the context, the oldest exchanges (with their tool calls) are dropped,
//! never the system message, and the chat says so.

use super::chat::{command, prompt, read_lines, Command, Interrupt, HELP};
use crate::args::ChatArgs;
use crate::load::LoadedModel;
use crate::output::Stdout;
use anyhow::Result;
use kiln_assist::format::{Message, ToolCall};
use kiln_assist::Agent;
use kiln_generate::{GenerateOptions, Session};
use std::io::{IsTerminal, Write};
use std::sync::mpsc::Receiver;

/// Runs the chat with tools until /quit, Ctrl-D or a second Ctrl-C.
pub fn chat_with_tools(
    args: &ChatArgs,
    lm: &LoadedModel,
    ctx: usize,
    mut opts: GenerateOptions,
    guard: Option<&kiln_guard::Guard>,
) -> Result<()> {
    let toolbox = args.tools.toolbox()?;
    let mut agent = Agent::new(&lm.tokenizer, &lm.template, &toolbox, lm.model.config.vocab_size)?;
    agent.max_steps = args.tools.max_steps.max(1);
    agent.guard = guard.map(kiln_assist::agent::AgentGuard::new);
    if args.tools.tool_choice == "required" {
        agent.require_first_call()?;
    }
    let names: Vec<String> = toolbox.specs().iter().map(|s| s.name.clone()).collect();
    let mut session = Session::new(&lm.model, ctx);
    let mut system = args.system.clone();
    let start = |system: &Option<String>| -> Vec<Message> {
        system.iter().map(|s| Message::new("system", s.clone())).collect()
    };
    let mut messages = start(&system);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("kiln chat — {} (context {ctx}, tools: {}). {HELP}", lm.path.display(), names.join(", "));
    }
    if args.verbose {
        super::run::print_setup(lm, ctx, opts.sampling.seed);
    }
    let interrupt = Interrupt::install()?;
    let lines = read_lines()?;
    let mut out = Stdout::new();
    let mut armed = false;
    loop {
        let Some(line) = prompt(&lines, &interrupt, &mut armed, interactive)? else { break };
        armed = false;
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if let Some(cmd) = input.strip_prefix('/') {
            match command(cmd, &mut opts.sampling, &mut opts.max_tokens, &mut system) {
                Command::Quit => break,
                Command::Reset => {
                    messages = start(&system);
                    session.reset();
                    eprintln!("(new conversation)");
                }
                Command::Show => eprintln!(
                    "model: {}\ntools: {}\nmessages: {} (tool calls and results included)\ntemperature: {}\nmax_tokens: {}",
                    lm.path.display(),
                    names.join(", "),
                    messages.len(),
                    opts.sampling.temperature,
                    opts.max_tokens
                ),
                Command::Message(m) => eprintln!("{m}"),
            }
            continue;
        }
        let input = match super::guard::screen_input(guard, input)? {
            Ok(cleaned) => cleaned,
            Err(refusal) => {
                out.write(&format!("{refusal}\n"))?;
                continue;
            }
        };
        let before = messages.len();
        messages.push(Message::new("user", input));
        let room = opts.max_tokens.min(ctx / 2);
        let dropped = agent.fit(&mut messages, ctx, room)?;
        if dropped > 0 {
            eprintln!("(conversation too long for the context: dropped the oldest {dropped} messages)");
        }
        let mut shown = Ok(());
        let result = agent.run(
            &mut session,
            &mut messages,
            &opts,
            &mut |call| approve(call, args.tools.yes, interactive, &lines),
            &mut |event| {
                if shown.is_ok() {
                    shown = super::tool::show_event(event, &mut out);
                }
            },
        );
        shown?;
        if out.closed() {
            break;
        }
        out.write("\n")?;
        if let Err(e) = result {
            // The turn is forgotten, so the conversation stays one the template can render.
            messages.truncate(before.saturating_sub(dropped));
            eprintln!("error: {e}");
        }
        // Ctrl-C during an answer is taken at the end of its step; one more at the prompt quits.
        if interrupt.take() {
            armed = true;
            eprintln!("(Ctrl-C again quits)");
        }
    }
    Ok(())
}

/// Asks before a call that touches the outside world, reading the answer from the chat's own
/// line reader (stdin has one reader).
fn approve(call: &ToolCall, yes: bool, interactive: bool, lines: &Receiver<std::io::Result<String>>) -> bool {
    if yes {
        return true;
    }
    if !interactive {
        eprintln!("(declined {}: it touches the outside world; pass --yes to allow it)", call.name);
        return false;
    }
    eprint!("run {} {}? [y/N] ", call.name, call.arguments);
    std::io::stderr().flush().ok();
    matches!(lines.recv(), Ok(Ok(answer)) if matches!(answer.trim(), "y" | "Y" | "yes"))
}
