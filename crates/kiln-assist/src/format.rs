//! Tool calls as text: how tool definitions, calls and results are written into a prompt, the
//! grammar a call is decoded under, and how calls are read back from the model's output,
//! whole or as a stream.
//!
//! kiln uses one call format, Hermes' (Qwen 2.5's and NousResearch's):
//!
//! ```text
//! <tool_call>
//! {"name": "calc", "arguments": {"expression": "48713*127"}}
//! </tool_call>
//! ```
//!
//! A model whose chat template renders `tools` itself (Qwen 2.5, Hermes) gets them that way.
//! For every other template (SmolLM2, Gemma 3, kiln's ChatML) kiln writes the generic form:
//! the definitions and the format go at the end of the system message, a call is the block
//! above in the assistant's turn, and a result comes back as a user turn holding
//! `<tool_response>…</tool_response>`.

use crate::Tool;
use kiln_generate::Grammar;
use kiln_text::{ChatMessage, ChatTemplate, TextError};
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
    /// The spec of a tool.
    pub fn of(tool: &dyn Tool) -> ToolSpec {
        ToolSpec { name: tool.name().into(), description: tool.description().into(), parameters: tool.parameters() }
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

/// Which calls the model may make (OpenAI's `tool_choice`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides: text, calls, or both.
    Auto,
    /// No calls.
    None,
    /// At least one call.
    Required,
    /// A call to this tool.
    Named(String),
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

/// The JSON schema of one call to `tool`: its name, then its arguments, in that order.
fn call_schema(tool: &ToolSpec) -> Value {
    json!({
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
        "required": ["name", "arguments"],
        "additionalProperties": false
    })
}

/// The grammar calls are decoded under, and the trigger that starts it (None: from the first
/// token). None when no call may be made.
pub fn call_grammar(
    tools: &[ToolSpec],
    choice: &ToolChoice,
    parallel: bool,
) -> Result<Option<(Grammar, Option<&'static str>)>, String> {
    let allowed: Vec<&ToolSpec> = match choice {
        ToolChoice::None => return Ok(None),
        ToolChoice::Named(name) => {
            let t = tools
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| format!("tool_choice names {name:?}, which is not among the tools"))?;
            vec![t]
        }
        ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
    };
    if allowed.is_empty() {
        return Ok(None);
    }
    let schemas: Vec<Value> = allowed.iter().map(|t| call_schema(t)).collect();
    let schema = if schemas.len() == 1 { schemas[0].clone() } else { json!({"anyOf": schemas}) };
    let schema = kiln_generate::constraint::compact(schema);
    let call = format!("\"{CALL_OPEN}\\n\" %json {schema} \"\\n{CALL_CLOSE}\"");
    Ok(Some(match choice {
        ToolChoice::Auto => (Grammar::Lark(format!("start: {call}")), Some(CALL_OPEN)),
        _ if parallel => (Grammar::Lark(format!("start: call (\"\\n\" call)*\ncall: {call}")), None),
        _ => (Grammar::Lark(format!("start: {call}")), None),
    }))
}

/// A fresh call id.
pub fn new_call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("call_{:012x}", (t ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & 0xffff_ffff_ffff)
}

