//! The `calc` tool: exact arithmetic with [fend](https://github.com/printfn/fend) (big
//! integers, fractions, decimals, powers, percentages, units, common functions).

use super::{cap_output, Tool, ToolError};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long one expression may take, by default.
pub const TIME_LIMIT: Duration = Duration::from_secs(2);

/// The most bytes of result the model gets, by default.
pub const OUTPUT_CAP: usize = 4 * 1024;

/// A calculator: evaluates one expression exactly with fend.
#[derive(Debug, Clone)]
pub struct Calc {
    time_limit: Duration,
    output_cap: usize,
}

impl Calc {
    /// A calculator that stops after `time_limit` and returns at most `output_cap` bytes.
    pub fn new(time_limit: Duration, output_cap: usize) -> Calc {
        Calc { time_limit, output_cap }
    }
}

impl Default for Calc {
    fn default() -> Self {
        Calc::new(TIME_LIMIT, OUTPUT_CAP)
    }
}

impl Tool for Calc {
    fn name(&self) -> &str {
        "calc"
    }

    fn description(&self) -> &str {
        "Evaluates an arithmetic expression exactly: big integers, fractions, decimals, powers \
         (^), percentages, sqrt, sin, ln, log, factorial (!), units (5 km to miles). Use it for \
         any calculation instead of working it out yourself."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "description": "The expression, e.g. \"48,713 * 127\", \"(3/4 + 1/6) * 2\", \"sqrt(2)\", \"15% of 80\".",
                    // Arithmetic only: under constrained decoding a model cannot write an
                    // equation with its own guess of the result ("2*3 = 7") as the expression.
                    "pattern": "^[-+*/^%()., 0-9A-Za-z_]{1,200}$"
                }
            },
            "required": ["expression"],
            "additionalProperties": false
        })
    }

    fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        let expression = expression_argument(arguments)?;
        evaluate(expression, self.time_limit).map(|result| cap_output(&result, self.output_cap))
    }
}

/// The `expression` argument, checked against the schema.
fn expression_argument(arguments: &Value) -> Result<&str, ToolError> {
    let object = arguments
        .as_object()
        .ok_or_else(|| ToolError::Arguments("expected an object {\"expression\": \"...\"}".into()))?;
    if let Some(other) = object.keys().find(|k| *k != "expression") {
        return Err(ToolError::Arguments(format!("unknown argument {other:?}; the only argument is \"expression\"")));
    }
    match object.get("expression") {
        Some(Value::String(e)) if !e.trim().is_empty() => Ok(e),
        Some(Value::String(_)) => Err(ToolError::Arguments("\"expression\" is empty".into())),
        Some(_) => Err(ToolError::Arguments("\"expression\" must be a string".into())),
        None => Err(ToolError::Arguments("missing \"expression\": the expression to evaluate".into())),
    }
}

/// Stops fend once the deadline has passed.
struct Deadline(Instant);

