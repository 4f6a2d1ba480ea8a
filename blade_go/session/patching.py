"""Applying and reverting patches in a live target through a delve session.

The one rule that keeps the target alive: nothing may resume in the middle of bytes we rewrite.
A thread (or a goroutine parked by the scheduler, or one interrupted by an async-preemption
signal) whose saved PC lies strictly inside an overwritten range would, once resumed, decode the
new bytes from a position that is not an instruction boundary of the new code and execute
garbage. A PC exactly at a route's first byte is fine: it executes the new jump from its start.
Cave bytes are entered only through a route, so while a cave is removed no PC may lie anywhere
in it, its first byte included. Threads inside runtime signal handling are treated as unsafe
too: the signal frame on their stack holds an interrupted PC that delve does not report as the
thread's PC, whichever runtime function the handler is in at the halt (runtime.pcvalue under
sighandler, say), so the handler is looked for in every frame of a thread's stack, not only at
its top. In all these cases we let the target run a few milliseconds and look again.

A goroutine interrupted inside a function a fault stub tail-calls (time.Sleep: delay's `call H`
left a return address inside the route, H jumped to time.Sleep) is unsafe as well, wherever in
that function it stopped: delve unwinds the frame above an async-preemption or signal frame by
the frame pointer, which at the function's entry (before `push rbp; mov rbp, rsp`) is still
the caller's, so its stack trace skips straight to F's caller and the return address into the
route never shows. Restoring the route then made time.Sleep return into the middle of F's
original instruction (SIGSEGV; seen under load with 8 goroutines in a hot delayed function).

Values (patch.VALUE: a stub's data that the program may be handed, e.g. a returned string or
error) are not code: nothing executes them, but the program may keep pointers to them for as
long as it likes. They go back to the file's bytes only in a stop where no register and no word
of writable memory points into them; otherwise they are *retained* (left in place, inert, in
padding outside every function) and reported, and a later scan reclaims them (reclaim.py).

Every path that halted the target resumes it (try/finally): a target is never left stopped.
"""
import random
import re
import time

from ..errors import BladeError, Code
from ..patch import ARM, CAVE, DATA, ROUTE, VALUE, Patch
from .memory import read_bytes, write_bytes

SIGNAL_CODE_PREFIXES = ("runtime.sig", "runtime.asyncPreempt", "runtime.doSigPreempt")
# Frames that mean "the frame below was interrupted, not a caller": its PC can be anywhere,
# including a prologue, where delve's frame-pointer unwinding skips the real caller.
INTERRUPT_FRAMES = ("runtime.asyncPreempt", "runtime.sigtrampgo", "runtime.sigtramp")
# Signal handling somewhere on a thread's stack (sigtramp -> sigtrampgo -> sighandler -> ...).
SIGNAL_HANDLER_FRAMES = ("runtime.sigtramp", "runtime.sigtrampgo", "runtime.sighandler")
# What a fault stub jumps into (stubs/faults.py: delay tail-calls time.Sleep, panic
# runtime.gopanic) with a return address inside the route on the stack.
CALLOUT_TARGETS = ("time.Sleep", "runtime.gopanic")
MAX_ATTEMPTS = 20
# Drain (patches with an `arm` role): how long revert waits by default for goroutines to leave
# the fault (a delayed call still sleeping), and how often it looks.
DRAIN_BOUND = 30.0
DRAIN_POLL = 0.05


def _fn_name(loc: dict | None) -> str:
    fn = (loc or {}).get("function") or {}
    return fn.get("name") or ""


