"""Seccomp user notification: hand the container's notify fd to `linux.seccomp.listenerPath`, as runc does.

The OCI runtime spec ("seccomp-notify"): the runtime connects to the AF_UNIX socket at listenerPath and
sends, in one message, the container process state (`ContainerProcessState`) as JSON and the seccomp
notify fd as SCM_RIGHTS, named "seccompFd" in the state's `fds`. The fast path sends the fd to `create`
right after loading the filter (stage STAGE_SECCOMP), before the container is READY, so the listener
owns it before the container can make a notified syscall.

Hot path module (create imports it only for profiles with SCMP_ACT_NOTIFY): stdlib only.
"""
from __future__ import annotations

import json
import socket
import struct

from corert.errors import CorertError

SECCOMP_FD_NAME = "seccompFd"
OCI_VERSION = "1.0.2"


def container_process_state(state: dict, pid: int, metadata: str = "") -> dict:
    """The spec's ContainerProcessState: what the listener receives next to the fd."""
    return {"ociVersion": OCI_VERSION, "fds": [SECCOMP_FD_NAME], "pid": pid, "metadata": metadata,
            "state": state}


def send_listener_fd(listener_path: str, fd: int, process_state: dict) -> None:
    """Connect to listener_path and send the state JSON with `fd` attached; one message, as runc sends it."""
    payload = json.dumps(process_state).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(listener_path)
        sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
    except OSError as e:
        raise CorertError(f"seccomp listener {listener_path}: {e.strerror or e}") from None
    finally:
        sock.close()


def hand_over(store, record, seccomp: dict, fd: int) -> None:
    """`create`'s callback for the child's STAGE_SECCOMP: the state says "creating" (the init is not READY
    yet). The fd stays the caller's: the launcher closes its copy once this returns."""
    from corert.engine.state import oci_state

    state = oci_state(store, record, status="creating")
    send_listener_fd(seccomp["listenerPath"], fd,
                     container_process_state(state, record.pid, seccomp.get("listenerMetadata") or ""))
