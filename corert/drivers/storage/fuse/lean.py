"""Keep the FUSE daemon's memory small: what trio imports but the daemon never uses loads only on first use.

trio's package __init__ imports its whole API (TLS streams, DTLS, subprocesses, sockets, paths, file I/O),
which pulls in ssl, hashlib/hmac (OpenSSL), tempfile, bz2/lzma, pathlib and more: ~3 MB of PSS in every
per-container daemon. Two stand-ins keep that out:
- ``slim_trio()`` imports only the parts of trio that hold what the daemon and pyfuse3 use (TRIO_PARTS),
  under stand-ins for the ``trio`` package and ``trio.lowlevel`` that carry those parts' names;
- ``defer()`` puts a placeholder module under each stdlib name that trio imports without using it at
  import time.
Either stand-in loads the real module the first time a name it lacks is read (then it carries the real
module's names), so code that does use one still works, it just pays at that moment.
Only for the daemon process: call both before importing pyfuse3/trio.
"""
from __future__ import annotations

import importlib
import sys
import types

# Imported by trio (or pyfuse3) at import time, but no attribute of them is touched at import, and the
# daemon serves no TLS, subprocess or archive API.
UNUSED_BY_DAEMON = ("ssl", "hmac", "hashlib", "tempfile", "csv", "ipaddress", "idna", "unicodedata",
                    "calendar", "datetime", "bz2", "lzma")


class _Deferred(types.ModuleType):
    """Stands in for a module until an attribute is read from it, then becomes a view of the real one."""

    def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)  # registers the real module under its name
        self._adopt(real)                     # later reads through this placeholder hit the real names
        return getattr(real, attr)

    def _adopt(self, real: types.ModuleType) -> None:
        self.__dict__.update(real.__dict__)


class _Partial(_Deferred):
    """Stands in for a module with part of its names; the first other public name read imports the real
    module, whose names it then carries too (keeping its own dunders: its spec and path stay trio's)."""

    def __getattr__(self, attr: str):  # type: ignore[no-untyped-def]
        if attr.startswith("_"):
            # dunders, and submodules: `from .. import _core` while trio._core imports must find none here
            raise AttributeError(attr)
        return super().__getattr__(attr)

    def _adopt(self, real: types.ModuleType) -> None:
        self.__dict__.update((k, v) for k, v in real.__dict__.items() if not k.startswith("__"))


# The trio modules that define everything the daemon and pyfuse3 use: run, nurseries, Lock, the signal
# receiver, and the lowlevel waits, tasks and checkpoints (trio's own code reads those as trio.X and
# trio.lowlevel.X, so both stand-ins carry all their public names).
TRIO_PARTS = ("trio._core", "trio._sync", "trio._signals")


def slim_trio() -> None:
    """Import trio as TRIO_PARTS only (see the module doc). With a trio whose layout differs, nothing is
    left behind and trio imports as usual."""
    if "trio" in sys.modules:
        return
    from importlib.util import find_spec

    spec = find_spec("trio")
    if spec is None or not spec.submodule_search_locations:
        return
    package, lowlevel = _Partial("trio"), _Partial("trio.lowlevel")
    package.__spec__, package.__file__ = spec, spec.origin
    package.__path__ = list(spec.submodule_search_locations)  # so trio's submodules import from there
    sys.modules["trio"], sys.modules["trio.lowlevel"] = package, lowlevel
    try:
        names = {}
        for part in TRIO_PARTS:
            names.update((k, v) for k, v in vars(importlib.import_module(part)).items()
                         if not k.startswith("_") and not isinstance(v, types.ModuleType))
    except Exception:
        for name in [n for n in sys.modules if n == "trio" or n.startswith("trio.")]:
            del sys.modules[name]
        return
    package.__dict__.update(names)
    lowlevel.__dict__.update(names)
    package.lowlevel = lowlevel  # type: ignore[attr-defined]


class _PackageNotFound(ModuleNotFoundError):
    pass


class no_package_metadata:
    """`with no_package_metadata(): import pyfuse3`: pyfuse3 sets its __version__ through importlib.metadata,
    which pulls in email, zipfile, csv and importlib.resources (~1.3 MB of PSS, ~10 ms). Inside the block
    that name is a stand-in whose version() finds no package (pyfuse3's __version__ becomes 'unknown',
    which the daemon never reads); afterwards the real module imports as usual."""

    def __enter__(self) -> None:
        if "importlib.metadata" in sys.modules:
            self.stub = None   # already loaded for real: nothing to save
            return
        stub = self.stub = types.ModuleType("importlib.metadata")
        stub.PackageNotFoundError = _PackageNotFound  # type: ignore[attr-defined]

        def version(name: str) -> str:
            raise _PackageNotFound(name)

        stub.version = version  # type: ignore[attr-defined]
        sys.modules["importlib.metadata"] = stub

    def __exit__(self, *exc: object) -> None:
        if self.stub is not None and sys.modules.get("importlib.metadata") is self.stub:
            del sys.modules["importlib.metadata"]


def defer(names: tuple[str, ...] = UNUSED_BY_DAEMON) -> None:
    """Install placeholders for the modules in names that are not imported yet."""
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = _Deferred(name)
