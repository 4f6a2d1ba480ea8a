#!/usr/bin/env bash
# The main job's set-up (examples/demo.sh runs it): only what injecting a fault needs, namely
# blade-go's Python dependencies, blade-go itself (pip install -e this checkout) and dlv
# (build/dlv.sh). One line per step on stdout; a step's own output (pip, go) is kept and shown
# only when the step fails. Idempotent: about a second once everything is there.
# The tests' installer, .ci/install.sh, stays the complete one (toolchain matrix, chaosblade...).
# Needs: Python 3 with pip, and Go (/usr/local/go) only when dlv must be built.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1

t0=$(date +%s%N)
say() { printf '[setup] %-10s %s (%.1f s)\n' "$1" "$2" "$(( $(date +%s%N) - t0 ))e-9"; }
logs="$(mktemp -d)"
dlv_pid=
# On a failure the dlv build still running is ended with its children (go), all of them.
trap '[ -z "$dlv_pid" ] || kill -- "-$dlv_pid" 2>/dev/null || kill "$dlv_pid" 2>/dev/null || true
      rm -rf "$logs"' EXIT
# Run "$@" with its output kept in $logs/$1.log; on failure show it and stop.
quiet() {
  local name="$1"; shift
  if ! "$@" >"$logs/$name.log" 2>&1; then
    cat "$logs/$name.log" >&2
    echo "[setup] $name failed: $*" >&2
    exit 1
  fi
}

# dlv takes longest when it must be built: start it now, beside the Python steps (in a
# process group of its own, which the trap can end as a whole).
setsid=$(command -v setsid || true)
$setsid bash "$REPO/build/dlv.sh" >"$logs/dlv.out" 2>"$logs/dlv.log" &
dlv_pid=$!

# blade-go's dependencies, and what installing it needs (setuptools and wheel: installed here
# once, the editable install below builds without an isolated environment of its own).
if "$PY" -c "import yaml, requests, elftools, click, iced_x86, setuptools, wheel" 2>/dev/null; then
  say python "dependencies present"
else
  quiet python "$PY" -m pip install -q pyyaml requests pyelftools click iced-x86 \
    'setuptools>=62.3' wheel
  say python "dependencies installed"
fi

where="$(cd / && "$PY" -c 'import blade_go, os; print(os.path.dirname(os.path.dirname(os.path.abspath(blade_go.__file__))))' 2>/dev/null || true)"
scripts="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if [ "$where" = "$REPO" ] && [ -x "$scripts/blade-go" ]; then
  say blade-go "installed from $REPO"
else
  quiet blade-go "$PY" -m pip install -q --no-build-isolation --no-deps -e "$REPO"
  say blade-go "pip install -e $REPO"
fi

if ! wait "$dlv_pid"; then
  dlv_pid=
  cat "$logs/dlv.log" >&2
  echo "[setup] dlv failed: build/dlv.sh" >&2
  exit 1
fi
dlv_pid=
dlv="$(cat "$logs/dlv.out")"
say dlv "$dlv ($("$dlv" version 2>/dev/null | sed -n 's/^Version: //p'))"
