"""--net=slirp: user-mode networking with slirp4netns, for rootless containers (works as root too).

slirp4netns joins the container's user + network namespaces, creates tap0 there and configures it
(10.0.2.100/24, gateway 10.0.2.2, DNS forwarder 10.0.2.3), then relays the traffic through ordinary
sockets of the calling user. Published ports go through its API socket (add_hostfwd): it listens on the
host and connects to the container's address. --disable-host-loopback keeps the container away from
the host's 127.0.0.1 services.
"""
from __future__ import annotations

import json
import os
import select
import socket

from corert.drivers.network import NetOptions, PortMapping, Prepared
from corert.drivers.network.usermode import (
    HelperAttachment,
    check_tun,
    record_helper,
    remove_quietly,
    require_binary,
    socket_dir,
    sweep_helpers,
    tail,
    write_etc,
)
from corert.engine.state import proc_start_time
from corert.errors import ResourceError

GUEST_IP = "10.0.2.100"
DNS_IP = "10.0.2.3"
READY_TIMEOUT = 10.0


class SlirpDriver:
    def prepare(self, container_id: str, data_dir: str, name: str, opts: NetOptions) -> Prepared:
        binary = require_binary("slirp4netns", "slirp4netns", "slirp")
        sweep_helpers()
        check_tun("slirp4netns", "slirp")
        hostname, mounts = write_etc(container_id, data_dir, name, opts, GUEST_IP, [DNS_IP])
        state = {"driver": "slirp", "id": container_id, "binary": binary,
                 "log": os.path.join(data_dir, "net", "slirp4netns.log"),
                 "socket": str(socket_dir() / f"{container_id[:16]}.sock"),
                 "ports": [p.as_list() for p in opts.publish]}
        return Prepared(namespace={"type": "network"}, mounts=mounts, hostname=hostname,
                        handle=SlirpAttachment(state))


def _api(sock_path: str, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(READY_TIMEOUT)
        s.connect(sock_path)
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks) or b"{}")


def add_hostfwd(sock_path: str, port: PortMapping) -> None:
    reply = _api(sock_path, {"execute": "add_hostfwd", "arguments": {
        "proto": port.proto, "host_addr": port.host_ip or "0.0.0.0", "host_port": port.host_port,
        "guest_addr": GUEST_IP, "guest_port": port.container_port}})
    if "error" in reply:
        raise ResourceError(f"slirp4netns cannot publish {port.host_port}/{port.proto}: "
                            f"{reply['error'].get('desc', reply['error'])}")


class SlirpAttachment(HelperAttachment):
    RUNTIME_FILE = "socket"

    def attach(self, pid: int) -> dict:
        import subprocess

        st = self.state
        remove_quietly(st["socket"])
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        try:
            with open(st["log"], "wb") as log:
                # A session of its own: it must outlive this process (detached runs) and its signals.
                proc = subprocess.Popen(
                    [st["binary"], "--configure", "--mtu=65520", "--disable-host-loopback",
                     "--api-socket", st["socket"], "--ready-fd", str(ready_w), str(pid), "tap0"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(ready_w,),
                    start_new_session=True)
            st["pid"], st["start"] = proc.pid, proc_start_time(proc.pid)
            record_helper(st["id"], proc.pid, pid)
            os.close(ready_w)
            ready_w = -1
            readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
            if not readable or not os.read(ready_r, 1):
                raise ResourceError(f"slirp4netns did not start: {tail(st['log'], 'no message (timed out)')}")
        finally:
            os.close(ready_r)
            if ready_w >= 0:
                os.close(ready_w)
        for row in st["ports"]:
            add_hostfwd(st["socket"], PortMapping.from_list(row))
        proc.returncode = 0   # not ours to wait for: it lives on with the container (teardown stops it)
        return dict(st)


def load_attachment(state: dict) -> SlirpAttachment:
    return SlirpAttachment(state)
