//! `kiln run`: one prompt in, a streamed answer out.

use crate::args::RunArgs;
use crate::load::{load, LoadedModel};
use crate::output::Stdout;
use anyhow::{Context, Result};
use kiln_generate::{GenerateOptions, Session};
use kiln_text::ChatMessage;
use std::io::Read;

/// Runs the command.
pub fn run(args: &RunArgs) -> Result<()> {
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
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("cannot read the prompt from stdin")?;
            s
        }
    };
    let sampling = args.sampling.params();
    sampling.validate().map_err(anyhow::Error::msg)?;
    let guard = args.guard.load()?;
    let prompt = match super::guard::screen_input(guard.as_ref(), &prompt)? {
        Ok(cleaned) => cleaned,
        Err(refusal) => {
            crate::output::outln!("{refusal}");
            return Ok(());
        }
    };
    let think_budget = args.think.budget()?;
    args.speculate.validate()?;
    if args.speculate.any() && (think_budget.is_some() || args.tools.any()) {
        anyhow::bail!("--lookup and --draft speed up plain answers; they cannot be used with --think or --tools yet");
    }
    let chooser = think_budget.as_ref().map(|_| args.think.chooser()).transpose()?;
    let lm = load(args.model.model.as_deref())?;
    let ctx = lm.context(args.model.ctx)?;
    if args.verbose {
        print_setup(&lm, ctx, sampling.seed);
    }
    if args.tools.any() {
        if think_budget.is_some() {
            anyhow::bail!("--think samples plain answers; it cannot be used with --tools yet");
        }
        if args.raw {
            anyhow::bail!("--tools needs the chat template; it cannot be used with --raw");
        }
        return run_with_tools(args, &lm, ctx, prompt, sampling, guard.as_ref());
    }
    let text = if args.raw {
        prompt.clone()
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage { role: "system".into(), content: system.clone() });
        }
        messages.push(ChatMessage { role: "user".into(), content: prompt.clone() });
        lm.template.render(&messages, true)?
    };
    // BOS where the model wants one, once: some chat templates write it themselves.
    let ids = if args.raw { lm.tokenizer.encode(&text, true)? } else { lm.tokenizer.encode_prompt(&text)? };
    let mut opts = GenerateOptions {
        max_tokens: args.sampling.max_tokens,
        stop: args.sampling.stop.clone(),
        sampling,
        logprobs: args.logprobs,
        ..GenerateOptions::default()
    };
    args.speculate.apply(&mut opts);
    if let (Some(budget), Some(chooser)) = (&think_budget, chooser) {
        let question = super::think::Question { text: &prompt, tokens: &ids };
        return super::think::run(lm, ctx, question, &opts, chooser, budget, args.quiet);
    }
    let draft = args.speculate.load_draft(&lm)?;
    let mut session = Session::new(&lm.model, ctx);
    args.speculate.attach(&mut session, draft.as_ref())?;
    let mut out = Stdout::new();
    let mut write_error = None;
    let result = session.generate(&lm.tokenizer, &ids, &opts, |event| {
        if let Some((chosen, top)) = &event.logprobs {
            let alts: Vec<String> = top
                .iter()
                .map(|t| format!("{:?} {:.3}", lm.tokenizer.id_to_piece(t.token).unwrap_or_default(), t.logprob))
                .collect();
            eprintln!("[{} {:.3}] {}", chosen.token, chosen.logprob, alts.join(", "));
        }
        match out.write(event.text) {
            Ok(open) => open,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("cannot write to stdout");
    }
    if !out.closed() {
        out.write("\n")?;
    }
    if !args.quiet && !out.closed() {
        let pp = result.prompt_tokens_computed as f64 / result.prompt_time.as_secs_f64().max(1e-9);
        let tg = result.tokens.len() as f64 / result.generate_time.as_secs_f64().max(1e-9);
        eprintln!(
            "[prompt {} tokens, {:.1} tok/s | generated {} tokens, {:.1} tok/s{} | {:?}]",
            result.prompt_tokens,
            pp,
            result.tokens.len(),
            tg,
            super::speculate::summary(&result),
            result.finish
        );
    }
    Ok(())
}

/// The agent loop: calls are shown on stderr as they happen, the answer on stdout.
fn run_with_tools(
    args: &RunArgs,
    lm: &LoadedModel,
    ctx: usize,
    prompt: String,
    sampling: kiln_generate::SamplingParams,
    guard: Option<&kiln_guard::Guard>,
) -> Result<()> {
    use kiln_assist::format::Message;
    let toolbox = args.tools.toolbox()?;
    let mut agent = kiln_assist::Agent::new(&lm.tokenizer, &lm.template, &toolbox, lm.model.config.vocab_size)?;
    agent.max_steps = args.tools.max_steps.max(1);
    agent.guard = guard.map(kiln_assist::agent::AgentGuard::new);
    if args.tools.tool_choice == "required" {
        agent.require_first_call()?;
    }
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::new("system", system.clone()));
    }
    messages.push(Message::new("user", prompt));
    let opts = GenerateOptions {
        max_tokens: args.sampling.max_tokens,
        stop: args.sampling.stop.clone(),
        sampling,
        ..Default::default()
    };
    let mut session = Session::new(&lm.model, ctx);
    let mut out = Stdout::new();
    let mut shown = Ok(());
    let outcome = agent.run(
        &mut session,
        &mut messages,
        &opts,
        &mut |call| super::tool::approve(call, args.tools.yes),
        &mut |event| {
            if shown.is_ok() {
                shown = super::tool::show_event(event, &mut out);
            }
        },
    )?;
    shown?;
    if !out.closed() {
        out.write("\n")?;
    }
    if !args.quiet {
        eprintln!(
            "[{} steps, {} tool calls, {} tokens generated | {:?}]",
            outcome.steps, outcome.calls, outcome.generated_tokens, outcome.finish
        );
    }
    Ok(())
}

/// The `--verbose` lines of `run` and `chat` on stderr: what was loaded, and the seed that
/// repeats the run (a fresh one is drawn unless --seed is given).
pub fn print_setup(lm: &LoadedModel, ctx: usize, seed: u64) {
    eprintln!("model: {} ({})", lm.path.display(), lm.model.config.family.architecture());
    eprintln!("context: {ctx} tokens");
    eprintln!("seed: {seed} (pass --seed {seed} to repeat)");
}
