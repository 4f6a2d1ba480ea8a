"""The `return` action: every later call of a function returns the values the user asked for.

How one experiment reaches the target's bytes:
1. inspector: find F in the executable, its signature (DWARF) and where each result travels
   (ABI); refuse when F only exists inlined.
2. stubs: parse --value against the result types; plan a stub (code + data) that loads the
   values into the result locations and returns, placed in a cave, and a 5-byte `jmp rel32`
   at F's entry that routes every call into it. The plan is a list of Patch objects whose
   `original` bytes come from the executable file.
3. state: reserve the cave bytes and save the patches (originals included) *before* writing, so
   a crash at any later point can still be undone from the state file.
4. session: the per-target supervisor halts the target, checks that no thread or goroutine would
   resume inside the overwritten bytes, verifies the live bytes equal the originals, writes,
   reads back and resumes.
destroy hands the same patches back to the session, which restores routes first and caves last.
"""
from ..errors import BladeError, Code
from ..patch import CAVE, ROUTE, Patch
from ..procfs import start_time
from ..state import CREATED, SUCCESS
from . import Executor

JMP_REL32_LEN = 5
INT3 = 0xCC


class ReturnExecutor(Executor):
    def create(self, ctx):
        from ..inspector import CaveAllocator
        from ..inspector.typed import open_typed_binary
        from ..session import ensure_session
        from ..stubs import BinaryResolver, parse_values, plan_return

        # Stripped targets (-ldflags="-s -w") take their types from --signature/--debug-binary.
        binary = open_typed_binary(pid=ctx.pid, signature=ctx.flags.get("signature"),
                                   debug_binary=ctx.flags.get("debug-binary"),
                                   func=ctx.flags["func"])
        fn = _find_out_of_line(binary, ctx.flags["func"])
        inlined = binary.inlined_sites(fn.name)
        results = binary.result_locations(fn)
        values = parse_values(ctx.flags["value"], results, binary, func=fn.name)
        entry_original = _route_original(binary, fn)
        bias = binary.load_bias

        # Plan and reserve in one state transaction: two creates on one process never pick
        # the same cave bytes, and the originals are on disk before anything is written.
        with ctx.store.transaction() as state:
            _refuse_conflicts(state, ctx, fn)
            allocator = CaveAllocator(binary.caves(int3=False), taken=_taken_ranges(state, ctx.pid, bias))
            plan = plan_return(
                results, values, arch=binary.goarch, ptrsize=binary.ptrsize,
                resolve=BinaryResolver(binary),
                allocate=lambda n: allocator.allocate(n, near=fn.entry) + bias,
                entry=fn.entry + bias, entry_original=entry_original,
                # Originals come from the executable file, never from memory that may already
                # be patched; the session verifies the live bytes equal them before writing.
                read_original=lambda addr, n: binary.read(addr - bias, n))
            patches = list(plan.patches)
            record = _record(fn, patches, binary)
            record["target_start_time"] = start_time(ctx.pid)
            state["experiments"][ctx.uid]["record"] = record

        session = ensure_session(ctx.pid, str(ctx.store.home))
        try:
            # The function's code range: no branch in it may land inside the route bytes.
            session.apply(ctx.uid, patches, guard={"function": [fn.entry + bias, fn.end + bias]})
        except BladeError:
            # Nothing was left written (the session undoes partial writes); let the session
            # detach now if no other experiment holds it, instead of idling attached.
            _release_quietly(session, ctx.uid)
            raise
        if ctx.timeout:
            session.watch(ctx.uid, ctx.timeout)
        result = {"function": fn.name, "entry": hex(fn.entry + bias),
                  "stub": hex(plan.stub_addr), "stub_size": plan.stub_size,
                  "data_size": plan.data_size}
        owned = dict(record, result=result)
        if inlined:
            sites = [f"{s.caller} at {s.file}:{s.line}" for s in inlined]
            result["not_covered_inlined_sites"] = sites
            owned["warnings"] = [f"{len(sites)} call site(s) where the compiler inlined "
                                 f"{fn.name} keep the original behaviour: " + "; ".join(sites[:10])]
        if getattr(binary, "warnings", None):  # e.g. inlined sites unknown without DWARF
            owned.setdefault("warnings", []).extend(binary.warnings)
        return owned

    def destroy(self, ctx, record):
        from ..session import ensure_session
        patches = [Patch.from_json(p) for p in record.get("patches", [])]
        if not patches:
            return {"restored": 0}
        if start_time(ctx.pid) != record.get("target_start_time"):
            # The process ended (or its pid now names another process): nothing of ours is
            # left in any live memory, and writing into a stranger would be harm.
            return {"restored": 0, "note": f"target process {ctx.pid} is gone; nothing to restore"}
        session = ensure_session(ctx.pid, str(ctx.store.home))
        # A return stub is a leaf (loads and `ret`): the session may restore it in one stop.
        done = session.revert(ctx.uid, patches, guard={"leaf": True})
        session.release(ctx.uid)
        return done

    def status(self, ctx, record):
        from ..session import connect_session
        session = connect_session(ctx.pid, str(ctx.store.home))
        facts = session.facts() if session else {"session": "absent"}
        facts["target_alive"] = start_time(ctx.pid) == record.get("target_start_time")
        route = [Patch.from_json(p) for p in record.get("patches", []) if p.get("role") == ROUTE]
        if route and facts["target_alive"]:
            live = _peek(ctx.pid, route[0].addr, len(route[0].replacement))
            if live is not None:
                facts["patch_in_place"] = live == route[0].replacement
        return facts


