#!/usr/bin/env python3
"""Writes the rows both frameworks train on, in TRL's conversational shapes (which `kiln sft` and
`kiln dpo` read too, so kiln and TRL parse the same file):

  sft.jsonl  {"prompt": [user], "completion": [assistant]}      from ../shared/data/sft/alpaca_en_demo.json
             (user = instruction, plus "\\n" + input when there is one: kiln's Alpaca reading)
  dpo.jsonl  {"prompt": [...], "chosen": [...], "rejected": [...]}, --prefs picks the source:
             hh: ../shared/data/prefs/hh-rlhf_harmless-base_test.jsonl.gz (Anthropic HH transcripts,
               split as kiln splits them: turns at "\n\nHuman:" / "\n\nAssistant:", trimmed; the
               prompt is the shared turns up to the last non-assistant one)
             dpo_en_demo: ../shared/data/prefs/dpo_en_demo.json (LLaMA-Factory `conversations`;
               from human/gpt/system -> user/assistant/system); its pairs are long (few fit in 256)

Only the first rows whose whole rendering (chat template, prompt + reply) is at most --max-len
tokens are kept, so neither framework truncates anything (their truncation rules differ).

usage: make_data.py --model HF_DIR --data SHARED_DATA --max-len N --sft-rows N --dpo-rows N [--prefs hh] --out DIR
"""
import argparse
import gzip
import json
import os
import re

from transformers import AutoTokenizer

ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def n_tokens(tok, messages):
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def sft_rows(path):
    for r in json.load(open(path)):
        q = r["instruction"] + (f"\n{r['input']}" if r.get("input") else "")
        yield {"prompt": [{"role": "user", "content": q}],
               "completion": [{"role": "assistant", "content": r["output"]}]}


def dpo_rows(path):
    for r in json.load(open(path)):
        prompt = [{"role": ROLE[m["from"]], "content": m["value"]} for m in r["conversations"]]
        if r.get("system"):
            prompt.insert(0, {"role": "system", "content": r["system"]})
        side = lambda m: [{"role": "assistant", "content": m["value"]}]
        yield {"prompt": prompt, "chosen": side(r["chosen"]), "rejected": side(r["rejected"])}


def transcript(text):
    """kiln_text::conversation::transcript."""
    parts = re.split(r"(\n\nHuman:|\n\nAssistant:)", text)
    return [{"role": "user" if m == "\n\nHuman:" else "assistant", "content": body.strip()}
            for m, body in zip(parts[1::2], parts[2::2])]


def hh_rows(path):
    for line in gzip.open(path, "rt"):
        r = json.loads(line)
        c, rj = transcript(r["chosen"]), transcript(r["rejected"])
        shared = 0
        while shared < min(len(c), len(rj)) and c[shared] == rj[shared]:
            shared += 1
        cut = shared
        while cut > 0 and c[cut - 1]["role"] == "assistant":
            cut -= 1
        if cut == 0 or not c[cut:] or not rj[cut:]:
            continue
        yield {"prompt": c[:cut], "chosen": c[cut:], "rejected": rj[cut:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-len", type=int, required=True)
    ap.add_argument("--sft-rows", type=int, required=True)
    ap.add_argument("--dpo-rows", type=int, required=True)
    ap.add_argument("--prefs", choices=["hh", "dpo_en_demo"], default="hh")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.model)
    os.makedirs(a.out, exist_ok=True)
    jobs = [
        ("sft.jsonl", sft_rows(f"{a.data}/sft/alpaca_en_demo.json"), a.sft_rows,
         lambda r: n_tokens(tok, r["prompt"] + r["completion"]) <= a.max_len),
        ("dpo.jsonl", hh_rows(f"{a.data}/prefs/hh-rlhf_harmless-base_test.jsonl.gz") if a.prefs == "hh"
         else dpo_rows(f"{a.data}/prefs/dpo_en_demo.json"), a.dpo_rows,
         lambda r: max(n_tokens(tok, r["prompt"] + r["chosen"]),
                       n_tokens(tok, r["prompt"] + r["rejected"])) <= a.max_len),
    ]
    for name, rows, want, fits in jobs:
        kept, seen = [], 0
        for r in rows:
            seen += 1
            ok = name == "sft.jsonl" or (r["chosen"] != r["rejected"] and all(
                m["content"] for m in r["prompt"] + r["chosen"] + r["rejected"]))
            if r["prompt"] and ok and fits(r):
                kept.append(r)
                if len(kept) == want:
                    break
        if len(kept) < want:
            raise SystemExit(f"{name}: only {len(kept)} rows fit in {a.max_len} tokens, {want} wanted")
        with open(f"{a.out}/{name}", "w") as f:
            for r in kept:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{a.out}/{name}: the first {want} rows of {seen} that fit in {a.max_len} tokens")


if __name__ == "__main__":
    main()
