#!/usr/bin/env bash
# The SmolLM2 score table of the README: each task with its --limit, timed, results JSON in
# ${OUT:-target/eval-smollm2}/. Run from the repository root with ../shared beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=./target/release/kiln
MODEL="${MODEL:-smollm2}"
OUT="${OUT:-target/eval-smollm2}"
THREADS="${THREADS:-2}"
mkdir -p "$OUT"
run() { # name, then kiln eval arguments
    local name="$1"; shift
    local t0=$SECONDS
    "$KILN" eval -q -t "$THREADS" -m "$MODEL" --out "$OUT/$name.json" "$@"
    echo "  ($name: $((SECONDS - t0)) s wall)"
}
run hellaswag   --task hellaswag --limit 400
run mmlu        --task mmlu --limit 200
run mmlu_cloze  --task mmlu_cloze --limit 200
run arc         --task arc --limit 200
run truthfulqa  --task truthfulqa --limit 100
run ppl         --task ppl:../shared/data/eval/wikitext2_test.txt --limit 20
run gsm8k       --task gsm8k --limit 25
run humaneval   --task humaneval --limit 20
