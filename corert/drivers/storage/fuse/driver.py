"""FUSE overlay storage driver: start/stop the per-container daemon process and wait for its mount.

Only light stdlib at import time (this module sits on the CLI path of ``corert create``/``delete``); the
daemon itself (pyfuse3, trio) runs in its own process, ``python -m corert.drivers.storage.fuse``.
The upper dir it writes is in kernel overlayfs form, so changes()/usage() read it the way the kernel
overlay driver reads its own.

Root: the daemon mounts on merged/ on the host (libfuse calls mount(2) itself).
Rootless: nothing from root but an accessible /dev/fuse. The daemon runs inside a user namespace with the
containers' id map (root there: it may read and chown every file of the image's owners, and the ids it
reports are the container's), and waits on a unix socket. The container's init opens /dev/fuse inside its
own user namespace, mounts it on merged/ in its own mount namespace, and hands the fd to the daemon (the
fast path's "corert_fuse_handoff" rootfs mount). No fusermount3: the host never sees the mount, which goes
away with the container's mount namespace; the daemon then finds its device closed and exits.
"""
from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

from corert import mountinfo
from corert.drivers.storage.base import (
    StorageDriver,
    UpperDirRootfs,
    check_layers,
    check_no_overlap,
    remove_created,
    rmdir_if_empty,
    unmount,
)
from corert.engine.state import proc_start_time, process_alive
from corert.errors import ResourceError

HANDOFF_SOCKET = "fuse.sock"   # in the storage dir: where the daemon waits for the container's /dev/fuse fd
MOUNT_TIMEOUT = 20.0   # seconds for the daemon to start and mount (a cold interpreter on a busy host)
STOP_TIMEOUT = 2.0     # seconds between SIGTERM and SIGKILL, and after SIGKILL
FSNAME = "corert-fuse"


# ----- host helpers ----------------------------------------------------------------------------------

def fuse_mount_at(path: str | Path) -> str | None:
    """The fs type ("fuse") of a corert FUSE mount at path, or None if there is none."""
    path = str(path)
    try:
        mounts = mountinfo.read()
    except OSError:
        return None
    for m in mounts:
        if m.fstype.startswith("fuse") and m.source == FSNAME and m.mount_point == path:
            return m.fstype
    return None


def _unmount_fuse(path: Path) -> None:
    """Unmount the FUSE mount: umount2 as root (lazy if busy), fusermount3 (setuid helper) otherwise."""
    if os.geteuid() == 0:
        unmount(path)
        return
    import subprocess

    for opt in ("-u", "-uz"):
        r = subprocess.run(["fusermount3", opt, str(path)], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True)
        if r.returncode == 0 or fuse_mount_at(path) is None:
            return
    raise ResourceError(f"storage: cannot unmount {path}: {r.stderr.strip() or 'fusermount3 failed'}")


def _stop(pid: int, start_time: int) -> None:
    """SIGTERM the daemon, SIGKILL it if it lingers. Never signals a recycled pid (start time check)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not process_alive(pid, start_time):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if not process_alive(pid, start_time):
                return
            time.sleep(0.01)
    if process_alive(pid, start_time):
        raise ResourceError(f"storage: FUSE daemon {pid} does not exit")


def handoff_mount_data(socket_path: Path) -> str:
    """The fast path's rootfs mount data for a rootless FUSE rootfs: the daemon's socket, then the kernel's
    fuse options (ids are the container's: its root owns the mount; allow_other lets its other users in)."""
    path = str(socket_path)
    if "," in path:
        raise ResourceError(f"storage: {path} contains ',': it cannot be passed in FUSE mount options")
    return (f"corert_fuse_handoff={path},rootmode=40000,user_id=0,group_id=0,"
            "allow_other,default_permissions")


def _spawn_in_userns(argv: list[str], env: dict, log_fd: int) -> bytes:
    """Start the daemon (argv has --daemonize) as root of a new user namespace with the containers' id map;
    return what it wrote on its ready fd (stdout) until EOF or MOUNT_TIMEOUT."""
    import select

    from corert.rootless import fork_into_userns, id_mappings

    uid_maps, gid_maps, _ = id_mappings()
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pid = fork_into_userns((uid_maps, gid_maps))
    except BaseException:
        for fd in (r, w, null):
            os.close(fd)
        raise
    if pid == 0:
        try:
            os.setsid()
            signal.pthread_sigmask(signal.SIG_SETMASK, set())   # as subprocess does: a caller's mask is not ours
            os.dup2(null, 0)
            os.dup2(w, 1)
            os.dup2(log_fd, 2)
            os.closerange(3, 1 << 20)   # nothing of the caller's (locks, sockets) may live on in the daemon
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(w)
    os.close(null)
    out = b""
    deadline = time.monotonic() + MOUNT_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                out += b"\nerror the FUSE daemon did not start within %d s" % MOUNT_TIMEOUT
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            out += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)   # the daemon's parent half: it exits right after forking the daemon
    return out


