"""Runtime internals are refused with the reason (issue 7.6); user code and the few safe
runtime getters are not."""
import pytest

from blade_go.denylist import check_injectable, package_of, refusal
from blade_go.errors import BladeError, Code
from blade_go.inspector import open_binary


@pytest.mark.parametrize("name,family", [
    ("runtime.mallocgc", "allocation"), ("runtime.newobject", "allocation"),
    ("runtime.growslice", "allocation"), ("runtime.newstack", "stack growth"),
    ("runtime.morestack", "stack growth"), ("runtime.gcWriteBarrier2", "write barriers"),
    ("runtime.typedmemmove", "write barriers"), ("runtime.gcDrain", "garbage collection"),
    ("runtime.(*sweepLocked).sweep", "garbage collection"),
    ("runtime.sighandler", "signal handling"), ("runtime.schedule", "scheduling"),
    ("runtime.gopark", "scheduling"), ("runtime.throw", "panics and fatal errors"),
    ("runtime.mapaccess1_fast64", "compiler helpers"),
    ("runtime.findObject", "runtime internals"),
    ("internal/runtime/maps.(*Map).getWithKeySmall", "compiler helpers"),
    ("runtime/internal/atomic.Xadd", "part of the Go runtime"),
    ("internal/bytealg.IndexByteString", "a package the Go runtime itself uses"),
    ("runtime/cgo.Handle.Value", "part of the Go runtime"),
    ("sync/atomic.AddInt32", "compiler intrinsic"),
    ("sync/atomic.(*Int64).Add", "compiler intrinsic"),
    ("math/bits.Mul64", "the runtime uses it too"),
    ("sync.(*Mutex).Lock", "unlock of unlocked mutex"),
    ("sync.(*RWMutex).RUnlock", "mutex locking"),
    ("internal/sync.(*Mutex).Unlock", "mutex locking"),
])
def test_runtime_internals_are_refused_with_their_family(name, family):
    why = refusal(name)
    assert why and family in why, why


@pytest.mark.parametrize("name,cu", [
    ("sync.runtime_Semacquire", "runtime"), ("internal/poll.runtime_pollWait", "runtime"),
    ("reflect.unsafe_New", "runtime"), ("os.runtime_args", "runtime"),
])
def test_runtime_code_exported_by_linkname_is_refused_by_its_compile_unit(name, cu):
    assert refusal(name) is None  # the name alone says nothing ...
    assert "go:linkname" in refusal(name, cu)  # ... the compile unit does


@pytest.mark.parametrize("name", [
    "main.Query", "runtime.NumGoroutine", "runtime.GOMAXPROCS", "runtime.Callers", "runtime.GC",
    "time.Sleep", "sync/atomic.(*Value).Load", "sync.(*WaitGroup).Wait",
    "github.com/acme/runtime.F", "runtimex.F", "example.com/internal/runtime.F",
    "database/sql.(*DB).QueryContext", "net/http.(*Client).Do",
])
def test_user_code_and_safe_runtime_functions_are_allowed(name):
    assert refusal(name, package_of(name)) is None


def test_package_of():
    assert package_of("github.com/a/b.(*T[x.Y]).M") == "github.com/a/b"
    assert package_of("main.Max[go.shape.int]") == "main"
    assert package_of("internal/runtime/maps.(*Map).Get") == "internal/runtime/maps"


def test_compile_units_are_read_from_dwarf(e2e_binary):
    with open_binary(e2e_binary) as b:
        for name, cu in [("time.Sleep", "runtime"), ("internal/poll.runtime_pollWait", "runtime"),
                         ("main.Query", "main"), ("runtime.mallocgc", "runtime")]:
            fn = b.find_function(name)
            assert b.dwarf.compile_unit_of(fn.name, fn.entry) == cu
        fn = b.find_function("internal/poll.runtime_pollWait")
        with pytest.raises(BladeError) as e:
            check_injectable(b, fn, fn.name)
        assert e.value.code == Code.PARAMETER_INVALID and "compile unit runtime" in e.value.message
        check_injectable(b, b.find_function("time.Sleep"))


def test_create_refuses_runtime_mallocgc_and_leaves_the_target_alone(blade, e2e_binary,
                                                                     target_factory):
    target = target_factory(e2e_binary)
    resp = blade.fail("create", "go", "return", "--pid", target.pid, "--func",
                      "runtime.mallocgc", "--value", "nil")
    assert resp["code"] == Code.PARAMETER_INVALID
    assert "cannot be replaced safely" in resp["error"] and "allocation" in resp["error"]
    assert blade.ok("status", "--type", "create")[0]["status"] == "Error"
    mark = target.mark()
    target.send_line("call Query")
    target.wait_for_line(r"^Query => ", since=mark, timeout=10)
    assert target.alive()


def test_inspect_says_why_create_would_refuse(e2e_binary):
    from blade_go.inspector.report import inspect_report
    r = inspect_report(binary=str(e2e_binary), func="runtime.mallocgc")
    assert "allocation" in r["function"]["refused"]
    assert inspect_report(binary=str(e2e_binary), func="main.Query")["function"]["refused"] is None
