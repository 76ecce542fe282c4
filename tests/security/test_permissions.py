"""Other users stay out: state, logs, the image store's layers, container rootfs mounts (kernel overlay and
FUSE) and /proc/<init>/root, tried for real as an unprivileged user made by a fixture.

Information-disclosure class (e.g. CVE-2021-41091, moby's world-traversable data dirs letting local users
reach setuid binaries and secrets inside containers).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from support import make_busybox_rootfs, make_test_user, remove_test_user

SECRET = "TOPSECRET-corert"


@pytest.fixture(scope="module")
def other_user():
    """A fresh unprivileged user (no home, no groups), removed afterwards."""
    name = f"corertsec{secrets.token_hex(3)}"
    pw = make_test_user(name, None, home=False, shell="/usr/sbin/nologin")
    yield pw.pw_uid, pw.pw_gid
    remove_test_user(name)


def _as_user(user, *argv: str) -> subprocess.CompletedProcess:
    uid, gid = user
    return subprocess.run(list(argv), user=uid, group=gid, extra_groups=[], capture_output=True, text=True,
                          cwd="/")


def _denied(user, *argv: str) -> None:
    r = _as_user(user, *argv)
    assert r.returncode != 0 and "Permission denied" in r.stderr, (argv, r.returncode, r.stdout, r.stderr)
    assert SECRET not in r.stdout


@pytest.fixture
def open_dir():
    """A world-searchable directory under /tmp: whatever keeps the user out is corert's doing, not pytest's
    0700 tmp root."""
    path = Path(tempfile.mkdtemp(prefix="corert-sec-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def secret_image(corert, tmp_path):
    rootfs = make_busybox_rootfs(tmp_path / "img")
    (rootfs / "secret").write_text(SECRET + "\n")
    os.chmod(rootfs / "secret", 0o600)
    name = f"corert-sec-secret-{secrets.token_hex(4)}"
    corert("image", "import", str(rootfs), name, check=True)
    yield name
    corert("image", "rm", name)


def _record(corert, cid: str) -> dict:
    return json.loads((corert.root / cid / "state.json").read_text())


@pytest.mark.parametrize("storage", ["overlay", "fuse"])
def test_other_users_cannot_read_state_logs_layers_or_rootfs(corert, other_user, open_dir, secret_image, storage):
    """A detached container of an image holding a 0600 secret; as another user: the state root, the
    container's state.json, its log, the image store's layers (and the secret in them), the mounted rootfs
    (kernel overlay or FUSE) and /proc/<init>/root are all refused."""
    state_root = open_dir / "state"          # created by corert itself
    from support import Cli
    cli = Cli(corert.binary, state_root)
    r = cli("run", "-d", "--storage", storage, secret_image, "sh", "-c", "echo log-line; sleep 60")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        state = _record(cli, cid)
        container_dir = state_root / cid
        log = Path(state["extra"]["log"])
        merged = Path(state["rootfs"])
        assert stat.S_IMODE(state_root.stat().st_mode) == 0o700
        assert stat.S_IMODE(container_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((container_dir / "state.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert (merged / "secret").read_text().strip() == SECRET   # root sees it: the path is right

        _denied(other_user, "ls", str(state_root))
        _denied(other_user, "cat", str(container_dir / "state.json"))
        _denied(other_user, "cat", str(log))
        _denied(other_user, "ls", str(merged))
        _denied(other_user, "cat", str(merged / "secret"))
        _denied(other_user, "cat", f"/proc/{state['pid']}/root/secret")
        from corert.images.store import ImageStore
        from corert.frontend.containers import data_root
        with ImageStore(data_root()) as images:
            layers = images.layer_dirs(images.get(secret_image))
        top = next(p for p in layers if (p / "secret").exists())
        _denied(other_user, "cat", str(top / "secret"))
        _denied(other_user, "ls", str(data_root() / "layers"))
    finally:
        cli("rm", "-f", cid)
