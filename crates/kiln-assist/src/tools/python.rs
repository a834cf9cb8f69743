//! The `python` tool: runs model-written Python in the [sandbox](crate::sandbox) and returns
//! what it printed.

use super::{cap_output, Tool, ToolError};
use crate::sandbox::{Isolation, Limits, RunReport, Sandbox};
use serde_json::{json, Value};
use std::time::Duration;

/// Runs Python code in a [`Sandbox`]; the result is what the code printed.
#[derive(Debug, Clone)]
pub struct Python {
    sandbox: Sandbox,
    limits: Limits,
    description: String,
}

impl Python {
    /// A tool running code in `sandbox` under `limits` (the result is capped at
    /// `limits.output_cap` bytes).
    pub fn new(sandbox: Sandbox, limits: Limits) -> Python {
        // Tell the model what it can count on: the fences only where the sandbox has them.
        let fences = match sandbox.isolation() {
            Isolation::Full => "standard library only, no network, files only in its working directory, ",
            Isolation::NetworkOnly => "standard library only, no network, ",
            Isolation::None => "standard library only, ",
        };
        let description = format!(
            "Runs a Python 3 program ({fences}at most {} s) and returns what it printed. Only printed \
             output comes back: use print() for every value you want to see.",
            limits.timeout.as_secs()
        );
        Python { sandbox, limits, description }
    }

    /// The limits each call runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The sandbox calls run in (to show how isolated they are).
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Default for Python {
    fn default() -> Self {
        Python::new(Sandbox::new(), Limits { timeout: Duration::from_secs(10), ..Limits::default() })
    }
}

impl Tool for Python {
    fn name(&self) -> &str {
        "python"
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "A complete Python 3 program; print() the results you need."
                }
            },
            "required": ["code"],
            "additionalProperties": false
        })
    }

    fn touches_outside_world(&self) -> bool {
        true
    }

    fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        let code = code_argument(arguments)?;
        let report = self.sandbox.run(code, self.limits).map_err(|e| ToolError::Failed(e.to_string()))?;
        if report.timed_out {
            return Err(ToolError::TimedOut(self.limits.timeout.as_secs()));
        }
        Ok(cap_output(&render(&report, self.limits.output_cap), self.limits.output_cap))
    }
}

/// The `code` argument, checked against the schema.
fn code_argument(arguments: &Value) -> Result<&str, ToolError> {
    let object =
        arguments.as_object().ok_or_else(|| ToolError::Arguments("expected an object {\"code\": \"...\"}".into()))?;
    if let Some(other) = object.keys().find(|k| *k != "code") {
        return Err(ToolError::Arguments(format!("unknown argument {other:?}; the only argument is \"code\"")));
    }
    match object.get("code") {
        Some(Value::String(code)) => Ok(code),
        Some(_) => Err(ToolError::Arguments("\"code\" must be a string holding a Python program".into())),
        None => Err(ToolError::Arguments("missing \"code\": the Python program to run".into())),
    }
}

/// Room kept for the notes `render` adds (cuts, `[stderr]`, the exit status).
const NOTES_BYTES: usize = 128;

/// The text the model sees, at most `cap` bytes: the start of stdout, then the end of stderr
/// (where a traceback is; at most a quarter of `cap`) and the exit status when there is
/// something to say about them.
fn render(report: &RunReport, cap: usize) -> String {
    let stderr = report.stderr.trim_end();
    let stderr_shown = tail(stderr, (cap / 4).min(stderr.len()));
    let stdout_shown = head(&report.stdout, cap.saturating_sub(stderr_shown.len() + NOTES_BYTES));
    let mut text = stdout_shown.to_string();
    let cut = report.stdout_bytes.saturating_sub(stdout_shown.len() as u64);
    if cut > 0 {
        text.push_str(&format!("\n[… {cut} more bytes of output cut]"));
    }
    let new_line = |text: &mut String| {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
    };
    if !stderr_shown.is_empty() {
        new_line(&mut text);
        text.push_str("[stderr]\n");
        if report.stderr_bytes > report.stderr.len() as u64 || stderr_shown.len() < stderr.len() {
            text.push_str("[…]\n");
        }
        text.push_str(stderr_shown);
    }
    if !report.status.success() {
        new_line(&mut text);
        match report.status.code() {
            Some(code) => text.push_str(&format!("[exit status {code}]")),
            None => text.push_str(&format!("[{}]", report.status)),
        }
    }
    if text.is_empty() {
        text.push_str("(no output: print() the values you want to see)");
    }
    text
}