/// Reads a call's JSON (`{"name": …, "arguments": {…}}`).
fn parse_call(json_text: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(json_text.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").cloned().unwrap_or(json!({}));
    let arguments = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(ToolCall { id: new_call_id(), name, arguments })
}

/// A reply split into its text and its calls. Blocks that do not parse stay in the text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// The text outside the calls, trimmed.
    pub content: String,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

/// Splits a whole reply into text and calls.
pub fn parse(text: &str) -> Parsed {
    let mut stream = CallStream::default();
    let mut events = stream.push(text);
    events.extend(stream.finish());
    let mut out = Parsed::default();
    for e in events {
        match e {
            StreamEvent::Content(t) => out.content.push_str(&t),
            StreamEvent::CallStart { id, name, .. } => out.calls.push(ToolCall { id, name, arguments: String::new() }),
            StreamEvent::Arguments { fragment, .. } => {
                if let Some(c) = out.calls.last_mut() {
                    c.arguments.push_str(&fragment);
                }
            }
        }
    }
    out.content = out.content.trim().to_string();
    out
}

/// What a streamed reply holds, piece by piece (as OpenAI streams it: a call's id and name
/// first, then fragments of its arguments).
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// Text outside calls.
    Content(String),
    /// A call begins.
    CallStart {
        /// Its position among the reply's calls.
        index: usize,
        /// Its id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of a call's arguments.
    Arguments {
        /// The call's position.
        index: usize,
        /// The next piece of the arguments' JSON text.
        fragment: String,
    },
}

/// Reads calls out of a reply as it streams: text is passed on (held back only while it
/// could be the start of [`CALL_OPEN`]), and a call is announced as soon as its name is
/// known.
#[derive(Debug, Default)]
pub struct CallStream {
    buf: String,
    in_call: bool,
    /// Where the arguments start in `buf`, once the call has been announced.
    args_from: Option<usize>,
    sent: usize,
    calls: usize,
}

/// The canonical head of a call, as the grammar writes it.
const HEAD: &str = "{\"name\": \"";
const ARGS: &str = "\", \"arguments\": ";
/// What follows the arguments: the call object's `}`, then the closer.
const TAIL_HOLD: usize = "}\n".len() + CALL_CLOSE.len() + 8;

impl CallStream {
    /// Takes the next piece of text.
    pub fn push(&mut self, piece: &str) -> Vec<StreamEvent> {
        self.buf.push_str(piece);
        let mut events = Vec::new();
        loop {
            let progressed = if self.in_call { self.step_call(&mut events) } else { self.step_text(&mut events) };
            if !progressed {
                return events;
            }
        }
    }

    /// Ends the stream: held-back text is released; an unfinished call keeps what it had.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        let rest = std::mem::take(&mut self.buf);
        if !self.in_call {
            if !rest.is_empty() {
                events.push(StreamEvent::Content(rest));
            }
        } else if let Some(from) = self.args_from {
            let tail = rest[from.max(self.sent)..].to_string();
            if !tail.is_empty() {
                events.push(StreamEvent::Arguments { index: self.calls - 1, fragment: tail });
            }
        } else {
            events.push(StreamEvent::Content(format!("{CALL_OPEN}{rest}")));
        }
        self.in_call = false;
        self.args_from = None;
        events
    }

    fn step_text(&mut self, events: &mut Vec<StreamEvent>) -> bool {
        if let Some(at) = self.buf.find(CALL_OPEN) {
            if at > 0 {
                events.push(StreamEvent::Content(self.buf[..at].to_string()));
            }
            self.buf.drain(..at + CALL_OPEN.len());
            self.in_call = true;
            self.args_from = None;
            self.sent = 0;
            return true;
        }
        // Hold back a tail that could still become the opener.
        let mut safe = self.buf.len();
        for k in (1..CALL_OPEN.len()).rev() {
            if self.buf.ends_with(&CALL_OPEN[..k]) {
                safe = self.buf.len() - k;
                break;
            }
        }
        if safe > 0 {
            events.push(StreamEvent::Content(self.buf[..safe].to_string()));
            self.buf.drain(..safe);
        }
        false
    }

    fn step_call(&mut self, events: &mut Vec<StreamEvent>) -> bool {
        if self.args_from.is_none() {
            let lead = self.buf.len() - self.buf.trim_start().len();
            let body = &self.buf[lead..];
            if let Some(after) = body.strip_prefix(HEAD) {
                if let Some(end) = after.find(ARGS) {
                    let name = after[..end].to_string();
                    self.args_from = Some(lead + HEAD.len() + end + ARGS.len());
                    self.sent = self.args_from.unwrap_or(0);
                    events.push(StreamEvent::CallStart { index: self.calls, id: new_call_id(), name });
                    self.calls += 1;
                }
            }
        }
        if let Some(close) = self.buf.find(CALL_CLOSE) {
            let body = self.buf[..close].to_string();
            self.buf.drain(..close + CALL_CLOSE.len());
            self.in_call = false;
            match self.args_from.take() {
                Some(from) => {
                    // The arguments end before the call object's closing brace.
                    let args = body[from..].trim_end();
                    let args = args.strip_suffix('}').unwrap_or(args);
                    if self.sent < from + args.len() {
                        let fragment = body[self.sent.max(from)..from + args.len()].to_string();
                        events.push(StreamEvent::Arguments { index: self.calls - 1, fragment });
                    }
                }
                None => match parse_call(&body) {
                    Some(call) => {
                        events.push(StreamEvent::CallStart { index: self.calls, id: call.id, name: call.name });
                        events.push(StreamEvent::Arguments { index: self.calls, fragment: call.arguments });
                        self.calls += 1;
                    }
                    None => events.push(StreamEvent::Content(format!("{CALL_OPEN}{body}{CALL_CLOSE}"))),
                },
            }
            return true;
        }
        if let Some(from) = self.args_from {
            let mut safe = self.buf.len().saturating_sub(TAIL_HOLD).max(from);
            while !self.buf.is_char_boundary(safe) {
                safe -= 1;
            }
            if safe > self.sent {
                events.push(StreamEvent::Arguments {
                    index: self.calls - 1,
                    fragment: self.buf[self.sent..safe].to_string(),
                });
                self.sent = safe;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "Let me work it out.\n<tool_call>\n{\"name\": \"calc\", \"arguments\": {\"expression\": \"48713*127\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print('}')\"}}\n</tool_call>";

    #[test]
    fn whole_replies_split_into_text_and_calls() {
        let p = parse(REPLY);
        assert_eq!(p.content, "Let me work it out.");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(
            (p.calls[0].name.as_str(), p.calls[0].arguments.as_str()),
            ("calc", r#"{"expression": "48713*127"}"#)
        );
        assert_eq!(p.calls[1].arguments, r#"{"code": "print('}')"}"#);
        assert_ne!(p.calls[0].id, p.calls[1].id);
        // A block that is not a call stays text; so does text with no calls.
        assert_eq!(parse("a <tool_call>not json</tool_call> b").content, "a <tool_call>not json</tool_call> b");
        assert_eq!(parse("1 < 2").content, "1 < 2");
        // Non-canonical spacing still parses (output decoded without the grammar).
        let loose = parse("<tool_call>{\"arguments\":{\"x\":1},\"name\":\"f\"}</tool_call>");
        assert_eq!((loose.calls[0].name.as_str(), loose.calls[0].arguments.as_str()), ("f", r#"{"x":1}"#));
    }

    #[test]
    fn streamed_pieces_give_the_same_calls_whatever_the_cut() {
        let whole = parse(REPLY);
        for size in 1..12 {
            let mut s = CallStream::default();
            let mut events = Vec::new();
            let chars: Vec<char> = REPLY.chars().collect();
            for piece in chars.chunks(size) {
                events.extend(s.push(&piece.iter().collect::<String>()));
            }
            events.extend(s.finish());
            let (mut content, mut names, mut args) = (String::new(), vec![], vec![String::new(); 2]);
            for e in &events {
                match e {
                    StreamEvent::Content(t) => content.push_str(t),
                    StreamEvent::CallStart { index, name, .. } => names.push((*index, name.clone())),
                    StreamEvent::Arguments { index, fragment } => args[*index].push_str(fragment),
                }
            }
            assert_eq!(content.trim(), whole.content, "size {size}");
            assert_eq!(names, vec![(0, "calc".to_string()), (1, "python".to_string())], "size {size}");
            assert_eq!(args[0], whole.calls[0].arguments, "size {size}");
            assert_eq!(args[1], whole.calls[1].arguments, "size {size}");
        }
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

    #[test]
    fn grammars_follow_the_choice() {
        let tools =
            vec![ToolSpec { name: "calc".into(), description: String::new(), parameters: json!({"type": "object"}) }];
        assert!(call_grammar(&tools, &ToolChoice::None, true).unwrap().is_none());
        let (_, trigger) = call_grammar(&tools, &ToolChoice::Auto, true).unwrap().unwrap();
        assert_eq!(trigger, Some(CALL_OPEN));
        let (g, trigger) = call_grammar(&tools, &ToolChoice::Required, false).unwrap().unwrap();
        assert!(trigger.is_none() && matches!(g, Grammar::Lark(ref s) if s.starts_with("start: \"<tool_call>")));
        assert!(call_grammar(&tools, &ToolChoice::Named("nope".into()), true).unwrap_err().contains("nope"));
    }
}
