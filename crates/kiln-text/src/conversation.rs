//! Conversations and comparisons in the shapes the ecosystem stores them, read into one form.
//!
//! Supervised rows ([`Conversation`]): TRL's `{"messages": [...]}` and `{"prompt", "completion"}`
//! (strings or message lists), Alpaca's `{"instruction", "input", "output"}` (with optional
//! `system` and `history`), LLaMA-Factory / ShareGPT's `{"conversations": [{"from", "value"}]}`,
//! and question/answer rows (`{"question", "answer"}`, as GSM8K). Tool calls come as OpenAI's
//! `tool_calls` / `tool` messages with the row's `tools`, or LLaMA-Factory's `function_call` /
//! `observation` turns; they are written in kiln's call format (see [`crate::tool_calls`]), so
//! training teaches the calls the agent loop reads.
//!
//! Comparison rows ([`Preference`]): TRL's `{"prompt", "chosen", "rejected"}` (strings or message
//! lists, prompt optional when chosen and rejected are whole conversations sharing it),
//! LLaMA-Factory's `{"conversations", "chosen": {"from", "value"}, "rejected": …}`, and
//! Anthropic HH's `{"chosen", "rejected"}` transcripts (`\n\nHuman: … \n\nAssistant: …`).
//!
//! Files are JSON arrays or JSON Lines, optionally gzip-compressed; a row that fits no shape is
//! reported with its line (or item) number, never dropped silently.

use crate::tool_calls::{generic_messages, spaced_json, Message, ToolCall, ToolSpec};
use crate::{ChatMessage, TextError};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// A supervised example: training learns the assistant turns.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    /// The messages, in order.
    pub messages: Vec<ChatMessage>,
}

/// A comparison: the same prompt, a better and a worse continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Preference {
    /// The conversation so far.
    pub prompt: Vec<ChatMessage>,
    /// The preferred continuation (usually one assistant message).
    pub chosen: Vec<ChatMessage>,
    /// The other one.
    pub rejected: Vec<ChatMessage>,
}

/// A row that fits no known shape.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRow {
    /// Where it is: `line N` (JSON Lines) or `item N` (JSON array), counting from 1.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// The rows of a file that parsed, each with its location, and those that did not.
#[derive(Debug)]
pub struct Rows<T> {
    /// Parsed rows and their locations.
    pub rows: Vec<(String, T)>,
    /// Rows that fit no shape.
    pub bad: Vec<BadRow>,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        // Content given as parts: keep the text ones.
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""))
        }
        _ => None,
    }
}

/// Maps the role names of the various formats onto system / user / assistant / tool.
fn normalise_role(role: &str) -> Option<&'static str> {
    Some(match role {
        "system" => "system",
        "user" | "human" => "user",
        "assistant" | "gpt" | "model" | "bot" => "assistant",
        // A tool call is something the assistant says; its result is the tool's turn.
        "function_call" => "assistant",
        "tool" | "observation" | "function" | "ipython" => "tool",
        _ => return None,
    })
}

/// A list of `{"role", "content"}` or `{"from", "value"}` messages, as plain chat messages
/// (tool calls and results written in the generic format when there are any).
fn messages_of(v: &Value) -> Result<Vec<ChatMessage>, String> {
    Ok(chat_messages(&structured_messages(v)?, &[]))
}

/// The calls of a LLaMA-Factory `function_call` turn: `{"name", "arguments"}` or a list of them.
fn calls_of_function_turn(text: &str, next_id: &mut usize) -> Result<Vec<ToolCall>, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("a function_call turn is not JSON {{\"name\", \"arguments\"}}: {e}"))?;
    let items = match v {
        Value::Array(items) => items,
        one => vec![one],
    };
    items.iter().map(|c| call_of(c, next_id)).collect()
}

/// One call: `{"name", "arguments"}` or OpenAI's `{"id", "type", "function": {"name", "arguments"}}`,
/// arguments as an object or as the JSON string OpenAI sends.
fn call_of(v: &Value, next_id: &mut usize) -> Result<ToolCall, String> {
    let f = v.get("function").unwrap_or(v);
    let name = f.get("name").and_then(Value::as_str).ok_or("a tool call has no name")?.to_string();
    // Written as the call grammar writes arguments, so training teaches what decoding allows.
    let arguments = match f.get("arguments") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_or_else(|_| s.clone(), |v| spaced_json(&v)),
        Some(other) => spaced_json(other),
    };
    let id = match v.get("id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => {
            *next_id += 1;
            format!("call_{next_id}")
        }
    };
    Ok(ToolCall { id, name, arguments })
}

