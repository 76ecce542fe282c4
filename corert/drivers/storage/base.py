"""The storage driver interface, and the layer-stack helpers every driver shares.

A layer is a read-only directory in overlayfs form: an OCI whiteout is a character device 0:0 carrying the
deleted name, an opaque directory carries `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`, the
kernel's `userxattr` form). Layers are given bottom first and are never written.

The interface classes are plain base classes rather than typing.Protocol: this module sits on the OCI CLI
hot path (delete tears a rootfs down) and importing typing costs more than the whole verb should.
"""
from __future__ import annotations

import errno
import os
import stat

from corert import mountinfo
from corert.errors import ResourceError
from corert.fsutil import remove_tree  # noqa: F401  (part of the drivers' toolkit)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (hot path, see above)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Both spellings are read everywhere: root-made layers use trusted.*, rootless (userxattr) ones user.*.
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


class PreparedRootfs:
    """A rootfs made by a driver for one container: what the runtime mounts as /, and how to undo it."""

    rootfs: Path
    # (fstype, options) when the rootfs must be mounted by the container's init inside its own user and
    # mount namespaces (rootless kernel overlayfs) instead of already being mounted on the host.
    child_mount: tuple[str, str] | None = None

    def state(self) -> dict:
        """JSON-serialisable description, enough for another process to tear it down (see Driver.load)."""
        raise NotImplementedError

    def usage(self) -> int:
        """Bytes written by the container (apparent size of the upper dir / of the full copy)."""
        raise NotImplementedError

    def changes(self) -> list[tuple[str, str]]:
        """("A"|"C"|"D", "/path") against the image's merged view, sorted by path, like `docker diff`."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Unmount (lazy detach as a fallback) and remove everything prepare made; idempotent."""
        raise NotImplementedError


class LayerRootfs(PreparedRootfs):
    """What the rootfs of every driver here records: whose it is, where, made from which layers (bottom
    first), and whether prepare made the container dir (teardown then removes it once empty)."""

    driver = ""        # StorageDriver.name of the driver that made it
    rootfs_name = ""   # the container's / inside container_dir

    def __init__(self, container_id: str, container_dir: Path, layers: list[Path],
                 created_container_dir: bool) -> None:
        self.container_id = container_id
        self.container_dir = container_dir
        self.layers = layers
        self.created_container_dir = created_container_dir
        self.rootfs = container_dir / self.rootfs_name

    def state(self) -> dict:
        """The common part; a driver adds its own keys."""
        return {
            "driver": self.driver,
            "container_id": self.container_id,
            "container_dir": str(self.container_dir),
            "rootfs": str(self.rootfs),
            "layers": [str(p) for p in self.layers],
            "created_container_dir": self.created_container_dir,
        }


class UpperDirRootfs(LayerRootfs):
    """A rootfs whose writes land in an overlayfs-form upper dir (kernel overlay and FUSE overlay write the
    same), mounted with the layers on merged/."""

    rootfs_name = "merged"

    def __init__(self, container_id: str, container_dir: Path, layers: list[Path],
                 created_container_dir: bool) -> None:
        super().__init__(container_id, container_dir, layers, created_container_dir)
        self.upper = container_dir / "upper"
        self.work = container_dir / "work"

    def usage(self) -> int:
        # copy-ups keep owners: rootless, files of subordinate ids may be unreadable outside the user namespace
        from corert.rootless import as_userns_root
        return as_userns_root(tree_usage, self.upper)

    def changes(self) -> list[tuple[str, str]]:
        from corert.rootless import as_userns_root
        return as_userns_root(upper_changes, self.upper, self.layers)


class StorageDriver:
    """Turns an image's layer stack into a per-container writable rootfs."""

    name: str = ""
    rootless: bool = False
    # The container goes when it stops (`run --rm`): its writes need not survive a power loss, so copy-ups
    # skip their fsync (kernel overlayfs' `volatile`, which podman uses for --rm containers). A crash of
    # corert or of the FUSE daemon still never leaves a half-copied file in place (copy, then rename).
    volatile: bool = False

    def prepare(self, container_id: str, layers: list[Path], container_dir: Path) -> PreparedRootfs:
        """Build the rootfs under container_dir; on failure undo everything and raise ResourceError."""
        raise NotImplementedError

    def load(self, state: dict) -> PreparedRootfs:
        """Rebuild a PreparedRootfs from PreparedRootfs.state() (typically written by another process)."""
        raise NotImplementedError

    def check_state(self, state: dict) -> None:
        """load()'s first step: the state must be one this driver wrote."""
        if state.get("driver") != self.name:
            raise ResourceError(f"storage: state of driver {state.get('driver')!r} given to {self.name!r}")


# --- layer inspection -------------------------------------------------------------------------------------

def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | bytes | Path) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue  # ENODATA, or the fs has no such xattr namespace
    return False


