#!/usr/bin/env bash
# blade-go demo: a running Go service's database query starts failing, then recovers.
# Installs only what it needs (build/setup.sh: Python deps, blade-go, dlv; one line per step),
# builds examples/userservice, and shows its output before, during and after a `return`
# experiment. PYTHON=/path/to/python picks the interpreter (and so the environment) used.
set -euo pipefail
cd "$(dirname "$0")/.."
bash build/setup.sh  # idempotent: about a second once everything is installed
PY="${PYTHON:-python3}"
export BLADE_GO_DLV="$(bash build/dlv.sh)"
export PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
work=$(mktemp -d)
trap 'kill "$svc" 2>/dev/null || true; rm -rf "$work"' EXIT

go=/usr/local/go/bin/go
[ -x "$go" ] || go=go
t0=$(date +%s%N)
(cd examples/userservice && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false "$go" build -o "$work/userservice" .)
printf '[setup] %-10s built (%.1f s)\n' userservice "$(( $(date +%s%N) - t0 ))e-9"
"$work/userservice" >"$work/out.log" 2>&1 &
svc=$!
section() { printf '\n== %s\n' "$1"; }
show_new() { sleep "$1"; tail -n +$(( ${shown:-0} + 1 )) "$work/out.log"; shown=$(wc -l <"$work/out.log"); }

section "before: the service answers normally"
show_new 3

section "create: blade-go create go return --pid $svc --func 'main.(*Store).GetUser' --value 'nil,error:db is down'"
out=$(blade-go create go return --pid "$svc" --func 'main.(*Store).GetUser' --value 'nil,error:db is down')
echo "$out"
uid=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["result"])' "$out")

section "during: every query fails with the injected error"
show_new 3

section "status"
blade-go status "$uid"

section "destroy: blade-go destroy $uid"
blade-go destroy "$uid"

section "after: the service is back to normal, its code byte for byte as shipped"
show_new 3
