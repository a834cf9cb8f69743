//! `POST /v1/chat/completions` and `POST /v1/completions`: requests become scheduler jobs
//! (one per choice), whose events become one JSON answer or a stream of Server-Sent Events.

use crate::error::ApiError;
use crate::openai::{parse_body, prompt_inputs, ChatRequest, Common, CompletionRequest, PromptInput};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use kiln_assist::format::{CallStream, StreamEvent};
use kiln_generate::{Event, FinishReason, GenerateOptions, Job, Summary, TokenLogprob};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Which endpoint is answering: they differ only in the shape of their JSON.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Text,
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_body(&body)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "messages must hold at least one message"));
    }
    if let Some(assistant) = app.assistant_asked(req.common.model.as_deref()) {
        return crate::assistant::chat(app.clone(), assistant, req).await;
    }
    app.check_model(req.common.model.as_deref())?;
    let mut messages = crate::tools::messages(&req)?;
    let mut canary = None;
    if let Some(guard) = &app.guard {
        match crate::guard::screen(guard.clone(), &mut messages).await? {
            crate::guard::Screened::Refuse(verdict) => return refusal(&app, Kind::Chat, &req.common, &verdict),
            crate::guard::Screened::Pass { canary: c } => canary = c,
        }
    }
    if let Some(think) = crate::think::parse(&req)? {
        let text = kiln_assist::format::render(&app.template, &messages, &[], true)
            .map_err(|e| ApiError::invalid(format!("the chat template failed on these messages: {e}")))?;
        let prompt = app.tokenizer.encode_prompt(&text).map_err(|e| ApiError::invalid(e.to_string()))?;
        return crate::think::answer(app.clone(), &req, prompt, think, canary).await;
    }
    let plan = crate::tools::plan(&req)?;
    let constraint = match plan.grammar {
        Some(_) => crate::tools::constraint(app.grammars()?, &plan)?,
        None => None,
    };
    let text = kiln_assist::format::render(&app.template, &messages, &plan.specs, true)
        .map_err(|e| ApiError::invalid(format!("the chat template failed on these messages: {e}")))?;
    let prompt = app.tokenizer.encode_prompt(&text).map_err(|e| ApiError::invalid(e.to_string()))?;
    let logprobs = req.logprobs.then(|| req.top_logprobs.unwrap_or(0));
    if req.top_logprobs.is_some() && !req.logprobs {
        return Err(ApiError::invalid_param("top_logprobs", "top_logprobs needs logprobs: true"));
    }
    let prompts = vec![(prompt, String::new())];
    let reply = Reply { constraint, calls: plan.calls, canary };
    respond(app, Kind::Chat, &req.common, prompts, logprobs, reply).await
}

/// What a chat reply is decoded under and read for.
#[derive(Default)]
struct Reply {
    constraint: Option<kiln_generate::Constraint>,
    /// Read the text for tool calls.
    calls: bool,
    /// The guard's canary in the system prompt: a full answer repeating it is withheld.
    canary: Option<kiln_guard::canary::Canary>,
}

/// `POST /v1/completions`.
pub async fn completions(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_body(&body)?;
    app.check_model(req.common.model.as_deref())?;
    let mut prompts = Vec::new();
    for input in prompt_inputs(&req.prompt, "prompt")? {
        let (ids, text) = match input {
            PromptInput::Text(t) => (app.tokenizer.encode_prompt(&t).map_err(|e| ApiError::invalid(e.to_string()))?, t),
            PromptInput::Tokens(ids) => {
                let text =
                    app.tokenizer.decode(&ids, false).map_err(|e| ApiError::invalid_param("prompt", e.to_string()))?;
                (ids, text)
            }
        };
        prompts.push((ids, if req.echo { text } else { String::new() }));
    }
    if let Some(guard) = &app.guard {
        let texts = prompts.iter().map(|(ids, _)| app.tokenizer.decode(ids, false).unwrap_or_default()).collect();
        if let Some(verdict) = crate::guard::screen_prompts(guard.clone(), texts).await? {
            return refusal(&app, Kind::Text, &req.common, &verdict);
        }
    }
    respond(app, Kind::Text, &req.common, prompts, req.logprobs, Reply::default()).await
}

