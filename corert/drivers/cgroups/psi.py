"""Pressure stall information (PSI): reading it, and a per-container cgroup for it on hybrid hosts.

On a pure v2 host the container's cgroup has cpu/memory/io.pressure. On a hybrid host the v1 hierarchies
own the controllers and the cgroup2 hierarchy (/sys/fs/cgroup/unified) has none, but the kernel still
accounts pressure per cgroup there. So the v1 driver also makes the container a cgroup in that hierarchy
(named like its v1 cgroups, joined and removed with them: V1Handle.unified): its only purpose is real
per-container PSI. CgroupHandle.pressure_dir() names the dir to read; /proc/pressure/* is the host-wide figure.
"""
from __future__ import annotations

import os

from corert.errors import ResourceError

RESOURCES = ("cpu", "memory", "io")
HOST_DIR = "/proc/pressure"


def parse(text: str) -> dict[str, dict[str, float | int]]:
    """"some avg10=1.00 avg60=0.50 avg300=0.10 total=123" lines -> {"some": {"avg10": 1.0, ..., "total": 123}}.

    avg* are percentages of wall time; total is cumulative stall time in microseconds.
    """
    result: dict[str, dict[str, float | int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        entry: dict[str, float | int] = {}
        for field in parts[1:]:
            key, eq, value = field.partition("=")
            if not eq:
                continue
            try:
                entry[key] = int(value) if key == "total" else float(value)
            except ValueError:
                continue
        result[parts[0]] = entry
    return result


def read(directory: str, *, host: bool = False) -> dict[str, dict]:
    """{"cpu": {"some": ..., "full": ...}, "memory": ..., "io": ...} of a cgroup dir (<res>.pressure) or,
    with host=True, of /proc/pressure (<res>); resources whose file is missing or unsupported are left out."""
    result: dict[str, dict] = {}
    for res in RESOURCES:
        path = os.path.join(directory, res if host else f"{res}.pressure")
        try:
            with open(path) as f:
                text = f.read()
        except OSError:   # no PSI in this kernel, psi=0 (EOPNOTSUPP), or the cgroup is gone
            continue
        parsed = parse(text)
        if parsed:
            result[res] = parsed
    return result


def host() -> dict[str, dict]:
    """The host-wide pressure (/proc/pressure/*); {} when the kernel has no PSI."""
    return read(HOST_DIR, host=True)


def make_unified(container_id: str, cgroups_path: str | None, mounts: list[tuple[str, str, str, frozenset[str]]],
                 current: dict[str, str]) -> tuple[str, list[str]] | None:
    """Hybrid host: create the container's cgroup in the controller-less cgroup2 hierarchy, placed as the
    v1 ones are (relative to our current cgroup there). mounts/current: the caller's parse of mountinfo
    and /proc/self/cgroup (_util.cgroup_mounts/current_cgroups). Returns (dir, dirs this call created,
    for undo), or None when there is no cgroup2 mount, we may not use it, or the dir exists already (PSI
    is optional: it never fails a create)."""
    from . import _util as u
    from .convert import host_dir, resolve_cgroups_path

    unified = [(mp, root) for fstype, mp, root, _ in mounts if fstype == "cgroup2"]
    if not unified:
        return None
    mountpoint, root = unified[0]
    ours = current.get("", "/")
    # Moving a process between cgroup2 cgroups needs write access to cgroup.procs of the common ancestor.
    if not os.access(os.path.join(host_dir(mountpoint, root, ours), "cgroup.procs"), os.W_OK):
        return None
    target = host_dir(mountpoint, root, resolve_cgroups_path(container_id, cgroups_path, ours))
    try:
        created = u.make_dirs(target)
    except ResourceError:
        return None
    if not created:   # it was there already: not ours to join and later remove
        return None
    return target, created
