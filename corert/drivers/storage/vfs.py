"""vfs: a full copy of the layer stack into container_dir/rootfs. Slow, needs no mount, works everywhere.

Layers are applied bottom-up with overlay semantics: a whiteout removes the named entry, an opaque dir is
emptied before the layer's own entries land in it. File data is reflinked when the filesystem can
(FICLONE), else copied in the kernel (copy_file_range), else read/written.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from corert.drivers.storage.base import (
    OVERLAY_XATTR_PREFIXES,
    LayerRootfs,
    LayerView,
    StorageDriver,
    add_parent_changes,
    check_layers,
    check_no_overlap,
    copy_file_data,
    is_opaque,
    is_whiteout,
    remove_tree,
    rmdir_if_empty,
    tree_usage,
    walk_tree,
)
from corert.errors import ResourceError

# Errors a rootless copy tolerates for ownership, privileged xattrs and device nodes.
_ROOTLESS_TOLERATED = {errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP, errno.EACCES}


class VfsDriver(StorageDriver):
    name = "vfs"

    def __init__(self, *, rootless: bool = False) -> None:
        self.rootless = rootless

    def prepare(self, container_id: str, layers: list[Path], container_dir: Path) -> VfsRootfs:
        layers = check_layers(layers)
        container_dir = Path(os.path.abspath(container_dir))
        check_no_overlap(layers, container_dir)
        created_container_dir = False
        rootfs = container_dir / "rootfs"
        made_rootfs = False
        try:
            if not container_dir.exists():
                os.makedirs(container_dir, 0o711)
                created_container_dir = True
            try:
                os.mkdir(rootfs, 0o700)
            except FileExistsError:
                raise ResourceError(
                    f"storage: {rootfs} already exists (container {container_id!r} prepared twice?)") from None
            made_rootfs = True
            copier = LayerCopier(self.rootless)
            # layers of a user with subordinate ids hold files of the image's owners (mapped ids): only root
            # of the user namespace may read all of them and give the copies the same owners
            from corert.rootless import as_userns_root
            copier.owners_preserved = as_userns_root(_apply_all, copier, layers, rootfs)
        except BaseException as e:
            if made_rootfs:
                _remove(rootfs)
            if created_container_dir:
                rmdir_if_empty(container_dir)
            if isinstance(e, OSError):
                raise ResourceError(f"storage: vfs copy for {container_id!r} failed: {e}") from None
            raise
        return VfsRootfs(container_id, container_dir, layers, self.rootless, created_container_dir,
                         copier.owners_preserved)

    def load(self, state: dict) -> VfsRootfs:
        self.check_state(state)
        return VfsRootfs(state["container_id"], Path(state["container_dir"]), [Path(p) for p in state["layers"]],
                         bool(state.get("rootless")), bool(state.get("created_container_dir")),
                         bool(state.get("owners_preserved", True)))


def _apply_all(copier: LayerCopier, layers: list[Path], rootfs: Path) -> bool:
    for layer in layers:
        copier.apply(layer, rootfs)
    return copier.owners_preserved


def _remove(path: Path) -> None:
    # the copy keeps the image's owners: rootless, files of subordinate ids the user alone cannot remove
    from corert.rootless import remove_tree as rootless_remove_tree
    rootless_remove_tree(path)


class LayerCopier:
    """Applies layers one after the other onto a destination tree."""

    def __init__(self, rootless: bool) -> None:
        self.rootless = rootless
        self.owners_preserved = True

    def apply(self, layer: Path, dst_root: Path) -> None:
        hardlinks: dict[tuple[int, int], str] = {}  # links are kept within one layer, as overlay shows them
        dirs: list[tuple[str, os.stat_result]] = []  # their times are set last, children change them
        root_st = os.lstat(layer)
        if is_opaque(layer):
            _empty_dir(str(dst_root))
        self.copy_metadata(str(layer), str(dst_root), root_st)
        dirs.append((str(dst_root), root_st))
        stack = [(str(layer), str(dst_root))]
        while stack:
            src_dir, dst_dir = stack.pop()
            with os.scandir(src_dir) as it:
                entries = list(it)
            for entry in entries:
                src, dst = entry.path, os.path.join(dst_dir, entry.name)
                st = entry.stat(follow_symlinks=False)
                if is_whiteout(st):
                    remove_tree(dst, check_mounts=False)  # our fresh copy holds no mounts
                    continue
                try:
                    old = os.lstat(dst)
                except FileNotFoundError:
                    old = None
                if stat.S_ISDIR(st.st_mode):
                    if old is not None and not stat.S_ISDIR(old.st_mode):
                        os.unlink(dst)
                        old = None
                    if old is None:
                        os.mkdir(dst, 0o700)
                    elif is_opaque(src):
                        _empty_dir(dst)
                    self.copy_metadata(src, dst, st)
                    dirs.append((dst, st))
                    stack.append((src, dst))
                    continue
                if old is not None:
                    remove_tree(dst, check_mounts=False)
                if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in hardlinks:
                        os.link(hardlinks[key], dst)
                        continue
                    hardlinks[key] = dst
                if stat.S_ISREG(st.st_mode):
                    self.copy_file(src, dst)
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                else:
                    try:
                        os.mknod(dst, st.st_mode, st.st_rdev)
                    except OSError as e:
                        if self.rootless and e.errno in _ROOTLESS_TOLERATED:
                            continue  # no device nodes in a user namespace; the runtime binds /dev anyway
                        raise
                self.copy_metadata(src, dst, st)
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        for path, st in reversed(dirs):
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def copy_metadata(self, src: str, dst: str, st: os.stat_result) -> None:
        # Order matters: chown clears set-id bits and file capabilities, so mode and xattrs come after it.
        try:
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
        except OSError as e:
            if not (self.rootless and e.errno in _ROOTLESS_TOLERATED):
                raise
            self.owners_preserved = False
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        try:
            names = os.listxattr(src, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                return
            raise
        for name in names:
            if name.startswith(OVERLAY_XATTR_PREFIXES):
                continue  # overlay's own bookkeeping (opaque markers) is not content
            try:
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
            except OSError as e:
                if not (self.rootless and e.errno in _ROOTLESS_TOLERATED):
                    raise

    def copy_file(self, src: str, dst: str) -> None:
        sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self.copy_into(sfd, dst)
        finally:
            os.close(sfd)

    @staticmethod
    def copy_into(sfd: int, dst: str | Path) -> None:
        """A new file at dst (never an existing one, never through a link) with sfd's contents."""
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            copy_file_data(sfd, dfd)
        finally:
            os.close(dfd)