/// Submits one job per (prompt, choice) and answers in full or as a stream.
async fn respond(
    app: Arc<AppState>,
    kind: Kind,
    common: &Common,
    prompts: Vec<(Vec<u32>, String)>,
    logprobs: Option<usize>,
    reply: Reply,
) -> Result<Response, ApiError> {
    let n = common.choices()?;
    let context = app.scheduler.context();
    let longest = prompts.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
    // Text completions default to OpenAI's 16 tokens; chat runs to the end of the context.
    let default_max = if kind == Kind::Text { 16 } else { context.saturating_sub(longest).max(1) };
    let mut options = common.options(default_max, logprobs)?;
    options.constraint = reply.constraint;
    if common.lookup.is_none() {
        options.lookup = app.lookup;
    }
    if options.draft_max.is_some_and(|n| n > 0) && !app.has_draft {
        return Err(ApiError::invalid_param(
            "draft_max",
            "draft_max needs a server started with a draft model (kiln serve --draft MODEL)",
        ));
    }
    let (tx, rx) = unbounded_channel::<(usize, Event)>();
    let mut jobs = Vec::new();
    let mut echoes = Vec::new();
    let mut prompt_tokens = 0;
    for (prompt, echo) in &prompts {
        prompt_tokens += prompt.len();
        for c in 0..n {
            let index = jobs.len();
            let mut opts: GenerateOptions = options.clone();
            opts.sampling.seed = opts.sampling.seed.wrapping_add(c as u64);
            let tx = tx.clone();
            jobs.push(Job {
                prompt: prompt.clone(),
                options: opts,
                sink: Box::new(move |e| tx.send((index, e)).is_ok()),
            });
            echoes.push(echo.clone());
        }
    }
    drop(tx);
    app.scheduler.submit(jobs)?;
    let mut answer = Answer::new(app.clone(), kind, echoes, logprobs.is_some(), prompt_tokens);
    answer.calls = reply.calls;
    answer.canary = reply.canary;
    if common.streaming() {
        Ok(stream_answer(answer, rx, common.include_usage()).into_response())
    } else {
        full_answer(answer, rx).await
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What the choices of one request have produced so far.
struct Answer {
    app: Arc<AppState>,
    kind: Kind,
    id: String,
    created: u64,
    with_logprobs: bool,
    prompt_tokens: usize,
    choices: Vec<ChoiceState>,
    /// Replies are read for tool calls.
    calls: bool,
    /// The guard's canary, checked in full answers.
    canary: Option<kiln_guard::canary::Canary>,
}

#[derive(Default)]
struct ChoiceState {
    text: String,
    /// Chat: `logprobs.content` entries; text: (token, logprob, top, offset).
    logprobs: Vec<Value>,
    summary: Option<Summary>,
    failed: Option<String>,
    /// Streaming with tools: the calls read so far.
    calls: CallStream,
    /// How many calls the stream has announced.
    call_count: usize,
}

impl Answer {
    fn new(app: Arc<AppState>, kind: Kind, echoes: Vec<String>, with_logprobs: bool, prompt_tokens: usize) -> Answer {
        let serial = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        let choices = echoes.into_iter().map(|e| ChoiceState { text: e, ..Default::default() }).collect();
        Answer {
            app,
            kind,
            id: format!("{prefix}-{created:x}{serial:06x}"),
            created,
            with_logprobs,
            prompt_tokens,
            choices,
            calls: false,
            canary: None,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn done(&self) -> bool {
        self.choices.iter().all(|c| c.summary.is_some() || c.failed.is_some())
    }

    /// A token's log-probability entry in this endpoint's shape.
    fn logprob_entry(&self, choice: usize, lp: &(TokenLogprob, Vec<TokenLogprob>)) -> Value {
        let piece = |t: u32| self.app.tokenizer.decode(&[t], false).unwrap_or_default();
        let (chosen, top) = lp;
        match self.kind {
            Kind::Chat => {
                let entry = |t: &TokenLogprob| {
                    let s = piece(t.token);
                    json!({ "token": s, "logprob": t.logprob, "bytes": s.as_bytes() })
                };
                let mut v = entry(chosen);
                v["top_logprobs"] = top.iter().map(entry).collect();
                v
            }
            Kind::Text => {
                let offset = self.choices[choice].text.len();
                let top: serde_json::Map<String, Value> =
                    top.iter().map(|t| (piece(t.token), json!(t.logprob))).collect();
                json!({ "token": piece(chosen.token), "logprob": chosen.logprob, "top": top, "offset": offset })
            }
        }
    }

    /// A streamed reply's calls as chat deltas, OpenAI's way: a call's id and name first,
    /// then its arguments in fragments.
    fn call_deltas(&mut self, choice: usize, events: Vec<StreamEvent>) -> Vec<Value> {
        let mut out = Vec::new();
        for e in events {
            out.push(match e {
                StreamEvent::Content(t) if t.is_empty() => continue,
                StreamEvent::Content(t) => json!({ "content": t }),
                StreamEvent::CallStart { index, id, name } => {
                    self.choices[choice].call_count += 1;
                    json!({ "tool_calls": [{ "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }] })
                }
                StreamEvent::Arguments { index, fragment } => {
                    json!({ "tool_calls": [{ "index": index, "function": { "arguments": fragment } }] })
                }
            });
        }
        out
    }

    /// Text completions group their log-probabilities by field.
    fn text_logprobs(entries: &[Value]) -> Value {
        let field = |k: &str| entries.iter().map(|e| e[k].clone()).collect::<Vec<_>>();
        json!({ "tokens": field("token"), "token_logprobs": field("logprob"), "top_logprobs": field("top"), "text_offset": field("offset") })
    }

    fn usage(&self) -> Value {
        let completion: usize =
            self.choices.iter().filter_map(|c| c.summary.as_ref()).map(|s| s.completion_tokens).sum();
        let cached: usize =
            self.choices.iter().filter_map(|c| c.summary.as_ref()).map(|s| s.cached_tokens).max().unwrap_or(0);
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": { "cached_tokens": cached },
        })
    }

    /// llama-server's `timings` extension, which the chat page reads for tokens/s.
    fn timings(&self) -> Value {
        let s: Vec<&Summary> = self.choices.iter().filter_map(|c| c.summary.as_ref()).collect();
        let prompt_ms = s.iter().map(|s| s.prompt_time.as_secs_f64() * 1e3).fold(0.0, f64::max);
        let predicted_ms = s.iter().map(|s| s.generate_time.as_secs_f64() * 1e3).fold(0.0, f64::max);
        let predicted: usize = s.iter().map(|s| s.completion_tokens).sum();
        let per_second =
            if predicted > 1 && predicted_ms > 0.0 { (predicted - 1) as f64 * 1e3 / predicted_ms } else { 0.0 };
        let mut timings = json!({ "prompt_n": self.prompt_tokens, "prompt_ms": prompt_ms, "predicted_n": predicted, "predicted_ms": predicted_ms, "predicted_per_second": per_second });
        // llama-server's names for what speculative decoding drafted and kept.
        let drafted: usize = s.iter().map(|s| s.speculation.drafted).sum();
        if drafted > 0 {
            timings["draft_n"] = json!(drafted);
            timings["draft_n_accepted"] = json!(s.iter().map(|s| s.speculation.accepted).sum::<usize>());
        }
        timings
    }
}

pub(crate) fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        // Only seen by a caller that went away.
        FinishReason::Cancelled => "stop",
    }
}

/// Waits for every choice, then answers with one JSON object.
async fn full_answer(mut answer: Answer, mut rx: UnboundedReceiver<(usize, Event)>) -> Result<Response, ApiError> {
    while !answer.done() {
        let Some((i, event)) = rx.recv().await else { break };
        match event {
            Event::Token { text, logprobs, .. } => {
                if let Some(lp) = logprobs.as_ref().filter(|_| answer.with_logprobs) {
                    let entry = answer.logprob_entry(i, lp);
                    answer.choices[i].logprobs.push(entry);
                }
                answer.choices[i].text.push_str(&text);
            }
            Event::Done(s) => answer.choices[i].summary = Some(s),
            Event::Failed(e) => answer.choices[i].failed = Some(e),
        }
    }
    if let Some(e) = answer.choices.iter().find_map(|c| c.failed.clone()) {
        return Err(ApiError::internal(e));
    }
    let mut leaked = vec![false; answer.choices.len()];
    if let Some(guard) = &answer.app.guard {
        for (i, c) in answer.choices.iter_mut().enumerate() {
            if crate::guard::answer_leaks(guard, &c.text, answer.canary.as_ref()) {
                c.text = crate::guard::LEAK_REFUSAL.into();
                leaked[i] = true;
            }
        }
    }
    let choices: Vec<Value> = answer
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let finish = if leaked[i] { Some("content_filter") } else { c.summary.as_ref().map(|s| finish_name(s.finish)) };
            match answer.kind {
                Kind::Chat if answer.calls => {
                    let parsed = kiln_assist::format::parse(&c.text);
                    let calls: Vec<Value> = parsed.calls.iter().map(|t| json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}})).collect();
                    let content = if parsed.content.is_empty() && !calls.is_empty() { Value::Null } else { json!(parsed.content) };
                    let mut message = json!({ "role": "assistant", "content": content });
                    let mut finish = finish.map(Value::from).unwrap_or(Value::Null);
                    if !calls.is_empty() {
                        message["tool_calls"] = Value::Array(calls);
                        finish = json!("tool_calls");
                    }
                    json!({
                        "index": i,
                        "message": message,
                        "logprobs": if answer.with_logprobs { json!({ "content": c.logprobs }) } else { Value::Null },
                        "finish_reason": finish,
                    })
                }
                Kind::Chat => json!({
                    "index": i,
                    "message": { "role": "assistant", "content": c.text },
                    "logprobs": if answer.with_logprobs { json!({ "content": c.logprobs }) } else { Value::Null },
                    "finish_reason": finish,
                }),
                Kind::Text => json!({
                    "index": i,
                    "text": c.text,
                    "logprobs": if answer.with_logprobs { Answer::text_logprobs(&c.logprobs) } else { Value::Null },
                    "finish_reason": finish,
                }),
            }
        })
        .collect();
    let body = json!({
        "id": answer.id,
        "object": answer.object(false),
        "created": answer.created,
        "model": answer.app.model_id,
        "system_fingerprint": answer.app.fingerprint,
        "choices": choices,
        "usage": answer.usage(),
        "timings": answer.timings(),
    });
    Ok(axum::Json(body).into_response())
}

