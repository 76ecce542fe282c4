"""Rootless podman as a test user (made by the fixture, with its own subuid/subgid range; deleted after),
with corert and with runc as the runtime.

podman runs the runtime as uid 0 of its own user namespace: the runtime must see that it is not the host's
root (cgroups are not delegated on this v1 host, mknod is refused: devices are bind-mounted). Storage is
vfs, there are no cgroups, so pause/update are not part of the sequence (podman refuses them rootless on
cgroup v1 with any runtime).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engines.enginekit import RUNTIMES, Podman, run_in_pty
from support import make_test_user, remove_test_user, wait_for

pytestmark = [
    pytest.mark.engines,
    pytest.mark.rootless,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fixture creates a user"),
    pytest.mark.skipif(not shutil.which("podman") or not shutil.which("newuidmap"),
                       reason="podman or uidmap not installed"),
]

USER = "corert-engines"
SUBIDS = "600000:65536"      # not overlapping the ranges of tests/rootless (400000, 500000)
IMAGE = "localhost/busybox:latest"
WAIT_SIZE = "until size=$(stty size 2>/dev/null); [ -n \"$size\" ] && [ \"$size\" != '0 0' ]; do sleep 0.05; done; echo $size"
TRAPPER = ["sh", "-c", "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 7' TERM; echo ready; "
           "while :; do sleep 0.1; done"]


@pytest.fixture(scope="module")
def test_user():
    try:
        yield make_test_user(USER, SUBIDS)
    finally:
        remove_test_user(USER)


@pytest.fixture(scope="module", params=sorted(RUNTIMES))
def podman(request, test_user, image_tar):
    base = os.path.join(test_user.pw_dir, request.param)   # the user cannot reach pytest's 0700 tmp dirs
    os.mkdir(base)
    tar = os.path.join(test_user.pw_dir, f"image-{request.param}.tar")
    shutil.copyfile(image_tar, tar)
    os.chown(tar, test_user.pw_uid, test_user.pw_gid)

    p = Podman(Path(base), RUNTIMES[request.param], user=test_user)
    p.name = request.param
    try:
        p("load", "-i", tar)
        yield p
    finally:
        p("rm", "--all", "--force", "--time", "0", check=False)
        p("system", "reset", "--force", check=False)


def test_rootless_sequence(podman):
    assert podman("run", "--rm", IMAGE, "echo", "hello").stdout == "hello\n"
    assert podman("run", "--rm", IMAGE, "sh", "-c", "exit 3", check=False).returncode == 3
    assert podman("run", "--rm", "-i", IMAGE, "cat", input="piped\n").stdout == "piped\n"
    rc, out = run_in_pty(podman.argv("run", "--rm", "-t", IMAGE, "sh", "-c",
                                     "test -t 0 && echo is-a-tty; " + WAIT_SIZE), podman.env, rows=30, cols=70)
    assert rc == 0 and "is-a-tty" in out and "30 70" in out, out

    podman("run", "-d", "--name", "rl", IMAGE, *TRAPPER)
    wait_for(lambda: "ready" in podman("logs", "rl").stdout, what="the container's first output")
    # Inside: root of the container is the user outside, through podman's user namespace.
    r = podman("exec", "-u", "1000", "-w", "/tmp", "-e", "FOO=bar", "rl", "sh", "-c", "echo $(id -u) $(pwd) $FOO")
    assert r.stdout == "1000 /tmp bar\n"
    assert podman("exec", "rl", "sh", "-c", "exit 5", check=False).returncode == 5
    rc, out = run_in_pty(podman.argv("exec", "-t", "rl", "sh", "-c", "test -t 0 && echo exec-tty"), podman.env)
    assert rc == 0 and "exec-tty" in out, out
    pid = int(podman.inspect("rl", "{{.State.Pid}}"))
    assert os.stat(f"/proc/{pid}").st_uid == podman.user.pw_uid     # container root = the user
    top = podman("top", "rl", "pid", "args").stdout.splitlines()
    assert top[1].split()[:2] == ["1", "sh"]

    podman("kill", "--signal", "USR1", "rl")
    wait_for(lambda: "got-usr1" in podman("logs", "rl").stdout, what="the USR1 trap")
    podman("stop", "--time", "30", "rl")
    assert podman.inspect("rl", "{{.State.Status}} {{.State.ExitCode}}") == "exited 7"
    podman("start", "rl")
    podman("rm", "--force", "--time", "1", "rl")
    assert podman("ps", "--all", "--quiet").stdout == ""
    assert not os.path.exists(f"/proc/{pid}")
    assert podman.runtime_containers() == []
