"""A GoBinary that also works when the executable has no DWARF or no `.symtab` (stripped with
`-ldflags="-s -w"`, as most shipped Go services are).

What each fact comes from, in order:

| fact | own DWARF/.symtab | `--debug-binary` | `--signature` | module data |
|---|---|---|---|---|
| functions (entry, size) | .symtab | - | - | .gopclntab (always there) |
| signature, result types | DWARF | its DWARF | parsed Go syntax | - |
| inlined call sites | DWARF | its DWARF | - | .gopclntab inline trees (Go 1.18+) |
| itab of `*errors.errorString,error` (`error:` values) | .symtab | - | - | itablinks |
| type descriptors | .symtab/DWARF | - | - | typelinks |
| package variables (`var:` values) | DWARF/.symtab | translated address | refused | refused |

Package variables cannot be found in a `-s` binary: nothing the runtime keeps names them
(the module data lists functions, types and itabs; variables are reached only from code, and
their addresses are immediates in instructions). `var:` therefore needs `--debug-binary`.
"""
from typing import Dict, List, Optional, Union

from ..errors import BladeError, Code
from .binary import Function, GoBinary, Variable, open_binary
from .gotypes import Signature

FLAGS_HINT = ("pass --signature 'func(<params>) (<results>)' (Go syntax, e.g. "
              "--signature 'func(int64) (*main.User, error)') or --debug-binary <the same "
              "build without -ldflags=\"-s -w\">")


