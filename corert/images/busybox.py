"""The built-in default image `busybox:latest`, made on this machine from the static /bin/busybox.

Everything in the layer has fixed metadata (mtime 0, root-owned, sorted entries, USTAR headers), so the
layer digest and thus the image id depend only on the busybox binary and its applet list.
"""
from __future__ import annotations

import io
import os
import posixpath
import shutil
import subprocess
import tarfile

from corert.errors import ImageError
from corert.images.formats import DEFAULT_PATH_ENV, EPOCH, canonical_json, host_arch
from corert.images.layout import DEFAULT_IMAGE  # noqa: F401  (re-exported)
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
_DIRS = {  # path -> mode
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o555, "root": 0o700, "sbin": 0o755,
    "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "var": 0o755,
}


def find_busybox() -> str:
    for cand in BUSYBOX_CANDIDATES:
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("busybox")
    if found:
        return found
    raise ImageError("cannot build the default image: no busybox binary (install busybox-static)")


def applet_paths(busybox: str) -> list[str]:
    """Applet install paths relative to / (e.g. 'usr/bin/awk'), without busybox itself."""
    try:
        out = subprocess.run([busybox, "--list-full"], capture_output=True, check=True, timeout=10).stdout
        paths = [p.strip().lstrip("/") for p in out.decode().splitlines() if p.strip()]
    except (subprocess.SubprocessError, OSError):
        out = subprocess.run([busybox, "--list"], capture_output=True, check=True, timeout=10).stdout
        paths = ["bin/" + p.strip() for p in out.decode().splitlines() if p.strip()]
    clean = set()
    for p in paths:
        parts = p.split("/")
        if ".." in parts or "" in parts or p == "bin/busybox":  # the list names busybox itself: keep the binary
            continue
        clean.add(p)
    return sorted(clean)


def build_layer(busybox: str | None = None) -> bytes:
    """The layer tar (uncompressed) of the default image."""
    busybox = busybox or find_busybox()
    with open(busybox, "rb") as f:
        binary = f.read()
    entries: dict[str, tarfile.TarInfo] = {}
    payload: dict[str, bytes] = {}

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.linkname = link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        entries[name] = info
        payload[name] = data

    for d, mode in _DIRS.items():
        add(d + "/", tarfile.DIRTYPE, mode)
    add("bin/busybox", tarfile.REGTYPE, 0o755, binary)
    add("etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD)
    add("etc/group", tarfile.REGTYPE, 0o644, _GROUP)
    add("etc/hostname", tarfile.REGTYPE, 0o644, b"")
    for path in applet_paths(busybox):
        parent = posixpath.dirname(path)
        if parent + "/" not in entries:
            add(parent + "/", tarfile.DIRTYPE, 0o755)
        if path in entries:
            continue
        # relative targets resolve inside whatever root the layer is mounted at
        add(path, tarfile.SYMTYPE, 0o777, link=posixpath.relpath("bin/busybox", parent))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name in sorted(entries, key=lambda n: n.rstrip("/")):
            info = entries[name]
            tf.addfile(info, io.BytesIO(payload[name]) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def build_config(diff_hex: str) -> bytes:
    return canonical_json({
        "architecture": host_arch(),
        "os": "linux",
        "created": EPOCH,
        "config": {"Env": [DEFAULT_PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_hex}"]},
        "history": [{"created": EPOCH, "created_by": "corert: default image from the host's busybox"}],
    })
