"""Hostile-input-safe layer unpacking into overlayfs form.

Every path is resolved component by component from an fd of the layer root with O_NOFOLLOW, so no entry
can be written through a symlink or outside the layer, whatever the archive contains. `..` components are
refused, leading `/` is stripped, hard links must point at something already unpacked in this layer.
OCI whiteouts become char devices 0:0, opaque markers become the overlay opaque xattr (see layout.py).

Rootless, with a subordinate id range (the containers' full 65536-id map), the unpack runs in a forked
child inside a user namespace with that same map (corert.rootless.run_in_userns), where chown works: a file
owned by www-data (33) in the layer is owned by the mapped host id on disk and shows as 33 in every
container. Ids outside the map, and every owner under a single-id map, cannot be stored as owners: the
files stay the user's (root in the container) and the original "uid:gid:mode" goes to OWNER_XATTR.
"""
from __future__ import annotations

import errno
import os
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

from corert.errors import ImageError
from corert.fsutil import copy_to_fd
from corert.images import layout
from corert.images.fsutil import make_writable_tree as _make_writable_tree

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_PREFIX = "SCHILY.xattr."


@dataclass
class UnpackResult:
    size: int = 0                                   # bytes of regular file content
    notes: list[str] = field(default_factory=list)  # things skipped or downgraded (e.g. devices when rootless)


