//! The request bodies of the OpenAI API that kiln answers, and their checks. Unknown fields
//! are ignored (clients send many); known ones out of range get a 400 naming the field.

use crate::error::ApiError;
use kiln_generate::speculate::MAX_DRAFT;
use kiln_generate::{GenerateOptions, SamplingParams};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Parses a JSON body, turning serde's message into an OpenAI-shaped 400.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("the request body is empty; send a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON for this endpoint: {e}")))
}

/// `stop`: one string or a list.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct StreamOptions {
    /// Send a last chunk with token counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by chat and text completions.
#[derive(Deserialize, Debug, Default)]
pub struct Common {
    /// Which model (checked against the one served).
    pub model: Option<String>,
    /// Answer with Server-Sent Events.
    pub stream: Option<bool>,
    /// Streaming extras.
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate.
    pub n: Option<i64>,
    /// Most tokens to generate.
    pub max_tokens: Option<i64>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus threshold.
    pub top_p: Option<f32>,
    /// Top-k (llama.cpp extension).
    pub top_k: Option<i64>,
    /// Min-p (llama.cpp extension).
    pub min_p: Option<f32>,
    /// Repetition penalty (llama.cpp extension).
    pub repeat_penalty: Option<f32>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Seed for sampling.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Keep generating past end-of-turn tokens (llama.cpp extension; benchmarks use it).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Prompt-lookup decoding: check up to this many tokens copied from the context per pass
    /// (kiln extension; the answer is the same as without).
    pub lookup: Option<i64>,
    /// With a server's draft model: most tokens it guesses per pass for this request, 0 for
    /// none (kiln extension; the answer is the same either way).
    pub draft_max: Option<i64>,
}

/// Limits on what one request may ask.
const MAX_CHOICES: i64 = 16;
const MAX_STOPS: usize = 16;
const MAX_TOP_LOGPROBS: usize = 20;

impl Common {
    /// Whether to stream.
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the stream ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }

    /// Choices asked for.
    pub fn choices(&self) -> Result<usize, ApiError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n as usize),
            Some(n) => Err(ApiError::invalid_param("n", format!("n must be between 1 and {MAX_CHOICES}, got {n}"))),
        }
    }

    /// Generation settings; `default_max` when the request sets no limit.
    pub fn options(&self, default_max: usize, logprobs: Option<usize>) -> Result<GenerateOptions, ApiError> {
        let mut s = SamplingParams::default();
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid_param(
                    "temperature",
                    format!("temperature must be between 0 and 2, got {t}"),
                ));
            }
            s.temperature = t;
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid_param("top_p", format!("top_p must be in (0, 1], got {p}")));
            }
            s.top_p = p;
        }
        if let Some(k) = self.top_k {
            if k < 0 {
                return Err(ApiError::invalid_param("top_k", format!("top_k must be >= 0, got {k}")));
            }
            s.top_k = k as usize;
        }
        if let Some(m) = self.min_p {
            if !(0.0..=1.0).contains(&m) {
                return Err(ApiError::invalid_param("min_p", format!("min_p must be between 0 and 1, got {m}")));
            }
            s.min_p = m;
        }
        if let Some(r) = self.repeat_penalty {
            if !(r > 0.0 && r.is_finite()) {
                return Err(ApiError::invalid_param("repeat_penalty", format!("repeat_penalty must be > 0, got {r}")));
            }
            s.repeat_penalty = r;
        }
        for (name, value, target) in [
            ("presence_penalty", self.presence_penalty, &mut s.presence_penalty),
            ("frequency_penalty", self.frequency_penalty, &mut s.frequency_penalty),
        ] {
            if let Some(v) = value {
                if !(-2.0..=2.0).contains(&v) {
                    return Err(ApiError::invalid_param(name, format!("{name} must be between -2 and 2, got {v}")));
                }
                *target = v;
            }
        }
        if let Some(seed) = self.seed {
            s.seed = seed as u64;
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => default_max,
            Some(m) if m >= 1 => m as usize,
            Some(m) => {
                return Err(ApiError::invalid_param("max_tokens", format!("max_tokens must be at least 1, got {m}")))
            }
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOPS {
            return Err(ApiError::invalid_param(
                "stop",
                format!("at most {MAX_STOPS} stop strings, got {}", stop.len()),
            ));
        }
        if logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                format!("at most {MAX_TOP_LOGPROBS} alternatives per token"),
            ));
        }
        s.validate().map_err(ApiError::invalid)?;
        let guesses = |name: &str, value: Option<i64>| match value {
            None => Ok(None),
            Some(n) if (0..=MAX_DRAFT as i64).contains(&n) => Ok(Some(n as usize)),
            Some(n) => Err(ApiError::invalid_param(name, format!("{name} takes 0 to {MAX_DRAFT} tokens, got {n}"))),
        };
        let lookup = guesses("lookup", self.lookup)?.unwrap_or(0);
        let draft_max = guesses("draft_max", self.draft_max)?;
        Ok(GenerateOptions {
            max_tokens,
            stop,
            sampling: s,
            logprobs,
            ignore_eos: self.ignore_eos,
            constraint: None,
            lookup,
            draft_max,
        })
    }
}

