//! The tokenizers of the two test models (SmolLM2: byte-level BPE; Gemma 3: SentencePiece),
//! built from their GGUF metadata: known ids, round trips, streaming, chat templates.

mod common;

use common::{TokenizerOf, GEMMA3, SMOLLM2};
use kiln_text::{ChatMessage, ChatTemplate, TokenStream, Tokenizer};

/// Texts that exercise spaces, digits, punctuation, newlines, non-Latin scripts, emoji and
/// characters rare enough to need byte tokens.
const TEXTS: &[&str] = &[
    "Hello world",
    " Hello  world ",
    "The year 2024 had 366 days; 3.14159 is π.",
    "line one\nline two\n\n\tindented\r\nwindows",
    "    four leading spaces, trailing   ",
    "Ünïcödé: naïve café, Straße, 日本語のテキスト, 한국어, русский, العربية, हिन्दी",
    "emoji: 😀🎉👍🏽 👨‍👩‍👧 🇫🇷",
    "rare: 𒀀𒀁 𓀀 ꙮ \u{10FFFD}",
    "code: fn main() { println!(\"{}\", x[0] + 1); } // done",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "",
    " ",
    "\n",
    "a",
];

fn stream_all(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> (String, Vec<String>) {
    let mut stream = TokenStream::new(tok, skip_special);
    let mut chunks = Vec::new();
    for &id in ids {
        chunks.push(stream.push(id).expect("valid id"));
    }
    chunks.push(stream.finish());
    (chunks.concat(), chunks)
}

fn check_round_trips(tok: &Tokenizer) {
    for text in TEXTS {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(&tok.decode(&ids, false).unwrap(), text, "round trip of {text:?} via {ids:?}");
        let (streamed, chunks) = stream_all(tok, &ids, false);
        assert_eq!(&streamed, text, "stream of {text:?}: {chunks:?}");
        assert!(
            chunks.iter().all(|c| !c.contains(char::REPLACEMENT_CHARACTER)),
            "stream emitted a partial character for {text:?}: {chunks:?}"
        );
        // With BOS and skipping specials, the text still comes back.
        let ids = tok.encode(text, true).unwrap();
        let (streamed, _) = stream_all(tok, &ids, true);
        assert_eq!(streamed, tok.decode(&ids, true).unwrap());
    }
}

// ---------------------------------------------------------------- SmolLM2 (gpt2 BPE, "smollm")

#[test]
fn smollm2_known_ids() {
    let Some(tok) = SMOLLM2.tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.encode("Hello world", false).unwrap(), vec![19556, 905]);
    // No BOS for this model (add_bos_token = false), even with add_special.
    assert_eq!(tok.encode("Hello world", true).unwrap(), vec![19556, 905]);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(!tok.adds_bos());
    // "smollm" splits digits one by one.
    let ids = tok.encode("2024", false).unwrap();
    assert_eq!(ids.len(), 4, "{ids:?}");
    // Special tokens written in text are parsed.
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>\n", false).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert!(ids.contains(&2));
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi\n");
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.id_to_piece(905).as_deref(), Some("Ġworld"));
    assert!(tok.is_special(1) && tok.is_special(2) && !tok.is_special(905));
}

#[test]
fn smollm2_end_of_generation() {
    let Some(tok) = SMOLLM2.tokenizer() else { return };
    let eog = tok.end_of_generation_ids();
    for piece in ["<|endoftext|>", "<|im_end|>"] {
        let id = tok.token_to_id(piece).unwrap();
        assert!(eog.contains(&id), "{piece} ({id}) missing from {eog:?}");
    }
    assert!(!eog.contains(&tok.token_to_id("<|im_start|>").unwrap()));
}

#[test]
fn smollm2_round_trips_and_streams() {
    let Some(tok) = SMOLLM2.tokenizer() else { return };
    check_round_trips(tok);
}