def split_path(name: str) -> list[str]:
    """A member name as components inside the layer: leading '/' and '.' dropped, '..' refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"layer entry {name!r} contains '..'; refusing a path that could leave the layer")
    return parts


def unpack_layer(stream: BinaryIO, dest_fd: int, *, rootless: bool, in_userns: bool = False) -> UnpackResult:
    """Unpack the uncompressed tar `stream` into the directory open as `dest_fd` (normally empty).

    in_userns: the caller already runs as root of the user namespace with the full map (a build step's
    diff writer): owners are stored by chown right here, with no child of its own."""
    if rootless and not in_userns:
        from corert.rootless import full_id_maps, run_in_userns

        maps = full_id_maps()
        if maps is not None:
            # the parent keeps reading `stream` (the caller hashes it) and feeds the child through a pipe
            return run_in_userns(maps, _unpack_fed, dest_fd, feed=stream)
    return _unpack(stream, dest_fd, rootless, in_userns)


def _unpack_fed(pipe: BinaryIO, dest_fd: int) -> UnpackResult:
    result = _unpack(pipe, dest_fd, True, True)
    # Read the rest of the pipe (tar padding, trailing blocks) before the result goes back: a result bigger
    # than the result pipe's buffer would block us while the parent still blocks feeding a pipe we left.
    while pipe.read(1 << 20):
        pass
    return result


def _unpack(stream: BinaryIO, dest_fd: int, rootless: bool, mapped: bool) -> UnpackResult:
    u = _Unpacker(dest_fd, rootless, mapped)
    try:
        try:
            tf = tarfile.open(fileobj=stream, mode="r|", errorlevel=2)
        except tarfile.ReadError as e:
            if "empty file" in str(e):  # a zero-byte layer: nothing to unpack
                return u.result
            raise ImageError(f"layer is not a tar archive: {e}") from None
        with tf:
            try:
                for member in tf:
                    try:
                        u.add(tf, member)
                    except OSError as e:
                        raise ImageError(f"layer entry {member.name!r}: {e.strerror or e}") from None
            except tarfile.TarError as e:
                raise ImageError(f"corrupt layer tar: {e}") from None
        u.finish()
    finally:
        u.close()
    return u.result


class _Unpacker:
    def __init__(self, root_fd: int, rootless: bool, mapped: bool = False) -> None:
        self.root_fd = root_fd
        self.rootless = rootless
        # rootless inside a user namespace with the full id map: owners are stored as they are (chown)
        self.mapped = mapped
        self.opaque_xattr = layout.OPAQUE_XATTR_ROOTLESS if rootless else layout.OPAQUE_XATTR_ROOT
        self.result = UnpackResult()
        # directory metadata applied at the end: writing children changes mtimes, and a read-only mode
        # would stop an unprivileged unpacker from creating the children.
        self.dirs: dict[tuple[str, ...], tarfile.TarInfo] = {}
        self._cache: tuple[tuple[str, ...], int] | None = None  # last parent dir fd: tars are grouped by dir

    # ---- path resolution -------------------------------------------------------------------------------
    def close(self) -> None:
        self._drop_cache()

    def _drop_cache(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    def _open_dir(self, parts: tuple[str, ...], name: str, *, create: bool) -> int:
        """An fd of the directory `parts` below the root (a new fd the caller closes)."""
        fd = os.dup(self.root_fd)
        try:
            for i, comp in enumerate(parts):
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ImageError(f"layer entry {name!r}: {'/'.join(parts[: i + 1])} does not exist") from None
                    # tars may omit parent entries; the real entry, if it comes later, sets the metadata
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                    os.fchmod(nfd, 0o755)  # not subject to the umask
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ImageError(
                            f"layer entry {name!r}: {'/'.join(parts[: i + 1])} is a symlink or not a directory; "
                            "refusing to write through it"
                        ) from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent(self, parts: tuple[str, ...], name: str, *, create: bool = True) -> int:
        """Cached fd of the parent directory (do not close)."""
        if self._cache is not None and self._cache[0] == parts:
            return self._cache[1]
        fd = self._open_dir(parts, name, create=create)
        self._drop_cache()
        self._cache = (parts, fd)
        return fd

    def _clear(self, pfd: int, base: str) -> os.stat_result | None:
        """Remove whatever a previous entry put at `base` (later tar entries win); directories stay."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return st
        os.unlink(base, dir_fd=pfd)
        return None

    def _rmtree_at(self, pfd: int, base: str, parts: tuple[str, ...]) -> None:
        import shutil

        if self._cache is not None and self._cache[0][: len(parts)] == parts:
            self._drop_cache()  # the cached fd is inside the tree being removed
        _make_writable_tree(pfd, base)
        shutil.rmtree(base, dir_fd=pfd)
        for key in [k for k in self.dirs if k[: len(parts)] == parts]:
            del self.dirs[key]

    # ---- entries ---------------------------------------------------------------------------------------
    def add(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = tuple(split_path(m.name))
        if not parts:
            if m.isdir():
                self.dirs[()] = m
                return
            raise ImageError(f"layer entry {m.name!r} names the layer root but is not a directory")
        base = parts[-1]
        parent = parts[:-1]
        if base.startswith(layout.WHITEOUT_PREFIX):
            self._whiteout(m, parent, base)
            return
        pfd = self._parent(parent, m.name)
        existing = self._clear(pfd, base)
        if existing is not None and not m.isdir():
            self._rmtree_at(pfd, base, parts)
            pfd = self._parent(parent, m.name)
        if m.isdir():
            if existing is None:
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            try:
                self._owner_and_xattrs(fd, m, is_dir=True)
            finally:
                os.close(fd)
            self.dirs[parts] = m
        elif m.isreg():
            self._file(tf, m, pfd, base)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
            self._link_meta(pfd, base, m)
        elif m.islnk():
            self._hardlink(m, pfd, base, parts)
        elif m.ischr() or m.isblk():
            self._device(m, pfd, base)
        elif m.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
            fd = os.open(base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._finish_inode(fd, m)
            finally:
                os.close(fd)
        else:
            self.result.notes.append(f"skipped {m.name!r}: unsupported tar entry type {m.type!r}")

    def _whiteout(self, m: tarfile.TarInfo, parent: tuple[str, ...], base: str) -> None:
        pfd = self._parent(parent, m.name)
        if base == layout.OPAQUE_MARKER:
            os.setxattr(pfd, self.opaque_xattr, b"y")
            return
        if base.startswith(layout.AUFS_META_PREFIX):
            self.result.notes.append(f"skipped aufs metadata entry {m.name!r}")
            return
        target = base[len(layout.WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise ImageError(f"layer entry {m.name!r} is a whiteout of an invalid name")
        if self._clear(pfd, target) is not None:
            self._rmtree_at(pfd, target, parent + (target,))
            pfd = self._parent(parent, m.name)
        # mknod of a 0:0 char device is allowed unprivileged since Linux 5.8 (overlayfs whiteouts)
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=pfd)

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        try:
            src = tf.extractfile(m)
            if src is not None:
                copy_to_fd(src, fd)
            self.result.size += m.size
            self._finish_inode(fd, m)
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, pfd: int, base: str, parts: tuple[str, ...]) -> None:
        tparts = tuple(split_path(m.linkname))
        if not tparts:
            raise ImageError(f"layer entry {m.name!r} is a hard link to the layer root")
        if tparts == parts:
            return  # a link to itself: the file is already there
        tfd = self._open_dir(tparts[:-1], m.name, create=False)
        try:
            try:
                tst = os.stat(tparts[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise ImageError(
                    f"layer entry {m.name!r} is a hard link to {m.linkname!r}, which is not in the layer"
                ) from None
            if stat.S_ISDIR(tst.st_mode):
                raise ImageError(f"layer entry {m.name!r} is a hard link to a directory")
            os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _device(self, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        is_whiteout = kind == stat.S_IFCHR and m.devmajor == 0 and m.devminor == 0
        if self.rootless and not is_whiteout:
            self.result.notes.append(f"skipped device node {m.name!r}: creating devices needs root")
            return
        os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
        if self.rootless:
            return
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, stat.S_IMODE(m.mode), dir_fd=pfd)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)

    # ---- metadata --------------------------------------------------------------------------------------
    def _finish_inode(self, fd: int, m: tarfile.TarInfo) -> None:
        """Owner, mode (after chown, which clears setuid), xattrs, mtime of a non-directory open as fd."""
        self._owner_and_xattrs(fd, m, is_dir=False)
        os.utime(fd, (m.mtime, m.mtime))

    def _owner_and_xattrs(self, fd: int, m: tarfile.TarInfo, *, is_dir: bool) -> None:
        mode = stat.S_IMODE(m.mode)
        if not self.rootless:
            os.fchown(fd, m.uid, m.gid)
        elif self.mapped:
            self._mapped_chown(m, lambda: os.fchown(fd, m.uid, m.gid))
        for name, value in _xattrs(m):
            self._setxattr(fd, m.name, name, value)
        if is_dir:
            return  # mode applied at the end
        applied = _try_fchmod(fd, mode)
        if self.rootless:
            self._record_owner(fd, m, mode, applied)

    def _mapped_chown(self, m: tarfile.TarInfo, chown) -> None:
        try:
            chown()
        except OSError as e:
            if e.errno != errno.EINVAL:   # EINVAL: an id outside the map (>= 65536); recorded instead
                raise
            self.result.notes.append(f"owner {m.uid}:{m.gid} of {m.name!r} is outside the user namespace's "
                                     "id map: stored as root, the owner is recorded in an xattr")

    def _record_owner(self, fd: int, m: tarfile.TarInfo, mode: int, applied: int) -> None:
        # rootless: the user's files show as root inside the container's user namespace, so only an
        # owner other than root (or a mode we could not set) needs a record for commit/export. In a
        # mapped unpack an owner that chown could store needs none either.
        if self.mapped:
            st = os.fstat(fd)
            stored = (st.st_uid, st.st_gid) == (m.uid, m.gid)
        else:
            stored = (m.uid, m.gid) == (0, 0)
        if stored and applied == mode:
            return
        value = f"{m.uid}:{m.gid}:{mode:o}".encode()
        # setting a user.* xattr needs write permission, even for the owner
        writable = applied & stat.S_IWUSR
        try:
            if not writable:
                os.fchmod(fd, applied | stat.S_IWUSR)
            os.setxattr(fd, layout.OWNER_XATTR, value)
        except OSError as e:
            self.result.notes.append(f"could not record owner of {m.name!r}: {e.strerror}")
        finally:
            if not writable:
                os.fchmod(fd, applied)

    def _setxattr(self, target: int | str, member: str, name: str, value: bytes) -> None:
        if layout.is_reserved_xattr(name):
            self.result.notes.append(f"dropped reserved xattr {name} on {member!r}")
            return
        # in a mapped user namespace file capabilities can be set too (the kernel stores them for the
        # namespace's root, which is the containers' root as well)
        if self.rootless and not name.startswith("user.") and not (self.mapped and name == "security.capability"):
            self.result.notes.append(f"skipped xattr {name} on {member!r}: needs root")
            return
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as e:
            self.result.notes.append(f"could not set xattr {name} on {member!r}: {e.strerror}")

    def _link_meta(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        if self.mapped:
            self._mapped_chown(m, lambda: os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False))
        if not self.rootless:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            xattrs = _xattrs(m)
            if xattrs:
                # no fd-based xattr call for a symlink itself: name it through the trusted parent fd
                path = f"/proc/self/fd/{pfd}/{base}"
                for name, value in xattrs:
                    self._setxattr(path, m.name, name, value)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory modes and mtimes, deepest first (a parent made read-only must not block its children)."""
        self._drop_cache()
        for parts in sorted(self.dirs, key=len, reverse=True):
            m = self.dirs[parts]
            fd = self._open_dir(parts, m.name, create=False)
            try:
                mode = stat.S_IMODE(m.mode)
                applied = _try_fchmod(fd, mode)
                if self.rootless:
                    self._record_owner(fd, m, mode, applied)
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)


def _try_fchmod(fd: int, mode: int) -> int:
    """chmod, dropping setuid/setgid when not permitted (unprivileged); returns the mode applied."""
    try:
        os.fchmod(fd, mode)
        return mode
    except PermissionError:
        reduced = mode & ~(stat.S_ISUID | stat.S_ISGID)
        os.fchmod(fd, reduced)
        return reduced


def _xattrs(m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in m.pax_headers.items():
        if key.startswith(_XATTR_PREFIX):
            # tarfile decodes pax values with surrogateescape: this restores binary values (capabilities)
            out.append((key[len(_XATTR_PREFIX):], value.encode("utf-8", "surrogateescape")))
    return out
