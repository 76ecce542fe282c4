"""cgroup drivers: registry and host detection.

detect("auto") picks v2 on a pure unified host, v1 where v1 hierarchies own the controllers (also on
hybrid hosts), else "none"; rootless without a writable (delegated) cgroup also gets "none", with a
`note` the CLI prints once. Only the chosen driver's module is imported (cold start).
"""
from __future__ import annotations

import os

from corert.errors import UsageError

__all__ = ["CgroupDriver", "CgroupHandle", "MANAGERS", "detect", "get_driver", "load_handle"]

MANAGERS = ("auto", "v1", "v2", "none")
_ALIASES = {"cgroupfs": "auto", "": "auto"}   # runc's --cgroup-manager spelling


def __getattr__(name: str):
    # The Protocols live in base.py, which imports typing (~8 ms): only load it when someone asks.
    if name in ("CgroupDriver", "CgroupHandle"):
        from . import base

        return getattr(base, name)
    raise AttributeError(name)


def get_driver(name: str, note: str | None = None, host: tuple | None = None) -> "CgroupDriver":
    """The driver registered under name ("v1", "v2", "none"), without probing the host. host: _util.host_view()
    as the caller has read it already, if any."""
    if name == "v1":
        from .v1 import V1Driver

        return V1Driver(note, host)
    if name == "v2":
        from .v2 import V2Driver

        return V2Driver(note, host)
    if name == "none":
        from .none import NoneDriver

        return NoneDriver(note)
    raise UsageError(f"unknown cgroup manager {name!r} (expected one of: {', '.join(MANAGERS)})")


def load_handle(state: dict) -> "CgroupHandle":
    """Rebuild a handle from CgroupHandle.state(), e.g. in `corert delete` after `corert create`."""
    return get_driver(str(state.get("driver", ""))).load(state)


def placement_fds(handle: "CgroupHandle") -> tuple[int, list[int]]:
    """What a new child needs to land in `handle`'s cgroup by itself: clone3's CLONE_INTO_CGROUP dir fd
    (-1 if none) and the v1 `tasks` fds it writes "0" to. ((-1, []): the caller attaches the pid.)"""
    cgroup_fd = handle.into_cgroup_fd()
    try:
        return cgroup_fd, handle.self_attach_fds()
    except BaseException:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
        raise


def _controllers(directory: str) -> list[str]:
    try:
        with open(os.path.join(directory, "cgroup.controllers")) as f:
            return f.read().split()
    except OSError:
        return []


def _writable(directory: str) -> bool:
    return os.access(directory, os.W_OK) and os.access(os.path.join(directory, "cgroup.procs"), os.W_OK)


def in_user_namespace() -> bool:
    """uid 0 of a user namespace other than the initial one (rootless podman runs its runtime so): the
    cgroup hierarchies are the host's, so they are treated as for an unprivileged user (as runc does)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def detect(manager: str = "auto") -> "CgroupDriver":
    """The cgroup driver for this host; manager is auto|v1|v2|none (explicit choices are not probed)."""
    manager = _ALIASES.get(manager, manager)
    if manager not in MANAGERS:
        raise UsageError(f"unknown cgroup manager {manager!r} (expected one of: {', '.join(MANAGERS)})")
    if manager != "auto":
        return get_driver(manager)

    from ._util import cgroup_mounts, current_cgroups
    from .convert import host_dir

    mounts = cgroup_mounts()
    current = current_cgroups()
    unified = [(mp, root) for fstype, mp, root, _ in mounts if fstype == "cgroup2"]
    unified.sort(key=lambda m: m[0] != "/sys/fs/cgroup")
    v1 = [(mp, root, ctrls) for fstype, mp, root, ctrls in mounts
          if fstype == "cgroup" and any(not c.startswith("name=") for c in ctrls)]

    kind = ""
    if unified and unified[0][0] == "/sys/fs/cgroup" and _controllers(unified[0][0]):
        kind = "v2"
    elif v1:
        kind = "v1"   # v1-only and hybrid hosts: the v1 hierarchies own the controllers
    elif unified and _controllers(unified[0][0]):
        kind = "v2"
    if not kind:
        return get_driver("none", "no usable cgroup hierarchy is mounted; running without resource limits")

    if os.geteuid() != 0 or in_user_namespace():
        if kind == "v2":
            mp, root = unified[0]
            dirs = [host_dir(mp, root, current.get("", "/"))]
        else:
            dirs = [host_dir(mp, root, next((current[c] for c in sorted(ctrls) if c in current), "/"))
                    for mp, root, ctrls in v1]
        closed = [d for d in dirs if not _writable(d)]
        if closed:
            return get_driver("none", f"rootless: cgroup {closed[0]} is not delegated to uid {os.geteuid()}; "
                                      f"running without cgroup limits")
    return get_driver(kind, host=(mounts, current))
