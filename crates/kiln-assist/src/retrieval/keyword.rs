//! Keyword search: Okapi BM25 over lower-cased words, with a light English plural folding so
//! "appointments" finds "appointment".

use std::collections::HashMap;

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;
/// BM25's length normalisation.
const B: f64 = 0.75;

/// The words of a text as keyword search sees them.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| fold(&w.to_lowercase())).collect()
}

/// Plural folding: `-ies` → `-y`, `-es` after s/x/z/ch/sh → stem, else a final `s` (not `ss`, not
/// in words of three letters or fewer).
fn fold(word: &str) -> String {
    let n = word.chars().count();
    if n <= 3 {
        return word.to_string();
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    }
    if let Some(stem) = word.strip_suffix("es") {
        if ["s", "x", "z", "ch", "sh"].iter().any(|e| stem.ends_with(e)) {
            return stem.to_string();
        }
    }
    if word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

/// A BM25 index over passages (built in memory from the stored passages on load).
pub struct KeywordIndex {
    /// term → (passage, count in it).
    postings: HashMap<String, Vec<(u32, u32)>>,
    lengths: Vec<u32>,
    mean_length: f64,
}

impl KeywordIndex {
    /// Indexes the passages, in order.
    pub fn new<'a>(passages: impl IntoIterator<Item = &'a str>) -> KeywordIndex {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut lengths = Vec::new();
        for (i, text) in passages.into_iter().enumerate() {
            let words = terms(text);
            lengths.push(words.len() as u32);
            let mut counts: HashMap<String, u32> = HashMap::new();
            for w in words {
                *counts.entry(w).or_default() += 1;
            }
            for (w, c) in counts {
                postings.entry(w).or_default().push((i as u32, c));
            }
        }
        let mean_length = lengths.iter().map(|&l| l as f64).sum::<f64>() / lengths.len().max(1) as f64;
        KeywordIndex { postings, lengths, mean_length: mean_length.max(1.0) }
    }

    /// The passages that share a word with `query`, best first, with their BM25 scores.
    pub fn search(&self, query: &str, limit: usize) -> Vec<(usize, f64)> {
        let n = self.lengths.len() as f64;
        let mut scores: HashMap<u32, f64> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for term in terms(query) {
            if !seen.insert(term.clone()) {
                continue;
            }
            let Some(list) = self.postings.get(&term) else { continue };
            let df = list.len() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(p, tf) in list {
                let tf = tf as f64;
                let len = self.lengths[p as usize] as f64;
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / self.mean_length));
                *scores.entry(p).or_default() += s;
            }
        }
        let mut ranked: Vec<(usize, f64)> = scores.into_iter().map(|(p, s)| (p as usize, s)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_maps_plurals_to_their_singular() {
        assert_eq!(terms("Appointments, Boxes; Cities! bus glass"), ["appointment", "box", "city", "bus", "glass"]);
    }

    #[test]
    fn rare_words_outrank_common_ones() {
        let docs = ["the cat sat on the mat", "the dog ate the bone", "the dentist is on tuesday"];
        let idx = KeywordIndex::new(docs);
        let hits = idx.search("when is the dentist", 3);
        assert_eq!(hits[0].0, 2);
        assert!(idx.search("zebra", 3).is_empty());
        // A word twice in the query counts once.
        assert_eq!(idx.search("dog dog", 3), idx.search("dog", 3));
    }

    #[test]
    fn score_matches_the_bm25_formula() {
        let idx = KeywordIndex::new(["a b", "b c c"]);
        let hits = idx.search("c", 2);
        // df = 1 of n = 2; tf = 2, len = 3, mean length 2.5.
        let idf = ((2.0 - 1.0 + 0.5) / 1.5 + 1.0f64).ln();
        let want = idf * 2.0 * 2.2 / (2.0 + 1.2 * (0.25 + 0.75 * 3.0 / 2.5));
        assert_eq!(hits.len(), 1);
        assert!((hits[0].1 - want).abs() < 1e-12);
    }
}
