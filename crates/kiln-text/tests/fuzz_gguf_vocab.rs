//! Fuzzing the GGUF tokenizer builder: the real SmolLM2 (byte-level BPE) and Gemma 3
//! (SentencePiece) tokenizer metadata, mutated at random, must give `Ok` or `Err` from
//! `Tokenizer::from_gguf`, never a panic; a tokenizer that builds must encode, decode and stream
//! any text and any id without panicking, and its chat template must compile and render or fail
//! cleanly.
//!
//! Seeds: each model's tokenizer keys in a GGUF file with no tensors, the vocabulary cut to its
//! first tokens (and the merges to those among them) so that a build takes about a millisecond;
//! one input in [`FULL_VOCAB_EVERY`] uses the whole SmolLM2 vocabulary. Synthetic vocabularies
//! stand in when the models are absent.
//!
//! Mutations, one to three stacked, mostly on values (then written back with kiln_gguf's
//! writer): tokens emptied, duplicated, renamed to special or byte-token texts or to the names
//! the builder itself gives renamed tokens; arrays cut short or of the wrong type; scores made
//! NaN or infinite; token types out of range; merges without a space or with unknown parts;
//! special-token ids negative, out of range or of the wrong type; the model and pre-tokenizer
//! names swapped; flags retyped; the chat template garbled; keys removed. Also raw byte flips and
//! truncation of the file (mostly rejected by the reader, which kiln-model's fuzz covers).
//!
//! `KILN_FUZZ_ITERS`, `KILN_FUZZ_SEED` and `KILN_FUZZ_KEEP_GOING=1` work as in
//! kiln-model/tests/fuzz_readers.rs.

use kiln_gguf::{GgufFile, GgufWriter, Value};
use kiln_test_models::{TestModel, GEMMA3, SMOLLM2};
use kiln_text::{ChatMessage, ChatTemplate, TokenStream, Tokenizer};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// Inputs when `KILN_FUZZ_ITERS` is unset: about 4 s in release on 2 cores.
const DEFAULT_ITERS: usize = 2000;
/// One input in this many starts from the whole SmolLM2 vocabulary (49152 tokens, 48900
/// merges: a build takes ~0.1 s).
const FULL_VOCAB_EVERY: usize = 100;
/// Tokens kept in the cut-down seeds.
const SEED_TOKENS: usize = 600;
/// An input slower than this is a finding (a cut-down build takes milliseconds).
const SLOW_INPUT: Duration = Duration::from_secs(5);
/// Base seed when `KILN_FUZZ_SEED` is unset.
const DEFAULT_SEED: u64 = 0x6b69_6c6e_f022;

