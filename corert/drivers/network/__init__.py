"""Network drivers, chosen with `--net`: none, host, bridge, slirp, pasta, container:NAME.

A driver works in two steps because the front door must know the mounts (/etc/hosts, /etc/hostname,
/etc/resolv.conf) before the OCI config is written, while wiring needs the container's netns:
  prepare(container_id, data_dir, name, opts) -> Prepared   (before create: namespace, mounts, handle)
  handle.attach(pid) -> dict                                (engine create, the child waits)
  load_attachment(dict).teardown()                          (engine delete, from any process)
This module is imported on every front-door run (none is the default): it imports only light stdlib;
pyroute2, subprocess and the user-mode tools are loaded by the drivers that need them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Protocol

from corert.errors import UsageError

# --net name -> "module:class" (lazy: bridge pulls in pyroute2).
_DRIVERS = {
    "none": "corert.drivers.network.simple:NoneDriver",
    "host": "corert.drivers.network.simple:HostDriver",
    "container": "corert.drivers.network.simple:ContainerDriver",
    "bridge": "corert.drivers.network.bridge:BridgeDriver",
    "slirp": "corert.drivers.network.slirp:SlirpDriver",
    "slirp4netns": "corert.drivers.network.slirp:SlirpDriver",
    "pasta": "corert.drivers.network.pasta:PastaDriver",
}


@dataclass(frozen=True)
class PortMapping:
    """One `-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]`."""

    host_port: int
    container_port: int
    proto: str = "tcp"
    host_ip: str = ""        # "" = every host address

    def as_list(self) -> list:
        return [self.proto, self.host_ip, self.host_port, self.container_port]

    @classmethod
    def from_list(cls, row: list) -> "PortMapping":
        proto, host_ip, host_port, container_port = row
        return cls(int(host_port), int(container_port), proto, host_ip)


def parse_publish(spec: str) -> PortMapping:
    """Parse docker's -p syntax (the forms with an explicit host port)."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"invalid -p {spec!r}: protocol must be tcp or udp")
    parts = body.rsplit(":", 2)
    if len(parts) == 2:
        host_ip, host_port, ctr_port = "", parts[0], parts[1]
    elif len(parts) == 3:
        host_ip, host_port, ctr_port = parts
    else:
        raise UsageError(f"invalid -p {spec!r}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
    ports = []
    for text in (host_port, ctr_port):
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise UsageError(f"invalid -p {spec!r}: {text!r} is not a port number (1-65535)")
        ports.append(int(text))
    if host_ip:
        import ipaddress
        try:
            host_ip = str(ipaddress.IPv4Address(host_ip))
        except ValueError:
            raise UsageError(f"invalid -p {spec!r}: {host_ip!r} is not an IPv4 address") from None
    return PortMapping(ports[0], ports[1], proto, host_ip)


@dataclass
class NetOptions:
    """What the front door tells a driver besides the container id and name."""

    publish: list[PortMapping] = field(default_factory=list)
    hostname: str | None = None
    state_dir: str | None = None     # the container's OCI state dir: gone after a crash -> lease reclaimable
    # container:NAME -> (pid of NAME's running init, NAME's data dir); the front door knows the store.
    resolve_container: Callable[[str], tuple[int, str | None]] | None = None


class Attachment(Protocol):
    def attach(self, pid: int) -> dict: ...
    def teardown(self) -> None: ...


@dataclass
class Prepared:
    """A driver's answer to prepare: how the config must look, and what to call once the netns exists."""

    namespace: dict | None                       # the OCI "network" namespace entry; None = the host's
    mounts: list[dict] = field(default_factory=list)
    hostname: str | None = None                  # set in the config when not None
    handle: Attachment | None = None

    def teardown(self) -> None:
        """Undo prepare (and attach, if it ran): releases the address lease, rules, helper processes."""
        if self.handle is not None:
            self.handle.teardown()


def driver_name(net: str) -> tuple[str, str]:
    """`container:NAME` -> ("container", "NAME"); everything else -> (net, "")."""
    kind, sep, arg = net.partition(":")
    if sep and kind != "container":
        raise UsageError(f"invalid --net {net!r}")
    if kind == "container" and not arg:
        raise UsageError("--net=container:NAME needs a container name")
    return kind, arg


def get_driver(net: str):
    """The driver object for a --net value (imports its module on first use)."""
    kind, arg = driver_name(net)
    target = _DRIVERS.get(kind)
    if target is None:   # a user-defined network (`corert network create`), looked up when prepared
        from corert.drivers.network.networks import UserNetworkDriver
        return UserNetworkDriver(net)
    module, _, cls = target.partition(":")
    driver_cls = getattr(importlib.import_module(module), cls)
    return driver_cls(arg) if kind == "container" else driver_cls()


# record.network["driver"] -> "module:function(state) -> object with teardown()".
_LOADERS = {
    "bridge": "corert.drivers.network.bridge:load_attachment",
    "slirp": "corert.drivers.network.slirp:load_attachment",
    "pasta": "corert.drivers.network.pasta:load_attachment",
}


class _Nothing:
    def teardown(self) -> None:
        pass


def load_attachment(state: dict | None):
    """Rebuild the attachment that created `state` (a record's `network`), for teardown by `delete`."""
    target = _LOADERS.get((state or {}).get("driver", ""))
    if target is None:
        return _Nothing()
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)(state)


def bind_file(source: str, destination: str) -> dict:
    """The OCI mount of one generated file (rw like docker's, private so nothing propagates)."""
    return {"destination": destination, "type": "bind", "source": source, "options": ["rbind", "rprivate", "rw"]}
