//! Corpora to token shards, and batches from shards.
//!
//! Sources are text files (one document each), JSONL files (one document per line, its `text`
//! field) and, with the `parquet` feature, Parquet files (a `text` column), given as files or
//! folders walked in sorted order. The input is read in pieces of about [`PIECE_BYTES`]; piece
//! `i` becomes `train_{i}.bin` and `val_{i}.bin` (every [`VAL_EVERY`]-th chunk of a piece goes
//! to validation), written atomically, so a re-run skips the pieces already tokenized.
//!
//! A shard is a 32-byte header (magic `KILNTOK1`, token width 2 or 4, token count, vocabulary
//! size, all little-endian) followed by the tokens: u16 when the vocabulary fits, else u32.

use crate::rng::Rng;
use crate::{io_err, Result, TrainError};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_text::Tokenizer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Bytes of input per shard pair.
pub const PIECE_BYTES: usize = 16 << 20;
/// Bytes per tokenization chunk (the unit of parallelism and of the train/validation split).
const CHUNK_BYTES: usize = 64 << 10;
/// One chunk in this many goes to validation.
pub const VAL_EVERY: usize = 10;
const MAGIC: &[u8; 8] = b"KILNTOK1";
const HEADER: usize = 32;

/// What a shard directory holds, saved as `manifest.json` once every piece is written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Pieces (shard pairs).
    pub pieces: usize,
    /// Training tokens.
    pub train_tokens: u64,
    /// Validation tokens.
    pub val_tokens: u64,
    /// UTF-8 bytes of the validation text (for bits per byte).
    pub val_bytes: u64,
    /// UTF-8 bytes of the training text.
    #[serde(default)]
    pub train_bytes: u64,
    /// Fingerprint of tokenizer.json, so a different tokenizer re-tokenizes.
    pub tokenizer_hash: String,
}

/// One unit of text: a document start (BOS goes before it) or a continuation.
struct Doc {
    text: String,
    starts: bool,
}

/// FNV-1a 64 of `bytes`, as hex: a fingerprint, not security.
pub fn fingerprint(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// The source files under `path`, sorted; hidden files are skipped.
pub fn source_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(path).map_err(io_err(path))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        out.extend(source_files(&p)?);
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!("{}: no data files in this folder", path.display())));
    }
    Ok(out)
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// Reads the documents of `path` and hands them to `sink` in order.
fn read_docs(path: &Path, sink: &mut dyn FnMut(Doc) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    match extension(path).as_str() {
        "jsonl" | "ndjson" => {
            for (i, line) in BufReader::new(file).lines().enumerate() {
                let line = line.map_err(io_err(path))?;
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&line)
                    .map_err(|e| TrainError::Data(format!("{}:{}: not valid JSON: {e}", path.display(), i + 1)))?;
                let text = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                    TrainError::Data(format!("{}:{}: no string field \"text\"", path.display(), i + 1))
                })?;
                sink(Doc { text: text.to_string(), starts: true })?;
            }
            Ok(())
        }
        "parquet" => crate::data_parquet::read_parquet(path, &mut |text| sink(Doc { text, starts: true })),
        _ => {
            // A text file is one document, read in chunks cut at line ends.
            let mut reader = BufReader::new(file);
            let mut starts = true;
            loop {
                let mut buf = Vec::with_capacity(CHUNK_BYTES + 256);
                while buf.len() < CHUNK_BYTES {
                    if reader.read_until(b'\n', &mut buf).map_err(io_err(path))? == 0 {
                        break;
                    }
                }
                if buf.is_empty() {
                    return Ok(());
                }
                let text = String::from_utf8(buf)
                    .map_err(|_| TrainError::Data(format!("{}: not UTF-8 text", path.display())))?;
                sink(Doc { text, starts })?;
                starts = false;
            }
        }
    }
}

/// Calls `f` with each chunk of text of `path`: its documents, or pieces of a long text file.
pub fn for_each_chunk(path: &Path, f: &mut dyn FnMut(String) -> Result<()>) -> Result<()> {
    read_docs(path, &mut |d| f(d.text))
}