fn env_number(key: &str) -> Option<u64> {
    let v = std::env::var(key).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{key}={v:?} is not a number")))
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn for_input(seed: u64, i: u64) -> Rng {
        let mut r = Rng(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ---- seeds ---------------------------------------------------------------------------------

/// Metadata entries of a seed, in file order.
type Meta = Vec<(String, Value)>;

fn get<'a>(meta: &'a Meta, key: &str) -> Option<&'a Value> {
    meta.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The tokenizer keys (and architecture) of `model`, the vocabulary cut to `keep` tokens.
fn real_meta(model: &TestModel, keep: Option<usize>) -> Option<Meta> {
    let file = GgufFile::open(model.path()?).ok()?;
    let mut meta: Meta = Vec::new();
    let tokens: Vec<String> = match file.get("tokenizer.ggml.tokens")?.as_array() {
        Some(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        None => return None,
    };
    let keep = keep.unwrap_or(tokens.len()).min(tokens.len());
    let kept: std::collections::HashSet<&str> = tokens[..keep].iter().map(String::as_str).collect();
    for (k, v) in &file.metadata {
        if !(k.starts_with("tokenizer.") || k == "general.architecture") {
            continue;
        }
        let v = match (k.as_str(), v) {
            ("tokenizer.ggml.merges", Value::Array(a)) => Value::Array(
                a.iter()
                    .filter(|m| {
                        let Some((l, r)) = m.as_str().and_then(|s| s.split_once(' ')) else {
                            return false;
                        };
                        kept.contains(l) && kept.contains(r) && kept.contains(format!("{l}{r}").as_str())
                    })
                    .cloned()
                    .collect(),
            ),
            (_, Value::Array(a)) => Value::Array(a.iter().take(keep).cloned().collect()),
            _ => v.clone(),
        };
        meta.push((k.clone(), v));
    }
    Some(meta)
}

/// A synthetic vocabulary of `model` ("gpt2" or "llama") for machines without the models.
fn synthetic_meta(model: &str) -> Meta {
    let spm = model == "llama";
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
    if spm {
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    }
    let letters = "abcdefghijklmnopqrstuvwxyz";
    let space = if spm { "\u{2581}" } else { "\u{0120}" };
    for c in letters.chars() {
        tokens.push(c.to_string());
        tokens.push(format!("{space}{c}"));
    }
    tokens.push(space.to_string());
    let mut merges = Vec::new();
    for pair in ["th", "he", "in", "er", "an"] {
        let (a, b) = pair.split_at(1);
        merges.push(Value::String(format!("{a} {b}")));
        tokens.push(pair.to_string());
    }
    let n = tokens.len();
    let mut meta: Meta = vec![
        ("general.architecture".into(), Value::String(if spm { "gemma3" } else { "llama" }.into())),
        ("tokenizer.ggml.model".into(), Value::String(model.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens.into_iter().map(Value::String).collect())),
        ("tokenizer.ggml.scores".into(), Value::Array((0..n).map(|i| Value::F32(-(i as f32))).collect())),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(
                (0..n)
                    .map(|i| {
                        Value::I32(if i < 5 {
                            3
                        } else if spm && i < 261 {
                            6
                        } else {
                            1
                        })
                    })
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        (
            "tokenizer.chat_template".into(),
            Value::String(
                "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into(),
            ),
        ),
    ];
    if !spm {
        meta.push(("tokenizer.ggml.pre".into(), Value::String("smollm".into())));
        meta.push(("tokenizer.ggml.merges".into(), Value::Array(merges)));
    }
    meta
}

fn gguf_bytes(meta: &Meta) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(k, v.clone());
    }
    let mut out = Vec::new();
    w.write(&mut out).unwrap();
    out
}

// ---- mutations -----------------------------------------------------------------------------

/// Texts the builder treats specially, or that look like what it generates.
const TRICKY_TOKENS: &[&str] = &[
    "",
    " ",
    "\u{2581}",
    "\u{0120}",
    "<|im_end|>",
    "<|im_start|>",
    "<eos>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|calls|>",
    "<|flush|>",
    "<|channel|>",
    "<|fim_pad|>",
    "<|file_sep|>",
    "[EMPTY_0]",
    "[EMPTY_3]",
    "[DUPLICATE_1]",
    "[DUPLICATE_5]",
    "<0x41>",
    "<0xZZ>",
    "<0x>",
    "\u{0}",
    "a b",
    "\u{fffd}",
    "é",
    "👨‍👩‍👧",
    "<",
    "[",
    "_",
];

const MODELS: &[&str] = &["gpt2", "llama", "bert", "t5", "", "GPT2"];
const PRES: &[&str] = &[
    "default",
    "smollm",
    "llama3",
    "gpt-4o",
    "qwen2",
    "tekken",
    "gpt2",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "falcon",
    "viking",
    "bloom",
    "dbrx",
    "no-such-pre",
    "",
];
const ID_KEYS: &[&str] = &[
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
];
const FLAG_KEYS: &[&str] =
    &["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix"];
const TEMPLATE_PIECES: &[&str] = &[
    "{% for m in messages %}",
    "{% endfor %}",
    "{{ messages[100].content }}",
    "{{ raise_exception('no') }}",
    "{{ bos_token }}",
    "{{ m | tojson }}",
    "{% if %}",
    "{{ strftime_now('%Y') }}",
    "{{ messages[0]['content'].strip() }}",
    "{% set x = namespace(a=1) %}{{ x.a }}",
    "{{",
    "}}",
    "{%",
    "\u{0}",
];

fn set(meta: &mut Meta, key: &str, value: Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => meta.push((key.to_string(), value)),
    }
}

fn array_mut<'a>(meta: &'a mut Meta, key: &str) -> Option<&'a mut Vec<Value>> {
    match meta.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v) {
        Some(Value::Array(a)) => Some(a),
        _ => None,
    }
}

