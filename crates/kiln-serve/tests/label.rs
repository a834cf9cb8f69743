//! `kiln label`'s API over a real socket: comparisons written where `kiln dpo` reads them,
//! one label per prompt, bad requests refused, and a restarted session resuming.

mod common;

use common::{get, post, TestServer};
use kiln_serve::label::{prompt_from_json, LabelOptions, LabelState, DEFAULT_INSTRUCTIONS};
use kiln_text::ChatMessage;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn start(out: &Path, prompts: &[serde_json::Value]) -> Option<TestServer> {
    let served = common::served_model()?;
    let prompts = prompts.iter().map(|p| prompt_from_json(p).unwrap()).collect();
    let options = LabelOptions {
        out: out.to_path_buf(),
        instructions: DEFAULT_INSTRUCTIONS.into(),
        max_tokens: 16,
        temperature: 0.8,
        context: 256,
    };
    let state = Arc::new(LabelState::new(served, prompts, options).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, kiln_serve::label::router(state)).await });
    Some(TestServer::new(addr, runtime))
}

#[test]
fn labels_are_written_for_dpo_once_each_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prefs.jsonl");
    let prompts = [
        json!({"prompt": "What is the capital of France?"}),
        json!({"instruction": "Add", "input": "2 and 3"}),
        json!({"prompt": "Name a colour."}),
    ];
    let Some(server) = start(&out, &prompts) else { return };
    let addr = server.addr;

    let next = get(addr, "/api/next").json();
    assert_eq!(next["progress"]["total"], 3);
    assert_eq!(next["item"]["id"], 0);
    let (a, b) = (next["item"]["a"].as_str().unwrap().to_string(), next["item"]["b"].as_str().unwrap().to_string());
    assert!(!a.is_empty() && a != b, "two different answers: {a:?} {b:?}");
    // The same prompt shows the same pair until it is labeled.
    assert_eq!(get(addr, "/api/next").json()["item"]["a"], a.as_str());

    // Refused: an unknown choice, a prompt never shown, fields the API does not know, bad JSON.
    assert_eq!(post(addr, "/api/label", &json!({"id": 0, "choice": "c"})).status, 400);
    assert_eq!(post(addr, "/api/label", &json!({"id": 2, "choice": "a"})).status, 400);
    assert_eq!(post(addr, "/api/label", &json!({"id": 9, "choice": "a"})).status, 400);
    assert_eq!(post(addr, "/api/label", &json!({"id": 0, "choice": "a", "extra": 1})).status, 400);
    assert_eq!(
        common::request(addr, "POST", "/api/label", Some("{"), &[("Content-Type", "application/json")]).status,
        400
    );

    let r = post(addr, "/api/label", &json!({"id": 0, "choice": "b", "labeler": "ada"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["done"], 1);
    assert_eq!(post(addr, "/api/label", &json!({"id": 0, "choice": "a"})).status, 409);

    // Skipping goes past a prompt without labeling it.
    assert_eq!(get(addr, "/api/next").json()["item"]["id"], 1);
    assert_eq!(get(addr, "/api/next?after=1").json()["item"]["id"], 2);
    let r = post(addr, "/api/label", &json!({"id": 2, "choice": "both_bad", "better": "Blue."}));
    assert_eq!(r.status, 200, "{}", r.body);
    drop(server);

    // On disk: B was chosen, in a row kiln dpo reads; the verdict without a preference and the
    // written answer beside it.
    let prefs = kiln_text::conversation::read_rows(&out, kiln_text::conversation::preference_from_json).unwrap();
    assert!(prefs.bad.is_empty());
    assert_eq!(prefs.rows.len(), 1);
    let p = &prefs.rows[0].1;
    assert_eq!(p.prompt.last().unwrap().content, "What is the capital of France?");
    assert_eq!((p.chosen[0].content.as_str(), p.rejected[0].content.as_str()), (b.as_str(), a.as_str()));
    let others = std::fs::read_to_string(dir.path().join("prefs.others.jsonl")).unwrap();
    assert!(others.contains("\"both_bad\""), "{others}");
    let better = kiln_text::conversation::read_rows(
        &dir.path().join("prefs.better.jsonl"),
        kiln_text::conversation::conversation_from_json,
    )
    .unwrap();
    assert_eq!(better.rows[0].1.messages.last().unwrap(), &ChatMessage::new("assistant", "Blue."));

    // A new session skips what is labeled.
    let server = start(&out, &prompts).unwrap();
    let next = get(server.addr, "/api/next").json();
    assert_eq!(next["progress"]["done"], 2);
    assert_eq!(next["item"]["id"], 1);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn prompt_rows_take_the_usual_shapes() {
    let user = |s: &str| vec![ChatMessage::new("user", s)];
    assert_eq!(prompt_from_json(&json!({"prompt": "hi"})).unwrap(), user("hi"));
    let chat = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]});
    let p = prompt_from_json(&chat).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[1], ChatMessage::new("user", "hi"));
    assert_eq!(prompt_from_json(&json!({"instruction": "Add", "input": "2 and 3"})).unwrap(), user("Add\n\n2 and 3"));
    assert!(prompt_from_json(&json!({"text": "hi"})).is_err());
    assert!(prompt_from_json(&json!({"messages": [{"role": "assistant", "content": "x"}]})).is_err());
}
