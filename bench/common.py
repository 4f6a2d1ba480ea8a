"""Shared pieces of the benchmarks: build the bench target, run it, read its rate, run the CLI."""
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.blade import Blade  # noqa: E402
from tests.support.fixtures import build_fixture  # noqa: E402
from tests.support.targets import start_target  # noqa: E402


def bench_binary(**opts):
    return build_fixture(ROOT / "bench" / "target", **opts)


def generated_program(name: str, packages: int, edit) -> Path:
    """Build (once, cached) tests/fixtures/dwarf_bigprog's generated program of `packages`
    packages x 200 functions, its main.go passed through `edit(text) -> text` first."""
    import importlib.util
    from tests.support.fixtures import cache_dir
    src = cache_dir() / f"{name}-{packages}"
    if not (src / "main.go").exists():
        spec = importlib.util.spec_from_file_location(
            "gen", ROOT / "tests" / "fixtures" / "dwarf_bigprog" / "gen.py")
        gen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gen)
        gen.generate(str(src), packages, 200)
        main_go = src / "main.go"
        main_go.write_text(edit(main_go.read_text()))
    return build_fixture(src)


def rate(target, seconds):
    """Units per second the target reports over `seconds` (from its COUNT lines)."""
    first = _count(target, target.mark())
    time.sleep(seconds)
    last = _count(target, target.mark())
    return (last[1] - first[1]) / ((last[0] - first[0]) / 1e9)


def _count(target, mark):
    line = target.wait_for_line(r"^COUNT ", since=mark, timeout=5)
    _, t, n = line.split()
    return int(t), int(n)


def median(xs):
    return statistics.median(xs)


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def versions():
    import subprocess
    from tests.support.toolchains import dlv_path, go_toolchain
    dlv = dlv_path()
    v = subprocess.run([dlv, "version"], capture_output=True, text=True).stdout.split("\n")[1]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    return {"go": go_toolchain("go-default").version, "dlv": v.strip(),
            "cpu": f"{cpu} x{os.cpu_count()}"}


__all__ = ["Blade", "bench_binary", "rate", "median", "table", "versions", "start_target"]
