#!/usr/bin/env bash
# kiln sft / kiln dpo against TRL (SFTTrainer / DPOTrainer, train_trl.py) on CPU: the same model
# weights, rows in the same order, batch, sequence lengths, LoRA settings, optimizer and schedule,
# the same thread count. Prints steps/s of both (1 / the median of steps 2..N, and steps 2..N over
# their total time), the ratio, the losses and peak RSS (/usr/bin/time), and writes
# target/bench/finetune-vs-trl.json.
#
# usage: bench/finetune-vs-trl/bench.sh [STEPS=10] [THREADS=2]
# env:   PYTHON     a python with torch, transformers, trl, peft (default python3; make one with
#                   scripts/torch-venv.sh DIR transformers trl peft, then PYTHON=DIR/python)
#        JOBS       default "sft-lora dpo-lora sft-full"
#        BATCH      conversations (SFT) / comparisons (DPO) per optimizer step, default 4
#        MAXLEN     longest sequence in tokens, default 256 (only rows that fit are used)
#        PREFS      DPO comparisons: hh (Anthropic HH harmless, default) or dpo_en_demo (LLaMA-Factory)
#        MODEL      a llama GGUF (default: kiln pull's default model), WORK (scratch, default /tmp/kiln-trl-bench)
# Needs target/release/kiln (cargo build --release -p kiln) and ../shared/data.
set -euo pipefail
steps=${1:-10}
threads=${2:-2}
jobs=${JOBS:-sft-lora dpo-lora sft-full}
batch=${BATCH:-4}
maxlen=${MAXLEN:-256}
prefs=${PREFS:-hh}
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/finetune-vs-trl
work=${WORK:-/tmp/kiln-trl-bench}
kiln=$root/target/release/kiln
python=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$work" "$root/target/bench"
gguf=${MODEL:-$("$kiln" pull)}
# Both frameworks start from this directory: the GGUF dequantized to f32 in Hugging Face layout.
[ -f "$work/model/model.safetensors" ] || "$kiln" export --model "$gguf" --format hf --out "$work/model"
rows=$((steps * batch))
"$python" "$here/make_data.py" --model "$work/model" --data "$root/../shared/data" --max-len "$maxlen" \
    --sft-rows "$rows" --dpo-rows "$rows" --prefs "$prefs" --out "$work/data"
# Timestamps each line kiln prints (the DPO reference pass is timed from them).
stamp='import sys, time
t = time.time()
for line in sys.stdin:
    print(f"[{time.time() - t:.3f}] {line}", end="", flush=True)'
uptime
results=()
for job in $jobs; do
    task=${job%%-*}
    run=$work/$job
    rm -rf "$run" "$run.log"
    flags=(--model "$work/model" --out "$run" --steps "$steps" --max-len "$maxlen" --val-rows 0
           --eval-every 0 --ckpt-every "$steps")
    case $job in
        *-lora) flags+=(--lora --lora-dropout 0) ;;
    esac
    case $task in
        sft) flags+=(--data "$work/data/sft.jsonl" --batch-rows "$batch") ;;
        dpo) flags+=(--data "$work/data/dpo.jsonl" --batch-pairs "$batch") ;;
    esac
    echo "== $job: kiln $task ${flags[*]}" >&2
    load_kiln=$(cut -d' ' -f1-3 /proc/loadavg)
    start=$(date +%s.%N)
    /usr/bin/time -f %M -o "$work/$job.kiln.rss" "$kiln" -t "$threads" "$task" "${flags[@]}" 2>&1 \
        | python3 -c "$stamp" > "$run.log"
    kiln_wall=$(echo "$(date +%s.%N) - $start" | bc)
    mv "$run.log" "$run/kiln.log"
    echo "== $job: TRL" >&2
    load_trl=$(cut -d' ' -f1-3 /proc/loadavg)
    start=$(date +%s.%N)
    json=$(/usr/bin/time -f %M -o "$work/$job.trl.rss" "$python" "$here/train_trl.py" "$task" "$run" --threads "$threads" 2>"$run/trl.log") \
        || { tail -20 "$run/trl.log" >&2; exit 1; }
    trl_wall=$(echo "$(date +%s.%N) - $start" | bc)
    results+=("$(python3 -c 'import json, sys
j = json.loads(sys.argv[1]); j["kiln"]["wall_s"] = float(sys.argv[2]); j["trl"]["wall_s"] = float(sys.argv[3])
j["kiln"]["loadavg_before"], j["trl"]["loadavg_before"] = sys.argv[5], sys.argv[6]
for side, path in (("kiln", sys.argv[7]), ("trl", sys.argv[8])):
    j[side]["peak_rss_mb"] = round(int(open(path).read().split()[-1]) / 1024)
j["job"] = sys.argv[4]; print(json.dumps(j))' "$json" "$kiln_wall" "$trl_wall" "$job" "$load_kiln" "$load_trl" \
        "$work/$job.kiln.rss" "$work/$job.trl.rss")")
    python3 - "${results[-1]}" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
k, t = j["kiln"], j["trl"]
mean = lambda xs: sum(xs) / len(xs)
print(f"{j['job']}: kiln {k['steps_per_s']:.3f} steps/s, trl {t['steps_per_s']:.3f} steps/s, ratio "
      f"{j['ratio']:.2f} (median step; over all steps {k['steps_per_s_mean']:.3f} vs {t['steps_per_s_mean']:.3f}, "
      f"{j['ratio_mean']:.2f}); loss after {j['steps']} steps kiln {k['losses'][-1]:.4f} vs trl {t['losses'][-1]:.4f} "
      f"(step 1: {k['losses'][0]:.4f} vs {t['losses'][0]:.4f}; mean of all steps {mean(k['losses']):.4f} vs "
      f"{mean(t['losses']):.4f})" + (f"; reference pass kiln {k['reference_pass_s']:.1f}s vs trl "
      f"{t['reference_pass_s']:.1f}s (not timed in steps/s)" if "reference_pass_s" in k else "") +
      f"; peak RSS kiln {k['peak_rss_mb']} MB vs trl {t['peak_rss_mb']} MB"
      f"; load average before kiln {k['loadavg_before']}, before trl {t['loadavg_before']}", flush=True)
PY
done
uptime
python3 - "$root/target/bench/finetune-vs-trl.json" "$(uptime)" "${results[@]}" <<'PY'
import json, sys
out = {"uptime_after": sys.argv[2], "jobs": [json.loads(r) for r in sys.argv[3:]]}
json.dump(out, open(sys.argv[1], "w"), indent=1)
print("wrote", sys.argv[1])
PY
