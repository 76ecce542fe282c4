"""The FUSE overlay under failure, through the front door: the daemon killed while the container writes,
a full disk, and a running container deleted. Each must give clear errors, leak nothing and hang nothing.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from support import Front, exited, small_tmpfs, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")

WRITER = "i=0; while :; do echo $i >> /data.txt || exit 9; i=$((i+1)); done"


class FuseFront(Front):
    def record(self, name: str) -> dict:
        """The state.json record of the container called name."""
        for entry in self.state_root.iterdir():
            path = entry / "state.json"
            if path.is_file():
                data = json.loads(path.read_text())
                if data.get("extra", {}).get("name") == name:
                    return data
        raise AssertionError(f"no container named {name}")


@pytest.fixture
def front(tmp_path):
    f = FuseFront(tmp_path, storage_from_env=True)
    yield f
    f.cleanup()
    containers = tmp_path / "data" / "containers"
    assert not containers.exists() or list(containers.iterdir()) == []


def _fuse_daemons() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "corert.drivers.storage.fuse"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_daemon_killed_mid_write_gives_errors_not_a_hang(front):
    before = _fuse_daemons()
    r = front("run", "-d", "--name", "w", "--storage=fuse", "busybox", "sh", "-c", WRITER)
    assert r.returncode == 0, r.stderr
    daemon = front.record("w")["storage"]["pid"]
    wait_for(lambda: os.path.exists(f"/proc/{daemon}"), "the daemon")
    wait_for(lambda: front("exec", "w", "test", "-s", "/data.txt").returncode == 0, "the writer to write")
    os.kill(daemon, signal.SIGKILL)
    # The writer's next write fails (ENOTCONN/EIO) and it exits 9: it must not hang in D state.
    pid = front.record("w")["pid"]
    wait_for(lambda: exited(pid), "the writer to notice the dead daemon")
    r = front("rm", "-f", "w", timeout=30)
    assert r.returncode == 0, r.stderr
    assert _fuse_daemons() == before
    assert "corert-fuse" not in open("/proc/self/mountinfo").read()


def test_full_disk_is_a_clear_error_and_leaves_nothing(front, tmp_path):
    """The upper dir on a 16 MiB tmpfs: the container's write fails with ENOSPC, the daemon survives."""
    with small_tmpfs(tmp_path / "small", "16m") as small:
        (tmp_path / "f2").mkdir()
        data = Front(tmp_path / "f2", small, storage_from_env=True)  # image store and container dirs on the small fs
        r = data("run", "--rm", "--storage=fuse", "busybox", "sh", "-c",
                 "dd if=/dev/zero of=/big bs=1M count=64 2>&1; echo rc=$?; rm -f /big; echo still-alive > /after; cat /after")
        assert r.returncode == 0, r.stderr
        assert "No space left on device" in r.stdout and "rc=1" in r.stdout, r.stdout
        assert "still-alive" in r.stdout      # the daemon survived ENOSPC and frees space again
        assert list((small / "containers").iterdir()) == []
        data.cli.cleanup()


def test_deleting_a_running_container(front):
    before = _fuse_daemons()
    r = front("run", "-d", "--name", "busy", "--storage=fuse", "busybox", "sh", "-c",
              "cd /tmp; while :; do echo x > f; cat f > /dev/null; done")
    assert r.returncode == 0, r.stderr
    rec = front.record("busy")
    assert front("rm", "busy").returncode != 0          # running: refused without -f
    r = front("rm", "-f", "busy", timeout=30)
    assert r.returncode == 0, r.stderr
    assert exited(rec["pid"])
    assert _fuse_daemons() == before
    assert "corert-fuse" not in open("/proc/self/mountinfo").read()
