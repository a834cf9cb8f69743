//! [`Tokenizer`]: text to token ids and back, for a GGUF file or a Hugging Face directory.

use crate::gguf_vocab::{GgufVocab, EOG_TEXTS};
use crate::hf_config::HfConfig;
use crate::special::{Piece, SpecialSplitter};
use crate::TextError;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use tokenizers::{
    Model, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
};

/// Guesses for a bare tokenizer.json, which does not say which tokens begin and end a text.
const BOS_GUESSES: &[&str] = &["<|begin_of_text|>", "<bos>", "<s>", "<|startoftext|>"];
const EOS_GUESSES: &[&str] = &["<|end_of_text|>", "<eos>", "</s>", "<|endoftext|>"];

/// A tokenizer: text to token ids and back.
///
/// Built from a GGUF file's metadata it tokenizes exactly as llama.cpp does (special tokens
/// written in the text are parsed with llama.cpp's rules, BOS/EOS follow the file's flags).
/// Built from tokenizer.json it is the Hugging Face tokenizer, with BOS/EOS and the chat template
/// from tokenizer_config.json.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Per id: a control (or unknown) token, dropped by `decode(…, true)`.
    special: Vec<bool>,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    chat_template: Option<String>,
    /// GGUF tokenizers split out special tokens themselves, in llama.cpp's order; tokenizer.json
    /// ones leave it to the `tokenizers` crate's added vocabulary.
    splitter: Option<SpecialSplitter>,
    /// tokenizer.json ones: a copy that reads special tokens as plain text, made on first use
    /// of `encode_with(…, parse_special = false)`.
    literal_specials: OnceLock<tokenizers::Tokenizer>,
}

