//! A user's regression suite: JSON lines, each a prompt and the checks its answer must pass,
//! so a misbehaviour once found stays fixed.
//!
//! ```json
//! {"name": "capital", "prompt": "What is the capital of France?", "contains": "Paris",
//!  "not_contains": ["London", "I cannot"], "regex": "(?i)\\bparis\\b", "max_tokens": 64}
//! ```
//! `contains` / `not_contains` / `regex` take a string or a list; `max_tokens` is both the
//! generation budget and a check (the answer must end by itself within it). `system` and
//! `raw` (no chat template) are optional. Answers are greedy.

use super::{clip, EvalContext};
use crate::data::{parse_jsonl, read_text};
use crate::results::{Metric, Sample, TaskResult};
use crate::stats::Proportion;
use crate::EvalError;
use kiln_generate::{FinishReason, GenerateOptions, SamplingParams, Session};
use kiln_text::ChatMessage;
use regex::Regex;
use serde::Deserialize;
use std::path::Path;

/// One string or several.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// None given.
    #[default]
    None,
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A suite line as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseLine {
    /// A name for reports (default: the line number).
    #[serde(default)]
    pub name: Option<String>,
    /// The user's message (or raw text with `raw`).
    pub prompt: String,
    /// System message.
    #[serde(default)]
    pub system: Option<String>,
    /// Continue the prompt as text instead of a chat turn.
    #[serde(default)]
    pub raw: bool,
    /// Substrings the answer must contain.
    #[serde(default)]
    pub contains: OneOrMany,
    /// Substrings it must not contain.
    #[serde(default)]
    pub not_contains: OneOrMany,
    /// Regular expressions it must match.
    #[serde(default)]
    pub regex: OneOrMany,
    /// Most tokens; the answer must finish within them.
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// A case with its regexes compiled.
#[derive(Debug, Clone)]
pub struct Case {
    /// As written.
    pub line: CaseLine,
    regexes: Vec<Regex>,
}

/// Parses and validates a suite (regexes compiled, at least one check per case).
pub fn parse(text: &str, path: &Path) -> Result<Vec<Case>, EvalError> {
    let lines: Vec<CaseLine> = parse_jsonl(text, path)?;
    let numbered = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, _)| i + 1);
    let mut cases = Vec::new();
    for (mut line, n) in lines.into_iter().zip(numbered) {
        let mut regexes = Vec::new();
        for r in line.regex.items() {
            // regex's messages span lines (a caret under the pattern); one line here.
            let one_line = |e: regex::Error| e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            regexes.push(
                Regex::new(r).map_err(|e| EvalError::parse(path, n, format!("bad regex {r:?}: {}", one_line(e))))?,
            );
        }
        if line.contains.items().is_empty()
            && line.not_contains.items().is_empty()
            && regexes.is_empty()
            && line.max_tokens.is_none()
        {
            return Err(EvalError::parse(path, n, "no checks: give contains, not_contains, regex or max_tokens"));
        }
        line.name.get_or_insert_with(|| format!("line {n}"));
        cases.push(Case { line, regexes });
    }
    if cases.is_empty() {
        return Err(EvalError::parse(path, 1, "the suite has no cases"));
    }
    Ok(cases)
}

impl Case {
    /// The failed checks for `answer` (empty when all pass); `finished` says whether the
    /// answer ended by itself rather than at the token limit.
    pub fn check(&self, answer: &str, finished: bool) -> Vec<String> {
        let mut failed = Vec::new();
        for s in self.line.contains.items() {
            if !answer.contains(s) {
                failed.push(format!("does not contain {s:?}"));
            }
        }
        for s in self.line.not_contains.items() {
            if answer.contains(s) {
                failed.push(format!("contains {s:?}"));
            }
        }
        for r in &self.regexes {
            if !r.is_match(answer) {
                failed.push(format!("does not match /{}/", r.as_str()));
            }
        }
        if let (Some(n), false) = (self.line.max_tokens, finished) {
            failed.push(format!("did not finish within {n} tokens"));
        }
        failed
    }
}

