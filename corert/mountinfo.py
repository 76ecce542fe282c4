"""The one /proc/PID/mountinfo parser (storage and cgroup drivers both read the mount table).

Only builtins: it sits on the OCI CLI hot path (delete unmounts a rootfs, cgroup setup finds hierarchies).
"""
from __future__ import annotations

SELF = "/proc/self/mountinfo"


class Mount:
    """One mountinfo line. root, mount_point and source are unescaped; super_options are kept as the kernel
    wrote them (comma separated, still escaped) because callers only look for plain option words."""

    __slots__ = ("root", "mount_point", "fstype", "source", "super_options")

    def __init__(self, root: str, mount_point: str, fstype: str, source: str, super_options: str) -> None:
        self.root = root
        self.mount_point = mount_point
        self.fstype = fstype
        self.source = source
        self.super_options = super_options


def unescape(field: str) -> str:
    """Undo the kernel's \\ooo octal escapes (space, tab, newline and backslash: "\\040" is " ")."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        digits = field[i + 1:i + 4]
        if field[i] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[Mount]:
    """Every well-formed line of a mountinfo text, in order (a malformed line is skipped)."""
    result = []
    for line in text.splitlines():
        # "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS"
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        tail = right.split(" ")  # single spaces: a mount's source may be the empty string
        if len(fields) < 5 or len(tail) < 3:
            continue
        result.append(Mount(unescape(fields[3]), unescape(fields[4]), tail[0], unescape(tail[1]), tail[2]))
    return result


def read(path: str = SELF) -> list[Mount]:
    """The mounts of a mountinfo file (default: this process's mount namespace); OSError if unreadable."""
    with open(path) as f:
        return parse(f.read())
