#!/usr/bin/env bash
# Prints the absolute path of the dlv blade-go is tested with, building it first when needed.
# Quiet on success (only the path on stdout); on failure the build's output goes to stderr.
#
#   build/delve/build.sh, when present: the patched dlv (cached) it prints.
#   else: stock delve $DLV_VERSION (build/toolchains.env), `go install`ed into $TOOLS_DIR/bin,
#         where .ci/install.sh puts it too (so either script finds the other's build).
# Used by build/setup.sh (the demo's set-up) and by setup.py (the dlv bundled in the wheel).
# Needs Go (/usr/local/go, else `go` on PATH) only when something must be built.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=toolchains.env
source "$REPO/build/toolchains.env"
TOOLS_DIR="${BLADE_GO_TOOLS_DIR:-$TOOLS_DIR}"

if [ -f "$REPO/build/delve/build.sh" ]; then
  exec bash "$REPO/build/delve/build.sh"
fi

dlv="$TOOLS_DIR/bin/dlv"
want="${DLV_VERSION#v}"
if [ -x "$dlv" ] && [ "$("$dlv" version 2>/dev/null | sed -n 's/^Version: //p')" = "$want" ]; then
  echo "$dlv"; exit 0
fi
go=/usr/local/go/bin/go
[ -x "$go" ] || go="$(command -v go || true)"
[ -n "$go" ] || { echo "build/dlv.sh: no Go toolchain (/usr/local/go or go on PATH) to build dlv $want" >&2; exit 1; }
mkdir -p "$TOOLS_DIR/bin"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOBIN="$TOOLS_DIR/bin" \
     "$go" install "github.com/go-delve/delve/cmd/dlv@$DLV_VERSION" >"$log" 2>&1; then
  cat "$log" >&2
  echo "build/dlv.sh: go install github.com/go-delve/delve/cmd/dlv@$DLV_VERSION failed" >&2
  exit 1
fi
echo "$dlv"
