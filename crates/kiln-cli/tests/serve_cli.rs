//! `kiln serve` as a user starts it: the address line, the page, the API, Ctrl-C-free stop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Starts `kiln serve` on a free port, one slot, with the flags `more` adds; returns the child
/// and the address it printed.
fn start_serve(more: impl FnOnce(&mut Command) -> &mut Command) -> (std::process::Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(["serve", "--port", "0", "--parallel", "1"]);
    let mut child = more(&mut cmd).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("kiln serve exited before listening").unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[test]
fn serve_prints_its_address_and_answers_there() {
    let Some(model) = kiln_test_models::SMOLLM2.path() else { return };
    let (mut child, addr) = start_serve(|c| c.args(["--ctx", "256", "-m"]).arg(&model));
    assert!(addr.starts_with("127.0.0.1:"), "binds to loopback by default: {addr}");
    let health = http_get(&addr, "/health");
    assert!(health.starts_with("HTTP/1.1 200") && health.contains("\"ok\""), "{health}");
    let page = http_get(&addr, "/");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("text/html") && page.contains("<html"),
        "the chat page is served"
    );
    let models = http_get(&addr, "/v1/models");
    assert!(models.contains("SmolLM2-135M-Instruct.Q4_1"), "{models}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serve_refuses_zero_slots() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(["serve", "--parallel", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "error: --parallel must be at least 1");
}

fn http_post(addr: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let json = out.split_once("\r\n\r\n").map(|(_, b)| serde_json::from_str(b).unwrap()).unwrap();
    (status, json)
}

#[test]
fn serve_answers_embeddings_from_a_sentence_encoder_beside_the_chat_model() {
    let (Some(model), Some(minilm)) = (kiln_test_models::SMOLLM2.path(), kiln_test_models::MINILM.path()) else {
        return;
    };
    let (mut child, addr) =
        start_serve(|c| c.args(["--ctx", "256", "-m"]).arg(&model).arg("--embedding-model").arg(&minilm));
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(kiln_test_models::fixture("embeddings/minilm_sentence_transformers.json")).unwrap(),
    )
    .unwrap();
    let texts = &fixture["texts"].as_array().unwrap()[..2];
    // No model named: the encoder answers, as sentence-transformers would.
    let (status, reply) = http_post(&addr, "/v1/embeddings", &serde_json::json!({ "input": texts }).to_string());
    assert_eq!(status, 200, "{reply}");
    let data = reply["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        let ours: Vec<f64> = item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let theirs: Vec<f64> =
            fixture["embeddings"][i].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let dot: f64 = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum();
        let norms = ours.iter().map(|x| x * x).sum::<f64>().sqrt() * theirs.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(dot / norms >= 0.999, "text {i}: cosine {}", dot / norms);
    }
    assert!(reply["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // The chat model still answers when named; the encoder refuses token ids.
    let (status, reply) =
        http_post(&addr, "/v1/embeddings", r#"{"input": "hello", "model": "SmolLM2-135M-Instruct.Q4_1"}"#);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"][0]["embedding"].as_array().unwrap().len(), 576);
    let (status, reply) = http_post(&addr, "/v1/embeddings", r#"{"input": [101, 7592, 102]}"#);
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("takes text"), "{reply}");
    let models = http_get(&addr, "/v1/models");
    assert!(models.contains("\"bert\""), "{models}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_served_assistant_runs_its_tools_on_the_server() {
    let Some(model) = kiln_test_models::SMOLLM2.path() else { return };
    let home = tempfile::tempdir().unwrap();
    let created = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_HOME", home.path())
        .args(["assistant", "create", "tutor", "--tools", "calc", "--instructions", "Be brief.", "--temp", "0", "-m"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let (mut child, addr) =
        start_serve(|c| c.env("KILN_HOME", home.path()).args(["--ctx", "1024", "--assistant", "tutor"]));
    let models = http_get(&addr, "/v1/models");
    assert!(models.contains("\"tutor\"") && models.contains("\"calc\""), "{models}");
    let ask = |extra: &str| {
        http_post(
            &addr,
            "/v1/chat/completions",
            &format!(
                r#"{{"model": "tutor", "max_tokens": 48, "messages": [{{"role": "user", "content": "What is 48713 times 127?"}}]{extra}}}"#
            ),
        )
    };
    let (status, reply) = ask(r#", "tool_choice": "required""#);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["model"], "tutor");
    let steps = reply["tool_steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "the first turn had to call calc: {reply}");
    assert_eq!(steps[0]["function"]["name"], "calc");
    assert!(steps[0]["output"].is_string(), "{reply}");
    assert!(reply["choices"][0]["message"]["content"].is_string(), "{reply}");
    assert!(reply["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let (status, reply) = ask(r#", "tool_choice": "none""#);
    assert_eq!(status, 200, "{reply}");
    assert!(reply["tool_steps"].as_array().unwrap().is_empty(), "{reply}");
    let (status, reply) = ask(r#", "stream": true"#);
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = ask(r#", "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]"#);
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("runs its own tools"), "{reply}");
    child.kill().unwrap();
    child.wait().unwrap();
}
