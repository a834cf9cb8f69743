#!/usr/bin/env bash
# Models trained by `kiln train` load in Hugging Face transformers (LlamaForCausalLM,
# Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM) and give kiln's logits: for each
# family, trains a tiny model on the Shakespeare text, greedy-decodes with `kiln run` (printing
# each token's log-probability), and has transformers score the same tokens.
# Usage (from the repo root): bash tests/transformers/run.sh   (needs ./target/release/kiln)
# env: TORCH_VENV (default target/torch-venv; made by scripts/torch-venv.sh on first use)
set -euo pipefail
cd "$(dirname "$0")/../.."
kiln=$PWD/target/release/kiln
venv=${TORCH_VENV:-$PWD/target/torch-venv}
work=$PWD/target/transformers-check
# Tiny Shakespeare from the data mirror beside the checkout or kiln's data cache; without
# either, the prose fixture written for kiln's tests (any English text does for this check).
data=
for d in "${KILN_DATA:-}" "$PWD/../shared/data" "${KILN_HOME:-$HOME/.cache/kiln}/data"; do
    [ -n "$d" ] && [ -f "$d/pretrain/tinyshakespeare.txt" ] && { data=$d/pretrain/tinyshakespeare.txt; break; }
done
if [ -n "$data" ]; then
    prompt=$'ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\n'
fi

bash scripts/torch-venv.sh "$venv" transformers >/dev/null
rm -rf "$work"
mkdir -p "$work"
if [ -z "$data" ]; then
    fixture=tests/fixtures/text/potters-year.txt
    echo "(no Tiny Shakespeare here: training on $fixture, repeated to 200 KB)"
    data=$work/corpus.txt
    for _ in $(seq 25); do cat "$fixture"; done > "$data"
    prompt=$'The kiln stood at the end of the lane, and the potter'
fi
"$kiln" tokenizer train --data "$data" --vocab 512 --out "$work/tok" >/dev/null
# Gemma's sliding window is half the context (32 of 64 here), so the 32 generated tokens after
# the prompt run past it and the check covers the window's edge.
for family in llama qwen2 qwen3 gemma3; do
    "$kiln" -t 2 train --family "$family" --data "$data" --tokenizer "$work/tok" --preset nano --steps 200 \
        --lr 1e-2 --eval-every 0 --sample-every 0 --out "$work/$family" -q >"$work/train.log" 2>&1 \
        || { cat "$work/train.log"; exit 1; }
    "$kiln" -t 2 run --model "$work/$family" --raw --temp 0 -n 32 --logprobs 1 "$prompt" \
        >"$work/$family.out" 2>"$work/$family.err"
    HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error "$venv/python" tests/transformers/check.py \
        "$work/$family/model" "$prompt" "$work/$family.err"
done
