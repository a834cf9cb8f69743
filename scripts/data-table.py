#!/usr/bin/env python3
"""Writes kiln's table of public data sets, crates/kiln-hub/src/data/datasets.json.

Usage (from the repository root, with the data mirror beside the checkout):

    python3 scripts/data-table.py ../shared/data > crates/kiln-hub/src/data/datasets.json

The data sets, their descriptions, licences and canonical sources are written down below; the
size and sha256 of every file are computed from the mirror copy given as the argument (kiln's
data layout: eval/, pretrain/, sft/, prefs/). There is no internet where this table was made,
so the hashes are those of the mirror's copies, which were taken from the sources named here;
an upstream that has since changed a file no longer matches, and kiln then says so (checksum
mismatch) instead of installing it.
"""

import hashlib
import json
import os
import sys

GITHUB_RAW = "https://raw.githubusercontent.com"
# Files that GitHub keeps in Git LFS are served from media.githubusercontent.com
# (raw.githubusercontent.com would give the LFS pointer, not the bytes).
GITHUB_LFS = "https://media.githubusercontent.com/media"
MMLU_TAR = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"
LLAMA_FACTORY = f"{GITHUB_RAW}/hiyouga/LLaMA-Factory/main/data"
FOUNDRY = f"{GITHUB_RAW}/mosaicml/llm-foundry/main/scripts/eval/local_data"
# The mirror's eval/core/<category>_<task>.jsonl is llm-foundry's <category>/<task>.jsonl.
CORE_CATEGORIES = [
    "commonsense_reasoning",
    "language_understanding",
    "reading_comprehension",
    "symbolic_problem_solving",
    "world_knowledge",
]


def core_url(rel):
    stem = rel.removeprefix("eval/core/")
    for category in CORE_CATEGORIES:
        if stem.startswith(category + "_"):
            return f"{FOUNDRY}/{category}/{stem[len(category) + 1:]}"
    raise SystemExit(f"{rel}: no llm-foundry category matches")


def mmlu_files(root):
    """(relpath, url, tar member) of every MMLU csv in the mirror, from hendrycks' data.tar."""
    out = []
    for split in ("dev", "val", "test"):
        for name in sorted(os.listdir(os.path.join(root, "eval/mmlu", split))):
            if name.endswith(".csv"):
                out.append((f"eval/mmlu/{split}/{name}", MMLU_TAR, f"data/{split}/{name}"))
    return out


def core_files(root):
    names = sorted(os.listdir(os.path.join(root, "eval/core")))
    return [(f"eval/core/{n}", core_url(f"eval/core/{n}"), None) for n in names if n.endswith(".jsonl")]


