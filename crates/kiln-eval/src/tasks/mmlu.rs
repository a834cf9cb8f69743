//! MMLU (Hendrycks et al.) in lm-evaluation-harness's original format: a header naming the
//! subject, `shots` solved examples from the subject's dev split, then the test question; the
//! choices are the letters " A" … " D". 5-shot is the standard setting, 0-shot an option.
//! The cloze form (`mmlu_cloze`) asks `Question: …\nAnswer:` and scores each option's text.

use super::mc::{run_items, McItem};
use super::EvalContext;
use crate::data::{parse_csv, read_text};
use crate::results::TaskResult;
use crate::EvalError;
use std::path::Path;

/// One question: text, four options, the right letter's index.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The question.
    pub question: String,
    /// Options A–D.
    pub options: [String; 4],
    /// 0 for A … 3 for D.
    pub answer: usize,
}

/// Parses a subject's CSV (no header: question, A, B, C, D, answer letter).
pub fn parse(text: &str, path: &Path) -> Result<Vec<Question>, EvalError> {
    parse_csv(text, path)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if r.len() != 6 {
                return Err(EvalError::parse(
                    path,
                    i + 1,
                    format!("expected 6 fields (question, A–D, answer), found {}", r.len()),
                ));
            }
            let answer = match r[5].trim() {
                "A" => 0,
                "B" => 1,
                "C" => 2,
                "D" => 3,
                other => return Err(EvalError::parse(path, i + 1, format!("answer {other:?} is not A–D"))),
            };
            Ok(Question {
                question: r[0].clone(),
                options: [r[1].clone(), r[2].clone(), r[3].clone(), r[4].clone()],
                answer,
            })
        })
        .collect()
}

/// `abstract_algebra` → `abstract algebra`.
fn subject_title(subject: &str) -> String {
    subject.replace('_', " ")
}

fn format_question(q: &Question) -> String {
    let mut s = q.question.trim().to_string();
    for (letter, o) in ["A", "B", "C", "D"].iter().zip(&q.options) {
        s.push_str(&format!("\n{letter}. {o}"));
    }
    s.push_str("\nAnswer:");
    s
}

/// The prompt for `q` after `shots` dev examples.
pub fn prompt(subject: &str, shots: &[Question], q: &Question) -> String {
    let mut s =
        format!("The following are multiple choice questions (with answers) about {}.\n\n", subject_title(subject));
    for ex in shots {
        s.push_str(&format_question(ex));
        s.push_str(&format!(" {}\n\n", ["A", "B", "C", "D"][ex.answer]));
    }
    s.push_str(&format_question(q));
    s
}

/// Every subject's test questions with the subject's first `shots` dev questions.
fn load(cx: &EvalContext, shots: usize) -> Result<Vec<(String, Vec<Question>, Question)>, EvalError> {
    let test_dir = cx.data("mmlu/test")?;
    let mut subjects: Vec<String> = std::fs::read_dir(&test_dir)
        .map_err(|e| EvalError::io(&test_dir, e))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix("_test.csv")).map(String::from))
        .collect();
    subjects.sort();
    let mut all = Vec::new();
    for subject in &subjects {
        let examples = if shots > 0 {
            let dev_path = cx.data(&format!("mmlu/dev/{subject}_dev.csv"))?;
            parse(&read_text(&dev_path)?, &dev_path)?.into_iter().take(shots).collect()
        } else {
            Vec::new()
        };
        let test_path = test_dir.join(format!("{subject}_test.csv"));
        for q in parse(&read_text(&test_path)?, &test_path)? {
            all.push((subject.clone(), examples.clone(), q));
        }
    }
    Ok(all)
}

/// Runs the task over the test split of every subject.
pub fn run(cx: &EvalContext, shots: usize) -> Result<TaskResult, EvalError> {
    let loaded = load(cx, shots)?;
    let subjects = loaded.iter().map(|(s, _, _)| s.as_str()).collect::<std::collections::HashSet<_>>().len();
    let all: Vec<McItem> = loaded
        .iter()
        .map(|(subject, examples, q)| McItem {
            context: prompt(subject, examples, q),
            choices: [" A", " B", " C", " D"].map(String::from).to_vec(),
            gold: q.answer,
        })
        .collect();
    // Sorted, so items of one subject stay together and share their cached few-shot prefix.
    let mut chosen = cx.select(all.len());
    chosen.sort_unstable();
    let items: Vec<McItem> = chosen.iter().map(|&i| all[i].clone()).collect();
    let setting = format!("{shots}-shot from dev, harness format, {subjects} subjects, choices \" A\"…\" D\"");
    run_items(cx, &format!("mmlu_{shots}shot"), &items, all.len(), &setting)
}

/// Runs the cloze form, 0-shot.
pub fn run_cloze(cx: &EvalContext) -> Result<TaskResult, EvalError> {
    let all: Vec<McItem> = load(cx, 0)?.into_iter().map(|(_, _, q)| cloze_item(&q)).collect();
    let mut chosen = cx.select(all.len());
    chosen.sort_unstable();
    let items: Vec<McItem> = chosen.iter().map(|&i| all[i].clone()).collect();
    run_items(cx, "mmlu_cloze", &items, all.len(), "0-shot cloze: \"Question: …\\nAnswer:\" + \" option text\"")
}

/// `Question: …\nAnswer:` with each option's text as a continuation.
pub fn cloze_item(q: &Question) -> McItem {
    McItem {
        context: format!("Question: {}\nAnswer:", q.question.trim()),
        choices: q.options.iter().map(|o| format!(" {}", o.trim())).collect(),
        gold: q.answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.,0,1,2,3,B\n\"Statement 1 | a, b. Statement 2 | c.\",\"True, True\",\"False, False\",\"True, False\",\"False, True\",C\n";

    #[test]
    fn parses_rows_with_quoted_commas() {
        let qs = parse(DEV, Path::new("d.csv")).expect("valid");
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].answer, 1);
        assert_eq!(qs[1].options[0], "True, True");
        assert_eq!(qs[1].answer, 2);
        let e = parse("q,a,b,c,d,E\n", Path::new("d.csv")).expect_err("bad letter");
        assert_eq!(e.to_string(), "d.csv:1: answer \"E\" is not A–D");
        assert!(parse("q,a,b\n", Path::new("d.csv")).is_err());
    }

    #[test]
    fn cloze_items() {
        let qs = parse(DEV, Path::new("d.csv")).expect("valid");
        let it = cloze_item(&qs[1]);
        assert_eq!(it.context, "Question: Statement 1 | a, b. Statement 2 | c.\nAnswer:");
        assert_eq!(it.choices[3], " False, True");
        assert_eq!(it.gold, 2);
    }

    #[test]
    fn prompt_in_harness_format() {
        let qs = parse(DEV, Path::new("d.csv")).expect("valid");
        let p = prompt("abstract_algebra", &qs[..1], &qs[1]);
        assert_eq!(
            p,
            "The following are multiple choice questions (with answers) about abstract algebra.\n\n\
             Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n\
             Statement 1 | a, b. Statement 2 | c.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:"
        );
    }
}
