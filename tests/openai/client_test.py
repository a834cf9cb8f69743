"""The official `openai` Python package, unmodified, against a running `kiln serve`.

Usage: python3 client_test.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Exits non-zero with the failing check's message.
"""
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

print("all openai-client checks passed")