# name, aliases, description, licence, homepage, files: [(relpath, url, tar member or None)]
# (a callable builds the file list from the mirror).
DATA_SETS = [
    ("hellaswag", [], "HellaSwag validation, 10,042 sentence endings to pick (kiln eval --task hellaswag)",
     "MIT", "https://github.com/klosax/hellaswag_text_data",
     [("eval/hellaswag_val_full.txt.bz2",
       f"{GITHUB_RAW}/klosax/hellaswag_text_data/main/hellaswag_val_full.txt.bz2", None)]),
    ("mmlu", [], "MMLU, 57 subjects: dev (few-shot examples), val and test splits (--task mmlu)",
     "MIT", "https://github.com/hendrycks/test", mmlu_files),
    ("core", ["arc"], "DCLM's CORE suite, 14 tasks: ARC-Easy/Challenge (--task arc), PIQA, SIQA, "
     "Winogrande, WSC, COPA, OpenBookQA, CommonsenseQA, BoolQ, LAMBADA, Jeopardy, SVAMP, ...",
     "per task (ARC: CC BY-SA 4.0; most others MIT or Apache-2.0)",
     "https://github.com/mosaicml/llm-foundry/tree/main/scripts/eval/local_data", core_files),
    ("truthfulqa", [], "TruthfulQA, 817 questions with true and false answers (--task truthfulqa)",
     "Apache-2.0", "https://github.com/sylinrl/TruthfulQA",
     [("eval/TruthfulQA.csv", f"{GITHUB_RAW}/sylinrl/TruthfulQA/main/TruthfulQA.csv", None)]),
    ("gsm8k", [], "GSM8K grade-school maths with worked answers: train (7,473) and test (1,319, --task gsm8k)",
     "MIT", "https://github.com/openai/grade-school-math",
     [("sft/gsm8k_train.jsonl",
       f"{GITHUB_RAW}/openai/grade-school-math/master/grade_school_math/data/train.jsonl", None),
      ("eval/gsm8k_test.jsonl",
       f"{GITHUB_RAW}/openai/grade-school-math/master/grade_school_math/data/test.jsonl", None)]),
    ("humaneval", [], "HumanEval, 164 Python functions to complete, with tests (--task humaneval)",
     "MIT", "https://github.com/openai/human-eval",
     [("eval/HumanEval.jsonl.gz", f"{GITHUB_RAW}/openai/human-eval/master/data/HumanEval.jsonl.gz", None)]),
    ("wikitext2", [], "WikiText-2 validation (pretraining text) and test (perplexity) splits",
     "CC BY-SA 3.0", "https://github.com/pytorch/examples/tree/main/word_language_model",
     [("pretrain/wikitext2_valid.txt",
       f"{GITHUB_RAW}/pytorch/examples/main/word_language_model/data/wikitext-2/valid.txt", None),
      ("eval/wikitext2_test.txt",
       f"{GITHUB_RAW}/pytorch/examples/main/word_language_model/data/wikitext-2/test.txt", None)]),
    ("tinyshakespeare", [], "Tiny Shakespeare, 1.1 MB of plays: the classic small pretraining corpus",
     "public domain (text)", "https://github.com/karpathy/char-rnn",
     [("pretrain/tinyshakespeare.txt",
       f"{GITHUB_RAW}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt", None)]),
    ("wiki-demo", [], "Wikipedia paragraphs, 1 MB of pretraining text",
     "CC BY-SA (Wikipedia text)", "https://github.com/hiyouga/LLaMA-Factory/tree/main/data",
     [("pretrain/wiki_demo.txt", f"{LLAMA_FACTORY}/wiki_demo.txt", None)]),
    ("alpaca", ["alpaca_en_demo"], "999 Alpaca instruction/answer pairs for SFT",
     "CC BY-NC 4.0", "https://github.com/hiyouga/LLaMA-Factory/tree/main/data",
     [("sft/alpaca_en_demo.json", f"{LLAMA_FACTORY}/alpaca_en_demo.json", None)]),
    ("identity", [], "91 'who are you' conversations with {{name}}/{{author}} placeholders, for SFT",
     "Apache-2.0", "https://github.com/hiyouga/LLaMA-Factory/tree/main/data",
     [("sft/identity.json", f"{LLAMA_FACTORY}/identity.json", None)]),
    ("glaive-toolcall", [], "300 multi-turn conversations with function calls and results, for SFT",
     "Apache-2.0", "https://github.com/hiyouga/LLaMA-Factory/tree/main/data",
     [("sft/glaive_toolcall_en_demo.json", f"{LLAMA_FACTORY}/glaive_toolcall_en_demo.json", None)]),
    ("dpo-demo", [], "300 preference pairs (chosen/rejected), for DPO and reward models",
     "Apache-2.0", "https://github.com/hiyouga/LLaMA-Factory/tree/main/data",
     [("prefs/dpo_en_demo.json", f"{LLAMA_FACTORY}/dpo_en_demo.json", None)]),
    ("hh-rlhf", [], "Anthropic HH-RLHF harmless-base test: 2,312 chosen/rejected transcripts",
     "MIT", "https://github.com/anthropics/hh-rlhf",
     [("prefs/hh-rlhf_harmless-base_test.jsonl.gz",
       f"{GITHUB_LFS}/anthropics/hh-rlhf/master/harmless-base/test.jsonl.gz", None)]),
]


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest(), os.path.getsize(path)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: scripts/data-table.py MIRROR_DIR > crates/kiln-hub/src/data/datasets.json")
    root = sys.argv[1]
    lines = [
        "{",
        '  "about": [',
        '    "The public data sets kiln knows (kiln data list / pull). Written by scripts/data-table.py",',
        '    "from the mirror ../shared/data; do not edit by hand. Sizes and sha256s are those of the",',
        '    "mirror copies (no internet where this was made, so the URLs were not fetched here); an",',
        '    "upstream file changed since then fails its checksum and is not installed. A file with a",',
        '    "member comes out of the tar archive at its url."',
        "  ],",
        '  "sets": [',
    ]
    for i, (name, aliases, description, licence, homepage, files) in enumerate(DATA_SETS):
        if callable(files):
            files = files(root)
        head = {"name": name, "aliases": aliases, "description": description,
                "licence": licence, "homepage": homepage}
        lines.append("    {")
        for key, value in head.items():
            lines.append(f"      {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
        lines.append('      "files": [')
        for j, (rel, url, member) in enumerate(files):
            sha256, size = digest(os.path.join(root, rel))
            entry = {"path": rel, "size": size, "sha256": sha256, "url": url}
            if member is not None:
                entry["member"] = member
            comma = "," if j + 1 < len(files) else ""
            lines.append(f"        {json.dumps(entry, ensure_ascii=False)}{comma}")
        lines.append("      ]")
        lines.append("    }" + ("," if i + 1 < len(DATA_SETS) else ""))
    lines += ["  ]", "}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
