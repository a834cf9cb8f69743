#!/usr/bin/env python3
"""The table of bench/vs-llama-cpp: reads the runs.tsv it writes (one line per program run:
llama-bench or kiln bench JSON, and the GNU `time -v` report of the same run) and prints
Markdown: tokens/s of both, the ratio kiln/llama.cpp, and peak RSS of both.

With `kiln bench --probe` results beside runs.tsv (probe-tN.json), each speed is also shown as
a share of the machine's limit on those threads: generation as the weight bytes it reads per
second against the memory read bandwidth, prompt processing as multiply-adds per second (one
per parameter and token) against the int8 peak.

Both programs print llama-bench's JSON (an array of tests with n_prompt, n_gen, n_threads,
avg_ts, stddev_ts), so one reader serves both. Standard library only.
"""

import argparse
import csv
import datetime
import json
import pathlib
import re
import statistics
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


def pooled(results):
    """One (mean, sd) from several runs' (mean, sd) of the same test: the mean of the means,
    and the sd of the means where there are several runs (run-to-run drift is what matters
    then), else the run's own sd. None where no run has the test."""
    got = [t for t in results if t]
    if not got:
        return None
    if len(got) == 1:
        return got[0]
    means = [t[0] for t in got]
    return statistics.mean(means), statistics.stdev(means)


def load_probes(directory):
    """{threads: (memory GB/s, int8 GMAC/s or None)} from probe-tN.json files."""
    probes = {}
    for path in sorted(pathlib.Path(directory).glob("probe-t*.json")):
        try:
            v = json.loads(path.read_text())
            probes[str(v["n_threads"])] = (v["memory_read_gbs"], v.get("int8_gmacs"))
        except (OSError, ValueError, KeyError):
            continue
    return probes


def share(ts, test, model, limits):
    """A speed as a share of its limit: `41 %`, or – where something is unknown."""
    if not ts or not limits or not model:
        return "–"
    gbs, gmacs = limits
    if test[1]:  # generation: every weight byte read once per token
        used, limit = ts[0] * model.get("model_size", 0), gbs * 1e9
    else:  # prompt processing: one multiply-add per parameter and token
        used, limit = ts[0] * model.get("model_n_params", 0), (gmacs or 0) * 1e9
    return f"{100 * used / limit:.0f} %" if used and limit else "–"


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
    # (key, threads) -> [{engine: row} for each round], in run order.
    pairs = {}
    for r in rows:
        rounds = pairs.setdefault((r["key"], r["threads"]), {})
        rounds.setdefault(r.get("round") or "1", {})[r["engine"]] = r
    n_rounds = max((len(v) for v in pairs.values()), default=1)

    info = {}
    lines = []
    probes = load_probes(pathlib.Path(a.runs).parent)
    header = ("| model | threads | test | llama.cpp t/s | kiln t/s | kiln / llama.cpp "
              "| llama.cpp peak RSS | kiln peak RSS | RSS kiln / llama.cpp |")
    rule = "|---|--:|---|--:|--:|--:|--:|--:|--:|"
    if probes:
        header += " llama.cpp of limit | kiln of limit |"
        rule += "--:|--:|"
    if n_rounds > 1:
        header += " ratio in each round |"
        rule += "---|"
    lines += [header, rule]
    for (key, threads), by_round in pairs.items():
        rounds = list(by_round.values())
        label = next(iter(rounds[0].values()))["label"]
        l_runs = [r["llama.cpp"] for r in rounds if "llama.cpp" in r]
        k_runs = [r["kiln"] for r in rounds if "kiln" in r]
        model = {}
        for r in l_runs:
            info = info or load_tests(r["json"])[1]
            model = model or load_tests(r["json"])[1]
        l_rss = max((peak_rss_kib(r["time"]) or 0 for r in l_runs), default=0)
        k_rss = max((peak_rss_kib(r["time"]) or 0 for r in k_runs), default=0)
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
            per_round = []  # (llama.cpp (avg, sd), kiln (avg, sd)) of the rounds where both ran
            for r in rounds:
                lt = load_tests(r["llama.cpp"]["json"])[0].get(test) if "llama.cpp" in r else None
                kt = load_tests(r["kiln"]["json"])[0].get(test) if "kiln" in r else None
                per_round.append((lt, kt))
            both = [(lt, kt) for lt, kt in per_round if lt and kt and lt[0] > 0]
            ratios = [kt[0] / lt[0] for lt, kt in both]
            if ratios:
                med = statistics.median(ratios)
                ratio = f"**{med:.2f}** {mark(med >= target)}"
            else:
                ratio = "–"
            l_pooled, k_pooled = pooled([lt for lt, _ in per_round]), pooled([kt for _, kt in per_round])
            line = f"| {label} | {threads} | {name} | {fmt_ts(l_pooled)} | {fmt_ts(k_pooled)} | {ratio} | {rss} |"
            if probes:
                limits = probes.get(threads)
                line += f" {share(l_pooled, test, model, limits)} | {share(k_pooled, test, model, limits)} |"
            if n_rounds > 1:
                line += " " + " ".join(f"{x:.2f}" for x in ratios) + " |"
            lines.append(line)

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
        f"{a.reps} repetition{'s' if a.reps != 1 else ''} per test, mean ± sd"
        + (f"; {n_rounds} rounds (llama.cpp then kiln, model by model, each round): t/s is the mean "
           "of the rounds ± their sd, the ratio the median of the rounds' ratios." if n_rounds > 1 else "."),
        "",
        *lines,
        *busy_line,
        *([""] + [f"Limits measured by `kiln bench --probe -t {t}`: memory read {g:.1f} GB/s, int8 multiply-adds "
                  f"{m or 0:.0f} G/s. Generation's share is weight bytes read per second against the first "
                  "(llama-bench's model_size per token), prompt processing's is multiply-adds per second (one "
                  "per parameter and token) against the second." for t, (g, m) in sorted(probes.items())]
          if probes else []),
        "",
        f"Targets (issue 3): tg ≥ {TARGET_TG:.2f}×, pp ≥ {TARGET_PP:.2f}×, peak RSS ≤ {TARGET_RSS:.2f}× "
        "llama.cpp's (✓ met, ✗ not). Peak RSS is the whole process (`/usr/bin/time -v`), both tests "
        "included. Absolute tokens/s on a shared machine are noise; the ratios come from the same run.",
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
