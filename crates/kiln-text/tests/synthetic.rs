//! Tokenizers built from small hand-made GGUF metadata and tokenizer.json files, so the rules
//! are tested without any model file: SentencePiece merging by score, the space prefix, byte
//! fallback, special and user-defined tokens, byte-level BPE, Hugging Face directories.

use kiln_gguf::{GgufFile, GgufWriter, Value};
use kiln_text::{ChatMessage, ChatTemplate, TextError, TokenStream, Tokenizer};

fn strings(list: &[&str]) -> Value {
    Value::Array(list.iter().map(|s| Value::String(s.to_string())).collect())
}

fn gguf(entries: Vec<(&str, Value)>) -> GgufFile {
    let mut w = GgufWriter::new();
    for (k, v) in entries {
        w.set(k, v);
    }
    let mut bytes = Vec::new();
    w.write(&mut bytes).unwrap();
    GgufFile::from_vec(bytes).unwrap()
}

/// A Llama-2-style SentencePiece vocabulary (space prefix on), ids:
/// 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..=258 `<0x00>`..`<0xFF>`, then the pieces below, then a
/// user-defined `<|x|>`.
fn spm_tokenizer(add_space_prefix: bool) -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    let mut scores: Vec<f32> = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    // (piece, score): higher scores merge first.
    let pieces = [
        ("▁", -1.0),       // 259
        ("h", -2.0),       // 260
        ("e", -3.0),       // 261
        ("l", -4.0),       // 262
        ("o", -5.0),       // 263
        ("ll", -6.0),      // 264
        ("he", -7.0),      // 265
        ("▁h", -8.0),      // 266
        ("llo", -9.0),     // 267
        ("hello", -10.0),  // 268
        ("▁hello", -11.0), // 269
    ];
    for (p, s) in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(s);
    }
    tokens.push("<|x|>".into()); // 270
    types.push(4);
    scores.push(0.0);
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let file = gguf(vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.scores", Value::Array(scores.into_iter().map(Value::F32).collect())),
        ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(add_space_prefix)),
    ]);
    Tokenizer::from_gguf(&file).unwrap()
}

#[test]
fn spm_merges_by_score_with_space_prefix() {
    let tok = spm_tokenizer(true);
    // "▁hello": ll, he, llo, hello, ▁hello (the ▁h merge goes stale when h joins he).
    assert_eq!(tok.encode("hello", true).unwrap(), vec![1, 269]);
    assert_eq!(tok.encode("hello", false).unwrap(), vec![269]);
    // The space prefix is added again after a special token (llama.cpp), a trailing space is "▁".
    assert_eq!(tok.encode("hello <|x|>hello", false).unwrap(), vec![269, 259, 270, 269]);
    // Control tokens in text are parsed; with parse_special off they are text (bytes here).
    assert_eq!(tok.encode("<s>hello", false).unwrap(), vec![1, 269]);
    let literal = tok.encode_with("<s>", false, false).unwrap();
    assert!(literal.len() > 1 && !literal.contains(&1), "{literal:?}");
    // ...but the user-defined token still is one.
    assert_eq!(tok.encode_with("<|x|>", false, false).unwrap(), vec![270]);
    // Decoding strips the prefix space and skips control tokens on request.
    assert_eq!(tok.decode(&[1, 269], true).unwrap(), "hello");
    assert_eq!(tok.decode(&[1, 269], false).unwrap(), "<s> hello");
    assert!(tok.is_special(1) && tok.is_special(0) && !tok.is_special(270) && !tok.is_special(269));
    assert_eq!(tok.end_of_generation_ids(), vec![2]);
}

#[test]
fn spm_byte_fallback_and_streaming() {
    let tok = spm_tokenizer(true);
    // é is not a piece: its UTF-8 bytes C3 A9 become <0xC3><0xA9>.
    let ids = tok.encode("hé", false).unwrap();
    assert_eq!(ids, vec![266, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "hé");
    let mut stream = TokenStream::new(&tok, false);
    assert_eq!(stream.push(266).unwrap(), "h");
    assert_eq!(stream.push(3 + 0xC3).unwrap(), "", "half a character is held back");
    assert_eq!(stream.push(3 + 0xA9).unwrap(), "é");
    assert_eq!(stream.finish(), "");
    // An unfinished character is flushed by finish() as U+FFFD.
    let mut stream = TokenStream::new(&tok, false);
    assert_eq!(stream.push(3 + 0xC3).unwrap(), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
    assert!(matches!(stream.push(9999), Err(TextError::UnknownId { id: 9999, .. })));
    assert!(matches!(tok.decode(&[9999], false), Err(TextError::UnknownId { .. })));
}

#[test]
fn spm_without_space_prefix() {
    let tok = spm_tokenizer(false);
    // Gemma style: no "▁" is prepended.
    assert_eq!(tok.encode("hello", false).unwrap(), vec![268]);
    assert_eq!(tok.encode("a hello", false).unwrap(), vec![3 + b'a' as u32, 269]);
    assert_eq!(tok.decode(&[3 + b'a' as u32, 269], false).unwrap(), "a hello");
}

fn bpe_tokenizer(pre: &str, add_bos: Option<bool>) -> Tokenizer {
    // Byte-level pieces: "Ġ" is the space byte.
    let tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "i", "Ġ", "hi", "Ġhi", "1", "2", "!", "Ċ"];
    let mut entries = vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array([3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1].into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges", strings(&["h i", "Ġ hi"])),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.chat_template", Value::String("{{ bos_token }}|{{ eos_token }}".into())),
    ];
    if let Some(b) = add_bos {
        entries.push(("tokenizer.ggml.add_bos_token", Value::Bool(b)));
    }
    Tokenizer::from_gguf(&gguf(entries)).unwrap()
}

