"""Bridge networks (root): the default `bridge` (corert0) and user-defined ones (`corert network create`).

One veth pair per container and network, NAT, published ports. A BridgeNet says which bridge, subnet,
gateway and nft table; the default one comes from CORERT_BRIDGE_SUBNET, user ones from the registry
(corert.drivers.network.networks). Every bridge has its own address book (leases.LeaseBook), which also
records the BridgeNet, so any process can tear the bridge down from the book alone.

prepare (before the config is written): under the lease lock, reclaim stale leases, take the lowest free
address, write /etc/hosts (own names + every peer on the bridge; peers' files are rewritten too, so names
resolve both ways without a DNS server), /etc/hostname, /etc/resolv.conf (the host's non-loopback servers).
attach(pid) (the child waits before pivot_root): create the bridge + NAT table if missing, a veth pair whose
peer is born inside the container's netns as eth0 (no temporary name on the host), address + default
route inside, DNAT rules for -p. teardown: veth, rules, lease, peers' hosts lines (the container's
interfaces on other networks, from `corert network connect`, are released by engine.delete's destroy through
connect.release_container). The default bridge stays (like docker0) until `corert network prune` finds no
lease left; a user network's bridge goes with its last container.
Crash safety: a veth dies with its netns; leases of vanished containers are reclaimed (with their rules and
any veth) on the next prepare or prune; rules and veths that no lease names are removed on attach.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from corert.drivers.network import NetOptions, PortMapping, Prepared, nat
from corert.drivers.network.files import host_nameservers, hosts_text, rewrite_in_place, write_files
from corert.drivers.network.leases import LeaseBook, allocate, is_stale, network_root, owner_stamp
from corert.errors import ResourceError, UsageError

BRIDGE = "corert0"
DEFAULT_SUBNET = "10.88.0.0/16"
SUBNET_ENV = "CORERT_BRIDGE_SUBNET"
VETH_PREFIX = "veth"          # the default bridge's veths: veth + 11 characters of the container id
USER_VETH_PREFIX = "vc"       # user networks: vc + 9 of the container id + 4 of the network id
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class BridgeNet:
    """One bridge network, as the kernel objects it needs: bridge name, subnet, gateway, nft table."""

    name: str
    bridge: str
    subnet: str
    gateway: str
    table: str = nat.TABLE
    internal: bool = False     # no NAT and no forwarding to or from outside the bridge
    user: bool = False         # user-defined: isolated from other corert bridges, removed when unused
    id: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "bridge": self.bridge, "subnet": self.subnet, "gateway": self.gateway,
                "table": self.table, "internal": self.internal, "user": self.user, "net_id": self.id}

    @classmethod
    def from_dict(cls, d: dict) -> "BridgeNet":
        # Records written before user networks existed name only bridge, subnet and gateway.
        return cls(d.get("name") or "bridge", d["bridge"], d["subnet"], d["gateway"],
                   d.get("table", nat.TABLE), bool(d.get("internal")), bool(d.get("user")), d.get("net_id", ""))

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)


def parse_subnet(text: str, what: str) -> ipaddress.IPv4Network:
    """An IPv4 subnet with room for a gateway and containers; UsageError naming `what` otherwise."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None
    if net.num_addresses < 8:
        raise UsageError(f"{what}: the subnet is too small (at least a /29)")
    return net


def configured_subnet() -> ipaddress.IPv4Network:
    text = os.environ.get(SUBNET_ENV) or DEFAULT_SUBNET
    return parse_subnet(text, f"{SUBNET_ENV}={text}")


def default_net() -> BridgeNet:
    subnet = configured_subnet()
    return BridgeNet("bridge", BRIDGE, str(subnet), str(subnet.network_address + 1))


def veth_name(container_id: str, net: BridgeNet | None = None) -> str:
    """The host end of a container's veth on `net` (15 characters: IFNAMSIZ - 1)."""
    if net is None or not net.user:
        return VETH_PREFIX + container_id[:11]
    return USER_VETH_PREFIX + container_id[:9] + net.id[:4]


def _lease_veth(lease: dict) -> str:
    return lease.get("veth") or veth_name(lease["id"])


def _names(lease: dict) -> str:
    return " ".join(dict.fromkeys(n for n in (lease.get("hostname"), lease.get("name")) if n))


def refresh_hosts(data: dict) -> None:
    """Rewrite every container's /etc/hosts from the book: its own line, then all peers."""
    leases = data["leases"]
    for ip, lease in leases.items():
        if lease.get("hosts_file"):
            peers = [(other_ip, _names(other)) for other_ip, other in leases.items() if other_ip != ip]
            rewrite_in_place(lease["hosts_file"], hosts_text([(ip, _names(lease))], peers))