/// Writes a shard atomically (temporary file, then rename).
pub fn write_shard(path: &Path, tokens: &[u32], vocab_size: usize) -> Result<()> {
    let width: u32 = if vocab_size <= 65_536 { 2 } else { 4 };
    let mut bytes = Vec::with_capacity(HEADER + tokens.len() * width as usize);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&width.to_le_bytes());
    bytes.extend_from_slice(&(vocab_size as u32).to_le_bytes());
    bytes.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    bytes.resize(HEADER, 0);
    for &t in tokens {
        if width == 2 {
            bytes.extend_from_slice(&(t as u16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
    }
    crate::checkpoint::write_atomic(path, &bytes)
}

/// Reads a shard, checking its header and that every token is inside the vocabulary.
pub fn read_shard(path: &Path, vocab_size: usize) -> Result<Vec<u32>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_err(path))?;
    let bad = |m: &str| TrainError::Data(format!("{}: {m}; delete the shard folder to re-tokenize", path.display()));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("not a kiln token shard"));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let width = u32_at(8) as usize;
    let n = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    if (width != 2 && width != 4) || bytes.len() != HEADER + n * width {
        return Err(bad("truncated or corrupted shard"));
    }
    let tokens: Vec<u32> = bytes[HEADER..]
        .chunks_exact(width)
        .map(|c| {
            if width == 2 {
                u32::from(u16::from_le_bytes([c[0], c[1]]))
            } else {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]])
            }
        })
        .collect();
    if tokens.iter().any(|&t| t as usize >= vocab_size) {
        return Err(bad("a token id is outside the tokenizer's vocabulary (made with another tokenizer?)"));
    }
    Ok(tokens)
}

fn piece_paths(dir: &Path, i: usize) -> (PathBuf, PathBuf) {
    (dir.join(format!("train_{i:06}.bin")), dir.join(format!("val_{i:06}.bin")))
}

/// Tokenizes `data` into shards under `dir` (skipping pieces already there) and returns the
/// manifest. `tokenizer_json` fingerprints the tokenizer.
pub fn prepare(data: &Path, tok: &Tokenizer, tokenizer_json: &[u8], dir: &Path, quiet: bool) -> Result<Manifest> {
    let hash = fingerprint(tokenizer_json);
    let manifest_path = dir.join("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest_path) {
        if let Ok(m) = serde_json::from_str::<Manifest>(&text) {
            if m.tokenizer_hash == hash {
                return Ok(m);
            }
        }
        // Another tokenizer: start over.
        std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::write(dir.join("tokenizer_hash"), &hash).map_err(io_err(dir))?;
    let files = source_files(data)?;
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("tokenizing {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("static template"),
    );
    let mut m = Manifest { tokenizer_hash: hash, ..Manifest::default() };
    let mut piece: Vec<Doc> = Vec::new();
    let mut piece_bytes = 0;
    let flush = |piece: &mut Vec<Doc>, m: &mut Manifest| -> Result<()> {
        let i = m.pieces;
        m.pieces += 1;
        let docs = std::mem::take(piece);
        let (train_path, val_path) = piece_paths(dir, i);
        let val_bytes: u64 = docs
            .iter()
            .enumerate()
            .filter(|(k, _)| k % VAL_EVERY == VAL_EVERY - 1)
            .map(|(_, d)| d.text.len() as u64)
            .sum();
        if !(train_path.is_file() && val_path.is_file()) {
            let encoded: Vec<Vec<u32>> = docs.par_iter().map(|d| encode_doc(tok, d)).collect::<Result<_>>()?;
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (k, ids) in encoded.into_iter().enumerate() {
                if k % VAL_EVERY == VAL_EVERY - 1 { &mut val } else { &mut train }.extend(ids);
            }
            write_shard(&train_path, &train, tok.vocab_size())?;
            write_shard(&val_path, &val, tok.vocab_size())?;
        }
        m.train_tokens += shard_len(&train_path)?;
        m.val_tokens += shard_len(&val_path)?;
        m.val_bytes += val_bytes;
        m.train_bytes += docs.iter().map(|d| d.text.len() as u64).sum::<u64>() - val_bytes;
        Ok(())
    };
    for file in &files {
        read_docs(file, &mut |doc| {
            bar.inc(doc.text.len() as u64);
            piece_bytes += doc.text.len();
            piece.push(doc);
            if piece_bytes >= PIECE_BYTES {
                piece_bytes = 0;
                flush(&mut piece, &mut m)?;
            }
            Ok(())
        })?;
    }
    if !piece.is_empty() {
        flush(&mut piece, &mut m)?;
    }
    bar.finish_and_clear();
    if m.train_tokens == 0 {
        return Err(TrainError::Data(format!("{}: no text to train on", data.display())));
    }
    let json = serde_json::to_string_pretty(&m).expect("manifest serializes");
    crate::checkpoint::write_atomic(&manifest_path, json.as_bytes())?;
    Ok(m)
}

fn encode_doc(tok: &Tokenizer, doc: &Doc) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    if doc.starts {
        ids.extend(tok.bos_id());
    }
    ids.extend(tok.encode_with(&doc.text, false, false)?);
    Ok(ids)
}