def _release_quietly(session, uid):
    try:
        session.release(uid)
    except BladeError:
        pass  # the supervisor also detaches by itself when idle


def _record(fn, patches, binary):
    return {"function": fn.name, "entry": fn.entry + binary.load_bias,
            "patches": [p.to_json() for p in patches]}


def _find_out_of_line(binary, name):
    """F's out-of-line copy. When the linker dropped it because every call was inlined, say
    so and where, rather than 'not found'."""
    try:
        return binary.find_function(name)
    except BladeError as not_found:
        try:
            sites = binary.inlined_sites(name)
        except BladeError:
            sites = []
        if not sites:
            raise not_found
        listed = "; ".join(f"{s.caller} at {s.file}:{s.line}" for s in sites[:10])
        raise BladeError(Code.PARAMETER_INVALID,
                         f"function {name} exists only inlined into its callers ({listed}); "
                         f"there is no out-of-line copy to inject into") from None


def _route_original(binary, fn):
    """The bytes the entry jump replaces. A function shorter than the jump may still take it
    when the bytes after it up to the jump's end are the linker's INT3 padding (nothing runs
    there)."""
    original = binary.read(fn.entry, JMP_REL32_LEN)
    size = fn.end - fn.entry
    if size < JMP_REL32_LEN and any(b != INT3 for b in original[size:]):
        raise BladeError(Code.PARAMETER_INVALID,
                         f"function {fn.name} is {size} bytes long: too short for a "
                         f"{JMP_REL32_LEN}-byte jump and not followed by padding")
    return original


def _live_on(exp, pid, started):
    """A live experiment on this very process (a reused pid names another process)."""
    return (exp.get("status") in (CREATED, SUCCESS) and exp.get("pid") == pid
            and (exp.get("record") or {}).get("target_start_time") == started)


def _refuse_conflicts(state, ctx, fn):
    started = start_time(ctx.pid)
    for uid, exp in state.get("experiments", {}).items():
        if uid == ctx.uid or not _live_on(exp, ctx.pid, started):
            continue
        if (exp.get("record") or {}).get("function") == fn.name:
            raise BladeError(Code.PARAMETER_INVALID,
                             f"function {fn.name} in process {ctx.pid} is already the target of "
                             f"experiment {uid}; destroy it first")


def _taken_ranges(state, pid, bias):
    """Cave bytes other live experiments on this process hold (file addresses)."""
    taken, started = [], start_time(pid)
    for exp in state.get("experiments", {}).values():
        if not _live_on(exp, pid, started):
            continue
        for p in (exp.get("record") or {}).get("patches", []):
            if p.get("role") == CAVE:
                lo = int(p["addr"]) - bias
                taken.append((lo, lo + len(p["replacement"]) // 2))
    return taken


def _peek(pid, addr, n):
    """Read target memory without stopping it (status must not disturb the target)."""
    try:
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(addr)
            return mem.read(n)
    except OSError:
        return None