def _delete_link(name: str) -> None:
    if os.path.exists(f"/sys/class/net/{name}"):   # checked first: most veths die with their netns
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=name):
                _delete_index(ipr, index)


def _delete_index(ipr, index: int) -> None:  # noqa: ANN001 - an IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        # A veth goes with its peer's netns, which the kernel tears down asynchronously after the
        # container's last process: it may vanish between the lookup and the delete.
        if e.code != errno.ENODEV:
            raise


def release(lease: dict, net: BridgeNet) -> None:
    """Undo what a lease may own on the host: its veth (if its netns still lives) and its DNAT rules."""
    _delete_link(_lease_veth(lease))
    if lease.get("ports") and nat.table_exists(net.table):
        nat.delete_rules(only={lease["id"]}, table=net.table)


def held_by(data: dict, container_id: str) -> list[str]:
    """The addresses the container holds in the book."""
    return [ip for ip, lease in data["leases"].items() if lease["id"] == container_id]


def release_held(data: dict, net: BridgeNet, container_id: str) -> None:
    """Release the container's leases (book locked by the caller), rewrite the peers' hosts files, and
    remove a user network's bridge if that was its last container."""
    for ip in held_by(data, container_id):
        release(data["leases"].pop(ip), net)
    refresh_hosts(data)
    drop_if_unused(data, net)


def reclaim_stale(data: dict, net: BridgeNet) -> list[str]:
    """Release the leases whose container is gone after a crash; returns their addresses."""
    gone = [ip for ip, lease in data["leases"].items() if is_stale(lease)]
    for ip in gone:
        release(data["leases"].pop(ip), net)
    return gone


def take_address(data: dict, net: BridgeNet) -> str:
    """The lowest free address of `net` (book locked by the caller), recording `net` in the book so any
    process can tear the bridge down from it."""
    data["subnet"] = net.subnet
    data["net"] = net.as_dict()
    return allocate(data, (str(h) for h in net.network.hosts()), {net.gateway})


def new_lease(container_id: str, name: str, data_dir: str, state_dir: str | None, net: BridgeNet,
              ifname: str, **more) -> dict:
    """A lease: who holds the address (for staleness), which veth and interface it wires."""
    return {"id": container_id, "name": name, "data_dir": str(data_dir), "state_dir": state_dir,
            "owner": owner_stamp(), "veth": veth_name(container_id, net), "ifname": ifname, "ports": [],
            **more}


class BridgeDriver:
    """--net=bridge, or (with a BridgeNet from the registry) --net=NAME of a user network."""

    def __init__(self, net: BridgeNet | None = None) -> None:
        self.net = net

    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        net = self.net or default_net()
        if net.internal and opts.publish:
            raise UsageError(f"network {net.name} is internal: -p/--publish cannot reach it")
        hostname = opts.hostname or container_id[:12]
        book = LeaseBook(network_root(), net.bridge)
        with book.locked() as data:
            reclaim_stale(data, net)
            if self.net is None and data.get("subnet") != net.subnet:
                if data["leases"]:
                    raise UsageError(f"bridge {BRIDGE} uses {data['subnet']} while containers are attached; "
                                     f"remove them before changing {SUBNET_ENV}")
                remove_bridge(data, net)     # nothing attached: attach re-creates it with the new subnet
            _check_ports(data, opts.publish, net.bridge)
            ip = take_address(data, net)
            hosts_file = str(Path(data_dir) / "net" / "hosts")
            lease = new_lease(container_id, name, data_dir, opts.state_dir, net, "eth0", hostname=hostname,
                              hosts_file=hosts_file)
            lease["ports"] = [p.as_list() for p in opts.publish]
            data["leases"][ip] = lease
            mounts = write_files(data_dir, hostname, "", host_nameservers())
            refresh_hosts(data)
        state = {"driver": "bridge", "id": container_id, "root": str(book.root), **net.as_dict(),
                 "ip": ip, "veth": lease["veth"], "ports": lease["ports"]}
        return Prepared(namespace={"type": "network"}, mounts=mounts, hostname=hostname,
                        handle=BridgeAttachment(state))


def _check_ports(data: dict, ports: list[PortMapping], bridge: str) -> None:
    """Host ports are one namespace for all bridges: the other books are read without their locks."""
    if not ports:
        return
    everyone = list(data["leases"].values())
    for other in books():
        if other != bridge:
            everyone += LeaseBook(network_root(), other).read()["leases"].values()
    used = {(row[0], row[2]): lease["name"] for lease in everyone for row in lease.get("ports", [])}
    seen = set()
    for p in ports:
        key = (p.proto, p.host_port)
        if key in used:
            raise UsageError(f"host port {p.host_port}/{p.proto} is already published by container {used[key]}")
        if key in seen:
            raise UsageError(f"host port {p.host_port}/{p.proto} is published twice")
        seen.add(key)


