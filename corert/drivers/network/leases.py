"""The bridge's address book: one JSON file (see network_root), changed only under an flock.

The flock serialises every bridge change (allocation, attach, teardown, prune) across concurrent corert
processes, so an address is never handed out twice. A lease names its container's data dir and OCI state
dir and the process that took it: after a crash the lease is stale (and reclaimed) once its data dir is
gone, or once its owner process is dead and its state dir was never made.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from corert.engine.state import proc_start_time, process_alive


def network_root() -> Path:
    """Machine-wide, not per data root: the bridge is one kernel object whichever CORERT_DATA_ROOT a run
    uses, and on tmpfs like the kernel state it describes (a reboot clears both)."""
    return Path(os.environ.get("CORERT_NETWORK_ROOT") or "/run/corert-net")


class JsonBook:
    """A JSON file changed only under an flock on a lock file beside it. Writes are atomic replaces, so
    read() needs no lock for a snapshot."""

    defaults: dict = {}

    def __init__(self, root: Path | str, name: str) -> None:
        self.root = Path(root)
        self.path = self.root / f"{name}.json"
        self.lock_path = self.root / f"{name}.lock"

    @contextmanager
    def locked(self, *, write: bool = True) -> Iterator[dict]:
        """Hold the lock, yield the book as a dict, write it back on success. write=False: for holders that
        only need the book to stay as it is meanwhile (nothing is rewritten)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self.read()
            yield data
            if write:
                self._write(data)
        finally:
            os.close(fd)     # closing drops the flock

    def read(self) -> dict:
        """The book as last written (whole: writes are atomic renames), without the lock."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        for key, value in self.defaults.items():
            data.setdefault(key, type(value)())
        return data

    def _write(self, data: dict) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Delete the book (its lock file too: only when no other process can be waiting on it)."""
        self.path.unlink(missing_ok=True)
        self.lock_path.unlink(missing_ok=True)


class LeaseBook(JsonBook):
    """One bridge's book: subnet, net (its BridgeNet), leases{ip: lease}."""

    defaults = {"leases": {}}


def owner_stamp() -> list[int]:
    """This process as [pid, start time]: a pid alone could be reused after a crash."""
    pid = os.getpid()
    return [pid, proc_start_time(pid) or 0]


def _alive(stamp: list[int] | None) -> bool:
    return bool(stamp) and process_alive(*stamp)


def is_stale(lease: dict) -> bool:
    """Does nothing own this lease any more (see the module doc)?"""
    data_dir = lease.get("data_dir")
    if data_dir and not os.path.isdir(data_dir):
        return True
    state_dir = lease.get("state_dir")
    if state_dir and not os.path.isdir(state_dir) and not _alive(lease.get("owner")):
        return True
    return False


def allocate(data: dict, hosts: Iterator[str], reserved: set[str]) -> str:
    """The first address of `hosts` that no lease holds and that is not reserved (network, gateway)."""
    taken = set(data["leases"]) | reserved
    for ip in hosts:
        if ip not in taken:
            return ip
    from corert.errors import ResourceError
    subnet = data.get("subnet", "")
    raise ResourceError(f"the bridge subnet {subnet} has no free address left")
