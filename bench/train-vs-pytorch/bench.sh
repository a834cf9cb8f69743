#!/usr/bin/env bash
# kiln train vs the PyTorch reference (train_torch.py): same architecture, config, batches and
# thread count on CPU. Prints tokens/s of both, the ratio, and the losses after N steps.
#
# usage: bench/train-vs-pytorch/bench.sh [PRESET=micro] [STEPS=100] [THREADS=2]
# env:   PYTHON (a python with torch; default python3), WORK (scratch dir), VOCAB (default 8192)
# Needs target/release/kiln (cargo build --release -p kiln; KILN=BINARY for another build) and
# Tiny Shakespeare (../shared/data, DATA=FILE, or `kiln data pull tinyshakespeare`).
set -euo pipefail
preset=${1:-micro}
steps=${2:-100}
threads=${3:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
kiln=${KILN:-$root/target/release/kiln}
# Tiny Shakespeare: DATA, else the mirror beside the checkout, else kiln's data cache (pulled).
data=${DATA:-$root/../shared/data/pretrain/tinyshakespeare.txt}
[ -f "$data" ] || data=$("$kiln" data path tinyshakespeare)
work=${WORK:-/tmp/kiln-train-bench}
vocab=${VOCAB:-8192}
python=${PYTHON:-python3}
mkdir -p "$work"
[ -f "$work/tok$vocab/tokenizer.json" ] || "$kiln" tokenizer train --data "$data" --vocab "$vocab" --out "$work/tok$vocab"
run=$work/$preset-$steps
rm -rf "$run"
"$kiln" -t "$threads" train --data "$data" --tokenizer "$work/tok$vocab" --preset "$preset" --out "$run" \
    --steps "$steps" --eval-every "$steps" --ckpt-every "$steps" --sample-every 0 -q >/dev/null
kiln_json=$(python3 - "$run" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
cfg = json.load(open(sys.argv[1] + "/train_config.json"))
t, mb = cfg["shape"]["context"], cfg["micro_batch"]
tokens = max(cfg["batch_tokens"] // (mb * t), 1) * mb * t
timed = rows[1:] or rows
secs = sum(tokens / r["tokens_per_s"] for r in timed)
last = [r["loss"] for r in rows[-10:]]
print(json.dumps({"framework": "kiln", "steps": len(rows), "tokens_per_s": round(tokens * len(timed) / secs, 1),
                  "final_loss_mean10": sum(last) / len(last), "val_loss": rows[-1].get("val_loss")}))
PY
)
torch_json=$("$python" "$root/bench/train-vs-pytorch/train_torch.py" "$run" --steps "$steps" --threads "$threads")
echo "$kiln_json"
echo "$torch_json"
python3 - "$kiln_json" "$torch_json" "$preset" <<'PY'
import json, sys
k, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{sys.argv[3]}: kiln {k['tokens_per_s']:.0f} tok/s, pytorch {p['tokens_per_s']:.0f} tok/s, "
      f"ratio {k['tokens_per_s'] / p['tokens_per_s']:.2f}; loss (mean of last 10 steps) kiln "
      f"{k['final_loss_mean10']:.4f} vs pytorch {p['final_loss_mean10']:.4f} "
      f"({100 * (k['final_loss_mean10'] / p['final_loss_mean10'] - 1):+.1f}%), "
      f"val loss {k['val_loss']:.4f} vs {p['val_loss']:.4f}")
PY
