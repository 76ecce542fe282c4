"""Filesystem helpers shared by the image store, the storage drivers and the front door."""
from __future__ import annotations

import errno
import os
import stat

from corert.errors import ResourceError


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until every byte is out: pipes and signals can cut a write short."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` in one step: a temp file next to it (mode `mode`), then rename, so a
    reader never sees half a file and a failed write leaves the old one. No fsync: callers write state
    that describes live processes or can be made again."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            if mode & 0o077:
                os.fchmod(fd, mode)   # a umask may have cut group/other bits; owner-only modes stay as asked
            write_all(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def copy_to_fd(src, fd: int, chunk: int = 1 << 20) -> int:  # noqa: ANN001 - any binary file object
    """Copy a binary file object to fd until its EOF; returns the number of bytes copied."""
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        write_all(fd, data)
        total += len(data)


def remove_tree(path: str | os.PathLike[str], *, check_mounts: bool = True) -> None:
    """rm -rf that never reaches into a mount: a bind mount of a host dir left inside a rootfs has the
    same st_dev when it comes from the same filesystem, so the mount table is asked first (check_mounts)
    and, as a second guard, the walk never enters another device.

    Directories of ours without rwx for their owner are made rwx first: the kernel leaves overlay's
    work/work mode 000, and a rootless upper or layer keeps an image's read-only dirs, which an
    unprivileged user could neither list nor empty otherwise.
    """
    path = str(path)
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(path)
        return
    if check_mounts:
        from corert import mountinfo

        real = os.path.realpath(path)
        busy = [m.mount_point for m in mountinfo.read()
                if m.mount_point == real or m.mount_point.startswith(real + "/")]
        if busy:
            raise ResourceError(f"refusing to remove {path}: {busy[0]} is still mounted")
    _remove_dir(path, top, top.st_dev, os.geteuid())


def _remove_dir(path: str, st: os.stat_result, dev: int, euid: int) -> None:
    if st.st_mode & stat.S_IRWXU != stat.S_IRWXU and st.st_uid == euid:
        os.chmod(path, stat.S_IRWXU)
    with os.scandir(path) as it:
        entries = list(it)
    for entry in entries:
        est = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(est.st_mode):
            if est.st_dev != dev:
                raise ResourceError(f"refusing to remove {entry.path}: another filesystem is mounted there")
            _remove_dir(entry.path, est, dev, euid)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise ResourceError(f"cannot remove {path}: it is still a mount point") from None
        raise
