"""Writes arith_words.jsonl: arithmetic word problems with large numbers, whose answers are
exact integers. Deterministic (seed 7); rerun to regenerate:  python3 tests/tools/make_arith.py"""
import json, random, pathlib

rng = random.Random(7)
TEMPLATES = [
    ("A warehouse holds {a:,} crates of {b} bolts each. How many bolts are there in total?", lambda a, b, c: a * b),
    ("A farm sold {a:,} eggs on Monday and {b:,} eggs on Tuesday. How many eggs did it sell over the two days?", lambda a, b, c: a + b),
    ("A library had {a:,} books and gave away {b:,} of them. How many books are left?", lambda a, b, c: a - b),
    ("A factory makes {a} toys every hour for {b} hours a day, for {c} days. How many toys does it make?", lambda a, b, c: a * b * c),
    ("{a:,} dollars are shared equally among {b} people. How many dollars does each person get?", lambda a, b, c: a // b),
    ("A train carries {a:,} passengers a day. How many passengers does it carry in {b} days, plus {c:,} extra on a holiday?", lambda a, b, c: a * b + c),
    ("A school orders {a} boxes of {b} pencils and already has {c:,} pencils. How many pencils does it have now?", lambda a, b, c: a * b + c),
    ("A tank holds {a:,} litres. {b:,} litres leak out and then it is filled with {c:,} more litres. How many litres are in the tank?", lambda a, b, c: a - b + c),
]

rows = []
for i in range(40):
    text, answer = TEMPLATES[i % len(TEMPLATES)]
    a, b, c = rng.randint(10_000, 99_999), rng.randint(100, 999), rng.randint(1_000, 9_999)
    if i % len(TEMPLATES) == 4:
        a = b * rng.randint(1_000, 9_999)  # an exact division
    if i % len(TEMPLATES) == 3:
        a, b, c = rng.randint(100, 999), rng.randint(10, 24), rng.randint(100, 365)
    if i % len(TEMPLATES) == 2 or i % len(TEMPLATES) == 7:
        b = rng.randint(1_000, a - 1)
    rows.append({"id": i, "question": text.format(a=a, b=b, c=c), "answer": answer(a, b, c)})

out = pathlib.Path(__file__).with_name("arith_words.jsonl")
out.write_text("".join(json.dumps(r) + "\n" for r in rows))
print(f"wrote {len(rows)} problems to {out}")
