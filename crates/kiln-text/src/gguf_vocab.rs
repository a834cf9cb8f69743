//! A tokenizer from GGUF metadata (`tokenizer.ggml.*`), built to tokenize as llama.cpp does.
//!
//! Two models are supported:
//! - `"gpt2"`: byte-level BPE from `tokens` + `merges`, with the pre-tokenizer regexes llama.cpp
//!   picks by `tokenizer.ggml.pre` (see [`crate::pretokenize`]).
//! - `"llama"`: SentencePiece. llama.cpp (`llm_tokenizer_spm`) starts from single characters and
//!   repeatedly joins the adjacent pair whose joined text is a vocabulary piece with the highest
//!   score. In `tokenizers` terms that is a BPE whose merges are every split of every piece into
//!   two pieces, ranked by the joined piece's score (the conversion Hugging Face uses for
//!   SentencePiece models), with byte fallback to `<0xNN>` tokens.
//!
//! Token types, defaults and the end-of-generation set follow `llama_vocab::impl::load`.

use crate::pretokenize::{bpe_pre, BpePre};
use crate::TextError;
use kiln_gguf::{GgufFile, Value};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

/// FxHash (rustc's hasher): vocabulary maps hash hundreds of thousands of short strings, where
/// SipHash's DoS resistance buys nothing and costs a third of the build time.
#[derive(Clone, Copy, Default)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub(crate) type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// SentencePiece's visible space, U+2581.
pub(crate) const SPM_SPACE: &str = "\u{2581}";

/// `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_gguf(v: i64) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Written in text, the token is parsed as itself (llama.cpp's special-token cache).
    pub(crate) fn is_parsed_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::UserDefined | TokenType::Unknown)
    }

    /// Dropped by `decode(…, skip_special = true)`.
    pub(crate) fn is_skippable(self) -> bool {
        matches!(self, TokenType::Control | TokenType::Unknown)
    }
}

/// Which tokenizer model the GGUF holds.
#[derive(Clone, Debug)]
pub(crate) enum VocabModel {
    /// SentencePiece (`"llama"`).
    Spm,
    /// Byte-level BPE (`"gpt2"`).
    Bpe { pre: BpePre, merges: Vec<(String, String)> },
}

/// Everything the GGUF says about its tokenizer, checked.
#[derive(Clone, Debug)]
pub(crate) struct GgufVocab {
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    pub scores: Vec<f32>,
    pub model: VocabModel,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// End-of-generation ids, sorted.
    pub eog: Vec<u32>,
    pub chat_template: Option<String>,
}

/// Texts llama.cpp treats as end of generation wherever they are in the vocabulary.
/// (Recent llama.cpp also lists `"</s>"` for PaddleOCR; Gemma 3 uses `</s>` as an ordinary HTML
/// tag token, so kiln leaves it out: `</s>` still ends generation where it is the EOS token.)
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
];
/// Fill-in-the-middle pad / repo / file-separator tokens, which llama.cpp also counts as EOG.
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

fn meta_err(msg: impl Into<String>) -> TextError {
    TextError::Metadata(msg.into())
}

/// Typed access to `tokenizer.*` keys.
struct Meta<'a>(&'a GgufFile);

impl Meta<'_> {
    fn str(&self, key: &str) -> Result<Option<&str>, TextError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| meta_err(format!("{key} is not a string"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, TextError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| meta_err(format!("{key} is not a bool"))),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&[Value]>, TextError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v.as_array().map(Some).ok_or_else(|| meta_err(format!("{key} is not an array"))),
        }
    }

    /// A token id key. An id outside the vocabulary is ignored, as llama.cpp does; so is a
    /// negative one (some converters write -1 for "none").
    fn token_id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>, TextError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => {
                let id = v.as_i64().ok_or_else(|| meta_err(format!("{key} is not an integer")))?;
                Ok(u32::try_from(id).ok().filter(|&id| (id as usize) < n_tokens))
            }
        }
    }
}

