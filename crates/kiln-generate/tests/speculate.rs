//! Speculative decoding (prompt lookup and a draft model) against plain decoding: the same
//! tokens, greedy and sampled, on two families, with guesses actually accepted and rejected.

use kiln_generate::{Event, GenerateOptions, Generation, Job, SamplingParams, Scheduler, Session, Summary};
use kiln_model::Model;
use kiln_test_models::TestModel;
use kiln_text::Tokenizer;
use std::sync::mpsc::{channel, Receiver};

fn load(which: &TestModel) -> Option<(Model, Tokenizer, std::path::PathBuf)> {
    let path = which.path()?;
    let file = kiln_gguf::GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    Some((Model::from_gguf(file).unwrap(), tokenizer, path))
}

/// Prompts whose answers copy from them (editing, summarising, code) and one that does not.
fn prompts() -> Vec<String> {
    let text = "The committee met on Tuesday to review the budget for the new library. \
                After a long discussion, the members agreed to fund the reading room and the \
                children's section, but postponed the decision on the roof repairs until spring.";
    vec![
        format!("Correct the spelling in this text and repeat it in full:\n{}", text.replace("the", "teh")),
        format!("Summarise in one sentence:\n{text}"),
        "Rewrite this function with a docstring:\ndef area(width, height):\n    return width * height\n".to_string(),
        "Name three colours.".to_string(),
    ]
}

fn run(session: &mut Session, tok: &Tokenizer, prompt: &str, opts: &GenerateOptions) -> Generation {
    session.reset();
    let ids = tok.encode_prompt(prompt).unwrap();
    session.generate(tok, &ids, opts, |_| true).unwrap()
}

fn options(sampling: SamplingParams, lookup: usize) -> GenerateOptions {
    GenerateOptions { max_tokens: 48, sampling, lookup, ..Default::default() }
}

/// Submits a request; its events arrive on the returned channel.
fn submit(scheduler: &Scheduler, prompt: Vec<u32>, options: GenerateOptions) -> Receiver<Event> {
    let (tx, rx) = channel();
    scheduler.submit(vec![Job { prompt, options, sink: Box::new(move |e| tx.send(e).is_ok()) }]).unwrap();
    rx
}

/// The request's summary, once it is done.
fn summary(rx: &Receiver<Event>) -> Summary {
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(120)).expect("an event") {
            Event::Done(s) => return s,
            Event::Failed(e) => panic!("request failed: {e}"),
            Event::Token { .. } => {}
        }
    }
}

fn sampled() -> SamplingParams {
    SamplingParams { temperature: 1.0, seed: 7, ..SamplingParams::default() }
}

/// Checking several tokens in one pass gives each one's logits exactly as decoding them one by
/// one does: the ground speculative decoding stands on.
#[test]
fn a_check_pass_equals_one_token_passes() {
    let Some((model, tok, _)) = load(&kiln_test_models::SMOLLM2) else { return };
    let ids = tok.encode_prompt("The quick brown fox jumps over the lazy dog and runs").unwrap();
    let (head, tail) = ids.split_at(ids.len() - 9);
    let mut a = model.new_state(256);
    model.forward(&mut a, head, false).unwrap();
    let together = model.forward(&mut a, tail, true).unwrap().to_vec();
    let mut b = model.new_state(256);
    model.forward(&mut b, head, false).unwrap();
    let vocab = model.config.vocab_size;
    for (i, &t) in tail.iter().enumerate() {
        let one = model.forward(&mut b, &[t], false).unwrap();
        assert!(one == &together[i * vocab..(i + 1) * vocab], "row {i} differs");
    }
}

#[test]
fn lookup_gives_plain_decoding_output() {
    let Some((model, tok, _)) = load(&kiln_test_models::SMOLLM2) else { return };
    let mut session = Session::new(&model, 1024);
    let mut accepted = 0;
    let mut rejected = 0;
    for sampling in [SamplingParams::greedy(), sampled()] {
        for p in prompts() {
            let plain = run(&mut session, &tok, &p, &options(sampling.clone(), 0));
            let fast = run(&mut session, &tok, &p, &options(sampling.clone(), 8));
            assert_eq!(plain.tokens, fast.tokens, "prompt {p:?}");
            assert_eq!(plain.text, fast.text);
            assert_eq!(plain.finish, fast.finish);
            assert_eq!(plain.speculation.drafted, 0);
            let s = fast.speculation;
            assert!(s.accepted <= s.drafted);
            accepted += s.accepted;
            rejected += s.drafted - s.accepted;
        }
    }
    assert!(accepted > 0 && rejected > 0, "both paths taken: {accepted} accepted, {rejected} rejected");
}