def _empty_dir(path: str) -> None:
    with os.scandir(path) as it:
        names = [e.path for e in it]
    for p in names:
        remove_tree(p, check_mounts=False)


class VfsRootfs(LayerRootfs):
    driver = "vfs"
    rootfs_name = "rootfs"

    def __init__(self, container_id: str, container_dir: Path, layers: list[Path], rootless: bool,
                 created_container_dir: bool, owners_preserved: bool) -> None:
        super().__init__(container_id, container_dir, layers, created_container_dir)
        self.rootless = rootless
        self.owners_preserved = owners_preserved

    def state(self) -> dict:
        return {**super().state(), "rootless": self.rootless, "owners_preserved": self.owners_preserved}

    def usage(self) -> int:
        from corert.rootless import as_userns_root
        return as_userns_root(tree_usage, self.rootfs)

    def changes(self) -> list[tuple[str, str]]:
        from corert.rootless import as_userns_root
        return as_userns_root(self._changes)

    def _changes(self) -> list[tuple[str, str]]:
        # The full copy against the image: compare every entry, and list what the copy no longer has.
        view = LayerView(self.layers)
        out: dict[str, str] = {}
        for dirrel, entries in walk_tree(self.rootfs):
            for entry in entries:
                rel = f"{dirrel}/{entry.name}" if dirrel else entry.name
                st = entry.stat(follow_symlinks=False)
                lower = view.lookup(rel)
                if lower is None:
                    out[rel] = "A"
                elif self._differs(entry.path, st, lower, os.lstat(lower)):
                    out[rel] = "C"
            # Image entries of this directory that are gone (the topmost only: below them is gone too).
            for name in view.listdir(dirrel) - {e.name for e in entries}:
                out[f"{dirrel}/{name}" if dirrel else name] = "D"
        return add_parent_changes(out, view)

    def _differs(self, path: str, st: os.stat_result, lower: str, lst: os.stat_result) -> bool:
        # docker's rule: type, mode, owner, device; and for non-directories size and mtime too.
        if st.st_mode != lst.st_mode or st.st_rdev != lst.st_rdev:
            return True
        if self.owners_preserved and (st.st_uid, st.st_gid) != (lst.st_uid, lst.st_gid):
            return True
        if stat.S_ISDIR(st.st_mode):
            return False
        if stat.S_ISLNK(st.st_mode) and os.readlink(path) != os.readlink(lower):
            return True
        return st.st_size != lst.st_size or st.st_mtime_ns != lst.st_mtime_ns

    def teardown(self) -> None:
        _remove(self.rootfs)
        if self.created_container_dir:
            rmdir_if_empty(self.container_dir)
