"""Rootless containers: an unprivileged user made by a fixture runs the front door on the real kernel.

/dev/fuse is 0600 on this machine; a typical host has 0666, so the FUSE tests set that for their duration
and put it back.
"""
from __future__ import annotations

import os

import pytest

from support import as_user, make_test_user, remove_test_user, user_processes, wait_for

USER = "corert-rootless"
USER_NOSUB = "corert-rootless1"


@pytest.fixture(scope="module")
def user():
    entry = make_test_user(USER, "400000:65536")
    yield entry
    remove_test_user(USER)


@pytest.mark.parametrize("storage", ["fuse", "overlay", "vfs"])
def test_run_as_user(clean_user, fuse_open, storage):
    r = as_user(clean_user, "run", "--rm", f"--storage={storage}", "busybox", "sh", "-c",
                "id -u; cat /proc/self/uid_map; echo data > /tmp/f; cat /tmp/f; exit 7")
    assert r.returncode == 7, r.stderr
    out = r.stdout.split("\n")
    assert out[0] == "0"
    # root maps to the user, 1..65535 to its subuid range: a full map
    assert out[1].split() == ["0", str(clean_user.pw_uid), "1"]
    assert out[2].split() == ["1", "400000", "65535"]
    assert "data" in out[3]
    assert as_user(clean_user, "ps", "-aq").stdout.split() == []


def test_detached_exec_logs_stop_rm(clean_user, fuse_open):
    r = as_user(clean_user, "run", "-d", "--name", "web", "--storage=fuse", "busybox", "sh", "-c",
                "echo started; trap 'exit 0' TERM; while :; do sleep 0.1; done")
    assert r.returncode == 0, r.stderr
    assert "web" in as_user(clean_user, "ps").stdout
    e = as_user(clean_user, "exec", "web", "sh", "-c", "echo in-$(hostname)-$$")
    assert e.returncode == 0 and e.stdout.startswith("in-"), e.stderr
    wait_for(lambda: "started" in as_user(clean_user, "logs", "web").stdout, "the log line", timeout=10, interval=0.1)
    assert as_user(clean_user, "stop", "-t", "5", "web").returncode == 0
    assert "stopped" in as_user(clean_user, "ps", "-a").stdout
    assert as_user(clean_user, "rm", "web").returncode == 0
    assert user_processes(clean_user.pw_uid, settle=5) == []


def test_fuse_inaccessible_is_explained(clean_user):
    mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o600)
    try:
        r = as_user(clean_user, "run", "--rm", "--storage=fuse", "busybox", "true")
    finally:
        os.chmod("/dev/fuse", mode)
    assert r.returncode == 125
    assert "/dev/fuse" in r.stderr and "chmod 0666" in r.stderr and r.stderr.strip().count("\n") == 0


def test_limit_without_delegation_is_an_error(clean_user):
    r = as_user(clean_user, "run", "--rm", "--storage=overlay", "--memory", "32m", "busybox", "true")
    assert r.returncode == 125 and "memory" in r.stderr.lower(), r.stderr


def test_single_id_map_without_subuids(fuse_open):
    entry = make_test_user(USER_NOSUB, None)
    try:
        r = as_user(entry, "run", "--rm", "--storage=overlay", "busybox", "cat", "/proc/self/uid_map")
        assert r.returncode == 0, r.stderr
        assert [line.split() for line in r.stdout.splitlines()] == [["0", str(entry.pw_uid), "1"]]
        assert "single-id" in r.stderr and "/etc/subuid" in r.stderr
    finally:
        remove_test_user(USER_NOSUB)
