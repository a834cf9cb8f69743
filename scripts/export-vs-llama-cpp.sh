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
# and prompt, then a summary. Two engines that round differently may part where the model
# hesitates: a continuation that parts where kiln's top two tokens are under 0.1 nats apart
# counts as a tie; any other difference makes the script exit 1.
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
ties=0
differ=0

# Where kiln's greedy tokens (with their top-two log-probabilities, `kiln run --logprobs 2` on
# stderr, file $1) stop spelling llama.cpp's continuation (file $2): prints the token index and
# kiln's gap between its top two there. A gap under 0.1 nats is a tie that rounding decides
# (the tolerance of crates/kiln-model/tests/llama_cpp_greedy.rs).
first_difference() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
# GPT-2's byte-level alphabet, inverted: piece characters back to bytes.
printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
table, extra = {}, 0
for b in range(256):
    if b in printable:
        table[chr(b)] = b
    else:
        table[chr(256 + extra)] = b
        extra += 1
def piece_bytes(p):
    if all(c in table for c in p):
        return bytes(table[c] for c in p)
    m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", p)
    return bytes([int(m[1], 16)]) if m else p.replace("\u2581", " ").encode()
line = re.compile(r'^\[\d+ \S+\] ("(?:[^"\\]|\\.)*") ([^,\s]+)(?:, "(?:[^"\\]|\\.)*" ([^,\s]+))?')
tokens = [m for m in map(line.match, open(sys.argv[1], encoding="utf-8")) if m]
theirs = open(sys.argv[2], "rb").read()
spelled = b""
for i, m in enumerate(tokens):
    spelled += piece_bytes(json.loads(m[1]))
    if not theirs.startswith(spelled):
        gap = float(m[2]) - float(m[3]) if m[3] else float("inf")
        print(f"{i} {gap:.3f}")
        break
else:
    print("none")
PY
}

# Compares kiln's and llama.cpp's greedy continuation of every prompt with model $1.
compare() {
    local model=$1 label=$2 prompt ours theirs where
    for prompt in "${PROMPTS[@]}"; do
        ours=$("$kiln" run --raw --temp 0 -n $N --logprobs 2 --model "$model" "$prompt" 2>"$work/kiln.err")
        theirs=$("$bin/llama-simple" -m "$model" -n $N "$prompt" 2>/dev/null)
        # llama-simple echoes the prompt, after the BOS token's text when BOS is a control token.
        theirs=${theirs#*"$prompt"}
        if [[ $ours == "$theirs" ]]; then
            same=$((same + 1))
            printf 'same    %-24s %-16s %q\n' "$label" "$prompt" "${ours:0:60}"
            continue
        fi
        printf '%s' "$theirs" >"$work/llama.out"
        read -r index gap < <(first_difference "$work/kiln.err" "$work/llama.out")
        if [[ $index != none ]] && awk "BEGIN { exit !($gap < 0.1) }"; then
            ties=$((ties + 1))
            where="tie at token $index (kiln's top two $gap nats apart)"
        else
            differ=$((differ + 1))
            where="DIFFERS at token $index (gap ${gap:-?})"
        fi
        printf '%-7s %-24s %-16s %s\n  kiln:      %q\n  llama.cpp: %q\n' "${where%% *}" "$label" "$prompt" \
            "$where" "$ours" "$theirs"
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

echo "$same continuations the same, $ties parted at a tie, $differ different"
[[ $differ == 0 ]]
