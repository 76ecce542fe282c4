"""User-defined bridge networks as root through the installed front door: `corert network create/ls/
inspect/rm/connect/disconnect`, `run --net NAME`, isolation between networks, --internal, and that nothing
(bridge, veth, nft table, lease) outlives the containers and networks.

All traffic stays on this machine: pings between containers on bridges these tests make, and to this
machine's own addresses.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import pytest

from support import Front, http_get, links, set_args, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="user-defined networks need root")

NET_ROOT = Path("/run/corert-net")


def _out(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def _tables() -> set[str]:
    return {line.split()[-1] for line in _out("nft", "list", "tables").splitlines()}


def _held_leases() -> dict:
    """bridge -> container ids holding a lease on it, over every address book corert keeps."""
    held = {}
    for book in NET_ROOT.glob("*.json") if NET_ROOT.is_dir() else []:
        ids = [lease["id"] for lease in json.loads(book.read_text()).get("leases", {}).values()]
        if ids:
            held[book.stem] = ids
    return held


def _host_net() -> dict:
    return {"links": links(), "tables": _tables(), "routes": _out("ip", "route"), "leases": _held_leases(),
            "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text()}


@pytest.fixture(scope="module")
def host_unchanged():
    """After the module, the host's links, routes, nft tables, leases and ip_forward are as before."""
    before = _host_net()
    yield
    assert _host_net() == before


class NetworksFront(Front):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, storage_from_env=True)
        self.networks: list[str] = []
        self.had_default = "corert0" in links()   # the default bridge stays after its containers (docker0)

    def fails(self, *args: str) -> str:
        """The command fails with one line on stderr and nothing on stdout; returns that line."""
        r = self(*args)
        assert r.returncode != 0, f"corert {' '.join(args)} succeeded: {r.stdout}"
        assert r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        return lines[0]

    def network(self, name: str, *opts: str) -> dict:
        self.ok("network", "create", *opts, name)
        self.networks.append(name)
        return self.inspect(name)

    def inspect(self, name: str) -> dict:
        return json.loads(self.ok("network", "inspect", name))[0]

    def run(self, name: str, net: str) -> None:
        self.ok("run", "-d", "--name", name, "--net", net, "busybox", "sleep", "600")

    def addrs(self, name: str) -> dict[str, str]:
        """interface -> IPv4 address inside the container (loopback left out)."""
        found = {}
        for line in self.ok("exec", name, "ip", "-o", "-4", "addr").splitlines():
            words = line.split()
            if words[1] != "lo":
                found[words[1]] = words[3].split("/")[0]
        return found

    def pings(self, name: str, ip: str) -> bool:
        return self("exec", name, "ping", "-c", "1", "-W", "1", ip).returncode == 0

    def state(self) -> tuple:
        """What a refused command must not change: the listing, every network's containers, the host."""
        listing = self.ok("network", "ls")
        attached = {n: sorted(self.inspect(n)["Containers"]) for n in self.networks}
        return listing, attached, links(), _tables(), _held_leases()

    def cleanup(self) -> None:
        self.remove_containers()
        for name in self.networks:
            self("network", "rm", name)
        if not self.had_default:
            self("network", "prune")
        self.cli.cleanup()


@pytest.fixture
def front(tmp_path, host_unchanged):
    f = NetworksFront(tmp_path)
    yield f
    f.cleanup()


def _bridge(net: dict) -> str:
    return net["Options"]["bridge"]


