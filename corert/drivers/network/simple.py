"""The drivers that wire nothing: none (own netns, loopback only), host (the host's netns), container:NAME
(another container's netns). The fast path brings lo up in every new netns."""
from __future__ import annotations

import os

from corert.drivers.network import NetOptions, Prepared, bind_file
from corert.errors import UsageError


def _no_ports(net: str, opts: NetOptions) -> None:
    if opts.publish:
        raise UsageError(f"-p/--publish needs --net=bridge, slirp or pasta (not --net={net})")


class NoneDriver:
    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        _no_ports("none", opts)
        return Prepared(namespace={"type": "network"})


class HostDriver:
    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        _no_ports("host", opts)
        return Prepared(namespace=None)


class ContainerDriver:
    """--net=container:NAME: join NAME's network namespace (its addresses, ports and /etc files stay NAME's)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        _no_ports(f"container:{self.target}", opts)
        if opts.hostname:
            raise UsageError("--hostname conflicts with --net=container:NAME (the network's owner names it)")
        if opts.resolve_container is None:
            raise UsageError("--net=container:NAME is only available on the front door")
        pid, owner_dir = opts.resolve_container(self.target)
        # Share the owner's generated /etc files too, as the names and addresses are the owner's.
        mounts = []
        if owner_dir:
            for fname in ("hosts", "hostname", "resolv.conf"):
                path = os.path.join(owner_dir, "net", fname)
                if os.path.exists(path):
                    mounts.append(bind_file(path, f"/etc/{fname}"))
        return Prepared(namespace={"type": "network", "path": f"/proc/{pid}/ns/net"}, mounts=mounts)