/// The emoji is split over several byte-level tokens: nothing is emitted until it completes.
#[test]
fn smollm2_stream_holds_back_split_characters() {
    let Some(tok) = SMOLLM2.tokenizer() else { return };
    let ids = tok.encode("a🦀b", false).unwrap();
    assert!(ids.len() >= 4, "expected the crab to take several tokens: {ids:?}");
    let (text, chunks) = stream_all(tok, &ids, false);
    assert_eq!(text, "a🦀b");
    assert!(chunks.contains(&"🦀".to_string()) || chunks.iter().any(|c| c.contains('🦀')), "{chunks:?}");
    assert!(chunks.iter().all(|c| !c.contains(char::REPLACEMENT_CHARACTER)), "{chunks:?}");
}

#[test]
fn smollm2_chat_template() {
    let Some(tok) = SMOLLM2.tokenizer() else { return };
    assert!(tok.chat_template().is_some());
    let template = ChatTemplate::for_model(tok, "llama").unwrap();
    let out = template.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // With its own system message the default one is not added.
    let out =
        template.render(&[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")], false).unwrap();
    assert_eq!(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

/// tokenizer.json written from the GGUF loads back and tokenizes the same.
#[test]
fn smollm2_to_json_round_trip() {
    let Some(tok) = SMOLLM2.tokenizer() else { return };
    let json = tok.to_json().unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-text-smollm2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let back = Tokenizer::from_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(back.vocab_size(), tok.vocab_size());
    for text in TEXTS {
        assert_eq!(back.encode(text, false).unwrap(), tok.encode(text, false).unwrap(), "{text:?}");
    }
}

// ---------------------------------------------------------------- Gemma 3 (SentencePiece)

#[test]
fn gemma3_known_ids() {
    let Some(tok) = GEMMA3.tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 262144);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.eos_id(), Some(1));
    assert!(tok.adds_bos());
    // llama.cpp's ids (tests/fixtures/reference/tokenize-gemma3.json).
    let ids = tok.encode("Hello world", true).unwrap();
    assert_eq!(ids, vec![2, 9259, 1902]);
    // add_space_prefix is false: "Hello" has no leading "▁".
    assert_eq!(tok.id_to_piece(ids[1]).as_deref(), Some("Hello"));
    assert_eq!(tok.id_to_piece(ids[2]).as_deref(), Some("▁world"));
    // Turn markers and the user-defined "\n" token are parsed from text.
    let ids = tok.encode("<start_of_turn>user\nHi<end_of_turn>\n", false).unwrap();
    let sot = tok.token_to_id("<start_of_turn>").unwrap();
    let eot = tok.token_to_id("<end_of_turn>").unwrap();
    let nl = tok.token_to_id("\n").unwrap();
    assert_eq!(ids[0], sot);
    assert_eq!(ids[1], tok.token_to_id("user").unwrap());
    assert_eq!(ids[2], nl);
    assert_eq!(&ids[ids.len() - 2..], &[eot, nl]);
    // A double BOS is not added to a prompt that starts with one.
    assert_eq!(tok.encode_prompt("<bos>Hi").unwrap(), tok.encode("Hi", true).unwrap());
}

#[test]
fn gemma3_end_of_generation() {
    let Some(tok) = GEMMA3.tokenizer() else { return };
    let eog = tok.end_of_generation_ids();
    assert!(eog.contains(&1), "<eos> in {eog:?}");
    assert!(eog.contains(&tok.token_to_id("<end_of_turn>").unwrap()), "{eog:?}");
    assert!(!eog.contains(&tok.token_to_id("<start_of_turn>").unwrap()));
}

#[test]
fn gemma3_round_trips_and_streams() {
    let Some(tok) = GEMMA3.tokenizer() else { return };
    check_round_trips(tok);
}

/// A character outside the vocabulary falls back to byte tokens, which the stream holds back.
#[test]
fn gemma3_byte_fallback_stream() {
    let Some(tok) = GEMMA3.tokenizer() else { return };
    let text = "x\u{10FFFD}y";
    let ids = tok.encode(text, false).unwrap();
    let pieces: Vec<String> = ids.iter().map(|&id| tok.id_to_piece(id).unwrap()).collect();
    assert!(pieces.iter().filter(|p| p.starts_with("<0x")).count() == 4, "expected 4 byte tokens: {pieces:?}");
    let (streamed, chunks) = stream_all(tok, &ids, false);
    assert_eq!(streamed, text);
    assert!(chunks.iter().all(|c| !c.contains(char::REPLACEMENT_CHARACTER)), "{chunks:?}");
}

#[test]
fn gemma3_builtin_chat_template() {
    let Some(tok) = GEMMA3.tokenizer() else { return };
    assert!(tok.chat_template().is_none(), "this GGUF ships no template");
    let template = ChatTemplate::for_model(tok, "gemma3").unwrap();
    let messages = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
    let out = template.render(&messages, true).unwrap();
    assert_eq!(out, "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
    let ids = tok.encode_prompt(&out).unwrap();
    assert_eq!(ids[0], 2);
    assert_eq!(ids[1], tok.token_to_id("<start_of_turn>").unwrap());
}

/// Building the 262,144-token vocabulary (merges derived from scores) must stay fast.
#[test]
fn gemma3_builds_quickly() {
    let Some(path) = GEMMA3.path() else { return };
    let file = kiln_gguf::GgufFile::open(&path).unwrap();
    let start = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let took = start.elapsed();
    eprintln!("Gemma 3 tokenizer built in {took:.2?}");
    assert_eq!(tok.vocab_size(), 262144);
    // Generous: the target is well under 2 s in release; tests may share the machine.
    assert!(took.as_secs_f64() < 10.0, "took {took:.2?}");
}

/// tokenizer.json written from the Gemma GGUF loads back and tokenizes the same.
#[test]
fn gemma3_to_json_round_trip() {
    let Some(tok) = GEMMA3.tokenizer() else { return };
    let start = std::time::Instant::now();
    let json = tok.to_json().unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-text-gemma3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, &json).unwrap();
    let back = Tokenizer::from_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("Gemma 3 tokenizer.json: {} bytes, written and read back in {:.2?}", json.len(), start.elapsed());
    assert_eq!(back.vocab_size(), tok.vocab_size());
    for text in TEXTS {
        assert_eq!(back.encode(text, false).unwrap(), tok.encode(text, false).unwrap(), "{text:?}");
        assert_eq!(back.encode(text, true).unwrap(), tok.encode(text, true).unwrap(), "{text:?}");
    }
}

/// SFT masks: the SmolLM2 (ChatML) and Gemma 3 templates cut so that exactly the assistant
/// replies and their end-of-turn markers are trained, and the pieces tokenize to the same
/// prompt ids inference uses.
#[test]
fn training_segments_mask_exactly_the_assistant_turns() {
    for test_model in [&kiln_test_models::SMOLLM2, &kiln_test_models::GEMMA3] {
        let Some(path) = test_model.path() else { continue };
        let file = kiln_gguf::GgufFile::open(&path).unwrap();
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let arch = file.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let template = ChatTemplate::for_model(&tok, &arch).unwrap();
        let messages = vec![
            ChatMessage::new("user", "What is 2+2?"),
            ChatMessage::new("assistant", "4."),
            ChatMessage::new("user", "And 3+3?"),
            ChatMessage::new("assistant", "6."),
        ];
        let segments = template.render_for_training(&messages).unwrap();
        let joined: String = segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(joined, template.render(&messages, false).unwrap());
        let trained: Vec<&str> = segments.iter().filter(|s| s.train).map(|s| s.text.trim_end()).collect();
        assert_eq!(trained.len(), 2, "{segments:?}");
        assert!(trained[0].starts_with("4.") && trained[1].starts_with("6."), "{trained:?}");
        // Each reply ends with the template's end-of-turn marker, which stops generation.
        let (ids, train) = tok.encode_segments(&segments).unwrap();
        let eog = tok.end_of_generation_ids();
        let ends: Vec<u32> =
            ids.iter().zip(&train).filter(|(_, &t)| t).map(|(&id, _)| id).filter(|id| eog.contains(id)).collect();
        assert_eq!(ends.len(), 2, "each trained turn holds one end-of-turn token");
        // The untrained prefix before the first reply is exactly the inference prompt.
        let prompt = tok.encode_prompt(&template.render(&messages[..1], true).unwrap()).unwrap();
        let first_trained = train.iter().position(|&t| t).unwrap();
        assert_eq!(&ids[..first_trained], prompt.as_slice());
    }
}
