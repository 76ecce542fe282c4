"""Managed containers: what `corert run IMAGE` creates, `corert ps` lists and `corert rm` removes.

A managed container is an ordinary OCI container in the same state store (so `corert list` and the OCI
verbs see it) plus: a name, the image it came from, a storage driver's rootfs, a generated bundle and a
log file, all under <data root>/containers/<id>/. The record's `extra` holds the bookkeeping; its
`storage` field holds the prepared rootfs so that `delete` (from any process) tears it down.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from corert.engine.control import resume
from corert.engine.state import open_pidfd, wait_exit
from corert.engine.state import ContainerRecord, StateStore, live_status
from corert.errors import ContainerExists, ContainerNotFound, CorertError, InvalidState, UsageError
from corert.fsutil import remove_tree
from corert.frontend.config import RunOptions, build_config


def data_root() -> Path:
    from corert.images.store import default_store_root
    return default_store_root()


@dataclass
class Managed:
    record: ContainerRecord
    created: object        # corert.engine.create.Created


def find(store: StateStore, ref: str) -> ContainerRecord:
    """A managed container by name, full id or unique id prefix."""
    records = store.list()
    for r in records:
        if r.extra.get("name") == ref or r.id == ref:
            return r
    matches = [r for r in records if r.extra.get("managed") and r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"container id prefix {ref!r} is ambiguous")
    raise ContainerNotFound(ref)


def _check_name(store: StateStore, name: str) -> None:
    import re
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
        raise UsageError(f"invalid container name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    for r in store.list():
        if r.extra.get("name") == name:
            raise ContainerExists(name)


def create_managed(store: StateStore, image_ref: str, opts: RunOptions, *, name: str | None = None,
                   storage: str | None = None, detach: bool = False, auto_remove: bool = False,
                   cgroup_manager: str = "auto", trace: bool = False,
                   stdio: tuple[int, int, int] | None = None, data_dir: Path | None = None,
                   extra: dict | None = None) -> Managed:
    """Image -> storage rootfs -> OCI config -> engine create. Undone completely on any failure.

    `data_dir` replaces the default data root (images and container dirs; recorded so `rm` finds it);
    `extra` adds bookkeeping to the record (the embedding API records its owner process there).
    """
    from corert.drivers.storage import get_driver
    from corert.engine.create import create_from_config
    from corert.engine.undo import UndoStack
    from corert.images.store import ImageStore
    from corert.spec.load import validate

    rootless = os.geteuid() != 0
    id_maps = None
    if rootless:
        from corert.rootless import check_host, id_mappings
        from corert.drivers.storage import default_driver_name
        check_host(storage or default_driver_name())
        uid_maps, gid_maps, note = id_mappings()
        id_maps = (uid_maps, gid_maps)
        _note_once(store, "idmap", note)
        from corert.drivers.cgroups import detect
        _note_once(store, "cgroups", detect(cgroup_manager).note)
    container_id = os.urandom(32).hex()  # = secrets.token_hex(32), without secrets' hmac/OpenSSL import (~10 ms)
    name = name or f"corert-{container_id[:12]}"
    if opts.hostname is None and opts.net != "host" and not opts.net.startswith("container:"):
        # docker: the short id, not the host's name (container:NAME shares NAME's UTS name instead)
        import dataclasses
        opts = dataclasses.replace(opts, hostname=container_id[:12])
    _check_name(store, name)
    root = Path(data_dir) if data_dir is not None else data_root()
    images = ImageStore(root)
    try:
        image = images.get(image_ref) if not _is_default(image_ref) else _default_image(images, image_ref)
        layers = images.layer_dirs(image)
        container_dir = root / "containers" / container_id
        with UndoStack() as undo:
            container_dir.mkdir(parents=True, mode=0o700)
            undo.push("container directory", lambda: remove_tree(container_dir))
            driver = get_driver(storage, rootless=rootless, volatile=auto_remove)
            prepared = driver.prepare(container_id, layers, container_dir / "storage")
            undo.push("rootfs", prepared.teardown)
            network = prepare_network(store, opts, container_id, container_dir, name)
            undo.push("network", network.teardown)
            config = build_config(image.config, opts, prepared.rootfs, rootless=rootless, id_maps=id_maps,
                                  network=network)
            bundle = container_dir / "bundle"
            bundle.mkdir()
            (bundle / "config.json").write_text(json.dumps(config, indent=1))
            validate(config, bundle)
            log_path = container_dir / "ctr.log"
            extra = {"managed": True, "name": name, "image": image.id, "image_ref": image_ref,
                     "command": config["process"]["args"], "log": str(log_path), "auto_remove": auto_remove,
                     "data_dir": str(container_dir), "created_unix": time.time(), **(extra or {})}
            if data_dir is not None:
                extra["data_root"] = str(root)
            log_fd = -1
            if detach and not opts.tty:
                log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                stdio = (null, log_fd, log_fd)
            try:
                created = create_from_config(
                    store, container_id, bundle, config, storage={**prepared.state()},
                    extra=extra, keep_pty=True, cgroup_manager=cgroup_manager, trace=trace, stdio=stdio,
                    rootfs_mount=prepared.child_mount, network=network.handle)
            finally:
                if log_fd >= 0:
                    os.close(log_fd)
                    os.close(null)
            images.add_user(image.id, container_id)
            undo.discard()
        return Managed(record=created.record, created=created)
    finally:
        images.close()


def _note_once(store: StateStore, key: str, note: str | None) -> None:
    """Rootless limitations are said once per state root, not on every run."""
    if not note:
        return
    marker = Path(store.root) / f"@note-{key}"
    if marker.exists():
        return
    import sys
    print(f"corert: note: {note}", file=sys.stderr)
    try:
        os.makedirs(store.root, exist_ok=True, mode=0o700)
        marker.touch()
    except OSError:
        pass


def prepare_network(store: StateStore, opts: RunOptions, container_id: str, container_dir: Path, name: str):
    """The --net driver's first step (address, /etc files) -> corert.drivers.network.Prepared."""
    from corert.drivers.network import NetOptions, get_driver, parse_publish

    def resolve(ref: str) -> tuple[int, str | None]:
        target = find(store, ref)
        if live_status(store, target) not in ("created", "running", "paused"):
            raise CorertError(f"cannot join the network of container {ref}: it is not running")
        return target.pid, target.extra.get("data_dir")

    net_opts = NetOptions(publish=[parse_publish(p) for p in opts.publish], hostname=opts.hostname,
                          state_dir=str(store.container_dir(container_id)), resolve_container=resolve)
    return get_driver(opts.net).prepare(container_id, str(container_dir), name, net_opts)


