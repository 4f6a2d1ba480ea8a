"""Run arm64 code changes for real: patches written into a copy of an executable, run under
qemu-user (H2's placement/return tests; the general stub tier is arm64_stubtier.py).

A non-PIE Go executable loads at its file's virtual addresses, so a patch for runtime address
A goes to the file offset of A in its PT_LOAD segment. Only bytes inside a segment's file image
are written (the header cave, functions); anything else is refused here.
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


def file_offset(elf_path, vaddr: int, size: int) -> int:
    from elftools.elf.elffile import ELFFile
    with open(elf_path, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            lo = seg["p_vaddr"]
            if lo <= vaddr and vaddr + size <= lo + seg["p_filesz"]:
                return vaddr - lo + seg["p_offset"]
    raise ValueError(f"{vaddr:#x}+{size} is not inside a loaded segment's file bytes")


def patched_copy(src, dst, patches: Iterable[Tuple[int, bytes, bytes]]) -> Path:
    """Copy `src` to `dst` and write each (addr, original, replacement); the file must hold
    `original` there first (the same check the session makes on the live process)."""
    dst = Path(dst)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755)
    with open(dst, "r+b") as f:
        for addr, original, replacement in patches:
            off = file_offset(src, addr, len(replacement))
            f.seek(off)
            now = f.read(len(replacement))
            assert original is None or now == original[:len(replacement)], \
                f"{addr:#x}: file holds {now.hex()}, patch expected {original.hex()}"
            f.seek(off)
            f.write(replacement)
    return dst


def run(path, *args, timeout: float = 60, env=None, input: str = "") -> subprocess.CompletedProcess:
    """The program under qemu-user's arm64 CPU model; stdin gets `input` (then EOF)."""
    return subprocess.run([qemu(), "-cpu", QEMU_CPU, str(path), *args], capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})},
                          input=input.encode())