def check_layers(layers: list[Path]) -> list[Path]:
    """Absolute, existing directories, bottom first; a clear ResourceError otherwise."""
    if not layers:
        raise ResourceError("storage: the image has no layers")
    from pathlib import Path  # here: the FUSE daemon imports this module and never needs pathlib

    checked = []
    for layer in layers:
        path = Path(os.path.abspath(layer))
        try:
            st = os.stat(path)
        except OSError as e:
            raise ResourceError(f"storage: layer {path}: {os.strerror(e.errno)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ResourceError(f"storage: layer {path} is not a directory")
        checked.append(path)
    return checked


def check_no_overlap(layers: list[Path], container_dir: Path) -> None:
    """A layer inside the container dir (or containing it) would be written to, or copied into itself."""
    cdir = os.path.realpath(container_dir)
    for layer in layers:
        real = os.path.realpath(layer)
        if real == cdir or real.startswith(cdir + "/") or cdir.startswith(real.rstrip("/") + "/"):
            raise ResourceError(f"storage: layer {layer} overlaps the container directory {container_dir}")


class LayerView:
    """Read-only lookups in the merged view of a layer stack (what the container sees before any write).

    Directory listings are cached per layer, so looking up every path of a tree costs one scandir per
    directory per layer rather than one lstat per path per layer.
    """

    # Entry kinds in a cached listing.
    DIR, WHITEOUT, OTHER = 0, 1, 2

    def __init__(self, layers: list[Path]) -> None:
        self.top_first = [str(p) for p in reversed(layers)]
        self._listings: dict[tuple[int, str], dict[str, int] | None] = {}
        self._opaque: dict[tuple[int, str], bool] = {}

    def _listing(self, i: int, rel: str) -> dict[str, int] | None:
        key = (i, rel)
        if key in self._listings:
            return self._listings[key]
        out: dict[str, int] | None = {}
        try:
            with os.scandir(os.path.join(self.top_first[i], rel) if rel else self.top_first[i]) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        out[entry.name] = self.DIR
                    elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                        out[entry.name] = self.OTHER
                    else:
                        st = entry.stat(follow_symlinks=False)
                        out[entry.name] = self.WHITEOUT if is_whiteout(st) else self.OTHER
        except (FileNotFoundError, NotADirectoryError):
            out = None
        self._listings[key] = out
        return out

    def _is_opaque(self, i: int, rel: str) -> bool:
        key = (i, rel)
        if key not in self._opaque:
            self._opaque[key] = is_opaque(os.path.join(self.top_first[i], rel))
        return self._opaque[key]

    def lookup(self, rel: str) -> str | None:
        """Host path of the entry the merged view shows at `rel` ("a/b", no leading slash), or None."""
        parts = rel.split("/")
        for i in range(len(self.top_first)):
            dirrel = ""
            hidden_below = False  # an opaque ancestor in this layer hides everything further down
            for depth, part in enumerate(parts):
                listing = self._listing(i, dirrel)
                kind = None if listing is None else listing.get(part)
                if kind is None:
                    break  # this layer has nothing at this prefix
                if kind == self.WHITEOUT:
                    return None
                childrel = f"{dirrel}/{part}" if dirrel else part
                if depth == len(parts) - 1:
                    return os.path.join(self.top_first[i], rel)
                if kind != self.DIR:
                    return None  # a non-directory ancestor hides the path in every lower layer
                if self._is_opaque(i, childrel):
                    hidden_below = True
                dirrel = childrel
            if hidden_below:
                return None
        return None

    def listdir(self, rel: str) -> set[str]:
        """Names the merged view shows inside the directory `rel` ("" for the root)."""
        names: set[str] = set()
        for i in range(len(self.top_first)):
            listing = self._listing(i, rel)
            if listing:
                names.update(listing)
        prefix = f"{rel}/" if rel else ""
        return {n for n in names if self.lookup(prefix + n) is not None}


# --- change lists -----------------------------------------------------------------------------------------

def walk_tree(root: str | Path) -> Iterator[tuple[str, list[os.DirEntry]]]:
    """(dir relative to root, "" for root itself; its entries) for root and every directory below it.
    Symlinks are never followed; the subdirectories are listed after the caller has seen their parent."""
    stack = [""]
    while stack:
        dirrel = stack.pop()
        with os.scandir(os.path.join(root, dirrel) if dirrel else root) as it:
            entries = list(it)
        yield dirrel, entries
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(f"{dirrel}/{entry.name}" if dirrel else entry.name)


def upper_changes(upper: Path, layers: list[Path]) -> list[tuple[str, str]]:
    """PreparedRootfs.changes() of an overlayfs-form upper dir (kernel overlay and FUSE overlay write the
    same): its entries are the adds and changes, its whiteouts and opaque dirs the deletions."""
    view = LayerView(layers)
    out: dict[str, str] = {}
    for dirrel, entries in walk_tree(upper):
        for entry in entries:
            rel = f"{dirrel}/{entry.name}" if dirrel else entry.name
            st = entry.stat(follow_symlinks=False)
            lower = view.lookup(rel)
            if is_whiteout(st):
                if lower is not None:
                    out[rel] = "D"
                continue
            out[rel] = "C" if lower is not None else "A"
            if lower is not None and stat.S_ISDIR(st.st_mode) and is_opaque(entry.path):
                # Removed and recreated: the image's entries below it are gone unless re-added.
                for name in view.listdir(rel) - set(os.listdir(entry.path)):
                    out[f"{rel}/{name}"] = "D"
    return add_parent_changes(out, view)


def add_parent_changes(changes: dict[str, str], view: LayerView) -> list[tuple[str, str]]:
    """Like docker: a directory of the image with anything changed below it is itself reported "C"."""
    for rel in list(changes):
        parent = rel.rpartition("/")[0]
        while parent and parent not in changes:
            if view.lookup(parent) is not None:
                changes[parent] = "C"
            parent = parent.rpartition("/")[0]
    return [(kind, "/" + rel) for rel, kind in sorted(changes.items())]


def tree_usage(root: str | Path) -> int:
    """Apparent size of a tree, each inode once, directories not counted (docker's SizeRw rule)."""
    total = 0
    seen: set[int] = set()
    stack = [str(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                    continue
                if st.st_nlink > 1:
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                total += st.st_size
    return total


# --- removal: corert.fsutil.remove_tree (re-exported here for the drivers) ----------------------------


def remove_created(paths: list[Path]) -> None:
    """Remove what a prepare made, in reverse order of creation; an empty container dir goes last."""
    for p in reversed(paths):
        remove_tree(p)


def rmdir_if_empty(path: str | Path) -> None:
    """Remove a container dir we created, unless something else is (still) in it or it is gone."""
    try:
        os.rmdir(path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise


# --- mount table ------------------------------------------------------------------------------------------

def mount_points() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount in this process's mount namespace."""
    return [(m.mount_point, m.fstype, m.super_options) for m in mountinfo.read()]


def is_mounted(path: str | Path) -> bool:
    path = str(path)
    return any(mp == path for mp, _, _ in mount_points())


# --- libc mount calls (ctypes, loaded on first use: no subprocess, no cost for verbs that never mount) ----

MS_BIND = 0x1000
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_libc = None


def libc():
    """The C library, via the already-loaded process image (no find_library: it may spawn ldconfig)."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2); raises OSError with the kernel's errno."""
    import ctypes

    rc = libc().mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags),
                      data.encode() if data else None)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), target)


