//! The server over real sockets: concurrency (16 streams, each equal to the same request run
//! alone; the 17th refused; a disconnect frees its slot), the OpenAI error shapes, and the
//! smaller endpoints.

mod common;

use common::{get, metric, post, request, start, EventStream};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn chat_body(question: &str, max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

/// The text of a chat stream, its finish reason and its usage.
fn read_chat_stream(events: &[String]) -> (String, String, Value) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "stream must end with [DONE]");
    let mut text = String::new();
    let (mut finish, mut usage) = (String::new(), Value::Null);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "error in stream: {v}");
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"].get(0) {
            text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
    }
    (text, finish, usage)
}

#[test]
fn sixteen_streams_at_once_answer_as_alone_and_the_seventeenth_is_refused() {
    let Some(server) = start(8, 8, 1024, None) else { return };
    let addr = server.addr;
    let questions: Vec<String> =
        (0..16).map(|i| format!("In one sentence, what is {} times {}? Then name a fruit.", i + 2, i + 3)).collect();
    let max_tokens = 40;

    // Each alone, not streamed.
    let alone: Vec<String> = questions
        .iter()
        .map(|q| {
            let r = post(addr, "/v1/chat/completions", &chat_body(q, max_tokens, false));
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string()
        })
        .collect();

    // All sixteen at once, streamed.
    let handles: Vec<_> = questions
        .iter()
        .map(|q| {
            let body = chat_body(q, max_tokens, true);
            std::thread::spawn(move || {
                let s = EventStream::open(addr, "/v1/chat/completions", &body);
                assert_eq!(s.status, 200);
                s.collect()
            })
        })
        .collect();
    // Once all sixteen hold a slot or a queue place, one more is refused at once.
    let t0 = Instant::now();
    while metric(addr, "kiln_requests_running") + metric(addr, "kiln_queue_depth") < 16.0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the sixteen requests never all arrived");
        std::thread::sleep(Duration::from_millis(2));
    }
    let refused = post(addr, "/v1/chat/completions", &chat_body("One more?", 4, false));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.header("retry-after").is_some(), "503 needs Retry-After");
    assert_eq!(refused.json()["error"]["code"], "server_busy");

    for (i, h) in handles.into_iter().enumerate() {
        let events = h.join().unwrap();
        let (text, finish, usage) = read_chat_stream(&events);
        assert_eq!(text, alone[i], "request {i} streamed beside 15 others differs from alone");
        assert!(finish == "stop" || finish == "length", "{finish}");
        assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
        assert_eq!(
            usage["total_tokens"],
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        );
    }
    assert_eq!(metric(addr, "kiln_requests_running"), 0.0);
    assert_eq!(metric(addr, "kiln_queue_depth"), 0.0);
}

#[test]
fn a_client_that_disconnects_frees_its_slot() {
    let Some(server) = start(1, 0, 1024, None) else { return };
    let addr = server.addr;
    // Counting goes on for a long time, so only the disconnect can end this request early.
    let body = json!({"prompt": "1, 2, 3, 4, 5, 6, 7,", "max_tokens": 900, "temperature": 0, "stream": true});
    let mut s = EventStream::open(addr, "/v1/completions", &body);
    assert_eq!(s.status, 200);
    for _ in 0..3 {
        s.next_data().expect("a few chunks");
    }
    assert_eq!(metric(addr, "kiln_requests_running"), 1.0);
    // The only slot is taken: another request is refused.
    assert_eq!(post(addr, "/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2})).status, 503);
    drop(s);
    let t0 = Instant::now();
    while metric(addr, "kiln_requests_running") > 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(3), "slot still busy after the client left");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(metric(addr, "kiln_generated_tokens_total") < 900.0);
    let r = post(addr, "/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["usage"]["completion_tokens"], 2);
}

fn assert_error(r: &common::Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    let e = &v["error"];
    assert!(e["message"].as_str().unwrap().contains(needle), "message {:?} lacks {needle:?}", e["message"]);
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("code").is_some(), "{v}");
}

#[test]
fn bad_requests_get_openai_shaped_errors_and_the_server_keeps_going() {
    let Some(server) = start(2, 2, 64, None) else { return };
    let addr = server.addr;
    let chat = "/v1/chat/completions";
    assert_error(&request(addr, "POST", chat, Some("{\"messages\": [}"), &[]), 400, "not valid JSON");
    assert_error(&request(addr, "POST", chat, Some(""), &[]), 400, "empty");
    assert_error(&post(addr, chat, &json!({"messages": []})), 400, "at least one message");
    assert_error(
        &post(addr, chat, &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})),
        404,
        "gpt-4o",
    );
    assert_error(
        &post(addr, chat, &json!({"messages": [{"role": "user", "content": "x"}], "temperature": 5})),
        400,
        "temperature",
    );
    assert_error(
        &post(addr, chat, &json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})),
        400,
        "max_tokens",
    );
    assert_error(&post(addr, chat, &json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0})), 400, "top_p");
    assert_error(&post(addr, chat, &json!({"messages": [{"role": "user", "content": "x"}], "n": 0})), 400, "n must be");
    assert_error(&post(addr, chat, &json!({"messages": [{"role": "wizard", "content": "x"}]})), 400, "wizard");
    let long = "word ".repeat(200);
    let r = post(addr, chat, &json!({"messages": [{"role": "user", "content": long}]}));
    assert_error(&r, 400, "context is 64 tokens");
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert_error(&post(addr, "/v1/completions", &json!({"prompt": {"a": 1}})), 400, "prompt must be");
    assert_error(&post(addr, "/v1/completions", &json!({"prompt": [1, 99999999]})), 400, "outside the vocabulary");
    assert_error(&get(addr, "/v1/nothing"), 404, "/v1/nothing");
    // Still serving.
    let r = post(addr, chat, &chat_body("Hello", 3, false));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
}

