"""Container and ExecProcess: live handles the embedding program holds inside `async with`.

Every lifecycle step is the engine's own function (control.start/kill/pause/resume/update,
exec.spawn_exec, containers.remove_managed, delete.delete), run in a worker thread where it can block
(the exec fifo, FUSE, cgroup freezes), so many containers progress at once. Leaving the `async with` --
normally, by an exception or by cancellation -- kills what still runs, reaps it and removes every
resource, shielded from cancellation so that nothing is left half torn down.
"""
from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import trio

from corert._api.events import Event, open_oom_eventfd, watch_oom
from corert._api.process import PIPE, ChildProcess, ExitStatus, Stdio, feed, read_all
from corert.engine.state import ContainerRecord
from corert.errors import CorertError, InvalidState

if TYPE_CHECKING:
    from corert._api.runtime import Runtime


@dataclass(frozen=True)
class RunResult:
    """A finished process and everything it wrote."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int | None = None
    oom_killed: bool = False
    id: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


async def collect(wait: Callable[[], Any], stdio: Stdio, input: bytes | None) -> tuple[ExitStatus, bytes, bytes]:
    """Feed stdin, drain stdout/stderr and wait for the exit, all at once (no pipe can fill up)."""
    out, err = bytearray(), bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all, stdio.stdout, out)
        nursery.start_soon(read_all, stdio.stderr, err)
        if stdio.stdin is not None:
            nursery.start_soon(feed, stdio.stdin, input or b"")
        status = await wait()
    return status, bytes(out), bytes(err)


class _StdioStreams:
    """stdin/stdout/stderr of a process made by the API: a pipe where it asked for one, else None."""

    _stdio: Stdio

    @property
    def stdin(self) -> trio.abc.SendStream | None:
        """A pipe to the process's stdin when it was made with stdin=True."""
        return self._stdio.stdin

    @property
    def stdout(self) -> trio.abc.ReceiveStream | None:
        return self._stdio.stdout

    @property
    def stderr(self) -> trio.abc.ReceiveStream | None:
        return self._stdio.stderr


class ExecProcess(_StdioStreams):
    """A process started in a running container by `Container.open_exec`."""

    def __init__(self, container: Container, child: ChildProcess, stdio: Stdio, launcher: Any) -> None:
        self.container = container
        self.pid = child.pid
        self._child = child
        self._stdio = stdio
        self._launcher = launcher

    async def wait(self) -> ExitStatus:
        return await self._child.wait()

    def kill(self, sig: int = _signal.SIGKILL) -> bool:
        """Signal the process (through its pidfd); False when it has already exited."""
        return self._child.send_signal(sig)

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self._child.kill_and_reap()
                await self._stdio.aclose()
            finally:
                self._child.close()
                self._launcher.close()
                self.container._execs.discard(self)


def _exec_child(started: Any) -> ChildProcess:
    """Wait on our child (the helper when the engine forks into the pid namespace), signal the process."""
    import os

    target = -1
    if getattr(started, "helper", started.pid) != started.pid:
        try:
            # Until the helper reaps it (and then exits) the pid cannot be reused: it names this process.
            target = os.pidfd_open(started.pid)
        except ProcessLookupError:
            pass     # already gone: the helper's exit carries its status
    return ChildProcess(started.pid, started.pidfd, target)


class _ExecContext:
    def __init__(self, container: Container, process: dict, stdin: bool | int, stdout: str | int,
                 stderr: str | int) -> None:
        self._container = container
        self._process = process
        self._spec = (stdin, stdout, stderr)
        self._proc: ExecProcess | None = None

    async def __aenter__(self) -> ExecProcess:
        from corert.engine.exec import spawn_exec

        c = self._container
        stdio = Stdio(*self._spec)
        try:
            started = await trio.to_thread.run_sync(
                lambda: spawn_exec(c._rt._store, c.id, self._process, stdio=stdio.fds))
        except BaseException:
            stdio.close_sync()
            raise
        finally:
            stdio.close_child_ends()
        # No checkpoint from here to the return: a pending cancel is seen inside the body, and __aexit__ runs.
        self._proc = ExecProcess(c, _exec_child(started), stdio, started.launcher)
        c._execs.add(self._proc)
        c._rt._events.emit(Event("exec", c.id, {"pid": started.pid, "args": list(self._process["args"])}))
        return self._proc

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            await self._proc._close()


