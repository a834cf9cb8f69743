//! The smaller endpoints: models, embeddings, tokenize/detokenize, health, metrics, the page.

use crate::error::ApiError;
use crate::openai::{parse_body, prompt_inputs, EmbeddingRequest, PromptInput};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Arc;

/// The chat page: one self-contained file, built into the binary.
const CHAT_PAGE: &str = include_str!("../assets/chat.html");

/// `GET /`. `KILN_CHAT_PAGE=FILE` serves a file instead, read on each request, for working
/// on the page without rebuilding.
pub async fn page() -> Html<String> {
    if let Some(path) = std::env::var_os("KILN_CHAT_PAGE") {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Html(text);
        }
    }
    Html(CHAT_PAGE.to_string())
}

/// `GET /health`.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /v1/models`.
pub async fn models(State(app): State<Arc<AppState>>) -> Json<Value> {
    let c = &app.model.config;
    let mut data = vec![json!({
            "id": app.model_id,
            "object": "model",
            "created": app.created,
            "owned_by": "kiln",
            "meta": {
                "architecture": c.family.architecture(),
                "n_ctx": app.scheduler.context(),
                "n_ctx_train": c.context_length,
                "n_vocab": c.vocab_size,
                "n_embd": c.dim,
                "n_layers": c.n_layers,
            },
    })];
    if let Some(e) = &app.embedding {
        data.push(json!({
            "id": e.id,
            "object": "model",
            "created": app.created,
            "owned_by": "kiln",
            "meta": { "architecture": "bert", "n_embd": e.embedder.dim(), "max_tokens": e.embedder.max_tokens },
        }));
    }
    if let Some(a) = &app.assistant {
        let tools: Vec<String> = a.toolbox.specs().into_iter().map(|s| s.name).collect();
        data.push(json!({
            "id": a.id,
            "object": "model",
            "created": app.created,
            "owned_by": "kiln",
            "meta": { "assistant": true, "base_model": app.model_id, "tools": tools },
        }));
    }
    Json(json!({ "object": "list", "data": data }))
}

