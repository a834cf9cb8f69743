//! [`TokenStream`]: detokenizing one token at a time, for streaming output.
//!
//! Decoding tokens one by one and concatenating goes wrong in two ways: a character may be split
//! across byte tokens (`<0xF0><0x9F><0x98><0x80>` is one emoji; byte-level BPE does the same), and
//! decoders treat the start of a text specially (SentencePiece drops the first token's leading
//! space). So the stream keeps a short window of recent ids and decodes it twice: up to the last
//! text it returned, and up to the newest id. The difference is the new text, returned once it
//! does not end in an incomplete character (U+FFFD). The window then slides past what was
//! returned. The concatenated output equals a one-shot [`Tokenizer::decode`] of all ids.

use crate::{TextError, Tokenizer};

/// Incremental detokenizer: push ids, get printable text.
///
/// Never returns part of a UTF-8 character: bytes are held back until the character completes
/// (or until [`TokenStream::finish`], which flushes whatever is left).
#[derive(Debug)]
pub struct TokenStream<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix: usize,
    /// End of the text already returned (an index into `ids`).
    read: usize,
}

impl<'a> TokenStream<'a> {
    /// A stream over `tok`; `skip_special` as in [`Tokenizer::decode`].
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> TokenStream<'a> {
        TokenStream { tok, skip_special, ids: Vec::new(), prefix: 0, read: 0 }
    }

    /// Adds one token; returns the text that became printable (often empty).
    pub fn push(&mut self, id: u32) -> Result<String, TextError> {
        if id as usize >= self.tok.vocab_size() {
            return Err(TextError::UnknownId { id, vocab_size: self.tok.vocab_size() });
        }
        self.ids.push(id);
        let done = self.tok.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let all = self.tok.decode(&self.ids[self.prefix..], self.skip_special)?;
        if all.len() > done.len() && !all.ends_with(char::REPLACEMENT_CHARACTER) {
            let new = new_suffix(&done, &all);
            self.prefix = self.read;
            self.read = self.ids.len();
            self.compact();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// Returns whatever is still held back (an incomplete character becomes U+FFFD) and
    /// empties the stream.
    pub fn finish(&mut self) -> String {
        let done = self.tok.decode(&self.ids[self.prefix..self.read], self.skip_special).unwrap_or_default();
        let all = self.tok.decode(&self.ids[self.prefix..], self.skip_special).unwrap_or_default();
        let rest = new_suffix(&done, &all);
        self.ids.clear();
        self.prefix = 0;
        self.read = 0;
        rest
    }

    /// Drops ids before the window so a long generation does not keep all of them.
    fn compact(&mut self) {
        if self.prefix > 64 {
            self.ids.drain(..self.prefix);
            self.read -= self.prefix;
            self.prefix = 0;
        }
    }
}

/// The part of `all` after `done` (its prefix, for every decoder kiln builds; otherwise the
/// bytes after `done`'s length, moved forward to a character boundary).
fn new_suffix(done: &str, all: &str) -> String {
    if let Some(rest) = all.strip_prefix(done) {
        return rest.to_string();
    }
    let mut cut = done.len().min(all.len());
    while !all.is_char_boundary(cut) {
        cut += 1;
    }
    all[cut..].to_string()
}
