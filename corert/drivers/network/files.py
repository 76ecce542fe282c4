"""The per-container /etc/hosts, /etc/hostname and /etc/resolv.conf, generated in the container's data dir
and bind-mounted over the image's files (so the image stays untouched and a rewrite is seen at once)."""
from __future__ import annotations

import os
from pathlib import Path

from corert.drivers.network import bind_file

_LOCAL = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def hosts_text(own: list[tuple[str, str]], peers: list[tuple[str, str]]) -> str:
    """localhost, then the container's own names, then its peers' (ip, names) on the same network."""
    lines = [_LOCAL] + [f"{ip}\t{names}\n" for ip, names in own + peers]
    return "".join(lines)


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's nameservers a container can use: loopback ones would point into the container itself."""
    servers = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver" and not words[1].startswith(("127.", "::1")):
                    servers.append(words[1])
    except OSError:
        pass
    return servers


def rewrite_in_place(path: str | Path, text: str) -> None:
    """Truncate and write: the bind mount pins the inode, so a rename would not reach the container."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_files(data_dir: str | Path, hostname: str, hosts: str, nameservers: list[str]) -> list[dict]:
    """Write the three files under DATA_DIR/net/ and return their mounts."""
    net_dir = Path(data_dir) / "net"
    net_dir.mkdir(mode=0o755, exist_ok=True)
    files = {"hostname": hostname + "\n", "hosts": hosts,
             "resolv.conf": "".join(f"nameserver {s}\n" for s in nameservers)}
    mounts = []
    for name, text in files.items():
        path = net_dir / name
        path.write_text(text)
        os.chmod(path, 0o644)
        mounts.append(bind_file(str(path), f"/etc/{name}"))
    return mounts