/// One message of a chat.
#[derive(Deserialize, Debug)]
pub struct InMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, a list of parts (`{"type": "text", "text": …}`), or null.
    #[serde(default)]
    pub content: Value,
    /// An assistant message's calls: `[{"id", "type": "function", "function": {"name", "arguments"}}]`.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

impl InMessage {
    /// The text of the message.
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            Value::Null => Ok(String::new()),
            Value::String(s) => Ok(s.clone()),
            Value::Array(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => out.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid_param(
                                "messages",
                                format!(
                                    "message parts of type {} are not supported; this model reads text",
                                    kind.unwrap_or("(missing)")
                                ),
                            ))
                        }
                    }
                }
                Ok(out)
            }
            other => Err(ApiError::invalid_param(
                "messages",
                format!("message content must be a string or a list of parts, got {other}"),
            )),
        }
    }
}

/// `POST /v1/chat/completions`.
#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<InMessage>,
    /// Report token log-probabilities.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token (needs `logprobs`).
    pub top_logprobs: Option<usize>,
    /// Functions the model may call: `[{"type": "function", "function": {…}}]`.
    pub tools: Option<Vec<Value>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "function": {"name": …}}`.
    pub tool_choice: Option<Value>,
    /// Whether one reply may hold several calls (default true).
    pub parallel_tool_calls: Option<bool>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": …}}`.
    pub response_format: Option<Value>,
    /// Think longer (kiln extension): `8`, or `{"n": 8, "choose": "vote" | "calc", "budget": "30s"}`.
    pub think: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
}

/// `POST /v1/completions`.
#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    /// A string, a list of strings, a list of token ids, or a list of those.
    pub prompt: Value,
    /// Put the prompt before the completion.
    #[serde(default)]
    pub echo: bool,
    /// Report log-probabilities with this many alternatives (0–5 in OpenAI's API).
    pub logprobs: Option<usize>,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
}

/// `POST /v1/embeddings`.
#[derive(Deserialize, Debug)]
pub struct EmbeddingRequest {
    /// A string, a list of strings, a list of token ids, or a list of those.
    pub input: Value,
    /// Which model.
    pub model: Option<String>,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
}

/// A prompt as the API allows it: text or token ids.
pub enum PromptInput {
    /// Text to tokenize.
    Text(String),
    /// Tokens as given.
    Tokens(Vec<u32>),
}

/// Reads `prompt`/`input`: a string, a list of strings, a list of ids, or a list of lists of ids.
pub fn prompt_inputs(value: &Value, field: &str) -> Result<Vec<PromptInput>, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            field,
            format!("{field} must be a string, a list of strings, a list of token ids, or a list of such lists"),
        )
    };
    let ids = |v: &[Value]| -> Option<Vec<u32>> {
        v.iter().map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok())).collect()
    };
    match value {
        Value::String(s) => Ok(vec![PromptInput::Text(s.clone())]),
        Value::Array(items) if items.is_empty() => Err(ApiError::invalid_param(field, format!("{field} is empty"))),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Ok(vec![PromptInput::Tokens(ids(items).ok_or_else(bad)?)])
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(PromptInput::Text(s.clone())),
                Value::Array(v) => ids(v).map(PromptInput::Tokens).ok_or_else(bad),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}