/// Streams the choices as Server-Sent Events, ending with `data: [DONE]`.
fn stream_answer(
    answer: Answer,
    rx: UnboundedReceiver<(usize, Event)>,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut pending: VecDeque<String> = VecDeque::new();
    // Chat streams open each choice with the assistant's role; echoed prompts come first.
    for i in 0..answer.choices.len() {
        match answer.kind {
            Kind::Chat => pending.push_back(
                chunk(&answer, i, json!({ "role": "assistant", "content": "" }), Value::Null, None).to_string(),
            ),
            Kind::Text if !answer.choices[i].text.is_empty() => {
                pending.push_back(chunk(&answer, i, json!(answer.choices[i].text), Value::Null, None).to_string())
            }
            Kind::Text => {}
        }
    }
    let state = StreamState { answer, rx, pending, include_usage, finished: false };
    let events = stream::unfold(state, |mut st| async move {
        let data = st.next_data().await?;
        Some((Ok(SseEvent::default().data(data)), st))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

struct StreamState {
    answer: Answer,
    rx: UnboundedReceiver<(usize, Event)>,
    pending: VecDeque<String>,
    include_usage: bool,
    finished: bool,
}

impl StreamState {
    /// The next `data:` payload, or None after `[DONE]`.
    async fn next_data(&mut self) -> Option<String> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Some(d);
            }
            if self.finished {
                return None;
            }
            if self.answer.done() {
                if self.include_usage {
                    let mut last = self.base();
                    last["choices"] = json!([]);
                    last["usage"] = self.answer.usage();
                    self.pending.push_back(last.to_string());
                }
                self.pending.push_back("[DONE]".into());
                self.finished = true;
                continue;
            }
            let Some((i, event)) = self.rx.recv().await else {
                // The engine dropped the jobs without a word: end the stream cleanly.
                self.pending.push_back(
                    json!({ "error": { "message": "generation ended unexpectedly", "type": "server_error" } })
                        .to_string(),
                );
                self.pending.push_back("[DONE]".into());
                self.finished = true;
                continue;
            };
            let a = &mut self.answer;
            match event {
                Event::Token { text, logprobs, .. } => {
                    let lp = logprobs.as_ref().filter(|_| a.with_logprobs).map(|lp| a.logprob_entry(i, lp));
                    a.choices[i].text.push_str(&text);
                    if text.is_empty() && lp.is_none() {
                        continue;
                    }
                    let lp_value = match (a.kind, lp) {
                        (_, None) => Value::Null,
                        (Kind::Chat, Some(e)) => json!({ "content": [e] }),
                        (Kind::Text, Some(e)) => Answer::text_logprobs(&[e]),
                    };
                    if a.calls {
                        let events = a.choices[i].calls.push(&text);
                        for delta in a.call_deltas(i, events) {
                            self.pending.push_back(chunk(a, i, delta, Value::Null, None).to_string());
                        }
                        continue;
                    }
                    let delta = if a.kind == Kind::Chat { json!({ "content": text }) } else { json!(text) };
                    self.pending.push_back(chunk(a, i, delta, lp_value, None).to_string());
                }
                Event::Done(s) => {
                    let mut finish = finish_name(s.finish);
                    if a.calls {
                        let events = a.choices[i].calls.finish();
                        for delta in a.call_deltas(i, events) {
                            self.pending.push_back(chunk(a, i, delta, Value::Null, None).to_string());
                        }
                        if a.choices[i].call_count > 0 {
                            finish = "tool_calls";
                        }
                    }
                    a.choices[i].summary = Some(s);
                    let delta = if a.kind == Kind::Chat { json!({}) } else { json!("") };
                    let mut last = chunk(a, i, delta, Value::Null, Some(finish));
                    if a.done() {
                        last["timings"] = a.timings();
                    }
                    self.pending.push_back(last.to_string());
                }
                Event::Failed(e) => {
                    a.choices[i].failed = Some(e.clone());
                    self.pending.push_back(
                        json!({ "error": { "message": e, "type": "server_error", "code": null } }).to_string(),
                    );
                }
            }
        }
    }

    fn base(&self) -> Value {
        let a = &self.answer;
        json!({ "id": a.id, "object": a.object(true), "created": a.created, "model": a.app.model_id, "system_fingerprint": a.app.fingerprint })
    }
}

