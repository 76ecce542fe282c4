"""What every verb handler gets: the global options, the log, and the state store (made on first use)."""
from __future__ import annotations

import os

from corert.cli.log import Log
from corert.cli.parse import GlobalOptions
from corert.engine.state import StateStore


class Context:
    def __init__(self, options: GlobalOptions, log: Log) -> None:
        self.options = options
        self.log = log
        self._store: StateStore | None = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            if self.options.root:
                root = os.path.abspath(self.options.root)
            else:
                from corert.engine.state import default_root

                root = default_root()
            self._store = StateStore(root)
        return self._store

    def refuse_systemd_cgroup(self) -> None:
        """--systemd-cgroup is accepted everywhere (engines pass it to every verb) but cannot create."""
        if self.options.systemd_cgroup:
            from corert.errors import HostUnsupported

            raise HostUnsupported("--systemd-cgroup is not supported: corert manages cgroupfs directly "
                                  "(configure the engine's cgroup manager as cgroupfs)")


def abspath(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)
