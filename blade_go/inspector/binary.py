"""GoBinary: everything blade-go needs to know about a target executable, read from its ELF.

A pure reader: no ptrace. Opened by path or by pid (through /proc/PID/exe). Expensive parts
(.symtab index, .gopclntab, DWARF reader, caves) are built on first use and cached; a symbol
is looked up without decoding the others (symbols.py).
"""
import os
from dataclasses import dataclass
from typing import List, Optional, Union

from ..errors import BladeError, Code
from .buildinfo import read_buildinfo, version_tuple
from .caves import Cave, clip_to, header_caves, int3_caves, text_end_caves
from .elf import ElfImage, executable_ranges, load_bias, open_process_exe
from .gotypes import GoType, Signature
from .pclntab import SECTION_NAMES as PCLN_SECTIONS, PclnTable
from .symbols import closest_names, lookup_data, resolve_function
from .symtab import SymbolTable

DWARF_SECTIONS = (".debug_info", ".zdebug_info")


@dataclass(frozen=True)
class Function:
    name: str   # the symbol name in the binary (shape instance for generics)
    entry: int  # file virtual address
    end: int

    def to_json(self) -> dict:
        return {"name": self.name, "entry": self.entry, "end": self.end, "size": self.size}

    @property
    def size(self) -> int:
        return self.end - self.entry


@dataclass(frozen=True)
class Variable:
    name: str
    addr: int
    type: Optional[GoType]  # None only when the binary has no DWARF


@dataclass(frozen=True)
class InlinedSite:
    caller: str
    file: str
    line: int


def abi_name(goarch: str, go_version: str) -> str:
    if goarch == "amd64":
        return "abi-internal-amd64" if version_tuple(go_version) >= (1, 17) else "abi0-amd64"
    if goarch == "386":
        return "abi0-386"
    return f"abi-internal-{goarch}" if version_tuple(go_version) >= (1, 18) else f"abi0-{goarch}"


