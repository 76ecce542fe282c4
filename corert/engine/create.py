"""`create`: validate -> state dir -> cgroup -> launch plan -> fast path -> hooks -> "created".

The container init is left blocked on its exec fifo; `start` releases it. Every resource is registered on
an undo stack before the next step, so a failure at any step leaves no state dir, cgroup or process.
"""
from __future__ import annotations

import os
import _signal  # signal's C core: the same calls without the Signals enum (~4 ms of cold start)
import sys

from corert.engine.state import ContainerRecord, StateStore, proc_start_time, rfc3339_nano
from corert._record import Record, Required
from corert.engine.undo import UndoStack
from corert.errors import CorertError

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000


class Created(Record):
    """What `create` leaves for a caller that goes on in the same process (foreground run, the API)."""

    FIELDS = {
        "record": Required,       # the ContainerRecord
        "pidfd": -1,              # from clone3: lets an in-process caller wait for the exit without polling
        "child": 0,               # our direct child: the init, or (joined pid namespace) its mirror
        "pty_master": -1,         # -1 unless process.terminal and no console socket was given
    }
    __slots__ = tuple(FIELDS)


def create(store: StateStore, container_id: str, bundle: str | os.PathLike[str], *,
           pid_file: str | os.PathLike[str] | None = None,
           console_socket: str | None = None, preserve_fds: int = 0, no_pivot: bool = False,
           cgroup_manager: str = "auto", trace: bool = False) -> None:
    """The OCI `create` verb: the init waits on its exec fifo; the process (this one) then exits."""
    from corert.spec.load import load_and_validate

    bundle = os.path.abspath(bundle)
    config = load_and_validate(bundle)
    created = create_from_config(store, container_id, bundle, config, pid_file=pid_file,
                                 console_socket=console_socket, preserve_fds=preserve_fds,
                                 no_pivot=no_pivot, cgroup_manager=cgroup_manager, trace=trace,
                                 shortcut=True)
    for fd in (created.pidfd, created.pty_master):
        if fd >= 0:
            os.close(fd)