#[test]
fn an_api_key_guards_the_api_but_not_health() {
    let Some(server) = start(1, 1, 256, Some("sesame")) else { return };
    let addr = server.addr;
    assert_error(&get(addr, "/v1/models"), 401, "API key");
    assert_error(&request(addr, "GET", "/v1/models", None, &[("Authorization", "Bearer wrong")]), 401, "API key");
    let ok = request(addr, "GET", "/v1/models", None, &[("Authorization", "Bearer sesame")]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["data"][0]["id"], "smollm2");
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(get(addr, "/").status, 200);
}

#[test]
fn completions_choices_logprobs_tokenize_and_embeddings() {
    let Some(server) = start(4, 4, 512, None) else { return };
    let addr = server.addr;

    // n choices with a seed: distinct indices, reproducible.
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 8, "n": 3, "seed": 7, "temperature": 1.0, "logprobs": 2});
    let a = post(addr, "/v1/completions", &body).json();
    let b = post(addr, "/v1/completions", &body).json();
    assert_eq!(a["choices"].as_array().unwrap().len(), 3);
    assert_eq!(a["choices"], b["choices"], "same seed, same choices");
    for c in a["choices"].as_array().unwrap() {
        let lp = &c["logprobs"];
        assert_eq!(lp["tokens"].as_array().unwrap().len(), lp["token_logprobs"].as_array().unwrap().len());
        assert!(lp["token_logprobs"].as_array().unwrap().iter().all(|x| x.as_f64().unwrap() <= 0.0));
        assert!(lp["top_logprobs"][0].as_object().unwrap().len() <= 2);
    }
    assert_eq!(a["usage"]["completion_tokens"], 24);

    // Chat logprobs: the top alternative of a greedy token is the token itself.
    let mut chat = chat_body("Say hi.", 4, false);
    chat["logprobs"] = json!(true);
    chat["top_logprobs"] = json!(3);
    let v = post(addr, "/v1/chat/completions", &chat).json();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    assert!(!content.is_empty());
    for t in &content {
        assert_eq!(t["top_logprobs"].as_array().unwrap().len(), 3);
        assert_eq!(t["top_logprobs"][0]["token"], t["token"]);
    }

    // Echo puts the prompt first.
    let e =
        post(addr, "/v1/completions", &json!({"prompt": "Roses are", "max_tokens": 3, "echo": true, "temperature": 0}))
            .json();
    assert!(e["choices"][0]["text"].as_str().unwrap().starts_with("Roses are"));

    // Tokenize and back.
    let t = post(addr, "/tokenize", &json!({"content": "Hello world"})).json();
    let ids = t["tokens"].clone();
    assert!(ids.as_array().unwrap().len() >= 2);
    let d = post(addr, "/detokenize", &json!({"tokens": ids})).json();
    assert_eq!(d["content"], "Hello world");

    // Embeddings: unit vectors of the model's width, and base64 carries the same numbers.
    let v = post(
        addr,
        "/v1/embeddings",
        &json!({"input": ["The cat sat on the mat.", "A cat is sitting on a mat.", "Interest rates rose again."]}),
    )
    .json();
    let vecs: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vecs.len(), 3);
    assert_eq!(vecs[0].len(), 576);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!((dot(&vecs[0], &vecs[0]) - 1.0).abs() < 1e-4);
    assert!(dot(&vecs[0], &vecs[1]) > dot(&vecs[0], &vecs[2]), "similar sentences should be closer");
    let b64 =
        post(addr, "/v1/embeddings", &json!({"input": "The cat sat on the mat.", "encoding_format": "base64"})).json();
    use base64::Engine as _;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let first = f32::from_le_bytes(bytes[..4].try_into().unwrap()) as f64;
    assert!((first - vecs[0][0]).abs() < 1e-6);
    assert_eq!(bytes.len(), 576 * 4);

    // Metrics count what happened.
    assert!(metric(addr, "kiln_generated_tokens_total") >= 24.0);
    let text = get(addr, "/metrics").body;
    assert!(text.contains("kiln_http_requests_total{path=\"/v1/completions\",status=\"200\"}"), "{text}");
}