class GoBinary:
    def __init__(self, image: ElfImage, pid: Optional[int] = None):
        self.image = image
        self.path = image.path
        self.pid = pid
        self.goarch = image.goarch
        self.ptrsize = image.ptrsize
        self.pie = image.pie
        info = read_buildinfo(image)
        if info is None and image.section(*PCLN_SECTIONS) is None:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.path} is not a Go binary (no .go.buildinfo, no .gopclntab)")
        self.go_version = info.go_version if info else ""
        self.module_path = info.module_path if info else ""
        self.has_dwarf = image.section(*DWARF_SECTIONS) is not None
        self.has_symtab = image.section(".symtab") is not None
        self.stripped = self._stripped_description()
        self.abi_name = abi_name(self.goarch, self.go_version)
        self.load_bias = load_bias(pid, image) if pid is not None else 0
        self._symtab = self._pcln = self._dwarf = self._abi = None
        self._caves = {}

    def _stripped_description(self) -> Optional[str]:
        if self.has_dwarf and self.has_symtab:
            return None
        if not self.has_dwarf and not self.has_symtab:
            return "-ldflags=-s: no .symtab and no DWARF"
        if not self.has_dwarf:
            return "-ldflags=-w: no DWARF"
        return "no .symtab (DWARF present)"

    # -- facts --------------------------------------------------------------------------------
    @property
    def abi(self):
        if not self.image.arch_supported:
            raise BladeError(Code.ACTION_NOT_SUPPORT,
                             f"{self.path}: GOARCH={self.goarch} is recognised but not yet "
                             "supported by blade-go (amd64, 386 and arm64 are)")
        if self._abi is None:
            from ..abi import abi_for
            self._abi = abi_for(self.goarch, self.go_version)
        return self._abi

    def facts(self) -> dict:
        return {"path": self.path, "pid": self.pid, "go_version": self.go_version,
                "module_path": self.module_path, "goarch": self.goarch, "ptrsize": self.ptrsize,
                "abi": self.abi_name, "arch_supported": self.image.arch_supported,
                "pie": self.pie, "load_bias": self.load_bias, "has_dwarf": self.has_dwarf,
                "has_symtab": self.has_symtab, "stripped": self.stripped}

    # -- functions and symbols ----------------------------------------------------------------
    @property
    def symtab(self) -> SymbolTable:
        if self._symtab is None:
            self._symtab = SymbolTable(self.image)
        return self._symtab

    @property
    def pclntab(self) -> PclnTable:
        if self._pcln is None:
            self._pcln = PclnTable(self.image)
        return self._pcln

    def _function_table(self):
        return self.symtab.funcs if self.has_symtab else self.pclntab.funcs

    def find_function(self, name: str) -> Function:
        where = self.path + ("" if self.has_symtab else " (.gopclntab)")
        try:
            sym, entry, end = resolve_function(name, self._function_table(), where)
        except BladeError as e:
            hit = self._generic_instance(name, e)
            if hit is None:
                self._explain_inlined(name, e)
                raise
            sym, entry, end = hit
        if not self.has_symtab:  # pclntab spans run to the next function: drop the padding
            end = self.pclntab.code_end(entry, end)
        return Function(sym, entry, end)

    def _generic_instance(self, name: str, err: BladeError):
        """A named instance spelled with a full package path or a named type (`Max[Celsius]`)
        that the shape symbols cannot match by spelling: found through its dictionary."""
        if "[" not in name or " not found in " not in err.message or not self.has_symtab:
            return None
        from .generics import Generics
        hit = Generics(self).resolve_instance(name.strip())
        if hit is None:
            return None
        spans = sorted(self._function_table()[hit[1]], key=lambda s: s[0] - s[1])
        return (hit[1], *spans[0])

    def _explain_inlined(self, name: str, err: BladeError):
        """Turn "not found" into "inlined everywhere" when inlined copies are known."""
        if " not found in " not in err.message:  # DWARF, else .gopclntab (inlined_sites)
            return
        try:
            sites = self.inlined_sites(name)
        except (BladeError, ImportError):
            return
        if sites:
            first = sites[0]
            raise BladeError(Code.PARAMETER_INVALID,
                             f"function {name} has no out-of-line copy in {self.path}: all "
                             f"{len(sites)} calls were inlined (e.g. into {first.caller} at "
                             f"{first.file}:{first.line}); rebuild with //go:noinline on it or "
                             "with -gcflags=-l to make it injectable")

    def _fn(self, fn: Union[Function, str]) -> Function:
        return fn if isinstance(fn, Function) else self.find_function(fn)

    def symbol(self, name: str) -> Optional[int]:
        """Address of a data or function symbol (`.symtab` only)."""
        hit = lookup_data(name, self.symtab.data)
        if hit:
            return hit[1]
        spans = self._function_table().get(name)
        return spans[0][0] if spans else None

    def itab(self, concrete: str, iface: str) -> Optional[int]:
        """The itab of `concrete` for `iface`, e.g. itab("*errors.errorString", "error")."""
        names = tuple(f"{p}.{concrete},{iface}" for p in ("go:itab", "go.itab"))
        hit = lookup_data("", self.symtab.data, names)
        return hit[1] if hit else self.moduledata_itab(concrete, iface)

    def moduledata_itab(self, concrete: str, iface: str) -> Optional[int]:
        """The itab from the runtime's module data (issue 11): stripped binaries have no
        .symtab, and Go 1.27 no longer names itabs in it."""
        from .moduledata import find_moduledata
        try:
            return find_moduledata(self.image, self.go_version).itabs().get((concrete, iface))
        except BladeError:
            return None

    def type_descriptor(self, name: str) -> Optional[int]:
        """Address of the runtime type descriptor of `name` ("string", "*errors.errorString").

        Older linkers emitted `type.X` / `type:X` symbols; current ones emit only the start of
        the type section, and DWARF (DW_AT_go_runtime_type) is the remaining source.
        """
        hit = lookup_data("", self.symtab.data, (f"type:{name}", f"type.{name}"))
        if hit:
            return hit[1]
        if self.has_dwarf:
            runtime_type = getattr(self.dwarf, "runtime_type", None)
            if runtime_type is not None:
                return runtime_type(name)
        return None

    def read(self, addr: int, n: int) -> bytes:
        return self.image.read(addr, n)

    # -- DWARF-backed -------------------------------------------------------------------------
    @property
    def dwarf(self):
        if not self.has_dwarf:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.path} has no DWARF ({self.stripped}); blade-go needs it to "
                             "know signatures, inlining and variable types: rebuild without "
                             "-ldflags=-s/-w")
        if self._dwarf is None:
            from .dwarfinfo import DwarfInfo  # written alongside; imported only when needed
            self._dwarf = DwarfInfo(self.image.elf, ptrsize=self.ptrsize)
            self._dwarf.functions = self._function_table()  # inlined sites' callers by address
        return self._dwarf

    def signature(self, fn: Union[Function, str]) -> Signature:
        fn = self._fn(fn)
        return self.dwarf.function_signature(fn.name, fn.entry)

    def result_locations(self, fn: Union[Function, str]):
        return self.abi.result_locations(self.signature(fn))

    def inlined_sites(self, name: str) -> List[InlinedSite]:
        if not self.has_dwarf:  # stripped: the runtime's own inline trees (inltree.py)
            from .inltree import pclntab_inlined_sites
            return pclntab_inlined_sites(self, name)
        return self.dwarf_inlined_sites(name)

    def dwarf_inlined_sites(self, name: str) -> List[InlinedSite]:
        out = []
        for site in self.dwarf.inlined_sites(name):
            if isinstance(site, tuple):
                out.append(InlinedSite(*site[:3]))
            else:
                out.append(InlinedSite(site.caller, site.file, site.line))
        return out

    def has_out_of_line(self, name: str) -> bool:
        try:
            self.find_function(name)
            return True
        except BladeError:
            return False

    def variable(self, name: str) -> Variable:
        if self.has_dwarf:
            hit = self.dwarf.variable(name)
            if hit is not None:
                return Variable(name, hit[0], hit[1])
        elif name in self.symtab.data:
            return Variable(name, self.symtab.data[name][0], None)
        found = closest_names(name, self.symtab.data.keys())
        raise BladeError(Code.PARAMETER_INVALID,
                         f"variable {name} not found in {self.path}"
                         + ("; closest: " + ", ".join(found) if found else ""))

    # -- caves --------------------------------------------------------------------------------
    def caves(self, int3: bool = True) -> List[Cave]:
        if int3 not in self._caves:
            found = header_caves(self.image) + text_end_caves(self.image)
            if int3 and self.has_symtab:  # needs exact function sizes
                from ..stubs.select import stub_arch  # the linker's padding byte per arch
                found += int3_caves(self.image, self.symtab.function_spans(),
                                    stub_arch(self.goarch).pad_byte)
            if self.pid is not None:  # only what this process really maps executable
                found = clip_to(found, executable_ranges(self.pid, self.image, self.load_bias))
            self._caves[int3] = found
        return list(self._caves[int3])

    def close(self):
        self.image.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_binary(path: Optional[str] = None, pid: Optional[int] = None) -> GoBinary:
    """Open a Go executable by path, or the executable of a running process by pid."""
    if (path is None) == (pid is None):
        raise BladeError(Code.PARAMETER_LESS, "give exactly one of pid or binary path")
    if pid is not None:
        ahead = _take_ahead(int(pid))
        if ahead is not None:
            return ahead
        fileobj, real_path = open_process_exe(int(pid))
    else:
        path = str(path)
        try:
            fileobj, real_path = open(path, "rb"), path
        except FileNotFoundError:
            raise BladeError(Code.FILE_NOT_EXIST, f"{path} does not exist")
        except PermissionError:
            raise BladeError(Code.FORBIDDEN, f"cannot read {path}: permission denied")
        except IsADirectoryError:
            raise BladeError(Code.PARAMETER_INVALID, f"{path} is a directory")
    try:
        image = ElfImage(fileobj, real_path)
        return GoBinary(image, pid=pid)
    except BaseException:
        fileobj.close()
        raise