impl GgufVocab {
    /// Reads and checks the tokenizer metadata of a GGUF file.
    pub(crate) fn read(file: &GgufFile) -> Result<GgufVocab, TextError> {
        let meta = Meta(file);
        let model_name = meta
            .str("tokenizer.ggml.model")?
            .ok_or_else(|| meta_err("tokenizer.ggml.model is missing (the file has no tokenizer)"))?;

        let raw_tokens =
            meta.array("tokenizer.ggml.tokens")?.ok_or_else(|| meta_err("tokenizer.ggml.tokens is missing"))?;
        let n = raw_tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(meta_err(format!("tokenizer.ggml.tokens has {n} entries")));
        }
        let mut tokens = Vec::with_capacity(n);
        let mut seen: FxMap<&str, u32> = FxMap::default();
        seen.reserve(n);
        for (i, v) in raw_tokens.iter().enumerate() {
            let s = v.as_str().ok_or_else(|| meta_err(format!("tokenizer.ggml.tokens[{i}] is not a string")))?;
            // llama.cpp renames empty tokens; a repeated text would make two ids share one
            // string, which the vocabulary map cannot hold, so it is renamed the same way.
            let text = if s.is_empty() {
                format!("[EMPTY_{i}]")
            } else if seen.contains_key(s) {
                format!("[DUPLICATE_{i}]")
            } else {
                seen.insert(s, i as u32);
                s.to_string()
            };
            tokens.push(text);
        }
        drop(seen);

