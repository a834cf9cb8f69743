//! GSM8K: grade-school word problems, answered greedily (or thinking longer) and judged by
//! exact match of the final number (after `####`, else the last number in the answer).
//!
//! Instruct models (those with a chat template of their own) get the question as a user turn
//! through the template with a one-line instruction; base models get `Question: …\nAnswer:`.

use super::answer::{self, Item};
use super::EvalContext;
use crate::data::{parse_jsonl, read_text};
use crate::results::TaskResult;
use crate::EvalError;
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

/// The final number of an answer (kiln-generate's, which votes over it).
pub use kiln_generate::think::final_answer as extract_answer;

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
    let mut items = Vec::new();
    for i in cx.select(all.len()) {
        let p = &all[i];
        let gold = extract_answer(&p.answer)
            .ok_or_else(|| EvalError::parse(&path, i + 1, "reference answer has no final number"))?;
        items.push(Item { question: p.question.clone(), prompt: prompt_tokens(cx, &p.question)?, gold });
    }
    answer::run(cx, "gsm8k", &items, all.len())
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