def remove_bridge(data: dict, net: BridgeNet) -> list[str]:
    """Delete the bridge and its NAT table, and restore ip_forward once no corert bridge is left (only
    when no lease is left)."""
    done = []
    if os.path.exists(f"/sys/class/net/{net.bridge}"):
        _delete_link(net.bridge)
        done.append(f"bridge {net.bridge}")
    if nat.table_exists(net.table):
        nat.delete_table(net.table)
        done.append(f"nft table ip {net.table}")
    _forward_restore(data)
    data.pop("subnet", None)
    return done


def _overlapping_route(ipr, subnet: ipaddress.IPv4Network, bridge: str) -> str | None:
    """A host route (not ours) that overlaps the subnet: the bridge would hijack or lose that traffic."""
    names = ipr.link_lookup(ifname=bridge)
    for route in ipr.get_routes(family=2):
        dst = route.get_attr("RTA_DST")
        if dst is None or route["dst_len"] == 0:
            continue
        other = ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False)
        oif = route.get_attr("RTA_OIF")
        if other.overlaps(subnet) and not (names and oif == names[0]):
            return str(other)
    return None


def host_route_overlap(subnet: ipaddress.IPv4Network) -> str | None:
    """A host route overlapping `subnet` (checked by `network create` before choosing a subnet)."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return _overlapping_route(ipr, subnet, "")


def _write_sysctl(path: str, value: str) -> str:
    with open(path) as f:
        before = f.read().strip()
    if before != value:
        with open(path, "w") as f:
            f.write(value)
    return before


_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def _forward_lock() -> int:
    root = network_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(root / "ip_forward.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _forward_on() -> None:
    """ip_forward=1, remembering the host's value once for all corert bridges (they share the sysctl)."""
    fd = _forward_lock()
    try:
        saved = network_root() / "ip_forward.before"
        before = _write_sysctl(_FORWARD, "1")
        if not saved.exists():
            saved.write_text(before)
    finally:
        os.close(fd)


def _forward_restore(data: dict) -> None:
    """Put back the host's ip_forward when the last corert bridge is gone."""
    legacy = data.pop("ip_forward_before", None)      # books written before the value was shared
    fd = _forward_lock()
    try:
        if any(_is_corert_bridge(n) for n in os.listdir("/sys/class/net")):
            return
        saved = network_root() / "ip_forward.before"
        before = saved.read_text().strip() if saved.exists() else legacy
        if before is not None:
            _write_sysctl(_FORWARD, before)
        saved.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _is_corert_bridge(name: str) -> bool:
    return name.startswith("corert") and os.path.isdir(f"/sys/class/net/{name}/bridge")


def _ensure_bridge(ipr, net: BridgeNet) -> int:
    """The bridge (up, gateway address, route_localnet), forwarding on, and the NAT table. Idempotent."""
    found = ipr.link_lookup(ifname=net.bridge)
    subnet = net.network
    if not found:
        clash = _overlapping_route(ipr, subnet, net.bridge)
        if clash:
            fix = f"set {SUBNET_ENV} to a free range" if not net.user else "recreate the network elsewhere"
            raise ResourceError(f"bridge subnet {subnet} overlaps the host route {clash}: {fix}")
        ipr.link("add", ifname=net.bridge, kind="bridge")
        found = ipr.link_lookup(ifname=net.bridge)
    index = found[0]
    have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
    if net.gateway not in have:
        ipr.addr("add", index=index, address=net.gateway, prefixlen=subnet.prefixlen)
    ipr.link("set", index=index, state="up")
    # Published ports used from 127.0.0.1: the DNATed packet leaves through the bridge with a loopback source.
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet", "1")
    _forward_on()     # outbound NAT and hairpin are routed
    if not nat.table_exists(net.table):
        nat.create_table(net.bridge, net.subnet, table=net.table, internal=net.internal, isolate=net.user)
    return index


def _remove_strays(ipr, data: dict, bridge_index: int, net: BridgeNet) -> None:
    """veths on the bridge and DNAT rules that no lease names (left by a crash between steps)."""
    live = {lease["id"] for lease in data["leases"].values()}
    wanted = {_lease_veth(lease) for lease in data["leases"].values()}
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME")
        if (link.get_attr("IFLA_MASTER") == bridge_index and name.startswith((VETH_PREFIX, USER_VETH_PREFIX))
                and name not in wanted):
            _delete_index(ipr, link["index"])
    nat.delete_rules(keep=live, table=net.table)


