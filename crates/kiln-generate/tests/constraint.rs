//! Constrained decoding on the default model's vocabulary: sampled output always follows the
//! schema, a lazy grammar starts at its trigger and leaves text free around it, and a schema
//! the engine cannot follow is an error, never unconstrained output.

use kiln_generate::{Decoder, GenerateOptions, Grammar, GrammarCompiler, SamplingParams, Session};
use kiln_model::Model;
use kiln_text::Tokenizer;
use serde_json::{json, Value};

fn load() -> Option<(Model, Tokenizer)> {
    let path = kiln_test_models::SMOLLM2.path()?;
    let file = kiln_gguf::GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    Some((Model::from_gguf(file).unwrap(), tokenizer))
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    })
}

fn check_person(v: &Value) {
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 3, "{v}");
    assert!(o["name"].as_str().is_some_and(|s| s.chars().count() <= 20), "{v}");
    assert!(o["age"].as_i64().is_some_and(|a| (0..=150).contains(&a)), "{v}");
    let tags = o["tags"].as_array().expect("tags");
    assert!(tags.len() <= 3 && tags.iter().all(|t| t.as_str().is_some_and(|s| s.chars().count() <= 10)), "{v}");
}

#[test]
fn sampled_output_always_follows_the_schema() {
    let Some((model, tok)) = load() else { return };
    let compiler = GrammarCompiler::new(&tok, model.config.vocab_size).unwrap();
    let constraint = compiler.compile(&Grammar::JsonSchema(person_schema()), None).unwrap();
    let prompt = tok.encode_prompt("<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n").unwrap();
    let mut session = Session::new(&model, 512);
    // Hot sampling, so the model would wander far from JSON if it were free to.
    for seed in 0..6 {
        let opts = GenerateOptions {
            max_tokens: 200,
            sampling: SamplingParams { temperature: 1.5, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..Default::default() },
            constraint: Some(constraint.clone()),
            ..Default::default()
        };
        let g = session.generate(&tok, &prompt, &opts, |_| true).unwrap();
        let v: Value = serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {}", g.text));
        check_person(&v);
    }
}

/// Logits that make `want` the most likely token, and `second` the next.
fn scripted(vocab: usize, want: u32, second: Option<u32>) -> Vec<f32> {
    let mut l = vec![0.0; vocab];
    l[want as usize] = 10.0;
    if let Some(s) = second {
        l[s as usize] = 9.0;
    }
    l
}

#[test]
fn a_lazy_grammar_starts_at_its_trigger_and_text_is_free_around_it() {
    let Some((model, tok)) = load() else { return };
    let vocab = model.config.vocab_size;
    let compiler = GrammarCompiler::new(&tok, vocab).unwrap();
    let lark = format!(
        "start: \"<tool_call>\" %json {} \"</tool_call>\"",
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false,
               "x-guidance": {"whitespace_flexible": false}})
    );
    let constraint = compiler.compile(&Grammar::Lark(lark), Some("<tool_call>")).unwrap();
    let opts = GenerateOptions {
        max_tokens: 64,
        sampling: SamplingParams::greedy(),
        constraint: Some(constraint),
        ..Default::default()
    };
    let prompt = tok.encode("hi", false).unwrap();
    let mut dec = Decoder::new(&tok, &prompt, &opts).unwrap();
    // The model "wants" to write free text, the opener, then nonsense where the JSON goes,
    // then free text again.
    let free = tok.encode("Let me check. <tool_call>", false).unwrap();
    let nonsense = tok.encode(" banana", false).unwrap()[0];
    let mut text = String::new();
    for &t in &free {
        let e = dec.next(&scripted(vocab, t, None)).unwrap().expect("a token");
        text.push_str(e.text);
    }
    assert!(dec.constrained_now(), "the trigger starts the grammar: {text:?}");
    let mut steps = 0;
    while dec.constrained_now() {
        let e = dec.next(&scripted(vocab, nonsense, None)).unwrap().expect("a token");
        text.push_str(e.text);
        steps += 1;
        assert!(steps < 40, "the grammar should finish: {text:?}");
    }
    let after = tok.encode(" Done", false).unwrap();
    for &t in &after {
        let e = dec.next(&scripted(vocab, t, None)).unwrap().expect("a token");
        text.push_str(e.text);
    }
    if let Some(e) = dec.finish() {
        text.push_str(e.text);
    }
    let inner = text
        .strip_prefix("Let me check. <tool_call>")
        .and_then(|r| r.split_once("</tool_call>"))
        .unwrap_or_else(|| panic!("{text:?}"));
    let v: Value = serde_json::from_str(inner.0).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    // JSON Schema counts any number with no fractional part as an integer.
    assert!(v["n"].as_f64().is_some_and(|n| n.fract() == 0.0), "{v}");
    assert_eq!(inner.1, " Done", "{text:?}");
}

#[test]
fn a_token_running_past_the_trigger_into_nonsense_is_replaced() {
    let Some((model, tok)) = load() else { return };
    let vocab = model.config.vocab_size;
    let compiler = GrammarCompiler::new(&tok, vocab).unwrap();
    let constraint = compiler.compile(&Grammar::Lark("start: \"ab\" /[0-9]+/ \";\"".into()), Some("ab")).unwrap();
    let opts = GenerateOptions {
        max_tokens: 16,
        sampling: SamplingParams::greedy(),
        constraint: Some(constraint),
        ..Default::default()
    };
    let prompt = tok.encode("hi", false).unwrap();
    let mut dec = Decoder::new(&tok, &prompt, &opts).unwrap();
    // The token "abc" completes the trigger "ab" and carries a "c" the grammar refuses.
    let bad = tok.encode("x abc", false).unwrap();
    let pieces: Vec<String> = bad.iter().map(|&t| tok.decode(&[t], false).unwrap()).collect();
    assert_eq!(pieces, ["x", " abc"], "the test needs a token that runs past the trigger");
    let mut text = String::new();
    for &t in &bad {
        text.push_str(dec.next(&scripted(vocab, t, None)).unwrap().expect("a token").text);
    }
    let seven = tok.encode("7", false).unwrap()[0];
    let semi = tok.encode(";", false).unwrap()[0];
    for i in 0..6 {
        let want = if i < 2 { seven } else { semi };
        let Some(e) = dec.next(&scripted(vocab, want, None)).unwrap() else { break };
        text.push_str(e.text);
        if !dec.constrained_now() {
            break;
        }
    }
    assert_eq!(text, "x ab77;");
}

#[test]
fn a_schema_the_engine_cannot_follow_is_an_error() {
    let Some((model, tok)) = load() else { return };
    let compiler = GrammarCompiler::new(&tok, model.config.vocab_size).unwrap();
    for bad in [
        json!({"type": "nonsense"}),
        json!({"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}),
        json!([1, 2]),
    ] {
        let e = compiler.compile(&Grammar::JsonSchema(bad.clone()), None).expect_err(&bad.to_string());
        assert!(e.to_string().starts_with("cannot enforce this grammar: "), "{e}");
    }
    assert!(compiler.compile(&Grammar::Lark("start: (".into()), None).is_err());
}
