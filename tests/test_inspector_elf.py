"""The ELF side of the inspector on real Go builds: facts, function lookup, stripped binaries,
PIE load bias, 386, errors and the `inspect` report.

Oracles are independent of the inspector: `go env GOVERSION`, `go tool nm -size` and the
running fixture printing its own function address.
"""
import io
import os
import re
import shutil
import subprocess
import time

import pytest

from blade_go.errors import BladeError, Code
from blade_go.inspector import GoBinary, open_binary
from blade_go.inspector.elf import ElfImage
from blade_go.inspector.report import inspect_report
from tests.support.fixtures import build_fixture, go_env
from tests.support.toolchains import GO_LABELS, require_go



def build(toolchain="go-default", **opts) -> str:
    """The inspector fixture built with a test toolchain (cached; skips when it is missing)."""
    return str(build_fixture("inspect_app", toolchain=toolchain, **opts))


def go_version(label):
    return require_go(label).version


def nm_sizes(path):
    """name -> (addr, size) of text symbols, from `go tool nm -size`."""
    tc = require_go("go-default")
    out = subprocess.run([tc.path, "tool", "nm", "-size", path], capture_output=True,
                         text=True, env=go_env(tc.version, "amd64"), check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in ("T", "t"):
            syms.setdefault(parts[3], (int(parts[0], 16), int(parts[1])))
    return syms


NAMES = ["main.Add", "main.(*Store).GetUser", "main.Celsius.Fahrenheit", "main.Counter.func1",
         "github.com/acme/app/db.(*Client).Query", "main.main"]
GENERIC = {"main.Max[int]": r"main\.Max\[go\.shape\.int(_0)?\]",
           "main.Max[float64]": r"main\.Max\[go\.shape\.float64(_0)?\]",
           "main.Pair[string,int]": r"main\.Pair\[go\.shape\.string(_0)?,go\.shape\.int(_1)?\]",
           "main.Pair[int, string]": r"main\.Pair\[go\.shape\.int(_0)?,go\.shape\.string(_1)?\]",
           "main.(*Box[int]).Get": r"main\.\(\*Box\[go\.shape\.int(_0)?\]\)\.Get",
           "main.(*Box[string]).Get": r"main\.\(\*Box\[go\.shape\.string(_0)?\]\)\.Get"}


# -- build facts and lookup per toolchain -------------------------------------------------------
@pytest.mark.parametrize("label", GO_LABELS)
def test_facts_and_lookup_per_toolchain(label):
    path = build(label)
    version = go_version(label)
    with open_binary(path) as b:
        assert b.go_version == version
        assert b.module_path == "github.com/acme/app"
        assert (b.goarch, b.ptrsize, b.pie) == ("amd64", 8, False)
        assert b.abi_name == "abi-internal-amd64"
        assert b.has_dwarf and b.has_symtab and b.stripped is None and b.load_bias == 0
        truth = nm_sizes(path)
        for name in NAMES:
            fn = b.find_function(name)
            assert fn.name == name
            assert (fn.entry, fn.size) == truth[name], name
        for spelled, pattern in GENERIC.items():
            fn = b.find_function(spelled)
            assert re.fullmatch(pattern, fn.name), (spelled, fn.name)
            assert fn.entry == truth[fn.name][0]
            assert b.find_function(fn.name) == fn  # the binary's literal name works too
        # itab under this version's spelling, and bytes at a vaddr equal the file's bytes
        assert b.itab("*errors.errorString", "error") is not None
        fn = b.find_function("main.Add")
        text = b.image.section(".text")
        with open(path, "rb") as f:
            f.seek(text.offset + fn.entry - text.addr)
            assert b.read(fn.entry, fn.size) == f.read(fn.size)


def test_not_found_suggests_closest_names():
    with open_binary(build()) as b:
        with pytest.raises(BladeError) as e:
            b.find_function("main.GetUser")
        assert e.value.code == Code.PARAMETER_INVALID
        assert "function main.GetUser not found" in e.value.message
        assert "main.(*Store).GetUser" in e.value.message.split("closest:")[1]


def test_fully_inlined_function_is_explained():
    with open_binary(build()) as b:
        with pytest.raises(BladeError) as e:
            b.find_function("github.com/acme/app/db.NewClient")
        assert "no out-of-line copy" in e.value.message and "main.main" in e.value.message
        assert not b.has_out_of_line("github.com/acme/app/db.NewClient")
        assert b.has_out_of_line("main.Add")


def test_generic_without_type_args_is_ambiguous():
    with open_binary(build()) as b:
        with pytest.raises(BladeError) as e:
            b.find_function("main.Max")
        assert "ambiguous" in e.value.message
        assert "main.Max[go.shape.int]" in e.value.message
        assert "main.Max[go.shape.float64]" in e.value.message


def test_abi0_wrappers_are_not_selected():
    with open_binary(build()) as b:
        wrapped = [n for n in b.symtab.funcs if n.endswith(".abi0") and n[:-5] in b.symtab.funcs]
        assert wrapped, "expected some functions with ABI0 wrappers in the runtime"
        name = wrapped[0][:-5]
        assert b.find_function(name).entry == b.symtab.funcs[name][0][0]


# -- stripped builds ------------------------------------------------------------------------------
@pytest.mark.parametrize("label", GO_LABELS)
def test_stripped_lookup_via_pclntab_matches_symtab(label):
    full, stripped = build(label), build(label, ldflags="-s -w")
    with open_binary(full) as a, open_binary(stripped) as b:
        assert not b.has_symtab and not b.has_dwarf and "-s" in b.stripped
        assert b.go_version == a.go_version and b.module_path == a.module_path
        for name in NAMES:
            assert b.find_function(name) == a.find_function(name), name
        if "main.Max[...]" in b.pclntab.funcs:
            # Go 1.18-1.20 .gopclntab names every instance `main.Max[...]`: two instances of
            # one generic function cannot be told apart there
            with pytest.raises(BladeError, match=r"ambiguous.*main\.Max\[\.\.\.\]"):
                b.find_function("main.Max[int]")
        else:
            for name in GENERIC:
                assert b.find_function(name) == a.find_function(name), name
        with pytest.raises(BladeError) as e:
            b.signature("main.Add")
        assert "no DWARF" in e.value.message


@pytest.mark.parametrize("label", ["go-default", "go1.19"])
def test_stripped_pie_lookup_via_pclntab(label):
    # Go 1.26 leaves pcHeader.textStart 0 in PIE files (a dynamic relocation fills it)
    with open_binary(build(label, pie=True)) as a, \
            open_binary(build(label, pie=True, ldflags="-s -w")) as b:
        assert b.pie and not b.has_symtab
        for name in NAMES:
            assert b.find_function(name) == a.find_function(name), name


def test_pclntab_ends_match_symtab_for_every_function():
    with open_binary(build()) as b:
        pcln = b.pclntab
        checked = 0
        for name, spans in b.symtab.funcs.items():
            entry, end = spans[0]
            if name not in pcln.funcs or end - entry < 2:  # skip zero/one-byte marker symbols
                continue
            span = next((s for s in pcln.funcs[name] if s[0] == entry), None)
            if span:
                assert pcln.code_end(*span) == end, name
                checked += 1
        assert checked > 1000


def test_w_only_removes_dwarf():
    with open_binary(build(ldflags="-w")) as b:
        assert b.has_symtab and not b.has_dwarf
        assert b.stripped == "-ldflags=-w: no DWARF"
        assert b.find_function("main.Add").size > 0


# -- PIE, 386, arm64 ------------------------------------------------------------------------------
def test_pie_load_bias_of_running_process():
    path = build(pie=True)
    proc = subprocess.Popen([path, "serve"], stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("main.Add="):
            line = proc.stdout.readline()
            assert line, "fixture exited before printing its address"
        runtime_addr = int(line.split("=")[1], 16)
        with open_binary(pid=proc.pid) as b:
            assert b.pie and b.pid == proc.pid
            assert b.load_bias != 0
            assert b.find_function("main.Add").entry + b.load_bias == runtime_addr
            # the bytes the process runs are the file's bytes at the file vaddr
            with open(f"/proc/{proc.pid}/mem", "rb") as mem:
                mem.seek(runtime_addr)
                assert mem.read(4) == b.read(b.find_function("main.Add").entry, 4)
    finally:
        proc.kill()
        proc.wait()


def test_non_pie_process_has_zero_bias():
    proc = subprocess.Popen([build(), "serve"], stdout=subprocess.PIPE, text=True)
    try:
        while not proc.stdout.readline().startswith("main.Add="):
            pass
        with open_binary(pid=proc.pid) as b:
            assert not b.pie and b.load_bias == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("label", ["go-default", "go1.19"])
def test_386_build(label):
    path = build(label, goarch="386")
    with open_binary(path) as b:
        assert (b.goarch, b.ptrsize, b.abi_name) == ("386", 4, "abi0-386")
        truth = nm_sizes(path)
        for name in NAMES:
            fn = b.find_function(name)
            assert (fn.entry, fn.size) == truth[name]
    with open_binary(build(label, goarch="386", ldflags="-s -w")) as s, \
            open_binary(path) as b:
        assert s.find_function("main.(*Store).GetUser") == b.find_function("main.(*Store).GetUser")


def test_arm64_is_supported_with_the_register_abi():
    with open_binary(build(goarch="arm64")) as b:
        assert b.goarch == "arm64" and b.facts()["arch_supported"] is True
        assert b.find_function("main.Add").size > 0
        assert b.abi.name == "abi-internal-arm64"


def test_pre_118_buildinfo_pointer_encoding(tmp_path):
    """Rewrite a real binary's .go.buildinfo into the pre-1.18 layout (flags without 2, two
    pointers at offset 16 to Go string headers) and read it back."""
    src = build()
    with open_binary(src) as b:
        sec = b.image.section(".go.buildinfo")
        version, modinfo = b.go_version, b.image.read_file(sec.offset, sec.size)
    sentinel_a, sentinel_b = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6", \
        b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2"
    mod = sentinel_a + b"path\tgithub.com/acme/app\nmod\tgithub.com/acme/app\t(devel)\t\n" + \
        sentinel_b
    base = sec.addr
    vstr, mstr = base + 64, base + 64 + len(version)
    body = bytearray(sec.size)
    body[:16] = modinfo[:14] + bytes([8, 0])          # magic, ptrsize 8, flags 0
    body[16:32] = (base + 32).to_bytes(8, "little") + (base + 48).to_bytes(8, "little")
    body[32:48] = vstr.to_bytes(8, "little") + len(version).to_bytes(8, "little")
    body[48:64] = mstr.to_bytes(8, "little") + len(mod).to_bytes(8, "little")
    body[64:64 + len(version) + len(mod)] = version.encode() + mod
    old = tmp_path / "old"
    shutil.copy(src, old)
    with open(old, "r+b") as f:
        f.seek(sec.offset)
        f.write(body)
    with open_binary(str(old)) as b:
        assert (b.go_version, b.module_path) == (version, "github.com/acme/app")


# -- errors ----------------------------------------------------------------------------------------
def test_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(BladeError, match="not an ELF"):
        open_binary(str(text))
    with pytest.raises(BladeError, match="not a Go binary"):
        open_binary("/bin/true")
    with pytest.raises(BladeError) as e:
        open_binary(str(tmp_path / "missing"))
    assert e.value.code == Code.FILE_NOT_EXIST
    with pytest.raises(BladeError) as e:
        open_binary(pid=2 ** 22 + 12345)
    assert e.value.code == Code.PROCESS_NOT_EXIST
    # an architecture blade-go does not know: the fixture with e_machine set to EM_RISCV (243)
    odd = tmp_path / "odd"
    shutil.copy(build(), odd)
    with open(odd, "r+b") as f:
        f.seek(18)
        f.write((243).to_bytes(2, "little"))
    with pytest.raises(BladeError) as e:
        open_binary(str(odd))
    assert e.value.code == Code.ACTION_NOT_SUPPORT and "RISCV" in e.value.message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_permission_error_names_the_reason():
    # a forked child drops to nobody and inspects pid 1 (root's): the kernel refuses
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            open_binary(pid=1)
            msg = "opened"
        except BladeError as e:
            msg = f"{e.code} {e.message}"
        except BaseException as e:
            msg = repr(e)
        os.write(wfd, msg.encode())
        os._exit(0)
    os.close(wfd)
    os.waitpid(child, 0)
    msg = os.read(rfd, 4096).decode()
    os.close(rfd)
    assert msg.startswith(str(Code.FORBIDDEN)), msg
    assert "permission denied" in msg and "CAP_SYS_PTRACE" in msg


# -- DWARF-backed facts (the reader itself is tested in its own files) -----------------------------
@pytest.mark.parametrize("label,goarch", [("go-default", "amd64"), ("go1.19", "amd64"),
                                          ("go-default", "386")])
def test_variables_signatures_and_inlining_through_dwarf(label, goarch):
    with open_binary(build(label, goarch=goarch)) as b:
        eof = b.variable("io.EOF")
        assert eof.type.name == "error" and eof.addr == b.symbol("io.EOF")
        assert b.variable("github.com/acme/app/db.ErrNotFound").addr == \
            b.symbol("github.com/acme/app/db.ErrNotFound")
        with pytest.raises(BladeError, match="variable main.Nope not found"):
            b.variable("main.Nope")
        sig = b.signature("main.(*Store).GetUser")
        assert [p.type.name for p in sig.results] == ["string", "error"]
        locs = b.result_locations("main.(*Store).GetUser")
        if goarch == "amd64":
            assert [p.reg for p in locs[0].pieces] == ["RAX", "RBX"]
        else:
            assert all(p.where == "stack" for r in locs for p in r.pieces)
        # NewClient is small and inlined into main.main
        sites = b.inlined_sites("github.com/acme/app/db.NewClient")
        assert any(s.caller == "main.main" and s.file.endswith("main.go") for s in sites)


# -- report ----------------------------------------------------------------------------------------
def test_inspect_report_for_a_running_pie_process():
    proc = subprocess.Popen([build(pie=True), "serve"], stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("main.Add="):
            line = proc.stdout.readline()
        rep = inspect_report(pid=proc.pid, func="main.Add")
        assert rep["binary"]["pie"] and rep["binary"]["module_path"] == "github.com/acme/app"
        assert int(rep["function"]["runtime_address"], 16) == int(line.split("=")[1], 16)
        assert rep["function"]["size"] > 0
        assert any(c["kind"] == "header" for c in rep["caves"])
        assert rep["largest_stub_near_func"] >= 64
    finally:
        proc.kill()
        proc.wait()
    import json
    json.dumps(rep)  # JSON-able


def test_inspect_report_for_a_fully_inlined_function():
    rep = inspect_report(binary=build(), func="github.com/acme/app/db.NewClient")
    assert rep["function"]["has_out_of_line_copy"] is False
    assert rep["function"]["inlined_sites"][0]["caller"] == "main.main"
    with pytest.raises(BladeError, match="not found"):
        inspect_report(binary=build(), func="main.NoSuchThing")


def test_inspect_report_without_dwarf_reports_why():
    rep = inspect_report(binary=build(ldflags="-s -w"), func="main.(*Store).GetUser")
    assert rep["binary"]["has_dwarf"] is False
    assert rep["function"]["signature"] is None
    assert "no DWARF" in rep["function"]["signature_error"]


class _CountingFile(io.FileIO):
    """A file that counts the bytes read through it."""
    bytes_read = 0

    def read(self, n=-1):
        data = super().read(n)
        self.bytes_read += len(data)
        return data

    def readinto(self, buf):
        n = super().readinto(buf)
        self.bytes_read += n or 0
        return n


def test_open_and_lookup_read_a_small_part_of_the_file():
    path = build()
    f = _CountingFile(path, "rb")
    b = GoBinary(ElfImage(f, path))
    facts_bytes = f.bytes_read
    b.find_function("main.(*Store).GetUser")
    b.close()
    size = os.path.getsize(path)
    assert facts_bytes < 64 * 1024, facts_bytes  # headers, section table, .go.buildinfo
    assert f.bytes_read < size * 0.2, (f.bytes_read, size)  # + .symtab and .strtab


def test_symtab_index_is_fast():
    b = open_binary(build())
    start = time.perf_counter()
    b.find_function("main.Add")
    elapsed = time.perf_counter() - start
    b.close()
    assert elapsed < 1.0, f"symtab index + lookup took {elapsed:.3f}s on a small binary"
