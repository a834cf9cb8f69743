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

#[test]
fn serve_prints_its_address_and_answers_there() {
    let Some(model) = kiln_test_models::SMOLLM2.path() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--port", "0", "--parallel", "1", "--ctx", "256", "-m"])
        .arg(&model)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("kiln serve exited before listening").unwrap();
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
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