/// `POST /v1/embeddings`: from the sentence encoder when one is served and the request names
/// it (or no model), else from the chat model: the mean of the final hidden states of the
/// input's tokens, L2-normalised (the usual pooling for decoder models without an embedding
/// head).
pub async fn embeddings(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse_body(&body)?;
    let encoder = match (&app.embedding, req.model.as_deref().filter(|m| !m.is_empty())) {
        (Some(e), None) => Some(e),
        (Some(e), Some(m)) if m == e.id || e.aliases.iter().any(|a| a == m) => Some(e),
        _ => None,
    };
    if encoder.is_none() {
        app.check_model(req.model.as_deref())?;
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("encoding_format must be float or base64, got {other}"),
            ))
        }
    };
    if let Some(encoder) = encoder {
        return encoder_embeddings(&app, encoder, &req.input, base64).await;
    }
    let mut inputs = Vec::new();
    for input in prompt_inputs(&req.input, "input")? {
        let ids = match input {
            PromptInput::Text(t) => app.tokenizer.encode(&t, true).map_err(|e| ApiError::invalid(e.to_string()))?,
            PromptInput::Tokens(ids) => ids,
        };
        if ids.is_empty() {
            return Err(ApiError::invalid_param("input", "an input is empty"));
        }
        if ids.len() > app.scheduler.context() {
            return Err(ApiError::invalid_param(
                "input",
                format!("an input is {} tokens, but the context is {} tokens", ids.len(), app.scheduler.context()),
            ));
        }
        inputs.push(ids);
    }
    let total: usize = inputs.iter().map(Vec::len).sum();
    // One embedding job at a time: they share the cores with decoding.
    let _permit = app.embedding_permit.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let worker = app.clone();
    let vectors = tokio::task::spawn_blocking(move || {
        let model = &worker.model;
        let longest = inputs.iter().map(Vec::len).max().unwrap_or(1);
        let mut state = model.new_state(longest);
        inputs
            .iter()
            .map(|ids| model.hidden_states(&mut state, ids).map(|h| mean_pool(&h, model.config.dim)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(embedding_list(&vectors, base64, &app.model_id, total))
}

/// The embeddings reply in OpenAI's shape.
fn embedding_list(vectors: &[Vec<f32>], base64: bool, model: &str, tokens: usize) -> Response {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response()
}

/// `/v1/embeddings` from the sentence encoder: text inputs only (token ids would be the chat
/// model's), each cut to the encoder's length as sentence-transformers cuts it.
async fn encoder_embeddings(
    app: &Arc<AppState>,
    encoder: &crate::EmbeddingModel,
    input: &Value,
    base64: bool,
) -> Result<Response, ApiError> {
    let mut texts = Vec::new();
    for input in prompt_inputs(input, "input")? {
        match input {
            PromptInput::Text(t) => texts.push(t),
            PromptInput::Tokens(_) => {
                return Err(ApiError::invalid_param(
                    "input",
                    format!("{} takes text; token ids are only accepted for the chat model", encoder.id),
                ))
            }
        }
    }
    let _permit = app.embedding_permit.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let embedder = encoder.embedder.clone();
    let (vectors, tokens) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let counted = embedder.embed_all_counted(&refs)?;
        let tokens = counted.iter().map(|(_, n)| n).sum::<usize>();
        Ok::<_, kiln_model::embed::EmbedError>((counted.into_iter().map(|(v, _)| v).collect::<Vec<_>>(), tokens))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(embedding_list(&vectors, base64, &encoder.id, tokens))
}

/// The mean of `dim`-wide rows, scaled to unit length.
fn mean_pool(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut mean = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt().max(1e-12);
    mean.iter().map(|m| (m / norm) as f32).collect()
}

/// `POST /tokenize` (llama-server's shape).
#[derive(Deserialize)]
pub struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

/// `POST /tokenize`.
pub async fn tokenize(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse_body(&body)?;
    let ids = app.tokenizer.encode(&req.content, req.add_special).map_err(|e| ApiError::invalid(e.to_string()))?;
    if req.with_pieces {
        let tokens: Vec<Value> = ids
            .iter()
            .map(|&id| json!({ "id": id, "piece": app.tokenizer.decode(&[id], false).unwrap_or_default() }))
            .collect();
        return Ok(Json(json!({ "tokens": tokens })));
    }
    Ok(Json(json!({ "tokens": ids })))
}

/// `POST /detokenize`.
#[derive(Deserialize)]
pub struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// `POST /detokenize`.
pub async fn detokenize(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse_body(&body)?;
    let content =
        app.tokenizer.decode(&req.tokens, false).map_err(|e| ApiError::invalid_param("tokens", e.to_string()))?;
    Ok(Json(json!({ "content": content })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let m = app.scheduler.metrics();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP kiln_{name} {help}\n# TYPE kiln_{name} {kind}\nkiln_{name} {value}");
    };
    metric(
        "requests_finished_total",
        "counter",
        "Generation requests finished (or failed).",
        m.requests_total.to_string(),
    );
    metric(
        "prompt_tokens_total",
        "counter",
        "Prompt tokens processed, reused ones included.",
        m.prompt_tokens_total.to_string(),
    );
    metric("generated_tokens_total", "counter", "Tokens generated.", m.generated_tokens_total.to_string());
    metric("requests_running", "gauge", "Requests decoding now.", m.running.to_string());
    metric("queue_depth", "gauge", "Requests waiting for a slot.", m.queued.to_string());
    metric("slots_total", "gauge", "Requests decoded together at most (--parallel).", app.parallel.to_string());
    metric(
        "tokens_per_second",
        "gauge",
        "Generated tokens per second over the last 5 seconds.",
        format!("{:.3}", m.tokens_per_second),
    );
    metric(
        "kv_cache_used_positions",
        "gauge",
        "KV-cache positions in use over all slots.",
        m.kv_positions_used.to_string(),
    );
    metric(
        "kv_cache_usage_ratio",
        "gauge",
        "KV-cache positions in use over those allocated.",
        format!("{:.6}", m.kv_positions_used as f64 / m.kv_positions_total.max(1) as f64),
    );
    let _ = writeln!(out, "# HELP kiln_http_requests_total HTTP requests answered, by path and status.\n# TYPE kiln_http_requests_total counter");
    for ((path, status), count) in app.http_counts.lock().expect("counts lock").iter() {
        let _ = writeln!(out, "kiln_http_requests_total{{path=\"{path}\",status=\"{status}\"}} {count}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::mean_pool;

    #[test]
    fn mean_pool_is_unit_length_mean() {
        let v = mean_pool(&[1.0, 0.0, 3.0, 0.0], 2);
        assert!((v[0] - 1.0).abs() < 1e-6 && v[1] == 0.0);
        let v = mean_pool(&[3.0, 4.0], 2);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
