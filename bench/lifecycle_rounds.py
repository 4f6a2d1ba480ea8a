"""Abuse rounds against one stressed target, by hand (too slow for CI at this count):

    python bench/lifecycle_rounds.py [--rounds 50] [--kind kill|race|both] [--seed N]

kill: the session supervisor SIGKILLed at a random point of attach / apply / revert;
race: destroy sent while the create of the same uid is still running.
Each round checks (tests/support/lifecycle.py): target alive and unfrozen (its own STATS lines
keep coming, no BAD result), destroy answered success, .text equals the file, no dlv or
supervisor left. Prints one line per round and a table; exits 1 on the first failed round.
"""
import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import lifecycle as lc  # noqa: E402
from tests.support.blade import Blade  # noqa: E402
from tests.support.fixtures import build_fixture  # noqa: E402
from tests.support.targets import start_target  # noqa: E402
from tests.support.toolchains import dlv_path, dlv_version  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--kind", choices=["kill", "race", "both"], default="both")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(10**9)
    binary = build_fixture("e2e_target")
    dlv = dlv_path()
    print(f"seed {seed}; dlv {dlv} {dlv_version(dlv)}; target {binary} (stress, GOGC=1)")
    table = []
    for kind in (["kill", "race"] if a.kind == "both" else [a.kind]):
        home = tempfile.mkdtemp(prefix=f"blade-go-{kind}-")
        blade = Blade(Path(home) / "home", env={"BLADE_GO_DLV": dlv})
        t = start_target(binary, args=["stress"], env={"GOGC": "1"})
        t0 = time.monotonic()
        try:
            seen = lc.run_rounds(kind, blade, t, a.rounds, seed=seed,
                                 log=lambda m: print(m, flush=True))
        except AssertionError as e:
            print(f"FAILED: {e}")
            return 1
        finally:
            t.stop()
        table.append((kind, a.rounds, seen, time.monotonic() - t0))
    print(f"\n{'kind':6} {'rounds':>6} {'passed':>6}  {'s/round':>7}  detail")
    for kind, n, seen, took in table:
        print(f"{kind:6} {n:6} {sum(seen.values()):6}  {took / n:7.1f}  {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
