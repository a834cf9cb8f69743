//! A synthetic task with exact answers, which kiln generates itself: multi-digit addition,
//! subtraction and multiplication. A small model starts low on it and has room to climb
//! (thinking longer, reinforcement learning), and no data set has to be fetched.
//!
//! The problems are fixed by a seed: [`TEST_SEED`] gives the evaluation set, other seeds
//! give training problems that do not repeat it.

use super::answer::{self, Item};
use super::gsm8k::prompt_tokens;
use super::EvalContext;
use crate::results::TaskResult;
use crate::rng::Mt19937;
use crate::EvalError;
use std::collections::HashSet;

/// The seed of the evaluation problems.
pub const TEST_SEED: u32 = 20_261_207;

/// Problems in the evaluation set.
pub const TEST_SIZE: usize = 1000;

/// One problem: the question and its exact answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `What is 4831 + 2975?`
    pub question: String,
    /// `7806`
    pub answer: String,
}

/// `n` distinct problems drawn with `seed`: a third each of sums and of differences (never
/// negative) of two numbers of 2 to 4 digits, and a third of products of a 1- to 3-digit
/// number by a 1- or 2-digit one (never by 0 or 1), from easy to hard for a small model.
/// Problems of the evaluation set are never drawn for another seed.
pub fn problems(seed: u32, n: usize) -> Vec<Problem> {
    let held_out: HashSet<String> = if seed == TEST_SEED {
        HashSet::new()
    } else {
        draw(TEST_SEED, TEST_SIZE, &HashSet::new()).into_iter().map(|p| p.question).collect()
    };
    draw(seed, n, &held_out)
}

fn draw(seed: u32, n: usize, skip: &HashSet<String>) -> Vec<Problem> {
    let mut rng = Mt19937::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    let mut between = |lo: u64, hi: u64| lo + rng.below((hi - lo + 1) as u32) as u64;
    while out.len() < n {
        let kind = between(0, 2);
        let digits = |d: u64| (10u64.pow(d as u32 - 1), 10u64.pow(d as u32) - 1);
        let (question, answer) = match kind {
            0 | 1 => {
                let (lo, hi) = digits(between(2, 4));
                let (a, b) = (between(lo, hi), between(lo, hi));
                if kind == 0 {
                    (format!("What is {a} + {b}?"), (a + b).to_string())
                } else {
                    let (a, b) = (a.max(b), a.min(b));
                    (format!("What is {a} - {b}?"), (a - b).to_string())
                }
            }
            _ => {
                let ((alo, ahi), (blo, bhi)) = (digits(between(1, 3)), digits(between(1, 2)));
                let (a, b) = (between(alo.max(2), ahi), between(blo.max(2), bhi));
                (format!("What is {a} * {b}?"), (a * b).to_string())
            }
        };
        if !skip.contains(&question) && seen.insert(question.clone()) {
            out.push(Problem { question, answer });
        }
    }
    out
}

/// Runs the task on the evaluation set (`--limit` draws from it as for every task).
pub fn run(cx: &EvalContext) -> Result<TaskResult, EvalError> {
    let all = problems(TEST_SEED, TEST_SIZE);
    let mut items = Vec::new();
    for i in cx.select(all.len()) {
        let p = &all[i];
        items.push(Item {
            question: p.question.clone(),
            prompt: prompt_tokens(cx, &p.question)?,
            gold: p.answer.clone(),
        });
    }
    answer::run(cx, "arith", &items, all.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_fixed_by_the_seed_and_training_never_sees_the_test() {
        let test = problems(TEST_SEED, TEST_SIZE);
        assert_eq!(test, problems(TEST_SEED, TEST_SIZE));
        let questions: HashSet<&str> = test.iter().map(|p| p.question.as_str()).collect();
        assert_eq!(questions.len(), TEST_SIZE);
        let train = problems(7, 3000);
        assert!(train.iter().all(|p| !questions.contains(p.question.as_str())));
        for kind in ["+", "-", "*"] {
            let share = test.iter().filter(|p| p.question.contains(&format!(" {kind} "))).count();
            assert!(share > 250, "{kind}: {share}");
        }
        // The answers are right, checked another way.
        for p in test.iter().take(200) {
            let words: Vec<&str> = p.question.trim_start_matches("What is ").trim_end_matches('?').split(' ').collect();
            let (a, b): (i64, i64) = (words[0].parse().unwrap(), words[2].parse().unwrap());
            let want = match words[1] {
                "+" => a + b,
                "-" => a - b,
                _ => a * b,
            };
            assert_eq!(p.answer, want.to_string());
            assert!(want >= 0);
        }
    }
}
