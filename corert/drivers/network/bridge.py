"""--net=bridge (root): the `corert0` bridge, one veth pair per container, NAT, published ports.

prepare (before the config is written): under the lease lock, reclaim stale leases, take the lowest free
address, write /etc/hosts (own names + every peer on the bridge; peers' files are rewritten too, so names
resolve both ways without a DNS server), /etc/hostname, /etc/resolv.conf (the host's non-loopback servers).
attach(pid) (the child waits before pivot_root): create the bridge + NAT table if missing, a veth pair whose
peer is born inside the container's netns as eth0 (no temporary name on the host), address + default
route inside, DNAT rules for -p. teardown: veth, rules, lease, peers' hosts lines. The bridge itself stays
(like docker0) until `corert network prune` finds no lease left.
Crash safety: a veth dies with its netns; leases of vanished containers are reclaimed (with their rules and
any veth) on the next prepare or prune; rules and veths that no lease names are removed on attach.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from corert.drivers.network import NetOptions, PortMapping, Prepared, nat
from corert.drivers.network.files import host_nameservers, hosts_text, rewrite_in_place, write_files
from corert.drivers.network.leases import LeaseBook, allocate, is_stale, network_root, owner_stamp
from corert.errors import ResourceError, UsageError

BRIDGE = "corert0"
DEFAULT_SUBNET = "10.88.0.0/16"
SUBNET_ENV = "CORERT_BRIDGE_SUBNET"
VETH_PREFIX = "veth"
CLONE_NEWNET = 0x40000000


def configured_subnet() -> ipaddress.IPv4Network:
    text = os.environ.get(SUBNET_ENV) or DEFAULT_SUBNET
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise UsageError(f"{SUBNET_ENV}={text}: {e}") from None
    if net.num_addresses < 8:
        raise UsageError(f"{SUBNET_ENV}={text}: the subnet is too small (at least a /29)")
    return net


def veth_name(container_id: str) -> str:
    return VETH_PREFIX + container_id[:11]     # 15 characters: IFNAMSIZ - 1


def _names(lease: dict) -> str:
    return " ".join(dict.fromkeys(n for n in (lease.get("hostname"), lease.get("name")) if n))


def _refresh_hosts(data: dict) -> None:
    """Rewrite every container's /etc/hosts from the book: its own line, then all peers."""
    leases = data["leases"]
    for ip, lease in leases.items():
        if lease.get("hosts_file"):
            peers = [(other_ip, _names(other)) for other_ip, other in leases.items() if other_ip != ip]
            rewrite_in_place(lease["hosts_file"], hosts_text([(ip, _names(lease))], peers))


def _release(lease: dict) -> None:
    """Undo what a lease may own on the host: its veth (if its netns still lives) and its DNAT rules."""
    veth = veth_name(lease["id"])
    if os.path.exists(f"/sys/class/net/{veth}"):   # checked first: most veths die with their netns
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=veth):
                ipr.link("del", index=index)
    if lease.get("ports") and nat.table_exists():
        nat.delete_rules(only={lease["id"]})


def reclaim_stale(data: dict) -> list[str]:
    """Release the leases whose container is gone after a crash; returns their addresses."""
    gone = [ip for ip, lease in data["leases"].items() if is_stale(lease)]
    for ip in gone:
        _release(data["leases"].pop(ip))
    return gone


