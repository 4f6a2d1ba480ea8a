"""Parameter locations (registers, stack slots, spill slots) proven against compiled code.

Under the register ABI every function with a stack check ends in a morestack block that stores
each register-assigned argument into its spill slot, addressed from SP at entry, calls
runtime.morestack and reloads them. That block is the compiler's own statement of where every
register argument and its spill slot are: each computed (register, spill offset) pair must be
exactly the set of stores the block makes, for every function of the fixture,
with two toolchains (fixture tests/fixtures/abi_params). A mutant that forgets the results' stack space or the pointer alignment
must be caught.
"""
import re

import iced_x86 as x86
import pytest

from blade_go.abi import REG, STACK
from blade_go.abi.abi0 import ABI0_386
from blade_go.abi.regabi_amd64 import REGABI_AMD64
from blade_go.abi.regabi_arm64 import REGABI_ARM64
from blade_go.inspector import open_binary
from blade_go.stubs import placement as P
from tests.support.fixtures import build_fixture

GPR = {x86.Register.RAX: "RAX", x86.Register.RBX: "RBX", x86.Register.RCX: "RCX",
       x86.Register.RDI: "RDI", x86.Register.RSI: "RSI", x86.Register.R8: "R8",
       x86.Register.R9: "R9", x86.Register.R10: "R10", x86.Register.R11: "R11"}


def _full(reg) -> str:
    info = x86.RegisterInfo(reg) if hasattr(x86, "RegisterInfo") else None
    full = info.full_register if info else reg
    if full in GPR:
        return GPR[full]
    name = x86.Register.__dict__  # enum value -> name
    for k, v in name.items():
        if v == full and re.fullmatch(r"[XYZ]MM\d+", k):
            return "X" + re.sub(r"\D", "", k)
    return f"?{reg}"


def morestack_spills(binary, fn):
    """{(register, SP-at-entry offset)} stored by fn's morestack block; None without one."""
    code = P.FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry,
                                 binary.goarch, fn.name)
    first_cond = next((i for i in code.insns[:4] if i.flow == "cond"), None)
    if first_cond is None:
        return None
    out = set()
    for i in code.insns:
        if i.addr < first_cond.target:
            continue
        if i.flow == "call":
            break
        ins = i.raw
        if ins.op_count == 2 and ins.op0_kind == x86.OpKind.MEMORY and \
                ins.memory_base == x86.Register.RSP and ins.op1_kind == x86.OpKind.REGISTER:
            out.add((_full(ins.op1_register), ins.memory_displacement))
    return out


def expected_spills(abi, sig):
    out = set()
    for loc in abi.param_locations(sig):
        for p in loc.pieces:
            if p.where == REG:
                out.add((p.reg, loc.spill_offset + p.value_offset))
    return out


class ForgetResults(type(REGABI_AMD64)):
    """Mutant: spill area right after the stack arguments (no room for stack results)."""

    def param_locations(self, sig):
        from blade_go.inspector.gotypes import Signature
        return super().param_locations(Signature(sig.params, ()))


@pytest.mark.parametrize("toolchain", ["go-default", "go1.19"])
def test_register_and_spill_slots_match_the_morestack_block(toolchain):
    binary = open_binary(path=str(build_fixture("abi_params", toolchain=toolchain)))
    names = [n for n in binary._function_table() if n.startswith("main.") and
             n not in ("main.main", "main.keep")]
    checked, mutant_caught, failures = 0, 0, []
    for name in sorted(names):
        fn = binary.find_function(name)
        sig = binary.signature(fn)
        seen = morestack_spills(binary, fn)
        if seen is None:
            continue
        want = expected_spills(REGABI_AMD64, sig)
        if not want:
            continue
        checked += 1
        if seen != want:
            failures.append(f"{name}: block stores {sorted(seen)}, computed {sorted(want)}")
        if expected_spills(ForgetResults(), sig) != seen:
            mutant_caught += 1
    assert not failures, "\n".join(failures)
    assert checked >= 15, checked
    assert mutant_caught >= 2  # StackResults, ManyWithStackResults: the check sees them


# arm64: `str x1, [sp, #0x10]`, `strb w0, [sp, #8]`, `str d0, [sp, #0x18]`, `stp x0, x1, [sp, #8]`
_ARM64_STORE = re.compile(r"^(?:str|stur|strb|strh|sturb|sturh)\s+([xwdsh])(\d+), \[sp, #(0x[0-9a-f]+|\d+)\]$")
_ARM64_PAIR = re.compile(r"^stp\s+([xwds])(\d+), ([xwds])(\d+), \[sp, #(0x[0-9a-f]+|\d+)\]$")
_ARM64_WIDTH = {"x": 8, "d": 8, "w": 4, "s": 4, "h": 2}


