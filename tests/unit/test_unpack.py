"""The safe layer unpacker and the overlay-form <-> OCI tar conversion, on real files and real tars.

Runs unprivileged (rootless mode: user.* xattrs, whiteout char devices, owner records); the checks that
need root (trusted.* xattrs, chown, setuid, capabilities) are in tests/integration/test_images.py, and one
test re-runs the unpacker as `nobody` when the suite itself runs as root.
"""
from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from corert.errors import ImageError
from corert.images import layout
from corert.images.tarwriter import write_layer_tar
from corert.fsutil import remove_tree
from corert.images.unpack import split_path, unpack_layer
from support import make_tar


def unpack(data: bytes, dest: Path, *, rootless: bool = True):
    dest.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return unpack_layer(io.BytesIO(data), fd, rootless=rootless)
    finally:
        os.close(fd)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def area(tmp_path):
    """layer dir + an 'outside' dir that hostile tars aim at; the outside must stay untouched."""
    layer = tmp_path / "layer"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    yield layer, outside
    remove_tree(tmp_path / "layer")


def assert_outside_untouched(outside: Path) -> None:
    assert tree(outside) == {"keep"}
    assert (outside / "keep").read_text() == "keep"


# ---- path handling ----------------------------------------------------------------------------------------
def test_split_path_strips_root_and_dots_and_refuses_dotdot():
    assert split_path("/etc/passwd") == ["etc", "passwd"]
    assert split_path("./a//b/./c/") == ["a", "b", "c"]
    assert split_path("./") == []
    for bad in ("../x", "a/../../x", "a/.."):
        with pytest.raises(ImageError, match=r"\.\."):
            split_path(bad)


# ---- overlay form ----------------------------------------------------------------------------------------
def test_whiteouts_and_opaque_dirs_become_overlay_form(area):
    layer, _ = area
    data = make_tar([
        ("dir", "etc"), ("file", "etc/.wh.gone"), ("dir", "var/lib/app"),
        ("file", "var/lib/app/.wh..wh..opq"), ("file", "var/lib/app/new", {"data": b"n"}),
        ("file", ".wh.toplevel"), ("file", "etc/.wh..wh.plnk"),
    ])
    res = unpack(data, layer, rootless=True)
    st = os.lstat(layer / "etc/gone")
    assert layout.is_whiteout(st) and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert layout.is_whiteout(os.lstat(layer / "toplevel"))
    assert os.getxattr(layer / "var/lib/app", layout.OPAQUE_XATTR_ROOTLESS) == b"y"
    assert layout.is_opaque_dir(layer / "var/lib/app") and not layout.is_opaque_dir(layer / "etc")
    assert (layer / "var/lib/app/new").read_bytes() == b"n"
    # no `.wh.` names survive; the aufs-only entry is dropped with a note
    assert not [p for p in tree(layer) if ".wh." in p]
    assert any("plnk" in n for n in res.notes)


def test_whiteout_replaces_an_entry_of_the_same_layer(area):
    layer, _ = area
    unpack(make_tar([("dir", "d"), ("file", "d/x"), ("file", ".wh.d")]), layer)
    assert layout.is_whiteout(os.lstat(layer / "d"))