/// Messages with their tool calls and results: OpenAI's `tool_calls` and `tool_call_id`, or
/// LLaMA-Factory's `function_call` and `observation` turns (a result answers the oldest call
/// still open).
fn structured_messages(v: &Value) -> Result<Vec<Message>, String> {
    let items = v.as_array().ok_or("messages must be a list")?;
    let mut next_id = 0;
    let mut open: std::collections::VecDeque<String> = Default::default();
    let mut out = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let raw_role = m
            .get("role")
            .or_else(|| m.get("from"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("message {} has no role (or from)", i + 1))?;
        let role =
            normalise_role(raw_role).ok_or_else(|| format!("message {} has an unknown role {raw_role:?}", i + 1))?;
        let calls_given = m.get("tool_calls").and_then(Value::as_array).filter(|c| !c.is_empty());
        let content = match m.get("content").or_else(|| m.get("value")) {
            Some(c) => text_of(c).ok_or_else(|| format!("message {} content is not text", i + 1))?,
            None if calls_given.is_some() => String::new(),
            None => return Err(format!("message {} has no content (or value)", i + 1)),
        };
        let mut message = Message::new(role, content);
        if raw_role == "function_call" {
            message.tool_calls = calls_of_function_turn(&message.content, &mut next_id)
                .map_err(|e| format!("message {}: {e}", i + 1))?;
            message.content.clear();
        } else if let Some(calls) = calls_given {
            message.tool_calls = calls
                .iter()
                .map(|c| call_of(c, &mut next_id))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("message {}: {e}", i + 1))?;
        }
        open.extend(message.tool_calls.iter().map(|c| c.id.clone()));
        if role == "tool" {
            let given = m.get("tool_call_id").and_then(Value::as_str).map(String::from);
            if let Some(id) = &given {
                open.retain(|o| o != id);
            }
            message.tool_call_id = given.or_else(|| open.pop_front());
        }
        out.push(message);
    }
    Ok(out)
}

/// The tool definitions of a row (`tools`: a list, or that list as a JSON string as
/// LLaMA-Factory stores it).
fn tools_of(row: &Value) -> Result<Vec<ToolSpec>, String> {
    let parsed;
    let list = match row.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| format!("tools is not a JSON list: {e}"))?;
            &parsed
        }
        Some(v) => v,
    };
    list.as_array().ok_or("tools must be a list of definitions")?.iter().map(ToolSpec::from_json).collect()
}

/// Plain chat messages; a conversation with tools, calls or results is written in the
/// generic call format, exactly as inference writes it for templates without tool support.
fn chat_messages(messages: &[Message], tools: &[ToolSpec]) -> Vec<ChatMessage> {
    let uses_tools = !tools.is_empty() || messages.iter().any(|m| !m.tool_calls.is_empty() || m.role == "tool");
    if uses_tools {
        generic_messages(messages, tools)
    } else {
        messages.iter().map(|m| ChatMessage::new(m.role.as_str(), m.content.clone())).collect()
    }
}

/// A prompt or a completion: a string (one message of `role`) or a message list.
fn turns(v: &Value, role: &str) -> Result<Vec<ChatMessage>, String> {
    match v {
        Value::String(s) => Ok(vec![ChatMessage::new(role, s.clone())]),
        Value::Array(_) => messages_of(v),
        Value::Object(_) => messages_of(&Value::Array(vec![v.clone()])),
        _ => Err(format!("expected a string or a list of messages for the {role} side")),
    }
}

fn system_prefix(row: &Value) -> Vec<ChatMessage> {
    match row.get("system").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => vec![ChatMessage::new("system", s)],
        _ => Vec::new(),
    }
}

fn has_assistant(messages: &[ChatMessage]) -> Result<(), String> {
    if messages.iter().any(|m| m.role == "assistant") {
        Ok(())
    } else {
        Err("the conversation has no assistant turn to learn".into())
    }
}

