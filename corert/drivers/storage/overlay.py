"""Kernel overlayfs: the image layers as lowerdirs, a per-container upper and work dir, mounted on merged/.

Long layer stacks: mount(2) takes at most one page of options, which ~40 long layer paths exceed. On
kernels >= 6.8 the new mount API appends layers one at a time (fsconfig "lowerdir+", no page limit). On
older kernels (or when asked) the classic call is used, and when its options would not fit, short
symlinks l/<n> to each layer are made in the container dir and the options name them relative to it
while the process is chdir'd there (the kernel resolves them at mount time; the links go right after).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from corert.drivers.storage.base import (
    StorageDriver,
    UpperDirRootfs,
    check_layers,
    check_no_overlap,
    is_mounted,
    libc,
    mount,
    remove_created,
    remove_tree,
    rmdir_if_empty,
    unmount,
)
from corert.errors import ResourceError

# Syscall numbers of the new mount API: one table for every architecture since 5.2 (the 424+ block).
SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 429, 430, 431, 432
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
FSMOUNT_CLOEXEC = 1
MOVE_MOUNT_F_EMPTY_PATH = 4
AT_FDCWD = -100

MOUNT_APIS = ("auto", "fsconfig", "legacy")
_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_chdir_lock = None  # created on first use: the link fallback changes the process-wide cwd


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel, from a release such as "6.18.44-fc"."""
    nums = []
    for piece in os.uname().release.split(".")[:2]:
        digits = ""
        for c in piece:
            if not c.isdigit():
                break
            digits += c
        nums.append(int(digits or 0))
    nums += [0, 0]
    return nums[0], nums[1]


def _short_name(i: int) -> str:
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = _DIGITS36[r] + out
        if i == 0:
            return out


class _FsconfigUnsupported(Exception):
    """The kernel lacks fsopen or "lowerdir+": use the classic mount(2)."""


