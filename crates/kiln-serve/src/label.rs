//! `kiln label`: a page where people compare two sampled answers to each prompt and pick the
//! better one, writing comparison data that `kiln dpo` and `kiln rm` read.
//!
//! Every label is appended to its file and fsynced before the page hears back, so closing the
//! page or the server loses nothing; a restarted session skips the prompts already labeled.
//! Files, beside `--out` (say `prefs.jsonl`):
//! - `prefs.jsonl`: A/B choices as TRL preference rows (`prompt`, `chosen`, `rejected`, message
//!   lists) plus `id`, `label`, `labeler`, `time`;
//! - `prefs.others.jsonl`: ties and both-bad verdicts, with both answers (no preference to learn);
//! - `prefs.better.jsonl`: answers the labeler wrote instead, as SFT rows (`messages`).

use crate::ServedModel;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_generate::{GenerateOptions, SamplingParams, Session};
use kiln_text::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The page, built into the binary.
const PAGE: &str = include_str!("../assets/label.html");

/// The instructions shown when the user gives none.
pub const DEFAULT_INSTRUCTIONS: &str = "Pick the answer that is more helpful, truthful and harmless.\n\
- Helpful: it does what was asked, clearly and completely, without padding.\n\
- Truthful: no invented facts; it says so when it does not know.\n\
- Harmless: it refuses to help with harm, without lecturing when the request is fine.\n\
Choose Tie when neither is better, Both bad when neither is acceptable. If you can, write a better answer below: it becomes a fine-tuning example.";

/// How to sample and where to write.
#[derive(Clone, Debug)]
pub struct LabelOptions {
    /// The preference file (the other two are named after it).
    pub out: PathBuf,
    /// Shown beside every comparison.
    pub instructions: String,
    /// Most tokens per answer.
    pub max_tokens: usize,
    /// Sampling temperature of both answers.
    pub temperature: f32,
    /// Positions per answer (prompt plus reply).
    pub context: usize,
}

/// The two answers shown for one prompt.
#[derive(Clone)]
struct Pair {
    a: String,
    b: String,
}

struct Labels {
    done: HashSet<usize>,
    pairs: HashMap<usize, Pair>,
}

/// What the handlers share.
pub struct LabelState {
    served: ServedModel,
    prompts: Vec<Vec<ChatMessage>>,
    options: LabelOptions,
    labels: Mutex<Labels>,
    /// Sampling runs one pair at a time.
    sampling: tokio::sync::Mutex<()>,
}

/// The three files of a labeling session.
fn paths(out: &Path) -> [PathBuf; 3] {
    let stem = out.file_stem().map_or_else(|| "prefs".into(), |s| s.to_string_lossy().into_owned());
    let dir = out.parent().unwrap_or(Path::new("."));
    [out.to_path_buf(), dir.join(format!("{stem}.others.jsonl")), dir.join(format!("{stem}.better.jsonl"))]
}

