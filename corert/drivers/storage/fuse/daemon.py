"""The FUSE overlay daemon: an overlayfs-compatible union of read-only layers and one upper dir, in pyfuse3.

On-disk format is the kernel overlayfs one (so the kernel driver can read what we wrote and vice versa):
a whiteout is a 0:0 character device with the deleted name, an opaque directory carries the xattr
``trusted.overlay.opaque=y`` (root) or ``user.overlay.opaque=y`` (rootless); both names are honoured on read.

Model: every FUSE inode is a small ``Node`` (parent node + name, the index of the topmost layer holding it,
and for directories how many layers from the top may contribute to its listing). Paths are rebuilt from the
parent chain, so renaming a directory is O(1) for the nodes below it. All handlers are synchronous between
awaits, so every multi-step change (copy-up, whiteout + rename) is atomic with respect to other requests;
on disk, copy-up goes through a temp name in the work dir and a rename, so no half-copied file is ever
visible under its real name.

Run only as the daemon process (``python -m corert.drivers.storage.fuse``); this module imports pyfuse3.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import gc
import logging
import os
import signal
import stat
import sys
from typing import Callable, Optional

from corert.drivers.storage.fuse import dircache, lean

lean.defer()  # before trio: what it imports but we never use stays unloaded
lean.slim_trio()

with lean.no_package_metadata():
    import pyfuse3  # noqa: E402
import trio  # noqa: E402
from pyfuse3 import FUSEError  # noqa: E402

from corert.drivers.storage.fuse import session  # noqa: E402
from corert.drivers.cgroups import in_user_namespace  # noqa: E402

from corert.drivers.storage.base import (  # noqa: E402
    OPAQUE_XATTRS,
    OVERLAY_XATTR_PREFIXES,
    copy_file_data,
    is_opaque,
    is_whiteout,
)

log = logging.getLogger("corert.fuse")

CACHE_TIMEOUT = 60.0  # the tree only changes through us, so the kernel may cache entries and attrs long
HIDDEN_XATTR_PREFIXES = tuple(p.encode() for p in OVERLAY_XATTR_PREFIXES)  # xattr names arrive as bytes
TMP_PREFIX = b"corert-fuse-"
RENAME_WHITEOUT = 1 << 2
AT_FDCWD = -100
_OPEN_PASS_FLAGS = os.O_SYNC | os.O_DSYNC  # open flags forwarded to the backing file


class Node:
    """One FUSE inode that is not a directory. Kept small on purpose: a daemon may hold hundreds of
    thousands of them (six slots: 80 bytes each). The directory-only fields are class-level defaults here,
    slots in DirNode; what only a few inodes have (open handles, hard links) lives in Overlay's dicts."""

    __slots__ = ("ino", "parent", "name", "layer", "gen", "nlookup")
    mask = 0                                        # see DirNode
    refs = 0
    kids: Optional[dict[bytes, "Node"]] = None

    def __init__(self, ino: int, parent: Optional["Node"], name: Optional[bytes], layer: int, gen: int) -> None:
        self.ino = ino
        self.parent = parent        # None for the root and for unlinked-but-referenced nodes
        self.name = name
        self.layer = layer          # 0 = upper, 1.. = lower layers, top-down
        self.gen = gen              # layer/mask are valid while gen == Overlay.gen
        self.nlookup = 0


class DirNode(Node):
    """A directory inode: also which layers make it up and the names we know inside it."""

    __slots__ = ("mask", "refs", "kids")

    def __init__(self, ino: int, parent: Optional[Node], name: Optional[bytes], layer: int, mask: int,
                 gen: int) -> None:
        super().__init__(ino, parent, name, layer, gen)
        # bit i set = layer i holds this dir and contributes to its listing, so a name inside is only
        # looked for in those layers (one lstat for a dir that lives in one layer)
        self.mask = mask
        self.refs = 0               # names of other nodes that use this node as their parent
        self.kids: Optional[dict[bytes, Node]] = None  # known names inside -> their nodes


class NodeTable:
    """Inode number -> Node as a list indexed by the number: 8 bytes a node instead of a dict entry and
    its key. Numbers of dropped nodes are reused, as a disk filesystem reuses inode numbers; a node is
    only dropped after the kernel's FORGET, so the kernel never asks for the old one again."""

    __slots__ = ("slots", "free")

    def __init__(self) -> None:
        self.slots: list[Optional[Node]] = [None] * (pyfuse3.ROOT_INODE + 1)
        self.free: list[int] = []

    def get(self, ino: int) -> Optional[Node]:
        return self.slots[ino] if 0 <= ino < len(self.slots) else None

    def new_ino(self) -> int:
        if self.free:
            return self.free.pop()
        self.slots.append(None)
        return len(self.slots) - 1

    def put(self, node: Node) -> None:
        self.slots[node.ino] = node

    def drop(self, node: Node) -> None:
        if self.get(node.ino) is node:
            self.slots[node.ino] = None
            self.free.append(node.ino)


def _hidden_xattr(name: bytes) -> bool:
    return name.startswith(HIDDEN_XATTR_PREFIXES)


def _guard(fn: Callable) -> Callable:
    """Turn a synchronous handler into the coroutine pyfuse3 awaits; map OSError to its errno.

    Any other exception would end pyfuse3's main loop, so it becomes EIO and a log line instead."""

    @functools.wraps(fn)
    async def wrapper(*args):  # type: ignore[no-untyped-def]
        try:
            return fn(*args)
        except FUSEError:
            raise
        except OSError as e:
            raise FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise FUSEError(errno.EIO) from None

    return wrapper


_libc = ctypes.CDLL(None, use_errno=True)


def _rename_whiteout(src: bytes, dst: bytes) -> None:
    """rename(src, dst) leaving a whiteout at src, atomically (renameat2 RENAME_WHITEOUT)."""
    if _libc.renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_WHITEOUT) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), src)
        os.rename(src, dst)  # the backing fs lacks RENAME_WHITEOUT: two steps
        os.mknod(src, stat.S_IFCHR, os.makedev(0, 0))


