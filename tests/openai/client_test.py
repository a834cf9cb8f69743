"""The official `openai` Python package, unmodified, against a running `kiln serve`.

Usage: python3 client_test.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Exits non-zero with the failing check's message.
"""
import json
import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok: {what}")


models = client.models.list()
ids = [m.id for m in models.data]
check(len(ids) == 1, f"models.list gives the served model ({ids})")
model = ids[0]

question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
chat = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=16)
answer = chat.choices[0].message.content
check(chat.choices[0].message.role == "assistant", "chat reply has the assistant role")
check("Paris" in answer, f"chat answers the question ({answer!r})")
check(chat.choices[0].finish_reason in ("stop", "length"), "chat finish_reason")
check(chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, "chat usage adds up")

stream = client.chat.completions.create(
    model=model, messages=question, temperature=0, max_tokens=16, stream=True, stream_options={"include_usage": True}
)
pieces, finish, usage = [], None, None
for event in stream:
    if event.choices:
        pieces.append(event.choices[0].delta.content or "")
        finish = event.choices[0].finish_reason or finish
    if event.usage:
        usage = event.usage
streamed = "".join(pieces)
check(len(pieces) > 2, f"streamed chat arrives in pieces ({len(pieces)})")
check(streamed == answer, f"streamed chat equals the plain one ({streamed!r})")
check(finish in ("stop", "length"), "streamed finish_reason")
check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens, "stream_options.include_usage sends usage")

comp = client.completions.create(model=model, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0, logprobs=2)
check(comp.choices[0].text.strip().startswith("5"), f"completion continues the count ({comp.choices[0].text!r})")
check(len(comp.choices[0].logprobs.tokens) == comp.usage.completion_tokens, "completion logprobs per token")

many = client.chat.completions.create(model=model, messages=question, max_tokens=8, n=2, seed=3, temperature=1.0)
check(sorted(c.index for c in many.choices) == [0, 1], "n=2 gives two choices")

emb = client.embeddings.create(model=model, input=["hello world", "goodbye"])
check(len(emb.data) == 2 and len(emb.data[0].embedding) > 0, f"embeddings ({len(emb.data[0].embedding)} dims)")
norm = sum(x * x for x in emb.data[0].embedding) ** 0.5
check(abs(norm - 1.0) < 1e-3, "embeddings are unit vectors")

try:
    client.chat.completions.create(model="no-such-model", messages=question)
    check(False, "an unknown model is refused")
except openai.NotFoundError as e:
    check(e.status_code == 404 and "no-such-model" in str(e), "unknown model raises NotFoundError")

try:
    client.chat.completions.create(model=model, messages=question, temperature=7)
    check(False, "temperature 7 is refused")
except openai.BadRequestError as e:
    check("temperature" in str(e), "bad temperature raises BadRequestError")

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 5000}])
    check(False, "a prompt longer than the context is refused")
except openai.BadRequestError as e:
    check("context" in str(e), "an overlong prompt raises BadRequestError naming the context")

# Tool calling: a call (decoded under the tool's schema), the same call streamed, the result
# sent back, a final answer.
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Today's weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
r = client.chat.completions.create(model=model, messages=ask, tools=tools, tool_choice="required",
                                   parallel_tool_calls=False, temperature=0, max_tokens=60)
call = r.choices[0].message.tool_calls[0]
args = json.loads(call.function.arguments)
check(r.choices[0].finish_reason == "tool_calls", "a required call ends with finish_reason tool_calls")
check(call.function.name == "get_weather" and call.id.startswith("call_"), f"the call names the tool ({call.function.name})")
check(isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit"), f"its arguments fit the schema ({args})")
stream = client.chat.completions.create(model=model, messages=ask, tools=tools, tool_choice="required",
                                        parallel_tool_calls=False, temperature=0, max_tokens=60, stream=True)
s_id, s_name, s_args, s_finish = None, "", "", None
for event in stream:
    d = event.choices[0].delta if event.choices else None
    for tc in (d.tool_calls or []) if d else []:
        if tc.id:
            s_id = tc.id
        if tc.function and tc.function.name:
            s_name += tc.function.name
        if tc.function and tc.function.arguments:
            s_args += tc.function.arguments
    if event.choices and event.choices[0].finish_reason:
        s_finish = event.choices[0].finish_reason
check(s_id and s_name == call.function.name and s_args == call.function.arguments and s_finish == "tool_calls",
      "the streamed call is the same call, id and name first, then argument fragments")
follow = ask + [r.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
final = client.chat.completions.create(model=model, messages=follow, tools=tools, tool_choice="none",
                                       temperature=0, max_tokens=40)
check(final.choices[0].message.tool_calls is None and final.choices[0].message.content,
      f"the tool result goes back and the model answers ({final.choices[0].message.content!r})")

# Structured output: 100 of 100 sampled replies validate against the schema.
schema = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 30},
    "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
    "genres": {"type": "array", "items": {"type": "string", "enum": ["drama", "comedy", "horror", "sci-fi"]},
               "minItems": 1, "maxItems": 3}},
    "required": ["title", "year", "genres"], "additionalProperties": False}


def valid_film(v):
    return (isinstance(v, dict) and set(v) == {"title", "year", "genres"}
            and isinstance(v["title"], str) and len(v["title"]) <= 30
            and isinstance(v["year"], (int, float)) and v["year"] == int(v["year"]) and 1900 <= v["year"] <= 2100
            and isinstance(v["genres"], list) and 1 <= len(v["genres"]) <= 3
            and all(g in ("drama", "comedy", "horror", "sci-fi") for g in v["genres"]))


good = 0
for seed in range(100):
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Invent a film."}], temperature=1.0, seed=seed,
        max_tokens=120, response_format={"type": "json_schema", "json_schema": {"name": "film", "schema": schema, "strict": True}})
    try:
        good += valid_film(json.loads(r.choices[0].message.content))
    except json.JSONDecodeError:
        pass
check(good == 100, f"response_format json_schema: {good} of 100 replies validate")

try:
    client.chat.completions.create(model=model, messages=ask, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}})
    check(False, "a schema the decoder cannot follow is refused")
except openai.BadRequestError as e:
    check(e.param == "response_format" and "nonsense" in str(e), "a schema the decoder cannot follow raises BadRequestError naming response_format")

print("all openai-client checks passed")
