//! kiln-serve: an OpenAI-compatible HTTP API and a chat page over one model.
//!
//! Requests are parsed and checked here, then handed to the continuous-batching
//! [`Scheduler`] of kiln-generate, which runs them on its own thread; this crate never
//! touches the model's state itself, apart from computing embeddings (with the chat model, or
//! with a sentence encoder served beside it).
#![deny(missing_docs)]

pub mod assistant;
mod completions;
mod endpoints;
mod error;
#[cfg(test)]
mod fuzz;
mod guard;
pub mod label;
mod openai;
mod think;
mod tools;

pub use error::ApiError;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kiln_generate::{Scheduler, SchedulerConfig};
use kiln_model::Model;
use kiln_text::{ChatTemplate, Tokenizer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A model with what is needed to talk to it.
pub struct ServedModel {
    /// The weights.
    pub model: Arc<Model>,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// Its chat template.
    pub template: ChatTemplate,
    /// The name clients use (`/v1/models` lists it).
    pub id: String,
    /// Other names accepted in requests (the file name, say).
    pub aliases: Vec<String>,
    /// A sentence-embedding model served beside it at `/v1/embeddings`.
    pub embedding: Option<EmbeddingModel>,
    /// An assistant served beside it under its own model id (its tools run on the server).
    pub assistant: Option<assistant::ServedAssistant>,
    /// Scans each request's new messages, and full answers for a leaked system prompt.
    pub guard: Option<Arc<kiln_guard::Guard>>,
    /// A smaller model with the same tokenizer whose guesses each request has checked
    /// (speculative decoding; answers are unchanged).
    pub draft: Option<kiln_generate::Draft>,
}

/// A sentence-embedding model (a BERT encoder) and the name clients ask for it by.
pub struct EmbeddingModel {
    /// The name in requests and in `/v1/models`.
    pub id: String,
    /// Other names accepted in requests.
    pub aliases: Vec<String>,
    /// The encoder with its tokenizer and pooling.
    pub embedder: Arc<kiln_model::embed::Embedder>,
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to bind (loopback unless told otherwise).
    pub host: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Requests decoded together at most.
    pub parallel: usize,
    /// Requests waiting at most; beyond, 503.
    pub queue: usize,
    /// Positions per request (prompt plus reply).
    pub context: usize,
    /// Required as `Authorization: Bearer KEY` on the API when set.
    pub api_key: Option<String>,
    /// Prompt lookup for requests that do not say (0: none).
    pub lookup: usize,
}

/// Everything the handlers share.
pub struct AppState {
    scheduler: Scheduler,
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    model_id: String,
    aliases: Vec<String>,
    api_key: Option<String>,
    parallel: usize,
    created: u64,
    fingerprint: String,
    embedding_permit: tokio::sync::Semaphore,
    embedding: Option<EmbeddingModel>,
    assistant: Option<assistant::ServedAssistant>,
    guard: Option<Arc<kiln_guard::Guard>>,
    http_counts: Mutex<BTreeMap<(String, u16), u64>>,
    /// Built on the first request that needs a grammar (it reads the whole vocabulary).
    grammars: std::sync::OnceLock<Result<kiln_generate::GrammarCompiler, String>>,
    /// Whether the scheduler has a draft model (a request's `draft_max` needs one).
    has_draft: bool,
    /// Prompt lookup for requests that do not say.
    lookup: usize,
}

impl AppState {
    /// Starts the scheduler for `served`.
    pub fn new(served: ServedModel, options: &ServeOptions) -> AppState {
        let has_draft = served.draft.is_some();
        let scheduler = Scheduler::start_with_draft(
            served.model.clone(),
            served.tokenizer.clone(),
            SchedulerConfig { parallel: options.parallel, queue: options.queue, context: options.context },
            served.draft,
        );
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        AppState {
            scheduler,
            model: served.model,
            tokenizer: served.tokenizer,
            template: served.template,
            fingerprint: format!("kiln-{}", env!("CARGO_PKG_VERSION")),
            model_id: served.id,
            aliases: served.aliases,
            api_key: options.api_key.clone(),
            parallel: options.parallel,
            created,
            embedding_permit: tokio::sync::Semaphore::new(1),
            embedding: served.embedding,
            assistant: served.assistant,
            guard: served.guard,
            http_counts: Mutex::new(BTreeMap::new()),
            grammars: std::sync::OnceLock::new(),
            has_draft,
            lookup: options.lookup,
        }
    }

    /// The grammar compiler for the served model's vocabulary.
    fn grammars(&self) -> Result<&kiln_generate::GrammarCompiler, ApiError> {
        self.grammars
            .get_or_init(|| {
                kiln_generate::GrammarCompiler::new(&self.tokenizer, self.model.config.vocab_size)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| ApiError::invalid(e.clone()))
    }

    /// The served assistant, when the request names it.
    fn assistant_asked(&self, asked: Option<&str>) -> Option<&assistant::ServedAssistant> {
        self.assistant.as_ref().filter(|a| asked == Some(a.id.as_str()))
    }

    /// Accepts no model name (the one served), its id, or an alias.
    fn check_model(&self, asked: Option<&str>) -> Result<(), ApiError> {
        match asked {
            None | Some("") => Ok(()),
            Some(m) if m == self.model_id || self.aliases.iter().any(|a| a == m) => Ok(()),
            Some(m) => Err(ApiError::unknown_model(m, &self.model_id)),
        }
    }
}

/// The routes, for [`serve`] and for tests that drive the app in-process.
pub fn router(app: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/models", get(endpoints::models))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(endpoints::embeddings))
        .route("/tokenize", post(endpoints::tokenize))
        .route("/detokenize", post(endpoints::detokenize))
        .route("/metrics", get(endpoints::metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_key));
    Router::new()
        .route("/", get(endpoints::page))
        .route("/health", get(endpoints::health))
        .merge(api)
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            let _ = method;
            ApiError::not_found(uri.path())
        })
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

/// Refuses API calls without the right key, when the server has one.
async fn require_key(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !same_key(given.map(str::trim).unwrap_or_default(), key) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Compares API keys in time that depends on neither (their SHA-256 digests, compared in
/// constant time), so response timing tells a caller nothing about how much of a guess was right.
fn same_key(given: &str, key: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(key.as_bytes()));
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Counts answers by route and status for `/metrics`.
async fn count_requests(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let response = next.run(request).await;
    let key = (path, response.status().as_u16());
    *app.http_counts.lock().expect("counts lock").entry(key).or_insert(0) += 1;
    response
}

/// Serves the labeling page ([`label`]) on `host:port` until Ctrl-C; `on_ready` gets the
/// bound address.
pub async fn serve_labeling(
    state: Arc<label::LabelState>,
    host: &str,
    port: u16,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    on_ready(listener.local_addr()?);
    axum::serve(listener, label::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// Binds and serves until Ctrl-C; `on_ready` gets the bound address (useful with port 0).
pub async fn serve(
    served: ServedModel,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port)).await?;
    let app = Arc::new(AppState::new(served, &options));
    on_ready(listener.local_addr()?);
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_only_when_equal() {
        assert!(super::same_key("s3cret", "s3cret"));
        for other in ["", "s3cre", "s3cret ", "S3cret", "s3cretx"] {
            assert!(!super::same_key(other, "s3cret"), "{other:?}");
        }
    }
}
