#!/usr/bin/env python3
"""Loads a kiln run's Hugging Face directory with transformers' LlamaForCausalLM and compares its
logits with the PyTorch reference forward of the same weights (both f32, CPU), then greedy-
decodes a prompt. Not part of `cargo test`: it needs torch + transformers (see README).

usage: check_hf.py RUN_DIR_OR_MODEL_DIR [PROMPT]
"""
import os
import sys

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

path = sys.argv[1]
if not os.path.isfile(os.path.join(path, "config.json")):
    path = os.path.join(path, "model")
prompt = sys.argv[2] if len(sys.argv) > 2 else "ROMEO:"
tok = AutoTokenizer.from_pretrained(path)
model = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
ids = tok(prompt, return_tensors="pt").input_ids
if tok.bos_token_id is not None and ids[0, 0] != tok.bos_token_id:
    ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids], dim=1)
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=24, do_sample=False)
print("transformers loaded", type(model).__name__, sum(p.numel() for p in model.parameters()), "parameters")
print("prompt ids", ids[0].tolist())
print("greedy:", repr(tok.decode(out[0, ids.shape[1]:])))
