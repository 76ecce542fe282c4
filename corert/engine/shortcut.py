"""The plan that lets the native CLI front (corert/cli/native/) run `start` and `delete` without CPython.

Engines run the runtime once per step of a container (containerd's shim: create, start, delete,
delete --force), and CPython's own start (~8 ms here) is more than runc's whole short verb. So `create`
leaves, next to state.json, what those two verbs need to know, in a form C reads with no JSON parser:

    corert-shortcut 1
    id<TAB>ID                                  the container (its dir may not be renamed)
    state<TAB>INODE<TAB>SIZE<TAB>MTIME_NS      the state.json this plan was made from
    init<TAB>PID<TAB>START_TIME                 the init and its /proc start time (pid reuse)
    paused-if<TAB>FILE<TAB>LINE                 the cgroup is frozen when FILE holds LINE (0 or more)
    rmdir<TAB>DIR                               cgroup dirs an empty container's teardown removes, in order
    end

A plan is only written by the OCI `create` (its containers have no storage or network of the front door's),
and only for a container without poststart/poststop hooks: its teardown is then just the above. Every later save of the record (`update`, `network connect`)
removes it (StateStore.save), and the front also checks that state.json is still the file the plan was
made from (saves replace it by rename). It takes the container lock as every verb does, and hands the command to the
Python CLI for anything outside the plan: a live init at delete, a stopped or paused one at start, a
busy cgroup, a missing fifo. The Python verbs are the authority; the front only does their plain case.
"""
from __future__ import annotations

import os

from corert.engine.state import SHORTCUT_FILE, STATE_FILE, ContainerRecord, StateStore
from corert.fsutil import write_all

MAGIC = "corert-shortcut 1"


def plan_text(record: ContainerRecord, cgroup, state: os.stat_result) -> str | None:  # noqa: ANN001
    """The plan for `record` (cgroup: its CgroupHandle; state: os.stat of its saved state.json), or None
    when the native front must leave this container to the Python CLI."""
    hooks = record.hooks or {}
    if hooks.get("poststart") or hooks.get("poststop"):
        return None
    dirs, frozen = cgroup.shortcut()
    fields = [*dirs, *(f for pair in frozen for f in pair)]
    if any("\t" in f or "\n" in f or not f for f in fields) or any(not d.startswith("/") for d in dirs):
        return None
    lines = [MAGIC,
             f"id\t{record.id}",
             f"state\t{state.st_ino}\t{state.st_size}\t{state.st_mtime_ns}",
             f"init\t{record.pid}\t{record.pid_start}",
             *(f"paused-if\t{path}\t{line}" for path, line in frozen),
             *(f"rmdir\t{d}" for d in dirs),
             "end"]
    return "\n".join(lines) + "\n"


def write_plan(store: StateStore, record: ContainerRecord, cgroup) -> None:  # noqa: ANN001
    """Leave the plan for a container just saved as "created" (a no-op for one the front cannot handle).

    Written in place, not renamed: the front ignores a plan without its "end" line, and the container
    lock (held by `create`) keeps every reader out until it is complete. Only a speed-up: a plan that
    cannot be written is no error (the Python CLI then does start and delete)."""
    directory = store.container_dir(record.id)
    path = os.path.join(directory, SHORTCUT_FILE)
    try:
        text = plan_text(record, cgroup, os.stat(os.path.join(directory, STATE_FILE)))
        if text is None:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, text.encode())
        finally:
            os.close(fd)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
