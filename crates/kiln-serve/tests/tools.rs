//! Tool calling and structured output over real sockets on the default model: calls decoded
//! under the tools' schemas, streamed as OpenAI streams them, results rendered back, and
//! `response_format` output that always validates. Bad schemas are 400s naming the problem.

mod common;

use common::{post, start, EventStream};
use serde_json::{json, Value};

fn calc_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "calc",
        "description": "Exact arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 40}},
                       "required": ["expression"], "additionalProperties": false}
    }})
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Today's weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": false}
    }})
}

#[test]
fn a_required_call_round_trip_plain_and_streamed() {
    let Some(server) = start(2, 4, 2048, None) else { return };
    let question = json!({"role": "user", "content": "What is the weather in Paris?"});
    let body = json!({
        "messages": [question], "tools": [calc_tool(), weather_tool()], "tool_choice": "required",
        "parallel_tool_calls": false, "temperature": 0, "max_tokens": 80,
    });
    let r = post(server.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let choice = &r.json()["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    let calls = choice["message"]["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{choice}");
    let call = &calls[0];
    assert!(call["id"].as_str().is_some_and(|id| id.starts_with("call_")), "{call}");
    assert_eq!(call["type"], "function");
    let name = call["function"]["name"].as_str().unwrap();
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).expect("arguments are JSON");
    match name {
        "calc" => assert!(args["expression"].is_string(), "{args}"),
        "get_weather" => {
            assert!(args["city"].is_string(), "{args}");
            assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()), "{args}");
        }
        other => panic!("unknown tool {other}"),
    }

    // The same request streamed: id and name first, then the arguments in fragments.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = EventStream::open(server.addr, "/v1/chat/completions", &streamed).collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let (mut sname, mut sargs, mut sid, mut finish, mut first_has_name) =
        (String::new(), String::new(), None, None, None);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        let c = &v["choices"][0];
        if let Some(tc) = c["delta"]["tool_calls"].get(0) {
            assert_eq!(tc["index"], 0);
            if let Some(id) = tc["id"].as_str() {
                first_has_name.get_or_insert(tc["function"]["name"].is_string());
                sid = Some(id.to_string());
                sname.push_str(tc["function"]["name"].as_str().unwrap());
            }
            sargs.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(first_has_name, Some(true));
    assert!(sid.is_some());
    assert_eq!(sname, name);
    assert_eq!(sargs, call["function"]["arguments"].as_str().unwrap(), "greedy: the same call streamed");
    assert_eq!(finish.as_deref(), Some("tool_calls"));

    // The result goes back; the model answers in text (tool_choice none: no more calls).
    let follow = json!({
        "messages": [question, {"role": "assistant", "content": null, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature\": 21, \"sky\": \"clear\"}"}],
        "tools": [calc_tool(), weather_tool()], "tool_choice": "none", "temperature": 0, "max_tokens": 40,
    });
    let r = post(server.addr, "/v1/chat/completions", &follow);
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = &r.json()["choices"][0];
    assert!(answer["message"]["tool_calls"].is_null(), "{answer}");
    assert!(!answer["message"]["content"].as_str().unwrap().is_empty(), "{answer}");
}

#[test]
fn response_format_json_schema_output_always_validates() {
    let Some(server) = start(4, 8, 1024, None) else { return };
    let schema = json!({"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 30},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "genres": {"type": "array", "items": {"type": "string", "enum": ["drama", "comedy", "horror", "sci-fi"]}, "minItems": 1, "maxItems": 3}
    }, "required": ["title", "year", "genres"], "additionalProperties": false});
    for seed in 0..12 {
        let body = json!({
            "messages": [{"role": "user", "content": "Invent a film."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "film", "schema": schema, "strict": true}},
            "temperature": 1.2, "seed": seed, "max_tokens": 120,
        });
        let r = post(server.addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let text = r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text}"));
        assert!(v["title"].as_str().is_some_and(|t| t.chars().count() <= 30), "{v}");
        assert!(v["year"].as_f64().is_some_and(|y| (1900.0..=2100.0).contains(&y) && y.fract() == 0.0), "{v}");
        let g = v["genres"].as_array().unwrap();
        assert!((1..=3).contains(&g.len()), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    }
    let body = json!({"messages": [{"role": "user", "content": "Any JSON object."}],
                      "response_format": {"type": "json_object"}, "temperature": 1.0, "max_tokens": 60});
    let r = post(server.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let choice = &r.json()["choices"][0];
    if choice["finish_reason"] == "stop" {
        let text = choice["message"]["content"].as_str().unwrap();
        assert!(serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()), "{text}");
    }
}

#[test]
fn schemas_and_choices_the_decoder_cannot_follow_are_400s() {
    let Some(server) = start(1, 2, 512, None) else { return };
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}),
            "response_format",
        ),
        (json!({"messages": user, "response_format": {"type": "xml"}}), "response_format"),
        (
            json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}]}),
            "tools",
        ),
        (json!({"messages": user, "tools": [{"type": "retrieval"}]}), "tools"),
        (
            json!({"messages": user, "tools": [calc_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (json!({"messages": user, "tool_choice": "required"}), "tool_choice"),
    ];
    for (body, param) in cases {
        let r = post(server.addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let err = &r.json()["error"];
        assert_eq!(err["param"], param, "{body}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
}
