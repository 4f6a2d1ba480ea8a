"""What a Go executable says about itself: build facts, functions, signatures, caves.

Entry point: `open_binary(path=None, pid=None) -> GoBinary`. A pure reader (no ptrace); all
addresses are file virtual addresses, add `GoBinary.load_bias` for the running process.
"""
from .binary import Function, GoBinary, InlinedSite, Variable, open_binary
from .caves import Cave, CaveAllocator

__all__ = ["open_binary", "GoBinary", "Function", "Variable", "Cave", "CaveAllocator",
           "InlinedSite"]
