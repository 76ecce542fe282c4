"""A faster `corert` command: the console script with `python -I -S`, and corert's code read from one file.

Engines start the runtime 3-4 times per container, so interpreter start-up is a large share of every
verb. Two costs are cut here:
- `site` (~3 ms: venv detection, .pth files such as setuptools' distutils hack). The launcher runs with
  -I -S (no PYTHON* variables, no user site, no script dir on sys.path) and puts the install's own
  site-packages on sys.path itself. If corert is not importable that way (an editable install found
  through a .pth file), it falls back to running `site` first.
- finding and reading ~45 modules one by one (~2 ms on the OCI `run` path: a directory scan per package,
  then stat, open, read and close per module). `install` also writes `<command>.bundle`: every corert
  module compiled once, behind an index. The launcher puts a finder for it first on sys.meta_path; it
  hands out a module's code only while its source file still has the size and mtime it was compiled from
  (the check a .pyc gets), so an edited or reinstalled corert is imported from its files as usual.

A third cut skips CPython altogether for the verbs engines call most: where the build made the native
front (corert/cli/native/, installed as corert/cli/corert-native), `install` puts a copy of it at the
command's path (.venv/bin/corert) and the Python script at ../libexec/corert/corert from there, to which
the front hands every command it does not do itself (see corert/engine/shortcut.py). Named `corert`, the
Python CLI's processes keep the name users and tools look for.

`scripts/setup` runs `python -m corert.cli.launcher .venv/bin/corert` after installing; a later plain
`pip install` just puts pip's (slower, equivalent) script back and leaves the bundle unused.
"""
from __future__ import annotations

import marshal
import os
import sys
import sysconfig

from corert.fsutil import write_atomic

# The bundle: 8 bytes little-endian length of the index, the index (marshal of (sys.hexversion,
# {module name: (offset, length, is_package, source path, source mtime_ns, source size)})), then the
# marshalled code objects, offsets counted from the end of the index.
BUNDLE_SUFFIX = ".bundle"
NATIVE_FRONT = "corert-native"


def python_cli_path(front: str) -> str:
    """Where the native front at `front` finds the Python CLI (PYTHON_CLI in corert/cli/native/main.c)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(front))), "libexec", "corert", "corert")

# Runs in the launcher before anything of corert is imported; no imports beyond builtin modules (posix,
# marshal) and the frozen import machinery, which the interpreter has loaded already.
_FINDER = '''\
import marshal, posix
from _frozen_importlib import ModuleSpec


class _CodeBundle:
    """corert's compiled modules from one file (corert/cli/launcher.py wrote it)."""

    def __init__(self, path):
        self.path = path
        self.fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            st = posix.fstat(self.fd)
            self.ident = (st.st_dev, st.st_ino)
            size = int.from_bytes(posix.pread(self.fd, 8, 0), "little")
            version, self.index = marshal.loads(posix.pread(self.fd, size, 8))
            if version != sys.hexversion:
                raise ValueError("written by another interpreter (setup writes it again)")
            self.base = 8 + size
        except BaseException:
            posix.close(self.fd)   # unusable: no fd of ours stays open in the CLI and what it forks
            raise

    def read(self, offset, length):
        # Our fd may have been closed (a forked helper closes every fd) and its number reused: check
        # that it is still this file, else open the path again, which must still be this very file.
        st = None
        try:
            st = posix.fstat(self.fd)
        except OSError:
            pass
        if st is None or (st.st_dev, st.st_ino) != self.ident:
            fd = posix.open(self.path, posix.O_RDONLY | posix.O_CLOEXEC)
            st = posix.fstat(fd)
            if (st.st_dev, st.st_ino) != self.ident:
                posix.close(fd)
                raise ValueError("bundle replaced")
            self.fd = fd
        return posix.pread(self.fd, length, self.base + offset)

    def find_spec(self, name, path=None, target=None):
        entry = self.index.get(name)
        if entry is None:
            return None
        offset, length, is_package, origin, mtime_ns, size = entry
        try:
            st = posix.stat(origin)
            if st.st_mtime_ns != mtime_ns or st.st_size != size:
                return None  # edited since: the normal finders read the file
            code = marshal.loads(self.read(offset, length))
        except (OSError, ValueError, EOFError, TypeError):
            return None
        if type(code) is not type(self.read.__code__):
            return None
        spec = ModuleSpec(name, self, origin=origin, loader_state=code, is_package=is_package)
        if is_package:
            spec.submodule_search_locations = [origin.rpartition("/")[0]]
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        code, module.__spec__.loader_state = module.__spec__.loader_state, None
        exec(code, module.__dict__)


