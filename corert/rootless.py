"""Rootless mode: what an unprivileged user's containers get, and what the host must offer for it.

Root inside the container maps to the user outside. With a range in /etc/subuid and /etc/subgid and the
setuid helpers newuidmap/newgidmap (Debian `uidmap`), the container gets a full 65536-id map; otherwise a
single-id map, which still runs most images but leaves every other id unmapped (files owned by them show
as nobody, and setgroups is denied).
"""
from __future__ import annotations

import os
import pwd
import shutil

from corert.errors import HostUnsupported

FULL_MAP_SIZE = 65536


def subid_ranges(path: str, *names: str) -> list[tuple[int, int]]:
    """[(start, count)] of the entries for any of `names` (user names or uids) in an /etc/subuid-format
    file, in file order."""
    ranges = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit():
                    ranges.append((int(parts[1]), int(parts[2])))
    except OSError:
        pass
    return ranges


def id_mappings() -> tuple[list[dict], list[dict], str | None]:
    """(uidMappings, gidMappings, note): the widest map this user may have, and a note when it is narrow."""
    uid, gid = os.geteuid(), os.getegid()
    single_u = [{"containerID": 0, "hostID": uid, "size": 1}]
    single_g = [{"containerID": 0, "hostID": gid, "size": 1}]
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:   # no readable passwd entry: trust the login environment (subid files match names)
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(uid)
    subuid = next(iter(subid_ranges("/etc/subuid", user, str(uid))), None)
    subgid = next(iter(subid_ranges("/etc/subgid", user, str(uid))), None)
    helpers = shutil.which("newuidmap", path="/usr/bin:/bin") and shutil.which("newgidmap", path="/usr/bin:/bin")
    if subuid and subgid and helpers:
        size_u = min(subuid[1], FULL_MAP_SIZE - 1)
        size_g = min(subgid[1], FULL_MAP_SIZE - 1)
        return (single_u + [{"containerID": 1, "hostID": subuid[0], "size": size_u}],
                single_g + [{"containerID": 1, "hostID": subgid[0], "size": size_g}], None)
    if not (subuid and subgid):
        why = f"no range for {user} in /etc/subuid and /etc/subgid (fix: `usermod --add-subuids 100000-165535 " \
              f"--add-subgids 100000-165535 {user}` as root)"
    else:
        why = "newuidmap/newgidmap are missing (fix: install Debian's `uidmap` package)"
    note = (f"rootless: single-id user namespace, only uid/gid 0 exist in the container: {why}")
    return single_u, single_g, note


def check_host(storage: str | None) -> None:
    """Refuse early, with the fix, when the host cannot give this user a container."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read()) == 0:
                raise HostUnsupported("user namespaces are disabled (fix: `sysctl -w user.max_user_namespaces=15000` as root)")
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0":
                raise HostUnsupported("unprivileged user namespaces are disabled "
                                      "(fix: `sysctl -w kernel.unprivileged_userns_clone=1` as root)")
    except OSError:
        pass
    if storage == "fuse":
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            raise HostUnsupported("/dev/fuse is not accessible to you (fix: `chmod 0666 /dev/fuse` as root, "
                                  "the usual mode, or use --storage=overlay)")
        if not shutil.which("fusermount3", path="/usr/bin:/bin"):
            raise HostUnsupported("fusermount3 is missing (fix: install Debian's `fuse3` package)")
