"""`--userns=auto`: map the container's ids 0..65535 to an unprivileged host range nobody else uses.

Where the range comes from, in order (podman's rule first, then a docker userns-remap-like fixed pool):
1. /etc/subuid and /etc/subgid entries of the user `containers` (podman's `--userns=auto` source);
2. otherwise a fixed pool of AUTO_SLOTS slots of 65536 ids starting at AUTO_POOL_START (0x70000000), far
   above any uid a distribution hands out and below the kernel's (uid_t)-1.
A slot is free when no live process on the host has a uid_map or gid_map overlapping it. Two containers
created at the very same instant may pick the same slot: they are still isolated from the host (the goal
of the option), only not from each other; pass explicit mappings in a bundle when that matters.
"""
from __future__ import annotations

import os

from corert.errors import CorertError

AUTO_SIZE = 65536
AUTO_USER = "containers"
AUTO_POOL_START = 0x70000000
AUTO_SLOTS = 1024


def _subid_ranges(path: str, user: str) -> list[tuple[int, int]]:
    """[(start, count)] of `user` (by name or uid) in an /etc/subuid-format file."""
    from corert.rootless import subid_ranges

    names = [user]
    try:
        import pwd
        names.append(str(pwd.getpwnam(user).pw_uid))
    except KeyError:
        pass
    return subid_ranges(path, *names)


def _used_host_ranges(map_name: str) -> list[tuple[int, int]]:
    """Host id ranges in `map_name` (uid_map/gid_map) of every live user namespace but the initial one."""
    used: set[tuple[int, int]] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{map_name}") as f:
                lines = f.read().split("\n")
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and not (parts[0] == "0" and parts[1] == "0" and parts[2] == "4294967295"):
                used.add((int(parts[1]), int(parts[2])))
    return sorted(used)


def auto_host_base(kind: str = "uid") -> int:
    """The first host id of a free 65536-id slot for uids ("uid") or gids ("gid")."""
    ranges = _subid_ranges(f"/etc/sub{kind}", AUTO_USER) or [(AUTO_POOL_START, AUTO_SLOTS * AUTO_SIZE)]
    used = _used_host_ranges(f"{kind}_map")
    for start, count in ranges:
        for base in range(start, start + count - AUTO_SIZE + 1, AUTO_SIZE):
            if all(base + AUTO_SIZE <= s or s + n <= base for s, n in used):
                return base
    raise CorertError(f"--userns=auto: no free range of {AUTO_SIZE} {kind}s left "
                      f"(add one for user {AUTO_USER!r} to /etc/sub{kind})")


def auto_mappings() -> tuple[list[dict], list[dict]]:
    """(uidMappings, gidMappings): container ids 0..65535 -> free unprivileged host slots."""
    return ([{"containerID": 0, "hostID": auto_host_base("uid"), "size": AUTO_SIZE}],
            [{"containerID": 0, "hostID": auto_host_base("gid"), "size": AUTO_SIZE}])
