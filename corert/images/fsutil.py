"""Opening up trees an unprivileged owner made read-only (layer dirs keep the image's modes)."""
from __future__ import annotations

import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def make_writable_tree(pfd: int, base: str) -> None:
    """Give the owner rwx on every directory below base so an unprivileged rmtree can empty it."""
    try:
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        with os.scandir(fd) as it:
            subdirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        for name in subdirs:
            make_writable_tree(fd, name)
    finally:
        os.close(fd)
