"""ABIInternal on amd64 (Go >= 1.17): nine integer registers and X0-X14.

R14 holds the current g and X15 must stay zero in ABIInternal code (abi-internal.md, "amd64
architecture"); neither carries arguments. The assignment rules are shared (`regabi.py`).
"""
from .regabi import RegisterABI, register_needs  # noqa: F401  (register_needs: public here too)

INT_REGS = ("RAX", "RBX", "RCX", "RDI", "RSI", "R8", "R9", "R10", "R11")
FLOAT_REGS = tuple(f"X{i}" for i in range(15))


class RegisterABIAMD64(RegisterABI):
    name = "abi-internal-amd64"
    goarch = "amd64"
    int_regs = INT_REGS
    float_regs = FLOAT_REGS


REGABI_AMD64 = RegisterABIAMD64()
