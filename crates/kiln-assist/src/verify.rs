//! Choosing one answer among N samples: a majority vote over final answers, a vote among
//! the samples whose arithmetic the calculator confirms, or the best score of a reward model.

use crate::tools::calc;
use kiln_generate::think::{best, final_answer, vote, Sample};
use std::time::Duration;

/// How long the calculator may take over one equation.
const EQUATION_TIME: Duration = Duration::from_millis(200);

/// What the calculator found in one answer's working.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArithmeticCheck {
    /// Equations (`expression = number`) it could evaluate.
    pub checked: usize,
    /// Of those, how many were wrong.
    pub wrong: usize,
}

/// Checks every `expression = number` in `text` (`48 * 3 = 144`, `$12 + $8 = $20`) with the
/// calculator. An equation's value counts as right when it matches to the decimals written.
pub fn check_arithmetic(text: &str) -> ArithmeticCheck {
    let mut check = ArithmeticCheck::default();
    for (i, _) in text.match_indices('=') {
        let Some(expression) = expression_before(&text[..i]) else { continue };
        let Some(stated) = number_after(&text[i + 1..]) else { continue };
        let Ok(value) = calc::evaluate(&expression, EQUATION_TIME) else { continue };
        let Some(value) = parse_number(value.trim_start_matches("approx. ")) else { continue };
        check.checked += 1;
        let decimals = stated.split('.').nth(1).map_or(0, str::len) as i32;
        let stated: f64 = stated.parse().unwrap_or(f64::NAN);
        let tolerance = 0.5 * 10f64.powi(-decimals) + 1e-9 * value.abs();
        if (value - stated).abs() > tolerance {
            check.wrong += 1;
        }
    }
    check
}

/// The arithmetic just before an `=`: digits, operators, brackets and the `$`, `,` and `x`
/// word problems write, with at least one operator between two numbers.
fn expression_before(text: &str) -> Option<String> {
    let is_part = |c: char| c.is_ascii_digit() || " +-*/×÷x().,$%".contains(c);
    let start = text.char_indices().rev().take_while(|&(_, c)| is_part(c) && c != '\n').last()?.0;
    // A sentence or list before the equation ends at ". " or ", ".
    let tail = text[start..].rsplit(". ").next().unwrap_or("").rsplit(", ").next().unwrap_or("");
    let raw = tail.trim().trim_start_matches(|c: char| !c.is_ascii_digit() && c != '(' && c != '$');
    let cleaned: String = calc::strip_thousands_separators(raw)
        .chars()
        .filter(|&c| c != '$')
        .map(|c| match c {
            '×' | 'x' => '*',
            '÷' => '/',
            c => c,
        })
        .collect();
    let cleaned = cleaned.trim().trim_end_matches(['.', ',']).to_string();
    let has_operator = cleaned.trim_start_matches('-').contains(['+', '-', '*', '/']);
    let digits_both_sides = cleaned.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '(')
        && cleaned.chars().last().is_some_and(|c| c.is_ascii_digit() || c == ')' || c == '%');
    (has_operator && digits_both_sides && cleaned.chars().any(|c| c.is_ascii_digit())).then_some(cleaned)
}

/// The number right after an `=` (`$1,234.50` → `1234.50`).
fn number_after(text: &str) -> Option<String> {
    let t = text.trim_start().trim_start_matches('$');
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-')).unwrap_or(t.len());
    let n = calc::strip_thousands_separators(&t[..end]);
    let n = n.trim_end_matches(['.', ',']);
    parse_number(n).map(|_| n.to_string())
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Rates an answer (second argument) to a question (first); higher is better.
pub type Scorer<'a> = dyn FnMut(&str, &str) -> Result<f64, String> + 'a;

/// How one answer is chosen among the samples.
pub enum Chooser<'a> {
    /// Self-consistency: the final answer most samples give.
    Vote,
    /// The vote among the samples whose arithmetic checks out (all samples when none does).
    Calc,
    /// Best-of-N: the sample a scorer (a reward model) rates highest, given the question and
    /// the answer.
    Score(Box<Scorer<'a>>),
}

/// The chosen sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Which sample.
    pub index: usize,
    /// Its final answer, when one could be extracted.
    pub answer: Option<String>,
    /// Why it was chosen, for the log (`vote 9/14`, `score 1.73`).
    pub reason: String,
}

