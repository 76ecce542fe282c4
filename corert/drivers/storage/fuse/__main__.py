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

import argparse
import os
import sys


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m corert.drivers.storage.fuse",
                                description="corert FUSE overlay daemon")
    p.add_argument("--upper", required=True, help="writable upper dir (overlayfs format)")
    p.add_argument("--work", required=True, help="work dir on the same filesystem as --upper")
    p.add_argument("--lower", action="append", default=[], help="read-only layer, bottom first; repeat")
    p.add_argument("--daemonize", action="store_true", help="fork into a new session, parent exits")
    p.add_argument("--ready-fd", type=int, default=-1, help="fd for pid/ok/error lines")
    p.add_argument("--log", help="redirect stdout/stderr to this file (append)")
    p.add_argument("--handoff", metavar="SOCKET", help="serve the /dev/fuse fd a container sends on SOCKET "
                   "instead of mounting (MOUNTPOINT is informational)")
    p.add_argument("--volatile", action="store_true", help="copy-ups are not fsynced (a container removed "
                   "when it stops): still atomic, not durable across a power loss")
    p.add_argument("mountpoint")
    return p.parse_args(argv)


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


def _serve_handoff(args: argparse.Namespace, serve, ready) -> int:
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
