"""The container state store: one directory per container under the runtime root, like runc's.

Layout: <root>/<id>/state.json (the ContainerRecord, written atomically, mode 0600) and, between
`create` and `start`, <root>/<id>/exec.fifo on which the container init waits.

Locking: `StateStore.lock(id)` is an exclusive flock on the container directory. `create` holds it from
`reserve()` until the record is saved as "created"; `start`, `kill`, `pause`, `resume`, `update` and
`delete` hold it while they act. Readers (`state`, `list`) never lock: saves are atomic renames.

The live status is derived the way runc derives it (the stored status is only a hint): a dead init, or
a pid whose start time differs from the recorded one (pid reuse), is "stopped"; a frozen cgroup is
"paused"; an existing exec.fifo is "created"; otherwise "running".
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

from corert import jsonio
from corert.errors import ContainerExists, ContainerNotFound, CorertError, InvalidState
from corert.fsutil import remove_tree, write_atomic
from corert.spec import OCI_VERSION

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
SHORTCUT_FILE = "shortcut"   # the native CLI front's plan (engine/shortcut.py): every save voids it

# runc's container id rule; "." and ".." are excluded separately (they would escape the root).
# runc's id rule ^[\w+\-.]+$ with Go's ASCII-only \w, checked without `re` (a cold-start cost).
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def _valid_id_chars(name: str) -> bool:
    return bool(name) and all(c in _ID_CHARS for c in name)

STATUSES = ("creating", "created", "running", "paused", "stopped")


def default_root() -> str:
    """The state root when --root is not given, chosen as runc chooses its own.

    root: /run/corert. Unprivileged: $XDG_RUNTIME_DIR/corert, or /tmp/corert-<uid> (made 0700, refused
    when someone else owns it). euid 0 inside a user namespace (rootless podman) with $XDG_RUNTIME_DIR
    set and $USER not "root" also uses $XDG_RUNTIME_DIR, as runc does.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    euid = os.geteuid()
    if euid == 0:
        if xdg and os.environ.get("USER", "") != "root" and _in_user_namespace():
            return os.path.join(xdg, "corert")
        return "/run/corert"
    if xdg:
        return os.path.join(xdg, "corert")
    path = f"/tmp/corert-{euid}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode) or st.st_uid != euid:
        raise CorertError(f"refusing state root {path}: not a directory owned by uid {euid}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _in_user_namespace() -> bool:
    """True unless /proc/self/uid_map is the initial namespace's identity map."""
    try:
        with open("/proc/self/uid_map", "rb") as f:
            return f.read().split() != [b"0", b"0", b"4294967295"]
    except OSError:
        return False


def validate_id(container_id: str) -> None:
    """runc's id rule: [A-Za-z0-9_+-.]+, not "." or ".."."""
    if not _valid_id_chars(container_id) or container_id in (".", ".."):
        raise CorertError(f"invalid container ID format: {container_id!r}")


def rfc3339_nano(ns: int | None = None) -> str:
    """UTC time as Go's time.RFC3339Nano prints it (what runc puts in "created"): trailing zeros trimmed."""
    if ns is None:
        ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from one read of /proc/<pid>/stat; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parens: the fields after it start after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[19])  # field 3 = state, field 22 = starttime


def proc_start_time(pid: int) -> int | None:
    """Field 22 ("starttime") of /proc/<pid>/stat: recorded as ContainerRecord.pid_start."""
    st = proc_stat(pid)
    return None if st is None else st[1]