impl Tokenizer {
    /// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &kiln_gguf::GgufFile) -> Result<Tokenizer, TextError> {
        let vocab = GgufVocab::read(file)?;
        let inner = vocab.build()?;
        let special = vocab.types.iter().map(|t| t.is_skippable()).collect();
        let splitter = SpecialSplitter::new(vocab.parsed_specials());
        Ok(Tokenizer {
            inner,
            vocab_size: vocab.tokens.len(),
            bos: vocab.bos,
            eos: vocab.eos,
            add_bos: vocab.add_bos,
            add_eos: vocab.add_eos,
            special,
            eog: vocab.eog,
            chat_template: vocab.chat_template,
            splitter: Some(splitter),
            literal_specials: OnceLock::new(),
        })
    }

    /// A Hugging Face tokenizer directory: tokenizer.json, and when present tokenizer_config.json
    /// (BOS/EOS tokens, `add_bos_token`, `add_eos_token`, `chat_template`), chat_template.jinja
    /// and generation_config.json (extra end-of-generation ids).
    pub fn from_dir(dir: &Path) -> Result<Tokenizer, TextError> {
        let inner = load_tokenizer_json(&dir.join("tokenizer.json"))?;
        let config = HfConfig::read(dir)?;
        Ok(Tokenizer::from_hf(inner, config))
    }

    /// A bare tokenizer.json. BOS/EOS are guessed from common token names; nothing is added
    /// around the text beyond what the file's post-processor adds.
    pub fn from_file(tokenizer_json: &Path) -> Result<Tokenizer, TextError> {
        let inner = load_tokenizer_json(tokenizer_json)?;
        Ok(Tokenizer::from_hf(inner, HfConfig::default()))
    }

    fn from_hf(inner: tokenizers::Tokenizer, config: HfConfig) -> Tokenizer {
        let vocab = inner.get_vocab(true);
        let vocab_size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        let id_of = |text: &str| vocab.get(text).copied();
        let guess = |texts: &[&str]| texts.iter().find_map(|t| id_of(t));
        let (bos, eos) = if config.present {
            (config.bos_token.as_deref().and_then(id_of), config.eos_token.as_deref().and_then(id_of))
        } else {
            (guess(BOS_GUESSES), guess(EOS_GUESSES))
        };
        let mut special = vec![false; vocab_size];
        for (id, token) in inner.get_added_tokens_decoder() {
            if token.special && (id as usize) < vocab_size {
                special[id as usize] = true;
            }
        }
        let mut eog: Vec<u32> = eos.into_iter().chain(config.generation_eos_ids.iter().copied()).collect();
        eog.extend(EOG_TEXTS.iter().filter_map(|t| id_of(t)));
        eog.retain(|&id| (id as usize) < vocab_size);
        eog.sort_unstable();
        eog.dedup();
        Tokenizer {
            inner,
            vocab_size,
            bos,
            eos,
            add_bos: config.add_bos_token.unwrap_or(false) && bos.is_some(),
            add_eos: config.add_eos_token.unwrap_or(false) && eos.is_some(),
            special,
            eog,
            chat_template: config.chat_template,
            splitter: None,
            literal_specials: OnceLock::new(),
        }
    }

    /// Text to token ids. `add_special`: prepend BOS (and append EOS) where the model's
    /// configuration says so. Special tokens written in `text` (e.g. `"<|im_start|>"`) are always
    /// parsed as those tokens (llama.cpp's `parse_special = true`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TextError> {
        self.encode_with(text, add_special, true)
    }

    /// [`Tokenizer::encode`] with llama.cpp's `parse_special` switch: when false, control tokens
    /// written in `text` are tokenized as ordinary text (user-defined tokens, such as Gemma's
    /// `"\n"` or `"<table>"`, are still recognized, as in llama.cpp).
    pub fn encode_with(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, TextError> {
        let Some(splitter) = &self.splitter else {
            let inner = if parse_special {
                &self.inner
            } else {
                self.literal_specials.get_or_init(|| {
                    let mut t = self.inner.clone();
                    t.set_encode_special_tokens(true);
                    t
                })
            };
            let mut ids = inner.encode_fast(text, add_special)?.get_ids().to_vec();
            // Without a post-processor, tokenizer_config.json's flags decide.
            if add_special && self.inner.get_post_processor().is_none() {
                if let Some(bos) = self.bos.filter(|_| self.add_bos) {
                    ids.insert(0, bos);
                }
                if let Some(eos) = self.eos.filter(|_| self.add_eos) {
                    ids.push(eos);
                }
            }
            return Ok(ids);
        };
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        for piece in splitter.split(text, parse_special) {
            match piece {
                Piece::Special(id) => ids.push(id),
                Piece::Text(t) => self.encode_plain(t, &mut ids)?,
            }
        }
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Normalizer, pre-tokenizer and model on text known to hold no special token, bypassing the
    /// `tokenizers` added vocabulary (the special tokens were split out already).
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) -> Result<(), TextError> {
        if text.is_empty() {
            return Ok(());
        }
        let mut normalized = NormalizedString::from(text);
        if let Some(n) = self.inner.get_normalizer() {
            n.normalize(&mut normalized)?;
        }
        let mut pretokenized = PreTokenizedString::from(normalized);
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pretokenized)?;
        }
        let model = self.inner.get_model();
        pretokenized.tokenize(|n| model.tokenize(n.get()))?;
        for (_, _, tokens) in pretokenized.get_splits(OffsetReferential::Original, OffsetType::None) {
            ids.extend(tokens.iter().flatten().map(|t| t.id));
        }
        Ok(())
    }

    /// Encodes [`crate::Segment`]s of a rendered conversation: ids, and for each id whether
    /// training learns it. The first segment is encoded as a prompt (BOS as
    /// [`Tokenizer::encode_prompt`] adds it), the rest without BOS; special tokens written in
    /// the text (`<|im_end|>`) are parsed, as in templates.
    pub fn encode_segments(&self, segments: &[crate::Segment]) -> Result<(Vec<u32>, Vec<bool>), TextError> {
        let (mut ids, mut train) = (Vec::new(), Vec::new());
        for (i, seg) in segments.iter().enumerate() {
            let part = if i == 0 { self.encode_prompt(&seg.text)? } else { self.encode_with(&seg.text, false, true)? };
            train.extend(std::iter::repeat_n(seg.train, part.len()));
            ids.extend(part);
        }
        Ok((ids, train))
    }

    /// Encodes a rendered chat prompt: like `encode(text, true)`, except that no second BOS is
    /// added when the text already begins with the BOS token (chat templates such as Gemma's and
    /// Llama 3's write `bos_token` themselves).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let ids = self.encode(text, true)?;
        match (self.bos, ids.as_slice()) {
            (Some(bos), [a, b, ..]) if self.add_bos && *a == bos && *b == bos => {
                let bos_text = self.id_to_piece(bos).unwrap_or_default();
                if !bos_text.is_empty() && text.starts_with(&bos_text) {
                    return Ok(ids[1..].to_vec());
                }
                Ok(ids)
            }
            _ => Ok(ids),
        }
    }

    /// Token ids to text. `skip_special`: leave out control tokens (BOS, EOS, `<|im_start|>`…).
    /// Invalid UTF-8 (a multi-byte character cut by the end of `ids`) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TextError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TextError::UnknownId { id, vocab_size: self.vocab_size });
        }
        Ok(self.inner.decode(ids, skip_special)?)
    }

    /// Number of token ids (one more than the largest id).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(…, true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// The id of a vocabulary piece, in its stored form (`"Ġworld"` for byte-level BPE,
    /// `"▁world"` for SentencePiece, `"<|im_end|>"`).
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// The vocabulary piece of an id, in its stored form (see [`Tokenizer::token_to_id`]);
    /// [`Tokenizer::decode`] gives the text it stands for.
    pub fn id_to_piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is a control token (BOS, EOS, turn markers): one that `decode(…, true)` drops.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The model's own chat template (Jinja source), if it ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Tokens that end generation: EOS and the end-of-turn tokens present in the vocabulary
    /// (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `<|endoftext|>`, …), as llama.cpp's EOG set.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        self.eog.clone()
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The tokenizer as tokenizer.json text, so that a GGUF's tokenizer can be saved in the
    /// Hugging Face layout.
    pub fn to_json(&self) -> Result<String, TextError> {
        Ok(self.inner.to_string(true)?)
    }

    /// tokenizer_config.json for this tokenizer: its special tokens, whether it adds BOS, and
    /// its chat template.
    pub fn hf_tokenizer_config(&self) -> serde_json::Value {
        let piece = |id: Option<u32>| id.and_then(|i| self.id_to_piece(i));
        serde_json::json!({
            "bos_token": piece(self.bos_id()),
            "eos_token": piece(self.eos_id()),
            "add_bos_token": self.adds_bos(),
            "add_eos_token": false,
            "chat_template": self.chat_template(),
        })
    }

    /// Writes tokenizer.json and tokenizer_config.json into `dir` (made if missing): a GGUF's
    /// tokenizer in the Hugging Face layout, which [`Tokenizer::from_dir`] reads back.
    pub fn save_hf_files(&self, dir: &Path) -> Result<(), TextError> {
        let io = |path: std::path::PathBuf| move |source| TextError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, self.to_json()?).map_err(io(path.clone()))?;
        let path = dir.join("tokenizer_config.json");
        let config = serde_json::to_string_pretty(&self.hf_tokenizer_config()).expect("json serializes");
        std::fs::write(&path, config).map_err(io(path.clone()))
    }
}

/// A summary: the derived form would print every added token (Gemma 3 has 6,400).
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &if self.splitter.is_some() { "gguf" } else { "tokenizer.json" })
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("end_of_generation", &self.eog)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn load_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer, TextError> {
    let text = std::fs::read_to_string(path).map_err(|source| TextError::Io { path: path.to_path_buf(), source })?;
    tokenizers::Tokenizer::from_str(&text).map_err(|e| TextError::Tokenizers(format!("{}: {e}", path.display())))
}
