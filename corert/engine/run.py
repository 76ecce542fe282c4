"""OCI `run`: create + start, then (in the foreground) forward signals, relay a terminal, wait, and clean up.

The init is our own child (we cloned it), so the exit status comes from waitpid; the exit code is the
process's, or 128+N when signal N killed it.
"""
from __future__ import annotations

import os
import _signal  # signal's C core: the same calls without the Signals enum (~4 ms of cold start)
import sys

from corert.engine.state import StateStore
from corert.errors import CorertError

FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1,
             _signal.SIGUSR2, _signal.SIGWINCH, _signal.SIGCONT)


def exit_code_of(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(store: StateStore, container_id: str, bundle: str | os.PathLike[str], *, detach: bool = False,
        pid_file: str | os.PathLike[str] | None = None, keep: bool = False, console_socket: str | None = None,
        preserve_fds: int = 0, no_pivot: bool = False, cgroup_manager: str = "auto",
        trace: bool = False) -> int:
    from corert.engine.control import start
    from corert.engine.create import create, create_from_config
    from corert.spec.load import load_and_validate

    if detach:
        create(store, container_id, bundle, pid_file=pid_file, console_socket=console_socket,
               preserve_fds=preserve_fds, no_pivot=no_pivot, cgroup_manager=cgroup_manager, trace=trace)
        start(store, container_id)
        return 0
    bundle = os.path.abspath(bundle)
    config = load_and_validate(bundle)
    created = create_from_config(store, container_id, bundle, config, pid_file=pid_file,
                                 console_socket=console_socket, preserve_fds=preserve_fds,
                                 no_pivot=no_pivot, cgroup_manager=cgroup_manager, trace=trace,
                                 keep_pty=True)
    return supervise(store, container_id, created, keep=keep, start=start)


def supervise(store: StateStore, container_id: str, created, *, keep: bool, start) -> int:
    """Start a container created in this process and stay with it until it exits; then delete it."""
    from corert.engine.delete import delete

    pid = created.record.pid
    previous = {}
    try:
        for sig in FORWARDED:
            previous[sig] = _signal.signal(sig, lambda s, _f: forward_signal(pid, s))
        start(store, container_id)
        if created.pty_master >= 0:
            from corert.engine.console import relay
            relay(created.pty_master)
        _pid, status = os.waitpid(created.child, 0)   # exits as the init does
        report_oom(container_id, created.record.cgroup, status)
        return exit_code_of(status)
    finally:
        for sig, handler in previous.items():
            _signal.signal(sig, handler)
        for fd in (created.pidfd, created.pty_master):
            if fd >= 0:
                os.close(fd)
        if not keep:
            delete(store, container_id, force=True)


def report_oom(container_id: str, cgroup_state: dict | None, status: int) -> bool:
    """Say on stderr when the kernel OOM killer struck the container (asked before its cgroup is deleted).

    The exit code stays the process's own: 137 when the init itself was killed.
    """
    if not cgroup_state:
        return False
    from corert.drivers.cgroups import load_handle

    try:
        killed = load_handle(cgroup_state).oom_killed()
    except (OSError, CorertError):
        return False   # no memory controller / cgroup already gone: nothing to report
    if killed:
        who = "was" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == _signal.SIGKILL else "had a process"
        sys.stderr.write(f"corert: container {container_id} {who} OOM-killed (memory limit reached)\n")
    return killed


def forward_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
