"""Storage drivers: an image's layer stack -> a writable rootfs for one container.

    driver = get_driver("overlay")                  # or "vfs", "fuse"; None -> $CORERT_STORAGE_DRIVER or overlay
    prepared = driver.prepare(cid, layers_bottom_first, container_dir)
    ... prepared.rootfs ...; json.dump(prepared.state(), f)
    load_prepared(json.load(f)).teardown()          # from any process

Driver modules are imported only when selected, so the CLI pays only for the one it uses.
"""
from __future__ import annotations

import os

from corert.drivers.storage.base import PreparedRootfs, StorageDriver
from corert.errors import HostUnsupported, UsageError

DEFAULT_DRIVER = "overlay"
ENV_DRIVER = "CORERT_STORAGE_DRIVER"

# name -> (module, class). Classes are constructed without arguments; `rootless` is then set as an attribute
# (every driver has it, see StorageDriver), so a driver that does not care about it needs no parameter.
DRIVERS: dict[str, tuple[str, str]] = {
    "overlay": ("corert.drivers.storage.overlay", "OverlayDriver"),
    "vfs": ("corert.drivers.storage.vfs", "VfsDriver"),
    "fuse": ("corert.drivers.storage.fuse", "FuseOverlayDriver"),
}

__all__ = ["DEFAULT_DRIVER", "DRIVERS", "PreparedRootfs", "StorageDriver", "default_driver_name", "get_driver",
           "load_prepared"]


def default_driver_name() -> str:
    return os.environ.get(ENV_DRIVER) or DEFAULT_DRIVER


def get_driver(name: str | None = None, *, rootless: bool = False, volatile: bool = False) -> StorageDriver:
    """The driver registered as `name` (None: $CORERT_STORAGE_DRIVER, else DEFAULT_DRIVER); volatile: see
    StorageDriver.volatile."""
    name = name or default_driver_name()
    try:
        module_name, class_name = DRIVERS[name]
    except KeyError:
        raise UsageError(f"unknown storage driver {name!r} (choose from {', '.join(sorted(DRIVERS))})") from None
    import importlib

    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as e:
        # Only the optional drivers can be missing (fuse needs pyfuse3 and its own module).
        raise HostUnsupported(f"storage driver {name!r} is not available: {e}") from None
    driver = cls()
    driver.rootless = rootless
    driver.volatile = volatile
    return driver


def load_prepared(state: dict) -> PreparedRootfs:
    """A PreparedRootfs from its state() (written by whichever process prepared it), ready for teardown."""
    return get_driver(state["driver"], rootless=bool(state.get("rootless"))).load(state)

