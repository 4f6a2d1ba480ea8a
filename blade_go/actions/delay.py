"""The `delay` action: every call of a function first waits --time ms (+- --offset) in the
calling goroutine only; other goroutines, the GC and the scheduler keep running.

A `call H; jmp H2` right after F's frame setup sends each call into a stub that spills F's
register arguments and tail-calls time.Sleep, so the sleeping goroutine's stack shows F's real
frame (stubs/faults.py has the exact code). destroy (and --timeout) disarms the stub, waits
until no goroutine sleeps in it any more (the drain, reported as drain_ms), then restores.
"""
from .code_fault import CodeFaultExecutor


class DelayExecutor(CodeFaultExecutor):
    fault = "delay"

    def plan(self, ctx, target):
        sleep = target.callout("time.Sleep", "delay needs it to put the calling goroutine to "
                                            "sleep")
        return target.impl.plan_delay(
            target.code, target.params, target.regabi, sleep, int(ctx.flags.get("time") or 0),
            int(ctx.flags.get("offset") or 0), target.allocate, target.read_original,
            conds=target.conds, counters=target.counters)

    def describe(self, ctx):
        return {"time_ms": int(ctx.flags.get("time") or 0), "offset_ms": int(ctx.flags.get("offset") or 0)}
