"""How long blade-go takes to open a Go binary and find one function in it, by binary size.

    python bench/inspect_lookup.py [--scale N ...] [BINARY[:FUNC] ...]

Without binaries it measures generated programs (N packages x 200 functions each, with DWARF;
built once and cached under /tmp/blade-go-bench) and, when found in the module cache, delve
itself. Each row: file size, Go version, open_binary (build facts), the first find_function
(includes indexing .symtab), a second find_function, a miss (closest-name suggestions), the
lookup through .gopclntab as for a stripped binary, and the DWARF signature. Times are the best of 3 runs in fresh processes' worth of state (every run
opens the binary anew).
"""
import argparse
import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from blade_go.errors import BladeError  # noqa: E402
from blade_go.inspector import open_binary  # noqa: E402

GO = os.environ.get("GO", "/usr/local/go/bin/go")
WORK = "/tmp/blade-go-bench"
FUNCS_PER_PKG = 200
ENV = dict(os.environ, GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="-buildvcs=false",
           CGO_ENABLED="0")

FUNC = """
type T{i} struct {{ A int; B string; C []float64; D map[string]int }}

//go:noinline
func F{i}(x int, s string, t *T{i}) (string, error) {{
	if x > {i} {{
		t.C = append(t.C, float64(x)*{i}.5)
		return fmt.Sprintf("%s-%d-{i}-%v", s, x, t.D), nil
	}}
	return strings.Repeat(s, x%7), fmt.Errorf("f{i}: %d %q", x, s)
}}

func (t *T{i}) M{i}(k string) (int, bool) {{ v, ok := t.D[k]; return v + {i}, ok }}
"""


def generate(scale: int) -> str:
    root = os.path.join(WORK, f"gen{scale}")
    out = os.path.join(root, "app")
    if os.path.exists(out):
        return out
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "go.mod"), "w") as f:
        f.write("module example.com/big\n\ngo 1.19\n")
    imports, calls = [], []
    for p in range(scale):
        pkg = f"p{p:04d}"
        os.makedirs(os.path.join(root, pkg), exist_ok=True)
        with open(os.path.join(root, pkg, "f.go"), "w") as f:
            f.write(f'package {pkg}\n\nimport (\n\t"fmt"\n\t"strings"\n)\n')
            for i in range(FUNCS_PER_PKG):
                f.write(FUNC.format(i=i))
            f.write("\nfunc All(n int) (r []any) {\n")
            for i in range(FUNCS_PER_PKG):
                f.write(f"\tr = append(r, F{i}, (*T{i}).M{i})\n")
            f.write("\treturn r\n}\n")
        imports.append(f'\t"example.com/big/{pkg}"')
        calls.append(f"\tn += len({pkg}.All(1))")
    with open(os.path.join(root, "main.go"), "w") as f:
        f.write("package main\n\nimport (\n\t\"fmt\"\n" + "\n".join(imports) + "\n)\n\n"
                "func main() {\n\tn := 0\n" + "\n".join(calls) + "\n\tfmt.Println(n)\n}\n")
    subprocess.run([GO, "build", "-o", out, "."], cwd=root, env=ENV, check=True)
    return out


def delve_binary():
    srcs = sorted(glob.glob(os.path.expanduser("~/go/pkg/mod/github.com/go-delve/delve@v*")))
    if not srcs:
        return None
    out = os.path.join(WORK, "dlv")
    if not os.path.exists(out):
        os.makedirs(WORK, exist_ok=True)
        subprocess.run([GO, "build", "-o", out, "./cmd/dlv"], cwd=srcs[-1], env=ENV, check=True)
    return out


def measure(path: str, func: str) -> dict:
    best = {}
    for _ in range(3):
        row = {}
        t0 = time.perf_counter()
        b = open_binary(path)
        row["open"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn = b.find_function(func)
        row["find1"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        b.find_function(func)
        row["find2"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            b.find_function(func + "_typo")
        except BladeError:
            pass
        row["miss"] = time.perf_counter() - t0
        # what a stripped (-s) binary costs: index .gopclntab instead of .symtab
        t0 = time.perf_counter()
        from blade_go.inspector.symbols import resolve_function
        _, entry, end = resolve_function(func, b.pclntab.funcs, path)
        b.pclntab.code_end(entry, end)
        row["pcln"] = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            b.signature(fn)
            row["signature"] = time.perf_counter() - t0
        except (BladeError, ImportError) as e:
            row["signature"] = None
            row["why"] = str(e)[:40]
        row.update(version=b.go_version, nfuncs=len(b.symtab.funcs), name=fn.name)
        b.close()
        for k, v in row.items():
            if isinstance(v, float):
                best[k] = min(best.get(k, v), v)
            else:
                best.setdefault(k, v)
    best["size"] = os.path.getsize(path)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, action="append",
                    help="generated packages of 200 functions (repeatable; default 50 and 150)")
    ap.add_argument("targets", nargs="*", help="BINARY[:FUNC] (FUNC defaults to main.main)")
    args = ap.parse_args()
    targets = [(t.split(":", 1) + ["main.main"])[:2] for t in args.targets]
    if not targets:
        d = delve_binary()
        if d:
            targets.append((d, "github.com/go-delve/delve/pkg/proc.(*TargetGroup).Continue"))
        for s in args.scale or [50, 150]:
            targets.append((generate(s), f"example.com/big/p{s // 2:04d}.F{FUNCS_PER_PKG // 2}"))
    fmt = "{:>8} {:>10} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7}  {}"
    print(fmt.format("size MB", "go", "funcs", "open s", "find1 s", "find2 s", "miss s",
                     "pcln s", "sig s", "binary / function"))
    for path, func in targets:
        r = measure(path, func)
        sig = f"{r['signature']:.3f}" if r["signature"] is not None else "n/a"
        print(fmt.format(f"{r['size'] / 1e6:.1f}", r["version"], r["nfuncs"], f"{r['open']:.3f}",
                         f"{r['find1']:.3f}", f"{r['find2']:.5f}", f"{r['miss']:.3f}",
                         f"{r['pcln']:.3f}", sig,
                         f"{os.path.basename(path)} / {r['name']}"))
        if r.get("why"):
            print(f"{'':>9} signature n/a: {r['why']}")


if __name__ == "__main__":
    main()
