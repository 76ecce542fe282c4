"""`exec`: start another process inside a running container.

The new process joins every namespace of the container's init (setns in the child, in C), is placed in
the container's cgroup before it runs anything, and is non-dumpable from the moment it exists, so nothing
inside the container can reach the runtime through /proc/PID (CVE-2019-5736 class). A joined pid namespace
only applies to children, so the child forks once more after the setns calls (the fast path's
fork_after_join); the user namespace is joined first, which is what lets a rootless user join the rest.
"""
from __future__ import annotations

import _signal  # signal's C core: the same calls without the Signals enum (~4 ms of cold start)
import os

from corert.engine.state import StateStore, live_status
from corert.errors import InvalidState
from corert.plan_types import LaunchPlan

# setns order: the user namespace first (it grants the rights for the others), cgroup after the cgroup
# placement, and pid last, right before the fork that enters it. (With pid joined before mnt, an exec
# right after the container started killed the container's init now and then on kernel 6.18; with this
# order 12/12 and the test suite pass. Not understood yet: keep this order.)
NAMESPACE_ORDER = (("user", 0x10000000), ("ipc", 0x08000000), ("uts", 0x04000000), ("net", 0x40000000),
                   ("cgroup", 0x02000000), ("time", 0x00000080), ("mnt", 0x00020000), ("pid", 0x20000000))


def _namespaces_to_join(pid: int) -> list[tuple[int, str]]:
    joins = []
    for name, flag in NAMESPACE_ORDER:
        theirs, ours = f"/proc/{pid}/ns/{name}", f"/proc/self/ns/{name}"
        try:
            if os.stat(theirs).st_ino != os.stat(ours).st_ino:
                joins.append((flag, theirs))
        except FileNotFoundError:
            continue
    return joins


def exec_plan(config: dict, process: dict, bundle: str, seccomp_cache: str | None) -> LaunchPlan:
    """The plan for an exec'd process: no mounts, no pivot; identity and security from `process`."""
    from corert.plan import compile_plan

    merged = dict(config)
    merged["process"] = process
    full, _joins = compile_plan(merged, bundle, seccomp_cache=seccomp_cache)
    plan = LaunchPlan(args=full.args, env=full.env, cwd=full.cwd, uid=full.uid, gid=full.gid,
                      additional_gids=full.additional_gids, umask=full.umask, rlimits=full.rlimits)
    for name in ("cap_bounding", "cap_effective", "cap_permitted", "cap_inheritable", "cap_ambient",
                 "keep_all_caps", "cap_last", "no_new_privs", "seccomp_bpf", "terminal", "set_groups"):
        setattr(plan, name, getattr(full, name))
    return plan


class StartedExec:
    """An exec'd process that is set up and running: what `spawn_exec` leaves for its caller to wait on.

    `pid` is the process inside the container (signal it); `helper` is our direct child, which exits the
    way `pid` does (wait on it, or on `pidfd`, which refers to it). Detached, the helper has already exited
    and `pid` belongs to whoever reaps orphans (a subreaper such as conmon or the containerd shim)."""

    def __init__(self, pid: int, helper: int, pidfd: int, master: int, launcher) -> None:  # noqa: ANN001
        self.pid = pid
        self.helper = helper
        self.pidfd = pidfd        # from clone3; the caller owns it (the API waits on it without polling)
        self.master = master      # pty master, -1 without a terminal
        self.launcher = launcher


