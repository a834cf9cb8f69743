"""Writes supervised conversations that teach a model to call calc, for `kiln sft`:
arithmetic word problems (the templates of make_arith.py, seed 8, none of them one of the 40
test questions) solved by one calc call and an answer that copies its result digit for digit
(`--separators` writes 6,186,551 instead, as the first run did), plus the Glaive
tool-call demo conversations (other tools) when a path to them is given.

usage: python3 tests/tools/make_tool_sft.py OUT.jsonl [--n 400] [--glaive glaive_toolcall_en_demo.json [--glaive-rows N]] [--kiln target/release/kiln]

The calc definition is the one the agent loop gives the model (`kiln tool calc --describe`),
so training and inference render the same system message."""
import argparse, json, pathlib, random, subprocess, sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

TEMPLATES = [
    ("A warehouse holds {a:,} crates of {b} bolts each. How many bolts are there in total?", "{a}*{b}", "There are {r} bolts."),
    ("A farm sold {a:,} eggs on Monday and {b:,} eggs on Tuesday. How many eggs did it sell over the two days?", "{a}+{b}", "It sold {r} eggs."),
    ("A library had {a:,} books and gave away {b:,} of them. How many books are left?", "{a}-{b}", "{r} books are left."),
    ("A factory makes {a} toys every hour for {b} hours a day, for {c} days. How many toys does it make?", "{a}*{b}*{c}", "It makes {r} toys."),
    ("{a:,} dollars are shared equally among {b} people. How many dollars does each person get?", "{a}/{b}", "Each person gets {r} dollars."),
    ("A train carries {a:,} passengers a day. How many passengers does it carry in {b} days, plus {c:,} extra on a holiday?", "{a}*{b}+{c}", "It carries {r} passengers."),
    ("A school orders {a} boxes of {b} pencils and already has {c:,} pencils. How many pencils does it have now?", "{a}*{b}+{c}", "It has {r} pencils."),
    ("A tank holds {a:,} litres. {b:,} litres leak out and then it is filled with {c:,} more litres. How many litres are in the tank?", "{a}-{b}+{c}", "There are {r} litres in the tank."),
]


def calc_spec(kiln):
    out = subprocess.run([kiln, "tool", "calc", "{}", "--describe"], check=True, capture_output=True, text=True).stdout
    description, schema = out.split("\n", 1)
    return {"type": "function", "function": {"name": "calc", "description": description, "parameters": json.loads(schema)}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--glaive", default=None)
    ap.add_argument("--glaive-rows", type=int, default=None, help="take only the first N Glaive conversations")
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--separators", action="store_true", help="write answers with thousands separators (6,186,551) instead of the tool's digits")
    args = ap.parse_args()
    test = {json.loads(l)["question"] for l in pathlib.Path(__file__).with_name("arith_words.jsonl").read_text().splitlines()}
    spec = calc_spec(args.kiln)
    rng = random.Random(8)
    rows = []
    while len(rows) < args.n:
        k = len(rows) % len(TEMPLATES)
        text, expr, answer = TEMPLATES[k]
        a, b, c = rng.randint(10_000, 99_999), rng.randint(100, 999), rng.randint(1_000, 9_999)
        if k == 4:
            a = b * rng.randint(1_000, 9_999)
        if k == 3:
            a, b, c = rng.randint(100, 999), rng.randint(10, 24), rng.randint(100, 365)
        if k in (2, 7):
            b = rng.randint(1_000, a - 1)
        question = text.format(a=a, b=b, c=c)
        if question in test:
            continue
        expression = expr.format(a=a, b=b, c=c)
        result = eval(expression.replace("/", "//"))
        rows.append({
            "tools": [spec],
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": {"expression": expression}}}]},
                {"role": "tool", "content": str(result)},
                {"role": "assistant", "content": answer.replace("{r}", "{r:,}" if args.separators else "{r}").format(r=result)},
            ],
        })
    random.Random(9).shuffle(rows)
    if args.glaive:
        rows += json.load(open(args.glaive))[: args.glaive_rows]
        random.Random(9).shuffle(rows)
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} conversations to {args.out}")


if __name__ == "__main__":
    main()