/// A conversation continues from a cache that holds exactly what was said, guesses dropped.
#[test]
fn lookup_leaves_the_cache_as_plain_decoding_does() {
    let Some((model, tok, _)) = load(&kiln_test_models::SMOLLM2) else { return };
    let turn = |lookup| {
        let mut session = Session::new(&model, 1024);
        let first = tok.encode_prompt(&prompts()[0]).unwrap();
        let a = session.generate(&tok, &first, &options(SamplingParams::greedy(), lookup), |_| true).unwrap();
        let mut second = first.clone();
        second.extend_from_slice(&a.tokens);
        second.extend(tok.encode_prompt("Now say it again.").unwrap());
        let b = session.generate(&tok, &second, &options(SamplingParams::greedy(), lookup), |_| true).unwrap();
        (a.tokens, b.tokens, b.prompt_tokens_computed)
    };
    assert_eq!(turn(0), turn(8));
}

fn draft_matches_plain(which: &TestModel, draft_layers: usize) {
    let Some((model, tok, path)) = load(which) else { return };
    let pruned = Model::open_gguf(&path).unwrap().first_layers(draft_layers).unwrap();
    let mut plain_session = Session::new(&model, 1024);
    let mut drafted_session = Session::new(&model, 1024);
    drafted_session.set_draft(&pruned, 6).unwrap();
    let mut accepted = 0;
    let mut rejected = 0;
    for sampling in [SamplingParams::greedy(), sampled()] {
        for p in prompts() {
            let plain = run(&mut plain_session, &tok, &p, &options(sampling.clone(), 0));
            let fast = run(&mut drafted_session, &tok, &p, &options(sampling.clone(), 0));
            assert_eq!(plain.tokens, fast.tokens, "prompt {p:?}");
            assert_eq!(plain.text, fast.text);
            accepted += fast.speculation.accepted;
            rejected += fast.speculation.drafted - fast.speculation.accepted;
        }
    }
    assert!(accepted > 0 && rejected > 0, "both paths taken: {accepted} accepted, {rejected} rejected");
}

#[test]
fn draft_model_gives_plain_decoding_output_llama() {
    draft_matches_plain(&kiln_test_models::SMOLLM2, 10);
}

#[test]
fn draft_model_gives_plain_decoding_output_gemma() {
    draft_matches_plain(&kiln_test_models::GEMMA3, 6);
}

#[test]
fn a_draft_must_share_the_vocabulary() {
    let (Some((smol, _, _)), Some((gemma, _, _))) = (load(&kiln_test_models::SMOLLM2), load(&kiln_test_models::GEMMA3))
    else {
        return;
    };
    let mut session = Session::new(&smol, 256);
    let err = session.set_draft(&gemma, 4).unwrap_err().to_string();
    assert!(err.contains("share the tokenizer"), "{err}");
    assert!(Model::open_gguf(kiln_test_models::SMOLLM2.path().unwrap()).unwrap().first_layers(0).is_err());
}

/// The scheduler checks a request's guesses in the same pass as the other requests' tokens:
/// every request, with lookup or without, answers as it does alone with plain decoding.
#[test]
fn lookup_in_the_scheduler_answers_as_plain_decoding_alone() {
    use kiln_generate::SchedulerConfig;
    use std::sync::Arc;
    let Some((model, tok, _)) = load(&kiln_test_models::SMOLLM2) else { return };
    let mut session = Session::new(&model, 1024);
    let mut cases = Vec::new();
    for (k, p) in prompts().iter().enumerate() {
        for sampling in [SamplingParams::greedy(), sampled()] {
            let plain = run(&mut session, &tok, p, &options(sampling.clone(), 0));
            // Every other request asks for lookup, so checks of several rows share passes with
            // one-token decodes.
            let lookup = if (k + cases.len()) % 2 == 0 { 6 } else { 0 };
            cases.push((tok.encode_prompt(p).unwrap(), options(sampling, lookup), plain.tokens));
        }
    }
    let (model, tok) = (Arc::new(model), Arc::new(tok));
    let scheduler = Scheduler::start(model, tok, SchedulerConfig { parallel: 8, queue: 8, context: 1024 });
    let receivers: Vec<_> = cases.iter().map(|(p, o, _)| submit(&scheduler, p.clone(), o.clone())).collect();
    let mut accepted = 0;
    for ((_, opts, expected), rx) in cases.iter().zip(receivers) {
        let summary = summary(&rx);
        assert_eq!(
            &summary.tokens[..expected.len()],
            &expected[..],
            "lookup {} temp {} {:?}",
            opts.lookup,
            opts.sampling.temperature,
            summary.speculation
        );
        assert!(summary.tokens.len() <= expected.len() + 1);
        if opts.lookup == 0 {
            assert_eq!(summary.speculation.drafted, 0);
        }
        accepted += summary.speculation.accepted;
    }
    assert!(accepted > 0, "no guess was kept");
}

