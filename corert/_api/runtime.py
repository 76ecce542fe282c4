"""Runtime: one state root (shared with the CLI), one data root (images), many containers.

Containers made here are ordinary corert containers: `corert list --root R` and `corert ps --root R` show
them, and `corert delete --force` / `corert rm -f` remove them. Each record carries its owner
(pid + start time of the embedding process) so that `Runtime.gc()` can tell the containers of a process
that died without cleaning up from those of a process still running.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import trio

from corert._api.container import Container, RunResult, collect
from corert._api.events import EventHub, EventStream
from corert._api.process import PIPE, Stdio
from corert.engine.state import ContainerRecord, StateStore, default_root, proc_start_time, process_alive
from corert.errors import CorertError, UsageError
from corert.images.store import Image

OWNER_KEY = "api_owner"


@dataclass(frozen=True)
class ContainerInfo:
    """One row of `Runtime.list()`: what `corert list` / `corert ps -a` show."""

    id: str
    status: str
    pid: int
    bundle: str
    created: str
    name: str = ""
    image: str = ""
    managed: bool = False
    owner_pid: int | None = None       # the embedding process that made it (None: the CLI)


def _owner() -> dict:
    pid = os.getpid()
    return {"pid": pid, "start": proc_start_time(pid) or 0}


def _owner_alive(owner: dict) -> bool:
    return process_alive(int(owner.get("pid") or 0), owner.get("start"))   # a zombie embedder is gone too


class Images:
    """The image store of a Runtime's data root (`rt.images`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _with_store(self, fn: Callable[[Any], Any]) -> Any:
        from corert.images.store import ImageStore

        with ImageStore(self.root) as store:
            return fn(store)

    async def get(self, ref: str = "busybox") -> Image:
        """An image by name or id; "busybox" is built from the host's busybox on first use."""
        from corert.frontend.containers import _default_image, _is_default

        def get(store: Any) -> Image:
            return _default_image(store, ref) if _is_default(ref) else store.get(ref)
        return await trio.to_thread.run_sync(self._with_store, get)

    async def import_(self, path: str | os.PathLike, name: str | None = None) -> Image:
        """Import an OCI layout, docker-archive, rootfs tarball or directory (as `corert image import`)."""
        return await trio.to_thread.run_sync(self._with_store, lambda s: s.import_path(Path(path), name))

    async def list(self) -> list[Image]:
        return await trio.to_thread.run_sync(self._with_store, lambda s: s.list())

    async def remove(self, ref: str) -> None:
        await trio.to_thread.run_sync(self._with_store, lambda s: s.remove(ref))


class _ContainerContext:
    """What `rt.container(...)` / `rt.create_from_bundle(...)` return: `async with ... as c`."""

    def __init__(self, rt: Runtime, create: Callable[[tuple[int, int, int]], tuple[ContainerRecord, int]],
                 stdio: tuple[bool | int, str | int, str | int]) -> None:
        self._rt = rt
        self._create = create
        self._stdio = stdio
        self._container: Container | None = None

    async def __aenter__(self) -> Container:
        rt = self._rt
        rt._check_open()
        stdio = Stdio(*self._stdio)
        try:
            record, pidfd = await trio.to_thread.run_sync(self._create, stdio.fds)
        except BaseException:
            stdio.close_sync()
            raise
        finally:
            stdio.close_child_ends()
        # No checkpoint from here to the return: a cancellation pending since the create is delivered in
        # the body, so __aexit__ (the teardown) always runs for a container that exists.
        c = Container(rt, record, pidfd, stdio)
        rt._adopt(c)
        self._container = c
        return c

    async def __aexit__(self, *exc: object) -> None:
        if self._container is not None:
            await self._container._close()


