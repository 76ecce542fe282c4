"""Processes this process cloned (container inits, exec'd processes), waited for through their pidfd.

No SIGCHLD handler and no polling: `wait_readable(pidfd)` wakes when the process exits, then
waitid(P_PIDFD) reaps exactly that child, so other children of the embedding program are never reaped
(or left as zombies) by corert.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import trio

from corert.errors import CorertError


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: exit_code is the process's code, or 128+N when signal N killed it."""

    exit_code: int
    signal: int | None = None
    oom_killed: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class ChildProcess:
    """A child of this process, owned through its pidfd. Several tasks may wait() at once.

    `signal_pidfd` (owned too) is for an exec'd process: our child is then a helper that exits as the
    process it forked into the container's pid namespace does, and signals must go to that process.
    """

    def __init__(self, pid: int, pidfd: int, signal_pidfd: int = -1) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._signal_pidfd = signal_pidfd
        self.status: ExitStatus | None = None
        self._waiting: trio.Event | None = None   # set when the task inside wait_readable leaves it

    def send_signal(self, sig: int) -> bool:
        """Signal the process (never another one that reused its pid); False if it has exited."""
        if self.status is not None or self._pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(self._signal_pidfd if self._signal_pidfd >= 0 else self._pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    def poll(self) -> ExitStatus | None:
        """Reap the process if it has exited (never blocks)."""
        if self.status is None and self._pidfd >= 0:
            try:
                res = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                raise CorertError(f"process {self.pid} was reaped by someone else (a wait() for any child, "
                                  f"or SIGCHLD ignored): its exit status is lost") from None
            if res is not None and res.si_pid:
                if res.si_code == os.CLD_EXITED:
                    self.status = ExitStatus(res.si_status)
                else:
                    self.status = ExitStatus(128 + res.si_status, signal=res.si_status)
        return self.status

    async def wait(self) -> ExitStatus:
        """Until the process has exited and is reaped. Cancellable; other waiters carry on."""
        while self.poll() is None:
            if self._pidfd < 0:
                raise CorertError(f"process {self.pid}: its handle is closed")
            if self._waiting is not None:      # another task is in wait_readable: share its wake-up
                await self._waiting.wait()
                continue
            self._waiting = trio.Event()
            try:
                await trio.lowlevel.wait_readable(self._pidfd)
            finally:
                event, self._waiting = self._waiting, None
                event.set()
        return self.status  # type: ignore[return-value]

    async def kill_and_reap(self) -> ExitStatus | None:
        """SIGKILL and wait (for cleanup paths: call shielded). None if the status was lost."""
        self.send_signal(signal.SIGKILL)
        try:
            return await self.wait()
        except CorertError:
            return None

    def close(self) -> None:
        if self._signal_pidfd >= 0:
            os.close(self._signal_pidfd)
            self._signal_pidfd = -1
        if self._pidfd >= 0:
            fd, self._pidfd = self._pidfd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


PIPE = "pipe"
DEVNULL = "null"


class Stdio:
    """The three fds a new process gets, and the parent's ends of its pipes as trio streams.

    stdin: True (a pipe: `stdin` is a SendStream), False (/dev/null) or an fd we pass on.
    stdout/stderr: "pipe" (a ReceiveStream), "null", or an fd. Parent ends are O_CLOEXEC.
    """

    def __init__(self, stdin: bool | int = False, stdout: str | int = PIPE, stderr: str | int = PIPE) -> None:
        self.child: list[int] = []        # fds to close in the parent once the child has them
        self.stdin: trio.lowlevel.FdStream | None = None
        self.stdout: trio.lowlevel.FdStream | None = None
        self.stderr: trio.lowlevel.FdStream | None = None
        self._fds: list[int] = []
        try:
            in_fd = self._in(stdin)
            out_fd, self.stdout = self._out(stdout)
            err_fd, self.stderr = self._out(stderr)
        except BaseException:
            self.close_child_ends()
            self.close_sync()
            raise
        self.fds = (in_fd, out_fd, err_fd)

    def _in(self, spec: bool | int) -> int:
        if spec is True:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.child.append(r)
            self.stdin = trio.lowlevel.FdStream(w)
            return r
        if spec is False or spec is None:
            return self._null(os.O_RDONLY)
        return int(spec)

    def _out(self, spec: str | int) -> tuple[int, trio.lowlevel.FdStream | None]:
        if spec == PIPE:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.child.append(w)
            return w, trio.lowlevel.FdStream(r)
        if spec == DEVNULL or spec is None:
            return self._null(os.O_WRONLY), None
        if isinstance(spec, int):
            return spec, None
        raise CorertError(f"stdio: expected 'pipe', 'null' or an fd, not {spec!r}")

    def _null(self, flags: int) -> int:
        fd = os.open(os.devnull, flags | os.O_CLOEXEC)
        self.child.append(fd)
        return fd

    def close_child_ends(self) -> None:
        """The child has dup'ed its ends: closing ours lets EOF arrive when the process exits."""
        for fd in self.child:
            os.close(fd)
        self.child = []

    def close_sync(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()

    async def aclose(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                await stream.aclose()


async def read_all(stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
    """Collect a stream until EOF."""
    if stream is None:
        return
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        into += chunk


async def feed(stream: trio.abc.SendStream | None, data: bytes) -> None:
    """Write `data`, then close so the process sees EOF (a process that exits early is not an error)."""
    if stream is None:
        return
    try:
        if data:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()