def test_is_whiteout_rejects_other_devices_and_files(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    assert not layout.is_whiteout(os.lstat(f))
    assert not layout.is_whiteout(os.stat("/dev/null"))  # char 1:3


def test_metadata_modes_mtimes_and_readonly_dirs(area):
    layer, _ = area
    data = make_tar([
        ("dir", "ro", {"mode": 0o555, "mtime": 1_000_000}),
        ("file", "ro/f", {"mode": 0o400, "data": b"abc", "mtime": 2_000_000}),
        ("dir", "ro/sub", {"mode": 0o500, "mtime": 3_000_000}),
        ("file", "ro/sub/g", {"mode": 0o751, "data": b"g"}),
        ("sym", "ro/link", {"target": "/nonexistent/target", "mtime": 4_000_000}),
        ("fifo", "ro/pipe", {"mode": 0o640}),
        ("dir", "./", {"mode": 0o711, "mtime": 5_000_000}),
    ])
    res = unpack(data, layer)
    assert stat.S_IMODE(os.stat(layer / "ro").st_mode) == 0o555
    assert os.stat(layer / "ro").st_mtime == 1_000_000  # applied after the children were written
    assert stat.S_IMODE(os.stat(layer / "ro/f").st_mode) == 0o400
    assert os.stat(layer / "ro/f").st_mtime == 2_000_000
    assert stat.S_IMODE(os.stat(layer / "ro/sub").st_mode) == 0o500
    assert (layer / "ro/sub/g").read_bytes() == b"g"
    assert os.readlink(layer / "ro/link") == "/nonexistent/target"  # written as a symlink, not followed
    assert os.lstat(layer / "ro/link").st_mtime == 4_000_000
    assert stat.S_ISFIFO(os.lstat(layer / "ro/pipe").st_mode)
    assert stat.S_IMODE(os.stat(layer).st_mode) == 0o711 and os.stat(layer).st_mtime == 5_000_000
    assert res.size == 4


def test_rootless_records_non_root_owner_only(area):
    layer, _ = area
    unpack(make_tar([("file", "mine", {"uid": 1000, "gid": 100, "mode": 0o640}),
                     ("file", "roots", {"mode": 0o644}),
                     ("dir", "home", {"uid": 1000, "gid": 1000, "mode": 0o500})]), layer, rootless=True)
    assert os.getxattr(layer / "mine", layout.OWNER_XATTR) == b"1000:100:640"
    assert os.getxattr(layer / "home", layout.OWNER_XATTR) == b"1000:1000:500"
    with pytest.raises(OSError):
        os.getxattr(layer / "roots", layout.OWNER_XATTR)
    assert os.stat(layer / "mine").st_uid == os.geteuid()


def test_rootless_skips_devices_with_a_note(area):
    layer, _ = area
    res = unpack(make_tar([("chr", "dev/null", {"dev": (1, 3)}), ("blk", "dev/sda", {"dev": (8, 0)}),
                           ("chr", "wh", {"dev": (0, 0)})]), layer, rootless=True)
    assert not (layer / "dev/null").exists() and not (layer / "dev/sda").exists()
    assert sum("device node" in n for n in res.notes) == 2
    assert layout.is_whiteout(os.lstat(layer / "wh"))  # a 0:0 char device is a whiteout: allowed


def test_reserved_xattrs_from_the_tar_are_dropped(area):
    layer, _ = area
    res = unpack(make_tar([("dir", "d", {"xattrs": {"user.overlay.opaque": b"y", "user.keep": b"v"}}),
                           ("file", "f", {"xattrs": {"user.corert.owner": b"0:0:4755"}})]), layer)
    assert not layout.is_opaque_dir(layer / "d")  # a tar cannot forge an opaque dir or an owner record
    assert os.getxattr(layer / "d", "user.keep") == b"v"
    assert os.listxattr(layer / "f") == []
    assert sum("reserved" in n for n in res.notes) == 2


def test_duplicate_entries_later_wins(area):
    layer, _ = area
    unpack(make_tar([("file", "x", {"data": b"1"}), ("file", "x", {"data": b"22"}),
                     ("dir", "y"), ("file", "y/inner"), ("file", "y", {"data": b"file now"}),
                     ("sym", "z", {"target": "x"}), ("dir", "z")]), layer)
    assert (layer / "x").read_bytes() == b"22"
    assert (layer / "y").read_bytes() == b"file now"
    assert (layer / "z").is_dir() and not (layer / "z").is_symlink()


def test_hardlinks_inside_the_layer(area):
    layer, _ = area
    unpack(make_tar([("file", "a/orig", {"data": b"same"}), ("link", "b/copy", {"target": "a/orig"}),
                     ("link", "/c", {"target": "/a/orig"})]), layer)
    assert os.stat(layer / "a/orig").st_ino == os.stat(layer / "b/copy").st_ino == os.stat(layer / "c").st_ino
    assert os.stat(layer / "a/orig").st_nlink == 3


def test_absolute_paths_land_inside_the_layer(area):
    layer, outside = area
    unpack(make_tar([("file", str(outside / "abs"), {"data": b"in"})]), layer)
    assert (layer / str(outside / "abs").lstrip("/")).read_bytes() == b"in"
    assert_outside_untouched(outside)


# ---- hostile archives --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["symlink-dir-then-file", "symlink-then-deeper-file", "dotdot", "dotdot-deep",
                                  "hardlink-passwd", "hardlink-dotdot", "hardlink-through-symlink",
                                  "whiteout-dotdot", "opaque-through-symlink"])
def test_malicious_tars_write_nothing_outside(area, case):
    layer, outside = area
    target_rel = os.path.relpath(outside, layer)  # e.g. ../outside
    entries = {
        "symlink-dir-then-file": [("sym", "a", {"target": str(outside)}), ("file", "a/evil", {"data": b"x"})],
        "symlink-then-deeper-file": [("sym", "a", {"target": str(outside)}), ("file", "a/sub/evil")],
        "dotdot": [("file", f"{target_rel}/evil")],
        "dotdot-deep": [("file", "a/b/../../../../evil")],
        "hardlink-passwd": [("link", "passwd", {"target": "/etc/passwd"})],
        "hardlink-dotdot": [("link", "keep", {"target": f"{target_rel}/keep"})],
        "hardlink-through-symlink": [("sym", "a", {"target": str(outside)}), ("link", "k", {"target": "a/keep"})],
        "whiteout-dotdot": [("file", f"{target_rel}/.wh.keep")],
        "opaque-through-symlink": [("sym", "a", {"target": str(outside)}), ("file", "a/.wh..wh..opq")],
    }[case]
    passwd_links = os.stat("/etc/passwd").st_nlink
    with pytest.raises(ImageError):
        unpack(make_tar(entries), layer)
    assert_outside_untouched(outside)
    assert not layout.is_opaque_dir(outside)
    assert os.stat("/etc/passwd").st_nlink == passwd_links
    assert not (layer / "passwd").exists()


