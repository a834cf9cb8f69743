//! `"think"` in a chat request (a kiln extension): N answers sampled together on the
//! scheduler (the prompt computed once), one chosen by vote or by the calculator's check of
//! the working, returned as the one choice, with every sample's final answer beside it.
//!
//! `"think": 8` or `"think": {"n": 8, "choose": "vote" | "calc", "budget": "30s" | "4000t"}`.

use crate::error::ApiError;
use crate::openai::ChatRequest;
use crate::AppState;
use axum::response::{IntoResponse, Response};
use kiln_assist::verify::Chooser;
use kiln_generate::think::{self, final_answer, Budget};
use serde_json::{json, Value};
use std::sync::Arc;

/// Most samples one request may ask for.
const MAX_SAMPLES: usize = 64;

/// What `"think"` asks.
pub struct Think {
    budget: Budget,
    choose: String,
}

/// Reads `"think"`; None when absent or 1 with no budget (answer as usual).
pub fn parse(req: &ChatRequest) -> Result<Option<Think>, ApiError> {
    let Some(value) = &req.think else { return Ok(None) };
    let bad = |m: String| ApiError::invalid_param("think", m);
    let (n, choose, budget) = match value {
        Value::Number(n) => (n.as_u64(), "vote".to_string(), None),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| !["n", "choose", "budget"].contains(&k.as_str())) {
                return Err(bad(format!("unknown field {k:?} in think: it takes n, choose and budget")));
            }
            let choose = match o.get("choose") {
                None => "vote".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(bad("think.choose must be \"vote\" or \"calc\"".into())),
            };
            let budget = match o.get("budget") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(bad("think.budget must be a string such as \"30s\" or \"4000t\"".into())),
            };
            (o.get("n").map_or(Some(1), Value::as_u64), choose, budget)
        }
        _ => return Err(bad("think must be a number of samples or an object {n, choose, budget}".into())),
    };
    let n = match n {
        Some(n) if (1..=MAX_SAMPLES as u64).contains(&n) => n as usize,
        _ => return Err(bad(format!("think.n must be a whole number from 1 to {MAX_SAMPLES}"))),
    };
    if choose != "vote" && choose != "calc" {
        return Err(bad(format!("think.choose must be \"vote\" or \"calc\", got {choose:?}")));
    }
    if n == 1 && budget.is_none() {
        return Ok(None);
    }
    let mut b = Budget::samples(n);
    if let Some(spec) = budget {
        b = b.limit(&spec).map_err(bad)?;
    }
    if req.common.streaming() {
        return Err(bad("think answers once all samples are in; it does not stream (send stream: false)".into()));
    }
    if req.common.n.is_some_and(|c| c != 1) {
        return Err(bad("think returns one chosen answer; n must be 1".into()));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) || req.response_format.is_some() {
        return Err(bad("think samples plain answers; it cannot be used with tools or response_format yet".into()));
    }
    Ok(Some(Think { budget: b, choose }))
}

/// Samples, chooses and answers.
pub async fn answer(
    app: Arc<AppState>,
    req: &ChatRequest,
    prompt: Vec<u32>,
    think: Think,
    canary: Option<kiln_guard::canary::Canary>,
) -> Result<Response, ApiError> {
    let default_max = app.scheduler.context().saturating_sub(prompt.len()).max(1);
    let options = req.common.options(default_max, None)?;
    let worker = app.clone();
    let budget = think.budget.clone();
    let got = tokio::task::spawn_blocking(move || think::sample(&worker.scheduler, &prompt, &options, &budget))
        .await
        .map_err(|e| ApiError::internal(format!("the sampling task failed: {e}")))?
        .map_err(|e| match e {
            think::ThinkError::Submit(s) => ApiError::from(s),
            other => ApiError::internal(other.to_string()),
        })?;
    let mut chooser = Chooser::named(&think.choose).map_err(ApiError::invalid)?;
    let choice = chooser
        // Vote and calc read only the answers (a reward model, which reads the question, is
        // not offered to requests).
        .choose("", &got.samples)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::invalid_param("think", "the budget ran out before any answer was sampled"))?;
    let chosen = &got.samples[choice.index];
    let (content, finish) = match &app.guard {
        Some(guard) if crate::guard::answer_leaks(guard, &chosen.text, canary.as_ref()) => {
            (crate::guard::LEAK_REFUSAL.to_string(), "content_filter")
        }
        _ => (chosen.text.clone(), crate::completions::finish_name(chosen.finish)),
    };
    let samples: Vec<Value> = got
        .samples
        .iter()
        .map(|s| {
            json!({"answer": final_answer(&s.text), "tokens": s.tokens, "finish_reason": crate::completions::finish_name(s.finish)})
        })
        .collect();
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(axum::Json(json!({
        "id": format!("chatcmpl-{}", kiln_assist::format::new_call_id().trim_start_matches("call_")),
        "object": "chat.completion",
        "created": created,
        "model": app.model_id,
        "system_fingerprint": app.fingerprint,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "think": {
            "samples": samples,
            "chosen": choice.index,
            "answer": choice.answer,
            "reason": choice.reason,
            "prompt_tokens_computed": got.prompt_tokens_computed,
            "seconds": got.elapsed.as_secs_f64(),
        },
        "usage": {
            "prompt_tokens": got.prompt_tokens,
            "completion_tokens": got.generated_tokens,
            "total_tokens": got.prompt_tokens + got.generated_tokens,
        },
    }))
    .into_response())
}
