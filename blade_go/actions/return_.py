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
from ..denylist import check_injectable
from ..errors import BladeError, Code
from ..patch import CAVE, DATA, ROUTE, VALUE
from ..procfs import start_time
from ..state import CREATED, SUCCESS
from ..trust import parse_patches, trusted_patches
from . import Executor



class ReturnExecutor(Executor):
    def create(self, ctx):
        from ..inspector import CaveAllocator
        from ..inspector.references import inlined_report
        from ..inspector.typed import open_typed_binary
        from ..session import ensure_session, target_paused
        from ..stubs import BinaryResolver, parse_values
        from ..stubs.select import stub_arch

        # Stripped targets (-ldflags="-s -w") take their types from --signature/--debug-binary.
        binary = open_typed_binary(pid=ctx.pid, signature=ctx.flags.get("signature"),
                                   debug_binary=ctx.flags.get("debug-binary"),
                                   func=ctx.flags["func"])
        fn = _find_out_of_line(binary, ctx.flags["func"])
        # runtime internals are refused; a named generic instance whose shape function other
        # instances share gets a guard comparing its dictionary (stubs/instance_guard.py)
        instance = check_injectable(binary, fn, ctx.flags["func"])
        if instance is not None:
            fn = binary.find_function(instance.shape)
        inlined = binary.inlined_sites(fn.name)
        results = binary.result_locations(fn)
        values = parse_values(ctx.flags.get("value"), results, binary, func=fn.name)
        entry_original = _route_original(binary, fn)
        bias = binary.load_bias
        # conditions (issue 10), --caller and the blast-radius table (issue 19); None: the
        # plain stub
        conds = _conditions(ctx, binary, fn)

        # Plan and reserve in one state transaction: two creates on one process never pick
        # the same cave bytes, and the originals are on disk before anything is written.
        with ctx.store.transaction() as state:
            _refuse_conflicts(state, ctx, fn)
            taken = _taken_ranges(state, ctx.pid, bias)
            notes = []
            for attempt in _attempts(ctx, conds):
                allocator = CaveAllocator(binary.caves(int3=False), taken=taken,
                                          **_reach(binary))
                try:
                    if attempt is not None:
                        plan = _plan_conditional(ctx, binary, fn, results, values, attempt,
                                                 allocator, taken)
                    else:
                        plan = stub_arch(binary.goarch).plan_return(
                            results, values, arch=binary.goarch, ptrsize=binary.ptrsize,
                            resolve=BinaryResolver(binary),
                            allocate=lambda n: allocator.allocate(n, near=fn.entry) + bias,
                            entry=fn.entry + bias, entry_original=entry_original,
                            # Originals come from the executable file, never from memory that
                            # may already be patched; the session verifies the live bytes
                            # equal them before writing.
                            read_original=lambda addr, n: binary.read(addr - bias, n))
                except BladeError as e:
                    notes.append(e)
                    continue
                conds = attempt
                break
            else:
                raise notes[-1]
            patches = list(plan.patches)
            if instance is not None:
                patches = stub_arch(binary.goarch).guarded_patches(
                    patches, fn.entry + bias, binary.read(fn.entry, 32),
                    instance.dictionary + bias,
                    allocate=lambda n: allocator.allocate(n, near=fn.entry) + bias,
                    read_original=lambda addr, n: binary.read(addr - bias, n),
                    register=instance.register)
            record = _record(fn, patches, binary)
            if conds is not None:
                record.update(_conditions_record(ctx, conds, plan))
            record["target_start_time"] = start_time(ctx.pid)
            state["experiments"][ctx.uid]["record"] = record

        session = ensure_session(ctx.pid, str(ctx.store.home))
        try:
            # The function's code range: no branch in it may land inside the route bytes.
            applied = session.apply(ctx.uid, patches, guard={"function": [fn.entry + bias, fn.end + bias]})
        except BladeError:
            # Nothing was left written (the session undoes partial writes); let the session
            # detach now if no other experiment holds it, instead of idling attached.
            _release_quietly(session, ctx.uid)
            raise
        if ctx.timeout:
            session.watch(ctx.uid, ctx.timeout)
        result = {"function": fn.name, "entry": hex(fn.entry + bias),
                  "stub": hex(plan.stub_addr), "stub_size": plan.stub_size,
                  "data_size": plan.data_size,
                  "target_paused": target_paused(session, applied)}
        if instance is not None:
            result["instance"] = {"name": instance.instance, "dictionary":
                                  hex(instance.dictionary + bias),
                                  "other_instances_untouched": list(instance.others)}
        if conds is not None:
            result.update(counters=hex(plan.counters_addr), sites=[hex(a) for a in plan.sites])
            if record["conditions"]:
                result["conditions"] = record["conditions"]
        owned = dict(record, result=result)
        _radius_warning(owned, result, conds, notes)
        if ctx.extra.get("callers") is not None:
            result["callers"] = ctx.extra["callers"].detail
        if inlined:  # all compile units; says when no direct call of the copy is left
            fields, warning = inlined_report(binary, fn, inlined)
            result.update(fields)
            owned["warnings"] = [warning]
        if session.known.get("dlv_note"):  # e.g. an old dlv without unix sockets: TCP
            result["dlv_transport"] = session.known.get("dlv_transport")
            owned.setdefault("warnings", []).append(session.known["dlv_note"])
        if getattr(binary, "warnings", None):  # e.g. inlined sites unknown without DWARF
            owned.setdefault("warnings", []).extend(binary.warnings)
        return owned

    def destroy(self, ctx, record):
        from ..session import ensure_session
        patches = trusted_patches(ctx.pid, record, ctx.uid)  # checked against the executable
        if not patches:
            return {"restored": 0}
        if start_time(ctx.pid) != record.get("target_start_time"):
            # The process ended (or its pid now names another process): nothing of ours is
            # left in any live memory, and writing into a stranger would be harm.
            return {"restored": 0, "note": f"target process {ctx.pid} is gone; nothing to restore"}
        session = ensure_session(ctx.pid, str(ctx.store.home))
        final = _read_counters(ctx.pid, record) if record.get("counters") else {}  # conditions
        # A return stub is a leaf (loads and `ret`, or back into F): the session may restore
        # it in one stop, without a fixed settle (session/patching.py revert_in_one_stop).
        done = session.revert(ctx.uid, patches, guard={"leaf": True})
        session.release(ctx.uid)
        return dict(done, **final)

    def status(self, ctx, record):
        from ..session import connect_session
        session = connect_session(ctx.pid, str(ctx.store.home))
        facts = session.facts() if session else {"session": "absent"}
        facts["target_alive"] = start_time(ctx.pid) == record.get("target_start_time")
        route = [p for p in parse_patches(record, ctx.uid) if p.role == ROUTE]
        if route and facts["target_alive"]:
            live = _peek(ctx.pid, route[0].addr, len(route[0].replacement))
            if live is not None:
                facts["patch_in_place"] = live == route[0].replacement
        if record.get("counters") and facts["target_alive"]:
            facts.update(_read_counters(ctx.pid, record))
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