# ----- the prepared rootfs ---------------------------------------------------------------------------

class FuseRootfs(UpperDirRootfs):
    """A container's rootfs served by a FUSE overlay daemon; ``state()`` is enough to tear it down later."""

    driver = "fuse"

    def __init__(self, container_id: str, container_dir: Path, layers: list[Path], pid: int, start_time: int,
                 created_container_dir: bool, in_userns: bool = False) -> None:
        super().__init__(container_id, container_dir, layers, created_container_dir)
        self.log = container_dir / "fuse.log"
        self.socket = container_dir / HANDOFF_SOCKET
        self.pid = pid
        self.start_time = start_time
        # rootless: the container mounts it in its own namespaces (the daemon waits on self.socket)
        self.in_userns = in_userns
        if in_userns:
            self.child_mount = ("fuse", handoff_mount_data(self.socket))

    def state(self) -> dict:
        return {**super().state(), "pid": self.pid, "pid_start_time": self.start_time, "in_userns": self.in_userns}

    def daemon_alive(self) -> bool:
        return process_alive(self.pid, self.start_time)

    def teardown(self) -> None:
        """Unmount, stop the daemon, remove what prepare made. Safe to call again, and after a crash."""
        errors: list[str] = []
        try:
            if fuse_mount_at(self.rootfs) is not None:
                _unmount_fuse(self.rootfs)
        except ResourceError as e:
            errors.append(str(e))
        try:
            _stop(self.pid, self.start_time)
        except ResourceError as e:
            errors.append(str(e))
        if not errors:
            # copy-ups keep owners: rootless, files of subordinate ids the user alone cannot remove
            from corert.rootless import remove_tree as rootless_remove_tree

            for path in (self.rootfs, self.work, self.upper, self.log, self.socket):
                try:
                    rootless_remove_tree(path)
                except (OSError, ResourceError) as e:
                    errors.append(str(e))
            if self.created_container_dir:
                try:
                    rmdir_if_empty(self.container_dir)
                except OSError as e:
                    errors.append(str(e))
        if errors:
            raise ResourceError(f"storage: FUSE rootfs of {self.container_id!r}: " + "; ".join(errors))


# ----- the driver --------------------------------------------------------------------------------------

