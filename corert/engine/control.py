"""Control verbs on an existing container: `start`, `kill`, `pause`, `resume`, `update`, `events`.

Status checks and error messages follow runc's so that engines (containerd, podman) that match on them
behave the same.
"""
from __future__ import annotations

import os
import _signal  # signal's C core: the same calls without the Signals enum (~4 ms of cold start)
import sys

from corert.engine.state import (ContainerRecord, StateStore, init_alive, live_status, oci_state,
                                 open_pidfd)
from corert.errors import CorertError, HookError, InvalidState, ResourceError

TYPE_CHECKING = False  # typing costs ~5 ms of cold start; type checkers still see these imports
if TYPE_CHECKING:
    from typing import Callable, TextIO

# How long a control verb waits for another corert process working on the same container.
LOCK_TIMEOUT = 30.0

_START_REFUSALS = {
    "stopped": "cannot start a container that has stopped",
    "running": "cannot start an already running container",
}


def _warn_stderr(message: str) -> None:
    sys.stderr.write(f"corert: warning: {message}\n")


def start(store: StateStore, container_id: str, *, warn: Callable[[str], None] | None = None) -> None:
    """Let a created container's init exec its process: read the exec fifo, then run poststart hooks.

    Protocol with the init: it opens <state dir>/exec.fifo O_WRONLY (blocking until we open it for
    reading), writes one byte and execs (the fd is O_CLOEXEC). Reading that byte is the go signal.
    """
    with store.lock(container_id, timeout=LOCK_TIMEOUT):
        record = store.load(container_id)
        status = live_status(store, record)
        if status != "created":
            raise InvalidState(_START_REFUSALS.get(status, f"cannot start a container in the {status} state"))
        _release_init(store, record)
        # Not saved: "running" is what live_status derives once exec.fifo is gone and the init lives (the
        # stored status is a hint), so the write would cost every start a state.json replace for nothing.
        record.status = "running"
    poststart = (record.hooks or {}).get("poststart")
    if poststart:
        from corert.engine.hooks import run_hooks

        try:
            run_hooks(poststart, oci_state(store, record, "running"), "poststart")
        except HookError as e:  # the spec makes poststart failures warnings only
            (warn or _warn_stderr)(str(e))


def _release_init(store: StateStore, record: ContainerRecord) -> None:
    import select

    fifo = store.exec_fifo_path(record.id)
    pidfd = open_pidfd(record)
    try:
        # O_NONBLOCK: never hang in open() if the init died; poll both the fifo and the init's pidfd.
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidState(_START_REFUSALS["running"]) from None
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            while True:
                ready = dict(poller.poll())
                try:
                    data = os.read(fd, 1)
                except BlockingIOError:
                    data = None
                if data:
                    break
                hung_up = data == b"" and ready.get(fd, 0) & select.POLLHUP
                if pidfd in ready or hung_up:
                    raise CorertError(f"container {record.id!r}: init exited before it could be started")
        finally:
            os.close(fd)
    finally:
        os.close(pidfd)
    os.unlink(fifo)


def kill(store: StateStore, container_id: str, sig: int, all: bool = False) -> None:
    """Signal the init (through a pidfd), or with all=True every process of the container (runc rules)."""
    record = store.load(container_id)
    status = live_status(store, record)
    if all:
        _kill_all(record, status, sig)
        return
    if status not in ("created", "running", "paused"):
        raise InvalidState("container not running")
    pidfd = open_pidfd(record)
    try:
        _signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise InvalidState("container not running") from None
    finally:
        os.close(pidfd)
    if status == "paused" and sig == _signal.SIGKILL and record.cgroup:
        # A frozen (v1) task may not act on SIGKILL until thawed; runc thaws for SIGKILL too.
        _thaw_quietly(_handle(record))


def _thaw_quietly(handle) -> None:  # noqa: ANN001 - a CgroupHandle
    try:
        handle.thaw()
    except (OSError, CorertError):
        pass  # the cgroup is already gone with its processes


