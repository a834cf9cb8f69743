#!/usr/bin/env python3
"""Writes the short-pair subset of LLaMA-Factory's dpo_en_demo.json that the README's reward
model and DPO runs use: the 83 pairs whose prompt and longer answer come to under ~440
SmolLM2 tokens, in file order (`--val-rows 25` holds out the last 25).

usage: scripts/dpo-short-pairs.py OUT.json   (reads ../shared/data/prefs/dpo_en_demo.json)
"""
import json
import os
import sys

ROWS = [5, 10, 11, 13, 18, 21, 22, 23, 25, 32, 36, 43, 44, 51, 53, 54, 60, 64, 66, 68, 69, 70,
        71, 75, 80, 85, 91, 102, 103, 104, 108, 109, 114, 120, 121, 128, 130, 134, 137, 142,
        144, 147, 153, 154, 156, 157, 158, 159, 165, 172, 178, 181, 182, 185, 187, 192, 197,
        199, 200, 201, 204, 209, 216, 231, 233, 236, 237, 239, 242, 243, 244, 249, 253, 256,
        262, 267, 269, 278, 281, 282, 292, 293, 299]

here = os.path.dirname(os.path.abspath(__file__))
rows = json.load(open(os.path.join(here, "..", "..", "shared", "data", "prefs", "dpo_en_demo.json")))
json.dump([rows[i] for i in ROWS], open(sys.argv[1], "w"), ensure_ascii=False, indent=1)
