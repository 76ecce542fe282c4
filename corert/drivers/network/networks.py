"""User-defined bridge networks: the registry behind `corert network create/ls/inspect/rm`, `--net NAME`.

A network is a definition only: name, id, subnet, gateway, internal. It lives in one JSON file under the
data root (<data root>/networks/networks.json, /var/lib/corert/networks for root) so it survives reboots.
Its kernel objects (bridge `corert-<id8>`, nft table of the same name) are made by the bridge driver on
first use and removed when the last container leaves, or by `network rm`; what is attached is the bridge's
address book under /run/corert-net, as for the default bridge.

Lock order: the registry, then a bridge's book (never the other way), so `network rm` cannot race a
container joining the network it removes.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from corert.drivers.network import NetOptions, Prepared
from corert.drivers.network.bridge import (BRIDGE, BridgeDriver, BridgeNet, default_net, drop_if_unused,
                                           host_route_overlap, parse_subnet, reclaim_stale, remove_bridge)
from corert.drivers.network.leases import JsonBook, LeaseBook, network_root
from corert.errors import HostUnsupported, UsageError

# Names the --net flag already gives a meaning (and docker's own).
RESERVED = {"bridge", "host", "none", "container", "slirp", "slirp4netns", "pasta", "default"}
POOL = ipaddress.IPv4Network("10.89.0.0/16")   # automatic subnets: the first free /24 of it
POOL_PREFIX = 24
BRIDGE_PREFIX = "corert-"


def registry_root() -> Path:
    from corert.images.layout import default_store_root
    return default_store_root() / "networks"


class Registry(JsonBook):
    defaults = {"networks": {}}

    def __init__(self, root: Path | str | None = None) -> None:
        super().__init__(root or registry_root(), "networks")


def require_root(verb: str) -> None:
    if os.geteuid() != 0:
        raise HostUnsupported(f"{verb}: user-defined networks need root (rootless containers can use "
                              "--net=slirp or --net=pasta)")


def _net(entry: dict) -> BridgeNet:
    return BridgeNet(entry["name"], entry["bridge"], entry["subnet"], entry["gateway"], table=entry["bridge"],
                     internal=bool(entry.get("internal")), user=True, id=entry["id"])


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
        raise UsageError(f"invalid network name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    if name in RESERVED:
        raise UsageError(f"network name {name!r} is reserved")


def _taken(networks: dict) -> list[tuple[ipaddress.IPv4Network, str]]:
    """Subnets already in use by corert: the default bridge's and every registered network's."""
    used = [(ipaddress.IPv4Network(default_net().subnet), "the default bridge network")]
    used += [(ipaddress.IPv4Network(e["subnet"]), f"network {n}") for n, e in networks.items()]
    return used


def _clash(subnet: ipaddress.IPv4Network, networks: dict) -> str | None:
    for other, owner in _taken(networks):
        if other.overlaps(subnet):
            return f"{owner} ({other})"
    route = host_route_overlap(subnet)
    return f"the host route {route}" if route else None


def _free_subnet(networks: dict) -> ipaddress.IPv4Network:
    for candidate in POOL.subnets(new_prefix=POOL_PREFIX):
        if _clash(candidate, networks) is None:
            return candidate
    raise UsageError(f"no free /{POOL_PREFIX} left in {POOL}: pass --subnet")


def create(name: str, subnet: str | None = None, gateway: str | None = None, internal: bool = False,
           registry: Registry | None = None) -> dict:
    """Define a network (no kernel object yet). Refuses an existing name or an overlapping subnet."""
    require_root("corert network create")
    _check_name(name)
    if gateway and not subnet:
        raise UsageError("--gateway needs --subnet")
    with (registry or Registry()).locked() as data:
        networks = data["networks"]
        if name in networks:
            raise UsageError(f"network {name} already exists")
        if subnet:
            net = parse_subnet(subnet, f"invalid --subnet {subnet!r}")
            clash = _clash(net, networks)
            if clash:
                raise UsageError(f"subnet {net} overlaps {clash}")
        else:
            net = _free_subnet(networks)
        if gateway:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError as e:
                raise UsageError(f"invalid --gateway {gateway!r}: {e}") from None
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise UsageError(f"--gateway {gw} is not a host address of {net}")
        else:
            gw = net.network_address + 1
        net_id = os.urandom(32).hex()
        entry = {"name": name, "id": net_id, "driver": "bridge", "subnet": str(net), "gateway": str(gw),
                 "internal": internal, "bridge": BRIDGE_PREFIX + net_id[:8]}
        networks[name] = entry
    return entry


def _find_entry(data: dict, ref: str) -> dict:
    """By name, full id or unique id prefix (as docker)."""
    networks = data["networks"]
    if ref in networks:
        return networks[ref]
    found = [e for e in networks.values() if e["id"].startswith(ref)] if len(ref) >= 4 else []
    if len(found) == 1:
        return found[0]
    raise UsageError(f"network {ref} not found")


def resolve(ref: str, data: dict) -> BridgeNet:
    """A network by name or id: `bridge` is the default network, anything else comes from `data` (the
    registry, read by the caller under its lock)."""
    if ref == "bridge":
        return default_net()
    return _net(_find_entry(data, ref))


def attached(net: BridgeNet) -> dict:
    """ip -> lease of the containers on `net` now (stale leases of vanished containers reclaimed first)."""
    book = LeaseBook(network_root(), net.bridge)
    if not book.path.exists():
        return {}
    with book.locked() as data:
        reclaim_stale(data, net)
        drop_if_unused(data, net)
        return dict(data["leases"])


def remove(ref: str, registry: Registry | None = None) -> str:
    """`network rm`: refused while containers are attached; removes its bridge and nft table if any."""
    if ref == "bridge":
        raise UsageError("bridge is a pre-defined network and cannot be removed")
    require_root("corert network rm")
    with (registry or Registry()).locked() as data:
        entry = _find_entry(data, ref)
        net = _net(entry)
        book = LeaseBook(network_root(), net.bridge)
        with book.locked() as leases:
            reclaim_stale(leases, net)
            if leases["leases"]:
                names = ", ".join(sorted(lease.get("name") or lease["id"][:12] for lease in leases["leases"].values()))
                raise UsageError(f"network {net.name} has active endpoints ({names})")
            remove_bridge(leases, net)
        book.remove()     # the registry lock keeps every other user of this book out
        del data["networks"][entry["name"]]
    return entry["name"]


def list_networks(registry: Registry | None = None) -> list[dict]:
    """The default bridge network, then the user networks by name: name, id, driver, subnet, ..."""
    rows = [_default_entry(default_net())]
    data = (registry or Registry()).read() if os.geteuid() == 0 else {"networks": {}}
    rows += [data["networks"][n] for n in sorted(data["networks"])]
    return rows


def _default_entry(default: BridgeNet) -> dict:
    """The default bridge network as a registry entry (it has none of its own)."""
    import hashlib
    return {"name": "bridge", "id": hashlib.sha256(BRIDGE.encode()).hexdigest(), "driver": "bridge",
            "subnet": default.subnet, "gateway": default.gateway, "internal": False, "bridge": BRIDGE}


def inspect(ref: str, registry: Registry | None = None) -> dict:
    """docker-like `network inspect`: the definition and the attached containers."""
    if ref == "bridge":
        net = default_net()
        entry = _default_entry(net)
    else:
        entry = _find_entry((registry or Registry()).read(), ref)
        net = _net(entry)
    containers = {}
    for ip, lease in attached(net).items():
        containers[lease["id"]] = {"Name": lease.get("name", ""), "IPv4Address": f"{ip}/{net.network.prefixlen}",
                                   "Interface": lease.get("ifname", "eth0"), "HostVeth": lease.get("veth", "")}
    return {"Name": entry["name"], "Id": entry["id"], "Driver": "bridge", "Internal": bool(entry.get("internal")),
            "IPAM": {"Config": [{"Subnet": entry["subnet"], "Gateway": entry["gateway"]}]},
            "Options": {"bridge": entry["bridge"]}, "Containers": containers}


class UserNetworkDriver(BridgeDriver):
    """--net NAME of a user network: the bridge driver, with the registry locked while the address is
    taken (so the network cannot be removed in between)."""

    def __init__(self, name: str) -> None:
        super().__init__(None)
        self.name = name

    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        require_root(f"--net={self.name}")
        with Registry().locked(write=False) as data:     # held so `network rm` waits; never rewritten
            if self.name not in data["networks"]:
                raise UsageError(f"unknown network {self.name!r}: use none, host, bridge, slirp, pasta, "
                                 "container:NAME or a network made with `corert network create`")
            self.net = _net(data["networks"][self.name])
            return super().prepare(container_id, data_dir, name, opts)