        let scores = match meta.array("tokenizer.ggml.scores")? {
            None => vec![0.0; n],
            Some(a) if a.len() < n => {
                return Err(meta_err(format!("tokenizer.ggml.scores has {} entries for {n} tokens", a.len())))
            }
            Some(a) => a
                .iter()
                .take(n)
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64()
                        .map(|f| f as f32)
                        .ok_or_else(|| meta_err(format!("tokenizer.ggml.scores[{i}] is not a number")))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut types: Vec<TokenType> = match meta.array("tokenizer.ggml.token_type")? {
            None => vec![TokenType::Normal; n],
            Some(a) if a.len() < n => {
                return Err(meta_err(format!("tokenizer.ggml.token_type has {} entries for {n} tokens", a.len())))
            }
            Some(a) => a
                .iter()
                .take(n)
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64()
                        .map(TokenType::from_gguf)
                        .ok_or_else(|| meta_err(format!("tokenizer.ggml.token_type[{i}] is not an integer")))
                })
                .collect::<Result<_, _>>()?,
        };

        // Model, llama.cpp's defaults for it, and for BPE the merges and pre-tokenizer.
        let (model, mut bos, mut eos, mut unk, mut add_bos, mut add_space_prefix) = match model_name {
            "llama" => (VocabModel::Spm, Some(1), Some(2), Some(0), true, true),
            "gpt2" => {
                let pre = bpe_pre(meta.str("tokenizer.ggml.pre")?.unwrap_or("default"))?;
                let raw = meta
                    .array("tokenizer.ggml.merges")?
                    .ok_or_else(|| meta_err("tokenizer.ggml.merges is missing (required for gpt2 BPE)"))?;
                let mut merges = Vec::with_capacity(raw.len());
                for (i, v) in raw.iter().enumerate() {
                    let s =
                        v.as_str().ok_or_else(|| meta_err(format!("tokenizer.ggml.merges[{i}] is not a string")))?;
                    // llama.cpp splits at the first space after the first byte.
                    match s.bytes().skip(1).position(|b| b == b' ') {
                        Some(p) => merges.push((s[..p + 1].to_string(), s[p + 2..].to_string())),
                        None => return Err(meta_err(format!("tokenizer.ggml.merges[{i}] = {s:?} is not \"a b\""))),
                    }
                }
                let add_bos = pre.add_bos_default;
                // GPT-2's own defaults (token 11 for both) are what llama.cpp assumes too.
                (VocabModel::Bpe { pre, merges }, Some(11), Some(11), None, add_bos, false)
            }
            other => return Err(TextError::UnsupportedModel(other.to_string())),
        };
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        bos = in_range(bos);
        eos = in_range(eos);
        unk = in_range(unk);
        if let Some(v) = meta.bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        if let Some(id) = meta.token_id("tokenizer.ggml.bos_token_id", n)? {
            bos = Some(id);
        }
        if let Some(id) = meta.token_id("tokenizer.ggml.eos_token_id", n)? {
            eos = Some(id);
        }
        if let Some(id) = meta.token_id("tokenizer.ggml.unknown_token_id", n)? {
            unk = Some(id);
        }
        if let Some(v) = meta.bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        let add_eos = meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(meta_err("add_bos_token is set but there is no BOS token"));
        }
        if add_eos && eos.is_none() {
            return Err(meta_err("add_eos_token is set but there is no EOS token"));
        }

        let eog = end_of_generation(&meta, &tokens, &mut types, eos)?;
        let chat_template = meta.str("tokenizer.chat_template")?.map(str::to_string);

        Ok(GgufVocab {
            tokens,
            types,
            scores,
            model,
            bos,
            eos,
            unk,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
            chat_template,
        })
    }

    /// The equivalent `tokenizers::Tokenizer` (for `encode` on text without special tokens,
    /// `decode`, and saving as tokenizer.json).
    pub(crate) fn build(&self) -> Result<tokenizers::Tokenizer, TextError> {
        let vocab: Vocab = self.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut tok = match &self.model {
            VocabModel::Spm => {
                let merges = spm_merges(&self.tokens, &self.scores);
                let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
                if let Some(unk) = self.unk {
                    builder = builder.unk_token(self.tokens[unk as usize].clone());
                }
                let mut tok = tokenizers::Tokenizer::new(builder.build()?);
                let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
                if self.add_space_prefix {
                    normalizers.push(Prepend::new(SPM_SPACE.to_string()).into());
                }
                normalizers.push(Replace::new(" ", SPM_SPACE)?.into());
                tok.with_normalizer(Some(NormalizerSequence::new(normalizers)));
                let mut decoders: Vec<DecoderWrapper> =
                    vec![Replace::new(SPM_SPACE, " ")?.into(), ByteFallback::new().into(), Fuse::new().into()];
                if self.add_space_prefix {
                    decoders.push(Strip::new(' ', 1, 0).into());
                }
                tok.with_decoder(Some(DecoderSequence::new(decoders)));
                tok
            }
            VocabModel::Bpe { pre, merges } => {
                // A merge whose parts or result are not tokens can never produce a token id;
                // `tokenizers` refuses them, so they are left out.
                let merges: Vec<(String, String)> = merges
                    .iter()
                    .filter(|(a, b)| {
                        vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}"))
                    })
                    .cloned()
                    .collect();
                let bpe = BPE::builder().vocab_and_merges(vocab, merges).ignore_merges(pre.ignore_merges).build()?;
                let mut tok = tokenizers::Tokenizer::new(bpe);
                let mut pres: Vec<PreTokenizerWrapper> = Vec::new();
                for r in &pre.regexes {
                    pres.push(
                        Split::new(SplitPattern::Regex(r.to_string()), SplitDelimiterBehavior::Isolated, false)?.into(),
                    );
                }
                pres.push(ByteLevel::new(false, true, false).into());
                tok.with_pre_tokenizer(Some(PreSequence::new(pres)));
                tok.with_decoder(Some(ByteLevel::default()));
                tok
            }
        };

        if self.add_bos || self.add_eos {
            let mut single = Vec::new();
            let mut pair = Vec::new();
            let mut specials = Vec::new();
            let bos = self.bos.filter(|_| self.add_bos).map(|id| (self.tokens[id as usize].clone(), id));
            let eos = self.eos.filter(|_| self.add_eos).map(|id| (self.tokens[id as usize].clone(), id));
            for seq in ["$A", "$B:1"] {
                let target = if seq == "$A" { &mut single } else { &mut pair };
                if let Some((text, _)) = &bos {
                    target.push(text.clone());
                }
                target.push(seq.to_string());
                if let Some((text, _)) = &eos {
                    target.push(text.clone());
                }
            }
            let pair: Vec<String> = single.iter().cloned().chain(pair).collect();
            specials.extend(bos);
            specials.extend(eos);
            let processor = TemplateProcessing::builder()
                .try_single(single)
                .map_err(TextError::Tokenizers)?
                .try_pair(pair)
                .map_err(TextError::Tokenizers)?
                .special_tokens(specials)
                .build()
                .map_err(|e| TextError::Tokenizers(e.to_string()))?;
            tok.with_post_processor(Some(processor));
        }

        let added: Vec<AddedToken> = self
            .tokens
            .iter()
            .zip(&self.types)
            .filter(|(_, ty)| ty.is_parsed_special())
            .map(|(text, ty)| AddedToken::from(text.clone(), ty.is_skippable()).normalized(false))
            .collect();
        tok.add_tokens(&added);
        Ok(tok)
    }

    /// (text, id, always) of every token that is parsed as itself when written in text;
    /// `always`: also when special-token parsing is off (user-defined tokens).
    pub(crate) fn parsed_specials(&self) -> impl Iterator<Item = (String, u32, bool)> + '_ {
        self.tokens
            .iter()
            .zip(&self.types)
            .enumerate()
            .filter(|(_, (_, ty))| ty.is_parsed_special())
            .map(|(id, (text, ty))| (text.clone(), id as u32, *ty == TokenType::UserDefined))
    }
}

