"""Container consoles: hand the pty master to a console socket (as runc does), or relay it ourselves.

`--console-socket`: runc connects to the AF_UNIX socket and sends one message whose body is the master's
name ("/dev/ptmx") with the master fd attached as SCM_RIGHTS; containerd and conmon only use the fd.
Without a console socket, a foreground `run` with terminal=true relays between our stdio and the master.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct

from corert.fsutil import write_all

PTMX_NAME = "/dev/ptmx"


def send_console_fd(socket_path: str, master_fd: int, name: str = PTMX_NAME) -> None:
    """Send the pty master over the console socket (SOCK_STREAM like runc; SEQPACKET listeners too)."""
    import socket  # lazy: only terminal containers pay for it

    from corert.errors import CorertError

    sock = None
    for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
        candidate = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
        try:
            candidate.connect(socket_path)
        except OSError as e:
            candidate.close()
            if e.errno == errno.EPROTOTYPE:  # the listener is of the other socket type
                continue
            raise CorertError(f"console socket {socket_path}: {e.strerror or e}") from None
        sock = candidate
        break
    if sock is None:
        raise CorertError(f"console socket {socket_path}: not a stream or seqpacket unix socket")
    try:
        sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", master_fd))])
    except OSError as e:
        raise CorertError(f"console socket {socket_path}: sending the pty failed: {e.strerror or e}") from None
    finally:
        sock.close()


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a pty (master or slave)."""
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_winsize(fd: int) -> tuple[int, int]:
    """(rows, cols) of a terminal fd (TIOCGWINSZ)."""
    import termios

    rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def relay(master_fd: int, *, stdin_fd: int = 0, stdout_fd: int = 1, pidfd: int | None = None) -> None:
    """Copy stdin -> master and master -> stdout until the pty hangs up (or `pidfd` becomes readable,
    i.e. the container process exited: then drain what is left and return).

    If stdin is a tty it is put in raw mode (restored on return) and its window size, now and on every
    SIGWINCH, is copied to the master.
    """
    import select
    import signal
    import threading

    local_tty = os.isatty(stdin_fd)
    saved_attrs = None
    old_winch = None
    master_flags = fcntl.fcntl(master_fd, fcntl.F_GETFL)
    fcntl.fcntl(master_fd, fcntl.F_SETFL, master_flags | os.O_NONBLOCK)
    try:
        if local_tty:
            import termios
            import tty

            saved_attrs = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd, termios.TCSANOW)  # not TCSAFLUSH: keep what the user typed ahead
            _copy_winsize(stdin_fd, master_fd)
            if threading.current_thread() is threading.main_thread():
                old_winch = signal.signal(signal.SIGWINCH,
                                          lambda _s, _f: _copy_winsize(stdin_fd, master_fd))
        _pump(select, master_fd, stdin_fd, stdout_fd, pidfd)
    finally:
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
        if saved_attrs is not None:
            import termios

            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_attrs)
        fcntl.fcntl(master_fd, fcntl.F_SETFL, master_flags)


def _copy_winsize(src_fd: int, dst_fd: int) -> None:
    try:
        rows, cols = get_winsize(src_fd)
        set_winsize(dst_fd, rows, cols)
    except OSError:
        pass  # the terminal went away: nothing to propagate


def _pump(select: "object", master_fd: int, stdin_fd: int, stdout_fd: int, pidfd: int | None) -> None:
    poll = select.poll()  # type: ignore[attr-defined]
    POLLIN, POLLOUT = select.POLLIN, select.POLLOUT  # type: ignore[attr-defined]
    HUP = select.POLLHUP | select.POLLERR  # type: ignore[attr-defined]
    poll.register(master_fd, POLLIN)
    stdin_open = True
    try:
        poll.register(stdin_fd, POLLIN)
    except (OSError, ValueError):
        stdin_open = False
    if pidfd is not None:
        poll.register(pidfd, POLLIN)
    pending = b""  # stdin bytes the pty did not take yet (the master is non-blocking)
    reading = stdin_open  # False while paused for back-pressure or after EOF
    while True:
        for fd, ev in poll.poll():
            if fd == master_fd:
                if ev & (POLLIN | HUP) and not _drain_master(master_fd, stdout_fd):
                    return
                if ev & POLLOUT and pending:
                    pending = _feed(master_fd, pending)
            elif fd == stdin_fd and reading:
                data = os.read(stdin_fd, 65536) if ev & (POLLIN | HUP) else b""
                if not data:
                    poll.unregister(stdin_fd)  # EOF on our stdin: keep relaying output
                    stdin_open = reading = False
                    continue
                pending = _feed(master_fd, pending + data)
            elif fd == pidfd:
                _drain_master(master_fd, stdout_fd)  # the process exited: flush and stop
                return
        poll.modify(master_fd, POLLIN | (POLLOUT if pending else 0))
        # Back-pressure: stop reading stdin while a lot is queued for the pty, resume once it drained.
        if reading and len(pending) > (1 << 20):
            poll.unregister(stdin_fd)
            reading = False
        elif stdin_open and not reading and not pending:
            poll.register(stdin_fd, POLLIN)
            reading = True


def _feed(master_fd: int, data: bytes) -> bytes:
    """Write what the pty takes now; return the rest."""
    try:
        n = os.write(master_fd, data)
    except BlockingIOError:
        return data
    except OSError as e:
        if e.errno == errno.EIO:
            return b""  # the slave side is gone: input has nowhere to go
        raise
    return data[n:]


def _drain_master(master_fd: int, stdout_fd: int) -> bool:
    """Copy everything readable now; False once the pty hung up (EIO/EOF: all slave fds closed)."""
    while True:
        try:
            data = os.read(master_fd, 65536)
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno == errno.EIO:
                return False
            raise
        if not data:
            return False
        write_all(stdout_fd, data)
