#!/usr/bin/env python3
"""Write chaosblade-exec-go.yaml (chaosblade's plugin model) from specs/.

Usage: python build/gen_plugin_yaml.py [--check]   (--check: exit 1 if the file is stale)
`blade-go spec` prints the same text.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from blade_go.plugin_yaml import render_plugin_yaml  # noqa: E402
from blade_go.registry import load_registry  # noqa: E402

OUTPUT = REPO / "chaosblade-exec-go.yaml"


def main(argv):
    text = render_plugin_yaml(load_registry(REPO / "specs"))
    if "--check" in argv:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python build/gen_plugin_yaml.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
