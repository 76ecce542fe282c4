"""User-mode networking for rootless containers: an unprivileged user made by a fixture runs the front door
with --net=slirp (slirp4netns) and --net=pasta, publishes a port and reaches it on the host's 127.0.0.1.

/dev/net/tun is 0600 on this machine (many hosts ship 0666): the tests that need it open it for their
duration and put it back; one test checks the one-line error when it is not accessible. Traffic goes only
to 127.0.0.1 of this machine.
"""
from __future__ import annotations

import os
import shutil

import pytest

from support import (as_user, http_get, make_test_user, poll, remove_test_user, user_processes, user_runtime_dir,
                     wait_for)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes an unprivileged user (needs root)")

USER = "corert-netrl"
TUN = "/dev/net/tun"
HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture(scope="module")
def user():
    entry = make_test_user(USER, "500000:65536")
    shutil.rmtree(user_runtime_dir(entry.pw_uid), ignore_errors=True)   # as_user makes it afresh
    yield entry
    for name in as_user(entry, "ps", "-aq").stdout.split():
        as_user(entry, "rm", "-f", name)
    remove_test_user(USER)


def helpers_of(user) -> list[str]:
    """The user's live slirp4netns/pasta processes (after a short settle: they get SIGTERM first)."""
    return user_processes(user.pw_uid, settle=5, only=("slirp4netns", "pasta"))


@pytest.fixture
def tun_open():
    mode = os.stat(TUN).st_mode & 0o777
    os.chmod(TUN, 0o666)
    yield
    os.chmod(TUN, mode)


@pytest.mark.parametrize("net,port", [("slirp", 18091), ("pasta", 18092)])
def test_published_port_answers_on_host_loopback(user, tun_open, net, port):
    r = as_user(user, "run", "-d", "--name", f"web-{net}", f"--net={net}", "-p", f"{port}:80", "busybox", "sh",
                "-c", HTTPD.format(text=f"hello-{net}"))
    assert r.returncode == 0, r.stderr
    try:
        # The helper is ready before `run -d` returns, and httpd listens soon after: retry briefly.
        body = poll(lambda: http_get("127.0.0.1", port), until=lambda b: not b.startswith("error"), timeout=10,
                    interval=0.1)
        assert body == f"hello-{net}"
        e = as_user(user, "exec", f"web-{net}", "sh", "-c", "ip -o link | cut -d: -f2; cat /etc/hostname")
        assert e.returncode == 0, e.stderr
        assert len(user_processes(user.pw_uid, only=("slirp4netns", "pasta"))) == 1   # no settle: it must live
    finally:
        assert as_user(user, "rm", "-f", f"web-{net}").returncode == 0
    assert helpers_of(user) == []
    assert http_get("127.0.0.1", port).startswith("error")


def test_slirp_gives_outbound_stack_without_host_loopback(user, tun_open):
    r = as_user(user, "run", "--rm", "--net=slirp", "busybox", "sh", "-c",
                "ip -o -4 addr show tap0; ip route; cat /etc/resolv.conf")
    assert r.returncode == 0, r.stderr
    assert "10.0.2.100/24" in r.stdout and "default via 10.0.2.2" in r.stdout
    assert "nameserver 10.0.2.3" in r.stdout
    assert helpers_of(user) == []


def test_helper_of_an_exited_container_is_swept(user, tun_open):
    r = as_user(user, "run", "-d", "--name", "short", "--net=slirp", "busybox", "true")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: as_user(user, "ps").stdout, "the container to exit", until=lambda out: "running" not in out,
             timeout=10, interval=0.1)
    p = as_user(user, "network", "prune")
    assert p.returncode == 0, p.stderr
    assert "helper" in p.stdout
    assert helpers_of(user) == []
    assert as_user(user, "rm", "short").returncode == 0


def test_inaccessible_tun_is_reported_with_the_fix(user):
    if os.stat(TUN).st_mode & 0o006 == 0o006:
        pytest.skip(f"{TUN} is open to everyone on this host")
    for net in ("slirp", "pasta"):
        r = as_user(user, "run", "--rm", f"--net={net}", "busybox", "true")
        assert r.returncode == 125
        assert f"chmod 0666 {TUN}" in r.stderr and len(r.stderr.strip().splitlines()[-1]) < 200
    assert as_user(user, "ps", "-aq").stdout.split() == []
