#!/usr/bin/env python3
"""Item-by-item comparison of two `kiln eval --out` results on the same items (same task,
--limit and --seed): McNemar's exact test on the items one run got right and the other wrong.

    scripts/mcnemar.py before.json after.json [TASK]
"""
import json
import sys
from math import comb


def per_item(path, task):
    results = json.load(open(path))
    for t in results["tasks"]:
        if task is None or t["task"] == task:
            return t["task"], t["per_item"]
    sys.exit(f"{path}: no task {task}")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    task = sys.argv[3] if len(sys.argv) == 4 else None
    name, a = per_item(sys.argv[1], task)
    _, b = per_item(sys.argv[2], name)
    if len(a) != len(b):
        sys.exit(f"the runs scored {len(a)} and {len(b)} items: not the same items")
    only_a = sum(1 for x, y in zip(a, b) if x == "1" and y == "0")
    only_b = sum(1 for x, y in zip(a, b) if x == "0" and y == "1")
    n = only_a + only_b
    # Two-sided exact binomial test of the discordant pairs against 1/2.
    tail = sum(comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n if n else 1.0
    p = min(1.0, 2 * tail)
    print(f"{name}: {len(a)} items; first {a.count('1')} right, second {b.count('1')} right; "
          f"right only in the first {only_a}, only in the second {only_b}; exact McNemar p = {p:.3g}")


if __name__ == "__main__":
    main()
