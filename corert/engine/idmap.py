"""Writing a new user namespace's uid/gid maps from the parent, while the child waits.

Root writes the maps directly. An unprivileged user may write only a map of its own ids (and must deny
setgroups first); anything larger goes through the setuid helpers newuidmap/newgidmap (Debian `uidmap`),
which check /etc/subuid and /etc/subgid.
"""
from __future__ import annotations

import os

from corert.errors import HostUnsupported


def _lines(mappings: list[dict]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)


def _is_own_single(mappings: list[dict], own: int) -> bool:
    return len(mappings) == 1 and mappings[0]["hostID"] == own and mappings[0]["size"] == 1


def setgroups_allowed(gid_mappings: list[dict]) -> bool:
    """An unprivileged single-id map must deny setgroups; then the container cannot call setgroups."""
    return os.geteuid() == 0 or not _is_own_single(gid_mappings, os.getegid())


def write_id_maps(pid: int, uid_mappings: list[dict], gid_mappings: list[dict]) -> None:
    if os.geteuid() == 0 or _is_own_single(uid_mappings, os.geteuid()):
        if not setgroups_allowed(gid_mappings):
            _write(f"/proc/{pid}/setgroups", "deny")
        _write(f"/proc/{pid}/uid_map", _lines(uid_mappings))
        _write(f"/proc/{pid}/gid_map", _lines(gid_mappings))
        return
    import shutil  # only the newuidmap path needs it; shutil (+bz2, lzma) costs ~2 ms of CLI cold start

    for tool, maps in (("newuidmap", uid_mappings), ("newgidmap", gid_mappings)):
        exe = shutil.which(tool, path="/usr/bin:/bin") or f"/usr/bin/{tool}"
        if not os.path.exists(exe):
            raise HostUnsupported(f"{tool} not found: install Debian's `uidmap` package for multi-id user namespaces")
        import subprocess
        args = [exe, str(pid)]
        for m in maps:
            args += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode:
            raise HostUnsupported(f"{tool} failed: {r.stderr.strip() or r.returncode} "
                                  "(check your ranges in /etc/subuid and /etc/subgid)")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
