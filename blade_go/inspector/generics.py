"""Generic instances and the shape functions they run as.

Go compiles a generic function once per GC shape (`main.Max[go.shape.int]`,
`main.(*Hook[go.shape.*uint8]).Trigger`); every instance of that shape calls it directly with
the instance's dictionary as a hidden first argument. The linker keeps one dictionary symbol per
instance, named with full package paths: `main..dict.Max[main.Celsius]`,
`main..dict.Hook[*example.com/gen/core.A]` (a method uses its receiver type's dictionary). An
instance's own symbol (`main.(*Hook[*example.com/gen/core.A]).Trigger`), when present, is only
a wrapper for interface calls and method values: direct calls never run it.

So a named instance maps to a shape function shared with the other instances of that shape,
which the dictionaries list. Replacing the shape function alone would fault every one of them,
and replacing the wrapper would miss the direct calls. Under the amd64 register ABI the
dictionary arrives in RAX, so the shape function is routed through a guard that compares it
(stubs/instance_guard.py) and only the named instance is faulted (`generic_verdict` returns an
InstanceGuard); elsewhere (386, stack ABI) both are refused with the reason and the shape's
instances.

A type argument may be written short or with its full package path (`*core.A`,
`*example.com/gen/core.A`); a named type of the function's own package may omit the package
(`Celsius` for `main.Celsius`). Both resolve to the same instance (`resolve_instance`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .symbols import _SHAPE_INDEX, _split_type_args
from .symtab import names_containing

BASIC = {"bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32",
         "uint64", "uintptr", "float32", "float64", "complex64", "complex128", "string",
         "unsafe.Pointer"}
ALIASES = {"byte": "uint8", "rune": "int32", "any": "interface {}", "interface{}": "interface {}"}
DICT = "..dict."
DW_AT_go_kind = 0x2900
# reflect.Kind values (DW_AT_go_kind) whose GC shape is a basic type or the pointer shape
GO_KINDS = {1: "bool", 2: "int", 3: "int8", 4: "int16", 5: "int32", 6: "int64", 7: "uint",
            8: "uint8", 9: "uint16", 10: "uint32", 11: "uint64", 12: "uintptr", 13: "float32",
            14: "float64", 15: "complex64", 16: "complex128", 22: "*uint8", 24: "string",
            26: "unsafe.Pointer"}


def package_of(name: str) -> str:
    """Import path of a Go symbol: 'github.com/a/b.(*T).M' -> 'github.com/a/b'."""
    cut = name.find("[")
    head = name if cut < 0 else name[:cut]
    slash = head.rfind("/")
    dot = head.find(".", slash + 1)
    return head[:dot] if dot > 0 else head


def _generic_head(base: str, pkg: str) -> Optional[str]:
    """'Hook' for 'main.(*Hook[]).Trigger' and 'main.Hook[].M', 'Max' for 'main.Max[]'."""
    rest = base[len(pkg) + 1:]
    cut = rest.find("[]")
    if cut < 0:
        return None
    head = rest[:cut].lstrip("(*")
    return head or None


def _shape_arg(sym_arg: str) -> str:
    return _SHAPE_INDEX.sub("", sym_arg[len("go.shape."):]).replace(" ", "")


class Generics:
    """Shape functions, instances and dictionaries of one binary (built from .symtab on use)."""

    def __init__(self, binary):
        self.binary = binary
        self._dicts: Optional[Dict[Tuple[str, str], List[List[str]]]] = None

    # -- dictionaries -> instances ----------------------------------------------------------
    @property
    def dicts(self) -> Dict[Tuple[str, str], List[List[str]]]:
        """(package, generic head) -> type-argument lists, one per instance."""
        if self._dicts is None:
            self._dicts = {}
            data = self.binary.symtab.data if self.binary.has_symtab else {}
            for name in names_containing(data, DICT):
                i = name.find(DICT)
                if i <= 0 or "[" not in name:
                    continue
                base, args = _split_type_args(name[i + len(DICT):])
                self._dicts.setdefault((name[:i], base.split("[]")[0]), []).append(args)
        return self._dicts

    def shape_of(self, arg: str, pkg: str) -> Optional[str]:
        """The GC shape of a type argument as the shape symbols spell it, None if unknown."""
        a = ALIASES.get(arg.replace(" ", ""), arg.replace(" ", "")).replace("interface{}",
                                                                            "interface {}")
        if a.startswith("*"):
            return "*uint8"
        if a in BASIC or a == "interface {}":
            return a.replace(" ", "")
        if not self.binary.has_dwarf:
            return None
        for name in (a, f"{pkg}.{a}") if "." not in a else (a,):
            base = self._underlying_basic(name)
            if base:
                return base
        return None

    def _underlying_basic(self, name: str) -> Optional[str]:
        """Shape of a named type from its DWARF DW_AT_go_kind (basic kinds and pointers)."""
        for tag in ("DW_TAG_base_type", "DW_TAG_typedef", "DW_TAG_structure_type",
                    "DW_TAG_pointer_type"):
            try:
                dies = self.binary.dwarf._named(tag, name)
            except Exception:
                return None
            for die in dies:
                kind = die.attributes.get(DW_AT_go_kind)
                if kind is not None and kind.value in GO_KINDS:
                    return GO_KINDS[kind.value]
        return None

    def instances(self, shape_symbol: str) -> List[str]:
        """Names of the instances whose dictionaries match this shape function's shapes."""
        pkg = package_of(shape_symbol)
        base, sargs = _split_type_args(shape_symbol)
        head = _generic_head(base, pkg)
        shapes = [_shape_arg(a) for a in sargs]
        out = []
        for args in self.dicts.get((pkg, head), []):
            if len(args) != len(shapes):
                continue
            got = [self.shape_of(a, pkg) for a in args]
            if all(g is None or g == s for g, s in zip(got, shapes)):
                out.append(_render(base, args))
        return sorted(out)

    # -- user spelling -> instance and shape ------------------------------------------------
    def resolve_instance(self, name: str) -> Optional[Tuple[str, str]]:
        """(canonical instance name, shape function symbol) for a named instance, or None."""
        pkg = package_of(name)
        base, args = _split_type_args(name)
        head = _generic_head(base, pkg)
        if not args or head is None:
            return None
        for inst_args in self.dicts.get((pkg, head), []):
            if len(inst_args) == len(args) and all(
                    _same_type(u, i, pkg) for u, i in zip(args, inst_args)):
                shapes = [self.shape_of(a, pkg) for a in inst_args]
                shape = self._shape_function(base, shapes)
                if shape:
                    return _render(base, inst_args), shape
        return None

    def _shape_function(self, base: str, shapes: List[Optional[str]]) -> Optional[str]:
        found = []
        for sym in names_containing(self.binary._function_table(), "go.shape."):
            sbase, sargs = _split_type_args(sym)
            if sbase == base and len(sargs) == len(shapes) and all(
                    s is None or _shape_arg(a) == s for a, s in zip(sargs, shapes)):
                found.append(sym)
        return found[0] if len(found) == 1 else None

    def dictionary_of(self, instance: str) -> Optional[int]:
        """File address of an instance's dictionary symbol (`pkg..dict.Head[args]`)."""
        pkg = package_of(instance)
        base, args = _split_type_args(instance)
        head = _generic_head(base, pkg)
        if head is None:
            return None
        hit = self.binary.symtab.data.get(f"{pkg}{DICT}{head}[{','.join(args)}]")
        return hit[0] if hit else None

    def shape_for_wrapper(self, symbol: str) -> Optional[str]:
        """The shape function an instance symbol (a wrapper) stands for, if any."""
        hit = self.resolve_instance(symbol)
        return hit[1] if hit else None


