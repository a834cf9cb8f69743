"""Recall@5 of kiln's keyword, vector and hybrid search on a question set over kiln's own docs.

usage: python3 tests/retrieval/recall.py [--kiln target/release/kiln] [--questions tests/retrieval/questions.jsonl]

The corpus is a copy of README.md and docs/LOG.md taken at run time (so the figures follow the
docs as they are). A question counts as found at k when one of the first k passages contains
its answer phrase (whitespace folded). Each rate comes with its 95 % Wilson interval.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
from arith_eval import wilson  # noqa: E402
MODES = ["keyword", "vector", "hybrid"]


def fold(s):
    return " ".join(s.split())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target/release/kiln"))
    ap.add_argument("--questions", default=os.path.join(ROOT, "tests/retrieval/questions.jsonl"))
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    questions = [json.loads(line) for line in open(args.questions) if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "docs")
        os.makedirs(corpus)
        for rel in ["README.md", "docs/LOG.md"]:
            shutil.copy(os.path.join(ROOT, rel), corpus)
        text = fold(" ".join(open(os.path.join(corpus, f)).read() for f in os.listdir(corpus)))
        kept = [q for q in questions if fold(q["answer"]) in text]
        for q in questions:
            if q not in kept:
                print(f"warning: answer {q['answer']!r} is no longer in the docs; question left out", file=sys.stderr)
        # The index goes into a throw-away KILN_HOME; the model comes from the usual cache.
        model = subprocess.run([args.kiln, "pull", "minilm"], check=True, capture_output=True, text=True).stdout.strip()
        env = dict(os.environ, KILN_HOME=os.path.join(tmp, "home"))
        flags = ["--embedding-model", model]
        subprocess.run([args.kiln, "index", corpus] + flags, check=True, stderr=subprocess.DEVNULL, env=env)
        found = {m: 0 for m in MODES}
        first = {m: 0 for m in MODES}
        rr = {m: 0.0 for m in MODES}
        rows = []
        for q in kept:
            row = [q["question"]]
            for mode in MODES:
                out = subprocess.run(
                    [args.kiln, "search", corpus, q["question"], "--mode", mode, "-k", str(args.k), "--json"] + flags,
                    check=True, capture_output=True, text=True, env=env,
                ).stdout
                hits = [json.loads(line) for line in out.splitlines() if line.strip()]
                rank = next((i + 1 for i, h in enumerate(hits) if fold(q["answer"]) in fold(h["text"])), None)
                if rank:
                    found[mode] += 1
                    rr[mode] += 1 / rank
                    first[mode] += rank == 1
                row.append(rank or "-")
            rows.append(row)
    n = len(kept)
    print(f"{n} questions over README.md + docs/LOG.md; rank of the first passage holding the answer (k = {args.k}):")
    for row in rows:
        print(f"  {row[1]!s:>2} {row[2]!s:>2} {row[3]!s:>2}  {row[0]}")
    print(f"\n| search | recall@1 | recall@{args.k} | 95 % interval | MRR@{args.k} |")
    print("|---|--:|--:|---|--:|")
    for m in MODES:
        lo, hi = wilson(found[m], n)
        print(f"| {m} | {first[m]}/{n} | {found[m]}/{n} = {found[m] / n:.2f} | [{lo:.2f}, {hi:.2f}] | {rr[m] / n:.3f} |")


if __name__ == "__main__":
    main()