def unmount(path: str | Path) -> None:
    """Unmount every mount stacked on `path`; lazily detach when busy. Not mounted is not an error."""
    import ctypes

    target = str(path).encode()
    for _ in range(64):  # bounded: each round removes one stacked mount
        if not is_mounted(path):
            return
        if libc().umount2(target, UMOUNT_NOFOLLOW) == 0:
            continue
        e = ctypes.get_errno()
        if e in (errno.EINVAL, errno.ENOENT):
            return  # not a mount point (any more): someone else unmounted it
        if e != errno.EBUSY:
            raise ResourceError(f"storage: cannot unmount {path}: {os.strerror(e)}")
        # Busy (a process still has its cwd or a file there): detach now, the kernel frees it later.
        if libc().umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
            e = ctypes.get_errno()
            if e in (errno.EINVAL, errno.ENOENT):
                return
            raise ResourceError(f"storage: cannot detach {path}: {os.strerror(e)}")
    raise ResourceError(f"storage: {path} is still mounted after repeated unmounts")


FICLONE = 0x40049409        # _IOW(0x94, 9, int): share the source's blocks (btrfs, xfs)
_COPY_CHUNK = 1 << 20
# errnos that mean "this fast path is not available here", not "the copy failed"
_NO_FAST_COPY = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                           errno.EBADF, errno.ETXTBSY})


def copy_file_data(sfd: int, dfd: int) -> None:
    """A file's contents from sfd into the empty file dfd: a reflink where the filesystem can share
    blocks, else copy_file_range (in the kernel), else read/write. Used by vfs, commit and the FUSE
    daemon's copy-up."""
    import fcntl

    try:
        fcntl.ioctl(dfd, FICLONE, sfd)
        return
    except OSError as e:
        if e.errno not in _NO_FAST_COPY:
            raise
    size = os.fstat(sfd).st_size
    off = 0
    try:
        while off < size:
            n = os.copy_file_range(sfd, dfd, size - off, off, off)
            if n == 0:
                break
            off += n
        return
    except OSError as e:
        if e.errno not in _NO_FAST_COPY:
            raise
    while True:   # `off` bytes are already in place; go on from there
        chunk = os.pread(sfd, _COPY_CHUNK, off)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            n = os.pwrite(dfd, view, off)
            view = view[n:]
            off += n
