#!/usr/bin/env bash
# Runs the official openai Python client against `kiln serve` with the default model.
# Usage (from the repo root): bash tests/openai/run.sh   (needs ./target/release/kiln built)
set -euo pipefail
cd "$(dirname "$0")/../.."

# The client lives in a virtual environment: a stock Debian Python refuses system-wide pip
# installs (PEP 668).
venv=${KILN_TEST_VENV:-$PWD/target/py-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore openai
fi

log=$(mktemp)
./target/release/kiln serve --port 0 --parallel 2 --ctx 2048 2>"$log" &
server=$!
# (|| true: under set -e a failing command in the trap would become the script's status)
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
    grep -q "listening on" "$log" && break
    kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
url=$(grep -o "http://[0-9.:]*" "$log" | head -1)
[ -n "$url" ] || { echo "kiln serve did not start:"; cat "$log"; exit 1; }
"$venv/bin/python" tests/openai/client_test.py "$url/v1"
