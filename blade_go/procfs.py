"""The few /proc/PID/stat facts several layers need, parsed in one place.

Fields after the command name (which may itself contain spaces and parentheses) are split
from the last ')'.
"""


def _stat_fields(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def state(pid: int):
    """One-letter process state (R, S, T, Z, ...), or None when there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z", "X")


def start_time(pid: int):
    """Start time in clock ticks since boot: with the pid, it names one running process (pids
    are reused). None when there is no such process, or when it has exited and only its zombie
    waits for its parent: a zombie has no memory to restore or write and no /proc/PID/exe, so
    every caller treats it as gone (a destroy right after the target's exit must not fail)."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields and fields[0] not in ("Z", "X") else None
    except (IndexError, ValueError):
        return None


def zombie_exit_status(pid: int):
    """A zombie's exit status as its parent will see it (exit code, or -signal), from
    /proc/PID/stat's exit_code; None when pid is not a zombie (gone, reaped, or alive)."""
    fields = _stat_fields(pid)
    if not fields or fields[0] != "Z" or len(fields) < 50:
        return None
    try:
        code = int(fields[49])  # field 52 of proc(5); the list starts at field 3
    except ValueError:
        return None
    return -(code & 0x7F) if code & 0x7F else (code >> 8) & 0xFF


def exe_section_names(pid: int) -> set:
    """Section names of pid's executable, from its ELF section headers (standard library only:
    the supervisor checks its target before site-packages are loaded, session/standby.py).
    Raises FileNotFoundError for a process gone, ValueError for an unreadable ELF."""
    import struct
    with open(f"/proc/{pid}/exe", "rb") as f:
        ident = f.read(64)
        if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2):
            raise ValueError("not an ELF file")
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        # e_shoff, e_shentsize, e_shnum, e_shstrndx; per header: sh_name, sh_offset, sh_size
        shoff, (entsize, shnum, strndx) = (
            (struct.unpack_from(order + "Q", ident, 0x28)[0],
             struct.unpack_from(order + "3H", ident, 0x3A)) if wide else
            (struct.unpack_from(order + "I", ident, 0x20)[0],
             struct.unpack_from(order + "3H", ident, 0x2E)))
        hdr = order + ("I20xQQ" if wide else "I12xII")

        def header(i):
            f.seek(shoff + i * entsize)
            raw = f.read(entsize)
            if len(raw) < struct.calcsize(hdr):
                raise ValueError("section headers past the end of the file")
            return struct.unpack_from(hdr, raw)
        if shoff == 0:
            return set()
        if shnum == 0:  # more than 0xff00 sections: the count is in section 0's sh_size
            shnum = header(0)[2]
        if strndx == 0xFFFF:  # SHN_XINDEX: the index is in section 0's sh_link
            f.seek(shoff + (0x28 if wide else 0x18))
            strndx = struct.unpack(order + "I", f.read(4))[0]
        _, stroff, strsize = header(strndx)
        f.seek(stroff)
        table = f.read(strsize)
        names = set()
        for i in range(shnum):
            at = header(i)[0]
            names.add(table[at:table.find(b"\0", at)].decode("latin-1"))
        return names