class BridgeDriver:
    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        subnet = configured_subnet()
        hostname = opts.hostname or container_id[:12]
        book = LeaseBook(network_root(), BRIDGE)
        with book.locked() as data:
            reclaim_stale(data)
            if data.get("subnet") != str(subnet):
                if data["leases"]:
                    raise UsageError(f"bridge {BRIDGE} uses {data['subnet']} while containers are attached; "
                                     f"remove them before changing {SUBNET_ENV}")
                remove_bridge(data)          # nothing attached: attach re-creates it with the new subnet
                data["subnet"] = str(subnet)
            _check_ports(data, opts.publish)
            gateway = str(subnet.network_address + 1)
            ip = allocate(data, (str(h) for h in subnet.hosts()), {gateway})
            hosts_file = str(Path(data_dir) / "net" / "hosts")
            lease = {"id": container_id, "name": name, "hostname": hostname, "data_dir": str(data_dir),
                     "state_dir": opts.state_dir, "owner": owner_stamp(), "hosts_file": hosts_file,
                     "ports": [p.as_list() for p in opts.publish]}
            data["leases"][ip] = lease
            mounts = write_files(data_dir, hostname, "", host_nameservers())
            _refresh_hosts(data)
        state = {"driver": "bridge", "id": container_id, "root": str(book.root), "bridge": BRIDGE, "ip": ip,
                 "subnet": str(subnet), "gateway": gateway, "veth": veth_name(container_id),
                 "ports": lease["ports"]}
        return Prepared(namespace={"type": "network"}, mounts=mounts, hostname=hostname,
                        handle=BridgeAttachment(state))


def _check_ports(data: dict, ports: list[PortMapping]) -> None:
    used = {(row[0], row[2]): lease["name"] for lease in data["leases"].values() for row in lease.get("ports", [])}
    seen = set()
    for p in ports:
        key = (p.proto, p.host_port)
        if key in used:
            raise UsageError(f"host port {p.host_port}/{p.proto} is already published by container {used[key]}")
        if key in seen:
            raise UsageError(f"host port {p.host_port}/{p.proto} is published twice")
        seen.add(key)


def remove_bridge(data: dict) -> list[str]:
    """Delete the bridge and the NAT table and restore ip_forward (only when no lease is left)."""
    done = []
    if os.path.exists(f"/sys/class/net/{BRIDGE}"):
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=BRIDGE):
                ipr.link("del", index=index)
        done.append(f"bridge {BRIDGE}")
    if nat.table_exists():
        nat.delete_table()
        done.append(f"nft table ip {nat.TABLE}")
    before = data.pop("ip_forward_before", None)
    if before is not None:
        _write_sysctl("/proc/sys/net/ipv4/ip_forward", before)
    data.pop("subnet", None)
    return done


def _overlapping_route(ipr, subnet: ipaddress.IPv4Network) -> str | None:
    """A host route (not ours) that overlaps the subnet: the bridge would hijack or lose that traffic."""
    for route in ipr.get_routes(family=2):
        dst = route.get_attr("RTA_DST")
        if dst is None or route["dst_len"] == 0:
            continue
        other = ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False)
        oif = route.get_attr("RTA_OIF")
        names = ipr.link_lookup(ifname=BRIDGE)
        if other.overlaps(subnet) and not (names and oif == names[0]):
            return str(other)
    return None


def _write_sysctl(path: str, value: str) -> str:
    with open(path) as f:
        before = f.read().strip()
    if before != value:
        with open(path, "w") as f:
            f.write(value)
    return before


def _ensure_bridge(ipr, data: dict, subnet: ipaddress.IPv4Network, gateway: str) -> int:
    """The bridge (up, gateway address, route_localnet), forwarding on, and the NAT table. Idempotent."""
    found = ipr.link_lookup(ifname=BRIDGE)
    if not found:
        clash = _overlapping_route(ipr, subnet)
        if clash:
            raise ResourceError(f"bridge subnet {subnet} overlaps the host route {clash}: "
                                f"set {SUBNET_ENV} to a free range")
        ipr.link("add", ifname=BRIDGE, kind="bridge")
        found = ipr.link_lookup(ifname=BRIDGE)
    index = found[0]
    have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
    if gateway not in have:
        ipr.addr("add", index=index, address=gateway, prefixlen=subnet.prefixlen)
    ipr.link("set", index=index, state="up")
    # Published ports used from 127.0.0.1: the DNATed packet leaves through the bridge with a loopback source.
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet", "1")
    before = _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")   # outbound NAT and hairpin are routed
    data.setdefault("ip_forward_before", before)
    if not nat.table_exists():
        nat.create_table(BRIDGE, str(subnet))
    return index


