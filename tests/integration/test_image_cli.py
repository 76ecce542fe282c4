"""`corert image ...` through the installed CLI: import of every format made here with tarfile, ls, tag,
inspect, export (re-importable), rm (refused while a container uses the image), hostile layers refused
with nothing written anywhere, and bad input that leaves the store exactly as it was.
"""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from integration.test_images import LAYER1, LAYER2
from support import Front, make_tar, sha, write_docker_archive, write_oci_layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")


def names(front: Front) -> dict[str, str]:
    """REPOSITORY:TAG -> short id, from `corert images`."""
    rows = [line.split() for line in front.ok("images").splitlines()[1:]]
    return {row[0]: row[1] for row in rows}


def store_files(front: Front) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(front.data / sub)) for sub in ("layers", "blobs/sha256", "tmp")}


def test_import_formats_ls_tag_inspect(front, tmp_path):
    t1, t2 = make_tar(LAYER1), make_tar(LAYER2)
    write_oci_layout(tmp_path / "oci", [t1, t2], ref="example.com/multi:2")
    oci_id = front.ok("image", "import", str(tmp_path / "oci")).strip()
    write_docker_archive(tmp_path / "saved.tar", [t1], tags=("saved:v1",))
    docker_id = front.ok("image", "import", str(tmp_path / "saved.tar")).strip()
    (tmp_path / "rootfs.tar").write_bytes(t1)
    rootfs_id = front.ok("image", "import", str(tmp_path / "rootfs.tar"), "plain:1").strip()
    assert len({oci_id, docker_id, rootfs_id}) == 3
    assert names(front) == {"example.com/multi:2": oci_id[:12], "saved:v1": docker_id[:12],
                            "plain:1": rootfs_id[:12]}
    # the shared bottom layer is unpacked once
    assert len(store_files(front)["layers"]) == 2
    front.ok("image", "tag", "saved:v1", "again:latest")
    assert names(front)["again:latest"] == docker_id[:12]
    for ref in ("again", "saved:v1", docker_id[:10], "sha256:" + docker_id):
        info = json.loads(front.ok("image", "inspect", ref))
        assert info["id"] == docker_id and info["names"] == ["again:latest", "saved:v1"]
    info = json.loads(front.ok("image", "inspect", "example.com/multi:2"))
    assert [lay["diff_id"] for lay in info["layers"]] == [sha(t) for t in (t1, t2)]
    assert info["config"]["Cmd"] == ["sh"] and info["containers"] == []
    # removing one of two names only untags
    front.ok("image", "rm", "again")
    assert "again:latest" not in names(front) and "saved:v1" in names(front)
    front.ok("image", "rm", "example.com/multi:2", "saved:v1", "plain:1")
    assert names(front) == {}
    assert store_files(front) == {"layers": [], "blobs/sha256": [], "tmp": []}
    front.assert_clean()


@pytest.mark.parametrize("dest", ["exported.tar", "exported-dir"])
def test_export_and_reimport_give_the_same_image(front, tmp_path, dest):
    image_id = front.ok("image", "ensure-default").strip()
    front.ok("image", "export", "busybox", str(tmp_path / dest))
    if dest.endswith(".tar"):
        with tarfile.open(tmp_path / dest) as tf:
            assert {"oci-layout", "index.json"} <= set(tf.getnames())
    else:
        assert (tmp_path / dest / "oci-layout").is_file()
    front.ok("image", "rm", "busybox")
    assert names(front) == {}
    assert front.ok("image", "import", str(tmp_path / dest), "again:1").strip() == image_id
    assert front.ok("run", "--rm", "again:1", "echo", "round-trip") == "round-trip\n"
    front.ok("image", "rm", "again:1")
    front.assert_clean()


