"""corert.mountinfo: the one mountinfo parser the storage and cgroup drivers share."""
from __future__ import annotations

from corert import mountinfo

TEXT = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    "40 22 0:37 /sub /mnt/with\\040space\\134x rw - overlay overlay rw,lowerdir=/a\\054b\n"
    "41 22 0:38 / /mnt/nosource rw - tmpfs  rw,size=64k\n"
    "this line is not mountinfo\n"
    "42 22 0:39 / /mnt/short rw - fuse\n"
)


def test_parse_fields_escapes_and_bad_lines() -> None:
    mounts = mountinfo.parse(TEXT)
    assert [(m.root, m.mount_point, m.fstype, m.source, m.super_options) for m in mounts] == [
        ("/", "/", "ext4", "/dev/sda1", "rw,errors=remount-ro"),
        # root, mount point and source are unescaped; super options stay as the kernel wrote them
        ("/sub", "/mnt/with space\\x", "overlay", "overlay", "rw,lowerdir=/a\\054b"),
        ("/", "/mnt/nosource", "tmpfs", "", "rw,size=64k"),
    ]


def test_unescape_leaves_non_octal_backslashes() -> None:
    assert mountinfo.unescape("a\\040b") == "a b"
    assert mountinfo.unescape("a\\04") == "a\\04"
    assert mountinfo.unescape("a\\xyz") == "a\\xyz"


def test_read_self_has_the_root_mount() -> None:
    assert "/" in {m.mount_point for m in mountinfo.read()}