class ContainerRecord:
    """Everything corert remembers about one container (state.json).

    A plain class rather than a dataclass: importing dataclasses (and inspect) costs ~7 ms on every
    `state`/`kill`/`start`, a measurable share of the CLI's cold start.
    """

    FIELDS = ("id", "bundle", "rootfs", "pid", "pid_start", "created", "owner", "annotations", "status",
              "hooks", "cgroup", "storage", "network", "rootless", "config_digest", "extra")

    def __init__(self, id: str, bundle: str, rootfs: str, pid: int = 0, pid_start: int = 0,  # noqa: A002
                 created: str = "", owner: str = "", annotations: dict | None = None,
                 status: str = "creating", hooks: dict | None = None, cgroup: dict | None = None,
                 storage: dict | None = None, network: dict | None = None, rootless: bool = False,
                 config_digest: str = "", extra: dict | None = None) -> None:
        self.id = id
        self.bundle = bundle                  # absolute
        self.rootfs = rootfs                  # absolute
        self.pid = pid                        # init pid on the host, 0 until created
        self.pid_start = pid_start            # /proc/<pid>/stat starttime: detects pid reuse
        self.created = created                # RFC3339Nano, UTC
        self.owner = owner                    # runc's `state` prints ""; `list` shows the dir owner's name
        self.annotations = {} if annotations is None else annotations
        self.status = status                  # stored hint: creating | created | running | stopped
        self.hooks = {} if hooks is None else hooks    # the config's hooks object (poststart/poststop)
        self.cgroup = cgroup                  # the cgroup handle's state()
        self.storage = storage
        self.network = network
        self.rootless = rootless
        self.config_digest = config_digest
        self.extra = {} if extra is None else extra   # front door: image id, name, log path...

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> "ContainerRecord":
        return cls(**{k: v for k, v in data.items() if k in cls.FIELDS})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContainerRecord):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ContainerRecord(id={self.id!r}, pid={self.pid}, status={self.status!r}, bundle={self.bundle!r})"


class _DirLock:
    """Exclusive flock on a container directory; a context manager (no contextlib on the hot path)."""

    def __init__(self, store: "StateStore", container_id: str, fd: int) -> None:
        self._store = store
        self._id = container_id
        self._fd = fd

    def __enter__(self) -> "_DirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            self._store._held.discard(self._id)
            # Unlock explicitly: a child cloned while we held the lock shares the open file description,
            # and a plain close would leave the flock held until that child execs or exits.
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = -1