#[test]
fn byte_level_bpe() {
    let tok = bpe_tokenizer("smollm", Some(false));
    assert_eq!(tok.encode("hi hi!", true).unwrap(), vec![6, 7, 10]);
    // smollm: digits one by one.
    assert_eq!(tok.encode("12", false).unwrap(), vec![8, 9]);
    assert_eq!(tok.encode("<|im_start|>hi\n<|im_end|>", false).unwrap(), vec![1, 6, 11, 2]);
    assert_eq!(tok.decode(&[1, 6, 11, 2], false).unwrap(), "<|im_start|>hi\n<|im_end|>");
    assert_eq!(tok.decode(&[1, 6, 11, 2], true).unwrap(), "hi\n");
    let mut eog = tok.end_of_generation_ids();
    eog.sort();
    assert_eq!(eog, vec![0, 2]);
    // The model's template gets the BOS/EOS texts.
    let t = ChatTemplate::for_model(&tok, "llama").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "<|im_start|>|<|im_end|>");
}

#[test]
fn bpe_bos_defaults_follow_llama_cpp() {
    // gpt2-style pre-tokenizers add no BOS unless the file says so; llama3 adds one by default.
    assert_eq!(bpe_tokenizer("gpt2", None).encode("hi", true).unwrap(), vec![6]);
    assert_eq!(bpe_tokenizer("llama3", None).encode("hi", true).unwrap(), vec![1, 6]);
    assert_eq!(bpe_tokenizer("llama3", Some(false)).encode("hi", true).unwrap(), vec![6]);
    let err = Tokenizer::from_gguf(&gguf(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("no-such-pre".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
        ("tokenizer.ggml.merges", strings(&[])),
    ]))
    .unwrap_err();
    assert!(matches!(err, TextError::UnsupportedPreTokenizer(_)), "{err}");
}

#[test]
fn malformed_metadata_is_an_error_not_a_panic() {
    let cases: Vec<Vec<(&str, Value)>> = vec![
        vec![],
        vec![("tokenizer.ggml.model", Value::String("llama".into()))],
        vec![("tokenizer.ggml.model", Value::String("bert".into())), ("tokenizer.ggml.tokens", strings(&["a"]))],
        vec![("tokenizer.ggml.model", Value::String("llama".into())), ("tokenizer.ggml.tokens", Value::U32(3))],
        vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b"])),
            ("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0)])),
        ],
        vec![("tokenizer.ggml.model", Value::String("gpt2".into())), ("tokenizer.ggml.tokens", strings(&["a"]))],
    ];
    for entries in cases {
        let desc = format!("{entries:?}");
        assert!(Tokenizer::from_gguf(&gguf(entries)).is_err(), "{desc}");
    }
}

/// A tiny Hugging Face directory: tokenizer.json + tokenizer_config.json.
#[test]
fn hf_directory() {
    let json = r#"{
      "version": "1.0",
      "truncation": null,
      "padding": null,
      "added_tokens": [
        {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 7, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": null,
      "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "vocab": {"<s>": 0, "</s>": 1, "h": 2, "i": 3, "hi": 4, "Ġ": 5, "Ġhi": 6, "<|im_end|>": 7},
                "merges": ["h i", "Ġ hi"]}
    }"#;
    let config = r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true,
                     "chat_template": "{% for m in messages %}{{ m.content.strip() }};{% endfor %}"}"#;
    let dir = std::env::temp_dir().join(format!("kiln-text-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();

    // tokenizer.json alone: BOS/EOS guessed, nothing added.
    let bare = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert_eq!((bare.bos_id(), bare.eos_id()), (Some(0), Some(1)));
    assert_eq!(bare.encode("hi hi", true).unwrap(), vec![4, 6]);
    assert!(bare.chat_template().is_none());

    std::fs::write(dir.join("tokenizer_config.json"), config).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(tok.encode("hi hi", true).unwrap(), vec![0, 4, 6]);
    assert_eq!(tok.encode("hi<|im_end|>", false).unwrap(), vec![4, 7]);
    assert!(!tok.encode_with("<|im_end|>", false, false).unwrap().contains(&7));
    assert_eq!(tok.decode(&[0, 4, 6, 7], true).unwrap(), "hi hi");
    assert!(tok.is_special(7) && !tok.is_special(4));
    assert_eq!(tok.end_of_generation_ids(), vec![1, 7]);
    assert_eq!(tok.vocab_size(), 8);
    let t = ChatTemplate::for_model(&tok, "qwen2").unwrap();
    assert_eq!(
        t.render(&[ChatMessage::new("user", "  a "), ChatMessage::new("assistant", "b")], false).unwrap(),
        "a;b;"
    );

    let missing = Tokenizer::from_dir(&std::env::temp_dir().join("kiln-text-no-such-dir"));
    assert!(matches!(missing, Err(TextError::Io { .. })));
}