def _is_default(ref: str) -> bool:
    return ref in ("busybox", "busybox:latest")


def _default_image(images, ref: str):
    try:
        return images.get(ref)
    except CorertError:
        return images.ensure_default()


def remove_managed(store: StateStore, record: ContainerRecord, *, force: bool = False) -> None:
    """`corert rm`: delete the container (engine), then its image reference and data directory."""
    from corert.engine.delete import destroy

    with store.lock(record.id):
        record = store.load(record.id)   # as it is now: a `network connect` may have marked it meanwhile
        status = live_status(store, record)
        if status in ("running", "paused") and not force:
            raise CorertError(f"cannot remove container {record.extra.get('name', record.id)}: it is {status} "
                              "(stop it first or use -f)")
        destroy(store, record, status)
    forget(record)


def discard(store: StateStore, record: ContainerRecord) -> None:
    """Delete the container if it is still there, whatever its state, then forget it: what `run --rm`, a
    detached start that failed and build's RUN steps leave behind is nothing."""
    from corert.engine.delete import delete

    try:
        delete(store, record.id, force=True)
    finally:
        forget(record)


def forget(record: ContainerRecord) -> None:
    """The front-door bookkeeping that outlives the OCI state: image user and data directory."""
    from corert.images.store import ImageStore

    root = record.extra.get("data_root")
    images = ImageStore(Path(root) if root else data_root())
    try:
        images.remove_user(record.id)
    finally:
        images.close()
    data_dir = record.extra.get("data_dir")
    if data_dir:
        remove_tree(data_dir)   # refuses to reach into anything still mounted


def stop_signal(record: ContainerRecord) -> int:
    """The signal `stop` sends first: `run --stop-signal`, else the image's StopSignal, else SIGTERM."""
    import signal
    from corert.engine.signals import parse_signal
    from corert.frontend.config import STOP_SIGNAL_ANNOTATION

    name = (record.annotations or {}).get(STOP_SIGNAL_ANNOTATION)
    return parse_signal(name) if name else signal.SIGTERM


def stop(store: StateStore, record: ContainerRecord, timeout: float = 10.0, sig: int | None = None) -> None:
    """The stop signal (`sig`, else the container's: see stop_signal), wait up to `timeout` seconds for the
    init to exit, then SIGKILL: docker's `stop`. A container whose init already exited is left as it is.

    The signal goes to the init (record.pid): the process itself, or with --init the tiny init, which
    forwards it to the process. A paused container is thawed after the signal, so that it can act on it."""
    import signal

    if timeout < 0:
        raise UsageError(f"invalid stop timeout {timeout}: it must not be negative")
    sig = sig or stop_signal(record)
    pidfd = _init_pidfd(record)
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, sig)
        if live_status(store, record) == "paused":
            try:
                resume(store, record.id)
            except InvalidState:
                pass   # thawed meanwhile
        if not wait_exit(pidfd, timeout):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            wait_exit(pidfd, 5.0)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def _init_pidfd(record: ContainerRecord) -> int | None:
    """A pidfd of the container init (the pid cannot be reused under it), None when it is gone.

    An exited but unreaped init (a zombie) still gets one: it is readable at once, and a signal to it
    is a no-op, so stop and the --rm watcher return at once as for a reaped one."""
    try:
        return open_pidfd(record)
    except InvalidState:
        return None


def remove_when_exited(store: StateStore, record: ContainerRecord) -> None:
    """`run -d --rm`: a detached watcher process removes the container once its init has exited.

    The front end itself returns at once (the container must outlive it); the watcher is double-forked
    and in its own session, so it is no child of the caller and survives the caller's terminal closing.
    """
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    code = 0
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")   # pin no mount
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 65536)   # no lock, database or log fd of the front end outlives it here
        pidfd = _init_pidfd(record)
        if pidfd is not None:
            wait_exit(pidfd)
            os.close(pidfd)
        discard(store, record)
    except BaseException:
        code = 1
    finally:
        os._exit(code)
