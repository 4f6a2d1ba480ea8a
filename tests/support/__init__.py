"""Test support for blade-go: toolchains, cached Go fixture builds, running targets.

    from tests.support import build_fixture, start_target, text_differences, require_dlv
"""
from .fixtures import BuildError, build_fixture, cache_dir, fixture_dir
from .targets import (RunningTarget, TargetError, exe_mappings, free_port, load_bias,
                      read_text_segment, start_target, text_differences, text_matches_file)
from .toolchains import (GoToolchain, debian_dlv_path, dlv386_path, dlv_path, dlv_version,
                         go_toolchain, go_toolchains, in_ci, missing, pinned,
                         require_debian_dlv, require_dlv, require_dlv386, require_go, tools_dir)

__all__ = [
    "BuildError", "build_fixture", "cache_dir", "fixture_dir",
    "RunningTarget", "TargetError", "exe_mappings", "free_port", "load_bias",
    "read_text_segment", "start_target", "text_differences", "text_matches_file",
    "GoToolchain", "debian_dlv_path", "dlv386_path", "dlv_path", "dlv_version", "go_toolchain",
    "go_toolchains", "in_ci", "missing", "pinned", "require_debian_dlv", "require_dlv",
    "require_dlv386", "require_go", "tools_dir",
]
