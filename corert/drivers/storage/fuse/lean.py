"""Keep the FUSE daemon's memory small: stdlib modules that trio imports but the daemon never uses load
only on first use.

trio's package __init__ imports its whole API (TLS streams, DTLS, subprocesses, sockets...), which pulls in
ssl, hashlib/hmac (OpenSSL), tempfile, bz2/lzma and more: ~2 MB of PSS in every per-container daemon.
Before trio is imported, ``defer()`` puts a placeholder module under each such name; the placeholder loads
the real module the first time any attribute is read from it (after that it is the real module's
namespace), so code that does use one of them still works, it just pays at that moment.
Only for the daemon process: call it before importing pyfuse3/trio.
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
        self.__dict__.update(real.__dict__)   # later reads through this placeholder hit the real names
        return getattr(real, attr)


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
