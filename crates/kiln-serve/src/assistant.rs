//! A served assistant (`kiln serve --assistant NAME`): requests that name it get its
//! instructions as the system message, and its built-in tools run here, on the server, in a loop
//! (model → calls → results → model) until an answer or the step limit. The reply is one chat
//! completion with the final message, and the steps taken under `tool_steps`.

use crate::error::ApiError;
use crate::openai::ChatRequest;
use crate::AppState;
use kiln_assist::format::{self, Message, ToolCall, ToolChoice};
use kiln_assist::Toolbox;
use kiln_generate::{Event, FinishReason, Job};
use serde_json::{json, Value};
use std::sync::Arc;

/// An assistant profile ready to serve.
pub struct ServedAssistant {
    /// The model id clients ask for.
    pub id: String,
    /// Its system message.
    pub instructions: Option<String>,
    /// Its tools (they run on the server without asking: the profile's owner chose them).
    pub toolbox: Arc<Toolbox>,
    /// Sampling temperature unless the request sets one.
    pub temperature: Option<f32>,
    /// Model turns per answer at most; the last may not call tools.
    pub max_steps: usize,
    /// Its own guard (its profile asks for one), used as well as the server's.
    pub guard: Option<Arc<kiln_guard::Guard>>,
}

/// Answers a chat request addressed to the assistant.
pub async fn chat(
    app: Arc<AppState>,
    assistant: &ServedAssistant,
    req: ChatRequest,
) -> Result<axum::response::Response, ApiError> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) || req.response_format.is_some() {
        return Err(ApiError::invalid_param(
            "tools",
            format!("{} runs its own tools; send tools and response_format to the plain model", assistant.id),
        ));
    }
    if req.common.streaming() {
        return Err(ApiError::invalid_param("stream", format!("{} answers whole replies only for now", assistant.id)));
    }
    if req.common.choices()? != 1 {
        return Err(ApiError::invalid_param("n", format!("{} gives one answer per request", assistant.id)));
    }
    let mut messages = crate::tools::messages(&req)?;
    let guard = assistant.guard.clone().or_else(|| app.guard.clone());
    let spotlight = kiln_guard::spotlight::Spotlight::new();
    if let Some(guard) = &guard {
        if let crate::guard::Screened::Refuse(v) = crate::guard::screen(guard.clone(), &mut messages).await? {
            return crate::completions::chat_refusal(&app, &req.common, &v);
        }
        let line = spotlight.system_line();
        match messages.first_mut() {
            Some(first) if first.role == "system" => first.content = format!("{}\n\n{line}", first.content),
            _ => messages.insert(0, Message::new("system", line)),
        }
    }
    if let Some(instructions) = &assistant.instructions {
        match messages.first_mut() {
            Some(first) if first.role == "system" => first.content = format!("{instructions}\n\n{}", first.content),
            _ => messages.insert(0, Message::new("system", instructions.clone())),
        }
    }
    let specs = assistant.toolbox.specs();
    // `tool_choice` applies to the first turn (`required` makes it call one of the tools);
    // later turns choose freely.
    let first_choice = crate::tools::tool_choice(req.tool_choice.as_ref())?;
    let compile = |choice: &ToolChoice| -> Result<Option<kiln_generate::Constraint>, ApiError> {
        match format::call_grammar(&specs, choice, true).map_err(|e| ApiError::invalid_param("tool_choice", e))? {
            Some((grammar, trigger)) => {
                Ok(Some(app.grammars()?.compile(&grammar, trigger).map_err(|e| ApiError::invalid(e.to_string()))?))
            }
            None => Ok(None),
        }
    };
    let first = compile(&first_choice)?;
    let calls = if first_choice == ToolChoice::None { None } else { compile(&ToolChoice::Auto)? };
    let context = app.scheduler.context();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    let mut steps: Vec<Value> = Vec::new();
    // Pages and files read in this request: calls may not copy their arguments from them.
    let mut outside_text: Vec<String> = Vec::new();
    for step in 1..=assistant.max_steps.max(1) {
        let text = format::render(&app.template, &messages, &specs, true)
            .map_err(|e| ApiError::invalid(format!("the chat template failed on these messages: {e}")))?;
        let prompt = app.tokenizer.encode_prompt(&text).map_err(|e| ApiError::invalid(e.to_string()))?;
        let mut options = req.common.options(context.saturating_sub(prompt.len()).max(1), None)?;
        if let (Some(t), None) = (assistant.temperature, req.common.temperature) {
            options.sampling.temperature = t;
        }
        let last = step == assistant.max_steps.max(1);
        options.constraint = match (last, step) {
            (true, _) => None,
            (false, 1) => first.clone(),
            _ => calls.clone(),
        };
        prompt_tokens += prompt.len();
        let (reply, finish, generated) = generate(&app, prompt, options).await?;
        completion_tokens += generated;
        let parsed = format::parse(&reply);
        if last || parsed.calls.is_empty() {
            return Ok(answer(&app, &assistant.id, &parsed.content, finish, steps, prompt_tokens, completion_tokens));
        }
        messages.push(Message {
            role: "assistant".into(),
            content: parsed.content.clone(),
            tool_calls: parsed.calls.clone(),
            tool_call_id: None,
        });
        for call in parsed.calls {
            let tool = assistant.toolbox.get(&call.name);
            let copied = match &guard {
                Some(_) if tool.is_some_and(|t| t.touches_outside_world()) => {
                    kiln_guard::spotlight::copied_argument(&call.arguments, &outside_text)
                }
                _ => None,
            };
            let (output, ok) = if let Some(arg) = copied {
                (kiln_guard::spotlight::copied_refusal(&arg), false)
            } else {
                let toolbox = assistant.toolbox.clone();
                let c = call.clone();
                tokio::task::spawn_blocking(move || match toolbox.run(&c) {
                    Ok(out) => (out, true),
                    Err(e) => (format!("error: {e}"), false),
                })
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
            };
            steps.push(step_json(&call, &output, ok));
            let outside = tool.is_some_and(|t| t.returns_outside_text());
            if outside && ok {
                outside_text.push(output.clone());
            }
            let content = match &guard {
                Some(guard) if ok => crate::guard::tool_result(guard.clone(), &spotlight, output, outside).await?,
                _ => output,
            };
            messages.push(Message { role: "tool".into(), content, tool_calls: vec![], tool_call_id: Some(call.id) });
        }
    }
    unreachable!("the last step always answers")
}

