"""ABIInternal on arm64 (Go >= 1.18): R0-R15 and F0-F15 (abi-internal.md, "arm64 architecture").

R26 is the closure context, R27 the linker's, R28 the current g, R29 the frame pointer, R30 the
link register: none carries arguments. A float32 travels in the low 32 bits of its F register.
The return address is in LR, not on the stack; at entry SP points at the word where the caller
saved its own LR, so stack-assigned values start at SP+8, exactly as on amd64 (`regabi.py`).

Chosen by `select.py` for arm64 builds of Go 1.18 and later (stack-ABI builds are refused).
"""
from .regabi import RegisterABI

INT_REGS = tuple(f"R{i}" for i in range(16))
FLOAT_REGS = tuple(f"F{i}" for i in range(16))


class RegisterABIARM64(RegisterABI):
    name = "abi-internal-arm64"
    goarch = "arm64"
    int_regs = INT_REGS
    float_regs = FLOAT_REGS


REGABI_ARM64 = RegisterABIARM64()