class Overlay(pyfuse3.Operations):
    """pyfuse3 operations for an overlay of ``lowers`` (top-down) below ``upper``."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, upper: str, work: str, lowers_topdown: list[str], volatile: bool = False) -> None:
        super().__init__()
        self.volatile = volatile  # copy-ups skip their fsync (StorageDriver.volatile)
        self.roots = [os.fsencode(os.path.abspath(p)) for p in [upper, *lowers_topdown]]
        self.upper = self.roots[0]
        self.work = os.fsencode(os.path.abspath(work))
        # root of the host, not of a user namespace (a rootless daemon runs as root of one: see driver.py)
        self.is_root = os.geteuid() == 0 and not in_user_namespace()
        self.egid = os.getegid()
        self.opaque_xattr = OPAQUE_XATTRS[0] if self.is_root else OPAQUE_XATTRS[1]
        self.gen = 0
        self.tmp_seq = 0
        self.layer_lists: dict[int, tuple[int, ...]] = {}  # mask -> its layer indices, top-down
        root = DirNode(pyfuse3.ROOT_INODE, None, None, 0, self._root_mask(), 0)
        root.nlookup = 1
        self.root = root
        self.nodes = NodeTable()
        self.nodes.put(root)
        self.idents: dict[tuple[int, int], Node] = {}      # hard-linked backing files -> node
        self.ident_of: dict[Node, tuple[int, int]] = {}    # ... and back: (st_dev, st_ino) while nlink > 1
        self.alt_names: dict[Node, list[tuple[Node, bytes]]] = {}  # further hard-link names we know
        self.files: dict[int, int] = {}                    # open fd (= fh) -> inode
        self.opens: dict[Node, int] = {}                   # open file handles of each node that has some
        # dir handle -> (inode, listing snapshot: names and the layer each was found in, see _listing)
        self.dirs: dict[int, tuple[int, tuple[list[bytes], list[int]] | None]] = {}
        self.next_dh = dircache.DIR_HANDLE_TAG  # tagged: the OPENDIR reply turns the readdir cache on
        self.link_index: dict[int, dict[tuple[int, int], list[bytes]]] = {}
        self.read_buf = bytearray(0)
        self._clean_work()

    # ----- layer resolution -------------------------------------------------------------------------

    def _root_mask(self) -> int:
        mask = 0
        for i, r in enumerate(self.roots):
            mask |= 1 << i
            if is_opaque(r):
                break
        return mask

    def _layers(self, mask: int) -> tuple[int, ...]:
        layers = self.layer_lists.get(mask)
        if layers is None:
            layers = self.layer_lists[mask] = tuple(i for i in range(len(self.roots)) if mask >> i & 1)
        return layers

    def _real(self, layer: int, rel: bytes) -> bytes:
        return self.roots[layer] + b"/" + rel if rel else self.roots[layer]

    def _backing(self, node: Node) -> bytes:
        """The file that shows as node now: its path in the topmost layer holding it."""
        self._fresh(node)
        return self._real(node.layer, self._path(node))

    def _path(self, node: Node) -> bytes:
        parts = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        if node is not self.root:
            raise FUSEError(errno.ENOENT)  # unlinked while the kernel still references it
        parts.reverse()
        return b"/".join(parts)  # type: ignore[arg-type]

    def _resolve(self, rel: bytes, mask: int) -> Optional[tuple[int, int, os.stat_result]]:
        """The merged entry at ``rel`` among the layers in mask (those holding its parent dir):
        (top layer, dir mask, stat) or None."""
        top = -1
        top_st: Optional[os.stat_result] = None
        dmask = 0
        layers = self._layers(mask)
        last = layers[-1] if layers else -1
        for i in layers:
            path = self.roots[i] + b"/" + rel if rel else self.roots[i]
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if top < 0:
                if is_whiteout(st):
                    return None
                if not stat.S_ISDIR(st.st_mode):
                    return i, 0, st
                top, top_st = i, st
            elif not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or non-dir below ends the merge
            dmask |= 1 << i
            if i != last and is_opaque(path):  # nothing below the last layer to hide
                break
        if top < 0:
            return None
        return top, dmask, top_st  # type: ignore[return-value]

    def _fresh(self, node: Node) -> None:
        """Recompute a node's cached layer info after a directory rename invalidated it."""
        if node.gen == self.gen:
            return
        if node is self.root:
            node.mask = self._root_mask()
        elif node.parent is not None:
            self._fresh(node.parent)
            r = self._resolve(self._path(node), node.parent.mask)
            if r is not None:
                node.layer = r[0]
                if r[1]:  # only dirs have a mask (a node never changes type)
                    node.mask = r[1]
        node.gen = self.gen

    def _lower_has(self, parent: Node, rel: bytes) -> bool:
        """Whether some lower layer would show an entry at rel if upper had none (then a whiteout is due)."""
        return self._resolve(rel, parent.mask & ~1) is not None

    def _list(self, node: Node) -> list[bytes]:
        """Names in a merged directory: top layer wins, whiteouts hide, opaque dirs end the merge."""
        return self._listing(node)[0]

    def _listing(self, node: Node) -> tuple[list[bytes], list[int]]:
        """_list's names, each with the layer it was found in: the lower layers above that one hold neither
        the name nor a whiteout of it (and lower layers never change)."""
        self._fresh(node)
        rel = self._path(node)
        seen: set[bytes] = set()
        out: list[bytes] = []
        found_in: list[int] = []
        for i in self._layers(node.mask):
            try:
                it = os.scandir(self._real(i, rel))
            except (FileNotFoundError, NotADirectoryError):
                continue
            with it:
                for e in it:
                    name = e.name
                    if name in seen:
                        continue
                    seen.add(name)
                    if not (e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False)
                            or e.is_symlink()) and is_whiteout(e.stat(follow_symlinks=False)):
                        continue
                    out.append(name)
                    found_in.append(i)
        return out, found_in

    # ----- node table -------------------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise FUSEError(errno.ENOENT)
        return node

    def _stat(self, node: Node) -> os.stat_result:
        self._fresh(node)
        try:
            return os.lstat(self._real(node.layer, self._path(node)))
        except (OSError, FUSEError):
            fd = self._open_fd_of(node)
            if fd is None:
                raise
            return os.fstat(fd)

    def _open_fd_of(self, node: Node) -> Optional[int]:
        if node not in self.opens:
            return None
        for fd, ino in self.files.items():
            if ino == node.ino:
                return fd
        return None

    def _attr(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.entry_timeout = CACHE_TIMEOUT
        a.attr_timeout = CACHE_TIMEOUT
        a.st_mode = st.st_mode
        # Like overlayfs: a dir merged from several layers reports nlink 1 so find(1) does not trust it.
        a.st_nlink = 1 if stat.S_ISDIR(st.st_mode) and node.mask & (node.mask - 1) else st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def _link_name(self, node: Node, parent: Node, name: bytes) -> None:
        """Record that (parent, name) refers to node."""
        if parent.kids is None:
            parent.kids = {}
        parent.kids[name] = node
        parent.refs += 1
        if node.parent is None and node is not self.root:
            node.parent, node.name = parent, name
        else:
            self.alt_names.setdefault(node, []).append((parent, name))

    def _unlink_name(self, parent: Node, name: bytes) -> Optional[Node]:
        """Forget that (parent, name) refers to its node; promote another hard-link name if there is one."""
        kids = parent.kids
        node = kids.pop(name, None) if kids is not None else None
        if node is None:
            return None
        if not kids:
            parent.kids = None
        alt = self.alt_names.get(node)
        if node.parent is parent and node.name == name:
            if alt:
                node.parent, node.name = alt.pop(0)
            else:
                node.parent = node.name = None
        elif alt:
            alt[:] = [pn for pn in alt if not (pn[0] is parent and pn[1] == name)]
        if alt is not None and not alt:
            del self.alt_names[node]
        self._deref(parent)
        self._maybe_drop(node)
        return node

    def _deref(self, node: Node) -> None:
        node.refs -= 1
        self._maybe_drop(node)

    def _maybe_drop(self, node: Node) -> None:
        """Free a node nobody references: no kernel lookups, no child names, no open file."""
        if node.nlookup > 0 or node.refs > 0 or node in self.opens or node is self.root:
            return
        self.nodes.drop(node)
        self._drop_ident(node)
        names = ([(node.parent, node.name)] if node.parent is not None else []) + self.alt_names.pop(node, [])
        node.parent = node.name = None
        for parent, name in names:
            kids = parent.kids
            if kids is not None and kids.get(name) is node:
                del kids[name]
                if not kids:
                    parent.kids = None
            self._deref(parent)

    def _set_ident(self, node: Node, st: os.stat_result) -> None:
        self._drop_ident(node)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            ident = self.ident_of[node] = (st.st_dev, st.st_ino)
            self.idents[ident] = node

    def _drop_ident(self, node: Node) -> None:
        ident = self.ident_of.pop(node, None)
        if ident is not None and self.idents.get(ident) is node:
            del self.idents[ident]

    def _opened(self, node: Node, fd: int) -> None:
        self.files[fd] = node.ino
        self.opens[node] = self.opens.get(node, 0) + 1

    def _entry(self, parent: Node, name: bytes, found_in: int = 0) -> Optional[tuple[Node, os.stat_result]]:
        """The node and stat for name in parent, creating the node on first sight; None if absent.

        found_in: the layer a listing found name in (see _listing); the lower layers above it are skipped."""
        if name == b".":
            return parent, self._stat(parent)
        if name == b"..":
            up = parent.parent or self.root
            return up, self._stat(up)
        node = parent.kids.get(name) if parent.kids is not None else None
        if node is not None:
            return node, self._stat(node)
        self._fresh(parent)
        prel = self._path(parent)
        rel = prel + b"/" + name if prel else name
        # bits 1 .. found_in-1: lower layers that hold nothing at name (upper, bit 0, may have changed since)
        r = self._resolve(rel, parent.mask & ~((1 << found_in) - 2) if found_in > 1 else parent.mask)
        if r is None:
            return None
        layer, mask, st = r
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            other = self.idents.get((st.st_dev, st.st_ino))
            if other is not None and self.nodes.get(other.ino) is other:
                self._link_name(other, parent, name)
                return other, st
        if mask:
            node: Node = DirNode(self.nodes.new_ino(), None, None, layer, mask, self.gen)
        else:
            node = Node(self.nodes.new_ino(), None, None, layer, self.gen)
        self.nodes.put(node)
        self._link_name(node, parent, name)
        self._set_ident(node, st)
        return node, st

    def _must_entry(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result]:
        r = self._entry(parent, name)
        if r is None:
            raise FUSEError(errno.ENOENT)
        return r

    # ----- work dir, copy-up ------------------------------------------------------------------------

    def _clean_work(self) -> None:
        """Remove temp entries a crashed daemon left in the work dir."""
        import shutil

        with os.scandir(self.work) as it:
            for e in it:
                if e.name.startswith(TMP_PREFIX):
                    p = self.work + b"/" + e.name
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        os.unlink(p)

    def _tmp(self) -> bytes:
        self.tmp_seq += 1
        return self.work + b"/" + TMP_PREFIX + b"%d-%d" % (os.getpid(), self.tmp_seq)

    def _trash(self, path: bytes) -> None:
        """Remove a dir tree from the view atomically (rename into work), then delete it."""
        import shutil

        tmp = self._tmp()
        os.rename(path, tmp)
        shutil.rmtree(tmp)

    def _copy_xattrs(self, src: bytes | int, dst: bytes | int) -> None:
        follow = not isinstance(src, bytes)
        try:
            names = os.listxattr(src, follow_symlinks=follow)
        except OSError:
            return
        for name in names:
            bname = os.fsencode(name)
            if _hidden_xattr(bname):
                continue
            try:
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=follow), follow_symlinks=follow)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EACCES):
                    raise

    def _chown(self, target: bytes | int, uid: int, gid: int) -> None:
        try:
            if isinstance(target, int):
                os.fchown(target, uid, gid)
            else:
                os.chown(target, uid, gid, follow_symlinks=False)
        except PermissionError:
            if self.is_root:
                raise  # rootless: files stay owned by the daemon's user

    def _clone(self, src: bytes, dst: bytes, st: os.stat_result, data: bool = True) -> None:
        """Copy one entry (not a dir's contents) with data, owner, mode, xattrs and times; fsync files
        (unless volatile).

        data=False copies a regular file as empty (its caller truncates it anyway)."""
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    if data:
                        copy_file_data(fin, fout)
                    self._chown(fout, st.st_uid, st.st_gid)
                    os.fchmod(fout, mode)  # after chown, which clears set-id bits
                    self._copy_xattrs(fin, fout)
                    os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
                    if not self.volatile:
                        os.fsync(fout)  # durable before the rename makes it the file (kernel overlayfs too)
                finally:
                    os.close(fout)
            finally:
                os.close(fin)
            return
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(dst, 0o700)
        else:
            os.mknod(dst, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        self._chown(dst, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dst, mode)
        self._copy_xattrs(src, dst)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _upper_dir(self, node: Node) -> bytes:
        """Make sure directory node exists in upper (copying up its ancestors first); return its path."""
        self._fresh(node)
        rel = self._path(node)
        if node.layer != 0:
            self._upper_dir(node.parent)  # type: ignore[arg-type]
            src = self._real(node.layer, rel)
            tmp = self._tmp()
            self._clone(src, tmp, os.lstat(src))
            os.rename(tmp, self._real(0, rel))
            node.layer = 0
            node.mask |= 1
        return self._real(0, rel)

    def _copy_up(self, node: Node, data: bool = True) -> None:
        """Give a non-dir node its own copy in upper; keep known hard-link names linked; re-point readers."""
        self._fresh(node)
        if node.layer == 0:
            return
        rel = self._path(node)
        self._upper_dir(node.parent)  # type: ignore[arg-type]
        layer = node.layer
        src = self._real(layer, rel)
        sst = os.lstat(src)
        tmp = self._tmp()
        self._clone(src, tmp, sst, data)
        dst = self._real(0, rel)
        os.rename(tmp, dst)
        node.layer = 0
        if sst.st_nlink > 1:
            # Every merged-view name of this lower file becomes a link to the copy (overlayfs without
            # index=on would break the link instead).
            for orel in self._layer_links(layer).get((sst.st_dev, sst.st_ino), ()):
                if orel == rel or os.path.lexists(self._real(0, orel)):
                    continue
                r = self._resolve_path(orel)
                if r is None or r[0] != layer or r[1].st_ino != sst.st_ino:
                    continue
                self._upper_dir_path(os.path.dirname(orel))
                tmp = self._tmp()
                os.link(dst, tmp)
                os.rename(tmp, self._real(0, orel))
        self._set_ident(node, os.lstat(dst))
        # Read-only fds opened before the copy-up must see later writes: swap them to the new file.
        for fd, ino in list(self.files.items()) if node in self.opens else ():
            if ino == node.ino:
                new = os.open(dst, os.O_RDONLY | os.O_CLOEXEC)
                os.dup2(new, fd)
                os.close(new)

    def _layer_links(self, layer: int) -> dict[tuple[int, int], list[bytes]]:
        """Names of the hard-linked files of a lower layer, indexed once on first need."""
        index = self.link_index.get(layer)
        if index is None:
            index = {}
            root = self.roots[layer]
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    p = dirpath + b"/" + name
                    st = os.lstat(p)
                    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                        index.setdefault((st.st_dev, st.st_ino), []).append(p[len(root) + 1:])
            self.link_index[layer] = index
        return index

    def _resolve_path(self, rel: bytes) -> Optional[tuple[int, os.stat_result]]:
        """(top layer, stat) of a merged-view path walked from the root, or None."""
        self._fresh(self.root)
        mask, cur = self.root.mask, b""
        r = None
        for part in rel.split(b"/"):
            if r is not None and not stat.S_ISDIR(r[2].st_mode):
                return None
            cur = cur + b"/" + part if cur else part
            r = self._resolve(cur, mask)
            if r is None:
                return None
            mask = r[1]
        return (r[0], r[2]) if r is not None else None

    def _upper_dir_path(self, rel: bytes) -> None:
        """Path flavour of _upper_dir, for dirs we may have no node for."""
        cur = b""
        copied = False
        for part in rel.split(b"/") if rel else ():
            cur = cur + b"/" + part if cur else part
            if os.path.lexists(self._real(0, cur)):
                continue
            r = self._resolve_path(cur)
            if r is None or not stat.S_ISDIR(r[1].st_mode):
                raise FUSEError(errno.ENOENT)
            tmp = self._tmp()
            self._clone(self._real(r[0], cur), tmp, r[1])
            os.rename(tmp, self._real(0, cur))
            copied = True
        if copied:
            self.gen += 1  # nodes of these dirs cached a lower layer

    def _make_writable(self, node: Node) -> bytes:
        """Copy up (dir or not) and return the upper path."""
        st = os.lstat(self._backing(node))
        if stat.S_ISDIR(st.st_mode):
            return self._upper_dir(node)
        self._copy_up(node)
        return self._real(0, self._path(node))

    def _copy_tree(self, rel: bytes, mask: int, top: int, dst: bytes) -> None:
        """Materialise the merged tree at rel into dst (a new dir) — used to rename a merged dir."""
        src = self._real(top, rel)
        self._clone(src, dst, os.lstat(src))
        seen: set[bytes] = set()
        for i in self._layers(mask):
            try:
                names = os.listdir(self._real(i, rel))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if name in seen:
                    continue
                seen.add(name)
                crel = rel + b"/" + name if rel else name
                r = self._resolve(crel, mask)
                if r is None:
                    continue
                ctop, cmask, cst = r
                if stat.S_ISDIR(cst.st_mode):
                    self._copy_tree(crel, cmask, ctop, dst + b"/" + name)
                else:
                    self._clone(self._real(ctop, crel), dst + b"/" + name, cst)
        os.utime(dst, ns=(os.lstat(src).st_atime_ns, os.lstat(src).st_mtime_ns), follow_symlinks=False)

    def _set_opaque(self, path: bytes) -> None:
        os.setxattr(path, self.opaque_xattr, b"y", follow_symlinks=False)

    # ----- creating entries -------------------------------------------------------------------------

    def _free_name(self, parent: Node, name: bytes) -> bool:
        """Raise EEXIST if name shows in parent; else whether upper holds a whiteout there.

        The same answer as _entry() (upper first, a whiteout hides, then the lower layers), without making
        a node: one lstat for a dir that lives in upper only."""
        kids = parent.kids
        if kids is not None and name in kids:
            raise FUSEError(errno.EEXIST)
        self._fresh(parent)
        prel = self._path(parent)
        rel = prel + b"/" + name if prel else name
        if parent.mask & 1:
            try:
                st = os.lstat(self._real(0, rel))
            except FileNotFoundError:
                pass
            else:
                if not is_whiteout(st):
                    raise FUSEError(errno.EEXIST)
                return True
        if parent.mask & ~1 and self._lower_has(parent, rel):
            raise FUSEError(errno.EEXIST)
        return False

    def _new_entry(self, parent: Node, name: bytes, make: Callable[[bytes], Optional[int]],
                   ctx: pyfuse3.RequestContext, mode: int, kind: int) -> tuple[Node, os.stat_result, Optional[int]]:
        """Create name in parent through make(path); replaces a whiteout atomically, owner from ctx."""
        whiteout = self._free_name(parent, name)
        pdir = self._upper_dir(parent)
        dst = pdir + b"/" + name
        target = self._tmp() if whiteout else dst
        fd = make(target)
        handle = fd if fd is not None else target
        try:
            st = os.fstat(fd) if fd is not None else os.lstat(target)
            if self.is_root:
                st = self._give_owner(handle, st, ctx, mode, kind, pdir, in_parent=not whiteout)
            if whiteout:
                if kind == stat.S_IFDIR:
                    self._set_opaque(target)  # the lower dir this whiteout hid must stay hidden
                    os.unlink(dst)
                os.rename(target, dst)
                st = os.lstat(dst)  # the rename changed its ctime
        except BaseException:
            if fd is not None:
                os.close(fd)
            try:
                (os.rmdir if kind == stat.S_IFDIR else os.unlink)(target)
            except OSError:
                pass
            raise
        # A new name lives in upper only (a dir that replaced a whiteout is opaque): no lookup needed.
        ino = self.nodes.new_ino()
        node = DirNode(ino, None, None, 0, 1, self.gen) if kind == stat.S_IFDIR else Node(ino, None, None, 0, self.gen)
        self.nodes.put(node)
        self._link_name(node, parent, name)
        return node, st, fd

    def _give_owner(self, target: bytes | int, st: os.stat_result, ctx: pyfuse3.RequestContext, mode: int,
                    kind: int, pdir: bytes, *, in_parent: bool) -> os.stat_result:
        """As root: give a new entry (stat st) the caller's owner, the dir's group in a set-gid dir, and set-id
        bits as asked; return its stat after. Owner and mode calls that would change nothing are skipped.

        in_parent: made in pdir itself, so it got pdir's set-gid treatment from the kernel. Otherwise (made in
        the work dir, to replace a whiteout) the rule is read from pdir, not from what the entry inherited."""
        gid = ctx.gid
        if not in_parent:
            pst = os.lstat(pdir)
            if pst.st_mode & stat.S_ISGID:
                gid = pst.st_gid
            inherited_sgid = pst.st_mode & stat.S_ISGID if kind == stat.S_IFDIR else 0
        else:
            if st.st_gid != gid:
                # Created with our group or, in a set-gid dir, with the dir's; a new dir says which (it
                # inherits the set-gid bit), a file only when its group is not ours.
                if kind == stat.S_IFDIR:
                    sgid_parent = bool(st.st_mode & stat.S_ISGID)
                else:
                    sgid_parent = st.st_gid != self.egid or bool(os.lstat(pdir).st_mode & stat.S_ISGID)
                if sgid_parent:
                    gid = st.st_gid
            inherited_sgid = st.st_mode & stat.S_ISGID if kind == stat.S_IFDIR else 0
        changed = False
        if st.st_uid != ctx.uid or st.st_gid != gid:
            self._chown(target, ctx.uid, gid)  # clears set-id bits of a non-dir: restored below
            changed = True
        if kind != stat.S_IFLNK and (mode & (stat.S_ISUID | stat.S_ISGID) or kind == stat.S_IFDIR):
            want = stat.S_IMODE(mode) | inherited_sgid
            if changed or want != stat.S_IMODE(st.st_mode):
                os.chmod(target, want)
                changed = True
        if not changed:
            return st
        return os.fstat(target) if isinstance(target, int) else os.lstat(target)

    def _whiteout_over(self, parent: Node, name: bytes) -> None:
        """Hide the lower entry at name: replace whatever upper has there by a whiteout, atomically."""
        pdir = self._upper_dir(parent)
        dst = pdir + b"/" + name
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            os.mknod(dst, stat.S_IFCHR, os.makedev(0, 0))
            return
        tmp = self._tmp()
        os.mknod(tmp, stat.S_IFCHR, os.makedev(0, 0))
        if stat.S_ISDIR(st.st_mode):
            trash = self._tmp()
            os.rename(dst, trash)
            os.rename(tmp, dst)
            import shutil

            shutil.rmtree(trash)
        else:
            os.rename(tmp, dst)

    def _remove(self, parent: Node, name: bytes, want_dir: bool) -> None:
        self._fresh(parent)
        node, st = self._must_entry(parent, name)
        if stat.S_ISDIR(st.st_mode) != want_dir:
            raise FUSEError(errno.EISDIR if not want_dir else errno.ENOTDIR)
        if want_dir and self._list(node):
            raise FUSEError(errno.ENOTEMPTY)
        prel = self._path(parent)
        rel = prel + b"/" + name if prel else name
        if self._lower_has(parent, rel):
            self._whiteout_over(parent, name)
        elif want_dir:
            self._trash(self._real(0, rel))
        else:
            os.unlink(self._real(0, rel))
        self._unlink_name(parent, name)

    # ----- pyfuse3 operations -----------------------------------------------------------------------

    @_guard
    def lookup(self, parent_inode, name, ctx):  # type: ignore[no-untyped-def]
        parent = self._node(parent_inode)
        r = self._entry(parent, name)
        if r is None:
            neg = pyfuse3.EntryAttributes()
            neg.st_ino = 0  # negative entry: the kernel caches the miss for entry_timeout
            neg.entry_timeout = CACHE_TIMEOUT
            return neg
        node, st = r
        node.nlookup += 1
        return self._attr(node, st)

    async def forget(self, inode_list):  # type: ignore[no-untyped-def]
        # Must never raise: it answers no request.
        for ino, n in inode_list:
            node = self.nodes.get(ino)
            if node is not None:
                node.nlookup = max(0, node.nlookup - n)
                try:
                    self._maybe_drop(node)
                except Exception:
                    log.exception("forget %d", ino)

    @_guard
    def getattr(self, inode, ctx):  # type: ignore[no-untyped-def]
        node = self._node(inode)
        return self._attr(node, self._stat(node))

    @_guard
    def setattr(self, inode, attr, fields, fh, ctx):  # type: ignore[no-untyped-def]
        node = self._node(inode)
        if fh is not None and fh in self.files:
            target: bytes | int = fh  # ftruncate(2) & co, also for unlinked files
            st = os.fstat(fh)
            if fields.update_mode or fields.update_uid or fields.update_gid or fields.update_size:
                self._copy_up(node)  # fd-based changes to a read-only lower fd: make it writable first
                st = os.fstat(fh)
        else:
            if fields.update_size and attr.st_size == 0 and not stat.S_ISDIR(self._stat(node).st_mode):
                self._copy_up(node, data=False)  # truncate(2) to 0 of a lower file: copy no data
            target = self._make_writable(node)
            st = os.lstat(target)
        is_link = stat.S_ISLNK(st.st_mode)
        if fields.update_size:
            if isinstance(target, int):
                os.ftruncate(target, attr.st_size)
            else:
                os.truncate(target, attr.st_size)
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            if isinstance(target, int):
                os.fchown(target, uid, gid)
            else:
                os.chown(target, uid, gid, follow_symlinks=False)
        if fields.update_mode and not is_link:
            os.chmod(target, stat.S_IMODE(attr.st_mode))
        if fields.update_atime or fields.update_mtime:
            cur = os.fstat(target) if isinstance(target, int) else os.lstat(target)
            times = (attr.st_atime_ns if fields.update_atime else cur.st_atime_ns,
                     attr.st_mtime_ns if fields.update_mtime else cur.st_mtime_ns)
            if isinstance(target, int):
                os.utime(target, ns=times)
            else:
                os.utime(target, ns=times, follow_symlinks=False)
        return self._attr(node, os.fstat(target) if isinstance(target, int) else os.lstat(target))

    @_guard
    def readlink(self, inode, ctx):  # type: ignore[no-untyped-def]
        node = self._node(inode)
        return os.readlink(self._backing(node))

    def _made(self, parent_inode: int, name: bytes, make: Callable[[bytes], None], ctx: pyfuse3.RequestContext,
              mode: int, kind: int) -> pyfuse3.EntryAttributes:
        """mknod/mkdir/symlink: create through make(path), answer with the new entry (one kernel lookup)."""
        node, st, _ = self._new_entry(self._node(parent_inode), name, make, ctx, mode, kind)
        node.nlookup += 1
        return self._attr(node, st)

    @_guard
    def mknod(self, parent_inode, name, mode, rdev, ctx):  # type: ignore[no-untyped-def]
        return self._made(parent_inode, name, lambda p: os.mknod(p, mode, rdev), ctx, mode, stat.S_IFMT(mode))

    @_guard
    def mkdir(self, parent_inode, name, mode, ctx):  # type: ignore[no-untyped-def]
        return self._made(parent_inode, name, lambda p: os.mkdir(p, stat.S_IMODE(mode)), ctx, mode, stat.S_IFDIR)

    @_guard
    def symlink(self, parent_inode, name, target, ctx):  # type: ignore[no-untyped-def]
        return self._made(parent_inode, name, lambda p: os.symlink(target, p), ctx, 0o777, stat.S_IFLNK)

    @_guard
    def create(self, parent_inode, name, mode, flags, ctx):  # type: ignore[no-untyped-def]
        parent = self._node(parent_inode)
        acc = flags & os.O_ACCMODE
        oflags = acc | (flags & _OPEN_PASS_FLAGS) | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        node, st, fd = self._new_entry(parent, name, lambda p: os.open(p, oflags, stat.S_IMODE(mode)), ctx,
                                       mode, stat.S_IFREG)
        assert fd is not None
        self._opened(node, fd)
        node.nlookup += 1
        return pyfuse3.FileInfo(fh=fd, keep_cache=True), self._attr(node, st)

    @_guard
    def unlink(self, parent_inode, name, ctx):  # type: ignore[no-untyped-def]
        self._remove(self._node(parent_inode), name, want_dir=False)

    @_guard
    def rmdir(self, parent_inode, name, ctx):  # type: ignore[no-untyped-def]
        self._remove(self._node(parent_inode), name, want_dir=True)

    @_guard
    def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):  # type: ignore[no-untyped-def]
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FUSEError(errno.EINVAL)  # not supported (yet); callers fall back
        pold, pnew = self._node(parent_inode_old), self._node(parent_inode_new)
        self._fresh(pold)
        self._fresh(pnew)
        src, sst = self._must_entry(pold, name_old)
        dst_r = self._entry(pnew, name_new)
        src_dir = stat.S_ISDIR(sst.st_mode)
        if dst_r is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise FUSEError(errno.EEXIST)
            dnode, dst_st = dst_r
            if dnode is src:
                return  # both names are the same file: POSIX says do nothing
            if stat.S_ISDIR(dst_st.st_mode):
                if not src_dir:
                    raise FUSEError(errno.EISDIR)
                if self._list(dnode):
                    raise FUSEError(errno.ENOTEMPTY)
            elif src_dir:
                raise FUSEError(errno.ENOTDIR)
        orel = (self._path(pold) + b"/" if self._path(pold) else b"") + name_old
        old_upper = self._upper_dir(pold) + b"/" + name_old
        new_upper = self._upper_dir(pnew) + b"/" + name_new
        nrel = (self._path(pnew) + b"/" if self._path(pnew) else b"") + name_new
        whiteout_old = self._lower_has(pold, orel)
        self._fresh(src)
        moved: bytes
        if not src_dir:
            self._copy_up(src)  # also copies up the other hard-link names we know
            moved = old_upper
        elif src.mask == 1:
            moved = old_upper  # the dir lives only in upper: a plain rename carries it
            if self._lower_has(pnew, nrel):
                self._set_opaque(moved)
        else:
            # Merged (or lower) dir: materialise the merged tree in the work dir, mark it opaque.
            moved = self._tmp()
            self._copy_tree(orel, src.mask, src.layer, moved)
            self._set_opaque(moved)
        # Clear what upper holds at the destination (an empty dir's whiteouts, or a whiteout).
        try:
            dst_upper_st = os.lstat(new_upper)
        except FileNotFoundError:
            dst_upper_st = None
        if dst_upper_st is not None and (src_dir or stat.S_ISDIR(dst_upper_st.st_mode)):
            if stat.S_ISDIR(dst_upper_st.st_mode):
                self._trash(new_upper)
            else:
                os.unlink(new_upper)
        if moved == old_upper:
            if whiteout_old:
                _rename_whiteout(moved, new_upper)
            else:
                os.rename(moved, new_upper)
        else:
            os.rename(moved, new_upper)
            self._whiteout_over(pold, name_old)  # the old merged dir: drop its upper part, hide lower
        # Bookkeeping: the destination name now belongs to src.
        if dst_r is not None:
            self._unlink_name(pnew, name_new)
        src.nlookup += 1  # keep src alive while we move its name
        self._unlink_name(pold, name_old)
        self._link_name(src, pnew, name_new)
        src.nlookup -= 1
        if src_dir:
            self.gen += 1  # cached layer info of everything below the moved dir is stale
        else:
            src.layer = 0

    @_guard
    def link(self, inode, new_parent_inode, new_name, ctx):  # type: ignore[no-untyped-def]
        node = self._node(inode)
        parent = self._node(new_parent_inode)
        self._copy_up(node)
        src = self._real(0, self._path(node))
        name = new_name
        whiteout = self._free_name(parent, name)
        dst = self._upper_dir(parent) + b"/" + name
        if whiteout:
            tmp = self._tmp()
            os.link(src, tmp)
            os.rename(tmp, dst)
        else:
            os.link(src, dst)
        st = os.lstat(dst)
        self._set_ident(node, st)
        self._link_name(node, parent, name)
        node.nlookup += 1
        return self._attr(node, st)

    @_guard
    def open(self, inode, flags, ctx):  # type: ignore[no-untyped-def]
        node = self._node(inode)
        acc = flags & os.O_ACCMODE
        if acc != os.O_RDONLY or flags & os.O_TRUNC:
            self._copy_up(node, data=not flags & os.O_TRUNC)  # O_TRUNC arrives here (atomic_o_trunc)
        oflags = acc | (flags & (_OPEN_PASS_FLAGS | os.O_TRUNC)) | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self._backing(node), oflags)
        except FUSEError:
            other = self._open_fd_of(node)  # reopen of an unlinked file through /proc/PID/fd
            if other is None:
                raise
            fd = os.open(f"/proc/self/fd/{other}", oflags & ~os.O_NOFOLLOW)
        self._opened(node, fd)
        # keep_cache: contents only change through this mount, so the kernel's page cache stays valid.
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    @_guard
    def read(self, fh, off, size):  # type: ignore[no-untyped-def]
        # Into one reused buffer: pyfuse3 copies the reply out before the next request is handled, and a
        # fresh 128 KiB bytes object per read costs an mmap and its page faults.
        buf = self.read_buf
        if len(buf) < size:
            buf = self.read_buf = bytearray(size)
        view = memoryview(buf)[:size]
        return view[:os.preadv(fh, [view], off)]

    @_guard
    def write(self, fh, off, buf):  # type: ignore[no-untyped-def]
        return os.pwrite(fh, buf, off)

    @_guard
    def flush(self, fh):  # type: ignore[no-untyped-def]
        # close(2) has nothing to do here; ENOSYS once makes the kernel stop sending FLUSH (fc->no_flush).
        raise FUSEError(errno.ENOSYS)

    @_guard
    def release(self, fh):  # type: ignore[no-untyped-def]
        ino = self.files.pop(fh, None)
        os.close(fh)
        node = self.nodes.get(ino) if ino is not None else None
        if node is not None:
            left = self.opens.pop(node, 1) - 1
            if left:
                self.opens[node] = left
            self._maybe_drop(node)

    @_guard
    def fsync(self, fh, datasync):  # type: ignore[no-untyped-def]
        (os.fdatasync if datasync else os.fsync)(fh)

    @_guard
    def opendir(self, inode, ctx):  # type: ignore[no-untyped-def]
        self._node(inode)
        dh = self.next_dh
        self.next_dh += 1
        # Listed at the first READDIR: with the kernel's readdir cache, most opens never read.
        self.dirs[dh] = (inode, None)
        return dh

    @_guard
    def readdir(self, fh, start_id, token):  # type: ignore[no-untyped-def]
        ino, listing = self.dirs[fh]
        node = self._node(ino)
        if listing is None:
            listing = self._listing(node)
            self.dirs[fh] = (ino, listing)
        names, found_in = listing
        if start_id == 0:
            if not pyfuse3.readdir_reply(token, b".", self._attr(node, self._stat(node)), 1):
                return
            start_id = 1
        if start_id == 1:
            up = node.parent or self.root
            if not pyfuse3.readdir_reply(token, b"..", self._attr(up, self._stat(up)), 2):
                return
            start_id = 2
        for i in range(start_id - 2, len(names)):
            r = self._entry(node, names[i], found_in[i])
            if r is None:
                continue  # removed since opendir
            child, st = r
            if not pyfuse3.readdir_reply(token, names[i], self._attr(child, st), i + 3):
                self._maybe_drop(child)
                return
            child.nlookup += 1

    @_guard
    def releasedir(self, fh):  # type: ignore[no-untyped-def]
        self.dirs.pop(fh, None)

    @_guard
    def fsyncdir(self, fh, datasync):  # type: ignore[no-untyped-def]
        node = self._node(self.dirs[fh][0])
        self._fresh(node)
        if node.layer == 0:
            fd = os.open(self._real(0, self._path(node)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @_guard
    def statfs(self, ctx):  # type: ignore[no-untyped-def]
        s = os.statvfs(self.upper)
        d = pyfuse3.StatvfsData()
        d.f_bsize, d.f_frsize = s.f_bsize, s.f_frsize
        d.f_blocks, d.f_bfree, d.f_bavail = s.f_blocks, s.f_bfree, s.f_bavail
        d.f_files, d.f_ffree, d.f_favail = s.f_files, s.f_ffree, s.f_favail
        d.f_namemax = s.f_namemax
        return d

    # xattrs: overlay's own markers are invisible and untouchable through the mount.

    @_guard
    def getxattr(self, inode, name, ctx):  # type: ignore[no-untyped-def]
        if _hidden_xattr(name):
            raise FUSEError(pyfuse3.ENOATTR)
        node = self._node(inode)
        return os.getxattr(self._backing(node), name, follow_symlinks=False)

    @_guard
    def listxattr(self, inode, ctx):  # type: ignore[no-untyped-def]
        node = self._node(inode)
        names = os.listxattr(self._backing(node), follow_symlinks=False)
        return [n for n in map(os.fsencode, names) if not _hidden_xattr(n)]

    @_guard
    def setxattr(self, inode, name, value, ctx):  # type: ignore[no-untyped-def]
        if _hidden_xattr(name):
            raise FUSEError(errno.EPERM)
        path = self._make_writable(self._node(inode))
        os.setxattr(path, name, value, follow_symlinks=False)

    @_guard
    def removexattr(self, inode, name, ctx):  # type: ignore[no-untyped-def]
        if _hidden_xattr(name):
            raise FUSEError(pyfuse3.ENOATTR)
        node = self._node(inode)
        os.getxattr(self._backing(node), name, follow_symlinks=False)  # ENODATA first
        os.removexattr(self._make_writable(node), name, follow_symlinks=False)


# ----- process entry ---------------------------------------------------------------------------------


def mount_options(is_root: bool) -> set[str]:
    opts = {"fsname=corert-fuse", "default_permissions"}
    if is_root:
        # Other uids in the container must reach the tree; a rootfs needs set-id binaries and devices.
        opts |= {"allow_other", "suid", "dev"}
    return opts


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def _serve(state: dict) -> None:
    async with trio.open_nursery() as nursery:
        async def on_signal(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
            with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                # Signals were blocked since before the mount; one that came early is delivered now.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                task_status.started()
                async for _ in signals:
                    state["signalled"] = True
                    pyfuse3.terminate()
                    return

        await nursery.start(on_signal)
        await session.main()
        nursery.cancel_scope.cancel()


def serve(upper: str, work: str, lowers_bottom_first: list[str], mountpoint: str,
          ready: Optional[Callable[[str], None]] = None, volatile: bool = False) -> int:
    """Mount and serve until unmounted or signalled. ``ready`` gets "ok PID" or "error MSG" once.
    volatile: copy-ups skip their fsync (StorageDriver.volatile)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # a stop request before trio runs must not kill us
    import resource

    # One backing fd per file the container holds open: allow as many as the hard limit does.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.umask(0)  # modes we create are exactly those the caller asked for (the kernel applied its umask)
    ops = Overlay(upper, work, list(reversed(lowers_bottom_first)), volatile)
    try:
        pyfuse3.init(ops, mountpoint, mount_options(ops.is_root))
    except Exception as e:
        if ready:
            ready(f"error mounting {mountpoint}: {e}")
        return 1
    session.install_fast_wait()
    # Everything so far (modules, the root node) lives as long as we do: keep it out of the collector's
    # full passes, which would otherwise walk it again and again as the node table grows.
    gc.freeze()
    if ready:
        ready(f"ok {os.getpid()}")
    state = {"signalled": False}
    try:
        trio.run(_serve, state)
    finally:
        # Unmounted from outside: the session is gone already; on a signal, unmount ourselves.
        pyfuse3.close(unmount=state["signalled"])
    return 0


if __name__ == "__main__":  # pragma: no cover - use ``python -m corert.drivers.storage.fuse``
    sys.exit("run as: python -m corert.drivers.storage.fuse")