class Container(_StdioStreams):
    """One container of a Runtime. Created (not started) when the `async with` body begins."""

    def __init__(self, runtime: Runtime, record: ContainerRecord, pidfd: int, stdio: Stdio) -> None:
        self._rt = runtime
        self.record = record
        self.id: str = record.id
        self.name: str = record.extra.get("name", record.id)
        self.pid: int = record.pid
        self._init = ChildProcess(record.pid, pidfd)
        self._stdio = stdio
        self._execs: set[ExecProcess] = set()
        self._watch_scope = trio.CancelScope()
        self._exit_reported = False
        self._starting = False          # an exit seen while `start` runs is reported after "start"
        self._deferred_exit: Event | None = None
        self._closed = False
        self._stats_reading: Any = None   # corert.engine.stats.Reading of the last stats() call

    def __repr__(self) -> str:
        return f"<corert.Container {self.name} id={self.id[:12]} pid={self.pid}>"

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Let the init exec the container's process (engine `start`: the exec fifo, poststart hooks)."""
        from corert.engine.control import start

        self._starting = True
        try:
            await self._engine(start, self._rt._store, self.id)
            self._rt._events.emit(Event("start", self.id, {"pid": self.pid}))
        finally:
            self._starting = False
            if self._deferred_exit is not None:
                self._rt._events.emit(self._deferred_exit)
                self._deferred_exit = None

    async def wait(self) -> ExitStatus:
        """Until the container's process exits: its exit code, the signal that killed it, OOM kill."""
        status = await self._init.wait()
        return self._report_exit(status)

    def _report_exit(self, status: ExitStatus) -> ExitStatus:
        if not self._exit_reported:
            self._exit_reported = True
            if self._oom_killed():
                status = replace(status, oom_killed=True)
            self._init.status = status
            event = Event("exit", self.id, {"exit_code": status.exit_code, "signal": status.signal,
                                            "oom_killed": status.oom_killed})
            if self._starting:
                self._deferred_exit = event
            else:
                self._rt._events.emit(event)
        return self._init.status  # type: ignore[return-value]

    def _oom_killed(self) -> bool:
        if not self.record.cgroup:
            return False
        from corert.drivers.cgroups import load_handle
        try:
            return bool(load_handle(self.record.cgroup).oom_killed())
        except (OSError, CorertError):
            return False

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._init.status if self._exit_reported else None

    async def kill(self, sig: int = _signal.SIGTERM, *, all: bool = False) -> None:  # noqa: A002
        """Signal the init (engine `kill`), or every process of the container with all=True."""
        from corert.engine.control import kill

        await self._engine(kill, self._rt._store, self.id, int(sig), all)

    async def stop(self, grace: float = 10.0, sig: int | None = None) -> ExitStatus:
        """`sig`, else the container's stop signal (as `corert stop`: the stop_signal option, else the
        image's StopSignal, else SIGTERM), then SIGKILL if the process is still there after `grace`
        seconds; the exit."""
        from corert.frontend.containers import stop_signal

        self._init.send_signal(stop_signal(self.record) if sig is None else sig)
        await self._thaw_if_frozen()   # paused: thawed so that it can act on the signal (as `corert stop`)
        with trio.move_on_after(grace):
            return await self.wait()
        self._init.send_signal(_signal.SIGKILL)
        return await self.wait()

    async def pause(self) -> None:
        from corert.engine.control import pause

        await self._engine(pause, self._rt._store, self.id)
        self._rt._events.emit(Event("pause", self.id))

    async def resume(self) -> None:
        from corert.engine.control import resume

        await self._engine(resume, self._rt._store, self.id)
        self._rt._events.emit(Event("resume", self.id))

    async def update(self, *, memory: str | None = None, cpus: str | None = None, pids_limit: int | None = None,
                     resources: dict | None = None) -> None:
        """Change limits of the live container: docker-style values and/or an OCI linux.resources dict."""
        from corert.engine.control import update
        from corert.frontend.config import RunOptions, _resources

        merged = {**_resources(RunOptions(memory=memory, cpus=cpus, pids_limit=pids_limit)), **(resources or {})}
        if not merged:
            raise CorertError("update: no resource given")
        await self._engine(update, self._rt._store, self.id, merged)
        self._rt._events.emit(Event("update", self.id, {"resources": merged}))

    async def stats(self) -> dict:
        """cgroup statistics in runc's `events --stats` shape (cpu, memory, pids, blkio, hugetlb), plus
        "pressure" (the container's PSI), "host_pressure", and docker's derived numbers (cpu_percent over
        the time since the previous call, or since the start on the first; mem_usage, mem_limit,
        mem_percent, net_rx/tx_bytes, block_read/write_bytes, pids_current): see corert.engine.stats."""
        from corert.engine.stats import read_stats

        if not self.record.cgroup:
            raise CorertError(f"container {self.id!r} has no cgroup: no statistics")
        result, self._stats_reading = await trio.to_thread.run_sync(
            lambda: read_stats(self._rt._store, self.record, self._stats_reading))
        return result

    async def status(self) -> str:
        """created | running | paused | stopped, as `corert state` derives it."""
        return (await self.state())["status"]

    async def state(self) -> dict:
        """The OCI state object (what `corert state ID` prints)."""
        from corert.engine.state import oci_state

        store = self._rt._store
        return await trio.to_thread.run_sync(lambda: oci_state(store, store.load(self.id)))

    # ---- exec --------------------------------------------------------------------------------------------
    def open_exec(self, args: Sequence[str], *, env: Sequence[str] | None = None, cwd: str | None = None,
                  user: str | int | None = None, stdin: bool | int = False, stdout: str | int = PIPE,
                  stderr: str | int = PIPE) -> _ExecContext:
        """`async with c.open_exec([...]) as p:` another process in the container, with stdio streams;
        killed and reaped when the block ends."""
        if not args:
            raise CorertError("exec: a command is required")
        process: dict = {"args": [str(a) for a in args], "terminal": False}
        if env is not None:
            base = (self._config().get("process") or {}).get("env") or []
            process["env"] = list(base) + list(env)
        if cwd:
            process["cwd"] = cwd
        if user is not None:
            from pathlib import Path

            from corert.frontend.config import resolve_user
            uid, gid = resolve_user(str(user), Path(self.record.rootfs))
            process["user"] = {"uid": uid, "gid": gid}
        return _ExecContext(self, process, stdin, stdout, stderr)

    async def exec(self, args: Sequence[str], *, input: bytes | None = None, env: Sequence[str] | None = None,
                   cwd: str | None = None, user: str | int | None = None) -> RunResult:
        """Run a process in the container to completion and collect its output."""
        async with self.open_exec(args, env=env, cwd=cwd, user=user, stdin=input is not None) as p:
            status, out, err = await collect(p.wait, p._stdio, input)
        return RunResult(status.exit_code, out, err, status.signal, False, self.id)

    def _config(self) -> dict:
        from corert.spec.load import load_config
        return load_config(self.record.bundle)

    # ---- plumbing ----------------------------------------------------------------------------------------
    async def _engine(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise InvalidState(f"container {self.id!r} has been removed")
        return await trio.to_thread.run_sync(lambda: fn(*args))

    async def _thaw_if_frozen(self) -> None:
        """A frozen (v1) task acts on a signal (even SIGKILL) only once thawed."""
        if not self.record.cgroup:
            return
        from corert.drivers.cgroups import load_handle

        def thaw() -> None:
            try:
                handle = load_handle(self.record.cgroup)
                if handle.is_frozen():
                    handle.thaw()
            except (OSError, CorertError):
                pass
        await trio.to_thread.run_sync(thaw)

    async def _watch(self) -> None:
        """Background (runtime nursery): report the exit and OOM kills as they happen."""
        with self._watch_scope:
            try:
                async with trio.open_nursery() as nursery:
                    oom = open_oom_eventfd(self.record.cgroup)   # a few quick syscalls; the task owns the fd
                    if oom is not None:
                        nursery.start_soon(watch_oom, oom[0], oom[1],
                                           lambda: self._rt._events.emit(Event("oom", self.id)))
                    try:
                        await self.wait()
                    except CorertError:
                        pass
                    nursery.cancel_scope.cancel()
            except trio.ClosedResourceError:
                pass    # the pidfd was closed under us by teardown

    async def _close(self) -> None:
        """Kill, reap, remove. Shielded: runs to the end even when the owner was cancelled."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                for proc in list(self._execs):
                    await proc._close()
                if self._init.status is None:
                    self._init.send_signal(_signal.SIGKILL)
                    await self._thaw_if_frozen()
                    try:
                        await self.wait()
                    except CorertError:
                        pass
                self._watch_scope.cancel()
                await self._stdio.aclose()
                await trio.to_thread.run_sync(self._rt._remove, self.record)
            finally:
                self._watch_scope.cancel()
                self._init.close()
                self._rt._forget(self)
                self._rt._events.emit(Event("delete", self.id))
