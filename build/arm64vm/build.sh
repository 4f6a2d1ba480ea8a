#!/usr/bin/env bash
# Builds the arm64 virtual machine of the live tier (tests/test_arm64_live.py), cached:
#
#   bash build/arm64vm/build.sh      -> prints the image directory, holding
#        vmlinuz      Debian's arm64 kernel (linux-image-arm64), booted by qemu-system-aarch64
#        rootfs.cpio  the root file system as a newc cpio archive (the initramfs: no disk image,
#                     no kernel module needed), with python3, blade-go's Python dependencies,
#                     busybox and /init
#
# Everything comes from Debian's arm64 packages (bookworm, mmdebstrap's `extract` variant: the
# packages and their dependencies are unpacked, no maintainer script runs, so no binfmt_misc or
# qemu-user-static is needed; the few things those scripts would do are done below), plus the
# PyPI aarch64 wheels build/toolchains.env names (ARM64VM_WHEELS) unpacked into dist-packages.
# The run's own files (the repository, an arm64 dlv, arm64 test programs, the job) travel in a
# second small cpio that tests/support/arm64vm.py appends at every boot: the kernel unpacks
# concatenated archives in order. /init mounts /proc, /sys, /dev, brings up loopback, runs
# /job/run with the serial console as its terminal, prints `ARM64VM-EXIT <status>` and powers
# off. Without a /job/run it prints the status 127 and powers off (a bare boot test).
#
# stdout carries that one path and nothing else; progress and errors go to stderr (nothing on
# success; the build's output is kept in build.log beside the image and shown when it fails).
# The cache key is this script, ARM64VM_SUITE, ARM64VM_PACKAGES and ARM64VM_WHEELS; outputs live
# under $TOOLS_DIR/arm64vm/<key>/ (TOOLS_DIR from build/toolchains.env or $BLADE_GO_TOOLS_DIR).
# Needs root (mmdebstrap --mode=root, device nodes), mmdebstrap, cpio, pip and Debian's mirror.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../toolchains.env
source "$REPO/build/toolchains.env"
TOOLS_DIR="$(realpath -m "${BLADE_GO_TOOLS_DIR:-$TOOLS_DIR}")"
MIRROR="${BLADE_GO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

die() { echo "build/arm64vm/build.sh: $*" >&2; exit 1; }

KEY="$( { cat "$0"; echo "$ARM64VM_SUITE|$ARM64VM_PACKAGES|$ARM64VM_WHEELS"; } | sha256sum | cut -c1-12)"
OUT="$TOOLS_DIR/arm64vm/$KEY"
if [ -f "$OUT/.ok" ]; then echo "$OUT"; exit 0; fi

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, mknod)"
for tool in mmdebstrap cpio; do
  command -v "$tool" >/dev/null || die "$tool not found (bash .ci/install.sh installs it)"
done
mkdir -p "$TOOLS_DIR/arm64vm"
exec 9>"$TOOLS_DIR/arm64vm/.lock"
flock 9
if [ -f "$OUT/.ok" ]; then echo "$OUT"; exit 0; fi  # built while we waited

WORK="$OUT.partial"
rm -rf "$WORK" && mkdir -p "$WORK"
LOG="$WORK/build.log"
run() {  # a build step with its output in the log; the log's tail on failure
  if ! "$@" >>"$LOG" 2>&1; then
    echo "build/arm64vm/build.sh: failed: $*" >&2
    tail -40 "$LOG" >&2
    exit 1
  fi
}
ROOT="$WORK/root"

# 1. Debian's arm64 packages, unpacked.
run mmdebstrap --variant=extract --mode=root --architectures=arm64 --format=directory \
  --include="$ARM64VM_PACKAGES" "$ARM64VM_SUITE" "$ROOT" "$MIRROR"

# 2. The kernel out of /boot (an uncompressed arm64 Image in bookworm's package).
kernels=("$ROOT"/boot/vmlinuz-*-arm64)
[ "${#kernels[@]}" = 1 ] && [ -f "${kernels[0]}" ] || die "expected one vmlinuz in $ROOT/boot: ${kernels[*]}"
cp "${kernels[0]}" "$WORK/vmlinuz"
basename "${kernels[0]}" >"$WORK/kernel-version"

# 3. The wheels Debian lacks (or has older), unpacked where Debian's python3 looks.
mkdir -p "$WORK/wheels"
# shellcheck disable=SC2086  # ARM64VM_WHEELS is a list of requirement specifiers
run python3 -m pip download -q --no-deps --dest "$WORK/wheels" --only-binary=:all: \
  --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp $ARM64VM_WHEELS
site="$ROOT/usr/lib/python3/dist-packages"
[ -d "$site" ] || die "no $site in the root file system"
for whl in "$WORK"/wheels/*.whl; do
  run python3 -m zipfile -e "$whl" "$site"
done

# 4. What maintainer scripts and a real init system would have done, and what the VM does not
#    need: kernel modules (everything the VM uses is built in: PL011 serial, initramfs), docs.
rm -rf "$ROOT/lib/modules" "$ROOT/boot" "$ROOT/usr/share/doc" "$ROOT/usr/share/man" \
  "$ROOT/usr/share/info" "$ROOT/usr/share/locale" "$ROOT/var/cache/apt" "$ROOT/var/lib/apt/lists"
[ -e "$ROOT/bin/sh" ] || ln -s busybox "$ROOT/bin/sh"
mkdir -p "$ROOT"/{proc,sys,dev,tmp,run,root,etc,job}
chmod 1777 "$ROOT/tmp"
rm -f "$ROOT/dev/console" "$ROOT/dev/null"
mknod -m 600 "$ROOT/dev/console" c 5 1  # the kernel opens it for /init before /dev is mounted
mknod -m 666 "$ROOT/dev/null" c 1 3
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
printf '127.0.0.1 localhost arm64vm\n::1 localhost\n' >"$ROOT/etc/hosts"
echo arm64vm >"$ROOT/etc/hostname"
cat >"$ROOT/init" <<'INIT'
#!/bin/busybox sh
# PID 1 of blade-go's arm64 VM (build/arm64vm/build.sh): kernel file systems, loopback (dlv's
# JSON-RPC), then the run's job on the serial console, its status, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev 2>/dev/null
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
$bb mount -t tmpfs tmpfs /dev/shm
$bb ip link set lo up
$bb hostname arm64vm
if [ -x /job/run ]; then
  /job/run </dev/console >/dev/console 2>&1
  rc=$?
else
  rc=127
fi
echo "ARM64VM-EXIT $rc" >/dev/console
$bb sync
$bb poweroff -f
INIT
chmod 755 "$ROOT/init"
# python3 finds its modules without a cache; check the image's Python has what blade-go imports.
for mod in yaml requests elftools click capstone iced_x86; do
  ls -d "$site/$mod" "$site/$mod".* "$ROOT/usr/lib/python3.11/$mod" >/dev/null 2>&1 \
    || [ -n "$(ls -d "$site/$mod"* 2>/dev/null)" ] || die "$mod missing from the image"
done

# 5. The initramfs: newc cpio, owned by root.
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z \
   | cpio --null -o -H newc --owner=0:0 --quiet) >"$WORK/rootfs.cpio.tmp"
mv "$WORK/rootfs.cpio.tmp" "$WORK/rootfs.cpio"
rm -rf "$ROOT" "$WORK/wheels"

touch "$WORK/.ok"
rm -rf "$OUT" && mv "$WORK" "$OUT"
echo "$OUT"
