//! Byte-level BPE training (Sennrich et al. 2016; GPT-2's byte-level variant) with the
//! `tokenizers` crate's trainer. Text is first split with the GPT-4 / Llama 3 pre-tokenization
//! regex (letters, 1–3 digit numbers, punctuation runs, whitespace), so merges never cross word
//! classes. Chat special tokens come first in the vocabulary: `<|bos|>` (begins every
//! document), `<|im_start|>` and `<|im_end|>` (ChatML turns, the template kiln-text falls back
//! to; `<|im_end|>` is the end-of-turn and end-of-generation token).
//!
//! The output directory is a Hugging Face tokenizer: tokenizer.json, tokenizer_config.json (BOS,
//! EOS, `add_bos_token`, the ChatML `chat_template`) and tokenizer_report.json (compression on
//! held-out text).
//!
//! The corpus (which files, which chunks are held out) is the caller's: kiln-train reads it as
//! it reads pretraining text.

use crate::{TextError, CHATML};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, TokenizerImpl};

/// The GPT-4-style split regex (Llama 3's, as llama.cpp's `smaug-bpe` pre-tokenizer type).
pub const SPLIT_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Begins every document.
pub const BOS: &str = "<|bos|>";
/// Opens a chat turn.
pub const IM_START: &str = "<|im_start|>";
/// Ends a chat turn; the end-of-generation token.
pub const IM_END: &str = "<|im_end|>";
/// The special tokens, ids 0, 1, 2.
pub const SPECIALS: &[&str] = &[BOS, IM_START, IM_END];
/// The template of a pretrained (base) model: the messages' text as it is. A base model continues
/// documents and has no chat format until fine-tuning gives it one, so `kiln run RUN "ROMEO:"`
/// continues "ROMEO:" rather than a ChatML turn it has never seen.
pub const BASE_TEMPLATE: &str = "{% for message in messages %}{{ message['content'] }}{% endfor %}";

/// Compression measured after training, saved as tokenizer_report.json.
#[derive(Clone, Debug, Serialize)]
pub struct TokenizerReport {
    /// Final vocabulary size (specials included).
    pub vocab_size: usize,
    /// Bytes of text the merges were learned from.
    pub train_bytes: u64,
    /// What compression was measured on: `"held-out"` (every 10th 64 KiB chunk of the input,
    /// never trained on) or `"training text"` when the corpus is a single chunk.
    pub measured_on: &'static str,
    /// Bytes of measured text.
    pub heldout_bytes: u64,
    /// Tokens the held-out text encodes to.
    pub heldout_tokens: u64,
    /// `heldout_bytes / heldout_tokens`: higher compresses better.
    pub bytes_per_token: f64,
    /// Training time.
    pub seconds: f64,
}

type Bpe = TokenizerImpl<
    BPE,
    tokenizers::NormalizerWrapper,
    PreTokenizerWrapper,
    tokenizers::PostProcessorWrapper,
    tokenizers::DecoderWrapper,
>;

/// The smallest vocabulary: every byte and the special tokens.
pub const MIN_VOCAB: usize = 256 + SPECIALS.len();

