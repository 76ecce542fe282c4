"""Entry point of the FUSE overlay daemon.

    python -m corert.drivers.storage.fuse --upper U --work W --lower L1 [--lower L2 ...] \\
        [--daemonize] [--ready-fd N] [--log FILE] MOUNTPOINT

``--lower`` is given BOTTOM first (the order of an image's layers). With ``--daemonize`` the process forks
into a new session and its parent exits at once, so the daemon outlives whoever started it. Readiness is
reported as lines on ``--ready-fd``: ``pid N`` (daemon pid, from the parent), then ``ok N`` once the mount
exists or ``error MESSAGE``; the fd is closed afterwards, so a reader can simply read to EOF.

With ``--handoff SOCKET`` (rootless, see driver.py) the daemon mounts nothing: ``ok N`` means it listens on
SOCKET, where the container's init, having mounted /dev/fuse inside its user namespace, sends the fd. The
daemon answers one byte ('o' serving, 'e' failed) and serves that fd until the mount goes away.
"""
from __future__ import annotations

import os
import sys

USAGE = ("usage: python -m corert.drivers.storage.fuse --upper U --work W --lower L [--lower L ...] "
         "[--daemonize] [--ready-fd N] [--log FILE] [--handoff SOCKET] [--volatile] MOUNTPOINT")
# Parsed by hand: argparse (with the gettext and textwrap it imports) would stay in every daemon's memory,
# ~0.4 MB, for a command line that only driver.py writes. --lower repeats; --opt=value works too.
_VALUED = {"--upper": "upper", "--work": "work", "--lower": "lower", "--ready-fd": "ready_fd", "--log": "log",
           "--handoff": "handoff"}
_FLAGS = {"--daemonize": "daemonize", "--volatile": "volatile"}


class Args:
    """The daemon's command line (see the module doc)."""

    def __init__(self) -> None:
        self.upper = self.work = self.mountpoint = ""
        self.lower: list[str] = []
        self.daemonize = False
        self.ready_fd = -1
        self.log: str | None = None
        self.handoff: str | None = None   # the socket a container sends its /dev/fuse fd on
        self.volatile = False             # copy-ups are not fsynced (see StorageDriver.volatile)


def _parse(argv: list[str]) -> Args:
    args = Args()
    positional = []
    tokens = iter(argv)
    for token in tokens:
        opt, eq, value = token.partition("=")
        if token in ("-h", "--help"):
            print(f"{USAGE}\n{__doc__}")
            raise SystemExit(0)
        if opt in _FLAGS and not eq:
            setattr(args, _FLAGS[opt], True)
        elif opt in _VALUED:
            if not eq:
                value = next(tokens, None)  # type: ignore[assignment]
                if value is None:
                    raise SystemExit(f"{opt} needs a value\n{USAGE}")
            if opt == "--lower":
                args.lower.append(value)
            elif opt == "--ready-fd":
                if not (value[1:] if value.startswith("-") else value).isdigit():
                    raise SystemExit(f"--ready-fd: not a number: {value!r}\n{USAGE}")
                args.ready_fd = int(value)
            else:
                setattr(args, _VALUED[opt], value)
        elif token.startswith("-") and token != "-":
            raise SystemExit(f"unknown option {token}\n{USAGE}")
        else:
            positional.append(token)
    if not args.upper or not args.work or len(positional) != 1:
        raise SystemExit(USAGE)
    args.mountpoint = positional[0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    ready_fd = os.dup(args.ready_fd) if args.ready_fd >= 0 else -1
    if args.ready_fd >= 0 and args.ready_fd > 2:
        os.close(args.ready_fd)

    def report(line: str) -> None:
        if ready_fd >= 0:
            os.write(ready_fd, line.encode() + b"\n")

    if args.daemonize:
        try:
            os.setsid()  # no-op failure when the starter already made us a session leader
        except OSError:
            pass
        pid = os.fork()
        if pid:
            report(f"pid {pid}")
            os._exit(0)
        os.chdir("/")  # never pin the caller's cwd

    # stdio: nothing in, logs to the log file, so no terminal or pipe keeps us (or the caller) attached.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if args.log or args.daemonize:
        log_fd = os.open(args.log or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s corert-fuse[%(process)d] %(message)s")
    try:
        from corert.drivers.storage.fuse.daemon import serve
    except Exception as e:  # missing pyfuse3/trio: say so instead of dying silently
        report(f"error cannot load the FUSE daemon: {e}")
        return 1

    def ready(line: str) -> None:
        nonlocal ready_fd
        report(line)
        if ready_fd >= 0:
            os.close(ready_fd)
            ready_fd = -1

    if args.handoff:
        return _serve_handoff(args, serve, ready)
    try:
        return serve(args.upper, args.work, args.lower, args.mountpoint, ready, volatile=args.volatile)
    except Exception as e:
        ready(f"error {e}")
        raise


def _listen(path: str):
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    directory, name = os.path.split(path)
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(directory)   # bind relative to the dir: sun_path is too short for a path under $HOME
        sock.bind(name)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    os.chmod(path, 0o600)
    sock.listen(1)
    return sock


def _receive_fuse_fd(listener):
    """(connection, fd): the first /dev/fuse fd sent by a process of our own uid (the container's init)."""
    import socket
    import struct

    while True:
        conn, _ = listener.accept()
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 1, 1)
        except OSError:
            fds = []
        if uid == os.geteuid() and len(fds) == 1:
            return conn, fds[0]
        for fd in fds:
            os.close(fd)
        conn.close()


def _serve_handoff(args: Args, serve, ready) -> int:
    try:
        listener = _listen(args.handoff)
    except OSError as e:
        ready(f"error cannot listen on {args.handoff}: {e.strerror or e}")
        return 1
    ready(f"ok {os.getpid()}")
    conn, fd = _receive_fuse_fd(listener)
    listener.close()
    try:
        os.unlink(args.handoff)
    except OSError:
        pass

    def answer(line: str) -> None:
        # the container's init waits for this byte before it touches the mount
        try:
            conn.sendall(b"o" if line.startswith("ok") else b"e")
        except OSError:
            pass
        conn.close()
        if not line.startswith("ok"):
            print(line, file=sys.stderr)

    return serve(args.upper, args.work, args.lower, f"/dev/fd/{fd}", answer, volatile=args.volatile)


if __name__ == "__main__":
    sys.exit(main())
