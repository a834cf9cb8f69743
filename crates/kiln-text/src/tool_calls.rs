//! Tool calls in conversations, as text: the definitions, calls and results of a conversation
//! written into a prompt in the one call format kiln uses, Hermes' (Qwen 2.5's and
//! NousResearch's):
//!
//! ```text
//! <tool_call>
//! {"name": "calc", "arguments": {"expression": "48713*127"}}
//! </tool_call>
//! ```
//!
//! A chat template that renders `tools` itself (Qwen 2.5, Hermes) gets them that way. For every
//! other template (SmolLM2, Gemma 3, kiln's ChatML) the generic form: the definitions and the
//! format at the end of the system message, a call as the block above in the assistant's turn,
//! a result back as a user turn holding `<tool_response>…</tool_response>`. Inference (kiln-assist)
//! and supervised training (conversations with calls) render through the same functions.

use crate::{ChatMessage, ChatTemplate, TextError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Opens a call in the model's output.
pub const CALL_OPEN: &str = "<tool_call>";
/// Closes a call.
pub const CALL_CLOSE: &str = "</tool_call>";

/// A tool as the model sees it (OpenAI's `function` object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// The JSON schema of its arguments.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
}

fn empty_object_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

impl ToolSpec {
    /// A definition as clients and data sets write it: OpenAI's `{"type": "function",
    /// "function": {…}}` or the bare `{"name", "description", "parameters"}`.
    pub fn from_json(v: &Value) -> Result<ToolSpec, String> {
        let f = v.get("function").unwrap_or(v);
        serde_json::from_value(f.clone()).map_err(|e| format!("a tool definition does not parse: {e}"))
    }

    /// OpenAI's `{"type": "function", "function": {…}}`.
    pub fn to_openai(&self) -> Value {
        json!({"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}})
    }
}

/// A call the model made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Unique within the conversation; the result message quotes it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, a JSON object written as a string (as OpenAI sends them).
    pub arguments: String,
}

/// A message of a conversation that may hold tool calls and results (OpenAI's roles:
/// `system`, `user`, `assistant`, `tool`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: String,
    /// The text (a tool's result for `tool`).
    #[serde(default)]
    pub content: String,
    /// The calls an assistant message makes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A plain message.
    pub fn new(role: &str, content: impl Into<String>) -> Message {
        Message { role: role.into(), content: content.into(), ..Default::default() }
    }
}

/// The system-message text that teaches the generic format.
fn generic_instructions(tools: &[ToolSpec]) -> String {
    let mut s =
        String::from("You can call functions to help answer. Their signatures are below, as JSON schemas:\n<tools>\n");
    for t in tools {
        s.push_str(&t.to_openai().to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\nTo call a function, write exactly:\n<tool_call>\n{\"name\": <function name>, \"arguments\": <arguments as a JSON object>}\n</tool_call>\nThe result comes back inside <tool_response></tool_response>. Use it to answer.",
    );
    s
}

/// Writes a call in the format, as the grammar writes it: the name first, the arguments'
/// text as the model or client wrote it (when it is JSON).
pub fn call_text(call: &ToolCall) -> String {
    let args = call.arguments.trim();
    let args = if serde_json::from_str::<Value>(args).is_ok() {
        args.to_string()
    } else {
        Value::String(args.into()).to_string()
    };
    format!("{CALL_OPEN}\n{{\"name\": {}, \"arguments\": {args}}}\n{CALL_CLOSE}", Value::String(call.name.clone()))
}

/// Renders a conversation with tools into the prompt text.
pub fn render(
    template: &ChatTemplate,
    messages: &[Message],
    tools: &[ToolSpec],
    add_generation_prompt: bool,
) -> Result<String, TextError> {
    if template.supports_tools() {
        let msgs: Vec<Value> = messages.iter().map(native_message).collect();
        let defs: Vec<Value> = tools.iter().map(ToolSpec::to_openai).collect();
        let defs = (!defs.is_empty()).then(|| Value::Array(defs));
        return template.render_json(&Value::Array(msgs), defs.as_ref(), add_generation_prompt);
    }
    template.render(&generic_messages(messages, tools), add_generation_prompt)
}

/// A message in the shape transformers' templates read (arguments as an object).
fn native_message(m: &Message) -> Value {
    let mut v = json!({"role": m.role, "content": m.content});
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                let args: Value = serde_json::from_str(&c.arguments).unwrap_or(Value::String(c.arguments.clone()));
                json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}})
            })
            .collect();
        v["tool_calls"] = Value::Array(calls);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