/// An integer id: in range, at or past the end, negative, huge, or not an integer at all.
fn weird_id(rng: &mut Rng, n: usize) -> Value {
    match rng.below(9) {
        0 => Value::U32(rng.below(n.max(1)) as u32),
        1 => Value::U32(n as u32),
        2 => Value::I32(-1),
        3 => Value::U32(u32::MAX),
        4 => Value::I64(i64::MIN),
        5 => Value::U64(u64::MAX),
        6 => Value::String("1".into()),
        7 => Value::F32(1.5),
        _ => Value::I32(rng.below(n + 2) as i32),
    }
}

/// One value-level mutation of the tokenizer metadata.
fn mutate_meta(meta: &mut Meta, rng: &mut Rng) {
    let n = get(meta, "tokenizer.ggml.tokens").and_then(Value::as_array).map_or(0, <[Value]>::len);
    match rng.below(14) {
        0 | 1 => {
            // A token renamed to a tricky text (or to another token's text).
            let Some(tokens) = array_mut(meta, "tokenizer.ggml.tokens") else {
                return;
            };
            if tokens.is_empty() {
                return;
            }
            let i = rng.below(tokens.len());
            let text = if rng.below(3) == 0 {
                tokens[rng.below(tokens.len())].clone()
            } else {
                Value::String(rng.pick(TRICKY_TOKENS).to_string())
            };
            tokens[i] = text;
        }
        2 => {
            // An array cut short, emptied, or doubled.
            let key = rng.pick(&[
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.scores",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges",
            ]);
            let Some(a) = array_mut(meta, key) else {
                return;
            };
            match rng.below(3) {
                0 => a.truncate(rng.below(a.len() + 1)),
                1 => a.clear(),
                _ => {
                    let copy = a.clone();
                    a.extend(copy);
                }
            }
        }
        3 => {
            // An array of the wrong type (homogeneous, so the file stays well-formed).
            let key = rng.pick(&[
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.scores",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges",
            ]);
            let len = n.max(1);
            let value = match rng.below(4) {
                0 => Value::Array((0..len).map(|i| Value::U32(i as u32)).collect()),
                1 => Value::Array((0..len).map(|i| Value::String(format!("x{i}"))).collect()),
                2 => Value::Array((0..len).map(|_| Value::Bool(true)).collect()),
                _ => Value::String("not an array".into()),
            };
            set(meta, key, value);
        }
        4 => {
            let Some(scores) = array_mut(meta, "tokenizer.ggml.scores") else {
                return;
            };
            if scores.is_empty() {
                return;
            }
            let i = rng.below(scores.len());
            scores[i] = Value::F32(rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -0.0, 1e30]));
        }
        5 => {
            let Some(types) = array_mut(meta, "tokenizer.ggml.token_type") else {
                return;
            };
            for _ in 0..1 + rng.below(16) {
                if types.is_empty() {
                    return;
                }
                let i = rng.below(types.len());
                types[i] = Value::I32(rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, -1, i32::MAX, i32::MIN]));
            }
        }
        6 => {
            let Some(merges) = array_mut(meta, "tokenizer.ggml.merges") else {
                if rng.below(2) == 0 {
                    set(meta, "tokenizer.ggml.merges", Value::Array(vec![Value::String("a b".into())]));
                }
                return;
            };
            let m = Value::String(
                rng.pick(&[
                    "ab",
                    " a b",
                    "a  b",
                    "ab ",
                    " ",
                    "",
                    "é b",
                    "\u{0120} \u{0120}",
                    "a\u{0}b c",
                    "zz zz",
                    "<|im_end|> a",
                ])
                .to_string(),
            );
            if merges.is_empty() || rng.below(2) == 0 {
                let at = rng.below(merges.len() + 1);
                merges.insert(at, m);
            } else {
                let at = rng.below(merges.len());
                merges[at] = m;
            }
        }
        7 | 8 => {
            let key = rng.pick(ID_KEYS);
            let id = weird_id(rng, n);
            set(meta, key, id);
        }
        9 => {
            let model = rng.pick(MODELS);
            set(meta, "tokenizer.ggml.model", Value::String(model.into()));
        }
        10 => {
            let pre = rng.pick(PRES);
            set(meta, "tokenizer.ggml.pre", Value::String(pre.into()));
        }
        11 => {
            let key = rng.pick(FLAG_KEYS);
            let v = match rng.below(4) {
                0 => Value::Bool(true),
                1 => Value::Bool(false),
                2 => Value::U32(1),
                _ => Value::String("true".into()),
            };
            set(meta, key, v);
        }
        12 => {
            // The chat template: a piece inserted, a chunk cut, or replaced.
            let src = get(meta, "tokenizer.chat_template").and_then(Value::as_str).unwrap_or("").to_string();
            let mut chars: Vec<char> = src.chars().collect();
            match rng.below(3) {
                0 => {
                    let at = rng.below(chars.len() + 1);
                    chars.splice(at..at, rng.pick(TEMPLATE_PIECES).chars());
                }
                1 if !chars.is_empty() => {
                    let at = rng.below(chars.len());
                    let end = (at + 1 + rng.below(16)).min(chars.len());
                    chars.drain(at..end);
                }
                _ => chars = rng.pick(TEMPLATE_PIECES).chars().collect(),
            }
            set(meta, "tokenizer.chat_template", Value::String(chars.into_iter().collect()));
        }
        _ => {
            if !meta.is_empty() {
                let i = rng.below(meta.len());
                meta.remove(i);
            }
        }
    }
}

