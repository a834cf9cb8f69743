//! Reading the benchmark files in place: plain, `.gz` or `.bz2` text, JSON lines and CSV.

use crate::EvalError;
use serde::de::DeserializeOwned;
use std::io::Read;
use std::path::Path;

/// The whole text of `path`, decompressed by its extension (`.gz`, `.bz2`).
pub fn read_text(path: &Path) -> Result<String, EvalError> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let mut reader: Box<dyn Read> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::GzDecoder::new(file)),
        Some("bz2") => Box::new(bzip2::read::BzDecoder::new(file)),
        _ => Box::new(file),
    };
    let mut text = String::new();
    reader.read_to_string(&mut text).map_err(|e| EvalError::io(path, e))?;
    Ok(text)
}

/// One `T` per non-empty line of `text` (read from `path`, named in errors).
pub fn parse_jsonl<T: DeserializeOwned>(text: &str, path: &Path) -> Result<Vec<T>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| EvalError::parse(path, i + 1, format!("bad JSON line: {e}")))?;
        out.push(v);
    }
    Ok(out)
}

/// Rows of RFC 4180 CSV: fields separated by commas, optionally in double quotes (which may
/// hold commas, newlines and `""` for a quote). A row with an unclosed quote is an error.
pub fn parse_csv(text: &str, path: &Path) -> Result<Vec<Vec<String>>, EvalError> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut row_line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push(std::mem::take(&mut row));
                }
                row.clear();
                line += 1;
                row_line = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(EvalError::parse(path, row_line, "unclosed quote in CSV row"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_newlines() {
        let text = "a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\nlast,,\n";
        let rows = parse_csv(text, Path::new("t.csv")).expect("valid CSV");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], ["x, y", "say \"hi\"", "two\nlines"]);
        assert_eq!(rows[2], ["last", "", ""]);
        let err = parse_csv("a,\"open\nb", Path::new("t.csv")).expect_err("unclosed");
        assert_eq!(err.to_string(), "t.csv:1: unclosed quote in CSV row");
    }

    #[test]
    fn jsonl_reports_the_bad_line() {
        #[derive(serde::Deserialize)]
        struct Row {
            #[allow(dead_code)]
            a: u32,
        }
        let ok: Vec<Row> = parse_jsonl("{\"a\":1}\n\n{\"a\":2}\n", Path::new("x.jsonl")).expect("valid");
        assert_eq!(ok.len(), 2);
        let err = parse_jsonl::<Row>("{\"a\":1}\n{\"a\":\n", Path::new("x.jsonl")).err().expect("bad line");
        assert!(err.to_string().starts_with("x.jsonl:2: bad JSON line"), "{err}");
    }
}
