"""What blade-go needs from one architecture, as one small interface (delve's pkg/proc `Arch`).

    impl = stub_arch("amd64")            # stubs/select.py: the one place a GOARCH is mapped
    impl.code                            # placement.ArchCode: decode F, frame setup, relocation
    impl.plan_return(results, values, "amd64", 8, resolve, allocate, entry, entry_original)
    impl.parse_route(bytes.fromhex("e9fb0f0000"), 0x401000)   # [0x402000]: where a route goes
    impl.plan_delay                      # on an arch that lacks it: BladeError
                                         # ACTION_NOT_SUPPORT "delay is not supported on ..."

A StubArch names each part as "module:attribute" inside blade_go.stubs and imports it on
first use, so asking for amd64's return planner never imports the delay code, and an arch's
modules are only imported when a binary of that arch is handled. The shared core modules
(placement, conditions, planner, values, image, ...) never import an architecture's file;
an architecture's files import the core; select.py imports nothing but this module until a
part is asked for.
"""
import importlib
from dataclasses import dataclass, field
from typing import Dict, Optional

from ..errors import BladeError, Code

# Every part an architecture may provide (signatures: docs/ARCHITECTURE.md, "stubs/", and the
# x86 implementations named in select.py). A part left out is refused with its description.
PARTS = {
    "code": "code placement",                       # placement.ArchCode instance
    "encoder": "the shared return planner's encoder",  # class for planner.stub_code
    "conditions": "in-stub conditions",             # emit_prefix's block backend (instance)
    "plan_return": "return",                        # -> planner.StubPlan
    "plan_conditional_return": "return with --effect-count/--effect-percent/--match/--caller/--after",
    "plan_delay": "delay",                          # -> faults.FaultPlan
    "plan_panic": "panic",                          # -> faults.FaultPlan
    "plan_args": "args",                            # -> faults.FaultPlan
    "guarded_patches": "one generic instance (the dictionary guard)",
    "parse_route": "reading a route back",          # (code: bytes, addr) -> Optional[List[int]]
    "code_references": "finding direct calls",      # (text, text_addr, entry, lo, hi) -> int
}


@dataclass(frozen=True)
class StubArch:
    goarch: str
    ptrsize: int
    route_len: int                 # bytes of the entry route (x86 jmp rel32: 5, arm64 B: 4)
    pad_byte: int                  # what the linker fills between functions (x86 0xCC, arm64 0)
    route_kind: str                # the route's branch, for messages ("rel32 jump", "B (imm26) branch")
    breakpoint: bytes              # dlv's software breakpoint (x86 int3 CC, arm64 BRK #0)
    insn_align: int                # instruction alignment (x86 1, arm64 4)
    elf_machine: int               # e_machine of its executables (EM_X86_64 62, EM_386 3, EM_AARCH64 183)
    no_deep_callers: str = ""      # why --caller-depth > 1 is refused ("": the stubs walk frames)
    branch_reach: int = 1 << 31    # +- bytes a route's branch reaches (x86 rel32; arm64 B 128 MB)
    seen_shortcuts: bool = True    # the draw's state / the count ticket also count the calls
    #                                (conditions.seen_source; 386: 32-bit state, saturating ticket)
    parts: Dict[str, str] = field(default_factory=dict)   # part -> "module:attribute"
    missing: str = ""              # why the parts not listed are refused on this arch
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def supports(self, part: str) -> bool:
        return part in self.parts

    def __getattr__(self, part: str):
        if part.startswith("_") or part not in PARTS:
            raise AttributeError(part)
        cache = self.__dict__["_cache"]
        if part not in cache:
            where = self.parts.get(part)
            if where is None:
                raise BladeError(Code.ACTION_NOT_SUPPORT,
                                 f"{PARTS[part]} is not supported on {self.goarch} yet"
                                 + (f": {self.missing}" if self.missing else ""))
            module, attr = where.split(":")
            cache[part] = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        return cache[part]

    def refused(self) -> Optional[str]:
        """What this arch still refuses, for messages (None: nothing)."""
        left = [PARTS[p] for p in PARTS if p not in self.parts]
        return ", ".join(left) if left else None
