"""Run arm64 code changes for real: patches written into a copy of an executable, run under
qemu-user (H2's placement/return tests; the general stub tier is arm64_stubtier.py).

A non-PIE Go executable loads at its file's virtual addresses, so a patch for runtime address
A goes to the file offset of A in its PT_LOAD segment. A PIE (ET_DYN) loads at file address +
load bias: `load_bias(path)` reads where qemu-user puts it (AT_ENTRY from the gdbstub at the
first instruction, less e_entry; qemu 7.2 maps a Go PIE linked at 0x10000 there, bias 0, and
one linked at 0 at 0x5500000000), and `patched_copy(..., bias=)` writes runtime address A at
the file offset of A - bias. A PIE runs with the arm64 sysroot's ld.so (qemu -L). Only bytes
inside a segment's file image are written (the header cave, functions); anything else is
refused here.
"""
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Tuple

from .toolchains import missing

QEMU_CPU = "neoverse-n1"


def qemu() -> str:
    path = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if not path:
        missing("qemu-aarch64 (Debian qemu-user) is not installed")
    return path


SYSROOT = "/usr/aarch64-linux-gnu"  # Debian's libc6-arm64-cross: the ld.so a Go PIE names
AT_ENTRY = 9


def is_pie(path) -> bool:
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        return ELFFile(f)["e_type"] == "ET_DYN"


def qemu_args(path) -> list:
    """qemu's options for this executable: -L the arm64 sysroot for a PIE (its PT_INTERP)."""
    if not is_pie(path):
        return []
    if not os.path.exists(os.path.join(SYSROOT, "lib", "ld-linux-aarch64.so.1")):
        missing(f"{SYSROOT}/lib/ld-linux-aarch64.so.1 (apt-get install libc6-arm64-cross)")
    return ["-L", SYSROOT]


def load_bias(path) -> int:
    """Runtime address - file address of `path` under qemu-user (0 for ET_EXEC): read from the
    program's own auxv (AT_ENTRY) at its first instruction, never assumed."""
    from elftools.elf.elffile import ELFFile
    from .gdbstub import QemuGdb
    if not is_pie(path):
        return 0
    with open(path, "rb") as f:
        e_entry = ELFFile(f)["e_entry"]
    gdb = QemuGdb.start(qemu(), str(path), cpu=QEMU_CPU, qemu_args=qemu_args(path))
    try:
        return gdb.auxv()[AT_ENTRY] - e_entry
    finally:
        gdb.close()


def file_offset(elf_path, vaddr: int, size: int) -> int:
    from elftools.elf.elffile import ELFFile
    with open(elf_path, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            lo = seg["p_vaddr"]
            end = lo + seg["p_filesz"]
            if seg["p_memsz"] == seg["p_filesz"]:
                # the loader maps whole pages of the file: a text-end cave (past p_filesz, up
                # to the page end) is the file's bytes there (not so where .bss starts)
                end = (end + 0xFFF) & ~0xFFF
            if lo <= vaddr and vaddr + size <= end:
                return vaddr - lo + seg["p_offset"]
    raise ValueError(f"{vaddr:#x}+{size} is not inside a loaded segment's file bytes")


def patched_copy(src, dst, patches: Iterable[Tuple[int, bytes, bytes]], bias: int = 0) -> Path:
    """Copy `src` to `dst` and write each (addr, original, replacement) at runtime address
    addr (file address addr - bias); the file must hold `original` there first (the same check
    the session makes on the live process)."""
    dst = Path(dst)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755)
    with open(dst, "r+b") as f:
        for addr, original, replacement in patches:
            off = file_offset(src, addr - bias, len(replacement))
            f.seek(off)
            now = f.read(len(replacement))
            assert original is None or now == original[:len(replacement)], \
                f"{addr:#x}: file holds {now.hex()}, patch expected {original.hex()}"
            f.seek(off)
            f.write(replacement)
    return dst


def run(path, *args, timeout: float = 60, env=None, input: str = "") -> subprocess.CompletedProcess:
    """The program under qemu-user's arm64 CPU model; stdin gets `input` (then EOF)."""
    return subprocess.run([qemu(), "-cpu", QEMU_CPU, *qemu_args(path), str(path), *args],
                          capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})},
                          input=input.encode())
