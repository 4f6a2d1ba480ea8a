"""ELF basics for the inspector: header facts, lazy section access, bytes at a virtual address,
and the load bias of a running process.

Nothing here reads a whole file: pyelftools' ELFFile works over the open file object and
section bodies are read only when asked for.
"""
import os
from dataclasses import dataclass
from typing import Optional

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

from ..errors import BladeError, Code

PAGE = 0x1000  # page size on amd64, 386 and (default) arm64 Linux

# e_machine -> (GOARCH, pointer size, supported by blade-go)
MACHINES = {
    "EM_X86_64": ("amd64", 8, True),
    "EM_386": ("386", 4, True),
    "EM_AARCH64": ("arm64", 8, True),
}


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & P_FLAGS.PF_X)

    @property
    def page_start(self) -> int:
        return self.vaddr & ~(PAGE - 1)

    @property
    def mapped_end(self) -> int:
        """The kernel maps whole pages: the segment's last page is mapped (same permissions)
        up to its end, past p_memsz."""
        return (self.vaddr + self.memsz + PAGE - 1) & ~(PAGE - 1)


@dataclass(frozen=True)
class Section:
    name: str
    addr: int
    offset: int
    size: int
    type: str
    flags: int


class ElfImage:
    """An open ELF executable. Keeps the file open; `close()` when done."""

    def __init__(self, fileobj, path: str):
        self.path = path
        self._file = fileobj
        try:
            self.elf = ELFFile(fileobj)
        except ELFError as e:
            raise BladeError(Code.PARAMETER_INVALID, f"{path} is not an ELF executable ({e})")
        machine = self.elf["e_machine"]
        if machine not in MACHINES:
            raise BladeError(Code.ACTION_NOT_SUPPORT,
                             f"{path}: unsupported architecture {machine}; blade-go supports "
                             "amd64 and 386")
        self.goarch, self.ptrsize, self.arch_supported = MACHINES[machine]
        self.little_endian = self.elf.little_endian
        self.pie = self.elf["e_type"] == "ET_DYN"
        self.segments = [Segment(s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"],
                                 s["p_flags"])
                         for s in self.elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        self._sections = None
        self._data_cache = {}

    # -- sections -------------------------------------------------------------------------
    @property
    def sections(self) -> dict:
        """name -> Section, from the section header table only (bodies are not read)."""
        if self._sections is None:
            self._sections = {}
            for s in self.elf.iter_sections():
                self._sections.setdefault(s.name, Section(
                    s.name, s["sh_addr"], s["sh_offset"], s["sh_size"], s["sh_type"],
                    s["sh_flags"]))
        return self._sections

    def section(self, *names) -> Optional[Section]:
        """The first of `names` that exists."""
        for n in names:
            if n in self.sections:
                return self.sections[n]
        return None

    def section_data(self, name: str) -> bytes:
        """The (decompressed) body of a section, cached."""
        if name not in self._data_cache:
            sec = self.elf.get_section_by_name(name)
            if sec is None:
                raise KeyError(name)
            self._data_cache[name] = sec.data()
        return self._data_cache[name]

    # -- bytes at virtual addresses -------------------------------------------------------
    def segment_for(self, addr: int) -> Optional[Segment]:
        """The PT_LOAD whose memory image holds addr: [p_vaddr, p_vaddr + p_memsz), or the
        usable slack after it (see slack_end)."""
        for s in self.segments:
            if s.vaddr <= addr < self.slack_end(s):
                return s
        return None

    def slack_end(self, seg: Segment) -> int:
        """End of what a process maps of `seg`: its last page runs on past p_memsz up to the
        page end, unless another PT_LOAD maps part of that page (then it ends at p_memsz).
        Bytes past p_filesz there are zeros (bss or the kernel's fill), except when the segment
        has no bss (p_filesz == p_memsz): then the page holds the file's next bytes, which no
        code of this mapping uses (other segments map those file bytes on their own pages)."""
        end = seg.vaddr + seg.memsz
        for other in self.segments:
            if other is not seg and other.page_start < seg.mapped_end and \
                    other.vaddr + other.memsz > seg.vaddr:
                return end
        return seg.mapped_end

    def read(self, addr: int, n: int) -> bytes:
        """Bytes a process maps at file virtual address `addr` (bss and slack per slack_end)."""
        seg = self.segment_for(addr)
        if seg is None or n < 0 or addr + n > self.slack_end(seg):
            raise BladeError(Code.PARAMETER_INVALID,
                             f"address {addr:#x}+{n} is not mapped by {self.path}")
        rel = addr - seg.vaddr
        in_file = max(0, min(n, seg.filesz - rel))
        data = self.read_file(seg.offset + rel, in_file) if in_file else b""
        if len(data) < n and seg.filesz == seg.memsz:  # slack: the file's next bytes, if any
            off = seg.offset + rel + len(data)
            more = max(0, min(n - len(data), self.file_size() - off))
            data += self.read_file(off, more) if more else b""
        return data + b"\0" * (n - len(data))

    def read_file(self, offset: int, n: int) -> bytes:
        self._file.seek(offset)
        data = self._file.read(n)
        if len(data) != n:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.path}: short read at file offset {offset:#x}")
        return data

    def file_size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def uint(self, data: bytes, off: int, size: int) -> int:
        return int.from_bytes(data[off:off + size], "little" if self.little_endian else "big")

    def close(self):
        self._file.close()


# -- processes ------------------------------------------------------------------------------
def open_process_exe(pid: int):
    """(file object, path) of a process's executable via /proc/PID/exe.

    Opening /proc/PID/exe yields the very file the process runs, even when it lives in another
    mount namespace or was deleted after start.
    """
    proc = f"/proc/{pid}"
    if not os.path.isdir(proc):
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist")
    try:
        path = os.readlink(f"{proc}/exe")
        return open(f"{proc}/exe", "rb"), path
    except PermissionError:
        raise BladeError(Code.FORBIDDEN,
                         f"cannot read /proc/{pid}/exe: permission denied (blade-go must run as "
                         f"the owner of process {pid} or as root with CAP_SYS_PTRACE)")
    except FileNotFoundError:
        if not os.path.isdir(proc):
            raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist")
        raise BladeError(Code.PARAMETER_INVALID,
                         f"process {pid} has no executable (a kernel thread or a zombie?)")


def _exe_mappings(pid: int, image: ElfImage):
    """(start, end, perms, file offset) of every mapping of the process's executable file."""
    st = os.stat(f"/proc/{pid}/exe")
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise BladeError(Code.PROCESS_NOT_EXIST, f"process {pid} does not exist")
    except PermissionError:
        raise BladeError(Code.FORBIDDEN, f"cannot read /proc/{pid}/maps: permission denied")
    try:
        exe_path = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe_path = None
    by_inode, by_path = [], []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        row = (lo, hi, parts[1], int(parts[2], 16))
        major, minor = (int(x, 16) for x in parts[3].split(":"))
        if int(parts[4]) == st.st_ino and (major, minor) == (os.major(st.st_dev),
                                                              os.minor(st.st_dev)):
            by_inode.append(row)
        # overlay filesystems may show another device/inode in maps than stat does
        elif len(parts) == 6 and exe_path and parts[5].strip().removesuffix(" (deleted)") == \
                exe_path.removesuffix(" (deleted)"):
            by_path.append(row)
    return by_inode or by_path


def executable_ranges(pid: int, image: ElfImage, bias: int):
    """[lo, hi) file virtual addresses the process really maps executable from its executable
    file (what /proc/PID/maps says, not what the ELF headers promise)."""
    return [(lo - bias, hi - bias) for lo, hi, perms, _ in _exe_mappings(pid, image)
            if "x" in perms]


def load_bias(pid: int, image: ElfImage) -> int:
    """How far the process mapped the executable from its link-time addresses.

    The mapping of the executable at the first PT_LOAD's (page-aligned) file offset starts at
    that segment's page-aligned vaddr plus the bias. Mappings are matched by inode, so this works
    across mount namespaces and for deleted executables.
    """
    first = image.segments[0]
    want_off = first.offset & ~(PAGE - 1)
    found = [lo for lo, _, _, off in _exe_mappings(pid, image) if off == want_off]
    if found:
        return min(found) - (first.vaddr & ~(PAGE - 1))
    raise BladeError(Code.UNEXPECTED_STATUS,
                     f"process {pid}: no mapping of its executable at file offset {want_off:#x} "
                     "in /proc/PID/maps")