def _render(base: str, args: List[str]) -> str:
    return base.replace("[]", "[" + ",".join(args) + "]", 1)


def _same_type(user: str, inst: str, pkg: str) -> bool:
    """`*core.A` == `*example.com/gen/core.A`; `Celsius` == `main.Celsius` in package main."""
    u, i = user.replace(" ", ""), inst.replace(" ", "")
    u, i = ALIASES.get(u, u), ALIASES.get(i, i)
    if u == i:
        return True
    pu, pi = len(u) - len(u.lstrip("*[]")), len(i) - len(i.lstrip("*[]"))
    if u[:pu] != i[:pi]:
        return False
    u, i = u[pu:], i[pi:]
    return i.endswith("/" + u) or (("." not in u) and i == f"{pkg}.{u}")


@dataclass(frozen=True)
class InstanceGuard:
    """Fault only `instance`: the shape function `shape` compares its dictionary argument."""
    instance: str
    shape: str
    dictionary: int  # file address of the instance's dictionary symbol
    others: Tuple[str, ...]  # the shape's other instances, left untouched
    register: str = "rax"  # where the dictionary arrives


def dictionary_register(shape: str) -> Optional[str]:
    """Where a shape function receives its dictionary under the amd64 register ABI: the first
    integer register for a function (RAX), the second after a pointer receiver (RBX: the
    receiver comes first). None for value receivers (their words vary) and closures."""
    pkg = package_of(shape)
    base, _ = _split_type_args(shape)
    rest = base[len(pkg) + 1:]
    if re.fullmatch(r"[^.()\[\]]+\[\]", rest):
        return "rax"
    if re.fullmatch(r"\(\*[^.()\[\]]+\[\]\)\.[^.()\[\]]+", rest):
        return "rbx"
    return None


