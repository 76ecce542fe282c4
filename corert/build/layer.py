"""COPY, ADD and WORKDIR as an overlay-form diff dir, written against the parent image's merged view.

No container and no mount is needed: the destination is resolved in the parent's layers (LayerView, the
storage drivers' read-only merged lookup), following the image's symlinks but never leaving its root,
as docker does. Existing parent directories are recreated in the diff with the image's own metadata (the
overlay merges them with the lower ones); missing ones are made 0755 root-owned (or --chown's owner).
Copied entries are owned by root (or --chown), keep their mode (or take --chmod) and mtime.

A rootless store's layers hold files of the user's subordinate ids (what a RUN gave to www-data), and an ADD
of a tar gives such ids to what it unpacks: a whole step's diff is written in one child inside the user
namespace (write_diff), where those files are readable and writable and show their container owners.
"""
from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

from corert.build.context import BuildContext, Entry, Source
from corert.drivers.storage.base import LayerView
from corert.drivers.storage.vfs import LayerCopier
from corert.errors import UsageError
from corert.images import layout

_MAX_LINKS = 40   # symlinks followed while resolving one destination (the kernel's own limit)
_T = TypeVar("_T")


class _Lower(NamedTuple):
    """An entry of the parent image as the container sees it."""
    st: os.stat_result
    owner: tuple[int, int]   # container-side ids
    target: str | None       # a symlink's target


def _image_entry(view: LayerView, rel: str, rootless: bool) -> _Lower | None:
    host = view.lookup(rel)
    if host is None:
        return None
    st = os.lstat(host)
    owner = (st.st_uid, st.st_gid)
    if rootless:
        try:
            recorded = os.getxattr(host, layout.OWNER_XATTR, follow_symlinks=False)
        except OSError:
            recorded = None
        try:
            owner = layout.stored_owner(st, recorded)[:2]
        except ValueError:
            owner = layout.stored_owner(st, None)[:2]
    return _Lower(st, owner, os.readlink(host) if stat.S_ISLNK(st.st_mode) else None)


def write_diff(diff_dir: Path, layers: list[Path], fill: Callable[[DiffWriter], _T], *, rootless: bool) -> _T:
    """fill(a DiffWriter of diff_dir over `layers`), for a rootless store with subordinate ids in one forked
    child inside the user namespace (its value or exception comes back pickled): every read and write of
    the step is done there, so none meets a file of a subordinate id it cannot read or write."""
    if rootless:
        from corert.rootless import full_id_maps, run_in_userns

        maps = full_id_maps()
        if maps is not None:
            return run_in_userns(maps, _fill, diff_dir, layers, fill, True, True)
    return _fill(diff_dir, layers, fill, rootless, False)


def _fill(diff_dir: Path, layers: list[Path], fill: Callable[[DiffWriter], _T], rootless: bool,
          in_userns: bool) -> _T:
    return fill(DiffWriter(diff_dir, layers, rootless=rootless, in_userns=in_userns))


