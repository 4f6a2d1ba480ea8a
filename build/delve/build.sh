#!/usr/bin/env bash
# Builds dlv from the pinned module source with blade-go's patch series (build/delve/patches),
# cached. The interface others rely on:
#
#   bash build/delve/build.sh            -> prints the absolute path of the patched dlv
#   bash build/delve/build.sh --stock    -> the same delve version without the patches
#   bash build/delve/build.sh --tests    -> the patched tree's directory, with delve's attach
#                                           test binaries built in it (tests/native.test,
#                                           tests/proc.test; run them from src/pkg/proc/...)
#   bash build/delve/build.sh --arm64    -> the patched dlv cross-built for linux/arm64
#                                           (CGO_ENABLED=0; the arm64 VM's dlv, tests/support/arm64vm.py)
#
# stdout carries that one absolute path and nothing else; progress and errors go to stderr
# (nothing on success: the build's own output is kept in build.log beside it and shown only
# when it fails); the exit status is non-zero on failure. The cache key is DLV_VERSION (from
# build/toolchains.env), the patch series' hash and the Go version; outputs live under
# $TOOLS_DIR/delve/<key>/ (TOOLS_DIR from build/toolchains.env, or $BLADE_GO_TOOLS_DIR).
# The patched dlv says what it is: `dlv version` prints `Build: blade-go-preload-<hash>`.
# Go: $BLADE_GO_GO, else /usr/local/go/bin/go, else `go` on PATH. Never fetches a toolchain.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../toolchains.env
source "$REPO/build/toolchains.env"
TOOLS_DIR="$(realpath -m "${BLADE_GO_TOOLS_DIR:-$TOOLS_DIR}")"

mode=patched
case "${1:-}" in
  "") ;;
  --stock) mode=stock ;;
  --tests) mode=tests ;;
  --arm64) mode=arm64 ;;
  -h|--help) sed -n '2,18p' "$0" >&2; exit 0 ;;
  *) echo "build.sh: unknown option $1 (--stock, --tests, --arm64)" >&2; exit 2 ;;
esac

die() { echo "build/delve/build.sh: $*" >&2; exit 1; }

GO="${BLADE_GO_GO:-/usr/local/go/bin/go}"
[ -x "$GO" ] || GO="$(command -v go || true)"
[ -n "$GO" ] || die "no Go toolchain (/usr/local/go/bin/go, BLADE_GO_GO or go on PATH)"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
GOVERSION="$("$GO" env GOVERSION)" || die "$GO env GOVERSION failed"

# The series' hash: the patch files' names and contents, in order (sha256, 12 hex digits).
PATCHES=("$HERE"/patches/*.patch)
[ -e "${PATCHES[0]}" ] || die "no patches in $HERE/patches"
PATCH_HASH="$(for p in "${PATCHES[@]}"; do basename "$p"; cat "$p"; done | sha256sum | cut -c1-12)"
BUILD_ID="blade-go-preload-$PATCH_HASH"

if [ "$mode" = stock ]; then
  KEY="$DLV_VERSION-$GOVERSION-stock"
else
  KEY="$DLV_VERSION-$GOVERSION-$PATCH_HASH"
fi
OUT="$TOOLS_DIR/delve/$KEY"
mkdir -p "$TOOLS_DIR/delve" || die "cannot create $TOOLS_DIR/delve"

# One build at a time per machine (two engineers, or CI and a test, may call this together).
exec 9>"$TOOLS_DIR/delve/.lock"
flock 9

LOG="$OUT.log"
run() {  # run a build step with its output in the log; show the log when it fails
  if ! "$@" >>"$LOG" 2>&1; then
    echo "build/delve/build.sh: failed: $*" >&2
    tail -40 "$LOG" >&2
    exit 1
  fi
}

# 1. The source tree: the module source, copied, with the patches applied (patched and tests).
src_tree() {
  local src="$OUT/src"
  [ -f "$src/.blade-go-tree-ok" ] && return 0
  : >"$LOG"
  local dir
  dir="$(cd / && "$GO" mod download -json "github.com/go-delve/delve@$DLV_VERSION" 2>>"$LOG" \
         | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" || true
  [ -n "$dir" ] && [ -d "$dir" ] || { tail -20 "$LOG" >&2; die "go mod download github.com/go-delve/delve@$DLV_VERSION failed"; }
  rm -rf "$OUT.partial" && mkdir -p "$OUT.partial"
  cp -r "$dir" "$OUT.partial/src" && chmod -R u+w "$OUT.partial/src"
  if [ "$mode" != stock ]; then
    local p
    for p in "${PATCHES[@]}"; do
      if command -v git >/dev/null 2>&1; then
        (cd "$OUT.partial/src" && run git apply --whitespace=nowarn "$p")
      else
        (cd "$OUT.partial/src" && run patch -p1 --forward --quiet -i "$p")
      fi
    done
  fi
  touch "$OUT.partial/src/.blade-go-tree-ok"
  rm -rf "$OUT" && mv "$OUT.partial" "$OUT"
}

# 2. dlv itself.
build_dlv() {
  local dlv="$OUT/bin/dlv"
  if [ -x "$dlv" ] && "$dlv" version >/dev/null 2>&1; then
    echo "$dlv"; return 0
  fi
  src_tree
  mkdir -p "$OUT/bin"
  local ldflags=()
  [ "$mode" = stock ] || ldflags=(-ldflags "-X main.Build=$BUILD_ID")
  (cd "$OUT/src" && run "$GO" build "${ldflags[@]}" -o "$OUT/bin/dlv.tmp" ./cmd/dlv)
  mv "$OUT/bin/dlv.tmp" "$dlv"
  "$dlv" version >/dev/null 2>&1 || die "$dlv does not run"
  echo "$dlv"
}

# 3. delve's attach tests, compiled once (go test -c keeps DWARF, which they need).
build_tests() {
  src_tree
  mkdir -p "$OUT/tests"
  local pkg name
  for pkg in native proc; do
    name="$OUT/tests/$pkg.test"
    [ -x "$name" ] && continue
    if [ "$pkg" = native ]; then
      (cd "$OUT/src" && run "$GO" test -c -o "$name.tmp" ./pkg/proc/native)
    else
      (cd "$OUT/src" && run "$GO" test -c -o "$name.tmp" ./pkg/proc)
    fi
    mv "$name.tmp" "$name"
  done
  echo "$OUT"
}

# 4. The patched dlv for linux/arm64, from the same tree (a pure-Go cross build: delve's linux
#    backend needs no cgo). `dlv version` cannot run here; the file's ELF machine is checked.
build_arm64() {
  local dlv="$OUT/bin-arm64/dlv"
  if [ -f "$dlv" ] && [ "$(od -An -tx1 -j18 -N2 "$dlv" | tr -d ' ')" = b700 ]; then
    echo "$dlv"; return 0
  fi
  src_tree
  mkdir -p "$OUT/bin-arm64"
  (cd "$OUT/src" && run env GOOS=linux GOARCH=arm64 CGO_ENABLED=0 \
     "$GO" build -ldflags "-X main.Build=$BUILD_ID" -o "$dlv.tmp" ./cmd/dlv)
  mv "$dlv.tmp" "$dlv"
  echo "$dlv"
}

case "$mode" in
  patched|stock) build_dlv ;;
  tests) build_tests ;;
  arm64) build_arm64 ;;
esac
