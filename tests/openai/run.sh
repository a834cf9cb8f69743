#!/usr/bin/env bash
# Runs the official openai Python client against `kiln serve` with the default model.
# Usage (from the repo root): bash tests/openai/run.sh   (needs ./target/release/kiln built)
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! python3 -c "import openai" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check openai 2>&1 | grep -v "Running pip as the 'root' user" || true
fi

log=$(mktemp)
./target/release/kiln serve --port 0 --parallel 2 --ctx 2048 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
    grep -q "listening on" "$log" && break
    kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
url=$(grep -o "http://[0-9.:]*" "$log" | head -1)
[ -n "$url" ] || { echo "kiln serve did not start:"; cat "$log"; exit 1; }
python3 tests/openai/client_test.py "$url/v1"