class OverlayDriver(StorageDriver):
    name = "overlay"

    def __init__(self, *, rootless: bool = False, mount_api: str = "auto") -> None:
        if mount_api not in MOUNT_APIS:
            raise ValueError(f"mount_api must be one of {MOUNT_APIS}")
        self.rootless = rootless
        self.mount_api = mount_api

    def options(self) -> list[str]:
        """Mount options besides the dirs. index/redirect/metacopy off keep the upper dir a plain,
        portable diff that changes() can read and that never ties the shared lower layers to one mount.
        userxattr (rootless) stores overlay metadata in user.* and forbids redirect/metacopy itself."""
        opts = ["index=off", "userxattr"] if self.rootless else ["index=off", "redirect_dir=off", "metacopy=off"]
        # volatile exists since Linux 5.10; before, a --rm container just gets the fsync it would not need
        return opts + ["volatile"] if self.volatile and kernel_version() >= (5, 10) else opts

    def in_child(self) -> bool:
        """An unprivileged user cannot mount overlayfs here, but may inside the container's own user and
        mount namespaces (kernel >= 5.11 with userxattr): the fast path mounts it there instead."""
        return self.rootless and os.geteuid() != 0

    def prepare(self, container_id: str, layers: list[Path], container_dir: Path) -> OverlayRootfs:
        layers = check_layers(layers)
        if self.in_child():
            data = self._child_mount_data([str(p) for p in reversed(layers)], Path(os.path.abspath(container_dir)))
            if len(data) >= 4096:
                raise ResourceError(f"storage: {len(layers)} layers are too many for a rootless overlay mount "
                                    "(one page of mount options); use --storage=fuse")
        container_dir = Path(os.path.abspath(container_dir))
        check_no_overlap(layers, container_dir)
        created: list[Path] = []
        created_container_dir = False
        try:
            if not container_dir.exists():
                os.makedirs(container_dir, 0o711)
                created_container_dir = True
            container_dir = Path(os.path.realpath(container_dir))  # mountinfo shows resolved paths
            upper, work, merged = container_dir / "upper", container_dir / "work", container_dir / "merged"
            for d, mode in ((upper, 0o755), (work, 0o700), (merged, 0o755)):
                try:
                    os.mkdir(d, mode)
                except FileExistsError:
                    raise ResourceError(
                        f"storage: {d} already exists (container {container_id!r} prepared twice?)") from None
                created.append(d)
            # The merged root takes its attributes from the upper dir: give it those of the image's root.
            top = os.stat(layers[-1])
            try:
                os.chown(upper, top.st_uid, top.st_gid)
            except OSError as e:
                if not (self.rootless and e.errno in (errno.EPERM, errno.EINVAL)):
                    raise  # rootless: the image root's owner may be unmapped; ours will do
            os.chmod(upper, stat.S_IMODE(top.st_mode))
            if not self.in_child():
                self._mount(layers, container_dir)
        except BaseException as e:
            if created and is_mounted(created[-1]):
                unmount(created[-1])
            remove_created(created)
            if created_container_dir:
                rmdir_if_empty(container_dir)
            if isinstance(e, OSError):
                raise ResourceError(f"storage: overlay for {container_id!r}: {e}") from None
            raise
        rootfs = OverlayRootfs(container_id, container_dir, layers, self.rootless, created_container_dir)
        if self.in_child():
            rootfs.child_mount = ("overlay", self._child_mount_data([str(p) for p in reversed(layers)], container_dir))
        return rootfs

    def _child_mount_data(self, top_first: list[str], container_dir: Path) -> str:
        return ",".join([f"lowerdir={':'.join(top_first)}", f"upperdir={container_dir / 'upper'}",
                         f"workdir={container_dir / 'work'}", *self.options()])

    def load(self, state: dict) -> OverlayRootfs:
        self.check_state(state)
        return OverlayRootfs(state["container_id"], Path(state["container_dir"]), [Path(p) for p in state["layers"]],
                             bool(state.get("rootless")), bool(state.get("created_container_dir")))

    # -- mounting --------------------------------------------------------------------------------------

    def _mount(self, layers: list[Path], container_dir: Path) -> None:
        top_first = [str(p) for p in reversed(layers)]
        if self.mount_api != "legacy" and (self.mount_api == "fsconfig" or kernel_version() >= (6, 8)):
            try:
                self._mount_fsconfig(top_first, container_dir)
                return
            except _FsconfigUnsupported:
                if self.mount_api == "fsconfig":
                    raise ResourceError("storage: this kernel has no fsconfig lowerdir+ (needs Linux >= 6.8)") from None
        self._mount_legacy(top_first, container_dir)

    def _mount_fsconfig(self, top_first: list[str], container_dir: Path) -> None:
        import ctypes

        lc = libc()
        lc.syscall.restype = ctypes.c_long

        def call(nr: int, *args: object) -> int:
            rc = lc.syscall(ctypes.c_long(nr), *args)
            if rc < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            return rc

        def config(key: str, value: str | None) -> None:
            cmd = FSCONFIG_SET_FLAG if value is None else FSCONFIG_SET_STRING
            call(SYS_FSCONFIG, ctypes.c_long(fsfd), ctypes.c_long(cmd), ctypes.c_char_p(key.encode()),
                 ctypes.c_char_p(None if value is None else value.encode()), ctypes.c_long(0))

        try:
            fsfd = call(SYS_FSOPEN, ctypes.c_char_p(b"overlay"), ctypes.c_long(FSOPEN_CLOEXEC))
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter that hides the new API
                raise _FsconfigUnsupported() from None
            raise ResourceError(f"storage: fsopen(overlay): {e.strerror}") from None
        try:
            try:
                config("source", "overlay")
                for i, layer in enumerate(top_first):
                    try:
                        config("lowerdir+", layer)
                    except OSError as e:
                        log = _fs_log(fsfd)
                        if i == 0 and e.errno == errno.EINVAL and not log:
                            raise _FsconfigUnsupported() from None  # pre-6.8: the key itself is unknown
                        raise ResourceError(f"storage: overlay lower layer {layer}: {log or e.strerror}") from None
                config("upperdir", str(container_dir / "upper"))
                config("workdir", str(container_dir / "work"))
                for opt in self.options():
                    key, _, value = opt.partition("=")
                    config(key, value if _ else None)
                call(SYS_FSCONFIG, ctypes.c_long(fsfd), ctypes.c_long(FSCONFIG_CMD_CREATE),
                     ctypes.c_char_p(None), ctypes.c_char_p(None), ctypes.c_long(0))
                mfd = call(SYS_FSMOUNT, ctypes.c_long(fsfd), ctypes.c_long(FSMOUNT_CLOEXEC), ctypes.c_long(0))
            except OSError as e:
                log = _fs_log(fsfd)
                raise ResourceError(f"storage: overlay mount on {container_dir / 'merged'} failed: "
                                    f"{log or e.strerror + ' (dmesg says why)'}") from None
            try:
                call(SYS_MOVE_MOUNT, ctypes.c_long(mfd), ctypes.c_char_p(b""), ctypes.c_long(AT_FDCWD),
                     ctypes.c_char_p(str(container_dir / "merged").encode()), ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH))
            except OSError as e:
                raise ResourceError(
                    f"storage: cannot attach overlay on {container_dir / 'merged'}: {e.strerror}") from None
            finally:
                os.close(mfd)
        finally:
            os.close(fsfd)

    def _mount_legacy(self, top_first: list[str], container_dir: Path) -> None:
        opts = ",".join(self.options())
        upper, work, merged = (str(container_dir / n) for n in ("upper", "work", "merged"))
        data = f"lowerdir={':'.join(top_first)},upperdir={upper},workdir={work},{opts}"
        page = os.sysconf("SC_PAGESIZE")
        special = any(c in p for p in (*top_first, str(container_dir)) for c in ",:\\")
        if len(data.encode()) < page and not special:
            try:
                mount("overlay", merged, "overlay", 0, data)
            except OSError as e:
                raise ResourceError(
                    f"storage: overlay mount on {merged} failed: {e.strerror} (dmesg says why)") from None
            return
        # Too long (or needs escaping): short relative names, resolved by the kernel from our cwd.
        links = container_dir / "l"
        os.mkdir(links, 0o700)
        try:
            names = []
            for i, layer in enumerate(top_first):
                name = _short_name(i)
                os.symlink(layer, links / name)
                names.append(f"l/{name}")
            data = f"lowerdir={':'.join(names)},upperdir=upper,workdir=work,{opts}"
            if len(data.encode()) >= page:
                raise ResourceError(f"storage: {len(top_first)} layers are too many for one overlay mount")
            self._mount_in(container_dir, data)
        finally:
            remove_tree(links)

    @staticmethod
    def _mount_in(directory: Path, data: str) -> None:
        global _chdir_lock
        if _chdir_lock is None:
            import threading

            _chdir_lock = threading.Lock()
        with _chdir_lock:
            cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.chdir(directory)
                try:
                    mount("overlay", "merged", "overlay", 0, data)
                except OSError as e:
                    raise ResourceError(f"storage: overlay mount on {directory / 'merged'} failed: "
                                        f"{e.strerror} (dmesg says why)") from None
            finally:
                os.fchdir(cwd)
                os.close(cwd)


def _fs_log(fsfd: int) -> str:
    """The messages the kernel queued on an fs context ("e overlayfs: ..."), joined on one line."""
    lines = []
    while True:
        try:
            msg = os.read(fsfd, 1024)
        except OSError:
            break  # ENODATA: drained
        if not msg:
            break
        text = msg.decode(errors="replace").strip()
        lines.append(text[2:] if text[:2] in ("e ", "w ", "i ") else text)
    return "; ".join(lines)


class OverlayRootfs(UpperDirRootfs):
    driver = "overlay"

    def __init__(self, container_id: str, container_dir: Path, layers: list[Path], rootless: bool,
                 created_container_dir: bool) -> None:
        super().__init__(container_id, container_dir, layers, created_container_dir)
        self.rootless = rootless

    def state(self) -> dict:
        return {**super().state(), "rootless": self.rootless}

    def teardown(self) -> None:
        # copy-ups keep owners: rootless, the upper dir may hold files of subordinate ids the user cannot remove
        from corert.rootless import remove_tree as rootless_remove_tree

        unmount(self.rootfs)
        for d in (self.rootfs, self.work, self.upper, self.container_dir / "l"):
            rootless_remove_tree(d)
        if self.created_container_dir:
            rmdir_if_empty(self.container_dir)
