//! The continuous-batching scheduler against the one-request generation loop, on the default
//! model: same answers together as alone, a bounded queue, and abandoned requests freed.

use kiln_generate::{
    Event, FinishReason, GenerateOptions, Job, SamplingParams, Scheduler, SchedulerConfig, Session, SubmitError,
};
use kiln_model::Model;
use kiln_text::Tokenizer;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

fn load() -> Option<(Arc<Model>, Arc<Tokenizer>)> {
    let path = kiln_test_models::SMOLLM2.path()?;
    let file = kiln_gguf::GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    Some((Arc::new(Model::from_gguf(file).unwrap()), Arc::new(tokenizer)))
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, sampling: SamplingParams::greedy(), ..Default::default() }
}

/// A job whose events arrive on the returned channel.
fn job(prompt: Vec<u32>, options: GenerateOptions) -> (Job, Receiver<Event>) {
    let (tx, rx) = channel();
    (Job { prompt, options, sink: Box::new(move |e| tx.send(e).is_ok()) }, rx)
}

/// Collects a job's text and summary.
fn collect(rx: &Receiver<Event>) -> (String, FinishReason, usize) {
    let mut text = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).expect("an event") {
            Event::Token { text: t, .. } => text.push_str(&t),
            Event::Done(s) => return (text, s.finish, s.completion_tokens),
            Event::Failed(e) => panic!("request failed: {e}"),
        }
    }
}

#[test]
fn together_equals_alone() {
    let Some((model, tokenizer)) = load() else { return };
    // Prompts of different lengths, one past a prompt chunk, so sequences join mid-prompt.
    let texts = [
        "The capital of France is".to_string(),
        "Write a haiku about the sea:".to_string(),
        "1, 2, 3, 4,".to_string(),
        "Once upon a time".to_string(),
        format!("{} Summarise the text above in one line:", "The quick brown fox jumps over the lazy dog. ".repeat(8)),
        "def fibonacci(n):".to_string(),
    ];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.encode_prompt(t).unwrap()).collect();
    assert!(prompts[4].len() > 64);
    let opts = greedy(24);

    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let mut session = Session::new(&model, 512);
            session.generate(&tokenizer, p, &opts, |_| true).unwrap().text
        })
        .collect();

    let scheduler =
        Scheduler::start(model.clone(), tokenizer.clone(), SchedulerConfig { parallel: 4, queue: 2, context: 512 });
    let mut receivers = Vec::new();
    for p in &prompts {
        let (j, rx) = job(p.clone(), opts.clone());
        scheduler.submit(vec![j]).unwrap();
        receivers.push(rx);
    }
    // All six slots and queue places are taken: the seventh is refused, not queued.
    let (extra, _rx) = job(prompts[0].clone(), opts.clone());
    assert!(matches!(scheduler.submit(vec![extra]), Err(SubmitError::Busy { .. })));

    for (i, rx) in receivers.iter().enumerate() {
        let (text, _, n) = collect(rx);
        assert!(n > 0);
        assert_eq!(text, alone[i], "prompt {i} answered differently beside others");
    }
    let m = scheduler.metrics();
    assert_eq!((m.running, m.queued), (0, 0));
    assert_eq!(m.requests_total, 6);
}

