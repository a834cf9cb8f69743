#!/usr/bin/env python3
"""How often a chat model ends its answer by itself: sends Alpaca prompts to an OpenAI-style
server (`kiln serve`) greedily and counts finish_reason "stop" (the model emitted its
end-of-turn) against "length" (it ran to --max-tokens). Prints the rate and a few answers.

usage: scripts/chat-stop-rate.py URL DATA.json FIRST COUNT [--max-tokens N]
  e.g. scripts/chat-stop-rate.py http://127.0.0.1:8090 ../shared/data/sft/alpaca_en_demo.json 900 30
"""
import argparse
import json
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("data")
ap.add_argument("first", type=int)
ap.add_argument("count", type=int)
ap.add_argument("--max-tokens", type=int, default=96)
args = ap.parse_args()

rows = json.load(open(args.data))[args.first:args.first + args.count]
stops, samples = 0, []
for row in rows:
    question = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
    body = {"messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": args.max_tokens}
    req = urllib.request.Request(args.url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    reply = json.load(urllib.request.urlopen(req, timeout=600))["choices"][0]
    stops += reply["finish_reason"] == "stop"
    if len(samples) < 3:
        samples.append((question, reply["message"]["content"], reply["finish_reason"]))
print(f"{stops}/{len(rows)} answers ended at end-of-turn (the rest ran to {args.max_tokens} tokens)")
for q, a, why in samples:
    print(f"--- {q!r}\n{a!r} [{why}]")