def unsafe_pcs(threads: list, goroutines: list, ranges: list[tuple[int, int]],
               include_start: bool, stacks: dict | None = None) -> list[str]:
    """Reasons why writing over ``ranges`` now would be unsafe (empty list: safe).

    ``ranges`` are half-open [lo, hi). With include_start False a PC equal to lo is allowed
    (route patches), with True it is not (cave removal). ``stacks`` maps goroutine id to frame
    PCs: goroutines parked by async preemption, and every goroutine when the patches' code calls
    out and so leaves return addresses on stacks. Threads in signal handling code are refused
    outright: the PC they will resume at is in a signal frame delve does not show us.
    """
    def inside(pc: int) -> bool:
        return any((lo <= pc < hi) if include_start else (lo < pc < hi) for lo, hi in ranges)

    reasons = []
    for t in threads:
        name = _fn_name(t)
        if name.startswith(SIGNAL_CODE_PREFIXES):
            reasons.append(f"thread {t.get('id')} is in signal handling code ({name})")
        elif inside(t.get("pc", 0)):
            reasons.append(f"thread {t.get('id')} is at {t['pc']:#x}, inside a patched range")
    for g in goroutines:
        for key in ("currentLoc", "userCurrentLoc"):
            loc = g.get(key) or {}
            if inside(loc.get("pc", 0)):
                reasons.append(f"goroutine {g.get('id')} {key} {loc['pc']:#x} is inside a patched range")
    for gid, frames in (stacks or {}).items():
        below = ""
        for f in frames:  # delve Stackframes
            pc, name = f.get("pc", 0), _fn_name(f)
            if inside(pc):
                reasons.append(f"goroutine {gid} has a return address {pc:#x} inside a patched range")
            if name.startswith(SIGNAL_HANDLER_FRAMES):
                reasons.append(f"goroutine {gid} runs on a thread in a signal handler ({name})")
                break
            if below.startswith(INTERRUPT_FRAMES) and name in CALLOUT_TARGETS:
                reasons.append(f"goroutine {gid} was interrupted at {pc:#x} in {name}, where dlv "
                               "may not show its caller (a route's return address)")
            below = name
    return reasons


def _kinds(reasons: list[str]) -> str:
    """The distinct kinds among unsafe-stop reasons (ids and addresses blanked), for the log."""
    return "; ".join(sorted({re.sub(r"0x[0-9a-f]+|\d+", "N", r) for r in reasons}))


def stacks_to_check(client, goroutines: list, all_stacks: bool, depth: int) -> dict:
    """Goroutine id -> its frames (delve Stackframes), for the goroutines whose stack must be
    looked at: all of them when the patches' code calls out (return addresses into a route),
    else those parked by async preemption and those whose thread is in runtime code, which may
    be a signal handler's callee with an interrupted PC in its signal frame."""
    def wanted(g) -> bool:
        name = _fn_name(g.get("currentLoc"))
        return (all_stacks or name.startswith(SIGNAL_CODE_PREFIXES)
                or (bool(g.get("threadID")) and name.startswith("runtime.")))
    return {g["id"]: client.stacktrace(g["id"], depth if all_stacks else 16)
            for g in goroutines if wanted(g)}


def branches_into(instructions: list, routes: list[Patch]) -> list[str]:
    """Branches of the patched function that land strictly inside a route's bytes.

    A goroutine already running in the function's body when the route is written may still
    jump back to such a target (a loop head near the entry) and would land mid-instruction.
    """
    reasons = []
    for ins in instructions:
        dest = (ins.get("DestLoc") or {}).get("pc")
        if dest and any(r.addr < dest < r.end for r in routes):
            pc = (ins.get("Loc") or {}).get("pc", 0)
            reasons.append(f"the instruction at {pc:#x} ({ins.get('Text', '').strip()}) "
                           f"branches to {dest:#x}, inside the entry bytes to be replaced")
    return reasons


def _torn(live: bytes, p: Patch) -> bool:
    """A write of ours cut short (its writer died): every byte is the original's or ours."""
    return all(b in (o, r) for b, o, r in zip(live, p.original, p.replacement))


NO_GOROUTINES = "could not find goroutine array"