/// One chunk of a stream: `delta` is the chat delta object, or the text for completions.
fn chunk(a: &Answer, index: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
    let choice = match a.kind {
        Kind::Chat => json!({ "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish }),
        Kind::Text => json!({ "index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish }),
    };
    json!({
        "id": a.id,
        "object": a.object(true),
        "created": a.created,
        "model": a.app.model_id,
        "system_fingerprint": a.app.fingerprint,
        "choices": [choice],
    })
}

/// The answer to a request the guard flagged: each choice says no, with
/// `finish_reason: "content_filter"` and the guard's verdict beside the choices, whole or
/// streamed as the request asked.
pub(crate) fn chat_refusal(
    app: &Arc<AppState>,
    common: &Common,
    verdict: &kiln_guard::Verdict,
) -> Result<Response, ApiError> {
    refusal(app, Kind::Chat, common, verdict)
}

fn refusal(
    app: &Arc<AppState>,
    kind: Kind,
    common: &Common,
    verdict: &kiln_guard::Verdict,
) -> Result<Response, ApiError> {
    let n = common.choices()?;
    let answer = Answer::new(app.clone(), kind, vec![String::new(); n], false, 0);
    let text = crate::guard::REFUSAL;
    let guard = serde_json::to_value(verdict).unwrap_or(Value::Null);
    let base = |chunk: bool| json!({ "id": answer.id, "object": answer.object(chunk), "created": answer.created, "model": app.model_id, "system_fingerprint": app.fingerprint });
    if common.streaming() {
        let mut events = Vec::new();
        for i in 0..n {
            let (first, body) = match kind {
                Kind::Chat => (json!({ "role": "assistant", "content": text }), json!({})),
                Kind::Text => (json!(text), json!("")),
            };
            events.push(chunk(&answer, i, first, Value::Null, None).to_string());
            let mut last = chunk(&answer, i, body, Value::Null, Some("content_filter"));
            last["guard"] = guard.clone();
            events.push(last.to_string());
        }
        events.push("[DONE]".into());
        let stream = stream::iter(events.into_iter().map(|d| Ok::<_, Infallible>(SseEvent::default().data(d))));
        return Ok(Sse::new(stream).into_response());
    }
    let choices: Vec<Value> = (0..n)
        .map(|i| match kind {
            Kind::Chat => json!({ "index": i, "message": { "role": "assistant", "content": text }, "logprobs": null, "finish_reason": "content_filter" }),
            Kind::Text => json!({ "index": i, "text": text, "logprobs": null, "finish_reason": "content_filter" }),
        })
        .collect();
    let mut body = base(false);
    body["choices"] = Value::Array(choices);
    body["usage"] = json!({ "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 });
    body["guard"] = guard;
    Ok(axum::Json(body).into_response())
}
