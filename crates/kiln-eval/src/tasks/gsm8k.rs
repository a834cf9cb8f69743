//! GSM8K: grade-school word problems, answered greedily and judged by exact match of the
//! final number (after `####`, else the last number in the answer).
//!
//! Instruct models (those with a chat template of their own) get the question as a user turn
//! through the template with a one-line instruction; base models get `Question: …\nAnswer:`.

use super::{clip, EvalContext};
use crate::data::{parse_jsonl, read_text};
use crate::results::{Metric, Sample, TaskResult};
use crate::stats::Proportion;
use crate::EvalError;
use kiln_generate::{GenerateOptions, SamplingParams, Session};
use kiln_text::ChatMessage;
use serde::Deserialize;

/// A GSM8K line.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    /// The word problem.
    pub question: String,
    /// The worked answer ending in `#### N`.
    pub answer: String,
}

/// The instruction before each question.
pub const INSTRUCTION: &str = "Solve the problem step by step. End with the final answer as '#### <number>'.";

/// The final number of an answer: after the last `####` if there is one, else the last
/// number in the text; commas, `$` and a trailing `.` removed, `12.0` written `12`.
pub fn extract_answer(text: &str) -> Option<String> {
    let tail = match text.rfind("####") {
        Some(i) => &text[i + 4..],
        None => text,
    };
    let nums = numbers(tail);
    let pick = if text.contains("####") { nums.first() } else { nums.last() };
    pick.map(|n| normalize(n))
}

/// The numbers written in `s` (`-1,234.5`, `$18`).
fn numbers(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let word_before = i > 0 && chars[i - 1].is_alphanumeric();
        let digit_next = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        let in_number = c.is_ascii_digit()
            || (c == '-' && cur.is_empty() && digit_next && !word_before)
            || ((c == ',' || c == '.') && !cur.is_empty() && digit_next);
        if in_number {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn normalize(n: &str) -> String {
    let mut s: String = n.chars().filter(|&c| c != ',').collect();
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// The prompt tokens for `question`.
pub fn prompt_tokens(cx: &EvalContext, question: &str) -> Result<Vec<u32>, EvalError> {
    if cx.tokenizer.chat_template().is_some() {
        let messages = [ChatMessage::new("user", format!("{INSTRUCTION}\n\n{question}"))];
        let text = cx.template.render(&messages, true)?;
        Ok(cx.tokenizer.encode_prompt(&text)?)
    } else {
        Ok(cx.tokenizer.encode(&format!("{INSTRUCTION}\n\nQuestion: {question}\nAnswer:"), true)?)
    }
}

/// Runs the task.
pub fn run(cx: &EvalContext) -> Result<TaskResult, EvalError> {
    let path = cx.data("gsm8k_test.jsonl")?;
    let all: Vec<Problem> = parse_jsonl(&read_text(&path)?, &path)?;
    let chosen = cx.select(all.len());
    let opts = GenerateOptions {
        constraint: None,
        max_tokens: cx.max_tokens.unwrap_or(256),
        stop: vec!["\n\nQuestion:".into()],
        sampling: SamplingParams::greedy(),
        logprobs: None,
        ignore_eos: false,
    };
    let mut session = Session::new(cx.model, cx.ctx);
    let mut acc = Proportion::default();
    let mut samples = Vec::new();
    let mut per_item = String::with_capacity(chosen.len());
    let bar = cx.bar(chosen.len(), "gsm8k");
    for &i in &chosen {
        let p = &all[i];
        let gold = extract_answer(&p.answer)
            .ok_or_else(|| EvalError::parse(&path, i + 1, "reference answer has no final number"))?;
        let ids = prompt_tokens(cx, &p.question)?;
        let generation = session.generate(cx.tokenizer, &ids, &opts, |_| true)?;
        let got = extract_answer(&generation.text);
        let correct = got.as_deref() == Some(gold.as_str());
        acc.add_logged(correct, &mut per_item);
        if samples.len() < 5 {
            let note = if correct {
                String::new()
            } else {
                format!("expected {gold}, extracted {}", got.unwrap_or_else(|| "nothing".into()))
            };
            samples.push(Sample { prompt: clip(&p.question, 300), answer: clip(&generation.text, 600), correct, note });
        }
        bar.inc(1);
        bar.set_message(format!("{:.1} %", 100.0 * acc.value()));
    }
    bar.finish_and_clear();
    Ok(TaskResult {
        task: String::new(),
        items: chosen.len(),
        available: all.len(),
        metrics: vec![Metric::accuracy("exact_match", acc, "final number equals the reference's")],
        elapsed_s: 0.0,
        setting: format!("0-shot, chat template when the model has one, greedy, at most {} tokens", opts.max_tokens),
        samples,
        per_item,
    })
}

#[cfg(test)]
mod tests {
    use super::extract_answer;

    #[test]
    fn extracts_final_numbers() {
        assert_eq!(extract_answer("9 * 2 = $18 every day.\n#### 18").as_deref(), Some("18"));
        assert_eq!(extract_answer("#### 1,234").as_deref(), Some("1234"));
        assert_eq!(extract_answer("So she pays $5.50, then 3 more. The answer is 8.").as_deref(), Some("8"));
        assert_eq!(extract_answer("It falls to -3 degrees").as_deref(), Some("-3"));
        assert_eq!(extract_answer("#### 12.00").as_deref(), Some("12"));
        assert_eq!(extract_answer("2.5 cups").as_deref(), Some("2.5"));
        assert_eq!(extract_answer("#### 7\n\nQuestion 2: 9").as_deref(), Some("7"));
        assert_eq!(extract_answer("no numbers here"), None);
        assert_eq!(extract_answer("item-3 costs"), Some("3".into()));
    }
}