class DiffWriter:
    """Writes one step's diff dir; rootless with subordinate ids, only inside the user namespace (write_diff)."""

    def __init__(self, diff_dir: Path, layers: list[Path], *, rootless: bool, in_userns: bool = False) -> None:
        self.diff = str(diff_dir)
        self.view = LayerView(layers)
        self.rootless = rootless
        self.in_userns = in_userns   # root of the user namespace with the full map: chown to mapped ids works
        self.copier = LayerCopier(rootless)   # data copy (reflink when it can)
        self._entries: dict[str, _Lower | None] = {}

    # ---- resolution in the image -----------------------------------------------------------------------
    def _image(self, rel: str) -> _Lower | None:
        """The parent image's entry at `rel` ('' = the root: None, never looked up)."""
        if not rel:
            return None
        if rel not in self._entries:
            self._entries[rel] = _image_entry(self.view, rel, self.rootless)
        return self._entries[rel]

    def _lstat(self, rel: str) -> os.stat_result | None:
        """The entry this step sees at `rel`: what it already wrote, else the image's."""
        try:
            return os.lstat(os.path.join(self.diff, rel))
        except FileNotFoundError:
            entry = self._image(rel)
            return entry.st if entry else None

    def _readlink(self, rel: str) -> str:
        mine = os.path.join(self.diff, rel)
        if os.path.lexists(mine):
            return os.readlink(mine)
        entry = self._image(rel)
        assert entry is not None and entry.target is not None
        return entry.target

    def resolve(self, path: str) -> str:
        """The absolute image path `path` with the image's symlinks followed inside its root ('' = /)."""
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            rel = "/".join(done + [part])
            st = self._lstat(rel)
            if st is not None and stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    raise UsageError(f"too many levels of symbolic links resolving {path} in the image")
                target = self._readlink(rel)
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            done.append(part)
        return "/".join(done)

    def is_dir(self, rel: str) -> bool:
        st = self._lstat(rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    # ---- writing ---------------------------------------------------------------------------------------
    def _own(self, path: str, owner: tuple[int, int], mode: int) -> None:
        """Owner and mode of a file or dir we wrote. Rootless stores keep files as the user (root in the
        container) and record any other owner in the store's owner xattr, as the layer unpacker does."""
        if not self.rootless:
            os.chown(path, *owner)   # before the mode: chown clears set-id bits
            os.chmod(path, mode)
            return
        os.chmod(path, mode | stat.S_IWUSR)   # a user.* xattr needs write permission
        if owner != (0, 0):
            os.setxattr(path, layout.OWNER_XATTR, f"{owner[0]}:{owner[1]}:{mode:o}".encode())
        os.chmod(path, mode)

    def ensure_dir(self, rel: str, owner: tuple[int, int]) -> None:
        """Every component of `rel` (resolved) as a directory in the diff."""
        parts = [p for p in rel.split("/") if p]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            mine = os.path.join(self.diff, sub)
            st = _lstat(mine)
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            lower = self._image(sub)
            if lower is not None and not stat.S_ISDIR(lower.st.st_mode):
                raise UsageError(f"/{sub} exists in the image and is not a directory")
            os.mkdir(mine, 0o700)
            if lower is not None:   # the image's dir, same metadata: the overlay merges the two
                self._own(mine, lower.owner, stat.S_IMODE(lower.st.st_mode))
                os.utime(mine, ns=(lower.st.st_atime_ns, lower.st.st_mtime_ns))
            else:
                self._own(mine, owner, 0o755)

    def copy(self, ctx: BuildContext, sources: list[Source], dest: str, *, owner: tuple[int, int],
             mode: int | None) -> None:
        """COPY's rules: a directory source copies its contents; a file goes to dest/NAME when dest ends
        in '/' or is a directory (or there are several sources), else to dest itself."""
        several = len(sources) > 1
        to_dir = dest.endswith("/") or several
        if several and not dest.endswith("/"):
            raise UsageError("with several sources the destination must be a directory ending in '/'")
        target = self.resolve(dest)
        for source in sources:
            if source.is_dir:
                self.ensure_dir(target, owner)
                base = target
            else:
                name = posixpath.basename(source.rel) or posixpath.basename(ctx.root)
                if to_dir or self.is_dir(target):
                    self.ensure_dir(target, owner)
                    base = f"{target}/{name}" if target else name
                else:
                    parent = posixpath.dirname(target)
                    self.ensure_dir(parent, owner)
                    base = target
                if not base:
                    raise UsageError("cannot copy a file onto /")
            self._copy_entries(ctx, ctx.entries(source), base, owner, mode)

    def _copy_entries(self, ctx: BuildContext, entries: list[Entry], base: str, owner: tuple[int, int],
                      mode: int | None) -> None:
        dirs: list[tuple[str, os.stat_result]] = []
        for entry in entries:
            rel = f"{base}/{entry.dest_rel}" if entry.dest_rel else base
            dst = os.path.join(self.diff, rel)
            st = entry.st
            old = _lstat(dst)   # never os.path.isdir: a symlink an earlier source put here is not a dir
            if old is not None and not (stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(old.st_mode)):
                _remove(dst)   # a later source replaces an earlier one, as in the image
                old = None
            src = ctx.path(entry.rel)
            if stat.S_ISDIR(st.st_mode):
                if old is None:
                    os.mkdir(dst, 0o700)
                dirs.append((dst, st))
            elif stat.S_ISREG(st.st_mode):
                if entry.dest_rel:
                    self.copier.copy_file(src, dst)   # inside a copied dir: never through a link
                else:
                    _copy_followed(self.copier, src, dst)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            else:
                continue   # sockets, fifos, devices of the context are not image content
            if stat.S_ISLNK(st.st_mode):
                if not self.rootless:
                    os.chown(dst, *owner, follow_symlinks=False)
            elif stat.S_ISDIR(st.st_mode):
                if not self.rootless:
                    os.chown(dst, *owner)   # the mode comes last, below: the children are written first
            else:
                self._own(dst, owner, mode if mode is not None else stat.S_IMODE(st.st_mode))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        for path, st in reversed(dirs):   # children changed their times: set the dirs' last
            self._own(path, owner, mode if mode is not None else stat.S_IMODE(st.st_mode))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def unpack(self, archive: str, dest: str, owner: tuple[int, int]) -> None:
        """ADD of a local tar archive (plain, gzip, bzip2, xz or zstd): its entries below dest, with the
        owners and modes the archive records (docker's ADD)."""
        from corert.images.compression import open_decompressed
        from corert.images.unpack import unpack_layer

        target = self.resolve(dest)
        self.ensure_dir(target, owner)
        fd = os.open(os.path.join(self.diff, target) if target else self.diff,
                     os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with open_decompressed(Path(archive)) as stream:
                unpack_layer(stream, fd, rootless=self.rootless, in_userns=self.in_userns)
        finally:
            os.close(fd)


def is_archive(path: str) -> bool:
    """A local file ADD unpacks: a tar, possibly compressed (docker's rule: judged by content)."""
    import tarfile

    from corert.images.compression import open_decompressed

    try:
        with open_decompressed(Path(path)) as stream:
            head = stream.read(512)
    except Exception:   # noqa: BLE001 - a file that does not decompress is simply copied
        return False
    if len(head) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _copy_followed(copier: LayerCopier, src: str, dst: str) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)   # a named source may be a (context-internal) symlink
    try:
        copier.copy_into(fd, dst)
    finally:
        os.close(fd)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove(path: str) -> None:
    from corert.fsutil import remove_tree
    remove_tree(path, check_mounts=False)   # our own staging dir: nothing is mounted in it