def _remove_strays(ipr, data: dict, bridge_index: int) -> None:
    """veths on the bridge and DNAT rules that no lease names (left by a crash between steps)."""
    live = {lease["id"] for lease in data["leases"].values()}
    prefixes = {veth_name(cid) for cid in live}
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME")
        if (link.get_attr("IFLA_MASTER") == bridge_index and name.startswith(VETH_PREFIX)
                and name not in prefixes):
            ipr.link("del", index=link["index"])
    nat.delete_rules(keep=live)


def _configure_inside(pid: int, ip: str, prefixlen: int, gateway: str) -> None:
    """Address, link up and default route on eth0 inside the container's netns.

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
            ipr = IPRoute()
        finally:
            _fastpath.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)
    with ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=index, address=ip, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


class BridgeAttachment:
    def __init__(self, state: dict) -> None:
        self.state = state

    def _book(self) -> LeaseBook:
        return LeaseBook(self.state["root"], self.state["bridge"])

    def attach(self, pid: int) -> dict:
        from pyroute2 import IPRoute

        st = self.state
        subnet = ipaddress.IPv4Network(st["subnet"])
        with self._book().locked() as data:
            lease = data["leases"].get(st["ip"])
            if not lease or lease["id"] != st["id"]:
                raise ResourceError(f"the address lease {st['ip']} of container {st['id'][:12]} was lost")
            with IPRoute() as ipr:
                bridge_index = _ensure_bridge(ipr, data, subnet, st["gateway"])
                _remove_strays(ipr, data, bridge_index)
                ipr.link("add", ifname=st["veth"], kind="veth", peer={"ifname": "eth0", "net_ns_pid": pid})
                veth_index = ipr.link_lookup(ifname=st["veth"])[0]
                ipr.link("set", index=veth_index, master=bridge_index, state="up")
                # Hairpin: a container reaching its own published port through the host. With br_netfilter
                # the DNATed frame is bridged back out of the port it came in on.
                _write_sysctl(f"/sys/class/net/{st['veth']}/brport/hairpin_mode", "1")
            _configure_inside(pid, st["ip"], subnet.prefixlen, st["gateway"])
            nat.add_ports(st["id"], st["ip"], [PortMapping.from_list(r) for r in st["ports"]])
            lease["attached"] = True
        return dict(st)

    def teardown(self) -> None:
        st = self.state
        with self._book().locked() as data:
            lease = data["leases"].get(st["ip"])
            if lease and lease["id"] == st["id"]:
                del data["leases"][st["ip"]]
            _release({"id": st["id"], "ports": st["ports"]})
            _refresh_hosts(data)


def load_attachment(state: dict) -> BridgeAttachment:
    return BridgeAttachment(state)


def leases(root: Path | None = None) -> dict:
    """ip -> lease of the bridge's address book (read under the lock)."""
    with LeaseBook(root or network_root(), BRIDGE).locked() as data:
        return dict(data["leases"])


def prune(root: Path | None = None) -> list[str]:
    """`corert network prune`: reclaim stale leases, strays, and when no lease is left remove the bridge,
    the NAT table and restore ip_forward. Returns one line per thing removed."""
    from pyroute2 import IPRoute

    book = LeaseBook(root or network_root(), BRIDGE)
    done: list[str] = []
    with book.locked() as data:
        for ip in reclaim_stale(data):
            done.append(f"lease {ip}")
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=BRIDGE)
            if found:
                _remove_strays(ipr, data, found[0])
            elif nat.table_exists():
                nat.delete_rules(keep={lease["id"] for lease in data["leases"].values()})
        if not data["leases"]:
            done += remove_bridge(data)
        _refresh_hosts(data)
    return done
