"""FUSE overlay storage driver: an overlayfs-compatible rootfs served by a per-container pyfuse3 daemon.

Importing this package is cheap (no pyfuse3/trio): those load only in the daemon process.
"""
from corert.drivers.storage.fuse.driver import FuseOverlayDriver, FuseRootfs

__all__ = ["FuseOverlayDriver", "FuseRootfs"]
