"""blade-go's build: metadata in setup.cfg; this file only adds the dlv a wheel carries.

A wheel (`python -m build --wheel`, `pip wheel .`, or `pip install .`) bundles the dlv blade-go
is tested with at blade_go/_bin/dlv, so the machine it is installed on needs no Go toolchain:

    $ pip wheel --no-deps -w dist .
    $ unzip -l dist/blade_go-0.1.0-py3-none-linux_x86_64.whl | grep _bin
     26419176  ...  blade_go/_bin/dlv

The dlv comes from build/dlv.sh (the patched build of build/delve/build.sh when that exists,
else stock delve $DLV_VERSION, built with Go once and cached), and blade-go uses it unless
BLADE_GO_DLV names another (session/launcher.find_dlv). Such a wheel is platform-tagged:
manylinux2014_x86_64 for a statically linked dlv, linux_x86_64 otherwise. Editable installs
(`pip install -e .`) and BLADE_GO_BUNDLE_DLV=0 bundle nothing and give a pure wheel.
"""
import os
import shutil
import struct
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: the wheel package's
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.join("blade_go", "_bin", "dlv")  # session/launcher.py BUNDLED_DLV
PT_INTERP = 3


def bundle_wanted() -> bool:
    return os.environ.get("BLADE_GO_BUNDLE_DLV", "1") != "0"


def built_dlv() -> str:
    """The dlv to bundle, built if needed (build/dlv.sh prints its path, quiet otherwise)."""
    p = subprocess.run(["bash", os.path.join(HERE, "build", "dlv.sh")], capture_output=True,
                       text=True)
    path = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not os.path.isfile(path):
        raise SystemExit(f"blade-go: cannot build the dlv to bundle (build/dlv.sh exit "
                         f"{p.returncode}):\n{p.stderr.strip()}\nInstall Go (/usr/local/go), or "
                         "build a wheel without dlv with BLADE_GO_BUNDLE_DLV=0.")
    return path


def is_static(path: str) -> bool:
    """No PT_INTERP program header: the executable needs no libc of the target machine.
    (ELF64 little-endian header read by hand: an isolated build has no pyelftools.)"""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:6] != b"\x7fELF\x02\x01":
            raise SystemExit(f"blade-go: {path} is not an ELF64 little-endian executable")
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != PT_INTERP
               for i in range(phnum))


class BuildPyWithDlv(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False) or not bundle_wanted():
            return
        src = built_dlv()
        dest = os.path.join(self.build_lib, BUNDLED)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o755)
        self.distribution.bundled_dlv = src


class PlatformWheel(bdist_wheel):
    """A wheel carrying dlv (an amd64 executable) says so in its platform tag."""

    def finalize_options(self):
        if bundle_wanted():  # platform files: built and installed as platlib, at the root
            self.distribution.has_ext_modules = lambda: True
        super().finalize_options()

    def get_tag(self):
        python, abi, plat = super().get_tag()
        if self.root_is_pure:
            return python, abi, plat
        if not plat.endswith("x86_64"):
            raise SystemExit(f"blade-go: the bundled dlv is built for linux/amd64, not {plat}")
        src = getattr(self.distribution, "bundled_dlv", None)
        static = src is not None and is_static(src)
        return "py3", "none", "manylinux2014_x86_64" if static else "linux_x86_64"


setup(cmdclass={"build_py": BuildPyWithDlv, "bdist_wheel": PlatformWheel})
