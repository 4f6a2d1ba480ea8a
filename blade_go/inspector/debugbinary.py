"""`--debug-binary`: the unstripped build of the same source as a stripped target, and proof
that it is that build.

Built from the same source with the same toolchain and flags except `-s -w`, the two files have
byte-identical `.gopclntab` (function names, entry offsets, sizes, pc/line tables: the compiled
code's map), and the same compile half of the Go build ID (`go tool buildid`: the third of four
components; the first two hash the link step, which saw different -ldflags). The link step
still differs: the build settings recorded in the binary (`-ldflags="-s -w"`) make `.rodata` a
few bytes longer, so every address after it moves. Hence:

- functions: same addresses (the pclntab is identical, its entries are offsets from text);
- types (signatures, struct layouts, inlined call sites): from the debug binary's DWARF;
- package variables: the debug binary's address is translated section by section
  (`.data`, `.noptrdata`, `.bss`, `.noptrbss`: offset from the section start) and only when
  that section has the same size in both files;
- itabs and type descriptors: from the target's own module data, never the debug binary's.

Anything else is refused with what differs.
"""
import hashlib
from typing import Optional

from ..errors import BladeError, Code
from .pclntab import SECTION_NAMES as PCLN_SECTIONS

DATA_SECTIONS = (".data", ".noptrdata", ".bss", ".noptrbss", ".go.module")


def go_build_id(image) -> str:
    """The Go build ID from `.note.go.buildid` ("" when absent)."""
    sec = image.section(".note.go.buildid")
    if sec is None:
        return ""
    raw = image.section_data(".note.go.buildid")
    namesz, descsz = image.uint(raw, 0, 4), image.uint(raw, 4, 4)
    start = 12 + (namesz + 3) // 4 * 4
    return raw[start:start + descsz].decode("utf-8", "replace")


def _digest(image, names) -> Optional[str]:
    sec = image.section(*names)
    if sec is None:
        return None
    return hashlib.sha256(image.section_data(sec.name)).hexdigest()


def check_same_build(target, debug) -> dict:
    """Facts proving `debug` is the unstripped build of `target`, or BladeError saying what
    differs. Both are GoBinary objects."""
    def refuse(why: str):
        raise BladeError(Code.PARAMETER_INVALID,
                         f"--debug-binary {debug.path} is not a build of {target.path}: {why}; "
                         "build it from the same source with the same Go version and flags, "
                         "only without -ldflags=\"-s -w\"")

    if not debug.has_dwarf:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"--debug-binary {debug.path} has no DWARF either ({debug.stripped})")
    if (debug.goarch, debug.go_version) != (target.goarch, target.go_version):
        refuse(f"it is {debug.go_version}/{debug.goarch}, the target "
               f"{target.go_version}/{target.goarch}")
    ids = go_build_id(target.image), go_build_id(debug.image)
    parts = [i.split("/") for i in ids]
    if all(len(p) == 4 for p in parts) and parts[0][2] != parts[1][2]:
        refuse(f"Go build IDs differ in their compile part ({ids[0]} vs {ids[1]})")
    pcln = _digest(target.image, PCLN_SECTIONS), _digest(debug.image, PCLN_SECTIONS)
    if pcln[0] is None or pcln[0] != pcln[1]:
        refuse("their function tables (.gopclntab) differ")
    return {"path": debug.path, "go_build_id": ids[1], "target_go_build_id": ids[0],
            "gopclntab_sha256": pcln[0]}


def translate_data_address(target, debug, addr: int) -> Optional[int]:
    """The target's address of the debug binary's data at `addr`, or None when the section
    holding it differs in size (then offsets inside it cannot be trusted)."""
    for name in DATA_SECTIONS:
        d = debug.image.section(name)
        if d is None or not d.addr <= addr < d.addr + d.size:
            continue
        t = target.image.section(name)
        if t is None or t.size != d.size:
            return None
        return t.addr + (addr - d.addr)
    return None
