"""The bridge's NAT in the kernel's nftables, through the `nft` tool (Debian's default firewall backend).

One table, `ip corert`, owned by corert alone, exists while the bridge does:
  prerouting/output (nat) -> publish   for packets to a local address (incl. 127.0.0.1 and the gateway)
  publish                             one DNAT rule per published port, commented "corert:<container id>"
  postrouting (nat)                   masquerade: outbound from the subnet; 127.0.0.1 sources (published
                                      ports used from localhost, with route_localnet on the bridge); and
                                      hairpin (a container reaching a published port of the bridge)
  forward (filter, user networks)     isolation: nothing is routed between this bridge and another corert
                                      bridge; for --internal, nothing between this bridge and anywhere
Teardown deletes exactly the rules with the container's comment; the table goes with its bridge
(bridge.remove_bridge: `network prune`, `network rm`, or a user network's last container leaving).
The default bridge's table is `ip corert`; each user network has its own, named like its bridge.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from corert.errors import HostUnsupported, ResourceError

TABLE = "corert"
TAG = "corert:"


def _nft_binary() -> str:
    # sbin may be missing from a user's PATH (sudo, runuser): look there too.
    path = shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise HostUnsupported("--net=bridge needs the nft tool for NAT: apt-get install nftables")
    return path


def _run(args: list[str], script: str | None = None) -> str:
    proc = subprocess.run([_nft_binary(), *args], input=script, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["failed"])[0]
        raise ResourceError(f"nft {' '.join(args)}: {detail}")
    return proc.stdout


def table_exists(table: str = TABLE) -> bool:
    proc = subprocess.run([_nft_binary(), "list", "table", "ip", table], capture_output=True, text=True)
    return proc.returncode == 0


def create_table(bridge: str, subnet: str, *, table: str = TABLE, internal: bool = False,
                 isolate: bool = False) -> None:
    """The chains and the per-bridge masquerade rules, in one atomic transaction.

    internal: no masquerade to the outside and no forwarding across the bridge's edge at all;
    isolate: no forwarding between this bridge and any other corert bridge (docker's network isolation)."""
    outbound = "" if internal else f'ip saddr {subnet} oifname != "{bridge}" masquerade'
    forward = ""
    if internal:
        forward = f'iifname "{bridge}" oifname != "{bridge}" drop\n    oifname "{bridge}" iifname != "{bridge}" drop'
    elif isolate:
        forward = (f'iifname "{bridge}" oifname != "{bridge}" oifname "corert*" drop\n'
                   f'    oifname "{bridge}" iifname != "{bridge}" iifname "corert*" drop')
    if forward:
        forward = f"""
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {forward}
  }}"""
    script = f"""
table ip {table} {{
  chain publish {{
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump publish
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump publish
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    {outbound}
    oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade
    oifname "{bridge}" ct status dnat ip saddr {subnet} masquerade
  }}{forward}
}}
"""
    _run(["-f", "-"], script)


def delete_table(table: str = TABLE) -> None:
    if table_exists(table):
        _run(["delete", "table", "ip", table])


def add_ports(container_id: str, ip: str, ports: list, table: str = TABLE) -> None:
    """One DNAT rule per mapping (a PortMapping), all in one transaction."""
    if not ports:
        return
    lines = []
    for p in ports:
        match = f"ip daddr {p.host_ip} " if p.host_ip else ""
        lines.append(f'add rule ip {table} publish {match}{p.proto} dport {p.host_port} '
                     f'dnat to {ip}:{p.container_port} comment "{TAG}{container_id}"\n')
    _run(["-f", "-"], "".join(lines))


def tagged_rules(table: str = TABLE) -> list[tuple[int, str]]:
    """(handle, container id) of every published-port rule."""
    if not table_exists(table):
        return []
    out = json.loads(_run(["-j", "list", "chain", "ip", table, "publish"]))
    found = []
    for item in out.get("nftables", []):
        rule = item.get("rule")
        if rule and str(rule.get("comment", "")).startswith(TAG):
            found.append((rule["handle"], rule["comment"][len(TAG):]))
    return found


def delete_rules(keep: set[str] | None = None, only: set[str] | None = None, table: str = TABLE) -> int:
    """Delete the rules of the containers in `only`, or of every container not in `keep`."""
    doomed = [h for h, cid in tagged_rules(table)
              if (only is not None and cid in only) or (keep is not None and cid not in keep)]
    if doomed:
        _run(["-f", "-"], "".join(f"delete rule ip {table} publish handle {h}\n" for h in doomed))
    return len(doomed)