try:
    sys.meta_path.insert(0, _CodeBundle({bundle!r}))
except (OSError, ValueError, EOFError, TypeError):
    pass  # no usable bundle: import from the files
'''

TEMPLATE = """#!{python} -IS
# Written by `python -m corert.cli.launcher` (corert/cli/launcher.py): pip's console script, minus `site`,
# {source}.
{prelude}
try:
    from corert.cli import console_main
except ImportError:
    import site
    site.main()
    from corert.cli import console_main
console_main()
"""


def site_paths() -> list[str]:
    """This interpreter's site-packages dirs (a venv's python: the venv's), deduplicated."""
    paths: list[str] = []
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths()[key]
        if path not in paths:
            paths.append(path)
    return paths


def prelude(bundle: str | None, paths: list[str]) -> str:
    """What the script runs before importing corert: sys.path as `site` would set it, the bundle's finder.

    Also used by benchmarks/phases.py, so that its timed interpreters start as the command does."""
    text = f"import sys\nsys.path.extend({paths!r})\n"
    return text + _FINDER.format(bundle=bundle) if bundle else text


def launcher_text(bundle: str | None, paths: list[str], python: str | None = None) -> str:
    """The script: the prelude, then the CLI."""
    source = f"with corert's modules read from {bundle}" if bundle else "corert's modules read from its files"
    return TEMPLATE.format(python=python or sys.executable, source=source, prelude=prelude(bundle, paths))


def write_bundle(target: str, package_dir: str) -> int:
    """Compile every module under package_dir (the installed `corert`) into one file; returns the count."""
    top = os.path.dirname(package_dir)
    index: dict[str, tuple[int, int, bool, str, int, int]] = {}
    blobs: list[bytes] = []
    offset = 0
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            path = os.path.join(dirpath, filename)
            name = os.path.relpath(path, top)[:-3].replace(os.sep, ".")
            is_package = filename == "__init__.py"
            if is_package:
                name = name[: -len(".__init__")]
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                blob = marshal.dumps(compile(f.read(), path, "exec", dont_inherit=True))
            index[name] = (offset, len(blob), is_package, path, st.st_mtime_ns, st.st_size)
            blobs.append(blob)
            offset += len(blob)
    head = marshal.dumps((sys.hexversion, index))
    write_atomic(target, b"".join([len(head).to_bytes(8, "little"), head, *blobs]), 0o644)
    return len(index)


def install(target: str, paths: list[str] | None = None) -> str:
    """Replace `target` (pip's console script) with the command (0755): a copy of the native front, whose
    Python CLI, the launcher script, goes to python_cli_path(target); without the front, the launcher
    script itself. The bundle goes next to `target` (`<target>.bundle`). paths: where corert is installed (default: this interpreter's site-packages).
    Returns the path of the Python script.
    """
    paths = paths or site_paths()
    bundle = os.path.abspath(target) + BUNDLE_SUFFIX  # the script runs from any cwd
    package_dir = next((os.path.join(p, "corert") for p in paths
                        if os.path.isfile(os.path.join(p, "corert", "__init__.py"))), None)
    if package_dir is not None:
        write_bundle(bundle, package_dir)
    else:   # not installed there (an editable install): no bundle, and no stale one either
        try:
            os.unlink(bundle)
        except FileNotFoundError:
            pass
        bundle = None
    front = os.path.join(package_dir, "cli", NATIVE_FRONT) if package_dir else None
    script = python_cli_path(target) if front and os.path.isfile(front) else target
    os.makedirs(os.path.dirname(script), exist_ok=True)
    write_atomic(script, launcher_text(bundle, paths).encode(), 0o755)
    if script != target:
        with open(front, "rb") as f:   # a copy, not a link: the front finds its script beside its own path
            write_atomic(target, f.read(), 0o755)
    return script


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m corert.cli.launcher PATH-OF-THE-CORERT-SCRIPT")
    install(sys.argv[1])
