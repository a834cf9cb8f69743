//! Tool calls as text: how tool definitions, calls and results are written into a prompt, the
//! grammar a call is decoded under, and how calls are read back from the model's output,
//! whole or as a stream.
//!
//! The call format and its rendering into prompts live in kiln-text ([`kiln_text::tool_calls`],
//! re-exported here), since supervised training renders conversations with calls the same way.

use kiln_generate::Grammar;
pub use kiln_text::tool_calls::{
    call_text, generic_messages, render, Message, ToolCall, ToolSpec, CALL_CLOSE, CALL_OPEN,
};
use serde_json::{json, Value};

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
