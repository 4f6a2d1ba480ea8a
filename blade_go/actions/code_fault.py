"""What delay, panic and args share: one experiment = one FaultPlan (stubs/faults.py) applied
through the session, reverted like `return`'s patches (plus a drain when the plan has an arm).

A subclass names its fault and plans it:

    class DelayExecutor(CodeFaultExecutor):
        fault = "delay"
        def plan(self, ctx, target) -> FaultPlan: ...

`target` (a FaultTarget) carries what every plan needs: the binary, F, its decoded code
(placement.FunctionCode at runtime addresses), its parameter locations, the ABI kind, and the
cave allocator and file reader already bound to the load bias. Reservation, conflicts, inlined
call-site warnings and status are shared with the return action.
"""
from dataclasses import dataclass
from typing import Callable

from ..denylist import check_injectable
from ..errors import BladeError, Code
from ..inspector.references import inlined_report
from ..patch import ARM, Patch
from ..trust import trusted_patches
from ..procfs import start_time
from .return_ import (ReturnExecutor, _attempts, _conditions, _find_out_of_line,
                      _radius_warning, _reach, _read_counters, _record, _refuse_conflicts,
                      _release_quietly, _taken_ranges)

# destroy waits this long for goroutines still inside a delay (under the session's 60 s reply)
DRAIN_BOUND = 45.0


@dataclass
class FaultTarget:
    binary: object
    fn: object               # inspector Function (file addresses)
    code: object             # placement.FunctionCode (runtime addresses)
    params: tuple            # abi.ParamLocation per parameter (receiver / .dict included)
    regabi: bool
    bias: int
    allocate: Callable[[int], int] = None
    read_original: Callable[[int, int], bytes] = None
    conds: object = None     # stubs.conditions.Conditions (issue 10), None: every call
    counters: int = None     # runtime address of the conditions' counter block
    callouts: list = None    # file addresses the stub branches to (callout()): caves reach them

    @property
    def impl(self):
        """The stubs of the target's architecture (stubs/select.py): impl.plan_delay, ..."""
        from ..stubs.select import stub_arch
        return stub_arch(self.binary.goarch)

    def runtime(self, file_addr):
        return None if file_addr is None else file_addr + self.bias

    def symbol(self, name: str, why: str) -> int:
        addr = self.binary.symbol(name)
        if addr is None:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{name} is not in this binary (the linker dropped it as unused): "
                             f"{why}")
        return addr + self.bias

    def callout(self, name: str, why: str) -> int:
        """symbol() for code the stub branches to (time.Sleep, runtime.gopanic): the caves
        allocated afterwards must reach it too (arm64's B: +-128 MB)."""
        addr = self.symbol(name, why)
        self.callouts = (self.callouts or []) + [addr - self.bias]
        return addr


