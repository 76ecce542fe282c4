"""Small cgroupfs I/O helpers shared by the v1 and v2 drivers (plain syscalls, ResourceError on failure)."""
from __future__ import annotations

import errno
import os
import time

from corert.errors import ResourceError

from .convert import parse_cgroup_mounts, parse_proc_cgroup

SIGKILL = 9   # the signal module costs an enum import on the CLI hot path; SIGKILL is 9 everywhere
CLK_TCK = os.sysconf("SC_CLK_TCK")   # USER_HZ: the unit of cpuacct.stat and of /proc's tick counts


def cgroup_mounts() -> list[tuple[str, str, str, frozenset[str]]]:
    with open("/proc/self/mountinfo") as f:
        return parse_cgroup_mounts(f.read())


def current_cgroups() -> dict[str, str]:
    with open("/proc/self/cgroup") as f:
        return parse_proc_cgroup(f.read())


def host_view(view: tuple | None = None) -> tuple[list[tuple[str, str, str, frozenset[str]]], dict[str, str]]:
    """What a driver reads of the host: (cgroup_mounts(), current_cgroups()); `view` when the caller has read
    it already (detect() does, to choose the driver, and hands it on: one parse of each per `create`)."""
    return view if view is not None else (cgroup_mounts(), current_cgroups())


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def read_int(path: str, default: int = 0) -> int:
    """An integer file; "max" reads as -1; a missing file gives default."""
    try:
        text = read(path)
    except OSError:
        return default
    if text == "max":
        return -1
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return default


def holds_line(path: str, line: str) -> bool:
    """Whether the file has `line` as one of its lines; False when it cannot be read (a cgroup gone)."""
    try:
        return line in read(path).splitlines()
    except OSError:
        return False


def read_kv(path: str) -> dict[str, int]:
    """A flat "key value" file (memory.stat, cpu.stat, memory.events); missing file -> {}."""
    result: dict[str, int] = {}
    try:
        text = read(path)
    except OSError:
        return result
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                result[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return result


def write(path: str, value: str, what: str) -> None:
    """Write one value to a cgroup file; `what` names the OCI field for the error message."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ResourceError(f"{what}: cannot open {path}: {e.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise ResourceError(f"{what}: cannot write {value!r} to {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def make_dirs(path: str) -> list[str]:
    """mkdir -p; returns the directories that this call created, top first (for undo)."""
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    created: list[str] = []
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
            created.append(d)
        except FileExistsError:
            pass
        except OSError as e:
            remove_dirs(created)
            raise ResourceError(f"cgroup: cannot create {d}: {e.strerror}") from None
    return created


def remove_dirs(created: list[str]) -> None:
    """Undo make_dirs (deepest first); best effort, since we are already unwinding."""
    for d in reversed(created):
        try:
            rmdir_tree(d)
        except ResourceError:
            pass


def rmdir_tree(top: str, timeout: float = 2.0) -> None:
    """rmdir a cgroup and its child cgroups, deepest first; EBUSY (still draining) is retried briefly."""
    if not os.path.isdir(top):
        return
    dirs = [root for root, _, _ in os.walk(top)]
    deadline = time.monotonic() + timeout
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.EAGAIN) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise ResourceError(f"cgroup: cannot remove {d}: {e.strerror}") from None


def procs(top: str) -> set[int]:
    """Pids in cgroup.procs of top and every descendant cgroup."""
    found: set[int] = set()
    for root, _, _ in os.walk(top):
        try:
            text = read(os.path.join(root, "cgroup.procs"))
        except OSError:
            continue   # removed while walking
        found.update(int(x) for x in text.split())
    return found


def signal_all(pids: set[int] | list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_for(predicate, timeout: float, interval: float = 0.005) -> bool:
    """Poll predicate() with a growing interval until it is true or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 2, 0.1)


def kill_until_empty(handle, timeout: float = 10.0) -> None:
    """destroy()'s first half: SIGKILL until the cgroup has no process left."""
    deadline = time.monotonic() + timeout
    while handle.pids():
        handle.kill_all(SIGKILL)
        if wait_for(lambda: not handle.pids(), min(1.0, max(0.0, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            raise ResourceError(f"cgroup: processes {handle.pids()} did not exit after SIGKILL")
