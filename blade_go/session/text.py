"""The executable file's bytes at a runtime address of the target, found through
/proc/PID/maps (the mapping's file offset), so no ELF parsing is needed for a few bytes; and
putting them back where a killed dlv left its breakpoint instruction."""
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


def breakpoint_instruction(pid: int) -> bytes:
    """dlv's software breakpoint in the target's architecture (int3 on amd64/386, BRK #0 on
    arm64), from its executable's ELF e_machine (stubs/select.py)."""
    from ..stubs.select import for_elf_machine
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            head = f.read(20)
        impl = for_elf_machine(int.from_bytes(head[18:20], "little"))
    except OSError:
        impl = None
    return impl.breakpoint if impl is not None else b"\xcc"


def repair_int3(client, pid: int, addrs, log):
    """An earlier dlv killed with SIGKILL leaves its breakpoint instruction (int3; BRK #0 on
    arm64) at these very addresses (dlv puts its internal breakpoints at the same places each
    time); the current dlv then saved it as the 'original' and wrote it back on clearing. Put
    the executable file's bytes back."""
    bp = breakpoint_instruction(pid)
    for addr in set(addrs):
        try:
            want = exe_bytes(pid, addr, len(bp))
            live = client.read_memory(addr, len(bp))
            if want is not None and live == bp and want != bp:
                client.write_memory(addr, want)
                log(f"removed a breakpoint left at {addr:#x} by an earlier, killed dlv")
        except Exception as e:
            log(f"cannot check {addr:#x} for a left breakpoint: {e}")
