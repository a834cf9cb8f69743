//! Chat templates: Jinja, rendered as Hugging Face transformers renders them.
//!
//! transformers uses jinja2 with `trim_blocks`, `lstrip_blocks` and the loop-controls extension,
//! passes `messages`, `add_generation_prompt`, `bos_token`, `eos_token` (and `tools` /
//! `documents` as none), and adds `raise_exception`, `strftime_now` and a `tojson` that writes
//! like Python's `json.dumps`. Templates also call Python string methods (`.strip()`,
//! `.startswith()`, `.split()`), which minijinja-contrib's pycompat supplies.

use crate::{TextError, Tokenizer};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"`, `"assistant"` (or `"tool"`…).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), the fallback template.
/// The ChatML template: what kiln trains into a model that has no template of its own.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma's turns. The system message has no turn of its own: it opens the first user turn.
/// Unlike the template in Gemma's tokenizer_config.json this one does not write `bos_token`:
/// the tokenizer adds BOS itself (llama.cpp's built-in Gemma template does the same).
const GEMMA: &str = r#"{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"#;

/// The template source for a model of `architecture` that has none of its own: Gemma's turns
/// for the Gemma families (their vocabularies have `<start_of_turn>`/`<end_of_turn>`, not
/// ChatML's markers), else ChatML.
pub fn builtin_template(architecture: &str) -> &'static str {
    if architecture.to_ascii_lowercase().starts_with("gemma") {
        GEMMA
    } else {
        CHATML
    }
}

/// A compiled chat template, with the BOS/EOS texts it is rendered with.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    tools: bool,
}

impl ChatTemplate {
    /// The model's own template if it has one; otherwise a built-in one by architecture
    /// (`"gemma3"`, `"gemma2"`, `"gemma"`: Gemma's turns), else ChatML.
    pub fn for_model(tok: &Tokenizer, architecture: &str) -> Result<ChatTemplate, TextError> {
        let text = |id: Option<u32>| id.and_then(|id| tok.id_to_piece(id)).unwrap_or_default();
        let (bos, eos) = (text(tok.bos_id()), text(tok.eos_id()));
        if let Some(src) = tok.chat_template() {
            return ChatTemplate::from_source(src, &bos, &eos);
        }
        ChatTemplate::from_source(builtin_template(architecture), &bos, &eos)
    }

    /// A template from Jinja source, rendered with these `bos_token` / `eos_token` texts.
    pub fn from_source(src: &str, bos: &str, eos: &str) -> Result<ChatTemplate, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", src.to_string())?;
        // The convention transformers follows: a template that reads `tools` renders them.
        let tools = src.contains("tools");
        Ok(ChatTemplate { env, bos: bos.to_string(), eos: eos.to_string(), tools })
    }

    /// The ChatML template.
    pub fn chatml() -> ChatTemplate {
        // The built-in source is a constant that the tests render, so this cannot fail.
        ChatTemplate::from_source(CHATML, "", "").expect("built-in ChatML template compiles")
    }

    /// Renders a conversation; `add_generation_prompt` appends the opening of the assistant's
    /// turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TextError> {
        self.render_values(Value::from_serialize(messages), Value::from(()), add_generation_prompt)
    }

    /// Whether the template renders tool definitions and tool calls itself.
    pub fn supports_tools(&self) -> bool {
        self.tools
    }

    /// Renders messages in OpenAI's JSON shape (with `tool_calls`, `tool_call_id`…) and
    /// tool definitions, as transformers' `apply_chat_template(messages, tools=…)` does.
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let tools = tools.map_or(Value::from(()), Value::from_serialize);
        self.render_values(Value::from_serialize(messages), tools, add_generation_prompt)
    }

    fn render_values(&self, messages: Value, tools: Value, add_generation_prompt: bool) -> Result<String, TextError> {
        let template = self.env.get_template("chat")?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
            tools => tools,
            documents => Value::from(()),
        };
        Ok(template.render(ctx)?)
    }
}

/// A piece of a rendered conversation, and whether training learns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The text.
    pub text: String,
    /// True for what the assistant says (its turns and their end markers).
    pub train: bool,
}

