"""The executable dlv is given: a copy without DWARF, so attaching does not stop the target for
as long as dlv takes to parse it.

dlv stops every thread of the target at attach and keeps them stopped while it loads the
binary's debug information (measured in docs/BENCHMARKS.md: the longest pause a client of the
target sees grows with the DWARF). blade-go reads DWARF itself, before attaching, and asks dlv
only for halts, threads' registers, memory reads, disassembly and (where it can) goroutines:
`dlv attach PID EXE` with a copy made by `objcopy --strip-debug` (same code and symbols, no
`.debug_*`) serves all of these but the goroutine list, whose absence the patcher handles for
actions whose code never calls out (see patching.goroutines_or_none).

The copy is made once per build (Go build ID, else GNU build ID, else size and mtime) under
$BLADE_GO_HOME/exe-cache and reused by every later session on any process of that build.
BLADE_GO_DLV_EXE chooses, for the supervisor about to start: `debugless` (set by actions whose
stubs never call out, e.g. return) or `full` (the default: dlv reads /proc/PID/exe and can list
goroutines, which actions leaving return addresses on stacks need).
"""
import hashlib
import os
import re
import shutil
import subprocess

MODE_ENV = "BLADE_GO_DLV_EXE"


def _build_key(exe_path: str) -> str | None:
    """A stable name for this build of the executable, or None if it has no DWARF to drop."""
    from elftools.elf.elffile import ELFFile
    with open(exe_path, "rb") as f:
        elf = ELFFile(f)
        names = {s.name for s in elf.iter_sections()}
        if not any(n.startswith((".debug_", ".zdebug_")) for n in names):
            return None
        for sec_name in (".note.go.buildid", ".note.gnu.build-id"):
            sec = elf.get_section_by_name(sec_name)
            if sec is not None:
                return hashlib.sha256(sec.data()).hexdigest()[:32]
    st = os.stat(exe_path)
    return hashlib.sha256(f"{exe_path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32]


def dlv_executable(pid: int, home: str, log=print) -> str | None:
    """Path of a debug-less copy of pid's executable for dlv, or None to let dlv read
    /proc/PID/exe (mode `full`, no DWARF to drop, objcopy missing or failing)."""
    if os.environ.get(MODE_ENV, "full") != "debugless":
        return None
    exe = f"/proc/{pid}/exe"
    try:
        key = _build_key(exe)
    except Exception as e:  # unreadable: dlv will say why
        log(f"debug-less copy: cannot read {exe}: {e}")
        return None
    if key is None:
        return None
    cache = os.path.join(home, "exe-cache")
    out = os.path.join(cache, key + ".nodebug")
    if os.path.exists(out):
        return out
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        log("debug-less copy: objcopy not found; dlv reads the full executable")
        return None
    os.makedirs(cache, mode=0o700, exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        subprocess.run([objcopy, "--strip-debug", exe, tmp], check=True, timeout=120,
                       capture_output=True)
        os.chmod(tmp, 0o500)
        os.replace(tmp, out)
        return out
    except (OSError, subprocess.SubprocessError) as e:
        log(f"debug-less copy failed ({e}); dlv reads the full executable")
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return None


def refused_without_debug(output: str) -> bool:
    """dlv before 1.21 refuses executables without DWARF: then attach with the real one."""
    return bool(re.search(r"could not (open|read|find).*debug|no debug info found.*\n.*error",
                          output, re.I | re.S)) and "API server listening" not in output
