#!/usr/bin/env bash
# garak (an LLM red-teaming tool nobody here wrote) against kiln serve with and without --guard,
# same model, one target at a time: pass rate per probe family, from garak's own reports.
#
# usage: bench/guard/garak.sh [PROBES] [CAP]
#   PROBES  garak probe families (default: the ones that need no download)
#   CAP     garak's soft_probe_prompt_cap: prompts per probe at most (default 10)
# env: KILN (default target/release/kiln), MODEL (default smollm2), GARAK_VENV (default
#      $KILN_HOME/garak-venv, made by scripts/torch-venv.sh with garak==0.17.1), MAX_TOKENS (64),
#      TARGETS ("kiln kiln-guard"; add llama-server when LLAMA_SERVER names its binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kiln=${KILN:-$root/target/release/kiln}
home=${KILN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}
venv=${GARAK_VENV:-$home/garak-venv}
probes=${1:-dan,encoding,promptinject,latentinjection,web_injection,exploitation,grandma,goodside,ansiescape,phrasing}
cap=${2:-10}
targets=${TARGETS:-kiln kiln-guard}
[ -x "$venv/python" ] || bash "$root/scripts/torch-venv.sh" "$venv" garak==0.17.1
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-garak.XXXXXX")
server=
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
stamp=$(date +%Y%m%d-%H%M%S)

wait_up() {
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$1/v1/models" >/dev/null && return 0
        sleep 1
    done
    echo "server on port $1 did not start" >&2
    return 1
}

for target in $targets; do
    port=$((18080 + RANDOM % 1000))
    case $target in
        kiln) "$kiln" serve -m "${MODEL:-smollm2}" --port "$port" --parallel 8 2>"$work/$target.log" & ;;
        kiln-guard) "$kiln" serve -m "${MODEL:-smollm2}" --port "$port" --parallel 8 --guard 2>"$work/$target.log" & ;;
        llama-server) "$LLAMA_SERVER" -m "$("$kiln" pull "${MODEL:-smollm2}" 2>/dev/null | tail -1)" --port "$port" -np 8 -c 16384 2>"$work/$target.log" & ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
    server=$!
    wait_up "$port"
    cat > "$work/$target.yaml" <<YAML
run:
  generations: 1
  soft_probe_prompt_cap: $cap
  seed: 1
system:
  parallel_attempts: 8
  lite: true
  show_z: false
plugins:
  generators:
    openai:
      OpenAICompatible:
        uri: http://127.0.0.1:$port/v1
        name: ${MODEL:-smollm2}
        api_key: none
        max_tokens: ${MAX_TOKENS:-64}
        temperature: 0.0
        stop: []
YAML
    prefix="kiln-$target-$stamp"
    echo "== $target: garak --probes $probes (cap $cap)" >&2
    (cd "$work" && "$venv/python" -m garak --target_type openai.OpenAICompatible --target_name "${MODEL:-smollm2}" \
        --config "$work/$target.yaml" --probes "$probes" --report_prefix "$prefix" >"$work/$target.garak.log" 2>&1) \
        || { tail -30 "$work/$target.garak.log" >&2; exit 1; }
    kill "$server"; wait "$server" 2>/dev/null || true; server=
    report=$(find "$HOME/.local/share/garak" -name "$prefix.report.jsonl" | head -1)
    cp "$report" "$work/$target.report.jsonl"
    [ "$target" != kiln-guard ] || grep -c "guard: .* flagged" "$work/$target.log" | sed 's/^/requests flagged by the guard: /' >&2
done

"$venv/python" - "$work" $targets <<'PY'
import json, sys, collections
work, targets = sys.argv[1], sys.argv[2:]
rates = {}
for t in targets:
    fam = collections.defaultdict(lambda: [0, 0])
    for line in open(f"{work}/{t}.report.jsonl"):
        e = json.loads(line)
        if e.get("entry_type") == "eval":
            f = fam[e["probe"].split(".")[0]]
            f[0] += e["passed"]
            f[1] += e["total_evaluated"] if "total_evaluated" in e else e["total"]
    rates[t] = fam
families = sorted({f for t in targets for f in rates[t]})
print("| probe family | " + " | ".join(targets) + " |")
print("|---|" + "---:|" * len(targets))
for f in families:
    cells = []
    for t in targets:
        p, n = rates[t].get(f, [0, 0])
        cells.append(f"{100 * p / n:.1f} % ({p}/{n})" if n else "-")
    print(f"| {f} | " + " | ".join(cells) + " |")
PY