/// One generation through the scheduler: the text, why it ended, tokens generated.
async fn generate(
    app: &Arc<AppState>,
    prompt: Vec<u32>,
    options: kiln_generate::GenerateOptions,
) -> Result<(String, FinishReason, usize), ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    app.scheduler.submit(vec![Job { prompt, options, sink: Box::new(move |e| tx.send(e).is_ok()) }])?;
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token { text: t, .. } => text.push_str(&t),
            Event::Done(s) => return Ok((text, s.finish, s.completion_tokens)),
            Event::Failed(e) => return Err(ApiError::internal(e)),
        }
    }
    Err(ApiError::internal("the generation ended without a summary".to_string()))
}

fn step_json(call: &ToolCall, output: &str, ok: bool) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
        "output": output,
        "ok": ok,
    })
}

fn answer(
    app: &AppState,
    id: &str,
    content: &str,
    finish: FinishReason,
    steps: Vec<Value>,
    prompt_tokens: usize,
    completion_tokens: usize,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    axum::Json(json!({
        "id": format!("chatcmpl-{}", format::new_call_id().trim_start_matches("call_")),
        "object": "chat.completion",
        "created": created,
        "model": id,
        "system_fingerprint": app.fingerprint,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": crate::completions::finish_name(finish),
        }],
        "tool_steps": steps,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}
