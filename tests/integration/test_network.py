"""Network drivers as root through the installed front door: --net=bridge (corert0, veth, NAT, published
ports on 127.0.0.1, on the bridge and hairpin, names of peers), --net=none, --net=container:NAME,
concurrent address allocation, and reclaiming what a crash left.

All traffic stays on this machine: 127.0.0.1, the bridge's gateway and the containers' addresses on a
bridge these tests make. The module ends with `corert network prune` and checks that the host's links,
routes, nftables ruleset and ip_forward are what they were before.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from support import CORERT, Cli, Front, http_get, links

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the bridge driver needs root")

BRIDGE = "corert0"
GATEWAY = "10.88.0.1"
LEASES = Path("/run/corert-net/corert0.json")
HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"


def _host_net() -> dict:
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    return {"links": sorted(links()), "routes": out("ip", "route"), "rules": out("nft", "list", "ruleset"),
            "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text()}


@pytest.fixture(scope="module")
def host_unchanged(data_root, tmp_path_factory):
    """The host network as before the module, once `corert network prune` has removed the bridge.

    The bridge stays between containers (like docker0), so it is made here, before any test's leak
    snapshot, by one bridged run.
    """
    before = _host_net()
    assert BRIDGE not in before["links"], "a corert0 bridge exists already: run `corert network prune`"
    state = tmp_path_factory.mktemp("netstate")
    Cli(CORERT, state)("run", "--rm", "--net=bridge", "busybox", "true", check=True,
                       env={**os.environ, "CORERT_DATA_ROOT": str(data_root)})
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
    yield
    r = subprocess.run([CORERT, "network", "prune"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _host_net() == before


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("netdata")


class NetFront(Front):
    def ip_of(self, name: str) -> str:
        out = self.ok("exec", name, "ip", "-o", "-4", "addr", "show", "eth0")
        return out.split()[3].split("/")[0]


@pytest.fixture
def front(tmp_path, data_root, host_unchanged):
    f = NetFront(tmp_path, data_root, storage_from_env=True)
    yield f
    f.cleanup()


def fetch_in(front: Front, name: str, host: str, port: int) -> str:
    """An HTTP GET from inside a container with busybox nc."""
    r = front("exec", name, "sh", "-c", f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {host} {port}')
    return (r.stdout.strip().splitlines() or [f"error: {r.stderr.strip()}"])[-1]


def leases() -> dict:
    return json.loads(LEASES.read_text())["leases"] if LEASES.exists() else {}


def publish_rules() -> str:
    return subprocess.run(["nft", "list", "chain", "ip", "corert", "publish"], capture_output=True, text=True).stdout


def test_published_port_answers_on_localhost_bridge_and_container_ip(front):
    cid = front.ok("run", "-d", "--name", "web", "--net=bridge", "-p", "18080:80", "busybox", "sh", "-c",
                   HTTPD.format(text="hello-web")).strip()
    ip = front.ip_of("web")
    assert ip.startswith("10.88.") and ip != GATEWAY
    assert http_get("127.0.0.1", 18080) == "hello-web"          # OUTPUT DNAT + route_localnet
    assert http_get(GATEWAY, 18080) == "hello-web"              # the bridge's own address
    assert http_get(ip, 80) == "hello-web"                      # the container on the bridge, directly
    assert f"corert:{cid}" in publish_rules()
    veth = "veth" + cid[:11]
    assert Path(f"/sys/class/net/{veth}/master").resolve().name == BRIDGE

    front.ok("rm", "-f", "web")
    assert not Path(f"/sys/class/net/{veth}").exists()
    assert cid not in publish_rules()
    assert all(lease["id"] != cid for lease in leases().values())
    assert http_get("127.0.0.1", 18080).startswith("error")


def test_containers_reach_each_other_by_name_and_through_published_ports(front):
    front.ok("run", "-d", "--name", "srv", "--net=bridge", "-p", "18081:80", "busybox", "sh", "-c",
             HTTPD.format(text="hello-srv"))
    front.ok("run", "-d", "--name", "cli", "--hostname", "client", "--net=bridge", "busybox", "sleep", "600")
    srv_ip, cli_ip = front.ip_of("srv"), front.ip_of("cli")
    assert srv_ip != cli_ip
    # Names resolve both ways: the new container got srv, and srv's /etc/hosts was rewritten with cli.
    hosts_cli = front.ok("exec", "cli", "cat", "/etc/hosts")
    hosts_srv = front.ok("exec", "srv", "cat", "/etc/hosts")
    assert f"{srv_ip}\t" in hosts_cli and " srv" in hosts_cli
    assert f"{cli_ip}\tclient cli" in hosts_srv
    assert front.ok("exec", "cli", "hostname").strip() == "client"
    assert front.ok("exec", "cli", "cat", "/etc/hostname").strip() == "client"
    assert fetch_in(front, "cli", "srv", 80) == "hello-srv"
    assert front("exec", "srv", "ping", "-c", "1", "-W", "5", "client").returncode == 0
    # Hairpin: through the host's published port, from a peer and from the server itself.
    assert fetch_in(front, "cli", GATEWAY, 18081) == "hello-srv"
    assert fetch_in(front, "srv", GATEWAY, 18081) == "hello-srv"

    front.ok("rm", "-f", "cli")
    assert cli_ip not in front.ok("exec", "srv", "cat", "/etc/hosts")


def test_net_none_has_only_loopback(front):
    front.ok("run", "-d", "--name", "web", "--net=bridge", "-p", "18082:80", "busybox", "sh", "-c",
             HTTPD.format(text="x"))
    out = front.ok("run", "--rm", "--net=none", "busybox", "sh", "-c",
                   "ip -o link | cut -d: -f2; echo routes:$(ip route | wc -l); "
                   f"nc -w 2 {GATEWAY} 18082 </dev/null && echo REACHED; "
                   "nc -w 2 127.0.0.1 18082 </dev/null && echo REACHED; true")
    lines = out.split()
    assert lines[0] == "lo" and lines[1] == "routes:0"
    assert "REACHED" not in out


def test_join_another_containers_network(front):
    front.ok("run", "-d", "--name", "owner", "--net=bridge", "busybox", "sh", "-c", HTTPD.format(text="owned"))
    owner_ip = front.ip_of("owner")
    out = front.ok("run", "--rm", "--net=container:owner", "busybox", "sh", "-c",
                   'ip -o -4 addr show eth0; printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 127.0.0.1 80 | tail -1')
    assert f"inet {owner_ip}/" in out
    assert out.strip().splitlines()[-1] == "owned"
    r = front("run", "--rm", "--net=container:owner", "--hostname", "other", "busybox", "true")
    assert r.returncode == 125 and "--hostname" in r.stderr


def test_concurrent_runs_get_distinct_addresses(front):
    names = [f"c{i}" for i in range(4)]
    results: dict[str, subprocess.CompletedProcess] = {}

    def run(name: str) -> None:
        results[name] = front("run", "-d", "--name", name, "--net=bridge", "busybox", "sleep", "600")

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results.values()), [r.stderr for r in results.values()]
    ips = [front.ip_of(n) for n in names]
    assert len(set(ips)) == len(ips)
    booked = {lease["name"]: ip for ip, lease in leases().items()}
    assert all(booked[n] == ip for n, ip in zip(names, ips))


def test_bad_publish_and_port_conflict_are_refused(front):
    r = front("run", "--rm", "--net=bridge", "-p", "80", "busybox", "true")
    assert r.returncode == 125 and "-p" in r.stderr
    r = front("run", "--rm", "--net=none", "-p", "18083:80", "busybox", "true")
    assert r.returncode == 125 and "--net=bridge" in r.stderr
    front.ok("run", "-d", "--name", "first", "--net=bridge", "-p", "18083:80", "busybox", "sleep", "600")
    r = front("run", "--rm", "--net=bridge", "-p", "18083:80", "busybox", "true")
    assert r.returncode == 125 and "already published by container first" in r.stderr
    assert len(leases()) == 1


def test_leftovers_of_a_crash_are_reclaimed(front, tmp_path):
    """A lease whose container vanished (with its DNAT rule), and a veth on the bridge that no lease names,
    as a killed `corert` leaves them: the next bridge run removes them."""
    front.ok("run", "-d", "--name", "alive", "--net=bridge", "busybox", "sleep", "600")   # makes the bridge
    ghost = "dead" * 16
    book = json.loads(LEASES.read_text())
    book["leases"]["10.88.255.250"] = {"id": ghost, "name": "ghost", "hostname": "ghost",
                                       "data_dir": str(tmp_path / "gone"), "state_dir": str(tmp_path / "gone2"),
                                       "owner": [1, 1], "hosts_file": None, "ports": [["tcp", "", 18084, 80]]}
    LEASES.write_text(json.dumps(book))
    subprocess.run(["nft", "add", "rule", "ip", "corert", "publish", "tcp", "dport", "18084", "dnat", "to",
                    "10.88.255.250:80", "comment", f'"corert:{ghost}"'], check=True)
    stray = "veth" + "beef" * 2 + "000"
    subprocess.run(["ip", "link", "add", stray, "type", "veth", "peer", "name", "corert-peer0"], check=True)
    try:
        subprocess.run(["ip", "link", "set", stray, "master", BRIDGE], check=True)
        front.ok("run", "--rm", "--net=bridge", "busybox", "true")
        assert "10.88.255.250" not in leases()
        assert ghost not in publish_rules()
        assert not Path(f"/sys/class/net/{stray}").exists()
    finally:
        subprocess.run(["ip", "link", "del", stray], capture_output=True)
