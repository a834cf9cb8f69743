"""GSM8K test accuracy with and without the calc tool, with Wilson 95 % intervals.

    python3 tests/tools/gsm8k_eval.py [--kiln target/release/kiln] [--model M] [--limit 200] [--data gsm8k_test.jsonl]

Greedy `kiln run` on the first --limit questions (default: ../shared/data beside the checkout,
else `kiln data path eval/gsm8k_test.jsonl`);
the answer is the last number of the reply, compared with the number after `####`.
Configurations: no tools; --tools calc (the model decides whether to call)."""
import argparse, json, pathlib, subprocess, sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from arith_eval import last_number, wilson  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--model", default=None)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    mirror = pathlib.Path(__file__).resolve().parents[2].parent / "shared/data/eval/gsm8k_test.jsonl"
    data = args.data or (str(mirror) if mirror.is_file() else None) or subprocess.run(
        [args.kiln, "data", "path", "eval/gsm8k_test.jsonl"], check=True, capture_output=True, text=True
    ).stdout.strip()
    rows = [json.loads(l) for l in open(data) if l.strip()][: args.limit]
    base = [args.kiln, "run", "--temp", "0", "-n", "320", "-q"] + (["-m", args.model] if args.model else [])
    results = {}
    for name, flags in {"no tools": [], "calc (auto)": ["--tools", "calc"]}.items():
        right, calls, items = 0, 0, []
        for i, r in enumerate(rows):
            gold = float(r["answer"].split("####")[-1].strip().replace(",", ""))
            p = subprocess.run(base + flags + [r["question"]], capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                sys.exit(f"kiln failed on item {i}: {p.stderr.strip()}")
            got = last_number(p.stdout)
            ok = got is not None and abs(got - gold) < 1e-6
            right += ok
            calls += "→ calc(" in p.stderr
            items.append({"i": i, "ok": ok, "reply": p.stdout.strip()[-200:]})
        lo, hi = wilson(right, len(rows))
        results[name] = {"correct": right, "n": len(rows), "calls": calls, "ci95": [lo, hi], "items": items}
        print(f"{name:14} {right:3}/{len(rows)} = {right / len(rows):.3f}  [{lo:.3f}, {hi:.3f}]  questions with a calc call: {calls}", flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