def test_symlink_targets_are_never_followed_when_creating(area):
    """A symlink pointing outside stays a symlink; a later *file* of the same name replaces the link."""
    layer, outside = area
    unpack(make_tar([("sym", "keep", {"target": str(outside / "keep")}), ("file", "keep", {"data": b"mine"})]),
           layer)
    assert (layer / "keep").read_bytes() == b"mine" and not (layer / "keep").is_symlink()
    assert_outside_untouched(outside)


def test_corrupt_and_empty_streams(area):
    layer, _ = area
    assert unpack(b"", layer).size == 0
    good = make_tar([("file", "f", {"data": b"x" * 5000})])
    with pytest.raises(ImageError):
        unpack(good[:1500], layer / "trunc")


# ---- overlay form -> OCI tar ---------------------------------------------------------------------------
def test_tarwriter_restores_oci_whiteouts_and_owner(area, tmp_path):
    layer, _ = area
    original = make_tar([
        ("dir", "etc"), ("file", "etc/.wh.gone"), ("dir", "opq"), ("file", "opq/.wh..wh..opq"),
        ("file", "opq/kept", {"data": b"k", "uid": 1000, "gid": 1000, "mode": 0o600}),
        ("file", "hl1", {"data": b"h"}), ("link", "hl2", {"target": "hl1"}), ("sym", "s", {"target": "hl1"}),
        ("file", "x", {"xattrs": {"user.note": b"\x00\xffbin"}}),
    ])
    unpack(original, layer, rootless=True)
    out = _layer_tar(layer, tmp_path / "out.tar")
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert "etc/.wh.gone" in members and members["etc/.wh.gone"].isreg()
    assert "opq/.wh..wh..opq" in members
    kept = members["opq/kept"]
    assert (kept.uid, kept.gid, kept.mode) == (1000, 1000, 0o600)  # from the owner record
    assert members["hl1"].uid == 0  # the user's own files are root in the container
    assert members["hl2"].islnk() and members["hl2"].linkname == "hl1"
    assert members["s"].issym() and members["s"].linkname == "hl1"
    assert members["x"].pax_headers["SCHILY.xattr.user.note"].encode("utf-8", "surrogateescape") == b"\x00\xffbin"
    assert not any(k.startswith("SCHILY.xattr.user.corert") or "overlay" in k
                   for m in members.values() for k in m.pax_headers)
    # deterministic: the same tree gives the same bytes
    assert _layer_tar(layer, tmp_path / "again.tar") == out
    # and it unpacks back to the same overlay form
    back = tmp_path / "back"
    unpack(out, back, rootless=True)
    assert layout.is_whiteout(os.lstat(back / "etc/gone")) and layout.is_opaque_dir(back / "opq")
    remove_tree(back)


def _layer_tar(layer: Path, path: Path) -> bytes:
    """write_layer_tar's output: into a regular file, as the store gives it (unprivileged with subordinate
    ids, a user-namespace child writes through its fd)."""
    with open(path, "xb") as f:
        write_layer_tar(layer, f, overlay_form=True, rootless=True)
    return path.read_bytes()


# ---- really unprivileged ---------------------------------------------------------------------------------
_AS_NOBODY = r"""
import io, os, stat, sys
from corert.fsutil import remove_tree
from corert.images.unpack import unpack_layer
from corert.images import layout
data = sys.stdin.buffer.read()
layer = sys.argv[1]
os.mkdir(layer)
fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY)
res = unpack_layer(io.BytesIO(data), fd, rootless=True)
os.close(fd)
assert layout.is_whiteout(os.lstat(layer + "/wh")), "whiteout"
assert os.getxattr(layer + "/opq", "user.overlay.opaque") == b"y", "opaque"
assert stat.S_IMODE(os.stat(layer + "/ro").st_mode) == 0o555
assert os.getxattr(layer + "/ro", layout.OWNER_XATTR) == b"5:6:555", "owner on read-only dir"
assert not os.path.exists(layer + "/null") and any("device" in n for n in res.notes)
remove_tree(layer)
assert not os.path.exists(layer)
print("ok")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody (the rest of this file runs as is)")
def test_unpack_as_nobody_for_real():
    data = make_tar([("chr", ".wh.x"), ("file", ".wh.wh"), ("dir", "opq"), ("file", "opq/.wh..wh..opq"),
                     ("dir", "ro", {"mode": 0o555, "uid": 5, "gid": 6}), ("file", "ro/f", {"data": b"1"}),
                     ("chr", "null", {"dev": (1, 3)})])
    base = Path(tempfile.mkdtemp(prefix="corert-test-unpack-"))
    try:
        os.chown(base, 65534, 65534)
        r = subprocess.run([sys.executable, "-c", _AS_NOBODY, str(base / "layer")], input=data,
                           capture_output=True, user=65534, group=65534, extra_groups=[], timeout=60,
                           env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout.strip() == b"ok"
    finally:
        remove_tree(base)