class Runtime:
    """corert as a trio-native runtime backend.

        async with corert.Runtime() as rt:
            async with rt.container("busybox", ["echo", "hi"]) as c:
                await c.start()
                print(await c.stdout.receive_some(), await c.wait())

    root: the state root (default as the CLI: /run/corert for root); data_root: images and container
    data (default /var/lib/corert); storage: overlay | vfs | fuse (None: $CORERT_STORAGE_DRIVER or
    overlay); cgroups: auto | v1 | v2 | none.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, data_root: str | os.PathLike | None = None,
                 storage: str | None = None, cgroups: str = "auto") -> None:
        from corert.frontend.containers import data_root as default_data_root

        self.root = Path(root if root is not None else default_root()).absolute()
        self.data_root = Path(data_root).absolute() if data_root is not None else default_data_root()
        self.storage = storage
        self.cgroups = cgroups
        self.images = Images(self.data_root)
        self._store = StateStore(self.root)
        self._events = EventHub()
        self._containers: dict[str, Container] = {}
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._closing = False

    # ---- context -----------------------------------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        self._closing = True
        with trio.CancelScope(shield=True):
            for c in list(self._containers.values()):   # only if a container outlived its own block
                await c._close()
        self._events.close()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            return bool(await self._nursery_cm.__aexit__(*exc))
        except BaseExceptionGroup as group:
            # The body's own exception comes out as it went in, not wrapped by our background nursery.
            if exc[1] is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc[1]:
                return False
            raise

    def _check_open(self) -> None:
        if self._nursery is None or self._closing:
            raise CorertError("the Runtime is not open: use `async with corert.Runtime() as rt`")

    # ---- containers --------------------------------------------------------------------------------------
    def container(self, image: Image | str, command: Sequence[str] | None = None, *, name: str | None = None,
                  env: Sequence[str] = (), workdir: str | None = None, user: str | None = None,
                  memory: str | None = None, cpus: str | None = None, pids_limit: int | None = None,
                  net: str = "none", storage: str | None = None, stdin: bool | int = False,
                  stdout: str | int = PIPE, stderr: str | int = PIPE, **options: Any) -> _ContainerContext:
        """A container of an image, created on entry (not started), killed and removed on exit.

        The keyword arguments are docker's `run` options (corert.frontend.config.RunOptions: volumes,
        tmpfs, read_only, hostname, entrypoint, cap_add, cap_drop, security_opt, annotations...).
        stdin=True gives `c.stdin` (a pipe); stdout/stderr are "pipe" (trio streams), "null" or an fd.
        """
        from corert.frontend.config import RunOptions
        from corert.frontend.containers import create_managed

        known = {f.name for f in fields(RunOptions)} - {"tty", "interactive"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown container option(s): {', '.join(unknown)}")
        opts = RunOptions(command=[str(a) for a in command or []], env=list(env), workdir=workdir, user=user,
                          memory=memory, cpus=cpus, pids_limit=pids_limit, net=net, **options)
        ref = image if isinstance(image, str) else (image.names[0] if image.names else image.id)

        def create(stdio: tuple[int, int, int]) -> tuple[ContainerRecord, int]:
            managed = create_managed(self._store, ref, opts, name=name, storage=storage or self.storage,
                                     cgroup_manager=self.cgroups, stdio=stdio, data_dir=self.data_root,
                                     extra={OWNER_KEY: _owner()})
            return managed.record, managed.created.pidfd
        return _ContainerContext(self, create, (stdin, stdout, stderr))

    def create_from_bundle(self, container_id: str, bundle: str | os.PathLike, *, stdin: bool | int = False,
                           stdout: str | int = PIPE, stderr: str | int = PIPE) -> _ContainerContext:
        """The OCI level: a container from a bundle (config.json + rootfs), as `corert create` makes it."""
        from corert.engine.create import create_from_config
        from corert.spec.load import load_and_validate

        path = Path(os.path.abspath(bundle))

        def create(stdio: tuple[int, int, int]) -> tuple[ContainerRecord, int]:
            config = load_and_validate(path)
            created = create_from_config(self._store, container_id, path, config, cgroup_manager=self.cgroups,
                                         stdio=stdio, extra={OWNER_KEY: _owner()})
            return created.record, created.pidfd
        return _ContainerContext(self, create, (stdin, stdout, stderr))

    async def run(self, image: Image | str, command: Sequence[str] | None = None, *, input: bytes | None = None,
                  **options: Any) -> RunResult:
        """create + start + wait + remove, collecting stdout and stderr (options as for `container`)."""
        async with self.container(image, command, stdin=input is not None, **options) as c:
            await c.start()
            status, out, err = await collect(c.wait, c._stdio, input)
        return RunResult(status.exit_code, out, err, status.signal, status.oom_killed, c.id)

    def events(self) -> EventStream:
        """Lifecycle and OOM events of this Runtime's containers, from now until the Runtime closes."""
        return self._events.subscribe()

    async def list(self) -> list[ContainerInfo]:
        """Every container under the state root (also the CLI's and other processes')."""
        return await trio.to_thread.run_sync(self._list)

    def _list(self) -> list[ContainerInfo]:
        from corert.engine.state import live_status

        rows = []
        for r in self._store.list():
            owner = r.extra.get(OWNER_KEY) or {}
            status = live_status(self._store, r)
            rows.append(ContainerInfo(r.id, status, 0 if status == "stopped" else r.pid, r.bundle, r.created,
                                      r.extra.get("name", ""), r.extra.get("image_ref", ""),
                                      bool(r.extra.get("managed")), owner.get("pid")))
        return rows

    async def gc(self) -> list[str]:
        """Remove the containers of embedding processes that are gone (killed before they cleaned up).

        Containers of live processes (this one included) and of the CLI are left alone. Returns the ids.
        """
        return await trio.to_thread.run_sync(self._gc)

    def _gc(self) -> list[str]:
        removed = []
        for record in self._store.list():
            owner = record.extra.get(OWNER_KEY)
            if not owner or _owner_alive(owner) or self._store.is_locked_elsewhere(record.id):
                continue
            self._remove(record)
            removed.append(record.id)
        return removed

    # ---- bookkeeping (called by Container) ---------------------------------------------------------------
    def _adopt(self, c: Container) -> None:
        from corert._api.events import Event

        assert self._nursery is not None
        self._containers[c.id] = c
        self._nursery.start_soon(c._watch)
        self._events.emit(Event("create", c.id, {"pid": c.pid, "name": c.name}))

    def _forget(self, c: Container) -> None:
        self._containers.pop(c.id, None)

    def _remove(self, record: ContainerRecord) -> None:
        """The engine's removal (the same as `corert rm -f` / `corert delete --force`); blocking."""
        from corert.errors import ContainerNotFound

        try:
            fresh = self._store.load(record.id)
        except ContainerNotFound:
            return     # someone removed it already (e.g. `corert delete --force`)
        if fresh.extra.get("managed"):
            from corert.frontend.containers import remove_managed
            remove_managed(self._store, fresh, force=True)
        else:
            from corert.engine.delete import delete
            delete(self._store, fresh.id, force=True)
