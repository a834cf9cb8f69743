//! The `browse` tool: fetches one web page and gives the model its readable text. The fetch is
//! curl's, in a child process (never kiln's own sockets): http and https only, also after
//! redirects (at most five), a time limit, and at most [`MAX_BYTES`] read. HTML becomes text with
//! the `html2text` crate (scripts and styles dropped, links kept as footnotes).

use super::{cap_output, Tool, ToolError};
use serde_json::{json, Value};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one fetch may take, by default.
pub const TIME_LIMIT: Duration = Duration::from_secs(15);
/// The most bytes of a page that are read.
pub const MAX_BYTES: usize = 2 << 20;
/// The most bytes of text the model gets, by default.
pub const OUTPUT_CAP: usize = 8 * 1024;
/// Separates the page from curl's `--write-out` report (status and content type) after it.
const WRITE_OUT_MARK: &str = "\n\u{1}kiln-browse-status\u{1}";
/// Redirects followed at most.
const MAX_REDIRECTS: u32 = 5;

/// Fetches pages with curl.
#[derive(Debug, Clone)]
pub struct Browse {
    time_limit: Duration,
    output_cap: usize,
}

impl Default for Browse {
    fn default() -> Self {
        Browse { time_limit: TIME_LIMIT, output_cap: OUTPUT_CAP }
    }
}

impl Tool for Browse {
    fn name(&self) -> &str {
        "browse"
    }

    fn description(&self) -> &str {
        "Fetches a web page (http or https) and returns its readable text, links as numbered \
         footnotes. Use it to read a page whose address you know."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "The page's address, e.g. \"https://example.org/\".", "pattern": "^https?://[^\\s]{1,2000}$"}
            },
            "required": ["url"],
            "additionalProperties": false
        })
    }

    fn touches_outside_world(&self) -> bool {
        true
    }

    fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        let url = arguments
            .get("url")
            .and_then(Value::as_str)
            .map(str::trim)
            .ok_or_else(|| ToolError::Arguments("expected {\"url\": \"https://…\"}".into()))?;
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) || url.chars().any(char::is_whitespace) {
            return Err(ToolError::Arguments(format!("{url:?} is not an http or https address")));
        }
        let page = fetch(url, self.time_limit)?;
        // A page cut short has no reported type: judged by its first bytes.
        let sniffed = page.content_type.is_empty();
        let text = if page.content_type.contains("html") || sniffed && looks_like_html(&page.body) {
            html2text::from_read(page.body.as_slice(), 100)
                .map_err(|e| ToolError::Failed(format!("cannot read the page's HTML: {e}")))?
        } else if page.content_type.starts_with("text/")
            || page.content_type.contains("json")
            || page.content_type.contains("xml")
            || sniffed && looks_like_text(&page.body)
        {
            String::from_utf8_lossy(&page.body).into_owned()
        } else {
            return Err(ToolError::Failed(format!("{url} is {}, not a page of text", page.content_type)));
        };
        let cut = if page.truncated {
            format!("\n[the page is longer than {} MiB; the rest was not read]", MAX_BYTES >> 20)
        } else {
            String::new()
        };
        Ok(cap_output(&format!("{}{cut}", text.trim()), self.output_cap))
    }
}

fn looks_like_html(body: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    head.contains("<html") || head.contains("<!doctype html")
}

fn looks_like_text(body: &[u8]) -> bool {
    let head = &body[..body.len().min(4096)];
    match std::str::from_utf8(head) {
        Ok(t) => !t.contains('\0'),
        // A character cut at the end of the sample is fine.
        Err(e) => e.valid_up_to() + 4 >= head.len() && !head[..e.valid_up_to()].contains(&0),
    }
}

/// A fetched page.
struct Page {
    content_type: String,
    body: Vec<u8>,
    truncated: bool,
}

/// Fetches `url` with curl: the body on stdout (read up to [`MAX_BYTES`]), then the final
/// status and content type written after it by `--write-out`.
fn fetch(url: &str, time_limit: Duration) -> Result<Page, ToolError> {
    let mut child = Command::new("curl")
        .args(["--silent", "--show-error", "--location", "--compressed"])
        .args(["--max-redirs", &MAX_REDIRECTS.to_string()])
        .args(["--proto", "=http,https", "--proto-redir", "=http,https"])
        .args(["--max-time", &time_limit.as_secs().max(1).to_string()])
        .args(["--user-agent", concat!("kiln-browse/", env!("CARGO_PKG_VERSION"))])
        .arg("--write-out")
        .arg(format!("{WRITE_OUT_MARK}%{{http_code}} %{{content_type}}"))
        .arg("--stderr")
        .arg("-")
        .arg("--output")
        .arg("-")
        .arg("--")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| ToolError::Failed(format!("cannot run curl ({e}); browse needs curl installed")))?;
    // `--write-out` goes to stdout after the body, behind a marker.
    let started = Instant::now();
    let mut out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        let mut truncated = false;
        loop {
            match out.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_BYTES + 4096 {
                        truncated = true;
                        break;
                    }
                }
            }
        }
        let _ = tx.send((buf, truncated));
    });
    let (buf, truncated) = match rx.recv_timeout(time_limit + Duration::from_secs(2)) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ToolError::TimedOut(started.elapsed().as_secs()));
        }
    };
    if truncated {
        let _ = child.kill();
        let _ = child.wait();
        let mut body = buf;
        body.truncate(MAX_BYTES);
        return Ok(Page { content_type: String::new(), body, truncated: true });
    }
    let status = child.wait().map_err(|e| ToolError::Failed(e.to_string()))?;
    let (body, tail) = match buf.windows(WRITE_OUT_MARK.len()).rposition(|w| w == WRITE_OUT_MARK.as_bytes()) {
        Some(at) => (&buf[..at], String::from_utf8_lossy(&buf[at + WRITE_OUT_MARK.len()..]).into_owned()),
        None => (&buf[..], String::new()),
    };
    let mut parts = tail.splitn(2, ' ');
    let code: u32 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let content_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if !status.success() || code == 0 {
        let what = match status.code() {
            Some(28) => return Err(ToolError::TimedOut(time_limit.as_secs())),
            Some(47) => "too many redirects".to_string(),
            Some(1) => "a redirect to something other than http or https".to_string(),
            Some(6) => "the host name does not resolve".to_string(),
            Some(7) => "could not connect".to_string(),
            Some(c) => format!("curl failed (exit {c})"),
            None => "curl was stopped".to_string(),
        };
        return Err(ToolError::Failed(format!("cannot fetch {url}: {what}")));
    }
    if code >= 400 {
        return Err(ToolError::Failed(format!("{url} answered HTTP {code}")));
    }
    Ok(Page { content_type, body: body.to_vec(), truncated: false })
}
