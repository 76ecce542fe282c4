"""Rootless image layers with many owners, and the FUSE overlay mounted inside the container's user namespace.

An unprivileged user with a subordinate id range (made by a fixture) imports an image whose layers hold
files of uid 0, 33 (www-data), 65534 (nobody), one outside any map (70000), a setuid file, a device node, a
whiteout and an opaque dir. The layers are unpacked inside a user namespace with the containers' map, so
on disk the owners are the mapped host ids and every container shows the image's owners, on the kernel
overlay and on the FUSE driver. The FUSE driver mounts from inside the container's user namespace: the test
runs it with a PATH holding a fusermount3 that records any call, and checks it was never called.
"""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from support import (CORERT, as_user, assert_user_clean, image_config, make_test_user, remove_test_user,
                     run_as_user, tar_bytes, user_processes, write_oci_layout)

USER = "corert-owners"
USER_NOSUB = "corert-owners1"
SUBUID_START = 500000


def host_id(container_id: int) -> int:
    """The host id of a container id under the full map (0 -> the user, 1.. -> the subordinate range)."""
    return SUBUID_START + container_id - 1


# ----- the image -----------------------------------------------------------------------------------------

def _member(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, data: bytes = b"",
            devmajor: int = 0, devminor: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 1_700_000_000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.devmajor, info.devminor = devmajor, devminor
    return info, data


# VFS_CAP_REVISION_2 | effective, CAP_NET_BIND_SERVICE (10) permitted: what `setcap cap_net_bind_service+ep` writes
CAP_V2 = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)