fn shard_len(path: &Path) -> Result<u64> {
    let len = std::fs::metadata(path).map_err(io_err(path))?.len();
    let mut header = [0u8; HEADER];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header)).map_err(io_err(path))?;
    let width = u64::from(u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")));
    Ok((len.saturating_sub(HEADER as u64)) / width.max(1))
}

/// The tokens of every shard of one split (`"train"` or `"val"`), concatenated.
pub fn load_split(dir: &Path, split: &str, m: &Manifest, vocab_size: usize) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for i in 0..m.pieces {
        let (train, val) = piece_paths(dir, i);
        out.extend(read_shard(if split == "train" { &train } else { &val }, vocab_size)?);
    }
    Ok(out)
}

/// Random windows of a token stream: each batch is `batch` sequences of `len + 1` tokens at
/// offsets drawn from the loader's [`Rng`], whose state is the loader's whole position.
pub struct Batches {
    tokens: Vec<u32>,
    /// The position: saving and restoring it replays the same batches.
    pub rng: Rng,
}

impl Batches {
    /// A loader over `tokens`, which must hold more than `len` tokens (checked by the caller).
    pub fn new(tokens: Vec<u32>, seed: u64) -> Batches {
        Batches { tokens, rng: Rng::new(seed) }
    }

    /// Tokens in the stream.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the stream is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The next random batch: inputs and targets, each `batch × len`, row-major.
    pub fn next_batch(&mut self, batch: usize, len: usize) -> (Vec<u32>, Vec<u32>) {
        let span = (self.tokens.len() - len) as u64;
        let offsets: Vec<usize> = (0..batch).map(|_| self.rng.below(span) as usize).collect();
        self.windows(&offsets, len)
    }

    /// `count` batches spread evenly over the stream: the same every call (validation).
    pub fn fixed_batches(&self, count: usize, batch: usize, len: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
        let span = self.tokens.len() - len;
        let n = count * batch;
        let offsets: Vec<usize> = (0..n).map(|k| k * span / n.max(1)).collect();
        offsets.chunks(batch).map(|o| self.windows(o, len)).collect()
    }

    fn windows(&self, offsets: &[usize], len: usize) -> (Vec<u32>, Vec<u32>) {
        let mut x = Vec::with_capacity(offsets.len() * len);
        let mut y = Vec::with_capacity(offsets.len() * len);
        for &o in offsets {
            x.extend_from_slice(&self.tokens[o..o + len]);
            y.extend_from_slice(&self.tokens[o + 1..o + len + 1]);
        }
        (x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_round_trip_both_widths_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (vocab, tokens) in [(300, vec![0u32, 299, 7]), (70_000, vec![69_999, 1, 65_536])] {
            let p = dir.path().join(format!("s{vocab}.bin"));
            write_shard(&p, &tokens, vocab).unwrap();
            assert_eq!(read_shard(&p, vocab).unwrap(), tokens);
            assert_eq!(shard_len(&p).unwrap(), 3);
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
            let e = read_shard(&p, vocab).unwrap_err().to_string();
            assert!(e.contains("corrupted"), "{e}");
        }
        let p = dir.path().join("small.bin");
        write_shard(&p, &[5, 6], 300).unwrap();
        assert!(read_shard(&p, 6).unwrap_err().to_string().contains("outside"));
    }

    #[test]
    fn batches_shift_targets_by_one_and_replay_from_rng_state() {
        let mut b = Batches::new((0..100).collect(), 3);
        let saved = b.rng;
        let (x, y) = b.next_batch(4, 8);
        assert_eq!(x.len(), 32);
        assert!(x.iter().zip(&y).all(|(a, b)| b == &(a + 1)));
        b.rng = saved;
        assert_eq!(b.next_batch(4, 8).0, x);
        let v = b.fixed_batches(2, 3, 8);
        assert_eq!(v, b.fixed_batches(2, 3, 8));
        assert_eq!(v.len(), 2);
    }
}
