"""The "none" cgroup driver: no cgroup at all; refuses any resource limit it was asked to apply.

Used for --cgroup-manager=none and for rootless runs without a delegated cgroup. Without a cgroup there
is no freezer, no process list and no stats: pause fails, pids() is empty (the engine signals the
container's init, whose pid namespace takes the rest with it).
"""
from __future__ import annotations

import os

from corert.errors import ResourceError

from .convert import requested_limits


def _refuse(resources: dict | None, note: str | None) -> None:
    # Rootless: the user namespace already keeps host devices out of reach, so device rules are moot.
    paths = requested_limits(resources, include_devices=os.geteuid() == 0)
    if paths:
        why = note or "the cgroup manager is 'none'"
        raise ResourceError(f"{paths[0]}: cannot apply resource limits without a cgroup ({why})")


class NoneHandle:
    def __init__(self, note: str | None = None) -> None:
        self.note = note

    def state(self) -> dict:
        return {"driver": "none"}

    def attach(self, pid: int) -> None:
        pass

    def into_cgroup_fd(self) -> int:
        return -1

    def self_attach_fds(self) -> list[int]:
        return []

    def update(self, resources: dict) -> None:
        _refuse(resources, self.note)

    def pids(self) -> list[int]:
        return []

    def freeze(self) -> None:
        raise ResourceError("pause needs the cgroup freezer, and this container has no cgroup")

    def thaw(self) -> None:
        raise ResourceError("resume needs the cgroup freezer, and this container has no cgroup")

    def is_frozen(self) -> bool:
        return False

    def kill_all(self, sig: int) -> None:
        pass

    def stats(self) -> dict:
        return {}

    def oom_killed(self) -> bool:
        return False

    def pressure_dir(self) -> str | None:
        return None

    def container_mounts(self) -> list[tuple[str, str]]:
        return []

    def destroy(self) -> None:
        pass

    def shortcut(self) -> tuple[list[str], list[tuple[str, str]]]:
        return [], []


class NoneDriver:
    name = "none"

    def __init__(self, note: str | None = None) -> None:
        self.note = note

    def create(self, container_id: str, cgroups_path: str | None, resources: dict | None) -> NoneHandle:
        _refuse(resources, self.note)
        return NoneHandle(self.note)

    def load(self, state: dict) -> NoneHandle:
        if state.get("driver") != "none":
            raise ResourceError(f"cgroup state is for driver {state.get('driver')!r}, not none")
        return NoneHandle(self.note)