def test_create_ls_and_bridge_lifetime(front):
    net = front.network("lifetime")
    subnet = ipaddress.IPv4Network(net["IPAM"]["Config"][0]["Subnet"])
    assert subnet.subnet_of(ipaddress.IPv4Network("10.89.0.0/16"))
    rows = [line.split() for line in front.ok("network", "ls").splitlines()]
    assert rows[0] == ["NAME", "NETWORK", "ID", "DRIVER", "SUBNET"]
    assert ["lifetime", net["Id"][:12], "bridge", str(subnet)] in rows
    assert (front.data / "networks" / "networks.json").exists()   # the definition persists on disk
    bridge = _bridge(net)
    assert bridge not in links()                                      # made on first use only
    front.run("c1", "lifetime")
    assert bridge in links() and bridge in _tables()
    ip = front.addrs("c1")["eth0"]
    assert ipaddress.IPv4Address(ip) in subnet
    assert front.inspect("lifetime")["Containers"][next(iter(front.inspect("lifetime")["Containers"]))][
        "IPv4Address"] == f"{ip}/{subnet.prefixlen}"
    front.ok("rm", "-f", "c1")
    assert bridge not in links() and bridge not in _tables()          # gone with the last container
    assert front.inspect("lifetime")["Containers"] == {}
    front.ok("network", "rm", "lifetime")
    front.networks.remove("lifetime")
    assert "lifetime" not in front.ok("network", "ls")


def test_isolation_connect_disconnect(front):
    net_a = front.network("neta")
    net_b = front.network("netb", "--subnet", "10.89.200.0/24", "--gateway", "10.89.200.254")
    assert net_b["IPAM"]["Config"][0] == {"Subnet": "10.89.200.0/24", "Gateway": "10.89.200.254"}
    front.run("a1", "neta")
    front.run("a2", "neta")
    front.run("b1", "netb")
    a2, b1 = front.addrs("a2")["eth0"], front.addrs("b1")["eth0"]
    assert ipaddress.IPv4Address(b1) in ipaddress.IPv4Network("10.89.200.0/24")
    assert front.pings("a1", a2)                 # same network
    assert not front.pings("a1", b1)             # across networks: isolated
    assert not front.pings("b1", a2)

    front.ok("network", "connect", "netb", "a1")
    addrs = front.addrs("a1")
    assert set(addrs) == {"eth0", "eth1"}
    assert ipaddress.IPv4Address(addrs["eth1"]) in ipaddress.IPv4Network("10.89.200.0/24")
    assert front.pings("a1", b1) and front.pings("b1", addrs["eth1"])
    members = {c["Name"]: c for c in front.inspect("netb")["Containers"].values()}
    assert set(members) == {"a1", "b1"} and members["a1"]["Interface"] == "eth1"
    assert not front.pings("b1", a2)             # b1 still cannot reach a network it is not on

    front.ok("network", "disconnect", "netb", "a1")
    assert set(front.addrs("a1")) == {"eth0"}
    assert not front.pings("a1", b1)
    assert {c["Name"] for c in front.inspect("netb")["Containers"].values()} == {"b1"}
    assert _bridge(net_a) in links() and _bridge(net_b) in links()


def test_rm_releases_every_interface(front):
    net_a, net_b = front.network("rel1"), front.network("rel2")
    front.run("r1", "rel1")
    front.ok("network", "connect", "rel2", "r1")
    front.ok("network", "connect", "bridge", "r1")     # the default network as a third interface
    assert set(front.addrs("r1")) == {"eth0", "eth1", "eth2"}
    cid = front.ok("ps", "-q").split()[0]
    assert sum(i.startswith(cid) for ids in _held_leases().values() for i in ids) == 3
    front.ok("rm", "-f", "r1")
    assert not any(i.startswith(cid) for ids in _held_leases().values() for i in ids)
    assert _bridge(net_a) not in links() and _bridge(net_b) not in links()
    assert _bridge(net_a) not in _tables() and _bridge(net_b) not in _tables()
    assert not any(link.startswith(("vc", "veth" + cid[:7])) for link in links())


