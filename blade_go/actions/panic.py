"""The `panic` action: every call of a function panics as if `panic(v)` were its first
statement: a real Go panic (runtime.gopanic, tail-called from right after F's frame setup so
the traceback names F), recoverable by F's callers, fatal with Go's own message otherwise.
"""
from ..stubs.plans import PanicSymbols, parse_panic_value
from ..stubs import values as V
from .code_fault import CodeFaultExecutor


class PanicExecutor(CodeFaultExecutor):
    fault = "panic"

    def plan(self, ctx, target):
        value = parse_panic_value(ctx.flags.get("value") or "")
        b = target.binary
        variable = None
        if value.kind == V.VAR:
            var = b.variable(value.data)
            variable = (var.addr + target.bias, var.type)
        syms = PanicSymbols(
            gopanic=target.callout("runtime.gopanic", "panic needs it"),
            # reflect's `var stringType = rtypeOf("")`, set at init (runtime.stringEface holds
            # a named string type in recent Go versions, not `string` itself)
            string_type_slot=target.runtime(b.symbol("reflect.stringType")),
            errorstring_itab=target.runtime(b.itab("*errors.errorString", "error")),
            variable=variable)
        return target.impl.plan_panic(target.code, target.params, target.regabi, value, syms,
                                      target.allocate, target.read_original,
                                      conds=target.conds, counters=target.counters)

    def describe(self, ctx):
        return {"value": ctx.flags.get("value")}
