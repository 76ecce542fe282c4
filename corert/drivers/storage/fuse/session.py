"""pyfuse3's request loop with less per-request overhead (daemon process only; imports pyfuse3).

pyfuse3 3.x reads each request after ``_wait_fuse_readable()``: a trio lock, an epoll registration and a
pass through trio's scheduler per request, which costs more than most of our handlers. Our handlers never
await (see daemon._guard), so one worker task serves as well as many, and while the kernel has requests
queued the next one can be taken straight away: a zero-timeout poll(2) says so. When the queue is empty the
next request is usually a round trip away, so we wait for it in poll(2) too, as long as trio's next turn is
not due. Every BURST requests, and IDLE_POLL_MS after trio's last turn, we go through pyfuse3's own wait,
which yields to trio so the signal task runs (a stop request waits at most about IDLE_POLL_MS).

The hook replaces a private pyfuse3 function that its loop looks up by name on every request; when a
pyfuse3 version lacks it, the daemon serves through the stock loop (slower, same behaviour).
"""
from __future__ import annotations

import os
import select
import stat
import time

import pyfuse3

BURST = 64  # requests taken without yielding to trio while the kernel's queue is non-empty
# An empty queue is usually a round trip away from the next request (tar: open, read, close, next file):
# wait for it in poll(2) rather than take the full trip through trio's epoll (an epoll_ctl pair, a lock
# and a scheduler pass per request), for as long as trio's next turn is not due: trio (its signal task)
# gets a turn at least every IDLE_POLL_MS (plus one request's handling) and every BURST requests.
IDLE_POLL_MS = 20


FUSE_DEVICE = os.makedev(10, 229)  # /dev/fuse, the misc device


def fuse_device_fd() -> int | None:
    """The fd of our FUSE connection. libfuse keeps it private; told by its device number, since an fd
    handed over from a container's mount namespace need not be named /dev/fuse here."""
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own fd, closed by now
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == FUSE_DEVICE:
            return int(name)
    return None


def install_fast_wait() -> bool:
    """Make pyfuse3's loop skip trio while requests are queued. Call after pyfuse3.init(); True if done."""
    orig = getattr(pyfuse3, "_wait_fuse_readable", None)
    fd = fuse_device_fd()
    if orig is None or fd is None:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    burst = 0

    turn_due = 0   # monotonic ns by which trio must have had its next turn

    async def wait_readable() -> bool:
        nonlocal burst, turn_due
        if burst:
            # Queued already: poll returns at once. Empty: wait for it here, until trio's turn is due.
            left_ms = (turn_due - time.monotonic_ns()) // 1_000_000
            if poller.poll(left_ms if left_ms > 0 else 0):
                burst -= 1
                return True  # readable (or hung up: the read that follows sees the unmount and ends the loop)
        burst = BURST
        readable = await orig()
        turn_due = time.monotonic_ns() + IDLE_POLL_MS * 1_000_000
        return readable

    pyfuse3._wait_fuse_readable = wait_readable
    return True


async def main() -> None:
    """pyfuse3.main with a single worker: handlers run to completion without awaiting, so more workers
    would only add scheduling."""
    await pyfuse3.main(min_tasks=1, max_tasks=1)
