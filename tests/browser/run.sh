#!/usr/bin/env bash
# Headless-Chromium tests of the chat page served by `kiln serve` and of the labeling page of
# `kiln label`.
#
#   KILN_HOME=... bash tests/browser/run.sh        (from the repository root)
#
# Needs ./target/release/kiln (or KILN_BIN), a model in KILN_HOME (or KILN_MODEL, passed to
# `kiln serve -m`), node >= 18 with npm, and Chromium at /usr/bin/chromium (or CHROMIUM).
# With CI=true, a missing Chromium (or node) is installed with apt-get; otherwise the test
# is skipped (exit 0) when Chromium is missing.
#
# playwright-core is installed with npm into ${KILN_CACHE:-$HOME/.cache/kiln}/npm, outside
# the repository. The page is served from the working tree (KILN_CHAT_PAGE); set
# KILN_CHAT_PAGE= (empty) to test the page built into the binary instead.
# Screenshots go to ${KILN_ARTIFACTS:-target/artifacts}.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

KILN_BIN="${KILN_BIN:-$root/target/release/kiln}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
CACHE="${KILN_CACHE:-${HOME:-/tmp}/.cache/kiln}"
NPM_DIR="$CACHE/npm"
export KILN_ARTIFACTS="${KILN_ARTIFACTS:-$root/target/artifacts}"

log() { echo "browser test: $*" >&2; }
# A skip is recorded for .ci/run's closing list (KILN_SKIP_LOG), never silent.
skip() {
  log "SKIP: $*"
  [ -z "${KILN_SKIP_LOG:-}" ] || echo "tests/browser/run.sh: $*" >>"$KILN_SKIP_LOG"
  exit 0
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 1
  fi
}

apt_install() {
  command -v apt-get >/dev/null || return 1
  log "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# --- Chromium ---
if [ ! -x "$CHROMIUM" ] && [ "${CI:-}" = "true" ]; then
  apt_install chromium fonts-dejavu-core || log "could not install chromium"
fi
if [ ! -x "$CHROMIUM" ]; then
  if [ "${CI:-}" = "true" ]; then
    log "FAIL: no Chromium at $CHROMIUM and apt-get could not install it"
    exit 1
  fi
  skip "no Chromium at $CHROMIUM (install the chromium package, or set CHROMIUM=/path/to/chromium)"
fi

# --- node + npm ---
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "${CI:-}" = "true" ]; then apt_install nodejs npm || true; fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  skip "node and npm are needed (install nodejs and npm)"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  skip "node $(node --version) is too old, need >= 18"
fi

# --- playwright-core, pinned in package.json (Node 18 gets the last release that supports it) ---
pw_version="$(node -p "require('$here/package.json').dependencies['playwright-core']")"
if [ "$node_major" -lt 20 ]; then pw_version="1.60.0"; fi
have="$(node -p "try { require('$NPM_DIR/node_modules/playwright-core/package.json').version } catch { '' }" 2>/dev/null || true)"
if [ "$have" != "$pw_version" ]; then
  log "installing playwright-core@$pw_version into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  [ -f "$NPM_DIR/package.json" ] || echo '{ "name": "kiln-browser-test-deps", "private": true }' > "$NPM_DIR/package.json"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "playwright-core@$pw_version" >&2
fi
export PLAYWRIGHT_CORE_DIR="$NPM_DIR"

# --- kiln serve ---
if [ ! -x "$KILN_BIN" ]; then
  log "FAIL: no kiln binary at $KILN_BIN (build it with cargo build --release)"
  exit 1
fi
export KILN_CHAT_PAGE="${KILN_CHAT_PAGE-$root/crates/kiln-serve/assets/chat.html}"
server_log="$(mktemp "${TMPDIR:-/tmp}/kiln-serve.XXXXXX.log")"
model_args=()
if [ -n "${KILN_MODEL:-}" ]; then model_args=(-m "$KILN_MODEL"); fi
# the test talks to the API without a key
env -u KILN_API_KEY "$KILN_BIN" serve ${model_args[@]+"${model_args[@]}"} --port 0 --parallel 2 2>"$server_log" >&2 &
server_pid=$!
cleanup() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -f "$server_log"
}
trap cleanup EXIT

url=""
for _ in $(seq 1 600); do
  url="$(sed -n 's/.*listening on \(http:\/\/[^ ]*\).*/\1/p' "$server_log" | head -n1)"
  [ -n "$url" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "FAIL: kiln serve exited before listening:"
    cat "$server_log" >&2
    exit 1
  fi
  sleep 0.2
done
if [ -z "$url" ]; then
  log "FAIL: kiln serve did not print its address within 120 s:"
  cat "$server_log" >&2
  exit 1
fi
log "kiln serve at $url (page: ${KILN_CHAT_PAGE:-built in})"

status=0
KILN_URL="$url" CHROMIUM="$CHROMIUM" node "$here/chat_page.mjs" || status=$?
if [ "$status" != 0 ]; then
  log "server log:"
  tail -n 30 "$server_log" >&2
  exit "$status"
fi
cleanup

# --- kiln label: two prompts, the page, then the files it wrote ---
work="$(mktemp -d "${TMPDIR:-/tmp}/kiln-label.XXXXXX")"
printf '%s\n' '{"prompt": "What is the capital of France?"}' '{"messages": [{"role": "user", "content": "Name a fruit."}]}' >"$work/prompts.jsonl"
label_log="$work/label.log"
"$KILN_BIN" label ${model_args[@]+"${model_args[@]}"} --prompts "$work/prompts.jsonl" --out "$work/prefs.jsonl" \
  --port 0 --no-open --max-tokens 24 2>"$label_log" >&2 &
label_pid=$!
trap 'kill "$label_pid" 2>/dev/null || true; wait "$label_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
label_url=""
for _ in $(seq 1 600); do
  label_url="$(sed -n 's/.*labeling page at \(http:\/\/[^ ]*\).*/\1/p' "$label_log" | head -n1)"
  [ -n "$label_url" ] && break
  kill -0 "$label_pid" 2>/dev/null || { log "FAIL: kiln label exited:"; cat "$label_log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$label_url" ] || { log "FAIL: kiln label did not print its address"; cat "$label_log" >&2; exit 1; }
KILN_LABEL_URL="$label_url" CHROMIUM="$CHROMIUM" node "$here/label_page.mjs" || { tail -n 30 "$label_log" >&2; exit 1; }
# One A/B comparison in the preference file (readable by kiln dpo), the tie beside it, the
# written answer as a fine-tuning row.
python3 - "$work" <<'PY'
import json, sys
d = sys.argv[1]
rows = lambda name: [json.loads(l) for l in open(f"{d}/{name}") if l.strip()]
prefs, others, better = rows("prefs.jsonl"), rows("prefs.others.jsonl"), rows("prefs.better.jsonl")
assert len(prefs) == 1 and prefs[0]["label"] == "a" and prefs[0]["labeler"] == "ada", prefs
assert prefs[0]["chosen"][0]["role"] == "assistant" and prefs[0]["chosen"] != prefs[0]["rejected"], prefs
assert len(others) == 1 and others[0]["label"] == "tie", others
assert len(better) == 1 and better[0]["messages"][-1] == {"role": "assistant", "content": "Banana."}, better
print("label files: PASS")
PY
