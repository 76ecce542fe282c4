"""`corert commit CONTAINER NAME`: a container's changes become a new image layer on top of its image.

The layer is built from a directory in overlay form (whiteouts are char devices 0:0, opaque dirs carry the
overlay xattr), which `ImageStore.add_layer_from_dir` turns into a tar with OCI whiteouts:

- overlay and fuse: the container's upper dir already is that directory;
- vfs: the rootfs is a full copy, so the change list against the image layers (`changes()`) is replayed
  into a staging dir: added/changed entries copied, deleted ones as whiteouts.

Rootless, the replay runs inside the user namespace with the containers' map (as the tar writer does), so
files the container gave to other owners are read, and copied with their owners, as the container sees them.

The container's tree is container-controlled: the vfs replay opens every entry relative to its parent's fd
with O_NOFOLLOW (as the tar writer does for upper dirs), so a symlink swapped in mid-commit cannot make us
copy a host file into the image. A running container is frozen for the duration (docker's default), so
the layer is one consistent snapshot.
"""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from corert.drivers.storage.vfs import LayerCopier
from corert.engine.state import ContainerRecord, StateStore
from corert.errors import CorertError, ImageError, UsageError

if TYPE_CHECKING:
    from corert.drivers.storage import PreparedRootfs
    from corert.images.store import Image

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def commit(record: ContainerRecord, name: str | None, *, store: StateStore | None = None,
           created_by: str = "corert commit") -> Image:
    """A new image named `name`: the container's image plus one layer holding what the container changed.

    With the state `store`, a running container is frozen while its changes are read. name None: an
    unnamed image (a build step); `created_by` is its history entry."""
    from corert.drivers.storage import load_prepared
    from corert.frontend.containers import data_root
    from corert.images.store import ImageStore

    if not record.storage or not record.extra.get("managed"):
        raise UsageError(f"container {record.id[:12]} was not made by `corert run`: nothing to commit from")
    prepared = load_prepared(record.storage)
    images = ImageStore(data_root())
    try:
        try:
            parent = images.get(record.extra["image"])
        except ImageError:
            raise ImageError(f"the image of container {record.extra.get('name', record.id)} is gone") from None
        with _paused(store, record):
            upper = getattr(prepared, "upper", None)   # overlay, fuse: already in overlay form
            if upper is not None:
                return images.add_layer_from_dir(parent, Path(upper), parent.config, name, created_by=created_by)
            with images.staging() as diff_dir:
                from corert.rootless import as_userns_root
                # the container's files of other owners are subordinate ids on the host: only inside the user
                # namespace are they readable, with their container ids, and can the copies get them. One
                # child for both steps: in there euid is 0, so changes() reads directly instead of forking.
                as_userns_root(_replay_changes, prepared, diff_dir, images.rootless)
                return images.add_layer_from_dir(parent, diff_dir, parent.config, name, created_by=created_by)
    finally:
        images.close()


@contextmanager
def _paused(store: StateStore | None, record: ContainerRecord) -> Iterator[None]:
    """Freeze a running container while its changes are read; a container without a cgroup is read live."""
    from corert.engine.state import live_status

    if store is None or not record.cgroup or live_status(store, record) != "running":
        yield
        return
    from corert.engine.control import pause, resume

    try:
        pause(store, record.id)
    except CorertError:
        yield   # it stopped meanwhile, or has no freezer: the fd-relative reads keep us safe anyway
        return
    try:
        yield
    finally:
        resume(store, record.id)


def _replay_changes(prepared: PreparedRootfs, out: Path, rootless: bool) -> None:
    """A full-copy rootfs's changes, replayed into `out` (see write_overlay_diff)."""
    write_overlay_diff(prepared.rootfs, prepared.changes(), out, rootless=rootless)


def write_overlay_diff(rootfs: Path, changes: list[tuple[str, str]], out: Path, *, rootless: bool) -> None:
    """Replay `changes` (("A"|"C"|"D", "/path"), parents before children, as changes() gives them) from
    `rootfs` into the empty directory `out`, in overlay form."""
    copier = LayerCopier(rootless)   # the vfs driver's metadata and (reflink) data copy
    links: dict[tuple[int, int], Path] = {}
    dirs: list[tuple[Path, os.stat_result]] = []
    root_fd = os.open(rootfs, _DIR_FLAGS)
    try:
        for kind, path in changes:
            rel = path.strip("/")
            parent_rel, _, name = rel.rpartition("/")
            dst = out / rel
            if kind == "D":
                os.mknod(dst, stat.S_IFCHR | 0o600, 0)   # overlay whiteout (unprivileged since Linux 5.8)
                continue
            pfd = _open_dir(root_fd, parent_rel)
            try:
                src = f"/proc/self/fd/{pfd}/{name}"   # the parent is pinned; `name` itself is never followed
                st = os.lstat(src)
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(dst, 0o700)
                    dirs.append((dst, st))
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in links:
                        os.link(links[key], dst)   # keep hard links that are both part of the change
                        continue
                    _copy_regular(copier, pfd, name, st, dst)
                    if st.st_nlink > 1:
                        links[key] = dst
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(name, dir_fd=pfd), dst)
                elif stat.S_ISSOCK(st.st_mode):
                    continue   # a socket is no image content (the tar writer skips it too)
                else:
                    try:
                        os.mknod(dst, st.st_mode, st.st_rdev)
                    except PermissionError:
                        if rootless:
                            continue   # no device nodes without CAP_MKNOD; the runtime binds /dev anyway
                        raise
                copier.copy_metadata(src, str(dst), st)
                if not stat.S_ISDIR(st.st_mode):
                    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            finally:
                os.close(pfd)
    except FileNotFoundError as e:
        raise ImageError(f"commit: {e.filename or 'an entry'} vanished while the changes were read") from None
    finally:
        os.close(root_fd)
    for path, st in reversed(dirs):   # children changed their parents' times: set them last
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _open_dir(root_fd: int, rel: str) -> int:
    """The directory `rel` below root_fd, walked one component at a time without following symlinks."""
    fd = os.dup(root_fd)
    try:
        for part in filter(None, rel.split("/")):
            if part == "..":
                raise ImageError(f"commit: unexpected path component in {rel!r}")
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as e:
        os.close(fd)
        raise ImageError(f"commit: cannot open /{rel} in the container: {e.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_regular(copier: LayerCopier, pfd: int, name: str, st: os.stat_result, dst: Path) -> None:
    # O_NONBLOCK: if a FIFO was swapped in after the lstat, the open must not hang; the fstat check then fails.
    sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=pfd)
    try:
        fst = os.fstat(sfd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise ImageError(f"commit: {name!r} changed while it was being copied")
        copier.copy_into(sfd, dst)
    finally:
        os.close(sfd)
