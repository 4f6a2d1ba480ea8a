#!/usr/bin/env bash
# Runs experiment.json against a fresh examples/userservice and writes the journal.
# Needs: go, dlv (PATH or /opt/blade-go-tools/bin), and pip install 'blade-go[chaostoolkit]'
# (from a checkout: pip install -e '.[chaostoolkit]').
# Usage: examples/chaostoolkit/run.sh [JOURNAL_PATH]   (default: ./journal.json)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
journal="$(realpath -m "${1:-journal.json}")"
source "$repo/build/toolchains.env"
export PATH="$TOOLS_DIR/bin:$PATH"
work=$(mktemp -d)
trap 'kill "$svc" 2>/dev/null || true; rm -rf "$work"' EXIT

(cd "$repo/examples/userservice" && GOTOOLCHAIN=local go build -o "$work/userservice" .)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$work/userservice" -http "127.0.0.1:$port" >"$work/userservice.log" 2>&1 &
svc=$!
for _ in $(seq 50); do grep -q '^listening on' "$work/userservice.log" && break; sleep 0.1; done

# The experiment reads these through its `configuration` section.
export USERSERVICE_URL="http://127.0.0.1:$port" USERSERVICE_PID="$svc"
export BLADE_GO_HOME="${BLADE_GO_HOME:-$work/blade-go-home}"
cd "$work"
chaos --no-version-check --log-file "$work/chaostoolkit.log" \
  run --journal-path "$journal" "$here/experiment.json"
echo "journal: $journal"