def netns_iproute(pid: int):
    """An IPRoute socket inside the netns of `pid`.

    The netlink socket is opened after setns() on this thread and keeps talking to that netns after we
    switch back: no helper process, unlike pyroute2's own netns support.
    """
    from pyroute2 import IPRoute
    from corert import _fastpath

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _fastpath.setns(target, CLONE_NEWNET)
        try:
            return IPRoute()
        finally:
            _fastpath.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


def _configure_inside(pid: int, ifname: str, ip: str, prefixlen: int, gateway: str | None) -> None:
    """Address, link up and (for the first interface of a non-internal network) the default route."""
    with netns_iproute(pid) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=index, address=ip, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")
        if gateway:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


def plug(data: dict, net: BridgeNet, pid: int, lease: dict, ip: str, default_route: bool) -> None:
    """Wire one lease (book locked by the caller): bridge if missing, veth into the netns of `pid` as
    lease["ifname"], address, route, published ports. On failure the veth is gone again."""
    from pyroute2 import IPRoute

    veth = lease["veth"]
    with IPRoute() as ipr:
        bridge_index = _ensure_bridge(ipr, net)
        _remove_strays(ipr, data, bridge_index, net)
        ipr.link("add", ifname=veth, kind="veth", peer={"ifname": lease["ifname"], "net_ns_pid": pid})
        try:
            veth_index = ipr.link_lookup(ifname=veth)[0]
            ipr.link("set", index=veth_index, master=bridge_index, state="up")
            # Hairpin: a container reaching its own published port through the host. With br_netfilter
            # the DNATed frame is bridged back out of the port it came in on.
            _write_sysctl(f"/sys/class/net/{veth}/brport/hairpin_mode", "1")
            gateway = net.gateway if default_route and not net.internal else None
            _configure_inside(pid, lease["ifname"], ip, net.network.prefixlen, gateway)
            nat.add_ports(lease["id"], ip, [PortMapping.from_list(r) for r in lease.get("ports", [])],
                          table=net.table)
        except BaseException:
            _delete_link(veth)
            raise


def drop_if_unused(data: dict, net: BridgeNet) -> list[str]:
    """A user network's bridge and table go with its last lease (book locked by the caller)."""
    if net.user and not data["leases"]:
        return remove_bridge(data, net)
    return []


class BridgeAttachment:
    def __init__(self, state: dict) -> None:
        self.state = state
        self.net = BridgeNet.from_dict(state)

    def _book(self) -> LeaseBook:
        return LeaseBook(self.state["root"], self.net.bridge)

    def attach(self, pid: int) -> dict:
        st = self.state
        with self._book().locked() as data:
            lease = data["leases"].get(st["ip"])
            if not lease or lease["id"] != st["id"]:
                raise ResourceError(f"the address lease {st['ip']} of container {st['id'][:12]} was lost")
            plug(data, self.net, pid, lease, st["ip"], default_route=True)   # on failure, teardown follows
            lease["attached"] = True
        return dict(st)

    def teardown(self) -> None:
        st = self.state
        with self._book().locked() as data:
            if not held_by(data, st["id"]):
                # The lease was lost (reclaimed as stale): what it wired may still be there.
                release({"id": st["id"], "ports": st["ports"], "veth": st.get("veth")}, self.net)
            release_held(data, self.net, st["id"])


def load_attachment(state: dict) -> BridgeAttachment:
    return BridgeAttachment(state)


def books(root: Path | str | None = None) -> list[str]:
    """The bridges that have an address book (the default and every user network used since boot)."""
    base = Path(root or network_root())
    if not base.is_dir():
        return []
    return sorted(p.name[:-5] for p in base.glob("*.json") if not p.name.startswith("."))


def prune(root: Path | None = None) -> list[str]:
    """`corert network prune`: per bridge, reclaim stale leases and strays, and when no lease is left remove
    the bridge, its NAT table (and restore ip_forward after the last). One line per thing removed."""
    from pyroute2 import IPRoute

    done: list[str] = []
    for bridge in sorted(set(books(root)) | {BRIDGE}):
        book = LeaseBook(root or network_root(), bridge)
        with book.locked() as data:
            net = BridgeNet.from_dict(data["net"]) if "net" in data else default_net()
            for ip in reclaim_stale(data, net):
                done.append(f"lease {ip}")
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=net.bridge)
                if found:
                    _remove_strays(ipr, data, found[0], net)
                elif nat.table_exists(net.table):
                    nat.delete_rules(keep={lease["id"] for lease in data["leases"].values()}, table=net.table)
            if not data["leases"]:
                done += remove_bridge(data, net)
            refresh_hosts(data)
    return done