def test_oci_delete_releases_a_connected_container(front, bundle):
    """A container made with the OCI verbs (its own netns from config.json) can be connected; `corert
    delete` then releases that lease and the network's bridge, as `rm` does for the front door's."""
    net = front.network("ocinet")
    set_args(bundle, "sleep", "600")
    r = front("create", "--bundle", str(bundle), "oci1")
    assert r.returncode == 0, r.stderr
    front.ok("network", "connect", "ocinet", "oci1")
    assert _held_leases().get(_bridge(net)) == ["oci1"]
    assert _bridge(net) in links()
    front.ok("delete", "--force", "oci1")
    assert _bridge(net) not in _held_leases()
    assert _bridge(net) not in links() and _bridge(net) not in _tables()


def test_publish_on_user_network(front):
    front.network("pub")
    front.ok("run", "-d", "--name", "web", "--net", "pub", "-p", "127.0.0.1:18431:80", "busybox", "sh", "-c",
             "mkdir -p /www && echo hello-pub > /www/index.html && exec httpd -f -p 80 -h /www")
    front.run("peer", "pub")
    web = front.addrs("web")["eth0"]
    assert front.ok("exec", "peer", "wget", "-q", "-O", "-", f"http://{web}/").strip() == "hello-pub"
    # httpd may still be starting: retry the connection, not a timed assertion
    wait_for(lambda: http_get("127.0.0.1", 18431), "httpd to answer on the published port",
             until=lambda body: body == "hello-pub", interval=0.1)
    # The host port is taken for every network, not only for `pub`.
    assert "already published" in front.fails("run", "-d", "--net", "bridge", "-p", "18431:80", "busybox", "true")


def test_internal_network_has_no_way_out(front):
    route = _out("ip", "-o", "-4", "route", "get", "1.1.1.1")     # a lookup only: nothing is sent
    if "src " not in route:
        pytest.skip("the host has no default route")
    host_ip = route.split("src ")[1].split()[0]                      # an address of this machine
    front.network("inside", "--internal")
    front.network("outside")
    front.run("i1", "inside")
    front.run("i2", "inside")
    front.run("o1", "outside")
    assert front.pings("i1", front.addrs("i2")["eth0"])
    assert front.pings("o1", host_ip)                   # a normal network is routed to the host's addresses
    assert not front.pings("i1", host_ip)               # an internal one is not
    assert "default" not in front.ok("exec", "i1", "ip", "route")
    outside, inside = _bridge(front.inspect("outside")), _bridge(front.inspect("inside"))
    assert f'oifname != "{outside}" masquerade' in _out("nft", "list", "table", "ip", outside)
    assert f'oifname != "{inside}" masquerade' not in _out("nft", "list", "table", "ip", inside)
    assert "-p/--publish" in front.fails("run", "-d", "--net", "inside", "-p", "18080:80", "busybox", "true")


def test_errors_are_one_line_and_change_nothing(front):
    front.network("taken", "--subnet", "10.89.210.0/24")
    front.run("e1", "taken")
    front.run("e2", "bridge")
    front.ok("stop", "-t", "0", "e2")
    before = front.state()
    assert "already exists" in front.fails("network", "create", "taken")
    assert "overlaps network taken" in front.fails("network", "create", "--subnet", "10.89.210.128/25", "other")
    assert "overlaps the default bridge" in front.fails("network", "create", "--subnet", "10.88.5.0/24", "other")
    assert "active endpoints (e1)" in front.fails("network", "rm", "taken")
    assert "does not exist" in front.fails("network", "connect", "taken", "nosuchcontainer")
    assert "not found" in front.fails("network", "connect", "nosuchnet", "e1")
    assert "already connected" in front.fails("network", "connect", "taken", "e1")
    assert "not connected" in front.fails("network", "disconnect", "taken", "e2")
    assert "unknown network" in front.fails("run", "--net", "nosuchnet", "busybox", "true")
    assert "reserved" in front.fails("network", "create", "host")
    assert "cannot be removed" in front.fails("network", "rm", "bridge")
    assert "not running" in front.fails("network", "connect", "taken", "e2")
    assert front.state() == before
