//! Chat templates of well-known models, rendered as Hugging Face transformers (jinja2 with
//! trim_blocks / lstrip_blocks) renders them; the expected strings were produced by jinja2.

use kiln_text::{ChatMessage, ChatTemplate, TextError};

const LLAMA3: &str = include_str!("templates/llama3-instruct.jinja");
const LLAMA32: &str = include_str!("templates/llama3.2-instruct.jinja");
const QWEN25: &str = include_str!("templates/qwen2.5-instruct.jinja");

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Hi there "),
        ChatMessage::new("assistant", " Hello!"),
        ChatMessage::new("user", "2+2?"),
    ]
}

#[test]
fn llama3_instruct() {
    let t = ChatTemplate::from_source(LLAMA3, "<|begin_of_text|>", "<|eot_id|>").unwrap();
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

/// Llama 3.2 writes today's date with `strftime_now`, checks `tools is not none`, and tests
/// `'tool_calls' in message`.
#[test]
fn llama3_2_instruct_with_date() {
    let t = ChatTemplate::from_source(LLAMA32, "<|begin_of_text|>", "<|eot_id|>").unwrap();
    let out = t.render(&conversation(), true).unwrap();
    let (head, rest) = out.split_once("Today Date: ").unwrap();
    assert_eq!(
        head,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    );
    let (date, rest) = rest.split_once('\n').unwrap();
    let parts: Vec<&str> = date.split(' ').collect();
    assert!(
        parts.len() == 3 && parts[0].len() == 2 && parts[1].len() == 3 && parts[2].len() == 4,
        "date {date:?} is not like \"26 Jul 2024\""
    );
    assert_eq!(
        rest,
        "\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

/// Qwen2.5 (ChatML) with a system message and no tools.
#[test]
fn qwen2_5_instruct_with_system_message() {
    let t = ChatTemplate::from_source(QWEN25, "", "<|im_end|>").unwrap();
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n\
         <|im_start|>assistant\n Hello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without a system message the default one is used.
    let out = t.render(&[ChatMessage::new("user", "Hi")], false).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn raise_exception_is_an_error() {
    let src = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok";
    let t = ChatTemplate::from_source(src, "", "").unwrap();
    assert_eq!(t.render(&[ChatMessage::new("user", "x")], false).unwrap(), "ok");
    match t.render(&[ChatMessage::new("system", "x")], false) {
        Err(TextError::Template(msg)) => assert!(msg.contains("System role not supported"), "{msg}"),
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_are_reported_at_build() {
    assert!(matches!(ChatTemplate::from_source("{% for %}", "", ""), Err(TextError::Template(_))));
}

/// Python string methods through minijinja-contrib's pycompat (and booleans print as jinja2 prints them).
#[test]
fn python_string_methods() {
    let src = "{% for m in messages %}{{ m.content.strip().upper() }}|{{ m.content.startswith(' a') }}|{{ m.content.split(',') | length }};{% endfor %}";
    let t = ChatTemplate::from_source(src, "", "").unwrap();
    assert_eq!(t.render(&[ChatMessage::new("user", " a,b ")], false).unwrap(), "A,B|True|2;");
}