#[test]
fn think_samples_together_and_returns_the_chosen_answer() {
    let Some(server) = start(4, 8, 1024, None) else { return };
    let addr = server.addr;
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What is 6 times 7? End with '#### <number>'."}],
        "max_tokens": 48,
        "seed": 3,
        "think": {"n": 4, "choose": "vote"},
    });
    let r = post(addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"].as_array().map(Vec::len), Some(1));
    let think = &v["think"];
    assert_eq!(think["samples"].as_array().map(Vec::len), Some(4), "{v}");
    let chosen = think["chosen"].as_u64().unwrap() as usize;
    assert_eq!(think["samples"][chosen]["answer"], think["answer"], "{v}");
    // The prompt was computed once for the four samples.
    assert_eq!(think["prompt_tokens_computed"], v["usage"]["prompt_tokens"], "{v}");
    // The same seed answers the same.
    let again = post(addr, "/v1/chat/completions", &body).json();
    assert_eq!(again["choices"][0]["message"]["content"], v["choices"][0]["message"]["content"]);
    assert_eq!(again["think"]["samples"], think["samples"]);

    for (bad, needle) in [
        (json!(0), "think.n must be a whole number from 1 to 64"),
        (json!({"n": 4, "choose": "oracle"}), "think.choose must be"),
        (json!({"n": 4, "budget": "soon"}), "cannot read the budget"),
        (json!({"n": 4, "why": 1}), "unknown field \"why\""),
        (json!("four"), "think must be a number"),
    ] {
        let mut b = body.clone();
        b["think"] = bad;
        assert_error(&post(addr, "/v1/chat/completions", &b), 400, needle);
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    assert_error(&post(addr, "/v1/chat/completions", &streamed), 400, "does not stream");
}

#[test]
fn lookup_answers_as_without_and_reports_its_guesses() {
    let Some(server) = start(2, 4, 1024, None) else { return };
    let addr = server.addr;
    let question = "Repeat this list exactly:\n- red apples\n- green pears\n- yellow bananas\n- purple plums";
    let plain = post(addr, "/v1/chat/completions", &chat_body(question, 40, false)).json();
    let mut body = chat_body(question, 40, false);
    body["lookup"] = json!(6);
    let fast = post(addr, "/v1/chat/completions", &body).json();
    assert_eq!(fast["choices"][0]["message"]["content"], plain["choices"][0]["message"]["content"], "{fast}");
    let drafted = fast["timings"]["draft_n"].as_u64().unwrap_or(0);
    let accepted = fast["timings"]["draft_n_accepted"].as_u64().unwrap_or(0);
    assert!(drafted > 0 && accepted > 0 && accepted <= drafted, "{fast}");
    assert!(plain["timings"].get("draft_n").is_none());
    body["lookup"] = json!(99);
    assert_error(&post(addr, "/v1/chat/completions", &body), 400, "lookup takes 0 to 32 tokens");
}

#[test]
fn a_draft_model_answers_as_without_and_a_request_can_turn_it_off() {
    let Some(mut served) = common::served_model() else { return };
    let path = kiln_test_models::SMOLLM2.path().unwrap();
    let draft = kiln_model::Model::open_gguf(&path).unwrap().first_layers(12).unwrap();
    served.draft = Some(kiln_generate::Draft { model: std::sync::Arc::new(draft), max: 4 });
    let with_draft = common::start_served(served, 2, 4, 1024, None);
    let Some(plain_server) = start(2, 4, 1024, None) else { return };
    let question = "Repeat this list exactly:\n- red apples\n- green pears\n- yellow bananas";
    let body = chat_body(question, 32, false);
    let plain = post(plain_server.addr, "/v1/chat/completions", &body).json();
    let drafted = post(with_draft.addr, "/v1/chat/completions", &body).json();
    assert_eq!(drafted["choices"][0]["message"]["content"], plain["choices"][0]["message"]["content"]);
    assert!(drafted["timings"]["draft_n"].as_u64().unwrap_or(0) > 0, "{drafted}");
    let mut off = body.clone();
    off["draft_max"] = json!(0);
    let undrafted = post(with_draft.addr, "/v1/chat/completions", &off).json();
    assert_eq!(undrafted["choices"][0]["message"]["content"], plain["choices"][0]["message"]["content"]);
    assert!(undrafted["timings"].get("draft_n").is_none(), "{undrafted}");
    let mut asks = body.clone();
    asks["draft_max"] = json!(4);
    assert_error(
        &post(plain_server.addr, "/v1/chat/completions", &asks),
        400,
        "needs a server started with a draft model",
    );
}
