//! The request parser under mutated bodies: every answer is Ok or an error, never a panic.
//! Bodies start from valid requests and are changed at random (bytes flipped, dropped or
//! repeated; values swapped for other JSON types; cut short), a few thousand per run, seeded.

use crate::openai::{parse_body, ChatRequest, CompletionRequest};
use serde_json::{json, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Value> {
    vec![
        json!({"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
               "temperature": 0.7, "top_p": 0.9, "max_tokens": 8, "n": 2, "stop": ["\n"], "seed": 3, "stream": true,
               "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2}),
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
               {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}}]},
               {"role": "tool", "tool_call_id": "c", "content": "sunny"}],
               "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
               "tool_choice": {"type": "function", "function": {"name": "w"}}, "parallel_tool_calls": false,
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}),
    ]
}

/// A JSON value of another kind than `v`.
fn other_kind(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1e308),
        4 => json!("x"),
        5 => json!([]),
        _ => json!({}),
    }
}

fn mutate_value(v: &mut Value, rng: &mut Rng, depth: usize) {
    match v {
        Value::Object(o) if !o.is_empty() && depth < 6 => {
            let keys: Vec<String> = o.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            if rng.below(4) == 0 {
                o.insert(k.clone(), other_kind(rng));
            } else if rng.below(8) == 0 {
                o.remove(k);
            } else {
                mutate_value(o.get_mut(k).expect("key listed"), rng, depth + 1);
            }
        }
        Value::Array(a) if !a.is_empty() && depth < 6 => {
            let i = rng.below(a.len());
            if rng.below(4) == 0 {
                a[i] = other_kind(rng);
            } else {
                mutate_value(&mut a[i], rng, depth + 1);
            }
        }
        _ => *v = other_kind(rng),
    }
}

fn mutate_bytes(mut b: Vec<u8>, rng: &mut Rng) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let i = rng.below(b.len());
        match rng.below(4) {
            0 => b[i] = rng.next() as u8,
            1 => {
                b.remove(i);
            }
            2 => b.insert(i, b[i]),
            _ => b.truncate(i),
        }
    }
    b
}

fn exercise(body: &[u8]) {
    if let Ok(req) = parse_body::<ChatRequest>(body) {
        let _ = crate::tools::messages(&req);
        let _ = crate::tools::plan(&req);
        let _ = crate::tools::tool_choice(req.tool_choice.as_ref());
        let _ = req.common.choices();
        let _ = req.common.options(16, None);
    }
    if let Ok(req) = parse_body::<CompletionRequest>(body) {
        let _ = crate::openai::prompt_inputs(&req.prompt, "prompt");
        let _ = req.common.options(16, Some(2));
    }
}

#[test]
fn mutated_requests_never_panic() {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for round in 0..4000 {
        let mut v = seeds()[round % 2].clone();
        for _ in 0..1 + rng.below(3) {
            mutate_value(&mut v, &mut rng, 0);
        }
        exercise(&serde_json::to_vec(&v).expect("a value serializes"));
        exercise(&mutate_bytes(serde_json::to_vec(&seeds()[round % 2]).expect("a value serializes"), &mut rng));
    }
}