class CodeFaultExecutor(ReturnExecutor):
    fault = ""

    def plan(self, ctx, target: FaultTarget):
        raise NotImplementedError

    def describe(self, ctx) -> dict:
        """Extra result fields (the fault's parameters)."""
        return {}

    def create(self, ctx):
        from ..inspector import CaveAllocator, open_binary
        from ..session import ensure_session, target_paused
        from ..stubs.placement import FunctionCode
        from ..stubs.select import stub_arch

        binary = open_binary(pid=ctx.pid)
        # an action the target's arch has no stub for is refused before anything attaches
        # (ACTION_NOT_SUPPORT naming it: stubs/select.py; e.g. the generic guard on 386)
        getattr(stub_arch(binary.goarch), f"plan_{self.fault}")
        if not binary.has_dwarf:
            # Refused before anything attaches. dlv reads goroutines through the executable's
            # DWARF (runtime.g and allgs), and this fault needs every goroutine's stack: to
            # know none is still inside the stub when it is removed.
            raise BladeError(Code.PARAMETER_INVALID,
                             f"{self.fault} needs the target's executable with DWARF: "
                             f"{binary.path} has none ({binary.stripped}), so dlv cannot list "
                             "goroutines to see that none is still inside the fault when it is "
                             "removed; rebuild without -ldflags=-s/-w (return works on this "
                             "binary with --signature or --debug-binary)")
        fn = _find_out_of_line(binary, ctx.flags["func"])
        instance = check_injectable(binary, fn, ctx.flags["func"])  # runtime internals, shapes
        if instance is not None:  # only return's stub compares the dictionary so far
            raise BladeError(Code.PARAMETER_INVALID,
                             f"function {instance.instance} runs as the shape function "
                             f"{instance.shape}, shared with {', '.join(instance.others) or 'other instances'}; "
                             f"{self.fault} cannot fault one instance alone yet (return can)")
        inlined = binary.inlined_sites(fn.name)
        bias = binary.load_bias
        code = FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry + bias,
                                   binary.goarch, fn.name)
        abi = binary.abi
        target = FaultTarget(binary, fn, code, abi.param_locations(binary.signature(fn)),
                             abi.name.startswith("abi-internal"), bias)
        conds = _conditions(ctx, binary, fn)  # issues 10 and 19; None: every call
        with ctx.store.transaction() as state:
            _refuse_conflicts(state, ctx, fn)
            taken = _taken_ranges(state, ctx.pid, bias)
            notes = []
            for attempt in _attempts(ctx, conds):
                allocator = CaveAllocator(binary.caves(int3=False), taken=taken,
                                          **_reach(binary))
                target.callouts = []
                target.allocate = lambda n, a=allocator: a.allocate(
                    n, near=fn.entry, also=target.callouts) + bias
                # Originals come from the executable file; the session checks the live bytes.
                target.read_original = lambda addr, n: binary.read(addr - bias, n)
                try:
                    counters = _reserve_counters(binary, fn, target, attempt, taken)
                    plan = self.plan(ctx, target)
                except BladeError as e:
                    notes.append(e)
                    continue
                break
            else:
                raise notes[-1]
            patches = list(plan.patches)
            if counters is not None:
                patches.insert(1, counters)
            record = _record(fn, patches, binary)
            if counters is not None:
                record.update(conditions=target.conds.describe(), counters=counters.addr,
                              counters_layout=target.conds.layout(binary.goarch))
            record["target_start_time"] = start_time(ctx.pid)
            record["fault"] = self.fault
            state["experiments"][ctx.uid]["record"] = record

        session = ensure_session(ctx.pid, str(ctx.store.home))
        guard = {"function": [fn.entry + bias, fn.end + bias], "stacks": True}
        try:
            applied = session.apply(ctx.uid, patches, guard=guard)
        except BladeError:
            _release_quietly(session, ctx.uid)
            raise
        if ctx.timeout:
            session.watch(ctx.uid, ctx.timeout)
        result = {"function": fn.name, "entry": hex(fn.entry + bias), "fault": self.fault,
                  "patched_at": hex(plan.site), "stub": hex(plan.stub_addr),
                  "stub_size": plan.code_size, "data_size": plan.data_size,
                  "target_paused": target_paused(session, applied)}
        result.update(self.describe(ctx))
        if target.conds is not None:
            result["counters"] = hex(target.counters)
            if record["conditions"]:
                result["conditions"] = record["conditions"]
        if ctx.debug:
            result["listing"] = plan.listing
        owned = dict(record, result=result)
        _radius_warning(owned, result, target.conds, notes)
        if ctx.extra.get("callers") is not None:
            result["callers"] = ctx.extra["callers"].detail
        if inlined:  # all compile units; says when no direct call of the copy is left
            fields, warning = inlined_report(binary, fn, inlined)
            result.update(fields)
            owned["warnings"] = [warning]
        return owned

    def destroy(self, ctx, record):
        from ..session import ensure_session
        patches = trusted_patches(ctx.pid, record, ctx.uid)  # checked against the executable
        if not any(p.role == ARM for p in patches):
            return super().destroy(ctx, record)
        if start_time(ctx.pid) != record.get("target_start_time"):
            return {"restored": 0, "note": f"target process {ctx.pid} is gone; nothing to restore"}
        session = ensure_session(ctx.pid, str(ctx.store.home))
        final = _read_counters(ctx.pid, record) if record.get("counters") else {}
        # Disarm, wait for every goroutine to leave the delay, then restore (session/patching).
        done = session.revert(ctx.uid, patches, guard={"stacks": True, "drain": DRAIN_BOUND})
        session.release(ctx.uid)
        return dict(done, **final)


def _reserve_counters(binary, fn, target, conds, taken):
    """Reserve the counter block of `conds` (conditions, issue 10; --caller and the
    blast-radius table, issue 19) in the writable segment's free tail; None (and no
    condition code in the stub) for None."""
    from ..patch import DATA
    from ..stubs.conditions import COUNTERS_ALIGN
    from ..stubs.conditions_data import DataAllocator, data_cave
    target.conds, target.counters = conds, None
    if conds is None:
        return None
    data = DataAllocator(data_cave(binary.image), taken)
    size = conds.counters_size
    target.counters = data.allocate(size, COUNTERS_ALIGN, near=fn.entry) + target.bias
    return Patch(target.counters, bytes(size), conds.counters_image(binary.ptrsize), DATA)
