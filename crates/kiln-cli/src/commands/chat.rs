//! `kiln chat`: an interactive conversation. The KV cache keeps the conversation so far, so
//! each turn only computes the new tokens.
//!
//! Ctrl-C stops the answer being written and keeps the session, as llama-cli does; the part
//! already shown stays in the history as the assistant's turn (llama-cli likewise keeps it in
//! the model's context, closed with an end-of-turn token). Ctrl-C at the prompt after that, or
//! twice at the prompt, quits.

use crate::args::ChatArgs;
use crate::load::{load, LoadedModel};
use crate::output::Stdout;
use anyhow::{Context, Result};
use kiln_generate::{GenerateOptions, SamplingParams, Session};
use kiln_text::ChatMessage;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

pub(super) const HELP: &str = "commands: /reset (new conversation), /system TEXT (set the system message and reset), \
/set temp|top_k|top_p|min_p|repeat_penalty|presence_penalty|frequency_penalty|seed|max_tokens VALUE, \
/show (settings and conversation), /help, /quit. Ctrl-C stops an answer; Ctrl-C twice at the prompt quits";

/// Exit status when Ctrl-C ends the chat: what a shell reports for SIGINT, and llama-cli's.
const INTERRUPTED: i32 = 130;

/// How often the prompt looks for a Ctrl-C while it waits for a line.
const POLL: Duration = Duration::from_millis(50);

/// Runs the command.
pub fn chat(args: &ChatArgs) -> Result<()> {
    let mut args = args.clone();
    if let Some(name) = args.assistant.clone() {
        super::assistant::apply(
            &name,
            &mut args.model.model,
            &mut args.system,
            &mut args.sampling,
            &mut args.tools,
            &mut args.guard,
        )?;
    }
    let args = &args;
    let mut opts = GenerateOptions {
        max_tokens: args.sampling.max_tokens,
        stop: args.sampling.stop.clone(),
        sampling: args.sampling.params(),
        ..GenerateOptions::default()
    };
    args.speculate.validate()?;
    args.speculate.apply(&mut opts);
    // Bad flags are reported before a model is loaded (or pulled).
    opts.sampling.validate().map_err(anyhow::Error::msg)?;
    let think = args.think.budget()?;
    if think.as_ref().is_some_and(|b| b.tokens.is_some() || b.time.is_some()) {
        anyhow::bail!("kiln chat thinks in samples (--think N); --think-budget is for run, eval and serve");
    }
    let mut chooser = think.as_ref().map(|_| args.think.chooser()).transpose()?;
    if args.speculate.any() && (think.is_some() || args.tools.any()) {
        anyhow::bail!("--lookup and --draft speed up plain answers; they cannot be used with --think or --tools yet");
    }
    let guard = args.guard.load()?;
    let lm = load(args.model.model.as_deref())?;
    let ctx = lm.context(args.model.ctx)?;
    if args.tools.any() {
        if think.is_some() {
            anyhow::bail!("--think samples plain answers; it cannot be used with --tools yet");
        }
        return super::chat_tools::chat_with_tools(args, &lm, ctx, opts, guard.as_ref());
    }
    let draft = args.speculate.load_draft(&lm)?;
    let mut session = Session::new(&lm.model, ctx);
    args.speculate.attach(&mut session, draft.as_ref())?;
    let mut system = args.system.clone();
    let mut history: Vec<ChatMessage> = Vec::new();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("kiln chat — {} (context {ctx}). {HELP}", lm.path.display());
    }
    if args.verbose {
        super::run::print_setup(&lm, ctx, opts.sampling.seed);
    }
    // Installed only now: while the model loads, Ctrl-C ends kiln as usual.
    let interrupt = Interrupt::install()?;
    let lines = read_lines()?;
    let mut out = Stdout::new();
    // Set by a Ctrl-C (at the prompt or stopping an answer): the next one at the prompt quits.
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
                    history.clear();
                    session.reset();
                    eprintln!("(new conversation)");
                }
                Command::Show => {
                    let overview = Overview {
                        model: &lm.path,
                        architecture: lm.model.config.family.architecture(),
                        context: ctx,
                        template: template_name(&lm),
                        used: conversation_tokens(&lm, system.as_deref(), &history),
                        opts: &opts,
                        system: system.as_deref(),
                        turns: history.iter().filter(|m| m.role == "user").count(),
                    };
                    eprintln!("{}", overview.render());
                }
                Command::Message(m) => eprintln!("{m}"),
            }
            continue;
        }
        let input = match super::guard::screen_input(guard.as_ref(), input)? {
            Ok(cleaned) => cleaned,
            Err(refusal) => {
                out.write(&format!("{refusal}\n"))?;
                continue;
            }
        };
        history.push(ChatMessage { role: "user".into(), content: input });
        let ids = prompt_ids(&lm, system.as_deref(), &mut history, ctx, opts.max_tokens)?;
        if let (Some(budget), Some(chooser)) = (&think, chooser.as_mut()) {
            let question = history.last().map(|m| m.content.clone()).unwrap_or_default();
            let answer = super::think::answer_in_chat(&lm, ctx, (&question, &ids), &opts, chooser, budget.samples)?;
            out.write(&answer)?;
            out.write("\n")?;
            history.push(ChatMessage { role: "assistant".into(), content: answer });
            continue;
        }
        let mut shown = String::new();
        let gen = session.generate(&lm.tokenizer, &ids, &opts, |ev| {
            // Checked before writing, so the history keeps exactly what was shown.
            if interrupt.pending() {
                return false;
            }
            shown.push_str(ev.text);
            out.write(ev.text).unwrap_or(false)
        })?;
        if out.closed() {
            break;
        }
        if interrupt.take() {
            armed = true;
            if !shown.is_empty() {
                out.write("\n")?;
            }
            if shown.trim().is_empty() {
                // Stopped before any answer: the message goes unanswered, so it is dropped
                // rather than left as a user turn with no reply.
                history.pop();
            } else {
                history.push(ChatMessage { role: "assistant".into(), content: shown });
            }
            eprintln!("(stopped; Ctrl-C again quits)");
        } else {
            out.write("\n")?;
            history.push(ChatMessage { role: "assistant".into(), content: gen.text });
        }
    }
    Ok(())
}

