"""Managed containers: what `corert run IMAGE` creates, `corert ps` lists and `corert rm` removes.

A managed container is an ordinary OCI container in the same state store (so `corert list` and the OCI
verbs see it) plus: a name, the image it came from, a storage driver's rootfs, a generated bundle and a
log file, all under <data root>/containers/<id>/. The record's `extra` holds the bookkeeping; its
`storage` field holds the prepared rootfs so that `delete` (from any process) tears it down.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from corert.engine.state import ContainerRecord, StateStore, live_status
from corert.errors import ContainerExists, ContainerNotFound, CorertError, UsageError
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
                   stdio: tuple[int, int, int] | None = None) -> Managed:
    """Image -> storage rootfs -> OCI config -> engine create. Undone completely on any failure."""
    from corert.drivers.storage import get_driver
    from corert.engine.create import create_from_config
    from corert.engine.undo import UndoStack
    from corert.images.store import ImageStore
    from corert.spec.load import validate

    rootless = os.geteuid() != 0
    container_id = secrets.token_hex(32)
    name = name or f"corert-{container_id[:12]}"
    _check_name(store, name)
    images = ImageStore(data_root())
    try:
        image = images.get(image_ref) if not _is_default(image_ref) else _default_image(images, image_ref)
        layers = images.layer_dirs(image)
        container_dir = data_root() / "containers" / container_id
        with UndoStack() as undo:
            container_dir.mkdir(parents=True, mode=0o700)
            undo.push("container directory", lambda: _remove_tree(container_dir))
            driver = get_driver(storage, rootless=rootless)
            prepared = driver.prepare(container_id, layers, container_dir / "storage")
            undo.push("rootfs", prepared.teardown)
            config = build_config(image.config, opts, prepared.rootfs, rootless=rootless)
            bundle = container_dir / "bundle"
            bundle.mkdir()
            (bundle / "config.json").write_text(json.dumps(config, indent=1))
            validate(config, bundle)
            log_path = container_dir / "ctr.log"
            extra = {"managed": True, "name": name, "image": image.id, "image_ref": image_ref,
                     "command": config["process"]["args"], "log": str(log_path), "auto_remove": auto_remove,
                     "data_dir": str(container_dir), "created_unix": time.time()}
            log_fd = -1
            if detach and not opts.tty:
                log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                stdio = (null, log_fd, log_fd)
            try:
                created = create_from_config(
                    store, container_id, bundle, config, storage={**prepared.state()},
                    extra=extra, keep_pty=True, cgroup_manager=cgroup_manager, trace=trace, stdio=stdio)
            finally:
                if log_fd >= 0:
                    os.close(log_fd)
                    os.close(null)
            images.add_user(image.id, container_id)
            undo.discard()
        return Managed(record=created.record, created=created)
    finally:
        images.close()


def _is_default(ref: str) -> bool:
    return ref in ("busybox", "busybox:latest")


def _default_image(images, ref: str):
    try:
        return images.get(ref)
    except CorertError:
        return images.ensure_default()


def _remove_tree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def remove_managed(store: StateStore, record: ContainerRecord, *, force: bool = False) -> None:
    """`corert rm`: delete the container (engine), then its image reference and data directory."""
    from corert.engine.delete import destroy

    with store.lock(record.id):
        status = live_status(store, record)
        if status in ("running", "paused") and not force:
            raise CorertError(f"cannot remove container {record.extra.get('name', record.id)}: it is {status} "
                              "(stop it first or use -f)")
        destroy(store, record, status)
    forget(record)


def forget(record: ContainerRecord) -> None:
    """The front-door bookkeeping that outlives the OCI state: image user and data directory."""
    from corert.images.store import ImageStore

    images = ImageStore(data_root())
    try:
        images.remove_user(record.id)
    finally:
        images.close()
    data_dir = record.extra.get("data_dir")
    if data_dir:
        _remove_tree(Path(data_dir))


def stop(store: StateStore, record: ContainerRecord, timeout: float = 10.0, sig: int | None = None) -> None:
    """SIGTERM (or the image's stop signal), wait up to `timeout`, then SIGKILL: docker's `stop`."""
    import signal
    from corert.engine.state import init_alive

    if not init_alive(record):
        return
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(pidfd, sig or signal.SIGTERM)
        import select
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(int(timeout * 1000)):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            poller.poll(5000)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
