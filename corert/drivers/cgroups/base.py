"""The cgroup driver interface: a driver makes CgroupHandles, a handle owns one container's cgroup(s).

Drivers: "v1" (one dir per mounted controller hierarchy), "v2" (one dir in the unified hierarchy),
"none" (no cgroup; refuses resource limits). A handle survives the process that made it as the plain
dict from state(); driver.load(state) (or cgroups.load_handle) rebuilds it in another process.
"""
from __future__ import annotations

from typing import Protocol


class CgroupHandle(Protocol):
    def state(self) -> dict:
        """JSON-serialisable: {"driver": name, ...paths}; the input of CgroupDriver.load."""
        ...

    def attach(self, pid: int) -> None:
        """Move pid into the cgroup (cgroup.procs of every controller dir)."""
        ...

    def into_cgroup_fd(self) -> int:
        """A new O_PATH|O_DIRECTORY fd for clone3 CLONE_INTO_CGROUP (caller closes it): v2 its cgroup, v1
        on a hybrid host its cgroup2 dir (see pressure_dir); -1: none (other v1 hosts, none)."""
        ...

    def self_attach_fds(self) -> list[int]:
        """v1: new fds of the `tasks` files the child writes "0" to right after clone (caller closes
        them); []: nothing to do there. A handle offering neither this nor into_cgroup_fd() gets attach()."""
        ...

    def update(self, resources: dict) -> None:
        """Apply OCI linux.resources to the live cgroup (runc update)."""
        ...

    def pids(self) -> list[int]:
        """All pids in the cgroup and its descendants, sorted."""
        ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def is_frozen(self) -> bool: ...

    def kill_all(self, sig: int) -> None:
        """Send sig to every process in the cgroup (v2 SIGKILL: cgroup.kill)."""
        ...

    def stats(self) -> dict:
        """runc `events --stats` "data" shape: cpu, memory, pids, blkio, hugetlb."""
        ...

    def oom_killed(self) -> bool:
        """True when the kernel OOM killer killed a process of this cgroup."""
        ...

    def pressure_dir(self) -> str | None:
        """The cgroup2 dir holding the container's <res>.pressure files (see psi.py): v2 its cgroup, v1 its
        dir in a hybrid host's cgroup2 hierarchy; None: no per-container PSI."""
        ...

    def container_mounts(self) -> list[tuple[str, str]]:
        """(host dir, path under /sys/fs/cgroup in the container; "" = /sys/fs/cgroup itself)."""
        ...

    def destroy(self) -> None:
        """SIGKILL what is left, wait until empty, rmdir (idempotent; parents are never touched)."""
        ...

    def shortcut(self) -> tuple[list[str], list[tuple[str, str]]]:
        """For the native CLI's plan (engine/shortcut.py): the dirs destroy() removes from an empty
        cgroup, in order, and (file, line) pairs: is_frozen() is true when such a file holds that line."""
        ...


class CgroupDriver(Protocol):
    name: str                   # "v1" | "v2" | "none"
    note: str | None            # one line the CLI prints once (e.g. why rootless runs without cgroups)

    def create(self, container_id: str, cgroups_path: str | None, resources: dict | None) -> CgroupHandle:
        """Make the container cgroup and apply OCI linux.resources; on failure undo and raise ResourceError.

        cgroups_path None: <current cgroup>/corert-<container_id>. Absolute: relative to the hierarchy root.
        Relative: under the current cgroup. "slice:prefix:name": <expanded slice>/<prefix>-<name>.scope
        under the hierarchy root.
        """
        ...

    def load(self, state: dict) -> CgroupHandle:
        """Rebuild a handle from CgroupHandle.state() (possibly written by another process)."""
        ...
