//! Documents into passages: the readable text of a file (plain text and Markdown as they are,
//! HTML without its markup), cut at paragraph breaks into passages that fit the encoder and
//! remember their first and last line.

use std::path::Path;

/// One passage of one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Passage {
    /// First line (1-based) of the source file the passage covers.
    pub start_line: usize,
    /// Last line (1-based, inclusive).
    pub end_line: usize,
    /// The text.
    pub text: String,
}

/// The file extensions kiln indexes, lower case.
pub const INDEXED_EXTENSIONS: &[&str] = &["txt", "md", "markdown", "rst", "html", "htm"];

/// Whether `path` is a document kiln indexes (by extension).
pub fn is_document(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| INDEXED_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The readable text of a file's bytes: HTML without tags, scripts and styles (one line per
/// block, so line numbers follow the rendered text), anything else as UTF-8 (invalid bytes
/// replaced).
pub fn readable_text(path: &Path, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let html = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "html" | "htm"));
    if html {
        html_to_text(&text)
    } else {
        text.into_owned()
    }
}

/// HTML to plain text: tags removed, `script`/`style` content dropped, block tags as spaces,
/// the common entities decoded, each source line kept as one line, so a passage cites the
/// lines of the file (html2text, which the browse tool uses, reflows the text and loses them).
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut skipping: Option<&str> = None;
    for line in html.lines() {
        let mut rest = line;
        let mut text = String::new();
        while !rest.is_empty() {
            if let Some(end_tag) = skipping {
                match find_ignore_case(rest, end_tag) {
                    Some(i) => {
                        rest = &rest[i + end_tag.len()..];
                        skipping = None;
                    }
                    None => rest = "",
                }
                continue;
            }
            match rest.find('<') {
                Some(i) => {
                    text.push_str(&rest[..i]);
                    let tag_end = rest[i..].find('>').map_or(rest.len(), |j| i + j + 1);
                    let tag = rest[i..tag_end].to_ascii_lowercase();
                    if tag.starts_with("<script") {
                        skipping = Some("</script>");
                    } else if tag.starts_with("<style") {
                        skipping = Some("</style>");
                    } else if ["<br", "<p", "</p", "<div", "</div", "<li", "<h", "</h", "<tr"]
                        .iter()
                        .any(|b| tag.starts_with(b))
                    {
                        text.push(' ');
                    }
                    rest = &rest[tag_end..];
                }
                None => {
                    text.push_str(rest);
                    rest = "";
                }
            }
        }
        out.push_str(&decode_entities(&text));
        out.push('\n');
    }
    out
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack.to_ascii_lowercase().find(needle)
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Cuts text into passages that fit an encoder: lines are gathered until a passage holds half
/// of `budget` (as `count` measures it, in the encoder's tokens) and a paragraph ends (a blank
/// line or a Markdown heading follows), or until the next line would pass `budget`. A line
/// over `budget` alone is cut by words (its pieces share its line number).
pub fn passages(text: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Passage> {
    let budget = budget.max(8);
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut used = 0;
    let mut start = 1;
    let flush = |current: &mut Vec<&str>, used: &mut usize, start: usize, end: usize, out: &mut Vec<Passage>| {
        let text = current.join("\n").trim().to_string();
        if !text.is_empty() {
            out.push(Passage { start_line: start, end_line: end, text });
        }
        current.clear();
        *used = 0;
    };
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let number = i + 1;
        let n = count(line);
        if n > budget {
            flush(&mut current, &mut used, start, number - 1, &mut out);
            for piece in split_words(line, budget, count) {
                out.push(Passage { start_line: number, end_line: number, text: piece });
            }
            start = number + 1;
            continue;
        }
        if used + n > budget {
            flush(&mut current, &mut used, start, number - 1, &mut out);
        }
        if current.is_empty() {
            if line.trim().is_empty() {
                start = number + 1;
                continue;
            }
            start = number;
        }
        current.push(line);
        used += n;
        let next = lines.get(i + 1).map(|l| l.trim());
        let paragraph_ends = next.is_none_or(|l| l.is_empty() || l.starts_with('#'));
        if used >= budget / 2 && paragraph_ends {
            flush(&mut current, &mut used, start, number, &mut out);
        }
    }
    flush(&mut current, &mut used, start, lines.len(), &mut out);
    out
}

/// A line cut into runs of words that each fit `budget` (counted word by word: WordPiece and
/// BPE tokens do not cross spaces).
fn split_words(line: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    let mut used = 0;
    for word in line.split_whitespace() {
        let n = count(word);
        if !piece.is_empty() && used + n > budget {
            pieces.push(std::mem::take(&mut piece));
            used = 0;
        }
        if !piece.is_empty() {
            piece.push(' ');
        }
        piece.push_str(word);
        used += n;
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words as the token count: the chunker's rules without a tokenizer.
    fn count_words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    #[test]
    fn passages_keep_their_lines_and_break_at_paragraphs() {
        let para = |w: &str, n: usize| vec![w; n].join(" ");
        let text = format!("{}\n{}\n\n{}\n", para("a", 70), para("b", 70), para("c", 10));
        let p = passages(&text, 200, &count_words);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].start_line, p[0].end_line), (1, 2));
        assert_eq!((p[1].start_line, p[1].end_line), (4, 4));
        assert!(p[1].text.starts_with("c c"));
    }

    #[test]
    fn a_short_file_is_one_passage_and_a_huge_line_is_cut() {
        let p = passages("\n\nhello world\nsecond line\n", 200, &count_words);
        assert_eq!(p, vec![Passage { start_line: 3, end_line: 4, text: "hello world\nsecond line".into() }]);
        let long = vec!["w"; 1000].join(" ");
        let p = passages(&format!("intro\n{long}\nend"), 200, &count_words);
        assert_eq!(p.iter().filter(|x| x.start_line == 2).count(), 5);
        assert!(p.iter().all(|x| count_words(&x.text) <= 200));
        assert_eq!(p.first().unwrap().text, "intro");
        assert_eq!(p.last().unwrap().start_line, 3);
    }

    #[test]
    fn html_loses_markup_scripts_and_styles_but_keeps_lines() {
        let html = "<html><head><style>p { color: red }</style></head>\n<body><p>Fish &amp; chips</p>\n<script>\nvar x = 1;\n</script><p>at <b>noon</b></p></body>";
        let text = html_to_text(html);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines, vec!["", "Fish & chips", "", "", "at noon"]);
    }
}