def test_rm_refused_while_a_container_uses_the_image(front, tmp_path):
    front.ok("run", "--name", "user", "busybox", "true")   # stopped, not removed: still a user
    r = front("image", "rm", "busybox")
    assert r.returncode == 125 and "in use" in r.stderr
    assert "busybox:latest" in names(front)
    cid = json.loads(front.ok("image", "inspect", "busybox"))["containers"]
    assert len(cid) == 1 and front.ps("-a")[0]["CONTAINER ID"] == cid[0][:12]
    front.ok("rm", "user")
    front.ok("image", "rm", "busybox")
    assert store_files(front) == {"layers": [], "blobs/sha256": [], "tmp": []}
    front.assert_clean()


HOSTILE = {
    "dotdot": lambda outside: [("file", "../../../evil", {"data": b"x"})],
    "absolute": lambda outside: [("file", str(outside / "evil"), {"data": b"x"})],
    "symlink-then-write": lambda outside: [("sym", "a", {"target": str(outside)}), ("file", "a/evil", {"data": b"x"})],
    "relative-symlink-escape": lambda outside: [("sym", "up", {"target": "../../../../../../../.."}),
                                                ("file", "up" + str(outside) + "/evil", {"data": b"x"})],
    "hardlink-outside": lambda outside: [("link", "passwd", {"target": "/etc/passwd"})],
    "hardlink-dotdot": lambda outside: [("link", "passwd", {"target": "../../../../etc/passwd"})],
}


# Neutralised rather than refused: the leading "/" is dropped, the file lands inside the layer.
NEUTRALISED = {"absolute"}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("wrapper", ["rootfs-tar", "docker-archive", "oci-layout"])
def test_hostile_layers_are_refused_with_nothing_written(front, tmp_path, kind, wrapper):
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = make_tar(HOSTILE[kind](outside))
    if wrapper == "rootfs-tar":
        src = tmp_path / "evil.tar"
        src.write_bytes(layer)
    elif wrapper == "docker-archive":
        src = tmp_path / "evil-saved.tar"
        write_docker_archive(src, [layer], tags=("evil:1",))
    else:
        src = tmp_path / "evil-oci"
        write_oci_layout(src, [layer], ref="evil:1")
    passwd = os.stat("/etc/passwd")
    front.ok("image", "ensure-default")
    before = store_files(front)
    r = front("image", "import", str(src), "evil:1")
    assert os.listdir(outside) == []
    assert not Path("/evil").exists() and not (tmp_path / "evil").exists()
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink
    if kind in NEUTRALISED:
        assert r.returncode == 0, r.stderr
        [layer] = json.loads(front.ok("image", "inspect", "evil:1"))["layers"]
        assert Path(layer["path"], str(outside).lstrip("/"), "evil").read_bytes() == b"x"
        front.ok("image", "rm", "evil:1")
    else:
        assert r.returncode == 125, r.stdout + r.stderr
    assert names(front) == {"busybox:latest": names(front)["busybox:latest"]}
    assert store_files(front) == before
    front.assert_clean()


@pytest.mark.parametrize("args", [
    ["image", "import", "/nonexistent/corert-image.tar"],
    ["image", "import", "{garbage}"],
    ["image", "import", "{garbage}", "Bad Name"],
    ["image", "tag", "nosuch", "x:1"],
    ["image", "tag", "busybox", "sha256:x"],
    ["image", "inspect", "nosuch"],
    ["image", "rm", "nosuch"],
    ["image", "export", "nosuch", "{dest}"],
    ["image", "frobnicate"],
    ["image"],
])
def test_bad_image_commands_leave_the_store_unchanged(front, tmp_path, args):
    (tmp_path / "garbage").write_bytes(b"this is not an image\n" * 100)
    args = [a.format(garbage=tmp_path / "garbage", dest=tmp_path / "dest") for a in args]
    front.ok("image", "ensure-default")
    before, listed = store_files(front), names(front)
    r = front(*args)
    assert r.returncode == 125 and r.stderr.startswith("corert: ") and len(r.stderr.splitlines()) == 1
    assert store_files(front) == before and names(front) == listed
    assert not (tmp_path / "dest").exists()
    front.assert_clean()