def _kill_all(record: ContainerRecord, status: str, sig: int) -> None:
    if record.cgroup:
        handle = _handle(record)
        if status == "stopped":
            try:
                if not handle.pids():
                    return  # nothing left (runc: no error)
            except OSError:
                return
        handle.kill_all(sig)
        if status == "paused" and sig == _signal.SIGKILL:
            _thaw_quietly(handle)  # frozen (v1) tasks may act on SIGKILL only once thawed (runc thaws)
        return
    if status == "stopped":
        return
    from corert.engine.query import descendants

    pidfd = open_pidfd(record)
    try:
        for pid in descendants(record.pid):
            try:
                if pid == record.pid:
                    _signal.pidfd_send_signal(pidfd, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass
    finally:
        os.close(pidfd)


def _handle(record: ContainerRecord):  # -> CgroupHandle
    from corert.drivers.cgroups import load_handle

    return load_handle(record.cgroup)


def _need_cgroup(record: ContainerRecord, what: str):  # -> CgroupHandle
    if not record.cgroup:
        raise ResourceError(f"container {record.id!r} has no cgroup: cannot {what}")
    return _handle(record)


def pause(store: StateStore, container_id: str) -> None:
    """Freeze every process of a created or running container."""
    with store.lock(container_id, timeout=LOCK_TIMEOUT):
        record = store.load(container_id)
        if live_status(store, record) not in ("created", "running"):
            raise InvalidState("container not running")
        _need_cgroup(record, "pause").freeze()


def resume(store: StateStore, container_id: str) -> None:
    """Thaw a paused container."""
    with store.lock(container_id, timeout=LOCK_TIMEOUT):
        record = store.load(container_id)
        if live_status(store, record) != "paused":
            raise InvalidState("container not paused")
        _need_cgroup(record, "resume").thaw()


def update(store: StateStore, container_id: str, resources: dict) -> None:
    """Apply OCI linux.resources to the live container cgroup (runc `update`)."""
    with store.lock(container_id, timeout=LOCK_TIMEOUT):
        record = store.load(container_id)
        if live_status(store, record) == "stopped":
            raise InvalidState("container not running")
        handle = _need_cgroup(record, "update resources")
        handle.update(resources)
        record.cgroup = handle.state()
        store.save(record)


def events(store: StateStore, container_id: str, stats: bool, interval: float,
           out: TextIO | None = None) -> None:
    """Print runc's event lines: with stats=True one {"type":"stats",...} line; otherwise a stats line
    every `interval` seconds and {"type":"oom",...} when the OOM killer strikes, until the container stops.
    """
    import json
    import time

    out = out or sys.stdout
    record = store.load(container_id)
    if live_status(store, record) == "stopped":
        raise InvalidState(f"container with id {container_id} is not running")
    handle = _need_cgroup(record, "report events")

    def emit(event: dict) -> None:
        out.write(json.dumps(event, separators=(",", ":")) + "\n")
        out.flush()

    def stats_event() -> dict:
        return {"type": "stats", "id": container_id, "data": handle.stats()}

    if stats:
        emit(stats_event())
        return
    if interval <= 0:
        raise CorertError("duration for stats must be greater than 0")
    oom_seen = _oom(handle)
    next_stats = time.monotonic() + interval  # runc's ticker: the first line after one interval
    while init_alive(record):
        if not oom_seen and _oom(handle):
            oom_seen = True
            emit({"type": "oom", "id": container_id})
        now = time.monotonic()
        if now >= next_stats:
            try:
                emit(stats_event())
            except OSError:
                return  # the cgroup went away with the container
            next_stats = now + interval
        time.sleep(max(0.0, min(0.25, next_stats - time.monotonic())))


def _oom(handle) -> bool:  # noqa: ANN001 - a CgroupHandle
    try:
        return bool(handle.oom_killed())
    except OSError:
        return False
