"""Which code an architecture's stubs use: the one place a GOARCH is mapped to its
implementation (as abi/select.py maps it to an ABI, and delve's pkg/proc picks its Arch).

    from blade_go.stubs.select import stub_arch
    plan = stub_arch(binary.goarch).plan_return(results, values, binary.goarch, ...)

amd64 and 386 share the x86 family's code (iced-x86 based: placement_x86, asm, faults,
args_stub, conditions_return, planner with their encoders); each has its own prologue shapes
(placement_amd64 / placement_386), encoder and condition blocks. arm64 has its own files
(*_arm64.py). Parts are named "module:attribute" and imported on first use (stubs/arch.py).
"""
from ..errors import BladeError, Code
from .arch import StubArch

AMD64 = StubArch(
    goarch="amd64", ptrsize=8, route_len=5, pad_byte=0xCC, route_kind="rel32 jump",
    breakpoint=b"\xcc", insn_align=1, elf_machine=62, parts={
        "code": "placement_amd64:AMD64",
        "encoder": "encoder_amd64:Amd64Encoder",
        "conditions": "conditions_amd64:Amd64Conditions",
        "plan_return": "planner:plan_return",
        "plan_conditional_return": "conditions_return:plan_conditional_return",
        "plan_delay": "faults:plan_delay",
        "plan_panic": "faults:plan_panic",
        "plan_args": "args_stub:plan_args",
        "guarded_patches": "instance_guard:guarded_patches",
        "parse_route": "route_x86:parse_route",
        "code_references": "route_x86:code_references_amd64",
    })

I386 = StubArch(
    goarch="386", ptrsize=4, route_len=5, pad_byte=0xCC, route_kind="rel32 jump",
    breakpoint=b"\xcc", insn_align=1, elf_machine=3,
    no_deep_callers="Go keeps no frame pointers on 386, so frames beyond the direct caller "
                    "cannot be found without stopping the target", seen_shortcuts=False, parts={
        "code": "placement_386:I386",
        "encoder": "encoder_386:Encoder386",
        "conditions": "conditions_386:I386Conditions",
        "plan_return": "planner:plan_return",
        "plan_conditional_return": "conditions_return:plan_conditional_return",
        "plan_delay": "faults:plan_delay",
        "plan_panic": "faults:plan_panic",
        "plan_args": "args_stub:plan_args",
        "parse_route": "route_x86:parse_route",
        "code_references": "route_x86:code_references_386",
    }, missing="386 passes every argument on the stack (ABI0); the guard compares a register")

ARM64 = StubArch(
    goarch="arm64", ptrsize=8, route_len=4, pad_byte=0x00, route_kind="B (imm26) branch",
    breakpoint=bytes.fromhex("000020d4"), insn_align=4, elf_machine=183, branch_reach=1 << 27,
    parts={
        "code": "placement_arm64:ARM64",
        "conditions": "conditions_arm64:Arm64Conditions",
        "plan_return": "return_arm64:plan_return",
        "plan_conditional_return": "conditions_return_arm64:plan_conditional_return",
        "plan_delay": "faults_arm64:plan_delay",
        "plan_panic": "faults_arm64:plan_panic",
        "plan_args": "args_stub_arm64:plan_args",
        "guarded_patches": "instance_guard_arm64:guarded_patches",
        "parse_route": "route_arm64:parse_route",
        "code_references": "route_arm64:code_references",
    })

ARCHES = {a.goarch: a for a in (AMD64, I386, ARM64)}


def stub_arch(goarch: str) -> StubArch:
    impl = ARCHES.get(goarch)
    if impl is None:
        raise BladeError(Code.ACTION_NOT_SUPPORT, f"architecture {goarch!r} is not supported "
                         f"(supported: {', '.join(ARCHES)})")
    return impl


def for_elf_machine(machine: int):
    """The StubArch of executables with this ELF e_machine; None for any other."""
    return next((a for a in ARCHES.values() if a.elf_machine == machine), None)


def arch_code(goarch: str):
    """placement.ArchCode of `goarch` (decoding, frame setup, relocation, branches)."""
    return stub_arch(goarch).code


def conditions_backend(goarch: str):
    """The condition prefix's blocks for `goarch` (conditions.emit_prefix)."""
    return stub_arch(goarch).conditions()


def return_encoder(goarch: str):
    """The return-stub encoder class for `goarch` (planner.stub_code)."""
    return stub_arch(goarch).encoder