def goroutines_or_none(client, need_stacks: bool):
    """Every goroutine, or None when dlv cannot list them (it finds `runtime.allgs` through
    DWARF, absent from a `-s -w` executable).

    Without goroutines only the threads are checked, which is enough for patches whose code
    never calls out (return stubs): a goroutine not running on a thread resumes at a PC the
    scheduler saved, and no such PC lies strictly inside a route or anywhere in a cave: a
    route covers the first 5 bytes of a function, its stack-check prologue, which the compiler
    marks as not async-preemptible; caves lie outside every function, where the runtime never
    preempts; a stub is a leaf, so no goroutine has a return address into it; and morestack
    restarts a function at its entry, which a route patch may hold. Code that calls out
    (guard "stacks") leaves return addresses on goroutine stacks and is refused instead.
    """
    from .delve_client import DelveError
    try:
        return client.list_goroutines()
    except DelveError as e:
        if NO_GOROUTINES not in str(e):
            raise
        if need_stacks:
            raise BladeError(Code.ACTION_NOT_SUPPORT,
                             "this action needs every goroutine's stack, and dlv cannot list "
                             "goroutines of an executable without DWARF "
                             "(-ldflags=\"-s -w\")") from None
        return None


NOT_SCANNED = "no scan possible: "


def retained_facts(held: dict) -> dict:
    """What a result says about value caves left in place: {patch: reason} ->
    {"retained": [{"addr", "size", "reason"}], "retained_bytes": n} (both empty when none)."""
    items = sorted(held.items(), key=lambda kv: kv[0].addr)
    return {"retained": [{"addr": hex(p.addr), "size": len(p.replacement),
                          "reason": ("no scan possible" if why.startswith(NOT_SCANNED)
                                     else "references found") + f": {why.removeprefix(NOT_SCANNED)}"}
                         for p, why in items],
            "retained_bytes": sum(len(p.replacement) for p, _ in items)}


