#!/usr/bin/env bash
# Records llama-perplexity --hellaswag on SmolLM2 (400 tasks, per-task right/wrong) into
# tests/fixtures/eval/hellaswag-llama-cpp-smollm2.json, which kiln-eval's tests compare with.
# Needs llama.cpp (scripts/llama-cpp.sh builds it) and HellaSwag (`kiln data pull hellaswag`, or
# the mirror beside the checkout, ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${LLAMA_CPP_BIN:-$(scripts/llama-cpp.sh)}"
MODEL="${KILN_SMOLLM2_GGUF:-${KILN_HOME:-$HOME/.cache/kiln}/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
DATA="${KILN_HOME:-$HOME/.cache/kiln}/data/eval/hellaswag_val_full.txt.bz2"
[ -f "$DATA" ] || DATA=../shared/data/eval/hellaswag_val_full.txt.bz2
bzip2 -dc "$DATA" > "$TMP/hellaswag_val_full.txt"
"$BIN/llama-perplexity" -m "$MODEL" -f "$TMP/hellaswag_val_full.txt" --hellaswag --hellaswag-tasks 400 -t 1 > "$TMP/out.txt" 2> "$TMP/err.txt"
python3 - "$TMP/out.txt" "$MODEL" > tests/fixtures/eval/hellaswag-llama-cpp-smollm2.json <<'PY'
import hashlib, json, re, sys
hits, prev, last = [], 0, 0.0
for line in open(sys.argv[1]):
    m = re.match(r'^(\d+)\t([\d.]+)%\t', line)
    if m:
        i, acc = int(m.group(1)), float(m.group(2))
        h = round(acc * i / 100)  # llama.cpp prints the running accuracy; recover each task's hit
        hits.append(h - prev)
        prev, last = h, acc
sha = hashlib.sha256(open(sys.argv[2], 'rb').read()).hexdigest()
json.dump({"command": "llama-perplexity -m SmolLM2-135M-Instruct.Q4_1.gguf -f hellaswag_val_full.txt --hellaswag --hellaswag-tasks 400 -t 1 (llama.cpp vendored in llama_cpp_python 0.3.36; scripts/eval-hellaswag-fixture.sh)",
           "model_sha256": sha, "tasks": len(hits), "acc_norm_percent": last,
           "correct": "".join(map(str, hits))}, sys.stdout, indent=1)
PY
