"""`exec`: start another process inside a running container.

The new process joins every namespace of the container's init (setns in the child, in C), is placed in
the container's cgroup before it runs anything, and is non-dumpable from the moment it exists, so nothing
inside the container can reach the runtime through /proc/PID (CVE-2019-5736 class). The pid namespace is
entered by setting this process's pid_for_children around clone, and restored right after.
"""
from __future__ import annotations

import os
from pathlib import Path

from corert.engine.state import StateStore, live_status
from corert.errors import InvalidState
from corert.plan_types import LaunchPlan

# setns order: the user namespace first (it grants the rights for the others), mount last but one so the
# others are found by path before /proc changes, cgroup after the cgroup placement.
NAMESPACE_ORDER = (("user", 0x10000000), ("ipc", 0x08000000), ("uts", 0x04000000), ("net", 0x40000000),
                   ("cgroup", 0x02000000), ("time", 0x00000080), ("mnt", 0x00020000))
CLONE_NEWPID = 0x20000000


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


def exec_plan(config: dict, process: dict, bundle: Path, seccomp_cache: Path | None) -> LaunchPlan:
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


def exec_process(store: StateStore, container_id: str, process: dict, *, detach: bool = False,
                 pid_file: Path | None = None, console_socket: str | None = None,
                 preserve_fds: int = 0) -> int:
    from corert import _fastpath
    from corert.engine.delete import load_cgroup
    from corert.engine.run import FORWARDED, exit_code_of, forward_signal
    from corert.spec.load import load_config, validate_process
    import signal

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
    plan = exec_plan(config, base, Path(record.bundle), store.root / ".seccomp-cache")
    plan.preserve_fds = preserve_fds

    joins = _namespaces_to_join(record.pid)
    join_fds = [(flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)) for flag, path in joins]
    pid_ns = os.open(f"/proc/{record.pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    own_pid_ns = os.open("/proc/self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
    launcher = _fastpath.Launcher(plan, join_fds, dumpable=False)
    try:
        _fastpath.setns(pid_ns, CLONE_NEWPID)
        try:
            pid = launcher.spawn()
        finally:
            _fastpath.setns(own_pid_ns, CLONE_NEWPID)
    finally:
        for fd in [fd for _, fd in join_fds] + [pid_ns, own_pid_ns]:
            os.close(fd)
    master = -1
    try:
        cgroup = load_cgroup(record.cgroup)
        if cgroup is not None:
            cgroup.attach(pid)
        launcher.proceed()
        launcher.wait_stage()
        launcher.proceed()
        _stage, master = launcher.wait_stage()
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        launcher.close()
        raise
    if launcher.pidfd >= 0:
        os.close(launcher.pidfd)
    if pid_file:
        from corert.engine.create import _write_pid_file
        _write_pid_file(Path(pid_file), pid)
    if master >= 0 and console_socket:
        from corert.engine.console import send_console_fd
        send_console_fd(console_socket, master)
        os.close(master)
        master = -1
    if detach:
        launcher.close()
        return 0
    previous = {sig: signal.signal(sig, lambda s, _f: forward_signal(pid, s)) for sig in FORWARDED}
    try:
        if master >= 0:
            from corert.engine.console import relay
            relay(master)
        _pid, st = os.waitpid(pid, 0)
        # The exec'd process may have failed in exec itself: that error is the last message.
        return exit_code_of(st)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if master >= 0:
            os.close(master)
        launcher.close()
