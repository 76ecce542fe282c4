"""Rootless build and vfs commit of files a container gave to another owner (on the host: a subordinate id).

A container of an unprivileged user with a subordinate id range that makes /d owned by www-data (33) and
/d/f 0600 leaves, on the host, files of the mapped id (subuid start + 32), which the user cannot read and
whose lstat() shows the host id. What reads them for an image (the vfs commit's replay of the changes, the
build's lookup of an image dir's owner for a later COPY) must do it inside the user namespace, where they
show the container's ids: the built or committed image then has /d and /d/f as the container left them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from support import as_user, make_tar, make_test_user, remove_test_user

USER = "corert-mapped"
SUBUID_START = 600000

MAKE = ("mkdir /d && echo hi > /d/f && chown -R 33:33 /d && chmod 600 /d/f && touch /g && chown 0:33 /g"
        " && chmod 640 /g")
SHOW = "stat -c '%u:%g %a %n' /d /d/f /g; cat /d/f"
EXPECTED = ["33:33 755 /d", "33:33 600 /d/f", "0:33 640 /g", "hi"]


@pytest.fixture(scope="module")
def user():
    entry = make_test_user(USER, f"{SUBUID_START}:65536")
    yield entry
    remove_test_user(USER)


@pytest.fixture
def context():
    """A build context the test user can read (pytest's tmp dirs are private to root)."""
    top = Path(tempfile.mkdtemp(prefix="corert-mapped-"))
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top)


@pytest.mark.parametrize("storage", ["overlay", "vfs"])
def test_build_keeps_owner_of_a_run_step(clean_user, context, storage):
    """RUN gives /d to www-data; the next steps (a COPY into /d: the parent's owner of /d is looked up, and
    a RUN reading /d/f) see it as the RUN left it, and so does the built image."""
    (context / "extra").write_text("x\n")
    os.chmod(context / "extra", 0o644)
    (context / "Containerfile").write_text(
        f"FROM busybox\nRUN {MAKE}\nCOPY extra /d/extra\nRUN cat /d/f > /copy && test -s /copy\n")
    os.chmod(context / "Containerfile", 0o644)
    r = as_user(clean_user, "build", f"--storage={storage}", "--no-cache", "-t", f"mapped-{storage}",
                str(context), timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    r = as_user(clean_user, "run", "--rm", f"--storage={storage}", f"mapped-{storage}", "sh", "-c",
                f"{SHOW}; stat -c '%u:%g %a %n' /d/extra; cat /copy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == EXPECTED + ["0:0 644 /d/extra", "hi"]
    assert as_user(clean_user, "image", "rm", f"mapped-{storage}").returncode == 0


def test_vfs_commit_keeps_owner(clean_user):
    r = as_user(clean_user, "run", "--name", "c1", "--storage=vfs", "busybox", "sh", "-c", MAKE)
    assert r.returncode == 0, r.stderr
    c = as_user(clean_user, "commit", "c1", "mapped-commit")
    assert c.returncode == 0, c.stderr
    assert as_user(clean_user, "rm", "c1").returncode == 0
    for storage in ("vfs", "overlay"):
        r = as_user(clean_user, "run", "--rm", f"--storage={storage}", "mapped-commit", "sh", "-c", SHOW)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == EXPECTED, storage
    assert as_user(clean_user, "image", "rm", "mapped-commit").returncode == 0


def test_build_add_writes_into_an_unpacked_dir_of_another_owner(clean_user, context):
    """One ADD that unpacks a tar giving /d/x to uid 1000 and then copies a context dir into /d: the copy
    writes into /d/x (on the host: a subordinate id's dir) and replaces the tar's /d/x/f, in the same step.
    (The WORKDIR before it makes its dir in the user namespace too.)"""
    owner = {"uid": 1000, "gid": 1000}
    (context / "app.tar").write_bytes(make_tar([("dir", "x", owner), ("file", "x/f", {**owner, "data": b"from tar\n"}),
                                                ("file", "x/keep", {**owner, "data": b"kept\n"})]))
    (context / "tree" / "x").mkdir(parents=True)
    (context / "tree" / "x" / "f").write_text("from context\n")
    (context / "tree" / "x" / "extra").write_text("extra\n")
    (context / "Containerfile").write_text("FROM busybox\nWORKDIR /w\nADD app.tar tree /d/\n")
    for path in [context / "tree", context / "tree" / "x"]:
        os.chmod(path, 0o755)
    for path in [context / "app.tar", context / "Containerfile", *(context / "tree" / "x").iterdir()]:
        os.chmod(path, 0o644)
    r = as_user(clean_user, "build", "--no-cache", "-t", "mapped-add", str(context), timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    r = as_user(clean_user, "run", "--rm", "mapped-add", "sh", "-c",
                "pwd; stat -c '%u:%g %n' /d/x/keep /d/x/f /d/x/extra; cat /d/x/f")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/w", "1000:1000 /d/x/keep", "0:0 /d/x/f", "0:0 /d/x/extra", "from context"]
    assert as_user(clean_user, "image", "rm", "mapped-add").returncode == 0


@pytest.fixture
def context_group(clean_user):
    """A group the test user is in only as a supplementary group (runuser sets those from /etc/group)."""
    import grp
    import subprocess

    name = "corert-ctx"
    subprocess.run(["groupdel", name], capture_output=True)
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        subprocess.run(["usermod", "-aG", name, clean_user.pw_name], check=True, capture_output=True)
        yield grp.getgrnam(name)
    finally:
        subprocess.run(["gpasswd", "-d", clean_user.pw_name, name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


def test_build_copies_a_file_readable_through_a_supplementary_group(clean_user, context, context_group):
    """The build's user-namespace helper keeps the user's supplementary groups, as any process of the user
    has them: a context file of mode 0640 in one of them is readable to COPY."""
    (context / "secret").write_text("group-only\n")
    os.chown(context / "secret", 0, context_group.gr_gid)
    os.chmod(context / "secret", 0o640)
    (context / "Containerfile").write_text("FROM busybox\nCOPY secret /secret\n")
    os.chmod(context / "Containerfile", 0o644)
    r = as_user(clean_user, "build", "--no-cache", "-t", "mapped-group", str(context), timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    r = as_user(clean_user, "run", "--rm", "mapped-group", "cat", "/secret")
    assert (r.returncode, r.stdout) == (0, "group-only\n"), r.stderr
    assert as_user(clean_user, "image", "rm", "mapped-group").returncode == 0
