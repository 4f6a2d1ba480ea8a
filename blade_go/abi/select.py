"""Which ABI a binary's functions use, from its GOARCH and the Go version that built it."""
import re
from typing import Optional, Tuple

from ..errors import BladeError, Code
from . import ABI
from .abi0 import ABI0_386, ABI0_AMD64
from .regabi_amd64 import REGABI_AMD64
from .regabi_arm64 import REGABI_ARM64

# The register ABI became the default for amd64 in Go 1.17, for arm64 in Go 1.18.
REGABI_AMD64_SINCE = (1, 17)
REGABI_ARM64_SINCE = (1, 18)

_VERSION = re.compile(r"go(\d+)\.(\d+)")


def parse_go_version(go_version: str) -> Optional[Tuple[int, int]]:
    """(major, minor) of "go1.19.13", "go1.22rc1", "go1.21", "devel go1.23-abc ...";
    None for a development build that names no release ("devel +abc ...")."""
    m = _VERSION.search(go_version or "")
    if m:
        return int(m.group(1)), int(m.group(2))
    if (go_version or "").strip().startswith("devel"):
        return None
    raise BladeError(Code.PARAMETER_INVALID, f"cannot parse Go version {go_version!r}")


# Go 1.17 and 1.18 could still be built with the stack ABI (GOEXPERIMENT=noregabi); from 1.19
# on amd64 ignores it (checked: Go 1.19 with noregabi still emits register-ABI code).
NOREGABI_HONOURED = ((1, 17), (1, 18))


def select_abi(goarch: str, go_version: str, *, goexperiment: str = "") -> ABI:
    """goexperiment: the GOEXPERIMENT build setting from the binary's build info, if any."""
    if goarch == "386":
        return ABI0_386
    if goarch == "amd64":
        ver = parse_go_version(go_version)
        if ver is not None and ver < REGABI_AMD64_SINCE:
            return ABI0_AMD64
        if ver in NOREGABI_HONOURED and "noregabi" in goexperiment.split(","):
            return ABI0_AMD64
        return REGABI_AMD64  # an unnamed devel build is newer than any release
    if goarch == "arm64":
        # arm64 stubs exist for the register ABI only (stubs/select.py says which actions):
        # a stack-ABI build is refused before anything attaches.
        ver = parse_go_version(go_version)
        if (ver is not None and ver < REGABI_ARM64_SINCE) or \
                (ver in NOREGABI_HONOURED and "noregabi" in goexperiment.split(",")):
            raise BladeError(Code.ACTION_NOT_SUPPORT,
                             f"arm64 binaries built with the stack ABI ({go_version}"
                             f"{', GOEXPERIMENT=noregabi' if 'noregabi' in goexperiment else ''}) "
                             "are not supported: blade-go's arm64 stubs follow the register ABI "
                             "of Go 1.18 and later")
        return REGABI_ARM64
    raise BladeError(Code.ACTION_NOT_SUPPORT, f"architecture {goarch!r} is not supported "
                     "(supported: amd64, 386, arm64)")