/// At the end of the context, lookup stops where plain decoding stops, in a session and in
/// the scheduler.
#[test]
fn lookup_stops_at_the_end_of_the_context_as_plain_decoding_does() {
    use kiln_generate::{FinishReason, SchedulerConfig};
    use std::sync::Arc;
    let Some((model, tok, _)) = load(&kiln_test_models::SMOLLM2) else { return };
    let prompt = tok.encode_prompt(&prompts()[0]).unwrap();
    let ctx = prompt.len() + 20;
    let generate = |lookup| {
        let mut session = Session::new(&model, ctx);
        let opts = GenerateOptions { ignore_eos: true, ..options(SamplingParams::greedy(), lookup) };
        session.generate(&tok, &prompt, &opts, |_| true).unwrap()
    };
    let (plain, fast) = (generate(0), generate(8));
    assert_eq!(plain.finish, FinishReason::Length);
    assert_eq!((plain.tokens.clone(), plain.finish), (fast.tokens, fast.finish));
    assert!(fast.speculation.drafted > 0);
    let (model, tok) = (Arc::new(model), Arc::new(tok));
    let scheduler = Scheduler::start(model, tok, SchedulerConfig { parallel: 1, queue: 1, context: ctx });
    let options = GenerateOptions { ignore_eos: true, ..options(SamplingParams::greedy(), 8) };
    let summary = summary(&submit(&scheduler, prompt, options));
    assert_eq!((summary.tokens, summary.finish), (plain.tokens, plain.finish));
}

/// A scheduler with a draft model: requests that use it (and one that turns it off) answer as
/// plain decoding alone, beside each other.
#[test]
fn a_draft_in_the_scheduler_answers_as_plain_decoding_alone() {
    use kiln_generate::{Draft, SchedulerConfig};
    use std::sync::Arc;
    let Some((model, tok, path)) = load(&kiln_test_models::SMOLLM2) else { return };
    let mut session = Session::new(&model, 1024);
    let mut cases = Vec::new();
    for (k, p) in prompts().iter().enumerate() {
        for sampling in [SamplingParams::greedy(), sampled()] {
            let plain = run(&mut session, &tok, p, &options(sampling.clone(), 0));
            let mut opts = options(sampling, 0);
            opts.draft_max = if k == 1 { Some(0) } else { None };
            cases.push((tok.encode_prompt(p).unwrap(), opts, plain.tokens));
        }
    }
    let draft = Draft { model: Arc::new(Model::open_gguf(&path).unwrap().first_layers(12).unwrap()), max: 5 };
    let (model, tok) = (Arc::new(model), Arc::new(tok));
    let config = SchedulerConfig { parallel: 4, queue: 8, context: 1024 };
    let scheduler = Scheduler::start_with_draft(model, tok, config, Some(draft));
    let receivers: Vec<_> = cases.iter().map(|(p, o, _)| submit(&scheduler, p.clone(), o.clone())).collect();
    let (mut accepted, mut rejected) = (0, 0);
    for ((_, opts, expected), rx) in cases.iter().zip(receivers) {
        let summary = summary(&rx);
        assert_eq!(&summary.tokens[..expected.len()], &expected[..], "draft_max {:?}", opts.draft_max);
        let s = summary.speculation;
        if opts.draft_max == Some(0) {
            assert_eq!(s.drafted, 0);
        }
        accepted += s.accepted;
        rejected += s.drafted - s.accepted;
    }
    assert!(accepted > 0 && rejected > 0, "both paths taken: {accepted} accepted, {rejected} rejected");
}