/// The prompt ids labeled in earlier sessions (rows without a readable id are ignored).
fn labeled_ids(out: &Path) -> std::io::Result<HashSet<usize>> {
    let mut done = HashSet::new();
    for path in &paths(out)[..2] {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines() {
                    let id = serde_json::from_str::<Value>(line).ok().and_then(|v| v.get("id")?.as_u64());
                    done.extend(id.map(|id| id as usize));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Appends one JSON line and waits until it is on disk.
fn append(path: &Path, row: &Value) -> std::io::Result<()> {
    let mut file: File = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(format!("{row}\n").as_bytes())?;
    file.sync_data()
}

/// The prompt of one row of a prompts file: `{"prompt": text or messages}`, `{"messages": …}`
/// (up to the last user turn), or an Alpaca `{"instruction", "input"}`.
pub fn prompt_from_json(row: &Value) -> Result<Vec<ChatMessage>, String> {
    let messages = |v: &Value| -> Result<Vec<ChatMessage>, String> {
        serde_json::from_value::<Vec<ChatMessage>>(v.clone())
            .map_err(|e| format!("messages must be [{{\"role\", \"content\"}}…]: {e}"))
    };
    let obj = row.as_object().ok_or("a row must be a JSON object")?;
    let mut prompt = if let Some(p) = obj.get("prompt") {
        match p {
            Value::String(s) => vec![ChatMessage::new("user", s.as_str())],
            other => messages(other)?,
        }
    } else if let Some(m) = obj.get("messages") {
        let mut m = messages(m)?;
        while m.last().is_some_and(|m| m.role == "assistant") {
            m.pop();
        }
        m
    } else if let Some(instruction) = obj.get("instruction").and_then(Value::as_str) {
        let input = obj.get("input").and_then(Value::as_str).unwrap_or("");
        let text = if input.is_empty() { instruction.to_string() } else { format!("{instruction}\n\n{input}") };
        vec![ChatMessage::new("user", text)]
    } else {
        return Err("a prompt row needs prompt, messages, or instruction".into());
    };
    prompt.retain(|m| !(m.role == "system" && m.content.is_empty()));
    if prompt.last().is_none_or(|m| m.role != "user") {
        return Err("the prompt must end with a user turn".into());
    }
    Ok(prompt)
}

impl LabelState {
    /// A session over `prompts`, resuming from what `options.out` already holds.
    pub fn new(
        served: ServedModel,
        prompts: Vec<Vec<ChatMessage>>,
        options: LabelOptions,
    ) -> std::io::Result<LabelState> {
        let done = labeled_ids(&options.out)?;
        Ok(LabelState {
            served,
            prompts,
            options,
            labels: Mutex::new(Labels { done, pairs: HashMap::new() }),
            sampling: tokio::sync::Mutex::new(()),
        })
    }

    /// (labeled, total).
    pub fn progress(&self) -> (usize, usize) {
        let labels = self.labels.lock().expect("labels lock");
        (labels.done.iter().filter(|&&i| i < self.prompts.len()).count(), self.prompts.len())
    }

    /// Samples two answers to prompt `id` (seeds fixed by the id, so a restart shows the same pair).
    fn sample_pair(&self, id: usize) -> Result<Pair, String> {
        let s = &self.served;
        let text = s.template.render(&self.prompts[id], true).map_err(|e| e.to_string())?;
        let ids = s.tokenizer.encode(&text, false).map_err(|e| e.to_string())?;
        if ids.len() >= self.options.context {
            return Err(format!("the prompt has {} tokens; the context holds {}", ids.len(), self.options.context));
        }
        // A cache just large enough for this prompt and its answers.
        let mut session = Session::new(&s.model, (ids.len() + self.options.max_tokens).min(self.options.context));
        let mut answer = |seed: u64| -> Result<String, String> {
            let opts = GenerateOptions {
                max_tokens: self.options.max_tokens,
                sampling: SamplingParams { temperature: self.options.temperature, seed, ..Default::default() },
                ..Default::default()
            };
            session.reset();
            Ok(session
                .generate(&s.tokenizer, &ids, &opts, |_| true)
                .map_err(|e| e.to_string())?
                .text
                .trim()
                .to_string())
        };
        let a = answer(2 * id as u64 + 1)?;
        let mut b = answer(2 * id as u64 + 2)?;
        // Two identical samples compare nothing: try a few more seeds.
        for extra in 0..3 {
            if b != a {
                break;
            }
            b = answer(1_000_003 * (id as u64 + 1) + extra)?;
        }
        Ok(Pair { a, b })
    }
}

/// The labeling page and its API.
pub fn router(state: Arc<LabelState>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
                    )],
                    Html(PAGE),
                )
            }),
        )
        .route("/api/next", get(next))
        .route("/api/label", post(label))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Deserialize)]
struct NextQuery {
    /// Skip this prompt (the page asks for another one).
    after: Option<usize>,
}

/// The next prompt to label with its two answers, or `item: null` when all are done.
async fn next(State(state): State<Arc<LabelState>>, Query(q): Query<NextQuery>) -> Response {
    let id = {
        let labels = state.labels.lock().expect("labels lock");
        let open = |i: &usize| !labels.done.contains(i);
        let after = q.after.map_or(0, |a| a + 1);
        (after..state.prompts.len()).chain(0..after).find(open)
    };
    let (done, total) = state.progress();
    let base = json!({
        "model": state.served.id,
        "instructions": state.options.instructions,
        "done": done,
        "total": total,
    });
    let Some(id) = id else {
        return Json(json!({ "item": null, "progress": base })).into_response();
    };
    let pair = match pair_for(&state, id).await {
        Ok(pair) => pair,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("sampling prompt {id}: {e}")),
    };
    // While this pair is read, sample the next one, so the page rarely waits.
    tokio::spawn(prefetch_after(state.clone(), id));
    Json(json!({
        "item": { "id": id, "messages": state.prompts[id], "a": pair.a, "b": pair.b },
        "progress": base,
    }))
    .into_response()
}