class Patcher:
    """Halts, checks, writes, verifies and resumes; ``client`` is a DelveClient."""

    def __init__(self, client, log=print):
        self.client = client
        self.log = log

    def resume(self):
        try:
            self.client.continue_async()
        except Exception as e:  # dlv gone: the supervisor notices and handles it
            self.log(f"continue failed: {e}")

    def _gather(self, guard):
        c = self.client
        all_stacks = bool(guard and guard.get("stacks"))
        gs = goroutines_or_none(c, all_stacks)
        if gs is None:  # dlv without DWARF: the threads are all there is (see the function)
            return c.list_threads(), [], None
        depth = (guard or {}).get("depth", 32)
        # A goroutine stopped by async preemption sits in runtime.asyncPreempt2 waiting to be
        # rescheduled; the PC it was interrupted at is a frame of its stack (usually, but not
        # when it is a runtime function, its userCurrentLoc). Check its frames.
        return c.list_threads(), gs, stacks_to_check(c, gs, all_stacks, depth)

    def _snapshot(self, ranges, include_start, guard, gathered=None):
        threads, gs, stacks = gathered or self._gather(guard)
        return unsafe_pcs(threads, gs, ranges, include_start, stacks)

    def halt_when_safe(self, patches: list[Patch], include_start: bool, guard=None,
                       inside: list[Patch] = (), attempts: int = MAX_ATTEMPTS) -> int:
        """Halt the target at a moment where no PC is inside the patches (nor anywhere inside
        the `inside` ones, start included); returns attempts."""
        ranges = [(p.addr, p.end) for p in patches]
        extra = [(p.addr, p.end) for p in inside]
        reasons, last = [], []
        for attempt in range(1, attempts + 1):
            state = self.client.halt()
            if state.get("exited"):
                raise BladeError(Code.PROCESS_NOT_EXIST, "target process exited "
                                 f"(status {state.get('exitStatus')})")
            seen = self._gather(guard)
            reasons = self._snapshot(ranges, include_start, guard, seen)
            if extra:
                reasons += self._snapshot(extra, True, guard, seen)
            if not reasons:
                if attempt > 1:  # why it waited: the kinds of reason of the last unsafe stop
                    self.log(f"safe after {attempt} stops; before: {_kinds(last)}")
                return attempt
            last = reasons
            self.resume()
            time.sleep(random.uniform(0.002, 0.010))
        self.client.halt()  # stay halted so the caller's finally resumes exactly once
        raise BladeError(Code.UNEXPECTED_STATUS, "the target keeps executing inside the bytes to be "
                         f"patched after {attempts} attempts: " + "; ".join(reasons[:3]))

    def _write_verified(self, p: Patch, data: bytes):
        write_bytes(self.client, p.addr, data)
        back = read_bytes(self.client, p.addr, len(data))
        if back != data:
            raise BladeError(Code.UNEXPECTED_STATUS, f"read back at {p.addr:#x} gives {back.hex()}, "
                                                     f"expected {data.hex()}")

    def apply(self, patches: list[Patch], guard=None) -> dict:
        first = (CAVE, VALUE)  # stub code and its data before anything routes into them
        ordered = [p for p in patches if p.role in first] + [p for p in patches
                                                            if p.role not in first]
        routes = [p for p in patches if p.role == ROUTE]
        written: list[Patch] = []
        t0 = time.monotonic()
        ledger = getattr(self.client, "stops", [])  # DelveClient's halt->continue times
        stops = len(ledger)
        try:
            attempts = self.halt_when_safe(routes, include_start=False, guard=guard)
            fn_range = (guard or {}).get("function")
            if fn_range and routes:
                bad = branches_into(self.client.disassemble(*fn_range), routes)
                if bad:
                    raise BladeError(Code.PARAMETER_INVALID,
                                     "cannot route this function safely: " + "; ".join(bad[:3]))
            for p in ordered:
                live = read_bytes(self.client, p.addr, len(p.original))
                if live != p.original:
                    raise BladeError(Code.UNEXPECTED_STATUS,
                                     f"bytes at {p.addr:#x} differ from the executable "
                                     f"({live.hex()} != {p.original.hex()}): already patched by "
                                     "another tool?")
            for p in ordered:
                written.append(p)
                self._write_verified(p, p.replacement)
        except Exception:
            self._undo(written)
            raise
        finally:
            self.resume()
        return {"patches": len(patches), "written": sum(len(p.replacement) for p in patches),
                "verified": True, "attempts": attempts,
                "elapsed_ms": round((time.monotonic() - t0) * 1000, 2),
                "stops_ms": ledger[stops:]}

    def _undo(self, written: list[Patch]):
        for p in reversed(written):
            try:
                write_bytes(self.client, p.addr, p.original)
            except Exception as e:  # keep undoing the rest; report through the log
                self.log(f"undo of {p.addr:#x} failed: {e}")

    def _restore(self, group: list[Patch]) -> int:
        n = 0
        for p in group:
            live = read_bytes(self.client, p.addr, len(p.original))
            if live == p.original:
                continue
            if live != p.replacement and not _torn(live, p) and p.role != DATA:  # a stub's counters change live
                raise BladeError(Code.UNEXPECTED_STATUS,
                                 f"bytes at {p.addr:#x} are neither the experiment's nor the "
                                 f"original ({live.hex()}): changed by another tool? not restored")
            self._write_verified(p, p.original)
            n += len(p.original)
        return n

    # Values a stub returned point into its cave (string bytes, error structs). A goroutine
    # preempted between the call and its use of the value reads the cave after the route is
    # gone, so caves are removed only after the target ran freely for a while: a runnable
    # goroutine waits a few 10 ms scheduler slices to run again; 0.5 s covers that with margin
    # under GC pressure (measured: 50 ms was not enough with 8 busy goroutines on 2 cores).
    SETTLE = 0.5

    def revert(self, patches: list[Patch], guard=None, settle: float | None = None) -> dict:
        """Restore the original bytes: arms (disarm), drain, routes, settle, caves.

        With `arm` patches (a stub that calls out, e.g. delay: goroutines may sleep in it with
        a return address inside the route), the stub is disarmed first, then `drain` waits
        until no goroutine's stack or thread holds a PC inside the patches (up to
        guard["drain"] seconds, DRAIN_BOUND by default), and every later check covers all
        goroutine stacks. A drain that runs out raises, leaving the experiment disarmed (no
        new call is affected) and its bytes in place; reverting again resumes the wait.
        """
        arms = [p for p in patches if p.role == ARM]
        if settle is None and (guard or {}).get("leaf") and not (guard or {}).get("stacks") \
                and not arms:
            # The caller vouches that its stubs are leaves (return): no settle needed.
            return self.revert_in_one_stop(patches, guard)
        routes = [p for p in patches if p.role == ROUTE]
        values = [p for p in patches if p.role == VALUE]
        caves = [p for p in patches if p.role not in (ROUTE, ARM, VALUE)]
        restored = 0
        t0 = time.monotonic()
        drained = None
        attempts = MAX_ATTEMPTS
        if arms:
            # disarmed, nothing new can get stuck in there: keep trying for longer than usual
            # (8 goroutines calling F in a tight loop keep passing through the stub)
            attempts = MAX_ATTEMPTS * 10
            try:
                state = self.client.halt()
                if state.get("exited"):
                    raise BladeError(Code.PROCESS_NOT_EXIST, "target process exited")
                restored += self._restore(arms)
            except BaseException:
                self.resume()
                raise
            guard = dict(guard or {}, stacks=True)
            # The first look is taken in the stop that disarmed: who was inside at that moment
            # (a later stop may find the sleepers already gone on a slow machine).
            drained = self.drain(routes, caves, float(guard.get("drain") or DRAIN_BOUND), guard,
                                 halted=True)
        if routes:
            try:
                # Nor in a cave: a stub that was called from the route (delay's `call H`) would
                # return into the route's bytes, which are F's original instructions again.
                # delve cannot unwind a cave PC, so that return address is invisible to
                # the stack check; being in a stub that returns to F's caller (return) is
                # merely waited out.
                self.halt_when_safe(routes, include_start=False, guard=guard, inside=caves,
                                    attempts=attempts)
                restored += self._restore(routes)
            finally:
                self.resume()
            # Let threads already inside a stub run out of it before its bytes go away.
            time.sleep(self.SETTLE if settle is None else settle)
        if caves:
            try:
                self.halt_when_safe(caves, include_start=True, guard=guard, attempts=attempts)
                restored += self._restore(caves)
            finally:
                self.resume()
        freed, retained = self._release_values(values, time.monotonic() + self.HOLD_WAIT)
        out = {"restored": restored + freed, "verified": True,
               "elapsed_ms": round((time.monotonic() - t0) * 1000, 2)}
        if values:  # what became of them: "retained" lists those left in place
            out.update(retained_facts(retained))
        if drained:
            out.update(drained)
        return out

    def drain(self, routes: list[Patch], caves: list[Patch], bound: float, guard=None,
              halted: bool = False) -> dict:
        """Wait (target running) until no thread PC and no goroutine frame lies inside the
        routes (strictly) or the caves; returns {"drain_ms", "drain_waited_for"}. halted: the
        target is stopped already (the first look is taken in that stop)."""
        t0 = time.monotonic()
        first = None
        last = []
        deadline = t0 + bound
        while True:
            try:
                if not halted:
                    state = self.client.halt()
                    if state.get("exited"):
                        raise BladeError(Code.PROCESS_NOT_EXIST, "target process exited "
                                         f"(status {state.get('exitStatus')})")
                halted = False
                seen = self._gather(guard)
                reasons = self._snapshot([(p.addr, p.end) for p in routes], False, guard, seen)
                reasons += self._snapshot([(p.addr, p.end) for p in caves], True, guard, seen)
            finally:
                self.resume()
            goroutines = {r.split()[1] for r in reasons if r.startswith("goroutine")}
            if first is None:
                first = len(goroutines)
            if not reasons:
                if last:  # why it waited: the kinds of reason of the last unsafe look
                    self.log(f"drained; before: {_kinds(last)}")
                return {"drain_ms": round((time.monotonic() - t0) * 1000, 2),
                        "drain_waited_for": first}
            last = reasons
            if time.monotonic() > deadline:
                raise BladeError(Code.UNEXPECTED_STATUS,
                                 f"after {bound:.0f}s {len(goroutines)} goroutine(s) are still "
                                 "inside the fault (a delayed call still sleeping?); it is "
                                 "disarmed, so no new call is affected: destroy again later. "
                                 + "; ".join(reasons[:3]))
            time.sleep(DRAIN_POLL)

    # -- destroy without a fixed settle (issue 11) ----------------------------------------------
    # How long a destroy keeps looking (a stop every VALUE_POLL) for the program to drop values
    # that point into a value cave before it retains them instead: a goroutine between a call
    # and its use of the result, or a stale copy in a register, usually goes within a few
    # scheduler slices. Past it the bytes are retained, never overwritten (issue 16).
    HOLD_WAIT = SETTLE
    VALUE_POLL = 0.05

    def revert_in_one_stop(self, patches: list[Patch], guard=None) -> dict:
        """Restore routes and code caves at moments proven safe, with no fixed settle; values
        once unreferenced, else retain them.

        Code: once a route's bytes are the original again no call can enter its stub, and the
        stub may go when nothing is *in* it: no thread's PC in the cave (first byte included)
        or strictly inside a route, no thread in signal handling (its interrupted PC is in a
        signal frame we cannot see), no goroutine parked at a PC there (the runtime never
        preempts outside a Go function, and caves are outside all of them; goroutines
        stopped by async preemption have their frames checked), and none can return into a
        stub: a return stub is a leaf (loads and `ret`), so no return address points into a
        cave. Only used when the caller says so (guard {"leaf": true}); stubs that call out
        (a delay's time.Sleep) leave return addresses on stacks and need a drain instead.
        Routes and code are restored, byte for byte, in the first stop that allows it.
        Values (patch.VALUE): a stub's results may point into them (string bytes, the
        errorString of an `error:` value); such values already returned must stay valid, so a
        value cave is restored only in a stop where no thread register and no word of the
        process's writable memory points into it (references.py). Still referenced after
        HOLD_WAIT, or not scannable within a halt's budget: retained (listed in the result's
        `retained`), never overwritten; session/reclaim.py restores it later, once proven free.
        """
        routes = [p for p in patches if p.role == ROUTE]
        values = [p for p in patches if p.role == VALUE]
        caves = [p for p in patches if p.role not in (ROUTE, VALUE)]
        t0 = time.monotonic()
        restored, reasons, routes_done = 0, [], not routes
        attempts = unsafe = 0
        while True:
            attempts += 1
            state = self.client.halt()
            try:
                if state.get("exited"):
                    raise BladeError(Code.PROCESS_NOT_EXIST, "target process exited "
                                     f"(status {state.get('exitStatus')})")
                route_bad, cave_bad = self._both_snapshots(routes, caves)
                if not routes_done and not route_bad:
                    restored += self._restore(routes)
                    routes_done = True
                reasons = route_bad if not routes_done else cave_bad
                if routes_done and not cave_bad:
                    restored += self._restore(caves)
                    # this same stop: values nothing points to go at once
                    freed, held = self._free_values(values)
                    restored += freed
                    break
                unsafe += 1  # a PC in the way
            finally:
                self.resume()
            if unsafe >= MAX_ATTEMPTS:
                raise BladeError(Code.UNEXPECTED_STATUS, "the target keeps executing inside the "
                                 f"bytes to be restored after {attempts} attempts: "
                                 + "; ".join(reasons[:3]))
            time.sleep(random.uniform(0.005, 0.015))
        retained = held
        if held and not any(r.startswith(NOT_SCANNED) for r in held.values()):
            freed, retained = self._release_values(list(held), t0 + self.HOLD_WAIT)
            restored += freed
        self.log(f"revert: {attempts} stop(s), {(time.monotonic() - t0) * 1000:.0f} ms"
                 + (f", {len(retained)} value cave(s) still referenced: retained"
                    if retained else ""))
        out = {"restored": restored, "verified": True,
               "elapsed_ms": round((time.monotonic() - t0) * 1000, 2)}
        if values:  # what became of them: "retained" lists those left in place
            out.update(retained_facts(retained))
        return out

    def _release_values(self, values: list[Patch], until: float) -> tuple[int, dict]:
        """Restore value caves as stops prove them unreferenced, one stop every VALUE_POLL,
        until none is left or `until` (monotonic) passed; (bytes restored, {patch: reason}
        for those retained). At least one stop when there is anything to look at."""
        restored, held = 0, {p: "" for p in values}
        while held:
            state = self.client.halt()
            try:
                if state.get("exited"):
                    raise BladeError(Code.PROCESS_NOT_EXIST, "target process exited "
                                     f"(status {state.get('exitStatus')})")
                freed, held = self._free_values(list(held))
                restored += freed
            finally:
                self.resume()
            if not held or time.monotonic() >= until or \
                    any(r.startswith(NOT_SCANNED) for r in held.values()):
                break
            time.sleep(self.VALUE_POLL)
        return restored, held

    def reclaim(self, values: list[Patch]) -> dict:
        """One stop: restore the retained value caves nothing points to any more; the rest stay
        retained. {"reclaimed": bytes, "reclaimed_at": [addrs], "retained": [...]}."""
        if not values:
            return {"reclaimed": 0, "reclaimed_at": [], **retained_facts({})}
        freed, held = self._release_values(values, 0)
        return {"reclaimed": freed,
                "reclaimed_at": [hex(p.addr) for p in values if p not in held],
                **retained_facts(held)}

    def _free_values(self, values: list[Patch]) -> tuple[int, dict]:
        """In a stop: restore the value caves no register and no word of writable memory
        points into; (bytes restored, {patch: why it is retained} for the others)."""
        if not values:
            return 0, {}
        held = self._held_values([(p.addr, p.end) for p in values])
        restored = self._restore([p for i, p in enumerate(values) if i not in held])
        return restored, {p: held[i] for i, p in enumerate(values) if i in held}

    def _held_values(self, ranges) -> dict:
        """{index in ranges: why it may still be referenced} (registers, then memory)."""
        from .references import TooLarge, referenced, register_referenced
        held = register_referenced(self.client, ranges)
        rest = [i for i in range(len(ranges)) if i not in held]
        if not rest:
            return held
        pid = getattr(self.client, "proc_pid", None)
        if pid is None:
            pid = self.client.proc_pid = self.client.call("ProcessPid", {})["Pid"]
        with open(f"/proc/{pid}/exe", "rb") as exe:
            ptrsize = 4 if exe.read(5)[4] == 1 else 8  # ELF class: 32- or 64-bit words
        try:
            found = referenced(pid, [ranges[i] for i in rest], ptrsize)
        except TooLarge as e:  # not scanned within a halt's budget: retained, not guessed
            return {**held, **{i: f"{NOT_SCANNED}{e}" for i in rest}}
        return {**held, **{rest[k]: why for k, why in found.items()}}

    def _both_snapshots(self, routes, caves):
        """unsafe_pcs for routes (PC at the first byte allowed) and caves (not), one listing."""
        c = self.client
        gs = goroutines_or_none(c, False)
        threads = c.list_threads()
        stacks = stacks_to_check(c, gs, False, 16) if gs else None
        gs = gs or []
        return (unsafe_pcs(threads, gs, [(p.addr, p.end) for p in routes], False, stacks),
                unsafe_pcs(threads, gs, [(p.addr, p.end) for p in caves], True, stacks))