/// Runs every case of the suite at `path`; the result's samples list each case.
pub fn run(cx: &EvalContext, path: &Path) -> Result<TaskResult, EvalError> {
    let cases = parse(&read_text(path)?, path)?;
    let t0 = std::time::Instant::now();
    let mut session = Session::new(cx.model, cx.ctx);
    let mut passed = Proportion::default();
    let mut samples = Vec::new();
    let mut per_item = String::with_capacity(cases.len());
    let bar = cx.bar(cases.len(), "suite");
    for case in &cases {
        let l = &case.line;
        let ids = if l.raw {
            cx.tokenizer.encode(&l.prompt, true)?
        } else {
            let mut messages = Vec::new();
            if let Some(s) = &l.system {
                messages.push(ChatMessage::new("system", s.clone()));
            }
            messages.push(ChatMessage::new("user", l.prompt.clone()));
            cx.tokenizer.encode_prompt(&cx.template.render(&messages, true)?)?
        };
        let opts = GenerateOptions {
            max_tokens: l.max_tokens.or(cx.max_tokens).unwrap_or(256),
            stop: Vec::new(),
            sampling: SamplingParams::greedy(),
            ..GenerateOptions::default()
        };
        let generation = session.generate(cx.tokenizer, &ids, &opts, |_| true)?;
        let failed = case.check(&generation.text, generation.finish == FinishReason::Stop);
        passed.add_logged(failed.is_empty(), &mut per_item);
        let name = l.name.clone().unwrap_or_default();
        samples.push(Sample {
            prompt: format!("{name}: {}", clip(&l.prompt, 200)),
            answer: clip(&generation.text, 600),
            correct: failed.is_empty(),
            note: failed.join("; "),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(TaskResult {
        task: format!("suite:{}", path.display()),
        items: cases.len(),
        available: cases.len(),
        metrics: vec![Metric::accuracy("pass", passed, "cases whose every check passed")],
        elapsed_s: t0.elapsed().as_secs_f64(),
        setting: "greedy, chat template unless raw".into(),
        samples,
        per_item,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Case {
        parse(line, Path::new("s.jsonl")).expect("valid").remove(0)
    }

    #[test]
    fn checks_pass_and_fail() {
        let c = one(
            r#"{"prompt": "capital?", "contains": "Paris", "not_contains": ["London", "cannot"], "regex": "(?i)\\bparis\\b", "max_tokens": 8}"#,
        );
        assert_eq!(c.line.name.as_deref(), Some("line 1"));
        assert!(c.check("The capital is Paris.", true).is_empty());
        assert_eq!(c.check("London, not paris", true), ["does not contain \"Paris\"", "contains \"London\""]);
        assert_eq!(c.check("Paris", false), ["did not finish within 8 tokens"]);
        assert_eq!(c.check("Parisian", true), ["does not match /(?i)\\bparis\\b/"]);
    }

    #[test]
    fn bad_suites_are_one_line_errors() {
        let p = Path::new("s.jsonl");
        let e = parse("{\"prompt\": \"x\"}\n", p).expect_err("no checks");
        assert_eq!(e.to_string(), "s.jsonl:1: no checks: give contains, not_contains, regex or max_tokens");
        let e = parse("\n{\"prompt\": \"x\", \"regex\": \"(\"}\n", p).expect_err("bad regex");
        assert_eq!(e.to_string(), "s.jsonl:2: bad regex \"(\": regex parse error: ( ^ error: unclosed group");
        let e = parse("{\"prompt\": \"x\", \"contain\": \"y\"}\n", p).expect_err("typo");
        assert!(e.to_string().contains("unknown field `contain`"), "{e}");
        assert!(parse("", p).is_err());
    }
}
