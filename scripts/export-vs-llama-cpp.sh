#!/usr/bin/env bash
# Models kiln trains, exported to GGUF, continue a prompt in llama.cpp exactly as in kiln.
#
# For each family kiln trains from scratch (llama, qwen2, qwen3, gemma3) it trains a small
# model (the micro preset, 300 steps) on Tiny Shakespeare, exports it as f32 and q8_0 GGUF and compares the greedy
# continuations of a few prompts in `kiln run --raw --temp 0` and in llama.cpp's
# `llama-simple` (greedy). With --gemma it also fine-tunes Gemma 3 270M with LoRA on 128 short
# Alpaca rows (about 9 minutes and 13 GB on 2 cores) and checks its export the same way.
#
# Usage: scripts/export-vs-llama-cpp.sh [--gemma] [WORKDIR]
# WORKDIR defaults to a temporary directory, removed at the end. Prints one line per model
# and prompt, then a summary; exits 1 when a continuation differs.
set -euo pipefail

gemma=0
if [[ ${1:-} == --gemma ]]; then
    gemma=1
    shift
fi
root=$(cd "$(dirname "$0")/.." && pwd)
kiln="$root/target/release/kiln"
[[ -x $kiln ]] || { echo "build kiln first: cargo build --release" >&2; exit 2; }
bin=$("$root/scripts/llama-cpp.sh")
work=${1:-$(mktemp -d)}
[[ -n ${1:-} ]] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
export KILN_DATA_MIRROR=${KILN_DATA_MIRROR:-$root/../shared/data}

N=32
PROMPTS=("ROMEO:" "First Citizen:" "To be, or not")
same=0
differ=0

# Compares kiln's and llama.cpp's greedy continuation of every prompt with model $1.
compare() {
    local model=$1 label=$2 prompt ours theirs
    for prompt in "${PROMPTS[@]}"; do
        ours=$("$kiln" run --raw --temp 0 -n $N --model "$model" "$prompt" 2>/dev/null)
        theirs=$("$bin/llama-simple" -m "$model" -n $N "$prompt" 2>/dev/null)
        # llama-simple echoes the prompt, after the BOS token's text when BOS is a control token.
        theirs=${theirs#*"$prompt"}
        if [[ $ours == "$theirs" ]]; then
            same=$((same + 1))
            printf 'same    %-24s %-16s %q\n' "$label" "$prompt" "${ours:0:60}"
        else
            differ=$((differ + 1))
            printf 'DIFFERS %-24s %-16s\n  kiln:      %q\n  llama.cpp: %q\n' "$label" "$prompt" "$ours" "$theirs"
        fi
    done
}

corpus=$("$kiln" data path tinyshakespeare 2>/dev/null | head -1)
"$kiln" tokenizer train --data "$corpus" --vocab 2048 --out "$work/tok" >/dev/null
for family in llama qwen2 qwen3 gemma3; do
    "$kiln" train -q --family "$family" --preset micro --steps 300 --seed 1 \
        --data "$corpus" --tokenizer "$work/tok" --out "$work/$family" >/dev/null
    for ty in f32 q8_0; do
        "$kiln" export --type $ty --model "$work/$family" --out "$work/$family-$ty.gguf" >/dev/null
        compare "$work/$family-$ty.gguf" "$family (trained) $ty"
    done
done

if [[ $gemma == 1 ]]; then
    alpaca=$("$kiln" data path alpaca 2>/dev/null | head -1)
    python3 - "$alpaca" "$work/alpaca_small.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
rows = sorted(rows, key=lambda r: len(r["instruction"]) + len(r.get("input", "")) + len(r["output"]))[:128]
json.dump(rows, open(sys.argv[2], "w"))
PY
    "$kiln" sft --model gemma3 --lora --data "$work/alpaca_small.json" --out "$work/g3sft" --steps 20 \
        --max-len 192 --val-rows 12 --batch-rows 4 --eval-every 5 --seed 1
    PROMPTS=("The capital of France is" "Write a haiku about rain." "1, 2, 3, 4,")
    "$kiln" export --type q8_0 --model "$work/g3sft" --out "$work/g3sft-q8_0.gguf" >/dev/null
    compare "$work/g3sft-q8_0.gguf" "gemma3 270M LoRA q8_0"
fi

echo "$same continuations the same, $differ different"
[[ $differ == 0 ]]
