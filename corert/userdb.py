"""The image's /etc/passwd and /etc/group, read without following links out of the rootfs."""
from __future__ import annotations

import os


def _entries(rootfs: str, name: str) -> list[list[str]]:
    path = os.path.join(rootfs, "etc", name)
    real = os.path.realpath(path)
    if not real.startswith(os.path.realpath(rootfs) + os.sep):
        return []
    try:
        with open(real, errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def passwd(rootfs: str) -> list[list[str]]:
    """name:x:uid:gid:gecos:home:shell rows (only rows with all seven fields)."""
    return [e for e in _entries(rootfs, "passwd") if len(e) >= 7]


def group(rootfs: str) -> list[list[str]]:
    return [e for e in _entries(rootfs, "group") if len(e) >= 3]


def home_of(rootfs: str, uid: int) -> str:
    """runc's HOME when the config sets none: the user's home, else /."""
    for e in passwd(rootfs):
        if e[2] == str(uid):
            return e[5] or "/"
    return "/"
