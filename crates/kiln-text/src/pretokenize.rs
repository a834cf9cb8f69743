//! Byte-level BPE pre-tokenizers, keyed by GGUF's `tokenizer.ggml.pre`.
//!
//! llama.cpp (`src/llama-vocab.cpp`, `llm_tokenizer_bpe`) splits text with a list of regexes
//! applied one after another: each regex cuts every piece left by the previous one into its
//! matches and the gaps between them. That is a `tokenizers` `Sequence` of `Split(regex,
//! Isolated)`, followed by the byte-to-unicode mapping of `ByteLevel` (without its own regex).

use crate::TextError;

/// GPT-2's split: contractions, letters, numbers, other symbols, whitespace.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// The GPT-4 (cl100k) split used by Llama 3, as llama.cpp spells it (ASCII case-insensitive
/// contractions instead of `(?i:...)`).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The o200k split (GPT-4o, Llama 4).
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken split (the original from its tokenizer.json; llama.cpp rewrites it for
/// `std::regex`, which lacks `\p{Lu}` and friends).
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// (Characters whose Unicode normalization would change them are written as `\x{..}` escapes.)
const DEEPSEEK_LLM_LETTERS: &str = r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";

/// How a byte-level BPE model splits text before merging, and the flags llama.cpp ties to it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BpePre {
    /// Regexes applied in order (each an `Isolated` split).
    pub regexes: Vec<&'static str>,
    /// A pre-token that is itself in the vocabulary is emitted whole (Llama 3, Tekken).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the GGUF does not say.
    pub add_bos_default: bool,
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value (an absent key means `"default"`).
pub(crate) fn bpe_pre(name: &str) -> Result<BpePre, TextError> {
    let plain = |regexes: Vec<&'static str>| BpePre { regexes, ignore_merges: false, add_bos_default: false };
    Ok(match name {
        "default" | "" => plain(vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => {
            BpePre { regexes: vec![LLAMA3], ignore_merges: true, add_bos_default: true }
        }
        "dbrx" | "smaug-bpe" => plain(vec![LLAMA3]),
        "gpt-4o" | "llama4" => plain(vec![GPT4O]),
        "qwen2" | "stablelm2" | "megrez" => plain(vec![QWEN2]),
        "tekken" => BpePre { regexes: vec![TEKKEN], ignore_merges: true, add_bos_default: true },
        "gpt2" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v1-en" | "jina-v2-es"
        | "jina-v2-de" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" => plain(vec![GPT2]),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            plain(vec![r"\p{N}", GPT2])
        }
        "deepseek-llm" => plain(vec![
            "[\r\n]",
            DEEPSEEK_LLM_LETTERS,
            r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
            r"\s+$",
            r"[一-龥ࠀ-一가-퟿]+",
            r"\p{N}+",
        ]),
        "deepseek-coder" => {
            plain(vec!["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"])
        }
        "deepseek-v3" => plain(vec![
            r"\p{N}{1,3}",
            r"[一-龥぀-ゟ゠-ヿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ]),
        "falcon" => plain(vec![
            r"[\p{P}\$\+<=>\^~\|`]+",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
            "[0-9][0-9][0-9]",
        ]),
        "poro-chat" | "bloom" | "gpt3-finnish" => plain(vec![r" ?[^(\s|.,!?…。，、।۔،)]+"]),
        "viking" => plain(vec![r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"]),
        other => return Err(TextError::UnsupportedPreTokenizer(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table entry must compile under the regex engine `tokenizers` uses.
    #[test]
    fn every_known_pre_tokenizer_compiles() {
        for name in [
            "default",
            "llama3",
            "dbrx",
            "gpt-4o",
            "qwen2",
            "tekken",
            "gpt2",
            "smollm",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "bloom",
            "viking",
        ] {
            let pre = bpe_pre(name).unwrap();
            for r in pre.regexes {
                tokenizers::pre_tokenizers::split::Split::new(
                    tokenizers::pre_tokenizers::split::SplitPattern::Regex(r.to_string()),
                    tokenizers::SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: {r}: {e}"));
            }
        }
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error() {
        assert!(matches!(bpe_pre("no-such-thing"), Err(TextError::UnsupportedPreTokenizer(_))));
    }
}