def create_from_config(store: StateStore, container_id: str, bundle: str | os.PathLike[str], config: dict, *,
                       pid_file: str | os.PathLike[str] | None = None, console_socket: str | None = None,
                       preserve_fds: int = 0, no_pivot: bool = False, cgroup_manager: str = "auto",
                       trace: bool = False, storage: dict | None = None, extra: dict | None = None,
                       keep_pty: bool = False, stdio: tuple[int, int, int] | None = None,
                       network=None, rootfs_mount: tuple[str, str] | None = None,
                       shortcut: bool = False) -> Created:
    """Create a container from an already validated config. Shared by the CLI, the front door and the API.

    `network`, when given, has attach(pid) -> state dict (called once the container's network namespace
    exists, before pivot_root) and teardown(); `delete` finds it again with
    corert.drivers.network.load_attachment(record.network).
    `shortcut` leaves the plan with which the native CLI front starts and deletes it (engine/shortcut.py).
    """
    from corert import _fastpath
    from corert.drivers.cgroups import detect, placement_fds
    from corert.engine.idmap import setgroups_allowed, write_id_maps
    from corert.plan import cgroup_resources, compile_plan

    if (config.get("process") or {}).get("terminal") and not console_socket and not keep_pty:
        raise CorertError("cannot allocate a tty without --console-socket when the container is detached")
    record = store.reserve(container_id)
    lock = store.lock(container_id)
    undo = UndoStack()
    undo.push("state directory", lambda: store.remove(container_id))
    launcher = None
    try:
        linux = config.get("linux", {})
        root_path = config["root"]["path"]
        bundle = os.fspath(bundle)
        record.bundle = bundle
        record.rootfs = os.path.join(bundle, root_path)  # an absolute root.path stays as it is
        record.annotations = config.get("annotations") or {}
        record.hooks = config.get("hooks") or {}
        record.created = rfc3339_nano()
        record.rootless = os.geteuid() != 0
        record.storage = storage
        record.extra = extra or {}

        cgroup = detect(cgroup_manager).create(container_id, linux.get("cgroupsPath"), cgroup_resources(config))
        undo.push("cgroup", cgroup.destroy)
        record.cgroup = cgroup.state()
        # Saved now, not only at "created": a create killed from here on (no undo runs) leaves a record
        # that `delete --force` can clean up, cgroup included; the init dies with us (PDEATHSIG).
        store.save(record)

        fifo = store.exec_fifo_path(container_id)
        os.mkfifo(fifo, 0o600)
        root_uid, root_gid = _host_ids_of_root(linux)
        if (root_uid, root_gid) != (os.geteuid(), os.getegid()):
            os.chown(fifo, root_uid, root_gid)   # the init opens it as the container's root
        fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
        undo.push("exec fifo fd", lambda: os.close(fifo_fd))
        cgroup_fd, task_fds = placement_fds(cgroup)
        try:
            plan, joins = compile_plan(
                config, bundle, cgroup_mounts=cgroup.container_mounts(), cgroup_dir_fd=cgroup_fd,
                exec_fifo=fifo, preserve_fds=preserve_fds, no_pivot=no_pivot,
                seccomp_cache=store.seccomp_cache_dir(),
                set_groups=setgroups_allowed(linux.get("gidMappings") or []))
            plan.stdio = stdio
            plan.cgroup_task_fds = task_fds
            if rootfs_mount:
                plan.rootfs_mount = (rootfs_mount[0].encode(), rootfs_mount[1].encode())
            join_fds = [(nstype, os.open(path, os.O_RDONLY | os.O_CLOEXEC)) for nstype, path in joins]
            try:
                # A joined pid namespace takes a fork after setns: the init is then the grandchild. A
                # caller that stays to wait (foreground run, the API) keeps the intermediate as a
                # mirror of its exit; a detached create lets the init go to the engine's subreaper.
                joins_pid = any(nstype == CLONE_NEWPID for nstype, _ in joins)
                fork_mode = (_fastpath.FORK_MIRROR if keep_pty else _fastpath.FORK_LEAVE) if joins_pid else 0
                launcher = _fastpath.Launcher(plan, join_fds, fifo_fd=fifo_fd, fork_after_join=fork_mode)
                if plan.seccomp_listener:   # the child sends the notify fd before READY
                    from corert.drivers.security.notify import hand_over
                    launcher.on_seccomp_fd = lambda fd: hand_over(store, record, linux["seccomp"], fd)
                pid = launcher.spawn()
            finally:
                for _, fd in join_fds:
                    os.close(fd)
        finally:
            for fd in [cgroup_fd, *task_fds]:
                if fd >= 0:
                    os.close(fd)
        undo.push("container process", lambda: _kill_and_reap(pid))

        # The child waits while we do what only the parent can: id maps, cgroup placement, oom score.
        if plan.clone_flags & CLONE_NEWUSER:
            write_id_maps(pid, linux.get("uidMappings") or [], linux.get("gidMappings") or [])
        if cgroup_fd < 0 and not task_fds:   # neither clone3 nor the child itself placed it
            cgroup.attach(pid)
        if plan.oom_score_adj is not None:
            with open(f"/proc/{pid}/oom_score_adj", "w") as f:
                f.write(str(plan.oom_score_adj))
        launcher.proceed()
        if fork_mode:
            _stage, init_pid = launcher.wait_stage()   # FORKED: the init inside the joined pid namespace
            if fork_mode == _fastpath.FORK_LEAVE:
                os.waitpid(pid, 0)                     # the intermediate left right after the fork
            undo.push("container process", lambda: _kill_and_reap(init_pid))
            launcher.proceed()
        else:
            init_pid = pid
        launcher.wait_stage()                      # STAGE_PRE_PIVOT: namespaces and mounts exist
        if network is not None:
            # The front door's network driver wires the new netns (veth, addresses, routes, NAT).
            undo.push("network", network.teardown)
            record.network = network.attach(init_pid)

        record.pid = init_pid
        record.pid_start = proc_start_time(init_pid) or 0
        hooks = record.hooks
        if hooks.get("prestart") or hooks.get("createRuntime"):
            _run_hooks(store, record, hooks, ("prestart", "createRuntime"), "creating")
        launcher.proceed()
        _stage, master = launcher.wait_stage()     # STAGE_READY: blocked on the exec fifo
        if master >= 0 and console_socket:
            from corert.engine.console import send_console_fd
            try:
                send_console_fd(console_socket, master)
            finally:
                os.close(master)
            master = -1
        elif master >= 0:
            undo.push("terminal", lambda: os.close(master))
        if hooks.get("createContainer"):
            _run_hooks(store, record, hooks, ("createContainer",), "created")
        if plan.start_hooks:   # run by the init itself, in the container, when `start` comes
            from corert import jsonio
            from corert.engine.state import oci_state
            launcher.send_hook_state(jsonio.dumps(oci_state(store, record, status="created")).encode())

        record.status = "created"
        store.save(record)
        if shortcut:   # the OCI verb: `start` and `delete` come as commands of their own (engine/shortcut.py)
            from corert.engine.shortcut import write_plan
            write_plan(store, record, cgroup)
        if pid_file:
            write_pid_file(pid_file, init_pid)
        if trace:
            _print_trace(launcher.timestamps())
        pidfd = launcher.pidfd
        launcher.pidfd = -1
        os.close(fifo_fd)
        undo.discard()
        return Created(record=record, pidfd=pidfd, pty_master=master, child=pid)
    except BaseException:
        undo.unwind()
        raise
    finally:
        if launcher is not None:
            if launcher.pidfd >= 0:
                os.close(launcher.pidfd)
            launcher.close()
        lock.release()


def _run_hooks(store: StateStore, record: ContainerRecord, hooks: dict, phases: tuple[str, ...],
               status: str) -> None:
    """OCI hooks of the given phases, in order, each with the state JSON on stdin (failures abort create)."""
    from corert.engine.hooks import run_hooks
    from corert.engine.state import oci_state

    state = oci_state(store, record, status=status)
    for phase in phases:
        run_hooks(hooks.get(phase) or [], state, phase)


def _host_ids_of_root(linux: dict) -> tuple[int, int]:
    """The host uid/gid that the container's uid/gid 0 maps to (ours when there is no user namespace)."""
    def host(mappings: list[dict], own: int) -> int:
        for m in mappings or []:
            if m["containerID"] <= 0 < m["containerID"] + m["size"]:
                return m["hostID"] - m["containerID"]
        return own
    if not any(ns.get("type") == "user" for ns in linux.get("namespaces") or []):
        return os.geteuid(), os.getegid()
    return host(linux.get("uidMappings"), os.geteuid()), host(linux.get("gidMappings"), os.getegid())


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, _signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def write_pid_file(path: str | os.PathLike[str], pid: int) -> None:
    """Atomic, as runc writes it: engines read it as soon as create returns."""
    from corert.fsutil import write_atomic

    write_atomic(os.fspath(path), str(pid).encode(), 0o644)


def _print_trace(stamps: dict) -> None:
    if not stamps:
        return
    base = min(stamps.values())
    steps = " ".join(f"{name}=+{(t - base) / 1e6:.2f}ms" for name, t in sorted(stamps.items(), key=lambda x: x[1]))
    print(f"corert: trace: {steps}", file=sys.stderr)
