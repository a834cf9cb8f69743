//! Tool calling and structured output in `/v1/chat/completions`: reading `tools`,
//! `tool_choice`, `response_format` and tool messages, and the grammar the reply is decoded
//! under. A schema the decoder cannot follow is a 400 that names it.

use crate::error::ApiError;
use crate::openai::ChatRequest;
use kiln_assist::format::{self, Message, ToolCall, ToolChoice, ToolSpec};
use kiln_generate::{Constraint, Grammar, GrammarCompiler};
use serde_json::{json, Value};

/// What a chat request asks of the decoder beyond plain text.
pub struct Plan {
    /// The tools, as the prompt shows them.
    pub specs: Vec<ToolSpec>,
    /// The grammar the reply follows, if any.
    pub grammar: Option<(Grammar, Option<&'static str>)>,
    /// Whether replies are read for tool calls.
    pub calls: bool,
}

/// Reads `tools`, `tool_choice`, `parallel_tool_calls` and `response_format`.
pub fn plan(req: &ChatRequest) -> Result<Plan, ApiError> {
    let mut specs = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let bad = |msg: &str| ApiError::invalid_param("tools", format!("tools[{i}]: {msg}"));
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad("only tools of type \"function\" are supported"));
        }
        let f = t.get("function").ok_or_else(|| bad("missing \"function\""))?;
        let spec: ToolSpec = serde_json::from_value(f.clone()).map_err(|e| bad(&e.to_string()))?;
        if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad("a function name is 1 or more of a-z, A-Z, 0-9, _ and -"));
        }
        if !spec.parameters.is_object() {
            return Err(bad("\"parameters\" must be a JSON schema object"));
        }
        specs.push(spec);
    }
    let choice = tool_choice(req.tool_choice.as_ref())?;
    if specs.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(ApiError::invalid_param("tool_choice", "tool_choice asks for a call, but there are no tools"));
    }
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let calls =
        format::call_grammar(&specs, &choice, parallel).map_err(|e| ApiError::invalid_param("tool_choice", e))?;
    let structured = response_schema(req.response_format.as_ref())?;
    let grammar = match (calls, structured) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_param(
                "response_format",
                "kiln cannot yet enforce response_format and tool calls in one request; send tool_choice \"none\" or no response_format",
            ))
        }
        (Some(g), None) => Some(g),
        (None, Some(schema)) => Some((Grammar::JsonSchema(schema), None)),
        (None, None) => None,
    };
    let calls = !specs.is_empty() && choice != ToolChoice::None;
    Ok(Plan { specs, grammar, calls })
}

/// The schema `response_format` asks for, if any.
fn response_schema(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(f) = format else { return Ok(None) };
    let bad = |msg: String| ApiError::invalid_param("response_format", msg);
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => {
            let schema = f
                .pointer("/json_schema/schema")
                .ok_or_else(|| bad("json_schema needs {\"json_schema\": {\"name\": …, \"schema\": {…}}}".into()))?;
            Ok(Some(schema.clone()))
        }
        other => Err(bad(format!("response_format type must be text, json_object or json_schema, got {other:?}"))),
    }
}

/// Compiles the plan's grammar; a grammar the engine refuses is a 400 naming the problem.
pub fn constraint(compiler: &GrammarCompiler, plan: &Plan) -> Result<Option<Constraint>, ApiError> {
    let Some((grammar, trigger)) = &plan.grammar else { return Ok(None) };
    let field = if plan.calls { "tools" } else { "response_format" };
    compiler.compile(grammar, *trigger).map(Some).map_err(|e| ApiError::invalid_param(field, format!("{field}: {e}")))
}

/// The request's messages in kiln-assist's shape.
pub fn messages(req: &ChatRequest) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool" | "developer") {
            return Err(ApiError::invalid_param(
                "messages",
                format!("unknown role `{}`; use system, user, assistant or tool", m.role),
            ));
        }
        let role = if m.role == "developer" { "system" } else { m.role.as_str() };
        let mut calls = Vec::new();
        for c in m.tool_calls.iter().flatten() {
            let name = c.pointer("/function/name").and_then(Value::as_str);
            let args = c.pointer("/function/arguments");
            let (Some(name), Some(args)) = (name, args) else {
                return Err(ApiError::invalid_param(
                    "messages",
                    "a tool call needs function.name and function.arguments",
                ));
            };
            let arguments = match args {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let id = c.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            calls.push(ToolCall { id, name: name.to_string(), arguments });
        }
        out.push(Message {
            role: role.into(),
            content: m.text()?,
            tool_calls: calls,
            tool_call_id: m.tool_call_id.clone(),
        });
    }
    Ok(out)
}

/// Reads `tool_choice`: `auto` (or absent), `none`, `required` or a named function.
pub fn tool_choice(value: Option<&Value>) -> Result<ToolChoice, ApiError> {
    Ok(match value {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!("tool_choice must be auto, none, required or a named function, got {other:?}"),
                ))
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Named(name.to_string()),
            None => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": …}}",
                ))
            }
        },
    })
}
