"""`.go.buildinfo`: the Go version and module path a binary was built with.

Layout (written by cmd/link): a 32-byte header starting with the magic "\\xff Go buildinf:",
then the pointer size and a flags byte. With flag 2 (Go 1.18+) the version and the module info
follow inline as uvarint-length strings; before that, two pointers at offset 16 point at Go
string headers {ptr, len} elsewhere in the data segment.
"""
import re
from dataclasses import dataclass
from typing import Optional

from .elf import ElfImage

MAGIC = b"\xff Go buildinf:"
FLAG_BIG_ENDIAN = 1
FLAG_INLINE_STRINGS = 2
SECTION_NAMES = (".go.buildinfo",)


@dataclass(frozen=True)
class BuildInfo:
    go_version: str      # "go1.26.8"
    module_path: str     # main module ("github.com/acme/app"), else the main package path
    modinfo: str         # the raw text `go version -m` prints


def uvarint(data: bytes, pos: int):
    """Go's unsigned varint (encoding/binary): the value and the position after it."""
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _strip_sentinels(mod: str) -> str:
    # modinfo is wrapped in two 16-byte sentinels so the runtime can find it
    if len(mod) >= 33 and mod[-17] == "\n":
        return mod[16:-16]
    return mod


def module_path_of(modinfo: str) -> str:
    path = mod = ""
    for line in modinfo.splitlines():
        fields = line.split("\t")
        if fields[0] == "path" and len(fields) > 1:
            path = fields[1]
        elif fields[0] == "mod" and len(fields) > 1:
            mod = fields[1]
    return mod or path


def _relocated_pointer(image: ElfImage, vaddr: int) -> Optional[int]:
    """The value a R_*_RELATIVE relocation stores at vaddr (old PIE binaries leave 0 in the file)."""
    for sec in image.elf.iter_sections():
        if sec["sh_type"] not in ("SHT_RELA", "SHT_REL") or not sec.name.startswith(".rel"):
            continue
        for rel in sec.iter_relocations():
            if rel["r_offset"] == vaddr and rel.is_RELA():
                return rel["r_addend"]
    return None


def _read_pointer(image: ElfImage, vaddr: int, ptrsize: int) -> int:
    value = image.uint(image.read(vaddr, ptrsize), 0, ptrsize)
    if value == 0 and image.pie:
        value = _relocated_pointer(image, vaddr) or 0
    return value


def _read_go_string(image: ElfImage, header_addr: int, ptrsize: int) -> str:
    if header_addr == 0:
        return ""
    ptr = _read_pointer(image, header_addr, ptrsize)
    length = image.uint(image.read(header_addr + ptrsize, ptrsize), 0, ptrsize)
    if ptr == 0 or length == 0 or length > 1 << 20:
        return ""
    return image.read(ptr, length).decode("utf-8", "replace")


def read_buildinfo(image: ElfImage) -> Optional[BuildInfo]:
    """BuildInfo, or None when the binary has no `.go.buildinfo` section (not a Go binary)."""
    sec = image.section(*SECTION_NAMES)
    if sec is None or sec.type == "SHT_NOBITS":
        return None
    head = image.read_file(sec.offset, min(sec.size, 64 * 1024))
    start = head.find(MAGIC)
    if start < 0 or len(head) < start + 32:
        return None
    ptrsize, flags = head[start + 14], head[start + 15]
    if flags & FLAG_INLINE_STRINGS:
        pos = start + 32
        n, pos = uvarint(head, pos)
        version = head[pos:pos + n].decode("utf-8", "replace")
        pos += n
        n, pos = uvarint(head, pos)
        modinfo = head[pos:pos + n].decode("utf-8", "replace")
    else:
        base = sec.addr + start
        vptr = _read_pointer(image, base + 16, ptrsize)
        mptr = _read_pointer(image, base + 16 + ptrsize, ptrsize)
        version = _read_go_string(image, vptr, ptrsize)
        modinfo = _read_go_string(image, mptr, ptrsize)
    modinfo = _strip_sentinels(modinfo)
    return BuildInfo(version, module_path_of(modinfo), modinfo)


def version_tuple(go_version: str):
    """(major, minor) of "go1.19.13", "go1.21rc2", "devel go1.22-abc ..."; (0, 0) if unknown."""
    m = re.search(r"go(\d+)\.(\d+)", go_version or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
