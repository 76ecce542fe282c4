"""Read-only verbs: `state`, `list`, `ps`."""
from __future__ import annotations

import os

from corert.engine.state import StateStore, live_status, oci_state


def state(store: StateStore, container_id: str) -> dict:
    """The OCI state of one container (runc `state`: owner is "")."""
    record = store.load(container_id)
    return oci_state(store, record)


def list_containers(store: StateStore) -> list[dict]:
    """OCI states of all containers, sorted by id; "owner" is the state dir owner's user name (runc `list`)."""
    result = []
    for record in store.list():
        entry = oci_state(store, record)
        entry["owner"] = _dir_owner(store, record.id)
        result.append(entry)
    return result


def _dir_owner(store: StateStore, container_id: str) -> str:
    try:
        uid = os.stat(store.container_dir(container_id)).st_uid
    except OSError:
        return ""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"  # runc prints #<uid> for a uid without a passwd entry


def ps(store: StateStore, container_id: str) -> list[int]:
    """Host pids of the container's processes, sorted; [] once it has stopped.

    With a cgroup, its member pids; without one, the init and its descendants found through /proc.
    """
    record = store.load(container_id)
    status = live_status(store, record)
    if record.cgroup:
        from corert.drivers.cgroups import load_handle

        try:
            return sorted(load_handle(record.cgroup).pids())
        except OSError:
            return []
    if status == "stopped":
        return []
    return descendants(record.pid)


def descendants(pid: int) -> list[int]:
    """pid and all its descendants (one scan of /proc/*/stat), sorted."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # exited during the scan
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    todo = [pid] if os.path.exists(f"/proc/{pid}") else []
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return sorted(found)

