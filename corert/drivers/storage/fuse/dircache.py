"""The kernel's readdir cache for the daemon's directories (import before pyfuse3).

A warm `find` over the mount costs one OPENDIR, a few READDIRPLUS and one RELEASEDIR per directory unless
the kernel keeps the listing, which it does when the OPENDIR reply sets `cache_readdir` + `keep_cache`
(fuse-overlayfs does; the kernel drops the cached listing itself when the directory changes through the
mount, and nothing else changes our directories). pyfuse3's `opendir` returns only a handle, so
`_opendir` (Cython) interposes libfuse's `fuse_reply_open` for pyfuse3: it must be loaded with
RTLD_GLOBAL before pyfuse3, which is why the daemon imports this module first. Without it (pyfuse3
already loaded, module not built) directories are served uncached: slower, same results.
"""
from __future__ import annotations

import os
import sys

# Directory handles carry this bit (file handles are fds, far below it): how the C side tells an
# OPENDIR reply from an OPEN reply, which both go through fuse_reply_open.
DIR_HANDLE_TAG = 1 << 62


def _load() -> None:
    if "pyfuse3" in sys.modules:
        return  # too late: pyfuse3's calls are bound to libfuse already
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL)
    try:
        from corert.drivers.storage.fuse import _opendir
        _opendir.enable(DIR_HANDLE_TAG)
    except ImportError:
        pass
    finally:
        sys.setdlopenflags(flags)


_load()