/// At most the first `n` bytes of `s`, on a character boundary.
fn head(s: &str, n: usize) -> &str {
    let cut = (0..=n.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..cut]
}

/// At most the last `n` bytes of `s`, on a character boundary.
fn tail(s: &str, n: usize) -> &str {
    let cut = (s.len().saturating_sub(n)..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[cut..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(timeout_s: u64) -> Option<Python> {
        let probe = Sandbox::new().run("print('ok')\n", Limits::default());
        if !probe.as_ref().is_ok_and(|r| r.success()) {
            kiln_test_models::skip(format!("python3 does not run in the sandbox: {probe:?}"));
            return None;
        }
        Some(Python::new(Sandbox::new(), Limits { timeout: Duration::from_secs(timeout_s), ..Limits::default() }))
    }

    #[test]
    fn printed_output_comes_back() {
        let Some(py) = tool(10) else { return };
        assert_eq!(py.call(&json!({"code": "print(6*7)"})).expect("ran"), "42\n");
        assert_eq!(py.call(&json!({"code": "x = 1"})).expect("ran"), "(no output: print() the values you want to see)");
        assert!(py.touches_outside_world());
        assert!(py.description().contains("print()"), "{}", py.description());
        assert_eq!(py.name(), "python");
    }

    #[test]
    fn an_exception_shows_its_traceback() {
        let Some(py) = tool(10) else { return };
        let out = py.call(&json!({"code": "print('before')\n1/0\n"})).expect("ran");
        assert!(out.starts_with("before\n[stderr]\nTraceback"), "{out}");
        assert!(out.contains("ZeroDivisionError: division by zero"), "{out}");
        assert!(out.ends_with("[exit status 1]"), "{out}");
    }

    #[test]
    fn a_runaway_program_times_out() {
        let Some(py) = tool(1) else { return };
        let t0 = std::time::Instant::now();
        assert!(matches!(py.call(&json!({"code": "while True:\n    pass\n"})), Err(ToolError::TimedOut(1))));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn bad_arguments_are_refused() {
        let py = Python::new(Sandbox::new(), Limits::default());
        for bad in [json!("print(1)"), json!({}), json!({"code": 1}), json!({"code": "1", "timeout": 5})] {
            assert!(matches!(py.call(&bad), Err(ToolError::Arguments(_))), "{bad}");
        }
    }

    #[test]
    fn long_output_is_capped() {
        let Some(py) = tool(10) else { return };
        let out = py.call(&json!({"code": "print('z' * 100000)"})).expect("ran");
        assert!(out.len() <= Limits::default().output_cap, "{}", out.len());
        assert!(out.ends_with("more bytes of output cut]"), "{}", &out[out.len() - 100..]);
        // A long traceback keeps its end, and the output before it still shows.
        let code = "import sys\nprint('start')\nsys.stderr.write('warning\\n' * 20000)\nraise ValueError('the end')\n";
        let out = py.call(&json!({"code": code})).expect("ran");
        assert!(out.len() <= Limits::default().output_cap, "{}", out.len());
        assert!(out.starts_with("start\n[stderr]\n[…]\n"), "{}", &out[..100]);
        assert!(out.ends_with("ValueError: the end\n[exit status 1]"), "{}", &out[out.len() - 200..]);
    }
}