def spawn_exec(store: StateStore, container_id: str, process: dict, *, detach: bool = False,
               console_socket: str | None = None, preserve_fds: int = 0,
               stdio: tuple[int, int, int] | None = None) -> StartedExec:
    """Start `process` in a running container; returns once it has passed its setup (or raises)."""
    from corert import _fastpath
    from corert.drivers.cgroups import placement_fds
    from corert.engine.delete import load_cgroup
    from corert.spec.load import load_config, validate_process

    record = store.load(container_id)
    status = live_status(store, record)
    if status not in ("running", "created"):
        raise InvalidState(f"cannot exec in a {status} container")
    config = load_config(record.bundle)
    base = dict(config.get("process") or {})
    base.update(process)
    validate_process(base)
    if base.get("terminal") and detach and not console_socket:
        raise InvalidState("cannot allocate a tty for a detached exec without --console-socket")
    plan = exec_plan(config, base, record.bundle, store.seccomp_cache_dir())
    plan.preserve_fds = preserve_fds
    plan.stdio = stdio
    cgroup = load_cgroup(record.cgroup)
    join_fds: list[tuple[int, int]] = []
    plan.cgroup_dir_fd, plan.cgroup_task_fds = -1, []
    pid = 0
    try:   # every fd opened here is closed below, also when the container goes away meanwhile
        for flag, path in _namespaces_to_join(record.pid):
            join_fds.append((flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        # The helper places itself in the container's cgroup as create's init does (no RCU wait); its
        # fork is then born there.
        if cgroup is not None:
            plan.cgroup_dir_fd, plan.cgroup_task_fds = placement_fds(cgroup)
        # With a console socket the process waits after READY until its pty master has been handed over,
        # as runc's does: the engine can size the terminal before the process looks at it.
        launcher = _fastpath.Launcher(plan, join_fds, dumpable=False, wait_after_ready=bool(console_socket),
                                      fork_after_join=_fastpath.FORK_LEAVE if detach else _fastpath.FORK_MIRROR)
        helper = launcher.spawn()
    finally:
        for fd in [fd for _, fd in join_fds] + [plan.cgroup_dir_fd, *plan.cgroup_task_fds]:
            if fd >= 0:
                os.close(fd)
    master = -1
    try:
        if cgroup is not None and plan.cgroup_dir_fd < 0 and not plan.cgroup_task_fds:
            cgroup.attach(helper)
        launcher.proceed()
        _stage, pid = launcher.wait_stage()    # FORKED: the process inside the pid namespace
        launcher.proceed()
        launcher.wait_stage()                  # PRE_PIVOT (no mounts for exec)
        launcher.proceed()
        _stage, master = launcher.wait_stage()
        if console_socket:
            if master >= 0:
                from corert.engine.console import send_console_fd
                try:
                    send_console_fd(console_socket, master)
                finally:
                    os.close(master)
                master = -1
            launcher.proceed()
    except BaseException:
        for victim in (pid, helper):
            if victim:
                try:
                    os.kill(victim, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
        os.waitpid(helper, 0)
        if launcher.pidfd >= 0:
            os.close(launcher.pidfd)
        launcher.close()
        raise
    if detach:
        os.waitpid(helper, 0)              # it left right after the fork
    pidfd = launcher.pidfd
    launcher.pidfd = -1
    return StartedExec(pid, helper, pidfd, master, launcher)


def exec_process(store: StateStore, container_id: str, process: dict, *, detach: bool = False,
                 pid_file: str | os.PathLike[str] | None = None, console_socket: str | None = None,
                 preserve_fds: int = 0) -> int:
    from corert.engine.run import FORWARDED, exit_code_of, forward_signal

    started = spawn_exec(store, container_id, process, detach=detach, console_socket=console_socket,
                         preserve_fds=preserve_fds)
    pid, master, launcher = started.pid, started.master, started.launcher
    if started.pidfd >= 0:
        os.close(started.pidfd)
    if pid_file:
        from corert.engine.create import write_pid_file
        write_pid_file(pid_file, pid)
    if detach:
        launcher.close()
        return 0
    previous = {sig: _signal.signal(sig, lambda s, _f: forward_signal(pid, s)) for sig in FORWARDED}
    try:
        if master >= 0:
            from corert.engine.console import relay
            relay(master)
        _pid, st = os.waitpid(started.helper, 0)   # the helper exits as the exec'd process did
        return exit_code_of(st)
    finally:
        for sig, handler in previous.items():
            _signal.signal(sig, handler)
        if master >= 0:
            os.close(master)
        launcher.close()