/// The generic format as plain messages: instructions in the system message, calls as text
/// in the assistant's turn, results as user turns (consecutive results share one).
pub fn generic_messages(messages: &[Message], tools: &[ToolSpec]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::new();
    let mut last_was_tool = false;
    for m in messages {
        match m.role.as_str() {
            "tool" => {
                let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
                match out.last_mut() {
                    Some(prev) if last_was_tool => {
                        prev.content.push('\n');
                        prev.content.push_str(&block);
                    }
                    _ => out.push(ChatMessage::new("user", block)),
                }
                last_was_tool = true;
                continue;
            }
            "assistant" if !m.tool_calls.is_empty() => {
                let mut text = m.content.trim().to_string();
                for c in &m.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&call_text(c));
                }
                out.push(ChatMessage::new("assistant", text));
            }
            role => out.push(ChatMessage::new(role, m.content.clone())),
        }
        last_was_tool = false;
    }
    if !tools.is_empty() {
        let instructions = generic_instructions(tools);
        match out.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{instructions}", first.content.trim_end());
            }
            _ => out.insert(0, ChatMessage::new("system", instructions)),
        }
    }
    out
}

/// JSON on one line with `", "` and `": "` between items, as Python's `json.dumps` writes it and
/// as calls are decoded under their grammar, so training text holds the tokens inference allows.
pub fn spaced_json(v: &Value) -> String {
    let mut out = String::new();
    write_spaced(v, &mut out);
    out
}

fn write_spaced(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            out.push('{');
            for (i, (k, x)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_spaced(x, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_spaced(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_json_writes_as_python_does() {
        let v: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"c":"x y"}]}"#).unwrap();
        assert_eq!(spaced_json(&v), r#"{"a": null, "b": [1, {"c": "x y"}]}"#);
    }

    #[test]
    fn the_generic_format_renders_tools_calls_and_results() {
        let tools = vec![ToolSpec {
            name: "calc".into(),
            description: "Arithmetic.".into(),
            parameters: json!({"type": "object"}),
        }];
        let call = ToolCall { id: "call_1".into(), name: "calc".into(), arguments: r#"{"expression":"2+2"}"#.into() };
        let msgs = vec![
            Message::new("user", "What is 2+2?"),
            Message { role: "assistant".into(), tool_calls: vec![call], ..Default::default() },
            Message {
                role: "tool".into(),
                content: "4".into(),
                tool_call_id: Some("call_1".into()),
                ..Default::default()
            },
        ];
        let text = render(&ChatTemplate::chatml(), &msgs, &tools, true).unwrap();
        assert!(text.starts_with("<|im_start|>system\nYou can call functions"), "{text}");
        assert!(text.contains("\"name\":\"calc\""), "{text}");
        assert!(text.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"calc\", \"arguments\": {\"expression\":\"2+2\"}}\n</tool_call><|im_end|>"), "{text}");
        assert!(
            text.contains("<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
            "{text}"
        );
    }

    #[test]
    fn a_template_with_tool_support_renders_them_itself() {
        let src = "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}[{{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}{% endif %}\n{% endfor %}";
        let t = ChatTemplate::from_source(src, "", "").unwrap();
        assert!(t.supports_tools());
        let tools =
            vec![ToolSpec { name: "calc".into(), description: String::new(), parameters: json!({"type": "object"}) }];
        let call = ToolCall { id: "c".into(), name: "calc".into(), arguments: r#"{"expression": "1+1"}"#.into() };
        let msgs = vec![
            Message::new("user", "hi"),
            Message { role: "assistant".into(), tool_calls: vec![call], ..Default::default() },
        ];
        let text = render(&t, &msgs, &tools, false).unwrap();
        // trim_blocks eats the newline after each block tag, as in transformers.
        assert_eq!(text, "TOOLS:calc;user:hiassistant:[calc {\"expression\": \"1+1\"}]");
    }
}