/// Byte flips or a truncation of the written file.
fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    if rng.below(4) == 0 {
        let cut = rng.below(bytes.len() + 1);
        bytes.truncate(cut);
        return;
    }
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            return;
        }
        let p = rng.below(bytes.len());
        bytes[p] ^= 1 << rng.below(8);
    }
}

// ---- exercising a tokenizer ----------------------------------------------------------------

const TEXTS: &[&str] = &[
    "Hello world",
    " leading and  double  spaces ",
    "line\nbreaks\r\n\ttabs",
    "digits 1234567 and 3.14",
    "Ünïcödé 日本語 русский العربية 👨‍👩‍👧 \u{10FFFD}",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<start_of_turn>user\nhi<end_of_turn>\n<eos>",
    "[EMPTY_3][DUPLICATE_5]<0x41>",
    "",
    " ",
    "\u{0}",
];

/// Encodes, decodes and streams; every call may fail, none may panic.
fn exercise(tok: &Tokenizer, rng: &mut Rng) {
    let n = tok.vocab_size() as u32;
    let mut texts: Vec<String> = TEXTS.iter().map(|s| s.to_string()).collect();
    // Text made of the vocabulary's own pieces.
    texts.push((0..8).filter_map(|_| tok.id_to_piece(rng.below(n as usize + 1) as u32)).collect());
    for text in &texts {
        for (add, parse) in [(true, true), (false, false), (true, false)] {
            if let Ok(ids) = tok.encode_with(text, add, parse) {
                let _ = tok.decode(&ids, rng.below(2) == 0);
                let mut stream = TokenStream::new(tok, rng.below(2) == 0);
                for &id in &ids {
                    let _ = stream.push(id);
                }
                stream.finish();
            }
        }
        let _ = tok.encode_prompt(text);
    }
    let ids: Vec<u32> = (0..16)
        .map(|_| {
            let any = rng.below(n as usize + 1) as u32;
            rng.pick(&[0, 1, n.saturating_sub(1), n, n.saturating_add(1), u32::MAX, any])
        })
        .collect();
    let _ = tok.decode(&ids, false);
    let _ = tok.decode(&ids, true);
    let mut stream = TokenStream::new(tok, false);
    for &id in &ids {
        let _ = stream.push(id);
        let _ = tok.id_to_piece(id);
        let _ = tok.is_special(id);
    }
    stream.finish();
    let _ = tok.end_of_generation_ids();
    let _ = tok.to_json();
}

