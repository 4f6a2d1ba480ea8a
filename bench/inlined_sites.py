"""Inlined call sites from every compile unit: cost of blade-go's lookup, and what it finds.

    python bench/inlined_sites.py [--walk] BINARY [FUNC ...]

For each function: the sites found by `GoBinary.inlined_sites` (a byte search of .debug_info
for the abstract entry's offset, one DIE parsed per hit, each hit checked to be a real DIE start
by skimming its compile unit once), its time in a fresh GoBinary, and the
count from binutils `objdump --dwarf=info` (ground truth: DW_TAG_inlined_subroutine DIEs
naming the abstract entry). With --walk, also the time of walking every compile unit DIE by
DIE with pyelftools (what an "all CUs" implementation without the byte search costs).

Then the same functions from the .gopclntab inline trees (inspector/inltree.py, what a
`-s -w` binary is read with): the first lookup in a fresh binary (it finds the module data and
indexes the trees) and a second one, and whether the sites equal DWARF's. A binary without
DWARF gets only this table.
"""
import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from blade_go.inspector import open_binary  # noqa: E402
from blade_go.inspector.inltree import InlineTrees  # noqa: E402

DEFAULT_FUNCS = ["sync.(*Mutex).Lock", "errors.New", "fmt.Errorf", "runtime.add",
                 "unicode/utf8.RuneLen"]


def objdump_counts(path, names):
    out = subprocess.run(["objdump", "--dwarf=info", path], capture_output=True,
                         text=True).stdout.splitlines()
    offsets = {}
    for i, ln in enumerate(out):
        m = re.search(r"DW_AT_name\s+: (.+)$", ln)
        if m and m.group(1) in names and i + 1 < len(out) and "DW_AT_inline" in out[i + 1]:
            offsets[re.findall(r"<([0-9a-f]+)>", out[i - 1])[-1]] = m.group(1)
    counts = dict.fromkeys(names, 0)
    for i, ln in enumerate(out):
        m = re.search(r"DW_AT_abstract_origin: <0x([0-9a-f]+)>", ln)
        if m and m.group(1) in offsets and "inlined_subroutine" in out[i - 1]:
            counts[offsets[m.group(1)]] += 1
    return counts


def walk_seconds(path):
    start = time.perf_counter()
    with open_binary(path) as b:
        n = 0
        for cu in b.dwarf.dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                n += die.tag == "DW_TAG_inlined_subroutine"
    return time.perf_counter() - start, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("funcs", nargs="*")
    ap.add_argument("--walk", action="store_true")
    args = ap.parse_args()
    names = args.funcs or DEFAULT_FUNCS
    with open_binary(args.binary) as b:
        has_dwarf = b.has_dwarf
        info = len(b.dwarf.dwarf and b.dwarf._info) if has_dwarf else 0
    print(f"{args.binary}: {os.path.getsize(args.binary) / 1e6:.1f} MB, .debug_info "
          f"{info / 1e6:.1f} MB (decompressed)\n")
    dwarf_sites = {}
    if has_dwarf:
        truth = objdump_counts(args.binary, set(names))
        print("| function | DIEs referencing it (objdump) | sites found | callers | seconds |")
        print("|---|---|---|---|---|")
        for name in names:
            with open_binary(args.binary) as b:
                b.dwarf.dwarf  # section loading is not the lookup's cost
                b.symtab
                start = time.perf_counter()
                sites = dwarf_sites[name] = b.inlined_sites(name)
                took = time.perf_counter() - start
                parsed = len(b.dwarf.parsed_dies)
                skimmed = len(b.dwarf._inlined_dies or {})
            print(f"| {name} | {truth[name]} | {len(sites)} (from {parsed} DIEs parsed, "
                  f"{skimmed} CUs skimmed) | "
                  f"{len({s.caller for s in sites})} | {took:.3f} |")
        print()
    print("| function | .gopclntab sites | first lookup s | next lookup s | same as DWARF |")
    print("|---|---|---|---|---|")
    for name in names:
        with open_binary(args.binary) as b:
            start = time.perf_counter()
            trees = InlineTrees(b.image, b.go_version)
            sites = trees.sites(name)
            first = time.perf_counter() - start
            start = time.perf_counter()
            trees.sites(name)
            again = time.perf_counter() - start
        same = ("yes" if sites == dwarf_sites[name] else "NO") if has_dwarf else "-"
        print(f"| {name} | {len(sites)} | {first:.3f} | {again:.3f} | {same} |")
    if args.walk:
        took, n = walk_seconds(args.binary)
        print(f"\nwalking every CU DIE by DIE (pyelftools): {took:.1f} s "
              f"({n} inlined_subroutine DIEs in all)")


if __name__ == "__main__":
    main()