impl ChatTemplate {
    /// Renders a conversation for supervised training, cut where inference would cut it: the
    /// text up to each assistant turn is what `render(…, true)` gives as a prompt, and the
    /// assistant's turn (with the template's end-of-turn marker) is what the model generates.
    /// Fails when the template is not prefix-stable (rendering more turns rewrites earlier
    /// ones), since no mask would then match inference.
    pub fn render_for_training(&self, messages: &[ChatMessage]) -> Result<Vec<Segment>, TextError> {
        let full = self.render(messages, false)?;
        let mut segments = Vec::new();
        let mut done = 0;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let prompt = self.render(&messages[..i], true)?;
            let through = self.render(&messages[..=i], false)?;
            if !through.starts_with(&prompt) || !full.starts_with(&through) || prompt.len() < done {
                return Err(TextError::Template(format!(
                    "the chat template is not prefix-stable at message {} (rendering later turns changes earlier text), so assistant turns cannot be masked as at inference",
                    i + 1
                )));
            }
            if prompt.len() > done {
                segments.push(Segment { text: full[done..prompt.len()].to_string(), train: false });
            }
            segments.push(Segment { text: full[prompt.len()..through.len()].to_string(), train: true });
            done = through.len();
        }
        if done < full.len() {
            segments.push(Segment { text: full[done..].to_string(), train: false });
        }
        Ok(segments)
    }
}

fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
}

/// `strftime_now(format)`: the current time (UTC) formatted like Python's `strftime`.
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Ok(crate::strftime::format_utc(secs, &format))
}

/// `tojson`: Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, as transformers
/// defines it (minijinja's own escapes `<`, `>`, `&` and `'` for HTML, and writes no spaces).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    // ensure_ascii / separators are accepted and ignored beyond their defaults.
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => Some(v.as_str().unwrap_or("").to_string()),
        },
    };
    let mut out = String::new();
    write_json(&value, indent.as_deref(), sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    v: &Value,
    indent: Option<&str>,
    sort_keys: bool,
    depth: usize,
    out: &mut String,
) -> Result<(), minijinja::Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(ind) = indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => write_json_string(v.as_str().unwrap_or_default(), out),
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                match k.as_str() {
                    Some(s) => write_json_string(s, out),
                    None => write_json_string(&k.to_string(), out),
                }
                out.push_str(": ");
                write_json(&v.get_item(k)?, indent, sort_keys, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, sort_keys, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Bytes | ValueKind::Plain | ValueKind::Invalid => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a value of kind {}", v.kind()),
            ))
        }
        // ValueKind is non-exhaustive.
        _ => write_json_string(&v.to_string(), out),
    }
    Ok(())
}

/// Python's `repr` of a float, as json.dumps writes it.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else if f != 0.0 && (f.abs() >= 1e16 || f.abs() < 1e-4) {
        // Python switches to exponent form here, with at least two exponent digits.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else if f == f.trunc() {
        format!("{f:.1}")
    } else {
        // Both are the shortest text that reads back as the same float.
        format!("{f}")
    }
}

/// A JSON string as json.dumps(ensure_ascii=False) writes it.
fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(list: &[(&str, &str)]) -> Vec<ChatMessage> {
        list.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect()
    }

    #[test]
    fn chatml_renders_turns() {
        let t = ChatTemplate::chatml();
        let out = t.render(&msgs(&[("system", "Be brief."), ("user", "Hi")]), true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn models_without_a_template_get_their_familys_turns() {
        assert!(builtin_template("gemma3").contains("<start_of_turn>"));
        assert!(builtin_template("Gemma2").contains("<end_of_turn>"));
        assert_eq!(builtin_template("llama"), CHATML);
        assert_eq!(builtin_template("qwen3"), CHATML);
    }

    #[test]
    fn gemma_folds_system_into_first_user_turn() {
        let t = ChatTemplate::from_source(GEMMA, "<bos>", "<eos>").unwrap();
        let out = t
            .render(&msgs(&[("system", "Be brief."), ("user", " Hi "), ("assistant", "Hello!"), ("user", "Bye")]), true)
            .unwrap();
        assert_eq!(
            out,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        let out = t.render(&msgs(&[("user", "Hi")]), false).unwrap();
        assert_eq!(out, "<start_of_turn>user\nHi<end_of_turn>\n");
    }

    #[test]
    fn gemma_rejects_non_alternating_roles() {
        let t = ChatTemplate::from_source(GEMMA, "<bos>", "<eos>").unwrap();
        let err = t.render(&msgs(&[("user", "a"), ("user", "b")]), true).unwrap_err();
        assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");
    }

    #[test]
    fn tojson_writes_like_python() {
        let t = ChatTemplate::from_source(
            "{{ {'a': 1, 'b': [1.5, 'x<y'], 'c': none, 'd': true} | tojson }}|{{ [1, 2] | tojson(indent=2) }}|{{ 'é\"' | tojson }}",
            "",
            "",
        )
        .unwrap();
        let out = t.render(&[], false).unwrap();
        assert_eq!(out, "{\"a\": 1, \"b\": [1.5, \"x<y\"], \"c\": null, \"d\": true}|[\n  1,\n  2\n]|\"é\\\"\"");
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.1), "0.1");
        assert_eq!(python_float(1e20), "1e+20");
        assert_eq!(python_float(1.5e-7), "1.5e-07");
        assert_eq!(python_float(-2.0), "-2.0");
    }
}
