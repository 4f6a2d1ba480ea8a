"""The executable file's bytes at a runtime address of the target, found through
/proc/PID/maps (the mapping's file offset), so no ELF parsing is needed for a few bytes."""
import os


def exe_bytes(pid: int, addr: int, n: int) -> bytes | None:
    """Bytes of the target's executable file mapped at addr, or None when addr is not in a
    file-backed mapping of it (or the range runs past the mapping or the file)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or parts[5] != exe:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= addr and addr + n <= hi:
            try:
                with open(f"/proc/{pid}/exe", "rb") as exe_file:
                    exe_file.seek(int(parts[2], 16) + addr - lo)
                    data = exe_file.read(n)
            except OSError:
                return None
            return data if len(data) == n else None
    return None
