"""`corert network connect/disconnect`: one more interface (eth1, eth2, ...) in a running container.

connect: a veth pair whose peer is born in the container's netns under the next free ethN, an address from
the network's book, no default route (the container keeps the one of its first network), the bridge made
if it was not there. disconnect deletes the host end (the kernel deletes the peer with it) and the lease,
and the bridge of a user network when it was its last container. A connected container is marked
in its state (extra["connected"]), and deleting it (engine.delete.destroy, whichever CLI or API deletes it)
calls release_container, which releases whatever leases are left in its name.
"""
from __future__ import annotations

import os

from corert.drivers.network.bridge import (BridgeNet, books, drop_if_unused, held_by, netns_iproute, new_lease,
                                           plug, reclaim_stale, refresh_hosts, release_held, take_address)
from corert.drivers.network.leases import LeaseBook, network_root
from corert.drivers.network.networks import Registry, require_root, resolve
from corert.errors import InvalidState, UsageError


def _label(record) -> str:
    return record.extra.get("name") or record.id[:12]


def _own_netns_pid(store, record) -> int:
    """The init pid of a running container that has a network namespace of its own (bridge or none)."""
    from corert.engine.state import live_status

    status = live_status(store, record)
    if status not in ("created", "running", "paused"):
        raise InvalidState(f"container {_label(record)} is not running")
    driver = (record.network or {}).get("driver")
    if driver != "bridge":
        try:
            mine = os.stat(f"/proc/{record.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        except FileNotFoundError:
            raise InvalidState(f"container {_label(record)} is not running") from None
        if driver is not None or not mine or _joins_other_netns(record):
            raise UsageError(f"container {_label(record)} shares another network namespace (--net={driver or 'host'}"
                             " or container:NAME): it cannot be connected to a network")
    return record.pid


def _joins_other_netns(record) -> bool:
    from corert.spec.load import load_config
    namespaces = ((load_config(record.bundle).get("linux") or {}).get("namespaces")) or []
    return any(ns.get("type") == "network" and ns.get("path") for ns in namespaces)


def _next_ifname(pid: int) -> str:
    with netns_iproute(pid) as ipr:
        names = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    n = 0
    while f"eth{n}" in names:
        n += 1
    return f"eth{n}"


def connect(store, record, network: str) -> str:
    """Attach a running container to `network` (name or id); returns the new interface's address."""
    require_root("corert network connect")
    # Registry before book (see networks.py); it is only held, so `network rm` waits, never rewritten.
    with Registry().locked(write=False) as registry:
        net = resolve(network, registry)
        with store.lock(record.id, timeout=10):
            record = store.load(record.id)
            pid = _own_netns_pid(store, record)
            if not record.extra.get("connected"):   # before the lease: a delete must look for it
                record.extra["connected"] = True
                store.save(record)
            with LeaseBook(network_root(), net.bridge).locked() as data:
                reclaim_stale(data, net)
                if held_by(data, record.id):
                    raise UsageError(f"container {_label(record)} is already connected to network {net.name}")
                ip = take_address(data, net)
                ifname = _next_ifname(pid)
                lease = new_lease(record.id, record.extra.get("name", ""), record.extra.get("data_dir", ""),
                                  os.fspath(store.container_dir(record.id)), net, ifname,
                                  hostname=record.extra.get("name") or record.id[:12])
                data["leases"][ip] = lease
                try:
                    plug(data, net, pid, lease, ip, default_route=ifname == "eth0")
                except BaseException:
                    del data["leases"][ip]
                    drop_if_unused(data, net)
                    raise
                refresh_hosts(data)
    return ip


def disconnect(store, record, network: str) -> None:
    """Remove the container's interface on `network` (its veth, address, lease)."""
    require_root("corert network disconnect")
    with Registry().locked(write=False) as registry:
        net = resolve(network, registry)
        with store.lock(record.id, timeout=10):
            with LeaseBook(network_root(), net.bridge).locked() as data:
                if not held_by(data, record.id):
                    raise UsageError(f"container {_label(record)} is not connected to network {net.name}")
                release_held(data, net, record.id)


def release_container(container_id: str) -> None:
    """Release every lease of a deleted container (its own attachment's is gone already).

    Each book is locked on its own, never two at once. Books are first read without the lock (atomic
    renames), so a delete only locks the books that name the container."""
    try:
        bridges = books()
    except OSError:          # no network root we may read (rootless): nothing of ours there
        return
    for bridge in bridges:
        book = LeaseBook(network_root(), bridge)
        if not held_by(book.read(), container_id):
            continue
        with book.locked() as data:
            if "net" not in data:
                continue
            release_held(data, BridgeNet.from_dict(data["net"]), container_id)
