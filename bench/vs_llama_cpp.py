#!/usr/bin/env python3
"""The table of bench/vs-llama-cpp: reads the runs.tsv it writes (one line per program run:
llama-bench or kiln bench JSON, and the GNU `time -v` report of the same run) and prints
Markdown: tokens/s of both, the ratio kiln/llama.cpp, and peak RSS of both.

Both programs print llama-bench's JSON (an array of tests with n_prompt, n_gen, n_threads,
avg_ts, stddev_ts), so one reader serves both. Standard library only.
"""

import argparse
import csv
import datetime
import json
import re
import sys

# Targets of issue 3 (ratios kiln / llama.cpp, same run).
TARGET_TG = 1.10  # generation at least this
TARGET_PP = 1.00  # prompt processing at least this
TARGET_RSS = 1.10  # peak RSS at most this
# CPUs kept busy by other programs above which the table warns that the machine was not idle.
BUSY_WARN = 0.2


def load_tests(path):
    """{(n_prompt, n_gen): (avg_ts, stddev_ts)} from a llama-bench-style JSON file, and the
    first entry (for build and CPU fields)."""
    try:
        with open(path) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return {}, {}
    tests = {(e["n_prompt"], e["n_gen"]): (e["avg_ts"], e["stddev_ts"]) for e in entries}
    return tests, entries[0] if entries else {}


def peak_rss_kib(path):
    """Maximum resident set size (KiB) from a GNU `time -v` report, or None."""
    try:
        with open(path) as f:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def cpu_name():
    """The CPU model and the number of logical CPUs, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
    return f"{names[0].strip()} ({len(names)} logical CPUs)" if names else None


def mark(ok):
    return "✓" if ok else "✗"


def fmt_ts(t):
    return f"{t[0]:.1f} ± {t[1]:.1f}" if t else "failed"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", help="runs.tsv written by bench/vs-llama-cpp")
    ap.add_argument("--n-prompt", type=int, required=True)
    ap.add_argument("--n-gen", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--kiln-commit", default="unknown")
    ap.add_argument("--command", default="bench/vs-llama-cpp")
    a = ap.parse_args()

    with open(a.runs, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    # (key, threads) -> {engine: row}, in run order.
    pairs = {}
    for r in rows:
        pairs.setdefault((r["key"], r["threads"]), {})[r["engine"]] = r

    info = {}
    lines = []
    header = ("| model | threads | test | llama.cpp t/s | kiln t/s | kiln / llama.cpp "
              "| llama.cpp peak RSS | kiln peak RSS | RSS kiln / llama.cpp |")
    lines.append(header)
    lines.append("|---|--:|---|--:|--:|--:|--:|--:|--:|")
    for (key, threads), by_engine in pairs.items():
        llama, kiln = by_engine.get("llama.cpp"), by_engine.get("kiln")
        label = (llama or kiln)["label"]
        l_tests, l_first = load_tests(llama["json"]) if llama else ({}, {})
        k_tests, _ = load_tests(kiln["json"]) if kiln else ({}, {})
        info = info or l_first
        l_rss = peak_rss_kib(llama["time"]) if llama else None
        k_rss = peak_rss_kib(kiln["time"]) if kiln else None
        if l_rss and k_rss:
            ratio = k_rss / l_rss
            rss = f"{l_rss / 1024:.1f} MiB | {k_rss / 1024:.1f} MiB | {ratio:.2f} {mark(ratio <= TARGET_RSS)}"
        else:
            rss = "– | – | –"
        tests = []
        if a.n_prompt:
            tests.append((f"pp{a.n_prompt}", (a.n_prompt, 0), TARGET_PP))
        if a.n_gen:
            tests.append((f"tg{a.n_gen}", (0, a.n_gen), TARGET_TG))
        for name, test, target in tests:
            lt, kt = l_tests.get(test), k_tests.get(test)
            if lt and kt and lt[0] > 0:
                ratio = f"**{kt[0] / lt[0]:.2f}** {mark(kt[0] / lt[0] >= target)}"
            else:
                ratio = "–"
            lines.append(f"| {label} | {threads} | {name} | {fmt_ts(lt)} | {fmt_ts(kt)} | {ratio} | {rss} |")

    busy = [float(r["busy"]) for r in rows if r.get("busy")]
    busy_line = []
    if busy:
        busy_line = [
            "",
            f"Other load: {min(busy):.2f}–{max(busy):.2f} CPUs busy in the second before each run.",
        ]
        if max(busy) > BUSY_WARN:
            busy_line[-1] += (
                " **The machine was not idle**: ggml's threads spin at their barriers, so llama.cpp "
                "loses far more than kiln to other load, and these ratios flatter kiln."
            )
    out = [
        "## kiln vs llama.cpp",
        "",
        f"`{a.command}` on {datetime.date.today().isoformat()}: "
        f"{cpu_name() or info.get('cpu_info', 'unknown CPU')}; kiln {a.kiln_commit}, "
        f"llama.cpp {info.get('build_commit', '?')} (build {info.get('build_number', '?')}); "
        f"{a.reps} repetition{'s' if a.reps != 1 else ''} per test, mean ± sd.",
        "",
        *lines,
        *busy_line,
        "",
        f"Targets (issue 3): tg ≥ {TARGET_TG:.2f}×, pp ≥ {TARGET_PP:.2f}×, peak RSS ≤ {TARGET_RSS:.2f}× "
        "llama.cpp's (✓ met, ✗ not). Peak RSS is the whole process (`/usr/bin/time -v`), both tests "
        "included. Absolute tokens/s on a shared machine are noise; the ratios come from the same run.",
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