/// The pair of prompt `id`, sampled now unless it was sampled before (one sampling at a time).
async fn pair_for(state: &Arc<LabelState>, id: usize) -> Result<Pair, String> {
    let cached = |state: &LabelState| state.labels.lock().expect("labels lock").pairs.get(&id).cloned();
    if let Some(pair) = cached(state) {
        return Ok(pair);
    }
    let _one_at_a_time = state.sampling.lock().await;
    // Sampled by another request while this one waited?
    if let Some(pair) = cached(state) {
        return Ok(pair);
    }
    let pair = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.sample_pair(id)).await.map_err(|e| e.to_string())??
    };
    state.labels.lock().expect("labels lock").pairs.insert(id, pair.clone());
    Ok(pair)
}

/// Samples the pair of the first open prompt after `id` ahead of time (errors surface when
/// the page asks for it).
async fn prefetch_after(state: Arc<LabelState>, id: usize) {
    let next = {
        let labels = state.labels.lock().expect("labels lock");
        let n = state.prompts.len();
        (1..n).map(|k| (id + k) % n).find(|i| !labels.done.contains(i) && !labels.pairs.contains_key(i))
    };
    if let Some(next) = next {
        let _ = pair_for(&state, next).await;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRequest {
    id: usize,
    /// `a`, `b`, `tie` or `both_bad`.
    choice: String,
    #[serde(default)]
    labeler: String,
    /// A better answer written by the labeler (optional).
    #[serde(default)]
    better: String,
}

/// Records one verdict (appended and fsynced before answering).
async fn label(
    State(state): State<Arc<LabelState>>,
    body: Result<Json<LabelRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if !["a", "b", "tie", "both_bad"].contains(&req.choice.as_str()) {
        return error(StatusCode::BAD_REQUEST, format!("choice {:?}: use a, b, tie or both_bad", req.choice));
    }
    let mut labels = state.labels.lock().expect("labels lock");
    if req.id >= state.prompts.len() {
        return error(StatusCode::BAD_REQUEST, format!("no prompt {}", req.id));
    }
    if labels.done.contains(&req.id) {
        return error(StatusCode::CONFLICT, format!("prompt {} is already labeled", req.id));
    }
    let Some(pair) = labels.pairs.get(&req.id).cloned() else {
        return error(StatusCode::BAD_REQUEST, format!("prompt {} has not been shown yet", req.id));
    };
    let prompt = &state.prompts[req.id];
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let reply = |text: &str| json!([{ "role": "assistant", "content": text }]);
    let [prefs, others, better] = paths(&state.options.out);
    let row = match req.choice.as_str() {
        "a" | "b" => {
            let (chosen, rejected) = if req.choice == "a" { (&pair.a, &pair.b) } else { (&pair.b, &pair.a) };
            (
                prefs,
                json!({ "id": req.id, "prompt": prompt, "chosen": reply(chosen), "rejected": reply(rejected), "label": req.choice, "labeler": req.labeler, "time": time }),
            )
        }
        _ => (
            others,
            json!({ "id": req.id, "prompt": prompt, "answer_a": pair.a, "answer_b": pair.b, "label": req.choice, "labeler": req.labeler, "time": time }),
        ),
    };
    let written = append(&row.0, &row.1).and_then(|()| {
        if req.better.trim().is_empty() {
            return Ok(());
        }
        let mut messages = prompt.clone();
        messages.push(ChatMessage::new("assistant", req.better.trim()));
        append(&better, &json!({ "id": req.id, "messages": messages, "labeler": req.labeler, "time": time }))
    });
    if let Err(e) = written {
        return error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write the label: {e}"));
    }
    labels.done.insert(req.id);
    labels.pairs.remove(&req.id);
    drop(labels);
    let (done, total) = state.progress();
    Json(json!({ "done": done, "total": total })).into_response()
}