fn training_error(e: impl std::fmt::Display) -> TextError {
    TextError::Training(e.to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TextError + '_ {
    move |source| TextError::Io { path: path.to_path_buf(), source }
}

/// Trains a tokenizer of `vocab_size` tokens on the chunks `train`, measures its compression on
/// `heldout` (on the training text when that is empty) and writes it to `out`.
pub fn train_bpe(
    train: &[String],
    mut heldout: Vec<String>,
    vocab_size: usize,
    out: &Path,
) -> Result<TokenizerReport, TextError> {
    if vocab_size < MIN_VOCAB {
        return Err(training_error(format!(
            "a vocabulary of {vocab_size} is too small: it needs at least {MIN_VOCAB} (256 bytes + special tokens)"
        )));
    }
    if vocab_size > u32::MAX as usize {
        return Err(training_error(format!("a vocabulary of {vocab_size} is too large")));
    }
    let start = Instant::now();
    let mut tok = new_tokenizer()?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(SPECIALS.iter().map(|s| AddedToken::from(s.to_string(), true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tok.train(&mut trainer, train.iter()).map_err(training_error)?;
    let tok: tokenizers::Tokenizer = tok.into();
    let measured_on = if heldout.is_empty() {
        heldout = train.to_vec();
        "training text"
    } else {
        "held-out"
    };
    let heldout_bytes: u64 = heldout.iter().map(|t| t.len() as u64).sum();
    let heldout_tokens: u64 = heldout
        .iter()
        .map(|t| tok.encode(t.as_str(), false).map(|e| e.len() as u64))
        .sum::<Result<u64, _>>()
        .map_err(training_error)?;
    let report = TokenizerReport {
        vocab_size: tok.get_vocab_size(true),
        train_bytes: train.iter().map(|t| t.len() as u64).sum(),
        measured_on,
        heldout_bytes,
        heldout_tokens,
        bytes_per_token: if heldout_tokens > 0 { heldout_bytes as f64 / heldout_tokens as f64 } else { 0.0 },
        seconds: start.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let json = tok.to_string(true).map_err(training_error)?;
    write_atomic(&out.join("tokenizer.json"), json.as_bytes())?;
    write_tokenizer_config(out)?;
    let report_json = serde_json::to_string_pretty(&report).expect("report serializes");
    write_atomic(&out.join("tokenizer_report.json"), report_json.as_bytes())?;
    Ok(report)
}

/// Writes `bytes` through a temporary file beside `path`, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TextError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io(path))
}

/// An untrained byte-level BPE with the split regex, byte-level mapping and decoder.
fn new_tokenizer() -> Result<Bpe, TextError> {
    let split = Split::new(SplitPattern::Regex(SPLIT_REGEX.into()), SplitDelimiterBehavior::Isolated, false)
        .map_err(training_error)?;
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ]);
    let mut tok = TokenizerImpl::new(BPE::default());
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)));
    tok.with_decoder(Some(tokenizers::DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
    Ok(tok)
}

/// Writes tokenizer_config.json: BOS added to every prompt, `<|im_end|>` as EOS, ChatML.
fn write_tokenizer_config(dir: &Path) -> Result<(), TextError> {
    let cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": IM_END,
        "pad_token": IM_END,
        "add_bos_token": true,
        "add_eos_token": false,
        "chat_template": CHATML,
    });
    let text = serde_json::to_string_pretty(&cfg).expect("config serializes");
    write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatMessage, ChatTemplate, Tokenizer};

    #[test]
    fn trains_round_trips_and_keeps_specials_whole() {
        let dir = tempfile::tempdir().unwrap();
        let text = "ROMEO: But soft, what light through yonder window breaks?\n\
                    JULIET: O Romeo, Romeo, wherefore art thou Romeo? 1234567\n"
            .repeat(40);
        let out = dir.path().join("tok");
        let report = train_bpe(&[text], Vec::new(), 400, &out).unwrap();
        assert!(report.vocab_size <= 400 && report.vocab_size > 259, "{report:?}");
        let tok = Tokenizer::from_dir(&out).unwrap();
        assert_eq!(tok.token_to_id(BOS), Some(0));
        assert_eq!(tok.token_to_id(IM_START), Some(1));
        assert_eq!(tok.token_to_id(IM_END), Some(2));
        assert_eq!(tok.bos_id(), Some(0));
        assert_eq!(tok.eos_id(), Some(2));
        // Round trip, including bytes never seen in training (byte fallback via byte-level BPE).
        let sample = "Wherefore art thou, Ünïcødé 😀 Romeo?\n\tnumbers 98765";
        let ids = tok.encode(sample, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), sample);
        // Specials are single tokens, and the chat template uses them.
        let chat = ChatTemplate::for_model(&tok, "llama").unwrap();
        let rendered = chat.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
        let ids = tok.encode(&rendered, false).unwrap();
        assert_eq!(ids[0], 1);
        assert!(ids.contains(&2));
        // Training text compresses: repeated words became tokens.
        assert!(report.bytes_per_token > 2.0, "{report:?}");
        assert_eq!(report.measured_on, "training text");
    }

    #[test]
    fn too_small_vocab_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = train_bpe(&["some text".into()], Vec::new(), 100, &dir.path().join("t")).unwrap_err();
        assert!(e.to_string().contains("at least 259"), "{e}");
    }
}
