"""What a planner hands back, for every architecture (the return stub's StubPlan is planner.py's),
the panic value grammar, and the checks every call-out fault (delay, panic) makes first.

    plan = stub_arch("amd64").plan_delay(code, params, regabi, sleep, 100, 0, allocate, read)
    plan.patches   # [cave, route, arm]: written in that order by the session, routes last
"""
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Sequence

from ..abi import REG, ParamLocation
from ..errors import BladeError, Code
from ..patch import Patch
from . import values as V

if TYPE_CHECKING:
    from .placement import FunctionCode

NS_PER_MS = 1_000_000
RUNTIME_PACKAGES = ("runtime.", "runtime/", "internal/runtime/", "internal/abi.", "sync/atomic.")


@dataclass(frozen=True)
class ConditionalPlan:
    patches: List[Patch]
    stub_addr: int
    stub_size: int
    data_size: int
    counters_addr: int
    sites: tuple                      # addresses routed (entry, or each return's epilogue)
    layout: dict = field(default_factory=dict)  # Conditions.layout(): how to read the counters
    listing: str = field(repr=False, default="")



@dataclass(frozen=True)
class FaultPlan:
    patches: List[Patch]          # [cave, route] (+ arm for delay); panic: [cave, value, route]
    stub_addr: int
    code_size: int
    data_size: int
    site: int                     # where the route is written
    listing: str = field(repr=False, default="")


@dataclass(frozen=True)
class PanicValue:
    kind: str        # V.STRING, V.ERROR or V.VAR
    data: object     # bytes for STRING/ERROR, "pkg.Name" for VAR
    text: str


def parse_panic_value(text: str) -> PanicValue:
    """`"text"` or bare text (a string panic), `error:<message>`, `var:<pkg>.<Name>`."""
    s = (text or "").strip()
    if not s:
        raise BladeError(Code.PARAMETER_ILLEGAL, "--value: give the panic value: \"text\", "
                         "error:<message> or var:<pkg>.<Name>")
    if s.startswith("var:"):
        name = s[4:].strip()
        if not re.fullmatch(r"[\w./\-]+\.[^\W\d]\w*", name):
            raise BladeError(Code.PARAMETER_ILLEGAL, f"--value: {s}: var: needs a package-level "
                                                     "variable like io.EOF")
        return PanicValue(V.VAR, name, s)
    kind = V.STRING
    if s.startswith("error:"):
        kind, s = V.ERROR, s[len("error:"):].strip()
    if s.startswith('"'):
        try:
            return PanicValue(kind, V.unquote(s), text)
        except ValueError as e:
            raise BladeError(Code.PARAMETER_ILLEGAL, f"--value: {text}: {e}") from None
    if '"' in s:
        raise BladeError(Code.PARAMETER_ILLEGAL, f"--value: {text}: quote the whole text")
    return PanicValue(kind, s.encode("utf-8"), text)


@dataclass(frozen=True)
class PanicSymbols:
    """Runtime addresses the panic stub needs."""
    gopanic: int
    string_type_slot: Optional[int]      # a word holding string's type descriptor pointer
    errorstring_itab: Optional[int]      # itab of *errors.errorString for error
    variable: Optional[tuple] = None     # (address, GoType) for var:


# --------------------------------------------------------------------------- call-outs
# (what delay and panic check on every architecture before calling out of F)

def register_spills(params: Sequence[ParamLocation]):
    """(register, size, SP-at-entry offset of its spill slot) of every register argument."""
    out = []
    for loc in params:
        if loc.spill_offset is None:
            continue
        for p in loc.pieces:
            if p.where == REG:
                out.append((p.reg, p.size, loc.spill_offset + p.value_offset))
    return out


def refuse_unsafe_callout(code: "FunctionCode", area: int, what: str, context_ok: bool,
                           bp_usable: bool = False):
    """bp_usable: F never resumes (panic), so its saved frame pointer slot may be overwritten
    once RBP no longer points at it."""
    if code.name.startswith(RUNTIME_PACKAGES):
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{what} is refused on {code.name}: the runtime's functions may run on "
                         "the system stack or with locks held, where a goroutine must not sleep "
                         "or panic")
    fr = code.frame
    if fr is None:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{code.name} has no stack frame (the compiler made it a frameless "
                         f"leaf): {what} needs F's frame to call from; try its caller")
    room = fr.scratch + (code.arch.ptrsize if bp_usable and fr.saved_bp else 0)
    if room < area:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{code.name}'s frame has {fr.scratch} bytes below its saved frame "
                         f"pointer; {what} needs {area} for the callee's arguments")
    if not context_ok and code.reads_context_register(fr.end):
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{code.name} is a closure that reads its captured variables through "
                         "the context register after its frame setup; the register would not "
                         f"survive {what} (args and return work on it)")


def armed_value(orig: int) -> int:
    """The arm byte's armed value: anything but the file's byte there (disarmed = restored)."""
    return (orig + 1) & 0xFF


def check_panic_var(value: PanicValue, found):
    if found is None:
        raise BladeError(Code.PARAMETER_INVALID, f"--value: no package-level variable "
                                                 f"{value.data} with a known type")
    t = found[1]
    if t is None or not (t.name == "string" or t.kind.name in ("IFACE", "EFACE")):
        raise BladeError(Code.PARAMETER_ILLEGAL,
                         f"--value: {value.text} has type {getattr(t, 'name', '?')}; panic "
                         "takes var: of an interface type (an error such as io.EOF, or any) or "
                         "of type string")


def check_panic_value(value: PanicValue, syms: "PanicSymbols"):
    """What every arch's panic stub needs of the binary for `value` (refused otherwise)."""
    from .image import no_errorstring_itab
    if (value.kind == V.STRING or value.kind == V.VAR and syms.variable and
            syms.variable[1] is not None and syms.variable[1].name == "string") \
            and not syms.string_type_slot:
        raise BladeError(Code.PARAMETER_INVALID, "this binary does not link package reflect, "
                         "where string's type descriptor is found; use error:<msg> or an "
                         "interface var:")
    if value.kind == V.ERROR and not syms.errorstring_itab:
        raise no_errorstring_itab()
    if value.kind == V.VAR:
        check_panic_var(value, syms.variable)


def refuse_after_without_rets(code: "FunctionCode"):
    """--after patches every return of F: refused when F has none, or also leaves by a jump out
    of F (a tail call), a path no return patch covers."""
    if not code.return_sites():
        raise BladeError(Code.PARAMETER_INVALID,
                         f"--after: {code.name} never returns: nothing to patch")
    end = code.addr + code.size
    leaving = [i for i in code.insns if i.flow == "branch" and i.target is not None
               and not code.addr <= i.target < end]
    if leaving:
        i = leaving[0]
        raise BladeError(Code.PARAMETER_INVALID,
                         f"--after: {code.name} leaves through a jump at {i.addr:#x} ({i.text}, a "
                         "tail call), not only through its returns; that path cannot be covered")
