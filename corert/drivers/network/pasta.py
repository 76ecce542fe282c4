"""--net=pasta: user-mode networking with pasta (Debian package passt), for rootless containers.

pasta joins the container's user + network namespaces, copies the host's address and routes onto a tap
device there (--config-net) and forks into the background once the namespace is ready. Published ports
are its -t/-u options; automatic forwarding in either direction (its default) is switched off, and
--no-map-gw keeps the container away from the host's loopback services.
"""
from __future__ import annotations

import os

from corert.drivers.network import NetOptions, PortMapping, Prepared
from corert.drivers.network.files import host_nameservers
from corert.drivers.network.usermode import (
    HelperAttachment,
    check_tun,
    record_helper,
    remove_quietly,
    require_binary,
    sweep_helpers,
    tail,
    write_etc,
)
from corert.engine.state import proc_start_time
from corert.errors import ResourceError

READY_TIMEOUT = 10.0


def port_args(ports: list[PortMapping]) -> list[str]:
    """-t/-u specs: [ADDR/]HOSTPORT:CTRPORT, or `none` for a protocol with no mapping."""
    args = []
    for proto, flag in (("tcp", "-t"), ("udp", "-u")):
        specs = [f"{p.host_ip + '/' if p.host_ip else ''}{p.host_port}:{p.container_port}"
                 for p in ports if p.proto == proto]
        for spec in specs or ["none"]:
            args += [flag, spec]
    return args + ["-T", "none", "-U", "none"]


class PastaDriver:
    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        binary = require_binary("pasta", "passt", "pasta")
        sweep_helpers()
        check_tun("pasta", "pasta")
        # The container shares the host's address; its own names resolve to loopback, as on a Debian host.
        hostname, mounts = write_etc(container_id, data_dir, name, opts, "127.0.1.1", host_nameservers())
        net_dir = os.path.join(data_dir, "net")
        state = {"driver": "pasta", "id": container_id, "binary": binary,
                 "log": os.path.join(net_dir, "pasta.log"), "pid_file": os.path.join(net_dir, "pasta.pid"),
                 "ports": [p.as_list() for p in opts.publish]}
        return Prepared(namespace={"type": "network"}, mounts=mounts, hostname=hostname,
                        handle=PastaAttachment(state))


class PastaAttachment(HelperAttachment):
    RUNTIME_FILE = "pid_file"

    def attach(self, pid: int) -> dict:
        import subprocess

        st = self.state
        ports = [PortMapping.from_list(r) for r in st["ports"]]
        remove_quietly(st["pid_file"])
        cmd = [st["binary"], "--config-net", "--quiet", "--no-map-gw", "--pid", st["pid_file"],
               "--log-file", st["log"], *port_args(ports), str(pid)]
        try:
            # It returns once the namespace is configured and the daemon has forked off.
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=READY_TIMEOUT, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise ResourceError("pasta did not start within 10 s") from None
        try:
            with open(st["pid_file"]) as f:
                helper = int(f.read().strip())
        except (OSError, ValueError):
            helper = 0
        if proc.returncode != 0 or not helper:
            first = (proc.stderr.strip().splitlines() or [tail(st["log"], f"exit status {proc.returncode}")])[0]
            raise ResourceError(f"pasta did not start: {first}")
        st["pid"], st["start"] = helper, proc_start_time(helper)
        record_helper(st["id"], helper, pid)
        return dict(st)


def load_attachment(state: dict) -> PastaAttachment:
    return PastaAttachment(state)