/// The chat template of a built tokenizer: compiles and renders, or fails cleanly.
fn exercise_template(tok: &Tokenizer, arch: &str) {
    let Ok(template) = ChatTemplate::for_model(tok, arch) else {
        return;
    };
    let messages = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi <|im_end|> there")];
    let _ = template.render(&messages, true);
    let _ = template.render(&messages[1..], false);
    let _ = template.render(&[], true);
}

// ---- the test ------------------------------------------------------------------------------

#[test]
fn mutated_gguf_tokenizer_metadata_never_panics_the_builder() {
    let seed = env_number("KILN_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let total = env_number("KILN_FUZZ_ITERS").map_or(DEFAULT_ITERS, |n| n as usize);
    let keep_going = std::env::var("KILN_FUZZ_KEEP_GOING").is_ok_and(|v| v == "1");
    let seeds: Vec<(&str, Meta)> = vec![
        ("smollm2", real_meta(&SMOLLM2, Some(SEED_TOKENS)).unwrap_or_else(|| synthetic_meta("gpt2"))),
        ("gemma3", real_meta(&GEMMA3, Some(SEED_TOKENS)).unwrap_or_else(|| synthetic_meta("llama"))),
    ];
    for (name, meta) in &seeds {
        let file = GgufFile::from_vec(gguf_bytes(meta)).unwrap();
        Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("the {name} seed builds: {e}"));
    }
    let full = real_meta(&SMOLLM2, None);
    if full.is_none() {
        eprintln!("(the full SmolLM2 vocabulary seed was skipped: model absent)");
    }
    let (mut parsed, mut built, mut templated, mut crashes) = (0usize, 0usize, 0usize, Vec::new());
    for i in 0..total {
        if total >= 100_000 && i > 0 && i * 20 / total != (i - 1) * 20 / total {
            eprintln!("fuzz vocab: {i}/{total} inputs, {built} built, {} crashes", crashes.len());
        }
        let mut rng = Rng::for_input(seed, i as u64);
        let (name, base) = match &full {
            Some(f) if rng.below(FULL_VOCAB_EVERY) == 0 => ("smollm2-full", f),
            _ => {
                let k = rng.below(seeds.len());
                (seeds[k].0, &seeds[k].1)
            }
        };
        let mut meta = base.clone();
        for _ in 0..[1, 1, 2, 3][rng.below(4)] {
            mutate_meta(&mut meta, &mut rng);
        }
        let mut bytes = gguf_bytes(&meta);
        if rng.below(8) == 0 {
            mutate_bytes(&mut bytes, &mut rng);
        }
        let arch = get(&meta, "general.architecture").and_then(Value::as_str).unwrap_or("").to_string();
        let saved = bytes.clone();
        let mut passed = [false; 3];
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let Ok(file) = GgufFile::from_vec(bytes) else {
                return;
            };
            passed[0] = true;
            let Ok(tok) = Tokenizer::from_gguf(&file) else {
                return;
            };
            passed[1] = true;
            exercise(&tok, &mut rng);
            exercise_template(&tok, &arch);
            passed[2] = true;
        }));
        let took = start.elapsed();
        parsed += usize::from(passed[0]);
        built += usize::from(passed[1]);
        templated += usize::from(passed[2]);
        if result.is_err() || took > SLOW_INPUT {
            let what = if result.is_err() { "panicked".to_string() } else { format!("took {took:.1?}") };
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-crash-vocab-{seed:#x}-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("input.gguf"), &saved).unwrap();
            let msg =
                format!("vocab: input {i} (KILN_FUZZ_SEED={seed:#x}, seed {name}) {what}; saved in {}", dir.display());
            eprintln!("CRASH {msg}");
            crashes.push(msg);
            assert!(keep_going, "{}", crashes.last().unwrap());
        }
    }
    eprintln!(
        "fuzz vocab: {total} inputs (KILN_FUZZ_SEED={seed:#x}): {parsed} parsed, {built} built tokenizers, \
         {templated} encoded/decoded/templated; {} crashes",
        crashes.len()
    );
    assert!(crashes.is_empty(), "{}", crashes.join("\n"));
}