class FuseOverlayDriver(StorageDriver):
    """Overlay of image layers served by a per-container pyfuse3 daemon; works without root (fusermount3)."""

    name = "fuse"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable  # the daemon's interpreter (must have pyfuse3 and trio)

    def in_userns(self) -> bool:
        """Rootless: the container mounts the FUSE rootfs in its own user namespace (see the module doc)."""
        return self.rootless and os.geteuid() != 0

    def daemon_argv(self, layers: list[Path], container_dir: Path, handoff: bool = False) -> list[str]:
        # -P: the cwd (the user's) is not put on sys.path, so a `corert` directory there is never what runs
        argv = [self.python, "-P", "-m", "corert.drivers.storage.fuse", "--daemonize", "--ready-fd", "1",
                "--log", str(container_dir / "fuse.log"), "--upper", str(container_dir / "upper"),
                "--work", str(container_dir / "work")]
        for layer in layers:
            argv += ["--lower", str(layer)]
        if handoff:
            argv += ["--handoff", str(container_dir / HANDOFF_SOCKET)]
        if self.volatile:
            argv.append("--volatile")
        return argv + [str(container_dir / "merged")]

    def prepare(self, container_id: str, layers: list[Path], container_dir: Path) -> FuseRootfs:
        """Make upper/work/merged under container_dir, start the daemon, return once merged is mounted."""
        import subprocess

        if not os.path.exists("/dev/fuse"):
            raise ResourceError("storage: the fuse driver needs /dev/fuse (modprobe fuse)")
        layers = check_layers(layers)
        container_dir = Path(os.path.abspath(container_dir))
        check_no_overlap(layers, container_dir)
        created_container_dir = not container_dir.exists()
        handoff = self.in_userns()
        rootfs = FuseRootfs(container_id, container_dir, layers, 0, 0, created_container_dir)
        made: list[Path] = []
        try:
            if created_container_dir:
                os.makedirs(container_dir, 0o711)
            container_dir = Path(os.path.realpath(container_dir))  # mountinfo shows resolved paths
            rootfs = FuseRootfs(container_id, container_dir, layers, 0, 0, created_container_dir, handoff)
            for d, mode in (("upper", 0o755), ("work", 0o700), ("merged", 0o755)):
                try:
                    os.mkdir(container_dir / d, mode)
                except FileExistsError:
                    raise ResourceError(f"storage: {container_dir / d} already exists "
                                        f"(container {container_id!r} prepared twice?)") from None
                made.append(container_dir / d)
            # The merged root shows the upper dir's attributes: give it those of the image's root.
            top = os.stat(layers[-1])
            try:
                os.chown(rootfs.upper, top.st_uid, top.st_gid)
            except PermissionError:
                pass  # rootless: our own uid will do
            os.chmod(rootfs.upper, stat.S_IMODE(top.st_mode))
            env = dict(os.environ)
            pkg_root = str(Path(__file__).resolve().parents[4])  # so `-m corert...` finds this very tree
            env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            argv = self.daemon_argv(layers, container_dir, handoff)
            with open(rootfs.log, "ab") as logf:
                made.append(rootfs.log)
                if handoff:
                    made.append(rootfs.socket)
                    out = _spawn_in_userns(argv, env, logf.fileno())
                else:
                    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                                            start_new_session=True, env=env)
            if not handoff:
                try:
                    # The daemon's parent exits at once; the pipe reaches EOF once the daemon mounted (or failed).
                    out, _ = proc.communicate(timeout=MOUNT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                    out += b"\nerror the FUSE daemon did not mount within %d s" % MOUNT_TIMEOUT
            message, mounted = "", False
            for line in out.decode(errors="replace").splitlines():
                word, _, rest = line.partition(" ")
                if word in ("pid", "ok") and rest.strip().isdigit():
                    rootfs.pid = int(rest)
                    rootfs.start_time = proc_start_time(rootfs.pid) or 0
                    mounted = mounted or word == "ok"
                elif word == "error":
                    message = rest
            if message or not mounted:
                raise ResourceError(f"storage: FUSE overlay for {container_id!r}: "
                                    + (message or self._log_tail(rootfs.log) or "the daemon exited"))
            if not handoff and fuse_mount_at(rootfs.rootfs) is None:
                raise ResourceError(f"storage: FUSE overlay for {container_id!r}: {rootfs.rootfs} is not mounted")
            return rootfs
        except BaseException as e:
            self._undo(rootfs, made)
            if isinstance(e, OSError):
                raise ResourceError(f"storage: FUSE overlay for {container_id!r}: {e}") from None
            raise

    @staticmethod
    def _log_tail(log: Path) -> str:
        try:
            lines = log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    @staticmethod
    def _undo(rootfs: FuseRootfs, made: list[Path]) -> None:
        """Best effort reversal of a failed prepare (the original error is what the caller needs)."""
        try:
            if fuse_mount_at(rootfs.rootfs) is not None:
                _unmount_fuse(rootfs.rootfs)
            if rootfs.pid:
                _stop(rootfs.pid, rootfs.start_time)
            remove_created(made)
            if rootfs.created_container_dir:
                rmdir_if_empty(rootfs.container_dir)
        except (OSError, ResourceError):
            pass

    def load(self, state: dict) -> FuseRootfs:
        """Rebuild the handle from ``FuseRootfs.state()`` (e.g. in ``corert delete``)."""
        self.check_state(state)
        return FuseRootfs(state["container_id"], Path(state["container_dir"]), [Path(p) for p in state["layers"]],
                          int(state["pid"]), int(state["pid_start_time"]),
                          bool(state.get("created_container_dir")), bool(state.get("in_userns")))
