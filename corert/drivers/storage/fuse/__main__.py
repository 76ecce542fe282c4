"""Entry point of the FUSE overlay daemon.

    python -m corert.drivers.storage.fuse --upper U --work W --lower L1 [--lower L2 ...] \\
        [--daemonize] [--ready-fd N] [--log FILE] MOUNTPOINT

``--lower`` is given BOTTOM first (the order of an image's layers). With ``--daemonize`` the process forks
into a new session and its parent exits at once, so the daemon outlives whoever started it. Readiness is
reported as lines on ``--ready-fd``: ``pid N`` (daemon pid, from the parent), then ``ok N`` once the mount
exists or ``error MESSAGE``; the fd is closed afterwards, so a reader can simply read to EOF.
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

    try:
        return serve(args.upper, args.work, args.lower, args.mountpoint, ready)
    except Exception as e:
        ready(f"error {e}")
        raise


if __name__ == "__main__":
    sys.exit(main())
