"""Generic instances (issue 7.8b): a named instance never silently picks the shared shape
function or a wrapper nobody calls; both spellings of a type argument give the same answer."""
import pytest

from blade_go.denylist import check_injectable
from blade_go.errors import BladeError, Code
from blade_go.inspector import open_binary
from blade_go.inspector.generics import Generics
from tests.support.fixtures import build_fixture
from tests.support.targets import call, differences_beyond_retained

HOOK_SHAPE = "main.(*Hook[go.shape.*uint8]).Trigger"
HOOK_A = "main.(*Hook[*example.com/gen/core.A]).Trigger"
HOOK_B = "main.(*Hook[*example.com/gen/core.B]).Trigger"


@pytest.fixture(scope="module")
def gbin():
    return build_fixture("generics_target")


def _refusal(b, name):
    with pytest.raises(BladeError) as e:
        check_injectable(b, b.find_function(name), name)
    assert e.value.code == Code.PARAMETER_INVALID
    return e.value.message


def test_dictionaries_tell_the_instances_of_each_shape(gbin):
    with open_binary(gbin) as b:
        g = Generics(b)
        assert g.instances(HOOK_SHAPE) == [HOOK_A, HOOK_B]
        assert g.instances("main.Max[go.shape.int]") == ["main.Max[int]", "main.Max[main.Celsius]"]
        assert g.instances("main.Max[go.shape.string]") == ["main.Max[string]"]


SHARED = [
    (["main.(*Hook[*core.A]).Trigger", HOOK_A], HOOK_A, HOOK_SHAPE, True),
    (["main.(*Hook[*core.B]).Trigger", HOOK_B], HOOK_B, HOOK_SHAPE, False),
    (["main.Max[int]"], "main.Max[int]", "main.Max[go.shape.int]", False),
    (["main.Max[Celsius]", "main.Max[main.Celsius]"], "main.Max[main.Celsius]",
     "main.Max[go.shape.int]", False),
]


@pytest.mark.parametrize("spellings,instance,shape,wrapper", SHARED)
def test_a_named_instance_of_a_shared_shape_gets_a_dictionary_guard(gbin, spellings, instance,
                                                                     shape, wrapper):
    with open_binary(gbin) as b:
        for name in spellings:  # short and full package paths: the same instance
            guard = check_injectable(b, b.find_function(name), name)
            assert (guard.instance, guard.shape) == (instance, shape)
            assert guard.dictionary == b.symtab.data[
                instance.split(".", 1)[0] + "..dict." +
                instance.split(".", 1)[1].lstrip("(*").replace(").Trigger", "")][0]
            assert instance not in guard.others and len(guard.others) == 1


@pytest.mark.parametrize("spellings,instance,shape,wrapper", SHARED)
def test_without_the_register_abi_a_shared_shape_or_a_wrapper_is_refused(spellings, instance,
                                                                         shape, wrapper):
    with open_binary(build_fixture("generics_target", goarch="386")) as b:
        for name in spellings:
            msg = _refusal(b, name)
            assert f"--func '{shape}'" in msg and "register ABI" in msg, msg
            if shape == HOOK_SHAPE:
                assert HOOK_A in msg and HOOK_B in msg  # the shape's instances are listed
            if wrapper and "example.com" in name:
                assert "only a wrapper" in msg  # the full spelling finds the wrapper symbol
            elif not wrapper:
                assert "shared by 2 instance(s)" in msg


def test_the_shape_itself_and_a_shape_with_one_instance_are_accepted(gbin):
    with open_binary(gbin) as b:
        check_injectable(b, b.find_function(HOOK_SHAPE), HOOK_SHAPE)
        fn = b.find_function("main.Max[string]")
        assert fn.name == "main.Max[go.shape.string]"
        check_injectable(b, fn, "main.Max[string]")