def guard_supported(binary) -> bool:
    """The dictionary travels in a register only under a register ABI (amd64 RAX/RBX; arm64
    R0/R1), and the arch's stubs must have the guard (stubs/select.py: guarded_patches)."""
    from ..stubs.select import ARCHES
    impl = ARCHES.get(binary.goarch)
    return getattr(binary, "abi_name", "").startswith("abi-internal") and impl is not None \
        and impl.supports("guarded_patches")


def generic_verdict(binary, requested: str, symbol: str):
    """(refusal text, None), (None, InstanceGuard) or (None, None) for the function `symbol`
    resolved from the user's `requested` name (module doc)."""
    if "[" not in symbol or "go.shape." in requested:
        return None, None
    if not binary.has_symtab:  # no dictionary symbols: the instances cannot be told apart
        if "go.shape." in symbol or "[...]" in symbol:
            return (f"{requested} runs as a shape function ({symbol}) that other instances may "
                    "share, and without a symbol table blade-go cannot list them or compare "
                    f"the dictionary; use --func '{symbol}' to fault them all knowingly"), None
        return None, None
    g = Generics(binary)
    _, args = _split_type_args(symbol)
    if any(a.startswith("go.shape.") for a in args):
        shape, wrapper = symbol, None
    else:
        shape, wrapper = g.shape_for_wrapper(symbol), symbol
        if shape is None:
            return None, None  # compiled for this instance alone: it is the code that runs
    instances = g.instances(shape)
    hit = g.resolve_instance(requested)
    named = hit[0] if hit else requested
    if not wrapper and hit and instances == [named]:
        return None, None  # the only instance of its shape: faulting the shape faults it alone
    dictionary = g.dictionary_of(named) if hit else None
    register = dictionary_register(shape)
    if hit and dictionary is not None and register and guard_supported(binary):
        return None, InstanceGuard(named, shape, dictionary,
                                   tuple(i for i in instances if i != named), register)
    listed = ", ".join(instances[:12]) + (f" (and {len(instances) - 12} more)"
                                          if len(instances) > 12 else "")
    if wrapper:
        why = (f"{wrapper} is only a wrapper (for interface calls and method values) around the "
               f"shape function {shape}; direct calls of {named} run the shape function, so "
               "replacing the wrapper would miss them")
        if instances == [named]:
            return why + f"; it is the only instance of its shape: use --func '{shape}'", None
    else:
        why = (f"{named} runs as the shape function {shape}, shared by "
               f"{len(instances)} instance(s): {listed}; replacing it would fault every one")
        listed = ""
    reason = ("the stub compares the hidden dictionary argument only for functions and "
              "pointer-receiver methods" if hit and dictionary is not None and not register else
              "the stub can compare the hidden dictionary argument only under the amd64 register "
              "ABI" if hit and dictionary is not None else
              "its dictionary symbol was not found" if hit else
              "no instance of that name was found among the dictionaries")
    return (why + (f" (the shape's instances: {listed})" if listed else "")
            + f". blade-go cannot fault one instance alone here ({reason}); to fault every "
            f"instance of this shape knowingly, use --func '{shape}'"), None