def _reach(binary) -> dict:
    """The cave allocator's reach: the arch's route branch (x86 rel32, arm64 B: stubs/select.py)."""
    from ..inspector.caves import route_reach
    return route_reach(binary.goarch)


def _route_original(binary, fn):
    """The bytes the entry route replaces (the arch's route_len: x86 `jmp rel32`, 5). A
    function shorter than the route may still take it when the bytes after it up to the
    route's end are the linker's padding (INT3 on x86: nothing runs there)."""
    from ..stubs.select import stub_arch
    impl = stub_arch(binary.goarch)
    original = binary.read(fn.entry, impl.route_len)
    size = fn.end - fn.entry
    if size < impl.route_len and any(b != impl.pad_byte for b in original[size:]):
        raise BladeError(Code.PARAMETER_INVALID,
                         f"function {fn.name} is {size} bytes long: too short for a "
                         f"{impl.route_len}-byte jump and not followed by padding")
    return original


def _live_on(exp, pid, started):
    """A live experiment on this very process (a reused pid names another process)."""
    # restore_pending: a failed create whose bytes may still be in place (experiment.py)
    return ((exp.get("status") in (CREATED, SUCCESS) or exp.get("restore_pending"))
            and exp.get("pid") == pid
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
    """Cave bytes other live experiments on this process hold (file addresses), and value
    caves destroyed experiments retained there (session/reclaim.py): never handed out again
    while the program may still read them."""
    taken, started = [], start_time(pid)
    for exp in state.get("experiments", {}).values():
        rec = exp.get("record") or {}
        if rec.get("retained") and exp.get("pid") == pid \
                and rec.get("target_start_time") == started:
            for p in rec["retained"]:
                lo = int(p["addr"]) - bias
                taken.append((lo, lo + len(p["replacement"]) // 2))
        if not _live_on(exp, pid, started):
            continue
        for p in rec.get("patches", []):
            if p.get("role") in (CAVE, VALUE, DATA):  # DATA: condition counters (writable)
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


# ----------------------------------------------------------------------------- conditions
# --effect-count, --effect-percent, --match and --after (issue 10): a condition prefix in the
# stub decides each call; its counters live in writable bytes that `status` reads live.

def _conditions(ctx, binary, fn, radius: bool = True):
    """Conditions for the experiment's flags, with the blast-radius table (issue 19) unless
    BLADE_GO_RADIUS=0 (the benchmarks' plain stub); None: neither."""
    import os
    from ..stubs.conditions_data import conditions_from_flags
    radius = radius and os.environ.get("BLADE_GO_RADIUS", "1") != "0"
    callers = _callers(ctx, binary)
    # parameter locations (the signature) only for --match: a stripped binary takes --caller
    # and the table without --signature
    params = binary.abi.param_locations(binary.signature(fn)) if ctx.flags.get("match") else ()
    return conditions_from_flags(ctx.flags, params, binary.ptrsize, fn.name, callers=callers,
                                 bias=binary.load_bias, radius=radius)


def _callers(ctx, binary):
    """inspector.callers.CallerCode for --caller (kept on ctx for the result), else None."""
    text, depth = ctx.flags.get("caller"), ctx.flags.get("caller-depth")
    if not text:
        if depth is not None:
            raise BladeError(Code.PARAMETER_ILLEGAL, "--caller-depth needs --caller")
        return None
    from ..inspector.callers import caller_code, check_depth
    check_depth(binary, int(depth or 1))
    ctx.extra["callers"] = caller_code(binary, text)
    return ctx.extra["callers"]


def _attempts(ctx, conds):
    """What to plan, best first: the conditions with the blast-radius table (16 sites); the
    same as a compact stub (subroutines: for small caves); 4 sites where the writable
    segment's last page has less room; without the table (no room for it, or a stub that
    needs more than the plain one); with no condition asked for, the plain stub as before."""
    from dataclasses import replace
    from ..stubs.conditions_data import wants_conditions
    if conds is None:
        return [None]
    from ..stubs.conditions import SMALL_SLOTS
    out = [conds]
    if conds.radius or conds.callers:  # the same code, smaller and a little slower
        out.append(replace(conds, compact=True))
    if conds.radius:
        out.append(replace(conds, radius_slots=SMALL_SLOTS, compact=True))  # a full page
        if wants_conditions(ctx.flags):
            out.append(replace(conds, radius=False))
        else:
            out.append(None)
    return out


def _radius_warning(owned, result, conds, notes):
    """Say when the blast radius is not recorded, and why (the first attempt's refusal), or
    when the stub had to be the compact one."""
    if conds is not None and conds.compact:
        result["stub_form"] = "compact: subroutines, for the small caves (" + \
            (notes[0].message if notes else "") + ")"
    if conds is not None and conds.radius:
        from ..stubs.conditions import SLOTS
        if conds.radius_slots < SLOTS:
            result["blast_radius"] = f"{conds.radius_slots} call sites (little room left)"
        return
    if not notes:
        return
    why = notes[0].message
    result["blast_radius"] = f"not recorded: {why}"
    owned.setdefault("warnings", []).append(f"blast radius not recorded: {why}")


def _plan_conditional(ctx, binary, fn, results, values, conds, allocator, taken):
    from ..stubs import BinaryResolver
    from ..stubs.conditions_data import DataAllocator, data_cave
    from ..stubs.placement import FunctionCode
    from ..stubs.select import stub_arch
    bias = binary.load_bias
    data = DataAllocator(data_cave(binary.image), taken)
    code = FunctionCode.decode(binary.read(fn.entry, fn.end - fn.entry), fn.entry + bias,
                               binary.goarch, fn.name)
    return stub_arch(binary.goarch).plan_conditional_return(
        results, values, conds, binary.goarch, binary.ptrsize, BinaryResolver(binary),
        allocate=lambda n: allocator.allocate(n, near=fn.entry) + bias,
        allocate_data=lambda n, align: data.allocate(n, align, near=fn.entry) + bias,
        code=code, read_original=lambda addr, n: binary.read(addr - bias, n),
        after=bool(ctx.flags.get("after")))


def _conditions_record(ctx, conds, plan):
    desc = conds.describe()
    if ctx.flags.get("after"):
        desc["after"] = True
    return {"conditions": desc, "counters": plan.counters_addr, "counters_layout": plan.layout}


def _read_counters(pid, record):
    from ..stubs.conditions import COUNTERS_SIZE, read_counters
    layout = record.get("counters_layout") or {}
    size = int(layout.get("size", COUNTERS_SIZE))
    raw = _peek(pid, int(record["counters"]), size)
    if raw is None or len(raw) < size:
        return {"counters": "unreadable"}
    out = read_counters(raw, layout)
    if layout.get("radius"):
        out.update(blast_radius(pid, record, raw, layout))
    return out


def blast_radius(pid, record, raw, layout) -> dict:
    """The call sites that reached the stub, from its table (issue 19), resolved to caller
    function and file:line (.gopclntab), most calls first. For a --caller experiment also
    the sites whose calls the check excluded."""
    from ..inspector import open_binary
    from ..inspector.pcline import positions
    from ..stubs.conditions import read_radius
    rows, overflow = read_radius(raw, layout)
    where = {}
    try:
        binary = open_binary(pid=pid)
        bias = binary.load_bias
        # a return address follows its call: the call's own position is one byte before
        where = {ra: pos for ra, pos in zip(
            [r["return_address"] for r in rows],
            positions(binary, [r["return_address"] - 1 - bias for r in rows]).values())}
    except (BladeError, OSError, ValueError):
        pass
    caller = bool((record.get("conditions") or {}).get("caller"))
    sites = []
    for r in rows:
        pos = where.get(r["return_address"])
        site = {"caller": pos[0] if pos else "?",
                "site": f"{pos[1]}:{pos[2]}" if pos else "?",
                "return_address": hex(r["return_address"]),
                "calls": r["calls"], "faulted": r["faulted"]}
        if caller:
            site["excluded_by_caller"] = r["excluded_by_caller"]
        if r["rejected_by_other_conditions"]:
            site["rejected_by_other_conditions"] = r["rejected_by_other_conditions"]
        sites.append(site)
    out = {"blast_radius": sites}
    if overflow:
        out["blast_radius_overflow"] = {
            "note": "calls from sites beyond the table's entries (counted, not told apart)",
            "calls": overflow["calls"], "faulted": overflow["faulted"]}
    if caller:
        out["excluded_callers"] = [{"caller": s["caller"], "site": s["site"],
                                    "calls": s["excluded_by_caller"]}
                                   for s in sites if s["excluded_by_caller"]]
    return out
