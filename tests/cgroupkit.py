"""Helpers shared by the cgroup suites: the v1 driver on this host (tests/integration/test_cgroups_v1.py,
test_cgroups_cli.py) and the v2 driver in the qemu guest (tests/vm/guest/test_v2.py); cgroup_dir also serves
the engine tests."""
from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from support import poll

SH = "/bin/sh"
_ids = iter(range(10**6))


def read(path: Path | str) -> str:
    with open(path) as f:
        return f.read().strip()


def kv(path: Path | str) -> dict[str, int]:
    """A flat keyed cgroup file ("key value" lines: memory.events, cpu.stat, ...)."""
    return {k: int(v) for k, v in (line.split() for line in read(path).splitlines())}


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0) -> bool:
    """True once predicate holds; False after timeout s (generous: the guest runs under TCG)."""
    return bool(poll(predicate, timeout=timeout, interval=0.02))


def cgroup_dir(pid: int, controller: str) -> Path | None:
    """The host dir of pid's cgroup in the v1 hierarchy of `controller`, through that hierarchy's mount: where
    the kernel keeps its limits (None where pid is gone or no v1 hierarchy has the controller)."""
    from corert.drivers.cgroups._util import cgroup_mounts
    from corert.drivers.cgroups.convert import host_dir, parse_proc_cgroup

    try:
        with open(f"/proc/{pid}/cgroup") as f:
            path = parse_proc_cgroup(f.read()).get(controller)
    except FileNotFoundError:
        return None
    if path is not None:
        for fstype, mountpoint, root, controllers in cgroup_mounts():
            if fstype == "cgroup" and controller in controllers:
                return Path(host_dir(mountpoint, root, path))
    return None


@contextmanager
def cgroup_handles(id_prefix: str, detect: Callable[[], Any]) -> Iterator[Callable[..., Any]]:
    """A factory: driver.create(...) with a unique container id <id_prefix>-<n> (driver: detect() unless
    given); every handle it made is destroyed on exit, also when the test failed."""
    handles = []

    def create(resources: dict | None = None, cgroups_path: str | None = None, driver: Any = None) -> Any:
        handle = (driver or detect()).create(f"{id_prefix}-{next(_ids)}", cgroups_path, resources)
        handles.append(handle)
        return handle

    try:
        yield create
    finally:
        for handle in handles:
            handle.destroy()


def spawn(handle: Any, *cmd: str, **kw: Any) -> subprocess.Popen:
    """cmd, exec'ed by a shell only once handle.attach() put that shell in the cgroup (stdin handshake)."""
    proc = subprocess.Popen([SH, "-c", 'read _ && exec "$@" </dev/null', "sh", *cmd], stdin=subprocess.PIPE, **kw)
    try:
        handle.attach(proc.pid)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    proc.stdin = None   # so communicate() leaves it alone
    return proc


def reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def assert_freeze_stops_progress(handle: Any, counter: Path, proc: subprocess.Popen,
                                 frozen_on_disk: Callable[[], bool], pause: float = 0.3) -> None:
    """Freeze a cgroup whose process keeps bumping `counter`, check the counter stands still and the
    version's own file says frozen, then thaw and check it moves again. Reaps `proc` in the end."""
    try:
        assert wait_until(lambda: counter.exists() and counter.read_text().strip() not in ("", "1"))
        handle.freeze()
        assert handle.is_frozen() and frozen_on_disk()
        before = counter.read_text()
        time.sleep(pause)
        assert counter.read_text() == before
        handle.thaw()
        assert not handle.is_frozen()
        assert wait_until(lambda: counter.read_text() not in (before, ""))
    finally:
        reap(proc)
