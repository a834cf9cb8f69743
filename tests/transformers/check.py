#!/usr/bin/env python3
"""Checks a kiln run's Hugging Face directory with transformers (the `*ForCausalLM` class its
config.json names) against kiln.

usage: check.py MODEL_DIR PROMPT KILN_STDERR

KILN_STDERR is what `kiln run --raw --temp 0 --logprobs 1 PROMPT` wrote to stderr: one line
"[TOKEN_ID LOGPROB] …" per generated token and a timing line with the prompt's token count.
transformers scores the prompt followed by kiln's tokens in one pass; each token's
log-probability must match kiln's, and each must be transformers' greedy choice too (unless
the top two are closer than kiln's f16 KV cache can resolve). Exits non-zero on a mismatch.
"""
import re
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

logging.disable_progress_bar()

# kiln keeps keys and values in f16 and prints three decimals; a wrong layout (a transposed
# projection, a rotary convention, a missing norm weight) is off by whole nats.
TOLERANCE = 0.02

model_dir, prompt, kiln_err = sys.argv[1:4]
lines = open(kiln_err).read().splitlines()
generated = [(int(m[1]), float(m[2])) for m in (re.match(r"\[(\d+) (-?[\d.]+|-?inf)\]", l) for l in lines) if m]
prompt_len = int(re.search(r"\[prompt (\d+) tokens", "\n".join(lines))[1])
assert len(generated) >= 8, f"kiln generated only {len(generated)} tokens:\n" + "\n".join(lines)

tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
ids = tok(prompt, return_tensors="pt").input_ids[0].tolist()
if tok.bos_token_id is not None and ids[:1] != [tok.bos_token_id]:
    ids = [tok.bos_token_id] + ids
assert len(ids) == prompt_len, f"prompt tokens: transformers {len(ids)}, kiln {prompt_len}"

tokens = [t for t, _ in generated]
with torch.no_grad():
    logits = model(torch.tensor([ids + tokens])).logits[0].float()
logp = torch.log_softmax(logits, dim=-1)
worst = 0.0
for i, (token, kiln_lp) in enumerate(generated):
    row = logp[len(ids) - 1 + i]
    hf_lp = row[token].item()
    worst = max(worst, abs(hf_lp - kiln_lp))
    assert abs(hf_lp - kiln_lp) <= TOLERANCE, f"token {i} ({token}): log-prob kiln {kiln_lp}, transformers {hf_lp:.4f}"
    top2 = torch.topk(row, 2).values
    if top2[0] - top2[1] > TOLERANCE:
        assert row.argmax().item() == token, f"token {i}: kiln chose {token}, transformers {row.argmax().item()}"

print(f"transformers {type(model).__name__} ({sum(p.numel() for p in model.parameters())} parameters) "
      f"agrees with kiln on {len(tokens)} greedy tokens; largest log-prob difference {worst:.4f}")
print("text:", repr(tok.decode(tokens)))