impl Chooser<'_> {
    /// Parses `--choose`: `vote` or `calc` (a reward model is given by the caller).
    pub fn named(name: &str) -> Result<Chooser<'static>, String> {
        match name {
            "vote" => Ok(Chooser::Vote),
            "calc" => Ok(Chooser::Calc),
            _ => Err(format!("unknown way to choose {name:?}: use vote, calc or rm:DIR (a kiln rm run)")),
        }
    }

    /// Picks one of `samples`, the answers to `question` (None when there are none).
    pub fn choose(&mut self, question: &str, samples: &[Sample]) -> Result<Option<Choice>, String> {
        if samples.is_empty() {
            return Ok(None);
        }
        let answers: Vec<Option<String>> = samples.iter().map(|s| final_answer(&s.text)).collect();
        let by_vote = |answers: &[Option<String>], what: &str| match vote(answers, &[]) {
            Some(v) => Choice {
                index: v.sample,
                answer: Some(v.answer),
                reason: format!("{what} {}/{}", v.votes, samples.len()),
            },
            None => Choice { index: 0, answer: None, reason: "no sample has a final answer".into() },
        };
        Ok(Some(match self {
            Chooser::Vote => by_vote(&answers, "vote"),
            Chooser::Calc => {
                // Tiers: working the calculator confirms, then working it cannot check, then
                // the rest; the vote is held in the best tier that has a final answer.
                let tiers: Vec<u8> = samples
                    .iter()
                    .map(|s| match check_arithmetic(&s.text) {
                        c if c.wrong > 0 => 2,
                        c if c.checked == 0 => 1,
                        _ => 0,
                    })
                    .collect();
                let names = ["confirmed by the calculator", "not checkable", "with wrong arithmetic"];
                let tier =
                    (0..3u8).find(|&t| tiers.iter().zip(&answers).any(|(&k, a)| k == t && a.is_some())).unwrap_or(2);
                let kept: Vec<Option<String>> =
                    answers.iter().zip(&tiers).map(|(a, &k)| if k == tier { a.clone() } else { None }).collect();
                let in_tier = tiers.iter().filter(|&&k| k == tier).count();
                by_vote(&kept, &format!("{in_tier} {}, vote", names[tier as usize]))
            }
            Chooser::Score(score) => {
                let scores = samples.iter().map(|s| score(question, &s.text)).collect::<Result<Vec<f64>, String>>()?;
                let index = best(&scores).unwrap_or(0);
                Choice { index, answer: answers[index].clone(), reason: format!("score {:.3}", scores[index]) }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_generate::FinishReason;

    fn sample(text: &str) -> Sample {
        Sample { text: text.into(), tokens: 1, token_ids: vec![1], finish: FinishReason::Stop, seed: 0 }
    }

    #[test]
    fn the_calculator_finds_wrong_equations() {
        let ok = check_arithmetic("She buys 3 * 4 = 12 apples, then 12 + 5 = 17.\n#### 17");
        assert_eq!(ok, ArithmeticCheck { checked: 2, wrong: 0 });
        let bad = check_arithmetic("48 x 3 = 154, so $1,200 + $34 = $1,234 in all.");
        assert_eq!(bad, ArithmeticCheck { checked: 2, wrong: 1 });
        // Decimals as written: 10 / 3 = 3.33 is right, 3.3 is right to one place, 3.4 is not.
        assert_eq!(check_arithmetic("10 / 3 = 3.33").wrong, 0);
        assert_eq!(check_arithmetic("10 / 3 = 3.3").wrong, 0);
        assert_eq!(check_arithmetic("10 / 3 = 3.4").wrong, 1);
        // Not arithmetic: no operator, or words.
        assert_eq!(check_arithmetic("x = 5, and the total = 12").checked, 0);
        assert_eq!(check_arithmetic("Let n = 3. Then n + 2 = 5.").checked, 0);
        // Sentences and lists before an equation are not part of it.
        assert_eq!(check_arithmetic("3 + 4 = 7. 7 * 2 = 14, 14 - 1 = 13"), ArithmeticCheck { checked: 3, wrong: 0 });
    }

    #[test]
    fn choosers_vote_check_and_score() {
        let samples = [
            sample("2 * 3 = 7. #### 7"),
            sample("2 * 3 = 7. #### 7"),
            sample("It is 8. #### 8"),
            sample("2 * 3 = 6. #### 6"),
            sample("I do not know"),
        ];
        let v = Chooser::Vote.choose("q", &samples).unwrap().unwrap();
        assert_eq!((v.index, v.answer.as_deref()), (0, Some("7")));
        let c = Chooser::Calc.choose("q", &samples).unwrap().unwrap();
        assert_eq!((c.index, c.answer.as_deref()), (3, Some("6")));
        // Without confirmed working, unchecked answers come before wrong ones.
        let c = Chooser::Calc.choose("q", &samples[..3]).unwrap().unwrap();
        assert_eq!((c.index, c.answer.as_deref()), (2, Some("8")));
        let mut shortest = Chooser::Score(Box::new(|_: &str, t: &str| Ok(-(t.len() as f64))));
        assert_eq!(shortest.choose("q", &samples).unwrap().unwrap().index, 4);
        let mut failing = Chooser::Score(Box::new(|_: &str, _: &str| Err("no model".to_string())));
        assert!(failing.choose("q", &samples).is_err());
        assert_eq!(Chooser::Vote.choose("q", &[]).unwrap(), None);
        assert!(Chooser::named("oracle").is_err());
    }
}