/// Ctrl-C as a flag that the chat polls. The first one sets it; another while it is still set
/// (the chat has not got to it, e.g. a long prompt is being read) ends the process at once.
pub(super) struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub(super) fn install() -> Result<Interrupt> {
        use signal_hook::consts::SIGINT;
        let flag = Arc::new(AtomicBool::new(false));
        // Registered first, so it runs before this same signal sets the flag: only a second
        // Ctrl-C finds the flag set.
        signal_hook::flag::register_conditional_shutdown(SIGINT, INTERRUPTED, Arc::clone(&flag))
            .context("cannot handle Ctrl-C")?;
        signal_hook::flag::register(SIGINT, Arc::clone(&flag)).context("cannot handle Ctrl-C")?;
        Ok(Interrupt(flag))
    }

    /// Whether a Ctrl-C is waiting to be handled.
    pub(super) fn pending(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Handles the waiting Ctrl-C, if any.
    pub(super) fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// Stdin's lines, read on a thread of their own: a blocking read resumes after Ctrl-C, and
/// the prompt must notice the Ctrl-C while it waits.
pub(super) fn read_lines() -> Result<Receiver<std::io::Result<String>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let failed = line.is_err();
                if tx.send(line).is_err() || failed {
                    break;
                }
            }
        })
        .context("cannot start reading stdin")?;
    Ok(rx)
}

enum Input {
    Line(String),
    /// End of input (Ctrl-D).
    End,
    /// Ctrl-C at the prompt after another one.
    Interrupted,
}

