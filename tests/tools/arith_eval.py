"""Accuracy on arith_words.jsonl with and without the calc tool, with Wilson 95 % intervals.

    python3 tests/tools/arith_eval.py [--kiln target/release/kiln] [--model NAME] [--limit N]

Each configuration runs `kiln run --temp 0` on every question; the answer is the last number
in the reply (thousands separators removed). Configurations: no tools; --tools calc (the
model decides whether to call); --tools calc --tool-choice required (the first turn must call
calc; its arguments are decoded under calc's schema)."""
import argparse, json, math, pathlib, re, subprocess, sys

def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))

def last_number(text):
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    if not nums:
        return None
    try:
        return float(nums[-1].replace(",", ""))
    except ValueError:
        return None

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--model", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None, help="write per-question results here (JSON)")
    args = ap.parse_args()
    rows = [json.loads(l) for l in pathlib.Path(__file__).with_name("arith_words.jsonl").read_text().splitlines()]
    rows = rows[: args.limit] if args.limit else rows
    configs = {
        "no tools": [],
        "calc (auto)": ["--tools", "calc"],
        "calc (required)": ["--tools", "calc", "--tool-choice", "required"],
    }
    base = [args.kiln, "run", "--temp", "0", "-n", "200", "-q"] + (["-m", args.model] if args.model else [])
    results = {}
    for name, flags in configs.items():
        right, calls, per = 0, 0, []
        for r in rows:
            p = subprocess.run(base + flags + [r["question"]], capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                sys.exit(f"kiln failed on {r['id']}: {p.stderr.strip()}")
            got = last_number(p.stdout)
            ok = got is not None and abs(got - r["answer"]) < 1e-6
            called = "→ calc(" in p.stderr
            right += ok
            calls += called
            per.append({"id": r["id"], "ok": ok, "called": called, "reply": p.stdout.strip()[-200:]})
        lo, hi = wilson(right, len(rows))
        results[name] = {"correct": right, "n": len(rows), "calls": calls, "ci95": [lo, hi], "items": per}
        print(f"{name:18} {right:3}/{len(rows)} = {right/len(rows):.3f}  [{lo:.3f}, {hi:.3f}]  questions with a calc call: {calls}", flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1))

if __name__ == "__main__":
    main()