def test_a_named_instance_faults_only_itself(blade, gbin, target_factory):
    """8 goroutines of the shape are not needed to show it: each instance is called through
    the same shape function; only the named one returns the injected value."""
    target = target_factory(gbin)
    before = {n: call(target, n) for n in ("HookA", "HookB", "HookIface", "MaxInt",
                                           "MaxCelsius", "MaxString")}
    for name, value, changed in [
            ("main.Max[int]", "9", {"MaxInt": "9"}),
            ("main.Max[Celsius]", "-4", {"MaxCelsius": "-4"}),
            ("main.(*Hook[*core.A]).Trigger", "77", {"HookA": "77", "HookIface": "77"}),
            (HOOK_B, "-1", {"HookB": "-1"}),  # full spelling, no wrapper symbol
            ("main.Max[string]", "chaos", {"MaxString": "chaos"})]:  # alone in its shape
        result = blade.create_return(target.pid, name, value)
        uid = result["uid"] if isinstance(result, dict) else result
        after = {n: call(target, n) for n in before}
        assert after == dict(before, **changed), (name, after)
        status = blade.ok("status", uid)
        if name != "main.Max[string]":
            assert status["result"]["instance"]["other_instances_untouched"], status
        blade.ok("destroy", uid)
        assert {n: call(target, n) for n in before} == before
    # the shape function named on purpose faults every instance of the shape
    uid = blade.create_return(target.pid, HOOK_SHAPE, "-1")
    assert (call(target, "HookA"), call(target, "HookB"), call(target, "HookIface")) == \
        ("-1", "-1", "-1")
    blade.ok("destroy", uid)
    assert {n: call(target, n) for n in before} == before
    assert differences_beyond_retained(blade.home, target.pid) == []


def test_guarded_instances_under_load(blade, gbin, target_factory):
    """8 goroutines call every instance with GOGC=1 and forced GCs while two guarded
    instances are injected and destroyed: each instance only ever returns its own result or,
    for the named ones, the injected value."""
    import time
    target = target_factory(gbin, args=["stress"], env=dict(__import__("os").environ, GOGC="1"))
    uids = [blade.create_return(target.pid, "main.Max[int]", "9"),
            blade.create_return(target.pid, "main.(*Hook[*core.A]).Trigger", "77")]
    time.sleep(3)
    seen_int, seen_a, rounds = map(int, call(target, "Stats").split())
    assert seen_int > 1000 and seen_a > 1000, (seen_int, seen_a, rounds)
    for uid in uids:
        blade.ok("destroy", uid)
    time.sleep(1)
    after = list(map(int, call(target, "Stats").split()))
    time.sleep(1)
    later = list(map(int, call(target, "Stats").split()))
    assert later[:2] == after[:2] and later[2] > after[2]  # restored, and still running
    assert target.alive() and not [ln for ln in target.lines if ln.startswith("BAD")]
    assert differences_beyond_retained(blade.home, target.pid) == []


def test_without_a_symbol_table_a_shape_is_never_picked_silently():
    with open_binary(build_fixture("generics_target", ldflags="-s")) as b:
        assert not b.has_symtab
        for name in ("main.Max[int]", "main.(*Hook[*core.A]).Trigger"):
            assert "without a symbol table" in _refusal(b, name)


def test_a_guarded_instance_with_a_string_value_is_destroyed(blade, gbin, target_factory):
    """A string value makes a value cave (patch.VALUE) next to the stub: the guarded plan holds
    it once, so destroy's trust check (no overlapping patches) accepts the record and every
    byte comes back (before the fix the value was listed twice and destroy answered 43000)."""
    target = target_factory(gbin)
    names = ("PickString", "PickName", "MaxString")
    before = {n: call(target, n) for n in names}
    assert before == {"PickString": "ab", "PickName": "ef", "MaxString": "b"}
    uid = blade.create_return(target.pid, "main.Pick[string]", "chaos")
    uid = uid["uid"] if isinstance(uid, dict) else uid
    assert {n: call(target, n) for n in names} == dict(before, PickString="chaos")
    status = blade.ok("status", uid)
    assert status["result"]["instance"]["other_instances_untouched"], status
    blade.ok("destroy", uid)
    assert {n: call(target, n) for n in names} == before
    assert differences_beyond_retained(blade.home, target.pid) == []