/// Reads one supervised row in any of the shapes above.
pub fn conversation_from_json(row: &Value) -> Result<Conversation, String> {
    let obj = row.as_object().ok_or("a row must be a JSON object")?;
    let messages = if let Some(m) = obj.get("messages") {
        chat_messages(&structured_messages(m)?, &tools_of(row)?)
    } else if let (Some(p), Some(c)) = (obj.get("prompt"), obj.get("completion")) {
        let mut m = turns(p, "user")?;
        m.extend(turns(c, "assistant")?);
        m
    } else if let (Some(instruction), Some(output)) = (obj.get("instruction"), obj.get("output")) {
        let mut m = system_prefix(row);
        if let Some(history) = obj.get("history").and_then(Value::as_array) {
            for pair in history {
                let pair = pair
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .ok_or("history must be a list of [question, answer] pairs")?;
                m.push(ChatMessage::new("user", text_of(&pair[0]).unwrap_or_default()));
                m.push(ChatMessage::new("assistant", text_of(&pair[1]).unwrap_or_default()));
            }
        }
        let mut question = text_of(instruction).ok_or("instruction must be text")?;
        let input = obj.get("input").and_then(text_of).unwrap_or_default();
        if !input.is_empty() {
            question = format!("{question}\n{input}");
        }
        m.push(ChatMessage::new("user", question));
        m.push(ChatMessage::new("assistant", text_of(output).ok_or("output must be text")?));
        m
    } else if let Some(c) = obj.get("conversations") {
        let mut m: Vec<Message> =
            system_prefix(row).into_iter().map(|s| Message::new(s.role.as_str(), s.content)).collect();
        m.extend(structured_messages(c)?);
        chat_messages(&m, &tools_of(row)?)
    } else if let (Some(q), Some(a)) = (obj.get("question"), obj.get("answer")) {
        vec![
            ChatMessage::new("user", text_of(q).ok_or("question must be text")?),
            ChatMessage::new("assistant", text_of(a).ok_or("answer must be text")?),
        ]
    } else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown row shape (keys: {}); expected messages, prompt+completion, instruction+output, conversations, or question+answer",
            keys.join(", ")
        ));
    };
    has_assistant(&messages)?;
    Ok(Conversation { messages })
}

/// Reads one comparison row in any of the shapes above.
pub fn preference_from_json(row: &Value) -> Result<Preference, String> {
    let obj = row.as_object().ok_or("a row must be a JSON object")?;
    let (chosen, rejected) = match (obj.get("chosen"), obj.get("rejected")) {
        (Some(c), Some(r)) => (c, r),
        _ => return Err("a comparison row needs chosen and rejected".into()),
    };
    let pref = if let Some(p) = obj.get("prompt") {
        Preference {
            prompt: turns(p, "user")?,
            chosen: turns(chosen, "assistant")?,
            rejected: turns(rejected, "assistant")?,
        }
    } else if let Some(c) = obj.get("conversations") {
        let mut prompt = system_prefix(row);
        prompt.extend(messages_of(c)?);
        Preference { prompt, chosen: turns(chosen, "assistant")?, rejected: turns(rejected, "assistant")? }
    } else if let (Some(c), Some(r)) = (chosen.as_str(), rejected.as_str()) {
        let (c, r) = (transcript(c)?, transcript(r)?);
        split_shared_prompt(c, r)?
    } else {
        split_shared_prompt(messages_of(chosen)?, messages_of(rejected)?)?
    };
    if pref.chosen.is_empty() || pref.rejected.is_empty() {
        return Err("chosen and rejected must each hold a reply".into());
    }
    if pref.chosen == pref.rejected {
        return Err("chosen and rejected are the same".into());
    }
    Ok(pref)
}

/// Two whole conversations: the prompt is everything before the last user turn's reply that
/// they share; the rest of each is its continuation.
fn split_shared_prompt(chosen: Vec<ChatMessage>, rejected: Vec<ChatMessage>) -> Result<Preference, String> {
    let shared = chosen.iter().zip(&rejected).take_while(|(a, b)| a == b).count();
    // The continuation starts at an assistant turn: back off to the last non-assistant message.
    let mut cut = shared;
    while cut > 0 && chosen[cut - 1].role == "assistant" {
        cut -= 1;
    }
    if cut == 0 {
        return Err("chosen and rejected share no prompt".into());
    }
    Ok(Preference {
        prompt: chosen[..cut].to_vec(),
        chosen: chosen[cut..].to_vec(),
        rejected: rejected[cut..].to_vec(),
    })
}