def _arm64_reg(cls: str, n: str) -> str:
    return ("F" if cls in "dsh" else "R") + n


def arm64_morestack_spills(binary, fn):
    """{(register, SP-at-entry offset)} stored by an arm64 function's morestack block (the
    target of the stack check's `b.ls`, up to its `bl runtime.morestack`); None without one.
    Decoded with capstone, as arm64 code will be in blade-go."""
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    insns = list(md.disasm(binary.read(fn.entry, fn.end - fn.entry), fn.entry))
    check = next((i for i in insns[:4] if i.mnemonic == "b.ls"), None)
    if check is None:
        return None
    block = int(check.op_str.lstrip("#"), 0)
    out = set()
    for i in insns:
        if i.address < block:
            continue
        if i.mnemonic == "bl":
            break
        text = f"{i.mnemonic} {i.op_str}"
        m = _ARM64_STORE.match(text)
        if m:
            out.add((_arm64_reg(m.group(1), m.group(2)), int(m.group(3), 0)))
            continue
        m = _ARM64_PAIR.match(text)
        if m:
            off = int(m.group(5), 0)
            out.add((_arm64_reg(m.group(1), m.group(2)), off))
            out.add((_arm64_reg(m.group(3), m.group(4)), off + _ARM64_WIDTH[m.group(1)]))
    return out


class NineIntRegistersARM64(type(REGABI_ARM64)):
    """Mutant: amd64's count of integer registers with arm64's names (R0-R8)."""
    int_regs = type(REGABI_ARM64).int_regs[:9]


class FloatRegistersOffByOneARM64(type(REGABI_ARM64)):
    """Mutant: float arguments one F register later than the ABI says."""

    def param_locations(self, sig):
        locs = REGABI_ARM64.param_locations(sig)
        return tuple(type(l)(l.index, l.name, l.type, tuple(
            type(p)(p.value_offset, p.size, p.where, reg=("F" + str(int(p.reg[1:]) + 1))
                    if p.reg and p.reg[0] == "F" else p.reg, sp_offset=p.sp_offset)
            for p in l.pieces), l.spill_offset) for l in locs)


@pytest.mark.parametrize("toolchain", ["go-default", "go1.19"])
def test_arm64_register_and_spill_slots_match_the_morestack_block(toolchain):
    """The same proof for arm64's register ABI (R0-R15, F0-F15), on an arm64 build: no CPU is
    needed, the compiler's morestack block says where each register argument spills."""
    binary = open_binary(path=str(build_fixture("abi_params", toolchain=toolchain,
                                                goarch="arm64")))
    names = [n for n in binary._function_table() if n.startswith("main.") and
             n not in ("main.main", "main.keep")]
    mutants = {"nine-int-registers": NineIntRegistersARM64(),
               "float-registers-off-by-one": FloatRegistersOffByOneARM64()}
    checked, failures = 0, []
    caught = dict.fromkeys(mutants, 0)
    for name in sorted(names):
        fn = binary.find_function(name)
        sig = binary.signature(fn)
        seen = arm64_morestack_spills(binary, fn)
        if seen is None:
            continue
        want = expected_spills(REGABI_ARM64, sig)
        if not want:
            continue
        checked += 1
        if seen != want:
            failures.append(f"{name}: block stores {sorted(seen)}, computed {sorted(want)}")
        for m, abi in mutants.items():
            caught[m] += expected_spills(abi, sig) != seen
    assert not failures, "\n".join(failures)
    assert checked >= 15, checked
    assert all(caught.values()), caught  # the check can fail, on this fixture
    print(f"arm64 {toolchain}: {checked} functions' spills proven; mutants caught: {caught}")


def test_stack_abi_params_follow_the_argument_order():
    from blade_go.abi.layout import Layout
    from blade_go.inspector.gotypes import Param, Signature
    L = Layout(4)
    sig = Signature((Param("a", L.basic("int8")), Param("s", L.string()),
                     Param("x", L.basic("int64"))), (Param("~r0", L.basic("int")),))
    locs = ABI0_386.param_locations(sig)
    assert [(l.pieces[0].where, l.pieces[0].sp_offset) for l in locs] == [
        (STACK, 4), (STACK, 8), (STACK, 16)]
    assert all(l.spill_offset is None for l in locs)
    # results follow the arguments, as result_locations says
    assert ABI0_386.result_locations(sig)[0].pieces[0].sp_offset == 24
