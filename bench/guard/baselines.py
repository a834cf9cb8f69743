#!/usr/bin/env python3
"""Other detectors on kiln guard's held-out split, for comparison with `kiln guard eval`.

    kiln guard train                                   # writes $KILN_HOME/guard/heldout.jsonl
    python3 bench/guard/baselines.py [HELDOUT.jsonl]

Measures the TF-IDF model of securevector-guardian-model==1.4.0 (its stdlib-only runtime,
fetched by pip into a temporary directory) at its own threshold: precision, recall and the
false-positive rate on benign prompts, each with its 95 % Wilson interval, overall and per
source set.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict

PACKAGE = "securevector-guardian-model==1.4.0"


def wilson(k, n, z=1.959964):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    d = 1 + z * z / n
    return (max(0.0, (centre - spread) / d), min(1.0, (centre + spread) / d))


def rates(rows):
    tp = sum(1 for flagged, attack in rows if flagged and attack)
    fp = sum(1 for flagged, attack in rows if flagged and not attack)
    fn = sum(1 for flagged, attack in rows if not flagged and attack)
    tn = sum(1 for flagged, attack in rows if not flagged and not attack)

    def fmt(k, n):
        if n == 0:
            return "      -        "
        lo, hi = wilson(k, n)
        return f"{100 * k / n:5.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"

    return f"precision {fmt(tp, tp + fp)}  recall {fmt(tp, tp + fn)}  false positives {fmt(fp, fp + tn)}"


def load_securevector(work):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", work, PACKAGE], check=True)
    wheel = next(os.path.join(work, f) for f in os.listdir(work) if f.endswith(".whl"))
    zipfile.ZipFile(wheel).extractall(work)
    sys.path.insert(0, work)
    from svguardian.model.pure_infer import PureGuardian

    return PureGuardian.load(os.path.join(work, "svguardian", "_runtime", "guardian.runtime.json.gz"))


def main():
    home = os.environ.get("KILN_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kiln")
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(home, "guard", "heldout.jsonl")
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    with tempfile.TemporaryDirectory() as work:
        model = load_securevector(work)
        decided = [(model.predict(r["text"])["verdict"] == "malicious", bool(r["label"]), r["source"]) for r in rows]
    print(f"securevector-guardian 1.4.0 on {path} ({len(rows)} prompts)")
    print(f"{'all':<24} {len(rows):>6}  {rates([(f, a) for f, a, _ in decided])}")
    by = defaultdict(list)
    for f, a, s in decided:
        by[s].append((f, a))
    for s in sorted(by):
        print(f"  {s:<22} {len(by[s]):>6}  {rates(by[s])}")


if __name__ == "__main__":
    main()
