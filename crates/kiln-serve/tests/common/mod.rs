//! A server on a free port with the default model, and a tiny HTTP/1.1 client over a plain
//! socket (so the tests see exactly what goes over the wire, SSE framing included).
#![allow(dead_code)]

use kiln_serve::{AppState, ServeOptions, ServedModel};
use kiln_text::{ChatTemplate, Tokenizer};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A running server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl TestServer {
    /// Wraps a server already spawned on `runtime`.
    pub fn new(addr: SocketAddr, runtime: tokio::runtime::Runtime) -> TestServer {
        TestServer { addr, runtime: Some(runtime) }
    }
}

/// The default model as the servers take it, or None when it is absent.
pub fn served_model() -> Option<ServedModel> {
    let path = kiln_test_models::SMOLLM2.path()?;
    let file = kiln_gguf::GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let template = ChatTemplate::for_model(&tokenizer, "llama").unwrap();
    let model = kiln_model::Model::from_gguf(file).unwrap();
    Some(ServedModel {
        model: Arc::new(model),
        tokenizer: Arc::new(tokenizer),
        template,
        id: "smollm2".into(),
        aliases: vec![],
        embedding: None,
        assistant: None,
        guard: None,
        draft: None,
    })
}

/// Starts a server with the default model, or None (the test skips) when it is absent.
pub fn start(parallel: usize, queue: usize, context: usize, api_key: Option<&str>) -> Option<TestServer> {
    Some(start_served(served_model()?, parallel, queue, context, api_key))
}

/// Starts a server for `served`.
pub fn start_served(
    served: ServedModel,
    parallel: usize,
    queue: usize,
    context: usize,
    api_key: Option<&str>,
) -> TestServer {
    let options = ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        parallel,
        queue,
        context,
        api_key: api_key.map(String::from),
        lookup: 0,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(AppState::new(served, &options));
    runtime.spawn(async move { axum::serve(listener, kiln_serve::router(app)).await });
    TestServer { addr, runtime: Some(runtime) }
}

/// A whole answer.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// Reads the status line and headers.
fn head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

/// The body as a byte stream, de-chunked when chunked.
pub struct Body {
    inner: BufReader<TcpStream>,
    chunked: bool,
    left: usize,
    done: bool,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            self.left = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got;
        Ok(got)
    }
}

pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    let mut r = BufReader::new(send(addr, method, path, body, headers));
    let (status, headers) = head(&mut r);
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = String::new();
    Body { inner: r, chunked, left: 0, done: false }.read_to_string(&mut body).unwrap();
    Reply { status, headers, body }
}

pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(addr, "POST", path, Some(&body.to_string()), &[])
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None, &[])
}

/// An open event stream.
pub struct EventStream {
    pub status: u16,
    lines: BufReader<Body>,
}

impl EventStream {
    pub fn open(addr: SocketAddr, path: &str, body: &Value) -> EventStream {
        let mut r = BufReader::new(send(addr, "POST", path, Some(&body.to_string()), &[]));
        let (status, headers) = head(&mut r);
        let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        EventStream { status, lines: BufReader::new(Body { inner: r, chunked, left: 0, done: false }) }
    }

    /// The next `data:` payload, or None at the end of the stream.
    pub fn next_data(&mut self) -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(d) = line.trim_end().strip_prefix("data: ") {
                return Some(d.to_string());
            }
        }
    }

    /// Every remaining payload, up to and including `[DONE]`.
    pub fn collect(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = self.next_data() {
            let end = d == "[DONE]";
            out.push(d);
            if end {
                break;
            }
        }
        out
    }
}

/// The value of a gauge or counter in `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = get(addr, "/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}