#[test]
fn an_abandoned_request_frees_its_slot() {
    let Some((model, tokenizer)) = load() else { return };
    let scheduler = Scheduler::start(model, tokenizer.clone(), SchedulerConfig { parallel: 1, queue: 0, context: 256 });
    let prompt = tokenizer.encode_prompt("Tell me a very long story.").unwrap();
    // The caller goes away after three tokens.
    let mut seen = 0;
    let (done_tx, done_rx) = channel();
    let sink = Box::new(move |e: Event| {
        if let Event::Token { .. } = e {
            seen += 1;
        }
        if seen >= 3 {
            let _ = done_tx.send(());
            return false;
        }
        true
    });
    let options = GenerateOptions { ignore_eos: true, ..greedy(200) };
    scheduler.submit(vec![Job { prompt: prompt.clone(), options, sink }]).unwrap();
    done_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    // The one slot frees without waiting for the 200 tokens.
    let mut freed = false;
    for _ in 0..200 {
        if scheduler.metrics().running == 0 {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(freed, "the slot stayed busy after its caller left");
    let (j, rx) = job(prompt, GenerateOptions { ignore_eos: true, ..greedy(4) });
    scheduler.submit(vec![j]).unwrap();
    let (_, finish, n) = collect(&rx);
    assert_eq!((finish, n), (FinishReason::Length, 4));
}

#[test]
fn bad_requests_are_refused_up_front() {
    let Some((model, tokenizer)) = load() else { return };
    let scheduler = Scheduler::start(model, tokenizer, SchedulerConfig { parallel: 1, queue: 1, context: 16 });
    let (j, _) = job((1..40).collect(), greedy(4));
    let err = scheduler.submit(vec![j]).unwrap_err();
    assert!(err.to_string().contains("39 tokens") && err.to_string().contains("16 tokens"), "{err}");
    let (j, _) = job(vec![], greedy(4));
    assert!(matches!(scheduler.submit(vec![j]), Err(SubmitError::Empty)));
    let mut bad = greedy(4);
    bad.sampling.temperature = -1.0;
    let (j, _) = job(vec![1, 2], bad);
    assert!(matches!(scheduler.submit(vec![j]), Err(SubmitError::Options(_))));
    // A group larger than the room is refused whole.
    let jobs: Vec<Job> = (0..3).map(|_| job(vec![1, 2], greedy(2)).0).collect();
    assert!(matches!(scheduler.submit(jobs), Err(SubmitError::Busy { .. })));
    assert_eq!(scheduler.metrics().queued, 0);
}

/// Later requests reuse the cached prefix of earlier ones in the same slot (any length when
/// the prompt ends in the chunk where the shared part ends, whole chunks otherwise), and
/// still answer exactly as a fresh run does.
#[test]
fn a_reused_prefix_answers_as_a_fresh_prompt() {
    let Some((model, tokenizer)) = load() else { return };
    let story = "The quick brown fox jumps over the lazy dog. ".repeat(10);
    let texts = [
        "Write a short poem about the sea.".to_string(),
        "Write a short poem about the moon.".to_string(),
        format!("{story} Summarise the text above in one line:"),
        format!("{story} Now count the words of the text above:"),
    ];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.encode_prompt(t).unwrap()).collect();
    assert!(prompts[2].len() > 100);
    let opts = greedy(16);
    let scheduler =
        Scheduler::start(model.clone(), tokenizer.clone(), SchedulerConfig { parallel: 1, queue: 1, context: 512 });
    for (i, p) in prompts.iter().enumerate() {
        let mut session = Session::new(&model, 512);
        let alone = session.generate(&tokenizer, p, &opts, |_| true).unwrap().text;
        let (j, rx) = job(p.clone(), opts.clone());
        scheduler.submit(vec![j]).unwrap();
        let mut text = String::new();
        let summary = loop {
            match rx.recv_timeout(Duration::from_secs(120)).expect("an event") {
                Event::Token { text: t, .. } => text.push_str(&t),
                Event::Done(s) => break s,
                Event::Failed(e) => panic!("request failed: {e}"),
            }
        };
        assert_eq!(text, alone, "prompt {i} answered differently after reuse");
        if i % 2 == 1 {
            let shared = prompts[i].iter().zip(&prompts[i - 1]).take_while(|(a, b)| a == b).count();
            assert!(
                summary.cached_tokens > 0 && summary.cached_tokens <= shared,
                "prompt {i}: {} of {shared} reused",
                summary.cached_tokens
            );
        }
    }
}

/// N samples of one prompt: the prompt is computed once (each other sample copies its keys
/// and values and the logits that followed it), and every sample is exactly what its seed
/// gives alone.
#[test]
fn samples_of_one_prompt_share_it_and_each_equals_its_seed_alone() {
    use kiln_generate::think::{sample, sample_seed, Budget};
    let Some((model, tokenizer)) = load() else { return };
    let story = "The quick brown fox jumps over the lazy dog. ".repeat(10);
    let long = tokenizer.encode_prompt(&format!("{story} Then the dog")).unwrap();
    // Exactly one prompt chunk: the case where a copied prefix short of the whole prompt
    // could not answer as a fresh run.
    let one_chunk = long[..64].to_vec();
    for prompt in [tokenizer.encode_prompt("The three best things about summer are").unwrap(), one_chunk, long.clone()]
    {
        let opts = GenerateOptions {
            max_tokens: 20,
            sampling: SamplingParams { temperature: 1.0, seed: 7, ..Default::default() },
            ..Default::default()
        };
        let n = 4;
        let scheduler =
            Scheduler::start(model.clone(), tokenizer.clone(), SchedulerConfig { parallel: n, queue: 0, context: 512 });
        let got = sample(&scheduler, &prompt, &opts, &Budget::samples(n)).unwrap();
        assert_eq!(got.samples.len(), n);
        assert_eq!(got.prompt_tokens_computed, prompt.len(), "prompt of {} tokens", prompt.len());
        for (i, s) in got.samples.iter().enumerate() {
            let mut alone_opts = opts.clone();
            alone_opts.sampling.seed = sample_seed(7, i);
            let mut session = Session::new(&model, 512);
            let alone = session.generate(&tokenizer, &prompt, &alone_opts, |_| true).unwrap();
            assert_eq!(s.text, alone.text, "sample {i} of a {}-token prompt", prompt.len());
            assert_eq!(s.seed, sample_seed(7, i));
        }
        let distinct: std::collections::HashSet<&str> = got.samples.iter().map(|s| s.text.as_str()).collect();
        assert!(distinct.len() > 1, "four samples at temperature 1 were all the same: {:?}", got.samples);
    }
}

/// A token budget cuts the samples once it is spent, and the cut samples say so.
#[test]
fn a_token_budget_stops_the_samples() {
    use kiln_generate::think::{sample, Budget};
    let Some((model, tokenizer)) = load() else { return };
    let prompt = tokenizer.encode_prompt("Tell me a long story about a dragon.").unwrap();
    let opts = GenerateOptions { max_tokens: 200, ignore_eos: true, ..Default::default() };
    let scheduler = Scheduler::start(model, tokenizer, SchedulerConfig { parallel: 4, queue: 0, context: 512 });
    let budget = Budget::samples(4).limit("40t").unwrap();
    let got = sample(&scheduler, &prompt, &opts, &budget).unwrap();
    // Four samples run side by side; each sees the budget spent within one step of the others.
    assert!(got.generated_tokens >= 40 && got.generated_tokens <= 40 + 4, "{} tokens", got.generated_tokens);
    assert!(got.samples.iter().all(|s| s.finish == FinishReason::Cancelled && s.tokens < 200));
}

/// Samples decoded in the caller's thread, several prompts in one batch, are the ones the
/// scheduler draws with the same seeds.
#[test]
fn samples_in_one_thread_equal_the_schedulers() {
    use kiln_generate::think::{sample, sample_batch, Budget};
    let Some((model, tokenizer)) = load() else { return };
    let prompts: Vec<Vec<u32>> = ["The three best things about summer are", "My favourite number is"]
        .iter()
        .map(|t| tokenizer.encode_prompt(t).unwrap())
        .collect();
    let opts = GenerateOptions {
        max_tokens: 16,
        sampling: SamplingParams { temperature: 1.0, ..Default::default() },
        ..Default::default()
    };
    let seeds = [11u64, 12];
    let jobs: Vec<(&[u32], u64)> = prompts.iter().map(Vec::as_slice).zip(seeds).collect();
    let together = sample_batch(&model, &tokenizer, &jobs, 3, &opts, 256).unwrap();
    let scheduler =
        Scheduler::start(model.clone(), tokenizer.clone(), SchedulerConfig { parallel: 3, queue: 0, context: 256 });
    for (k, prompt) in prompts.iter().enumerate() {
        let o =
            GenerateOptions { sampling: SamplingParams { seed: seeds[k], ..opts.sampling.clone() }, ..opts.clone() };
        let alone = sample(&scheduler, prompt, &o, &Budget::samples(3)).unwrap();
        let texts = |s: &kiln_generate::Samples| {
            s.samples.iter().map(|x| (x.text.clone(), x.token_ids.clone())).collect::<Vec<_>>()
        };
        assert_eq!(texts(&together[k]), texts(&alone), "prompt {k}");
    }
}
