//! Working memory: a conversation that outgrows the context loses its oldest exchanges whole
//! (a tool call with its result goes with the turn that made it), never the system message or
//! the turn being answered.

use kiln_assist::format::{Message, ToolCall};
use kiln_assist::{Agent, Toolbox};
use kiln_model::GgufFile;
use kiln_text::{ChatTemplate, Tokenizer};

#[test]
fn the_oldest_exchanges_go_first_and_whole() {
    let Some(path) = kiln_test_models::SMOLLM2.path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let template = ChatTemplate::for_model(&tokenizer, "llama").unwrap();
    let toolbox = Toolbox::builtin(&["calc".to_string()]).unwrap();
    let agent = Agent::new(&tokenizer, &template, &toolbox, 49152).unwrap();
    let long = "word ".repeat(150);
    let mut messages = vec![Message::new("system", "Be brief.")];
    for i in 0..4 {
        messages.push(Message::new("user", format!("question {i}: {long}")));
        messages.push(Message {
            role: "assistant".into(),
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: format!("c{i}"),
                name: "calc".into(),
                arguments: "{\"expression\": \"1+1\"}".into(),
            }],
            tool_call_id: None,
        });
        messages.push(Message {
            role: "tool".into(),
            content: "2".into(),
            tool_calls: vec![],
            tool_call_id: Some(format!("c{i}")),
        });
        messages.push(Message::new("assistant", format!("answer {i}")));
    }
    messages.push(Message::new("user", "last question"));
    let all = messages.clone();
    // Room for everything: nothing goes.
    assert_eq!(agent.fit(&mut messages, 8192, 256).unwrap(), 0);
    assert_eq!(messages.len(), all.len());
    // Room for about two exchanges: the first two go, four messages each.
    let dropped = agent.fit(&mut messages, 900, 256).unwrap();
    assert_eq!(dropped % 4, 0, "whole exchanges only");
    assert!((4..16).contains(&dropped), "{dropped}");
    assert_eq!(messages[0].content, "Be brief.");
    assert_eq!(messages[1].role, "user");
    assert_eq!(messages.last().unwrap().content, "last question");
    // No room at all: only the system message and the last turn stay.
    let dropped_more = agent.fit(&mut messages, 10, 5).unwrap();
    assert_eq!(messages.len(), 2, "{dropped_more}");
}