/// Shows the prompt and waits for the next line: `None` at the end of input; a second Ctrl-C
/// ends the process with the interrupted status.
pub(super) fn prompt(
    lines: &Receiver<std::io::Result<String>>,
    interrupt: &Interrupt,
    armed: &mut bool,
    interactive: bool,
) -> Result<Option<String>> {
    if interactive {
        eprint!("> ");
        std::io::stderr().flush().ok();
    }
    match next_line(lines, interrupt, armed, interactive)? {
        Input::Line(line) => Ok(Some(line)),
        Input::End => {
            if interactive {
                eprintln!();
            }
            Ok(None)
        }
        Input::Interrupted => {
            // After the ^C the terminal echoed.
            if interactive {
                eprintln!();
            }
            std::process::exit(INTERRUPTED);
        }
    }
}

/// Waits at the prompt for the next line, watching for Ctrl-C.
fn next_line(
    lines: &Receiver<std::io::Result<String>>,
    interrupt: &Interrupt,
    armed: &mut bool,
    interactive: bool,
) -> Result<Input> {
    loop {
        // A Ctrl-C comes before any line already waiting, and before the end of input.
        if interrupt.take() {
            if *armed {
                return Ok(Input::Interrupted);
            }
            *armed = true;
            // The terminal echoed ^C after the prompt.
            if interactive {
                eprintln!();
            }
            eprintln!("(Ctrl-C again, Ctrl-D or /quit to leave)");
            if interactive {
                eprint!("> ");
                std::io::stderr().flush().ok();
            }
        }
        match lines.recv_timeout(POLL) {
            Ok(line) => return Ok(Input::Line(line.context("cannot read stdin")?)),
            Err(RecvTimeoutError::Disconnected) => return Ok(Input::End),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Renders the conversation; drops the oldest turns when it would not leave room to answer.
fn prompt_ids(
    lm: &LoadedModel,
    system: Option<&str>,
    history: &mut Vec<ChatMessage>,
    ctx: usize,
    max_tokens: usize,
) -> Result<Vec<u32>> {
    let room = ctx.saturating_sub(max_tokens.min(ctx / 2));
    loop {
        let ids = lm.tokenizer.encode_prompt(&lm.template.render(&with_system(system, history), true)?)?;
        if ids.len() <= room || history.len() <= 1 {
            return Ok(ids);
        }
        // Drop the oldest user/assistant pair.
        let n = history.len().min(2);
        history.drain(..n);
        eprintln!("(conversation too long for the context: dropped the oldest turn)");
    }
}

fn with_system(system: Option<&str>, history: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(history.len() + 1);
    if let Some(s) = system {
        messages.push(ChatMessage { role: "system".into(), content: s.to_string() });
    }
    messages.extend(history.iter().cloned());
    messages
}

/// Tokens the conversation so far takes in the context (None if it cannot be rendered).
fn conversation_tokens(lm: &LoadedModel, system: Option<&str>, history: &[ChatMessage]) -> Option<usize> {
    if system.is_none() && history.is_empty() {
        return Some(0);
    }
    let text = lm.template.render(&with_system(system, history), false).ok()?;
    lm.tokenizer.encode_prompt(&text).ok().map(|ids| ids.len())
}

/// Which chat template renders the conversation, as `/show` names it.
fn template_name(lm: &LoadedModel) -> String {
    match lm.tokenizer.chat_template() {
        Some(src) => {
            let style = if src.contains("<|im_start|>") {
                "ChatML"
            } else if src.contains("<start_of_turn>") {
                "Gemma turns"
            } else if src.contains("<|start_header_id|>") {
                "Llama 3 headers"
            } else if src.contains("[INST]") {
                "[INST] blocks"
            } else {
                "custom"
            };
            format!("the model's own ({style})")
        }
        // The same choice as kiln_text::ChatTemplate::for_model.
        None if lm.model.config.family.architecture().starts_with("gemma") => {
            "built-in Gemma turns (the model has none)".into()
        }
        None => "built-in ChatML (the model has none)".into(),
    }
}

/// What `/show` prints.
struct Overview<'a> {
    model: &'a Path,
    architecture: &'a str,
    context: usize,
    template: String,
    used: Option<usize>,
    opts: &'a GenerateOptions,
    system: Option<&'a str>,
    turns: usize,
}

impl Overview<'_> {
    /// One setting per line, named as `/set` names it.
    fn render(&self) -> String {
        let s = &self.opts.sampling;
        let used = self.used.map_or_else(|| "?".to_string(), |n| n.to_string());
        let stop = if self.opts.stop.is_empty() {
            "(none)".to_string()
        } else {
            self.opts.stop.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
        };
        let rows: [(&str, String); 16] = [
            ("model", self.model.display().to_string()),
            ("architecture", self.architecture.to_string()),
            ("context", format!("{used} of {} tokens used", self.context)),
            ("chat template", self.template.clone()),
            ("system prompt", self.system.map_or_else(|| "(none)".to_string(), |t| format!("{t:?}"))),
            ("turns in history", self.turns.to_string()),
            ("temperature", s.temperature.to_string()),
            ("top_k", s.top_k.to_string()),
            ("top_p", s.top_p.to_string()),
            ("min_p", s.min_p.to_string()),
            ("repeat_penalty", s.repeat_penalty.to_string()),
            ("presence_penalty", s.presence_penalty.to_string()),
            ("frequency_penalty", s.frequency_penalty.to_string()),
            ("seed", s.seed.to_string()),
            ("max_tokens", self.opts.max_tokens.to_string()),
            ("stop", stop),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        rows.iter().map(|(k, v)| format!("{:width$} {v}", format!("{k}:"))).collect::<Vec<_>>().join("\n")
    }
}

pub(super) enum Command {
    Quit,
    Reset,
    Show,
    Message(String),
}

pub(super) fn command(
    cmd: &str,
    sampling: &mut SamplingParams,
    max_tokens: &mut usize,
    system: &mut Option<String>,
) -> Command {
    let mut parts = cmd.splitn(2, char::is_whitespace);
    let name = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("").trim();
    match name {
        "quit" | "exit" | "bye" => Command::Quit,
        "reset" | "clear" => Command::Reset,
        "system" => {
            *system = (!rest.is_empty()).then(|| rest.to_string());
            Command::Reset
        }
        "show" => Command::Show,
        "help" | "?" => Command::Message(HELP.to_string()),
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
                "presence_penalty" | "presence-penalty" => value.parse().map(|v| next.presence_penalty = v).is_ok(),
                "frequency_penalty" | "frequency-penalty" => value.parse().map(|v| next.frequency_penalty = v).is_ok(),
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
        _ => Command::Message(format!("unknown command /{name}: /help lists the commands")),
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
        command("set presence_penalty -0.5", &mut s, &mut n, &mut sys);
        assert_eq!(s.presence_penalty, -0.5);
        assert!(matches!(command("system be brief", &mut s, &mut n, &mut sys), Command::Reset));
        assert_eq!(sys.as_deref(), Some("be brief"));
        assert!(matches!(command("quit", &mut s, &mut n, &mut sys), Command::Quit));
        assert!(matches!(command("show", &mut s, &mut n, &mut sys), Command::Show));
    }

    #[test]
    fn unknown_commands_point_to_help() {
        let mut s = SamplingParams::default();
        let (mut n, mut sys) = (10, None);
        let Command::Message(m) = command("bogus arg", &mut s, &mut n, &mut sys) else { panic!("a message") };
        assert_eq!(m, "unknown command /bogus: /help lists the commands");
        let Command::Message(m) = command("help", &mut s, &mut n, &mut sys) else { panic!("a message") };
        assert!(m.starts_with("commands:"), "{m}");
    }

    #[test]
    fn show_prints_one_setting_per_line() {
        let opts = GenerateOptions { max_tokens: 64, stop: vec!["END".into()], ..GenerateOptions::default() };
        let overview = Overview {
            model: Path::new("/m/model.gguf"),
            architecture: "llama",
            context: 2048,
            template: "the model's own (ChatML)".into(),
            used: Some(31),
            opts: &opts,
            system: Some("be brief"),
            turns: 2,
        };
        let text = overview.render();
        for line in [
            "model:             /m/model.gguf",
            "context:           31 of 2048 tokens used",
            "system prompt:     \"be brief\"",
            "turns in history:  2",
            "temperature:       0.8",
            "max_tokens:        64",
            "stop:              \"END\"",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(!text.contains("SamplingParams"), "{text}");
    }
}