/// llama.cpp's end-of-generation set. Tokens found by text are retyped as control tokens, as
/// llama.cpp does, so that they are parsed in text and skipped in `decode(…, true)`.
fn end_of_generation(
    meta: &Meta<'_>,
    tokens: &[String],
    types: &mut [TokenType],
    eos: Option<u32>,
) -> Result<Vec<u32>, TextError> {
    let n = tokens.len();
    // Only texts starting like the ones looked up below need indexing.
    let mut by_text: HashMap<&str, u32> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        if t.starts_with(['<', '[', '_']) {
            by_text.entry(t.as_str()).or_insert(i as u32);
        }
    }
    let lookup = |texts: &[&str]| -> Option<u32> { texts.iter().filter_map(|t| by_text.get(t).copied()).min() };

    let mut eog: Vec<u32> = Vec::new();
    let retype = |id: u32, eog: &mut Vec<u32>, types: &mut [TokenType]| {
        eog.push(id);
        if types[id as usize] != TokenType::Control {
            types[id as usize] = TokenType::Control;
        }
    };
    for (key, texts) in [
        ("tokenizer.ggml.fim_pad_token_id", FIM_PAD_TEXTS),
        ("tokenizer.ggml.fim_rep_token_id", FIM_REP_TEXTS),
        ("tokenizer.ggml.fim_sep_token_id", FIM_SEP_TEXTS),
    ] {
        if let Some(id) = meta.token_id(key, n)? {
            eog.push(id);
        } else if let Some(id) = lookup(texts) {
            retype(id, &mut eog, types);
        }
    }
    for text in EOG_TEXTS {
        if let Some(&id) = by_text.get(text) {
            retype(id, &mut eog, types);
        }
    }
    // gpt-oss: these must stay visible in output.
    for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = by_text.get(text) {
            types[id as usize] = TokenType::UserDefined;
        }
    }
    eog.extend(eos);
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        eog.extend(meta.token_id(key, n)?);
    }
    eog.sort_unstable();
    eog.dedup();

    // o200k_harmony / solar-open: `<|end|>` ends a message, not the generation.
    let has = |t: &str| by_text.get(t).is_some_and(|id| eog.contains(id));
    if let Some(&end) = by_text.get("<|end|>") {
        if has("<|end|>") && ((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>"))) {
            eog.retain(|&id| id != end);
            types[end as usize] = TokenType::UserDefined;
        }
    }
    Ok(eog)
}

/// SentencePiece scores as BPE merges: every split of a piece into two pieces, ranked by the
/// piece's score (higher first); within a piece, by the ids of its halves (Hugging Face's
/// `SentencePieceExtractor` order).
pub(crate) fn spm_merges(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let index: FxMap<&str, u32> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
    // (score, merged id, left id, right id)
    let mut found: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if piece.len() < 2 {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            let Some(&l) = index.get(left) else { continue };
            let Some(&r) = index.get(right) else { continue };
            found.push((scores[id], id as u32, l, r));
        }
    }
    found.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    found.into_iter().map(|(_, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spm_merges_rank_by_merged_score() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"].iter().map(|s| s.to_string()).collect();
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let merges = spm_merges(&tokens, &scores);
        let pairs: Vec<(&str, &str)> = merges.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(pairs, vec![("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]);
    }
}