class TypedGoBinary(GoBinary):
    def __init__(self, image, pid: Optional[int] = None):
        super().__init__(image, pid)
        self._init_extra()

    def _init_extra(self):
        self.debug_binary: Optional[GoBinary] = None
        self.debug_facts: Optional[dict] = None
        self._signatures: Dict[str, Signature] = {}
        self._md = None
        self._md_error: Optional[str] = None
        self.warnings: List[str] = []

    # -- where types come from ----------------------------------------------------------------
    def use_debug_binary(self, path: str):
        from .debugbinary import check_same_build
        debug = open_binary(path=path)
        try:
            self.debug_facts = check_same_build(self, debug)
        except BaseException:
            debug.close()
            raise
        self.debug_binary = debug

    def use_signature(self, text: str, func: str) -> Signature:
        from .signature import parse_signature
        fn = self.find_function(func)
        sig = parse_signature(text, self.ptrsize, fn.name)
        if self._dwarf_source() is not None:
            self._check_against_dwarf(fn, sig, text)
        self._signatures[fn.name] = sig
        return sig

    def _dwarf_source(self):
        if self.has_dwarf:
            return self
        return self.debug_binary

    def _check_against_dwarf(self, fn: Function, sig: Signature, text: str):
        """A --signature on a binary that has types must agree with them (machine layout)."""
        known = super().signature(fn)

        def shape(params):
            return [(p.type.kind, p.type.size, p.type.align, tuple(p.type.scalars(self.ptrsize)))
                    for p in params]
        for what, a, b in (("results", sig.results, known.results),
                           ("parameters", sig.params, known.params)):
            if shape(a) != shape(b):
                raise BladeError(Code.PARAMETER_INVALID,
                                 f"--signature {text!r} disagrees with the DWARF of {fn.name}: "
                                 f"its {what} are (" + ", ".join(p.type.name for p in b) + ")")

    @property
    def dwarf(self):
        if self.has_dwarf:
            return GoBinary.dwarf.fget(self)
        if self.debug_binary is not None:
            return self.debug_binary.dwarf
        raise BladeError(Code.PARAMETER_INVALID,
                         f"{self.path} has no DWARF ({self.stripped}), so the function's "
                         f"result types cannot be read from it: {FLAGS_HINT}")

    @property
    def moduledata(self):
        if self._md is None and self._md_error is None:
            from .moduledata import find_moduledata
            try:
                self._md = find_moduledata(self.image, self.go_version)
            except BladeError as e:
                self._md_error = e.message
        if self._md is None:
            raise BladeError(Code.PARAMETER_INVALID, self._md_error)
        return self._md

    # -- overrides ------------------------------------------------------------------------------
    def signature(self, fn: Union[Function, str]) -> Signature:
        fn = self._fn(fn)
        if fn.name in self._signatures:
            return self._signatures[fn.name]
        return super().signature(fn)  # own DWARF, else the debug binary's (see dwarf)

    def inlined_sites(self, name: str):
        if self._dwarf_source() is not None:
            return self.dwarf_inlined_sites(name)  # own DWARF, else the debug binary's
        try:
            return super().inlined_sites(name)  # the inline trees of .gopclntab
        except BladeError as e:
            note = (f"{self.path} has no DWARF and its inline trees cannot be read "
                    f"({e.message}): calls the compiler inlined cannot be listed (they keep "
                    "the original behaviour); --debug-binary lists them")
            if note not in self.warnings:
                self.warnings.append(note)
            return []

    def itab(self, concrete: str, iface: str) -> Optional[int]:
        if self.has_symtab:
            hit = super().itab(concrete, iface)  # .symtab, then the module data
            if hit:
                return hit
        return self.moduledata.itabs().get((concrete, iface))  # errors say why

    def type_descriptor(self, name: str) -> Optional[int]:
        if self.has_dwarf or self.has_symtab:
            hit = super().type_descriptor(name)
            if hit:
                return hit
        return self.moduledata.typelink_types().get(name)

    def variable(self, name: str) -> Variable:
        if self.has_dwarf:
            return super().variable(name)
        if self.debug_binary is None:
            if self.has_symtab:  # -w only: the address is known, the type is not
                return super().variable(name)
            raise BladeError(Code.PARAMETER_INVALID,
                             f"var:{name} needs the variable's address, and {self.path} keeps "
                             f"none ({self.stripped}: package variables are named only by "
                             ".symtab and DWARF, never by the runtime's tables); pass "
                             "--debug-binary <the same build without -ldflags=\"-s -w\">")
        from .debugbinary import translate_data_address
        var = self.debug_binary.variable(name)
        if self.has_symtab and name in self.symtab.data:
            addr = self.symtab.data[name][0]
        else:
            addr = translate_data_address(self, self.debug_binary, var.addr)
        if addr is None:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"var:{name}: its section differs in size between "
                             f"{self.debug_binary.path} and {self.path}, so its address in the "
                             "target cannot be derived")
        return Variable(name, addr, var.type)

    def facts(self) -> dict:
        out = super().facts()
        out["type_sources"] = self.type_sources()
        if self.debug_facts:
            out["debug_binary"] = self.debug_facts
        if not (self.has_dwarf and self.has_symtab):
            try:
                md = self.moduledata
                out["moduledata"] = dict(md.to_json(), error_itab=hex(
                    md.itabs().get(("*errors.errorString", "error"), 0)) or None)
            except BladeError as e:
                out["moduledata"] = {"error": e.message}
            out["cannot"] = self.limits()
        return out

    def type_sources(self) -> dict:
        dwarf = ("own DWARF" if self.has_dwarf else
                 "--debug-binary DWARF" if self.debug_binary else None)
        return {
            "functions": ".symtab" if self.has_symtab else ".gopclntab",
            "signatures": dwarf or ("--signature" if self._signatures else "none: " + FLAGS_HINT),
            "itabs": ".symtab" if self.has_symtab else "module data itablinks",
            "variables": ("own DWARF" if self.has_dwarf else
                          "--debug-binary (address translated)" if self.debug_binary else
                          ".symtab (no type)" if self.has_symtab else "none"),
            "inlined_sites": dwarf or ".gopclntab inline trees",
        }

    def limits(self) -> List[str]:
        out = []
        if self._dwarf_source() is None:
            out.append("result types: no DWARF; give --signature or --debug-binary")
        if not self.has_dwarf and self.debug_binary is None:
            out.append("var: values: no variable addresses or types in a stripped binary; "
                       "give --debug-binary")
        if not self.has_symtab:
            out.append("int3-padding caves: exact function sizes need .symtab (header and "
                       "text-end caves are used)")
        return out

    def close(self):
        if self.debug_binary is not None:
            self.debug_binary.close()
        super().close()


def open_typed_binary(path: Optional[str] = None, pid: Optional[int] = None,
                      signature: Optional[str] = None, debug_binary: Optional[str] = None,
                      func: Optional[str] = None) -> TypedGoBinary:
    """open_binary, plus the type sources a stripped target needs (--signature needs func)."""
    plain = open_binary(path=path, pid=pid)
    b = TypedGoBinary.__new__(TypedGoBinary)
    b.__dict__.update(plain.__dict__)  # same image and parsed facts, no second open
    b._init_extra()
    try:
        if debug_binary:
            b.use_debug_binary(debug_binary)
        if signature:
            if not func:
                raise BladeError(Code.PARAMETER_LESS, "less parameter: --signature needs --func")
            b.use_signature(signature, func)
    except BaseException:
        b.close()
        raise
    return b

