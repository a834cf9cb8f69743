//! Finding special tokens written in text, exactly as llama.cpp does.
//!
//! llama.cpp (`tokenizer_st_partition`, with `parse_special = true`) takes every control,
//! user-defined and unknown token, longest text first, and for each one cuts every remaining
//! stretch of plain text at that token's leftmost non-overlapping occurrences. The order matters
//! when tokens overlap (`"bcd"` beats `"ab"` in `"abcd"` because it is longer, although it starts
//! later), so this is not the leftmost-longest matching of the `tokenizers` crate.
//!
//! Doing that literally costs one substring search per special token (Gemma 3 has 6,400).
//! Instead a byte trie lists every occurrence of every special token in one pass, and the
//! occurrences are then claimed in llama.cpp's order: a token's occurrence is taken when none of
//! its bytes belongs to an occurrence taken earlier. Since the unclaimed bytes are exactly
//! llama.cpp's remaining text fragments, this gives the same cut.

/// A piece of input: plain text to run through the model, or a special token's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'t> {
    /// Text with no special token in it.
    Text(&'t str),
    /// A special token.
    Special(u32),
}

/// A node of the byte trie: children sorted by byte, and the special token ending here.
#[derive(Clone, Debug, Default)]
struct Node {
    children: Vec<(u8, u32)>,
    /// Index into `SpecialSplitter::tokens` (which is in priority order).
    token: Option<u32>,
}

/// Splits text at special tokens, in llama.cpp's priority order.
#[derive(Clone, Debug)]
pub(crate) struct SpecialSplitter {
    /// (text, id, parsed even when `parse_special` is off), longest text first, ties by lower id.
    tokens: Vec<(String, u32, bool)>,
    nodes: Vec<Node>,
}

impl SpecialSplitter {
    /// A splitter for these (text, id, always) triples; `always` tokens (llama.cpp's
    /// user-defined ones) are split out even when special-token parsing is off. Empty texts are
    /// ignored.
    pub(crate) fn new(specials: impl IntoIterator<Item = (String, u32, bool)>) -> SpecialSplitter {
        let mut tokens: Vec<(String, u32, bool)> = specials.into_iter().filter(|(t, _, _)| !t.is_empty()).collect();
        // llama.cpp sorts by length only (std::sort, so ties land in an unspecified order);
        // the id breaks ties here so the result is at least deterministic.
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut nodes = vec![Node::default()];
        for (rank, (text, _, _)) in tokens.iter().enumerate() {
            let mut node = 0usize;
            for &b in text.as_bytes() {
                node = match nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[node].children[i].1 as usize,
                    Err(i) => {
                        let next = nodes.len();
                        nodes.push(Node::default());
                        nodes[node].children.insert(i, (b, next as u32));
                        next
                    }
                };
            }
            // A text listed twice keeps its first (lowest) id.
            nodes[node].token.get_or_insert(rank as u32);
        }
        SpecialSplitter { tokens, nodes }
    }

    fn child(&self, node: usize, b: u8) -> Option<usize> {
        let children = &self.nodes[node].children;
        children.binary_search_by_key(&b, |c| c.0).ok().map(|i| children[i].1 as usize)
    }

    /// Cuts `text` into plain-text pieces and special tokens, in order. Without `parse_special`
    /// only the `always` tokens are cut out. Empty text gives no pieces.
    pub(crate) fn split<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Piece<'t>> {
        let bytes = text.as_bytes();
        // Every occurrence of every special token: (priority rank, start byte).
        let mut occurrences: Vec<(u32, usize)> = Vec::new();
        for start in 0..bytes.len() {
            let mut node = 0usize;
            for &b in &bytes[start..] {
                match self.child(node, b) {
                    Some(next) => node = next,
                    None => break,
                }
                if let Some(rank) = self.nodes[node].token {
                    if parse_special || self.tokens[rank as usize].2 {
                        occurrences.push((rank, start));
                    }
                }
            }
        }
        if occurrences.is_empty() {
            return if text.is_empty() { Vec::new() } else { vec![Piece::Text(text)] };
        }
        occurrences.sort_unstable();

        let mut claimed = vec![false; bytes.len()];
        let mut taken: Vec<(usize, u32)> = Vec::new(); // (start, rank)
        for (rank, start) in occurrences {
            let end = start + self.tokens[rank as usize].0.len();
            if claimed[start..end].iter().any(|&c| c) {
                continue;
            }
            claimed[start..end].iter_mut().for_each(|c| *c = true);
            taken.push((start, rank));
        }
        taken.sort_unstable();

        let mut pieces = Vec::with_capacity(2 * taken.len() + 1);
        let mut pos = 0usize;
        for (start, rank) in taken {
            let (token_text, id, _) = &self.tokens[rank as usize];
            if start > pos {
                pieces.push(Piece::Text(&text[pos..start]));
            }
            pieces.push(Piece::Special(*id));
            pos = start + token_text.len();
        }
        if pos < text.len() {
            pieces.push(Piece::Text(&text[pos..]));
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitter(tokens: &[(&str, u32)]) -> SpecialSplitter {
        SpecialSplitter::new(tokens.iter().map(|(t, i)| (t.to_string(), *i, false)))
    }

    #[test]
    fn plain_text_is_one_piece() {
        let s = splitter(&[("<|im_start|>", 1)]);
        assert_eq!(s.split("hello", true), vec![Piece::Text("hello")]);
        assert_eq!(s.split("", true), vec![]);
    }

    #[test]
    fn specials_are_cut_out_anywhere() {
        let s = splitter(&[("<|im_start|>", 1), ("<|im_end|>", 2)]);
        assert_eq!(
            s.split("<|im_start|>user\nHi<|im_end|><|im_end|>\n", true),
            vec![Piece::Special(1), Piece::Text("user\nHi"), Piece::Special(2), Piece::Special(2), Piece::Text("\n")]
        );
    }

    /// llama.cpp handles the longer token first, even when it starts later.
    #[test]
    fn longer_tokens_win_over_earlier_shorter_ones() {
        let s = splitter(&[("ab", 1), ("bcd", 2)]);
        assert_eq!(s.split("abcd", true), vec![Piece::Text("a"), Piece::Special(2)]);
        let s = splitter(&[("\n", 1), ("\n\n", 2)]);
        assert_eq!(
            s.split("a\n\n\nb", true),
            vec![Piece::Text("a"), Piece::Special(2), Piece::Special(1), Piece::Text("b")]
        );
    }

    /// Without special-token parsing only user-defined ("always") tokens are cut out.
    #[test]
    fn parse_special_off_keeps_only_user_defined_tokens() {
        let s = SpecialSplitter::new([("<c>".to_string(), 1, false), ("<u>".to_string(), 2, true)]);
        assert_eq!(s.split("a<c>b<u>", false), vec![Piece::Text("a<c>b"), Piece::Special(2)]);
        assert_eq!(
            s.split("a<c>b<u>", true),
            vec![Piece::Text("a"), Piece::Special(1), Piece::Text("b"), Piece::Special(2)]
        );
    }

    #[test]
    fn multibyte_text_around_specials() {
        let s = splitter(&[("<x>", 7)]);
        assert_eq!(s.split("é<x>漢字<x", true), vec![Piece::Text("é"), Piece::Special(7), Piece::Text("漢字<x")]);
    }
}
