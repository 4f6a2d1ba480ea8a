"""Functions blade-go refuses to replace, and why.

A `return` experiment turns a function into "load constants, return": its body, side effects
included, no longer runs. For user code that is the fault asked for. For the Go runtime it is
not: the compiler and the runtime call runtime code with invariants that no constant can keep
(`--func runtime.mallocgc --value nil` killed the target with a fatal runtime error within 2 s).
So the following are refused (47000, with the reason), decided from the symbol name and, where
the binary has DWARF, from the compile unit that holds the code, because runtime code is also
exported under other packages' names through go:linkname (`sync.runtime_Semacquire`,
`internal/poll.runtime_pollWait`, `reflect.unsafe_New`, `os.runtime_args` live in the CU
`runtime`):

- package `runtime` and the runtime's own subpackages (`runtime/internal/*` before Go 1.23,
  `internal/runtime/*` since), `runtime/cgo`, `runtime/race|msan|asan`, and every other package
  the runtime imports (`internal/abi`, `internal/bytealg`, `internal/cpu`, `internal/chacha8rand`,
  ... per `go list -deps runtime`): the runtime calls them on the system stack, without a
  goroutine, with locks held or preemption disabled. The families below are named in the
  refusal so the user sees which invariant is at stake:
  - allocation (mallocgc, newobject, makeslice, growslice, the mcache/mcentral/mheap): every
    `new`, `make`, append, string concatenation and conversion to an interface dereferences the
    result; a nil or constant pointer is a fatal error or silent memory sharing;
  - stack growth (morestack, newstack, copystack): called in every function prologue when the
    stack is short; returning early leaves a goroutine on a stack too small or half moved;
  - write barriers and typed memory moves (gcWriteBarrier, wbBuf, typedmemmove, memmove,
    bulkBarrierPreWrite): skipping one hides a live pointer from the collector: objects freed
    while in use, memory corruption later;
  - garbage collection (gcStart, gcDrain, markroot, scanobject, sweep, scavenge, finalizers):
    a step skipped leaves mark or sweep state inconsistent;
  - scheduling and locking (schedule, gopark, goready, newproc, mcall, systemstack,
    entersyscall/exitsyscall, lock/unlock, futex, notes, semaphores, netpoll, timers, channels):
    a stub breaks the goroutine/thread state machine: deadlocks or fatal errors;
  - signal handling (sighandler, sigtramp, sigprof, preemption signals): runs on the signal
    stack; async preemption, profiling and crash handling depend on its results;
  - panics and fatal errors (throw, fatal, gopanic, deferreturn, goexit): change how the
    process dies, or hide that it did;
  - compiler helpers (map access, type assertions, hashing, comparisons, string conversions):
    compiled code dereferences or trusts their results.
- `sync/atomic`'s functions and the methods of its Int32/Int64/Uint32/Uint64/Uintptr/Pointer/
  Bool types, and `math/bits` (imported by the runtime too): compiler intrinsics. Calls are
  compiled to instructions, so replacing the out-of-line copy changes almost nothing (a
  silent no-op) while the copies left are assembly. `atomic.Value`'s methods are ordinary
  functions and stay allowed.
- `sync.(*Mutex)` / `sync.(*RWMutex)` locking (and `internal/sync`, its implementation since
  Go 1.24): a skipped Lock pairs with an Unlock the runtime checks, and "fatal error: sync:
  unlock of unlocked mutex" is not a recoverable panic; a skipped Unlock deadlocks every later
  locker.

Allowed although they live in the runtime: exported functions only user code calls, whose
results the runtime never reads itself - NumGoroutine, NumCPU, NumCgoCall, GOMAXPROCS, GOROOT,
Version, Caller, Callers, CallersFrames, (*Frames).Next, FuncForPC, (*Func).Name/Entry/FileLine,
Stack, GC, ReadMemStats - and time.Sleep (runtime.timeSleep by linkname: returning at once is a
plain fault for the caller; the runtime never calls it).
"""
from __future__ import annotations

import re
from typing import Optional

from .errors import BladeError, Code
from .inspector.generics import package_of

# `go list -deps runtime` (Go 1.26), plus the names older releases used.
RUNTIME_DEPS = frozenset("""
runtime internal/goarch internal/abi internal/cpu internal/bytealg internal/byteorder
internal/chacha8rand internal/coverage/rtcov internal/godebugs internal/goexperiment internal/goos
internal/profilerecord internal/strconv internal/asan internal/msan internal/race
internal/stringslite internal/trace/tracev2 runtime/cgo runtime/race runtime/msan runtime/asan
""".split())
RUNTIME_PREFIXES = ("runtime/internal/", "internal/runtime/")
INTRINSIC_PACKAGES = ("sync/atomic", "math/bits")

ALLOWED = frozenset("""
runtime.NumGoroutine runtime.NumCPU runtime.NumCgoCall runtime.GOMAXPROCS runtime.GOROOT
runtime.Version runtime.Caller runtime.Callers runtime.CallersFrames runtime.(*Frames).Next
runtime.FuncForPC runtime.(*Func).Name runtime.(*Func).Entry runtime.(*Func).FileLine
runtime.Stack runtime.GC runtime.ReadMemStats time.Sleep
""".split())