class StateStore:
    """The per-root container state directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)  # a str: pathlib is a cold-start cost the hot path avoids
        self._held: set[str] = set()   # ids this process holds locked (a same-process flock probe lies)

    def container_dir(self, container_id: str) -> str:
        validate_id(container_id)
        return os.path.join(self.root, container_id)

    def exec_fifo_path(self, container_id: str) -> str:
        return os.path.join(self.container_dir(container_id), EXEC_FIFO)

    def seccomp_cache_dir(self) -> str:
        """Compiled seccomp filters, by profile hash (`@`: never a container id)."""
        return os.path.join(self.root, "@seccomp-cache")

    def reserve(self, container_id: str) -> ContainerRecord:
        """Claim an id: mkdir (atomic, 0700) and write a "creating" record. ContainerExists if taken."""
        path = self.container_dir(container_id)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise ContainerExists(container_id) from None
        record = ContainerRecord(id=container_id, bundle="", rootfs="", created=rfc3339_nano())
        try:
            self.save(record)
        except BaseException:
            self.remove(container_id)
            raise
        return record

    def load(self, container_id: str) -> ContainerRecord:
        path = os.path.join(self.container_dir(container_id), STATE_FILE)
        try:
            with open(path, "rb") as f:
                data = jsonio.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFound(container_id) from None
        except (ValueError, OSError) as e:
            raise CorertError(f"container {container_id!r}: unreadable state ({e}); "
                              f"`delete --force` removes it") from None
        if not isinstance(data, dict) or data.get("id") != container_id:
            raise CorertError(f"container {container_id!r}: state file does not describe this container")
        return ContainerRecord.from_dict(data)

    def save(self, record: ContainerRecord) -> None:
        """Atomic replace of state.json: temp file in the same dir, then rename.

        No fsync (runc does none either): the rename already means a reader or a crashed writer never
        sees half a record, and state describes processes that a power loss ends anyway. Three saves
        per `run` would otherwise cost ~3.5 ms of fsync where the root is on disk, as it is here."""
        directory = self.container_dir(record.id)
        write_atomic(os.path.join(directory, STATE_FILE), jsonio.dumps(record.to_dict()).encode())
        try:
            os.unlink(os.path.join(directory, SHORTCUT_FILE))
        except FileNotFoundError:
            pass

    def remove(self, container_id: str) -> None:
        """Remove the container's directory and everything in it (idempotent)."""
        # The state dir holds no mounts; the front door's log and data files live in it too.
        remove_tree(self.container_dir(container_id), check_mounts=False)

    def list(self) -> list[ContainerRecord]:
        """All readable records, sorted by id; broken or half-made directories are skipped."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        records = []
        for name in names:
            if not _valid_id_chars(name) or name in (".", ".."):
                continue
            try:
                records.append(self.load(name))
            except CorertError:
                continue
        return records

    def lock(self, container_id: str, *, blocking: bool = True, timeout: float | None = None) -> _DirLock:
        """Exclusive flock on the container dir: `with store.lock(id): ...`. ContainerNotFound if absent.

        blocking=False fails at once if another process holds it; `timeout` bounds the wait (seconds).
        """
        path = self.container_dir(container_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFound(container_id) from None
        try:
            if blocking and timeout is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + ((timeout or 0.0) if blocking else 0.0)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise CorertError(f"container {container_id!r} is locked by another corert "
                                              f"process") from None
                        time.sleep(0.01)
        except BaseException:
            os.close(fd)
            raise
        self._held.add(container_id)
        return _DirLock(self, container_id, fd)

    def is_locked_elsewhere(self, container_id: str) -> bool:
        """True if another process holds the container's lock (e.g. a `create` still in progress)."""
        if container_id in self._held:
            return False
        try:
            fd = os.open(self.container_dir(container_id), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        finally:
            os.close(fd)
        return False


def process_alive(pid: int, start: int | None) -> bool:
    """pid still names the process that started at `start` (proc_start_time), and it is not a zombie."""
    if pid <= 0:
        return False
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X", "x") and st[1] == start


def open_pidfd(record: ContainerRecord) -> int:
    """A pidfd for the container init, checked against the recorded start time (pid reuse).

    InvalidState when the init is gone; the caller owns (closes) the fd."""
    try:
        pidfd = os.pidfd_open(record.pid)
    except (ProcessLookupError, ValueError):
        raise InvalidState("container not running") from None
    # The pidfd pins the process: if the start time matches now, the pidfd refers to our init.
    if record.pid <= 0 or proc_start_time(record.pid) != record.pid_start:
        os.close(pidfd)
        raise InvalidState("container not running")
    return pidfd


def wait_exit(pidfd: int, timeout: float | None = None) -> bool:
    """Block until the process of `pidfd` exits (at most `timeout` seconds): whether it exited.

    A pidfd turns readable at the exit, also for a process that is not our child (no waitpid)."""
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


def init_alive(record: ContainerRecord) -> bool:
    """The recorded init process still exists, is not a zombie, and is the same process (start time)."""
    return process_alive(record.pid, record.pid_start)


def live_status(store: StateStore, record: ContainerRecord) -> str:
    """The container's status now: creating | created | running | paused | stopped (runc's rules)."""
    if record.status == "creating" and store.is_locked_elsewhere(record.id):
        return "creating"
    if record.status == "stopped" or not init_alive(record):
        return "stopped"
    if record.cgroup:
        from corert.drivers.cgroups import load_handle

        try:
            if load_handle(record.cgroup).is_frozen():
                return "paused"
        except OSError:
            pass  # cgroup gone: the container cannot be frozen
    if os.path.lexists(os.path.join(store.root, record.id, EXEC_FIFO)):
        return "created"
    return "running"


def oci_state(store: StateStore, record: ContainerRecord, status: str | None = None) -> dict:
    """The OCI state object, keys in the order runc prints them; pid is 0 once stopped, as in runc."""
    if status is None:
        status = live_status(store, record)
    state: dict = {
        "ociVersion": OCI_VERSION,
        "id": record.id,
        "pid": 0 if status == "stopped" else record.pid,
        "status": status,
        "bundle": record.bundle,
        "rootfs": record.rootfs,
        "created": record.created,
    }
    if record.annotations:  # runc: `annotations,omitempty`
        state["annotations"] = record.annotations
    state["owner"] = record.owner
    return state