/// An HH-style transcript: `\n\nHuman: …\n\nAssistant: …` turns.
fn transcript(text: &str) -> Result<Vec<ChatMessage>, String> {
    const MARKERS: [(&str, &str); 2] = [("\n\nHuman:", "user"), ("\n\nAssistant:", "assistant")];
    let mut turns = Vec::new();
    let mut rest = text;
    let next_marker =
        |s: &str| MARKERS.iter().filter_map(|&(m, role)| s.find(m).map(|i| (i, m, role))).min_by_key(|&(i, _, _)| i);
    let Some((start, _, _)) = next_marker(rest) else {
        return Err("a transcript needs \\n\\nHuman: and \\n\\nAssistant: turns".into());
    };
    rest = &rest[start..];
    while let Some((_, marker, role)) = next_marker(rest) {
        let body = &rest[marker.len()..];
        let end = next_marker(body).map_or(body.len(), |(i, _, _)| i);
        turns.push(ChatMessage::new(role, body[..end].trim()));
        rest = &body[end..];
    }
    if !turns.iter().any(|m| m.role == "assistant") {
        return Err("the transcript has no Assistant turn".into());
    }
    Ok(turns)
}

/// Reads a JSON array or JSON Lines file (`.gz` decompressed), parsing each row with `parse`.
pub fn read_rows<T>(path: &Path, parse: impl Fn(&Value) -> Result<T, String>) -> Result<Rows<T>, TextError> {
    let io = |source| TextError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_to_string(&mut text).map_err(io)?;
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text).map_err(io)?;
    }
    let mut out = Rows { rows: Vec::new(), bad: Vec::new() };
    let mut take = |location: String, value: Result<Value, String>| match value.and_then(|v| parse(&v)) {
        Ok(row) => out.rows.push((location, row)),
        Err(message) => out.bad.push(BadRow { location, message }),
    };
    if text.trim_start().starts_with('[') {
        let items: Vec<Value> =
            serde_json::from_str(&text).map_err(|source| TextError::Json { path: path.to_path_buf(), source })?;
        for (i, item) in items.into_iter().enumerate() {
            take(format!("item {}", i + 1), Ok(item));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            take(format!("line {}", i + 1), serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roles(m: &[ChatMessage]) -> Vec<&str> {
        m.iter().map(|m| m.role.as_str()).collect()
    }

    #[test]
    fn every_supervised_shape_becomes_messages() {
        let trl = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]});
        let pc = json!({"prompt": "2+2?", "completion": "4"});
        let alpaca = json!({"instruction": "Add", "input": "2 and 2", "output": "4", "system": "Be brief.", "history": [["hi", "hello"]]});
        let sharegpt = json!({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {}}"}, {"from": "observation", "value": "r"}, {"from": "gpt", "value": "a"}]});
        let gsm = json!({"question": "q", "answer": "a #### 4"});
        assert_eq!(roles(&conversation_from_json(&trl).unwrap().messages), ["user", "assistant"]);
        assert_eq!(conversation_from_json(&pc).unwrap().messages[1], ChatMessage::new("assistant", "4"));
        let a = conversation_from_json(&alpaca).unwrap().messages;
        assert_eq!(roles(&a), ["system", "user", "assistant", "user", "assistant"]);
        assert_eq!(a[3].content, "Add\n2 and 2");
        // The result goes back as a user turn in the generic call format.
        assert_eq!(
            roles(&conversation_from_json(&sharegpt).unwrap().messages),
            ["user", "assistant", "user", "assistant"]
        );
        assert_eq!(conversation_from_json(&gsm).unwrap().messages[1].content, "a #### 4");
    }

    #[test]
    fn tool_calls_are_written_as_inference_writes_them() {
        let tools = r#"[{"name": "calc", "description": "Arithmetic", "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}]"#;
        let factory = json!({"conversations": [
            {"from": "human", "value": "2^10?"},
            {"from": "function_call", "value": "{\"name\": \"calc\", \"arguments\": {\"expression\": \"2^10\"}}"},
            {"from": "observation", "value": "1024"},
            {"from": "gpt", "value": "It is 1024."}], "tools": tools});
        let openai = json!({"tools": [{"type": "function", "function": serde_json::from_str::<Value>(tools).unwrap()[0]}],
            "messages": [
            {"role": "user", "content": "2^10?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"expression\": \"2^10\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "1024"},
            {"role": "assistant", "content": "It is 1024."}]});
        let a = conversation_from_json(&factory).unwrap().messages;
        let b = conversation_from_json(&openai).unwrap().messages;
        assert_eq!(a, b, "both shapes give the same text");
        assert_eq!(roles(&a), ["system", "user", "assistant", "user", "assistant"]);
        assert!(a[0].content.contains("<tools>") && a[0].content.contains("\"calc\""));
        assert_eq!(
            a[2].content,
            "<tool_call>\n{\"name\": \"calc\", \"arguments\": {\"expression\": \"2^10\"}}\n</tool_call>"
        );
        assert_eq!(a[3].content, "<tool_response>\n1024\n</tool_response>");
        let bad = json!({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "not json"}, {"from": "gpt", "value": "a"}]});
        assert!(conversation_from_json(&bad).unwrap_err().contains("message 2: a function_call turn is not JSON"));
    }

    #[test]
    fn bad_supervised_rows_say_why() {
        let err = |v: Value| conversation_from_json(&v).unwrap_err();
        assert!(err(json!({"text": "x"})).contains("unknown row shape (keys: text)"));
        assert!(
            err(json!({"messages": [{"role": "user", "content": "only a question"}]})).contains("no assistant turn")
        );
        assert!(err(json!({"messages": [{"role": "wizard", "content": "x"}]})).contains("unknown role \"wizard\""));
        assert!(err(json!([1, 2])).contains("JSON object"));
    }

    #[test]
    fn every_comparison_shape_becomes_prompt_chosen_rejected() {
        let explicit = json!({"prompt": "q", "chosen": "good", "rejected": "bad"});
        let p = preference_from_json(&explicit).unwrap();
        assert_eq!((p.prompt.len(), p.chosen[0].content.as_str(), p.rejected[0].content.as_str()), (1, "good", "bad"));

        let implicit = json!({
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
        });
        assert_eq!(preference_from_json(&implicit).unwrap(), p);

        let factory = json!({"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}});
        assert_eq!(preference_from_json(&factory).unwrap(), p);

        let hh = json!({
            "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: q\n\nAssistant: good",
            "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: q\n\nAssistant: bad",
        });
        let h = preference_from_json(&hh).unwrap();
        assert_eq!(roles(&h.prompt), ["user", "assistant", "user"]);
        assert_eq!((h.chosen[0].content.as_str(), h.rejected[0].content.as_str()), ("good", "bad"));
    }

    #[test]
    fn bad_comparison_rows_say_why() {
        let err = |v: Value| preference_from_json(&v).unwrap_err();
        assert!(err(json!({"prompt": "q", "chosen": "a"})).contains("needs chosen and rejected"));
        assert!(err(json!({"prompt": "q", "chosen": "a", "rejected": "a"})).contains("the same"));
        assert!(err(json!({"chosen": "no markers", "rejected": "x"})).contains("transcript"));
    }

    #[test]
    fn files_report_bad_rows_by_line() {
        let dir = std::env::temp_dir().join(format!("kiln-conv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.jsonl");
        std::fs::write(&path, "{\"prompt\": \"q\", \"completion\": \"a\"}\n\n{oops\n{\"text\": 1}\n").unwrap();
        let rows = read_rows(&path, conversation_from_json).unwrap();
        assert_eq!(rows.rows.len(), 1);
        assert_eq!(rows.rows[0].0, "line 1");
        assert_eq!(rows.bad.iter().map(|b| b.location.as_str()).collect::<Vec<_>>(), ["line 3", "line 4"]);
        assert!(rows.bad[0].message.starts_with("not valid JSON"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The data sets shipped in ../shared read whole, with no bad rows.
    #[test]
    fn shared_data_sets_read_cleanly() {
        // Real data, not ours to commit: the mirror beside the checkout (`../shared/data`).
        let Some(data) = kiln_test_models::shared_data_mirror() else {
            kiln_test_models::skip("no ../shared/data mirror: the real SFT and preference sets are not here");
            return;
        };
        for (file, rows) in [
            ("sft/alpaca_en_demo.json", 999),
            ("sft/identity.json", 91),
            ("sft/glaive_toolcall_en_demo.json", 300),
            ("sft/gsm8k_train.jsonl", 7473),
        ] {
            let r = read_rows(&data.join(file), conversation_from_json).unwrap();
            assert_eq!((r.rows.len(), r.bad.len()), (rows, 0), "{file}: {:?}", r.bad.first());
        }
        let r = read_rows(&data.join("prefs/dpo_en_demo.json"), preference_from_json).unwrap();
        assert_eq!((r.rows.len(), r.bad.len()), (300, 0), "{:?}", r.bad.first());
        let r = read_rows(&data.join("prefs/hh-rlhf_harmless-base_test.jsonl.gz"), preference_from_json).unwrap();
        assert_eq!((r.rows.len(), r.bad.len()), (2312, 0), "{:?}", r.bad.first());
    }
}