impl fend_core::Interrupt for Deadline {
    fn should_interrupt(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Evaluates `expression` with fend within `limit`; the result as fend prints it.
pub fn evaluate(expression: &str, limit: Duration) -> Result<String, ToolError> {
    let input = strip_thousands_separators(expression);
    let mut context = fend_core::Context::new();
    let started = Instant::now();
    match fend_core::evaluate_with_interrupt(&input, &mut context, &Deadline(started + limit)) {
        Ok(result) => {
            let text = result.get_main_result().trim();
            if text.is_empty() {
                return Err(ToolError::Failed(format!("{expression:?} has no value")));
            }
            Ok(text.to_string())
        }
        // fend says "Interrupted" however it was stopped; the clock tells whether it was us.
        Err(_) if started.elapsed() >= limit => Err(ToolError::TimedOut(limit.as_secs())),
        Err(message) => Err(ToolError::Failed(format!("cannot evaluate {expression:?}: {message}"))),
    }
}

/// Removes the commas word problems put between groups of digits ("48,713" → "48713"): a comma
/// with a digit before it and exactly three digits after it (then no further digit), so that
/// argument lists such as `max(1,2)` keep theirs.
pub fn strip_thousands_separators(expression: &str) -> String {
    let chars: Vec<char> = expression.chars().collect();
    let mut out = String::with_capacity(expression.len());
    for (i, &c) in chars.iter().enumerate() {
        let separates_thousands = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.len() >= i + 4
            && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
            && chars.get(i + 4).is_none_or(|next| !next.is_ascii_digit());
        if !separates_thousands {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc(expression: &str) -> Result<String, ToolError> {
        Calc::default().call(&json!({ "expression": expression }))
    }

    #[test]
    fn big_numbers_are_exact() {
        assert_eq!(calc("2^200").expect("2^200"), "1606938044258990275541962092341162602522202993782792835301376");
        assert_eq!(calc("48,713*127").expect("with separators"), "6186551");
        assert_eq!(calc("48713 * 127").expect("without"), "6186551");
        assert_eq!(calc("1,234,567.5 + 1").expect("decimal with separators"), "1234568.5");
        assert_eq!(calc("25!").expect("factorial"), "15511210043330985984000000");
    }

    #[test]
    fn fractions_decimals_and_functions() {
        assert_eq!(calc("1/3 + 1/6").expect("fractions"), "0.5");
        assert_eq!(calc("0.1 + 0.2").expect("decimals"), "0.3");
        assert_eq!(calc("1/3").expect("third"), "approx. 0.3333333333");
        assert_eq!(calc("sqrt(2)").expect("sqrt"), "approx. 1.4142135624");
        assert_eq!(calc("15% of 80").expect("percent"), "12");
        assert_eq!(calc("sin(pi/6)").expect("sin"), "0.5");
        assert_eq!(calc("a = 3; a * 2").expect("variables"), "6");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(calc("1 +"), Err(ToolError::Failed(m)) if m.contains("unexpected input")));
        assert!(matches!(calc("1/0"), Err(ToolError::Failed(m)) if m.contains("division by zero")));
        assert!(matches!(calc("max(1,2)"), Err(ToolError::Failed(m)) if m.contains("unknown identifier")));
        for bad in [
            json!("1+1"),
            json!({}),
            json!({"expression": 2}),
            json!({"expression": " "}),
            json!({"expression": "1", "x": 1}),
        ] {
            assert!(matches!(Calc::default().call(&bad), Err(ToolError::Arguments(_))), "{bad}");
        }
    }

    #[test]
    fn a_pathological_expression_hits_the_time_limit() {
        for expression in ["100000!", "10^10^10"] {
            let t0 = Instant::now();
            assert!(matches!(calc(expression), Err(ToolError::TimedOut(2))), "{expression}");
            assert!(t0.elapsed() < Duration::from_secs(3), "{expression}: {:?}", t0.elapsed());
        }
    }

    #[test]
    fn long_results_are_capped() {
        // 2^20000 has 6021 digits.
        let out = calc("2^20000").expect("2^20000");
        assert!(out.starts_with("3980276840337966592354307206"), "{}", &out[..40]);
        assert!(out.ends_with(&format!("[… {} more bytes cut]", 6021 - OUTPUT_CAP)), "{}", &out[out.len() - 40..]);
        assert!(out.len() < OUTPUT_CAP + 40);
    }

    #[test]
    fn thousands_separators_are_stripped_only_between_digit_groups() {
        assert_eq!(strip_thousands_separators("48,713*127"), "48713*127");
        assert_eq!(strip_thousands_separators("1,234,567.89"), "1234567.89");
        assert_eq!(strip_thousands_separators("f(1,2)"), "f(1,2)");
        assert_eq!(strip_thousands_separators("f(1, 234)"), "f(1, 234)");
        assert_eq!(strip_thousands_separators("1,2345"), "1,2345");
        assert_eq!(strip_thousands_separators("(a,123)"), "(a,123)");
        assert_eq!(strip_thousands_separators("1,234"), "1234");
        assert_eq!(strip_thousands_separators("1,23"), "1,23");
        assert_eq!(strip_thousands_separators("1,"), "1,");
    }
}