def _capped(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info, data = _member(name, tarfile.REGTYPE, 0o755, data=b"#!/bin/sh\n")
    info.pax_headers = {"SCHILY.xattr.security.capability": CAP_V2.decode("utf-8", "surrogateescape")}
    return info, data


def owners_layers() -> list[bytes]:
    """Bottom layer: busybox plus files of many owners. Top layer: a whiteout, an opaque dir, a new file."""
    from corert.images.busybox import build_layer

    base = tarfile.open(fileobj=io.BytesIO(build_layer()))
    members = [(m, base.extractfile(m).read() if m.isreg() else b"") for m in base.getmembers()]
    members += [
        _member("srv/", tarfile.DIRTYPE, 0o755),
        _member("srv/www/", tarfile.DIRTYPE, 0o755, 33, 33),
        _member("srv/www/index.html", tarfile.REGTYPE, 0o644, 33, 33, b"hello\n"),
        _member("srv/www/private/", tarfile.DIRTYPE, 0o700, 33, 33),
        _member("srv/www/private/key", tarfile.REGTYPE, 0o600, 33, 33, b"secret\n"),
        _member("nobody", tarfile.REGTYPE, 0o644, 65534, 65534, b"n\n"),
        _member("gone", tarfile.REGTYPE, 0o644, 33, 33, b"deleted by the upper layer\n"),
        _member("cache/", tarfile.DIRTYPE, 0o755, 33, 33),
        _member("cache/old", tarfile.REGTYPE, 0o644, 33, 33, b"hidden by the opaque marker\n"),
        _member("usr/bin/setuid-tool", tarfile.REGTYPE, 0o4755, 0, 0, b"#!/bin/sh\n"),
        _member("bigid", tarfile.REGTYPE, 0o640, 70000, 70000, b"b\n"),
        _capped("usr/bin/capped"),
        _member("devnode", tarfile.CHRTYPE, 0o666, 0, 0, devmajor=1, devminor=3),
    ]
    top = [
        _member(".wh.gone", tarfile.REGTYPE, 0o644),
        _member("cache/", tarfile.DIRTYPE, 0o755, 33, 33),
        _member("cache/.wh..wh..opq", tarfile.REGTYPE, 0o644),
        _member("cache/new", tarfile.REGTYPE, 0o644, 65534, 65534, b"new\n"),
    ]
    return [tar_bytes(members), tar_bytes(top)]


# ----- users -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_dir():
    """The image as an OCI layout in a world-readable dir (pytest's tmp dirs are private to root)."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="corert-owners-"))
    os.chmod(top, 0o755)
    path = top / "oci"
    layers = owners_layers()
    write_oci_layout(path, layers, config=image_config(layers, full=False), gzip_layers=False, ref="1",
                     ref_key="org.opencontainers.image.ref.name")
    for dirpath, _, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    yield path
    shutil.rmtree(top)


@pytest.fixture(scope="module")
def user():
    entry = make_test_user(USER, f"{SUBUID_START}:65536")
    yield entry
    remove_test_user(USER)


@pytest.fixture(scope="module")
def spy():
    """A stand-in for /usr/bin/fusermount3 that only records that it was called, and fails."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="corert-spy-"))
    os.chmod(d, 0o777)
    script = d / "fusermount3"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {d / 'calls'}\nexit 1\n")
    os.chmod(script, 0o755)
    yield script
    shutil.rmtree(d)


def spy_calls(script: Path) -> str:
    calls = script.parent / "calls"
    return calls.read_text() if calls.exists() else ""


def assert_clean(entry) -> None:
    """clean_user's check (usable mid-test and in module fixtures), and no container state dir left behind."""
    assert_user_clean(entry)
    containers = Path(entry.pw_dir) / ".local/share/corert/containers"
    assert not containers.exists() or os.listdir(containers) == []


@pytest.fixture(scope="module")
def imported(user, image_dir):
    r = as_user(user, "image", "import", str(image_dir), "owners")
    assert r.returncode == 0, r.stderr
    yield user
    assert_clean(user)


def layer_dirs(entry, ref: str = "owners") -> list[Path]:
    r = as_user(entry, "image", "inspect", ref)
    assert r.returncode == 0, r.stderr
    return [Path(layer["path"]) for layer in json.loads(r.stdout)["layers"]]


# ----- the store -------------------------------------------------------------------------------------------

def test_layers_store_mapped_owners(imported):
    uid = imported.pw_uid
    bottom, top = layer_dirs(imported)

    def owner(path: Path) -> tuple[int, int]:
        st = os.lstat(path)
        return st.st_uid, st.st_gid

    assert owner(bottom / "srv/www") == (host_id(33), host_id(33))
    assert owner(bottom / "srv/www/private/key") == (host_id(33), host_id(33))
    assert owner(bottom / "nobody") == (host_id(65534), host_id(65534))
    assert owner(bottom / "bin/busybox") == (uid, imported.pw_gid)
    tool = os.lstat(bottom / "usr/bin/setuid-tool")
    assert (tool.st_uid, stat.S_IMODE(tool.st_mode)) == (uid, 0o4755)
    # outside the 65536-id map: stored as the user (root inside), the owner kept in the xattr
    assert owner(bottom / "bigid") == (uid, imported.pw_gid)
    assert os.getxattr(bottom / "bigid", "user.corert.owner") == b"70000:70000:640"
    assert not (bottom / "devnode").exists()     # no device nodes without CAP_MKNOD on the host
    # a file capability set in the user namespace: the kernel stores it (v3) for the namespace's root,
    # the user, which is the containers' root too
    assert os.getxattr(bottom / "usr/bin/capped", "security.capability") == \
        struct.pack("<6I", 0x03000001, 1 << 10, 0, 0, 0, uid)
    # the upper layer: a whiteout (char 0:0), an opaque dir in the userxattr form, a nobody-owned file
    wh = os.lstat(top / "gone")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(top / "cache", "user.overlay.opaque") == b"y"
    assert owner(top / "cache") == (host_id(33), host_id(33))
    assert owner(top / "cache/new") == (host_id(65534), host_id(65534))


SHOW = ("stat -c '%u:%g %a %n' /srv/www /srv/www/index.html /srv/www/private/key /nobody "
        "/usr/bin/setuid-tool /bigid /cache/new; ls /cache; test -e /gone && echo gone-is-there; "
        "echo more >> /srv/www/index.html && stat -c 'after %u:%g %s' /srv/www/index.html; "
        "cat /srv/www/private/key; chown 65534:33 /nobody && stat -c 'chowned %u:%g' /nobody")

EXPECTED = [
    "33:33 755 /srv/www",
    "33:33 644 /srv/www/index.html",
    "33:33 600 /srv/www/private/key",
    "65534:65534 644 /nobody",
    "0:0 4755 /usr/bin/setuid-tool",
    "0:0 640 /bigid",
    "65534:65534 644 /cache/new",
    "new",
    "after 33:33 11",
    "secret",
    "chowned 65534:33",
]


@pytest.mark.parametrize("storage", ["overlay", "fuse", "vfs"])
def test_container_sees_image_owners(imported, fuse_open, spy, storage):
    r = as_user(imported, "run", "--rm", f"--storage={storage}", "owners", "sh", "-c", SHOW, spy=spy)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == EXPECTED
    assert spy_calls(spy) == "", "the rootless FUSE mount went through fusermount3"
    assert_clean(imported)


def test_fuse_detached_copy_up_and_rm(imported, fuse_open, spy):
    """A detached FUSE container: the daemon outlives `run -d`, copy-ups keep owners, `rm` leaves nothing."""
    r = as_user(imported, "run", "-d", "--name", "web", "--storage=fuse", "owners", "sh", "-c",
                "echo x >> /srv/www/private/key; touch /srv/www/made; sleep 1000", spy=spy)
    assert r.returncode == 0, r.stderr
    e = as_user(imported, "exec", "web", "sh", "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10; do test -e /srv/www/made && break; sleep 0.2; done; "
                "stat -c '%u:%g %s' /srv/www/private/key /srv/www/made", spy=spy)
    assert e.returncode == 0, e.stderr
    assert e.stdout.split("\n")[:2] == ["33:33 9", "0:0 0"]
    # on disk the copy-up belongs to the mapped www-data
    upper = next(Path(imported.pw_dir, ".local/share/corert/containers").glob("*/storage/upper"))
    assert os.lstat(upper / "srv/www/private/key").st_uid == host_id(33)
    assert as_user(imported, "rm", "-f", "web", spy=spy).returncode == 0
    assert spy_calls(spy) == ""
    assert_clean(imported)


@pytest.mark.parametrize("storage", ["overlay", "fuse", "vfs"])
def test_diff_and_commit_keep_owners(imported, fuse_open, storage):
    """The upper dir, or vfs's copy, (files of www-data in a 0700 dir of www-data) is read inside the user
    namespace: the diff lists it and the committed layer records the container's ids, which the next unpack
    restores."""
    script = ("rm /nobody; echo v2 > /srv/www/private/key; touch /srv/www/private/new; "
              "chown 33:33 /srv/www/private/new; chmod 0640 /srv/www/private/new")
    r = as_user(imported, "run", "--name", "c1", f"--storage={storage}", "owners", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    d = as_user(imported, "diff", "c1")
    assert d.returncode == 0, d.stderr
    assert {"D /nobody", "C /srv/www/private/key", "A /srv/www/private/new"} <= set(d.stdout.splitlines())
    c = as_user(imported, "commit", "c1", f"owners-{storage}")
    assert c.returncode == 0, c.stderr
    assert as_user(imported, "rm", "c1").returncode == 0
    r = as_user(imported, "run", "--rm", f"--storage={storage}", f"owners-{storage}", "sh", "-c",
                "stat -c '%u:%g %a %n' /srv/www/private /srv/www/private/key /srv/www/private/new; "
                "cat /srv/www/private/key; test -e /nobody || echo nobody-gone")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["33:33 700 /srv/www/private", "33:33 600 /srv/www/private/key",
                                     "33:33 640 /srv/www/private/new", "v2", "nobody-gone"]
    assert as_user(imported, "image", "rm", f"owners-{storage}").returncode == 0
    assert_clean(imported)


def test_image_rm_removes_mapped_layers(imported, image_dir):
    r = as_user(imported, "image", "import", str(image_dir), "owners-copy")
    assert r.returncode == 0, r.stderr
    bottom = layer_dirs(imported, "owners-copy")[0]
    assert as_user(imported, "image", "rm", "owners-copy").returncode == 0
    assert bottom.exists()          # still used by `owners`
    assert as_user(imported, "image", "rm", "owners").returncode == 0
    assert not bottom.exists()      # files of subordinate ids were removed (inside the user namespace)
    store = Path(imported.pw_dir, ".local/share/corert")
    assert os.listdir(store / "layers") == [] and os.listdir(store / "tmp") == []
    assert as_user(imported, "image", "import", str(image_dir), "owners").returncode == 0   # for the others


# ----- single-id map: the documented fallback -------------------------------------------------------------

def test_single_id_map_keeps_owner_in_xattr(image_dir, fuse_open):
    entry = make_test_user(USER_NOSUB, None)
    try:
        r = as_user(entry, "image", "import", str(image_dir), "owners")
        assert r.returncode == 0, r.stderr
        bottom = layer_dirs(entry)[0]
        st = os.lstat(bottom / "srv/www/index.html")
        assert (st.st_uid, st.st_gid) == (entry.pw_uid, entry.pw_gid)
        assert os.getxattr(bottom / "srv/www/index.html", "user.corert.owner") == b"33:33:644"
        # only root exists in the container: every file shows as root (the limit `run` notes once)
        stderr = ""
        for storage in ("overlay", "fuse"):
            r = as_user(entry, "run", "--rm", f"--storage={storage}", "owners", "sh", "-c",
                        "stat -c %u:%g /srv/www/index.html; echo x >> /srv/www/index.html && echo written")
            assert r.returncode == 0, r.stderr
            assert r.stdout.split() == ["0:0", "written"]
            stderr += r.stderr
        assert stderr.count("single-id") == 1 and "/etc/subuid" in stderr   # said once per state root
        assert_clean(entry)
    finally:
        remove_test_user(USER_NOSUB)


# ----- the user-namespace helper and a crashing daemon ----------------------------------------------------

HELPER = """
import os
from corert.errors import ConfigError, ImageError
from corert.rootless import full_id_maps, run_in_userns
maps = full_id_maps()
print(run_in_userns(maps, lambda: (os.getuid(), os.getgid(), open('/proc/self/uid_map').read().split())))
def boom(kind):
    raise ImageError('bad layer') if kind == 'image' else ConfigError('a.b', 'unpicklable args')
for kind in ('image', 'config'):
    try:
        run_in_userns(maps, boom, kind)
    except Exception as e:
        print(type(e).__name__, e)
"""


def test_run_in_userns_returns_and_raises(user):
    python = os.path.join(os.path.dirname(CORERT), "python")
    r = run_as_user(user, python, "-c", HELPER, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"(0, 0, ['0', '{user.pw_uid}', '1', '1', '{SUBUID_START}', '65535'])",
        "ImageError bad layer",
        "ResourceError a.b: unpicklable args",
    ]
    assert user_processes(user.pw_uid, settle=5) == []   # a process still exiting is given time


def test_fuse_daemon_killed_gives_errors_not_a_hang(imported, fuse_open):
    r = as_user(imported, "run", "-d", "--name", "crash", "--storage=fuse", "owners", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    daemons = [line.split()[0] for line in user_processes(imported.pw_uid) if "corert.drivers.storage.fuse" in line]
    assert len(daemons) == 1
    os.kill(int(daemons[0]), 9)
    e = as_user(imported, "exec", "crash", "cat", "/srv/www/index.html", timeout=60)
    assert e.returncode != 0 and e.stdout == ""
    assert as_user(imported, "rm", "-f", "crash", timeout=60).returncode == 0
    assert_clean(imported)
