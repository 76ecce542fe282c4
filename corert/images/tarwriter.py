"""Write a directory as a layer tar, deterministically, converting overlayfs form back to OCI whiteouts.

Used for plain rootfs directory imports and for `add_layer_from_dir` (commit of a container's upper dir,
which the container wrote: every entry is opened relative to its parent fd with O_NOFOLLOW, so a symlink
swapped in can never make us read a file outside the directory).
"""
from __future__ import annotations

import os
import stat
import tarfile
from typing import BinaryIO

from corert.errors import ImageError
from corert.images import layout

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_layer_tar(src: os.PathLike | str, out: BinaryIO, *, overlay_form: bool, rootless: bool) -> None:
    """Write the tree under `src` (not the root entry itself) as a PAX tar to `out`, a regular file (a
    user-namespace child may write through its fd). Sockets are left out, as docker does.

    overlay_form: char devices 0:0 become `.wh.NAME`, an opaque xattr becomes `DIR/.wh..wh..opq`.
    rootless: files owned by the current user are recorded as root (they are root in the container's
    user namespace), or as the owner recorded in `user.corert.owner` (a malformed record is ignored).
    """
    if overlay_form and rootless:
        from corert.rootless import full_id_maps, run_in_userns

        maps = full_id_maps()
        if maps is not None:
            # A store tree (upper dir, layer) of a user with subordinate ids: files of the image's other
            # owners are readable, and show their container ids, only inside the user namespace.
            out.flush()
            run_in_userns(maps, _write_to_fd, os.fspath(src), out.fileno(), overlay_form)
            out.seek(0, os.SEEK_END)   # the child wrote through the shared file offset
            return
    _write_layer_tar(src, out, overlay_form=overlay_form, rootless=rootless)


def _write_to_fd(src: str, fd: int, overlay_form: bool) -> None:
    with os.fdopen(os.dup(fd), "wb") as f:
        _write_layer_tar(src, f, overlay_form=overlay_form, rootless=True)


def _write_layer_tar(src: os.PathLike | str, out: BinaryIO, *, overlay_form: bool, rootless: bool) -> None:
    w = _Writer(out, overlay_form=overlay_form, rootless=rootless)
    root_fd = os.open(os.fspath(src), _DIR_FLAGS)
    try:
        if overlay_form and layout.is_opaque_dir(root_fd):
            w.add_marker(layout.OPAQUE_MARKER)
        w.walk(root_fd, "")
    finally:
        os.close(root_fd)
        w.tar.close()


class _Writer:
    def __init__(self, out: BinaryIO, *, overlay_form: bool, rootless: bool) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        self.overlay_form = overlay_form
        self.rootless = rootless
        self.inodes: dict[tuple[int, int], str] = {}

    def walk(self, dfd: int, prefix: str) -> None:
        with os.scandir(dfd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            path = prefix + name
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    st = os.fstat(cfd)
                    self.tar.addfile(self._info(path + "/", st, tarfile.DIRTYPE, cfd))
                    if self.overlay_form and layout.is_opaque_dir(cfd):
                        self.add_marker(path + "/" + layout.OPAQUE_MARKER)
                    self.walk(cfd, path + "/")
                finally:
                    os.close(cfd)
            elif stat.S_ISREG(st.st_mode):
                self._regular(dfd, name, path, st)
            elif stat.S_ISLNK(st.st_mode):
                info = self._info(path, st, tarfile.SYMTYPE, None)
                info.linkname = os.readlink(name, dir_fd=dfd)
                self._link_xattrs(info, dfd, name)
                self.tar.addfile(info)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                if self.overlay_form and layout.is_whiteout(st):
                    self.add_marker(prefix + layout.WHITEOUT_PREFIX + name)
                    continue
                info = self._info(path, st, tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE, None)
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                self.tar.addfile(info)
            elif stat.S_ISFIFO(st.st_mode):
                self.tar.addfile(self._info(path, st, tarfile.FIFOTYPE, None))
            # else a socket: not image content

    def add_marker(self, path: str) -> None:
        info = tarfile.TarInfo(path)
        info.mode = 0o644
        info.uname = info.gname = ""
        self.tar.addfile(info)

    def _regular(self, dfd: int, name: str, path: str, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.inodes:
            info = self._info(path, st, tarfile.LNKTYPE, None)
            info.linkname = self.inodes[key]
            info.pax_headers = {}
            self.tar.addfile(info)
            return
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        with os.fdopen(fd, "rb") as f:
            fst = os.fstat(f.fileno())
            if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != key:
                raise ImageError(f"{path!r} changed while it was being archived")
            info = self._info(path, fst, tarfile.REGTYPE, f.fileno())
            info.size = fst.st_size
            self.tar.addfile(info, _Exact(f, fst.st_size, path))
        if st.st_nlink > 1:
            self.inodes[key] = path

    def _info(self, path: str, st: os.stat_result, kind: bytes, fd: int | None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        info.uname = info.gname = ""  # numeric ids only: names depend on the host's passwd
        info.uid, info.gid = st.st_uid, st.st_gid
        xattrs: dict[str, bytes] = {}
        if fd is not None:
            xattrs = _read_xattrs(fd)
        if self.rootless:
            recorded = xattrs.get(layout.OWNER_XATTR)
            try:
                info.uid, info.gid, info.mode = layout.stored_owner(st, recorded)
            except ValueError:   # a malformed record: the file's own owner and mode
                info.uid, info.gid, info.mode = layout.stored_owner(st, None)
        info.pax_headers = {
            "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
            for k, v in sorted(xattrs.items())
            if not layout.is_reserved_xattr(k)
        }
        return info

    def _link_xattrs(self, info: tarfile.TarInfo, dfd: int, name: str) -> None:
        path = f"/proc/self/fd/{dfd}/{name}"
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return
        for k in sorted(names):
            if layout.is_reserved_xattr(k):
                continue
            try:
                v = os.getxattr(path, k, follow_symlinks=False)
            except OSError:
                continue
            info.pax_headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")


def _read_xattrs(fd: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        names = os.listxattr(fd)
    except OSError:
        return out
    for k in names:
        try:
            out[k] = os.getxattr(fd, k)
        except OSError:
            continue
    return out


class _Exact:
    """File reader that fails loudly if the file shrinks under us (tar sizes are fixed up front)."""

    def __init__(self, f: BinaryIO, size: int, path: str) -> None:
        self._f, self._left, self._path = f, size, path

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        if len(data) < n:
            raise ImageError(f"{self._path!r} shrank while it was being archived")
        self._left -= len(data)
        return data