# -- opened ahead of need (session/forkserver.py) ---------------------------------------------
# A fork server opens its target's executable once and reads what a create reads (sections
# inflated, indexes built); every create forked from it takes that copy-on-write object instead
# of opening and parsing the file again. Each fork takes it at most once (a later open in the
# same process opens afresh), and only for the very same file and process.
_ahead: dict = {}  # pid -> (identity, GoBinary)


def _identity(pid: int):
    from ..procfs import start_time
    st = os.stat(f"/proc/{pid}/exe")
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, start_time(pid))


def open_ahead(pid: int, warm) -> GoBinary:
    """Open pid's executable and keep it for forked children; warm(binary) reads ahead."""
    b = open_binary(pid=pid)
    warm(b)
    _ahead[pid] = (_identity(pid), b)
    return b


def after_fork():
    """In a forked child, before any read: a file description of its own for each binary
    opened ahead (a file offset is shared across fork; concurrent children would race)."""
    for _, b in _ahead.values():
        f = b.image._file
        fd = f.fileno()
        new = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        os.dup2(new, fd, inheritable=False)
        os.close(new)
        f.seek(0)  # the buffered reader drops what it held and seeks the new description


_taken: list = []  # what this fork took: referenced until the process ends (see below)


def _take_ahead(pid: int) -> Optional[GoBinary]:
    entry = _ahead.pop(pid, None)
    if entry is None:
        return None
    # Never freed in the fork: deallocating its tens of thousands of objects would write to
    # every page they share with the server (copy-on-write: 15-20 ms on a 100 MB binary) just
    # before the process exits anyway.
    _taken.append(entry)
    try:
        if entry[0] == _identity(pid):
            return entry[1]
    except OSError:
        pass
    entry[1].close()
    return None
