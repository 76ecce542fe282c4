"""FUSE overlay storage driver: an overlayfs-compatible rootfs served by a per-container pyfuse3 daemon.

Importing this package is cheap (no pyfuse3/trio): those load only in the daemon process. The driver's
names load on first use, so the daemon (`python -m` runs this file first) never imports the driver and
what it brings (pathlib, the state store): ~0.5 MB of every daemon's memory.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from corert.drivers.storage.fuse.driver import FuseOverlayDriver, FuseRootfs

__all__ = ["FuseOverlayDriver", "FuseRootfs"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from corert.drivers.storage.fuse import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