# (pattern on the name after the package, family) - first match names the family.
FAMILIES = [
    (r"morestack|newstack|copystack|shrinkstack|stackalloc|stackfree|stackcache|adjust",
     "stack growth: called in function prologues when the stack is short; returning early "
     "leaves a goroutine on a stack too small or half moved"),
    (r"[wW]riteBarrier|wbBuf|typedmemmove|typedslicecopy|typedmemclr|bulkBarrier|memmove|"
     r"memclr", "write barriers and memory moves: skipping one hides a live pointer from the "
                "garbage collector (objects freed while in use)"),
    (r"malloc|newobject|newarray|makeslice|growslice|makemap|makechan|rawstring|rawbyteslice|"
     r"rawruneslice|persistentalloc|sysAlloc|sysMap|mcache|mcentral|mheap|mspan|nextFree|"
     r"largeAlloc|fixalloc|convT|concatstring",
     "allocation: every new, make, append, string concatenation and conversion to an "
     "interface dereferences its result; a constant or nil pointer is a fatal error or "
     "silently shared memory"),
    (r"^gc|\.gc|[^a-z]gc[A-Z]|mark|sweep|scanobject|scanstack|scanblock|greyobject|shade|"
     r"[fF]inalizer|scaveng|wbuf|gcWork",
     "garbage collection: a skipped step leaves mark or sweep state inconsistent"),
    (r"^sig|[^a-z]sig[a-zA-Z]|[sS]ignal|preempt",
     "signal handling: runs on the signal stack; preemption, profiling and crash handling "
     "depend on it"),
    (r"throw|fatal|panic|[rR]ecover|defer|[gG]oexit|crash|exit|abort|raise|traceback",
     "panics and fatal errors: replacing them changes how the process dies or hides it"),
    (r"schedule|[rR]unnable|gopark|goready|park_m|[gG]osched|newproc|mstart|mcall|systemstack|"
     r"syscall|[lL]ock|futex|note|[sS]ema|[hH]andoff|startm|stopm|wakep|runq|casgstatus|sysmon|"
     r"retake|execute|acquirep|releasep|netpoll|[tT]imer|[sS]leep|chansend|chanrecv|select|"
     r"yield|[pP]oll",
     "scheduling and locking: switches goroutines, threads and Ps, often without a goroutine "
     "or with locks held; a stub breaks that state machine (deadlock or fatal error)"),
    (r"[mM]ap|assert|getitab|itab|hash|[eE]qual|efaceeq|ifaceeq|cmpstring|stringtoslice|"
     r"slicebytetostring|intstring|rune|[cC]onv",
     "compiler helpers (map access, type assertions, hashing, comparisons, conversions): "
     "compiled code dereferences or trusts their results"),
]
GENERIC = ("runtime internals: the compiler and the runtime call this code on the system stack, "
           "without a goroutine, with locks held or preemption off, and rely on what it does")
SYNC_LOCKS = re.compile(r"^(sync|internal/sync)\.\(\*(Mutex|RWMutex)\)\."
                        r"(Lock|Unlock|TryLock|RLock|RUnlock|TryRLock|lockSlow|unlockSlow|"
                        r"rUnlockSlow)$")
ATOMIC_ALLOWED = re.compile(r"^sync/atomic\.(\(\*Value\)|Value)\.")


def _runtime_package(pkg: str) -> bool:
    return pkg in RUNTIME_DEPS or pkg.startswith(RUNTIME_PREFIXES)


def _family(rest: str) -> str:
    for pattern, why in FAMILIES:
        if re.search(pattern, rest):
            return why
    return GENERIC


def refusal(name: str, compile_unit: Optional[str] = None) -> Optional[str]:
    """Why function `name` (compiled in `compile_unit`, when known) must not be replaced, or
    None when it may be."""
    if name in ALLOWED:
        return None
    pkg = package_of(name)
    rest = name[len(pkg) + 1:]
    if SYNC_LOCKS.match(name):
        return ("mutex locking: a skipped Lock pairs with an Unlock the runtime checks ('fatal "
                "error: sync: unlock of unlocked mutex' is not recoverable) and a skipped Unlock "
                "deadlocks every later locker")
    if pkg in INTRINSIC_PACKAGES and not ATOMIC_ALLOWED.match(name):
        return ("compiler intrinsic: calls are compiled to machine instructions, so the "
                "out-of-line copy hardly ever runs (the experiment would silently do nothing)"
                + ("; the runtime uses it too" if pkg == "math/bits" else ""))
    if _runtime_package(pkg):
        what = ("the Go runtime" if pkg == "runtime" else "part of the Go runtime"
                if pkg.startswith(RUNTIME_PREFIXES) or pkg.startswith("runtime/")
                else "a package the Go runtime itself uses")
        return f"{pkg} is {what}; {_family(rest)}"
    if compile_unit and _runtime_package(compile_unit):
        return (f"its code is the runtime's (compile unit {compile_unit}, exported as {name} "
                f"through go:linkname); {_family(rest)}")
    return None


def check_injectable(binary, fn, requested: Optional[str] = None):
    """BladeError(47000) when fn (an inspector Function, resolved from the user's `requested`
    name) must not be replaced: runtime internals (above) or a generic instance that runs as a
    shared shape function and cannot be told apart (inspector/generics.py). Returns None, or an
    InstanceGuard when only the named instance of a shared shape function is to be faulted
    (fn is then the shape function: a wrapper is replaced by the shape it stands for)."""
    from .inspector.generics import generic_verdict
    why, guard = generic_verdict(binary, requested or fn.name, fn.name)
    if why:
        raise BladeError(Code.PARAMETER_INVALID, f"function {requested or fn.name} cannot be "
                                                 f"faulted alone: {why}")
    cu = None
    if getattr(binary, "has_dwarf", False):
        try:
            cu = binary.dwarf.compile_unit_of(fn.name, fn.entry)
        except (BladeError, AttributeError, ImportError):
            cu = None
    why = refusal(fn.name, cu)
    if why:
        raise BladeError(Code.PARAMETER_INVALID,
                         f"function {fn.name} cannot be replaced safely: {why}")
    return guard
