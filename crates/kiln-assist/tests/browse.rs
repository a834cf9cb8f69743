//! The browse tool against a local HTTP server: readable text from HTML, redirects followed
//! within bounds, errors and size limits as one clear message.

use kiln_assist::tools::browse::Browse;
use kiln_assist::{Tool, ToolError};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// Serves canned answers on 127.0.0.1 until the process ends; returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap_or(0);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, kind, body): (&str, &str, Vec<u8>) = match path.as_str() {
                "/page" => ("200 OK", "text/html; charset=utf-8", b"<html><head><title>T</title><style>p{}</style><script>var secret = 1;</script></head><body><h1>Opening hours</h1><p>Open <b>9 to 5</b>, Monday to Friday. <a href=\"/more\">More</a></p></body></html>".to_vec()),
                "/plain" => ("200 OK", "text/plain", b"just text".to_vec()),
                "/image" => ("200 OK", "image/png", vec![0x89, b'P', b'N', b'G']),
                "/big" => ("200 OK", "text/plain", vec![b'a'; (2 << 20) + 100_000]),
                "/loop" => ("302 Found", "text/plain", Vec::new()),
                _ => ("404 Not Found", "text/plain", b"no".to_vec()),
            };
            let mut s = stream;
            let location = if path == "/loop" { "Location: /loop\r\n" } else { "" };
            let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    base
}

#[test]
fn browse_reads_pages_and_refuses_what_it_should() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        kiln_test_models::skip("curl is not installed");
        return;
    }
    let base = serve();
    let tool = Browse::default();
    assert!(tool.touches_outside_world(), "browsing asks first");
    let text = tool.call(&json!({"url": format!("{base}/page")})).unwrap();
    assert!(text.contains("Opening hours") && text.contains("9 to 5"), "{text}");
    assert!(!text.contains("secret") && !text.contains("<p>"), "scripts and tags are gone: {text}");
    assert_eq!(tool.call(&json!({"url": format!("{base}/plain")})).unwrap(), "just text");
    let err = |url: String| tool.call(&json!({ "url": url })).unwrap_err();
    assert!(err(format!("{base}/missing")).to_string().contains("HTTP 404"));
    assert!(err(format!("{base}/image")).to_string().contains("image/png"));
    assert!(err(format!("{base}/loop")).to_string().contains("too many redirects"));
    assert!(matches!(err("file:///etc/passwd".into()), ToolError::Arguments(_)));
    assert!(matches!(err("ftp://example.org/".into()), ToolError::Arguments(_)));
    let big = tool.call(&json!({"url": format!("{base}/big")})).unwrap();
    assert!(big.contains("more bytes cut"), "the output is capped");
}
