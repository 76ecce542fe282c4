"""Seccomp user notification (`linux.seccomp.listenerPath`) on the OCI CLI, as runc supports it.

A listener in the test receives the notify fd with the container process state (OCI spec,
"seccomp-notify"), then answers the container's notified mkdir with an errno of its choosing: proof that
the fd is the container's real filter.
"""
from __future__ import annotations

import array
import fcntl
import json
import os
import socket
import threading

from support import read_config, write_config

# <linux/seccomp.h>: struct seccomp_notif is 80 bytes, struct seccomp_notif_resp 24; ioctl type '!'.
NOTIF_SIZE, RESP_SIZE = 80, 24
IOCTL_NOTIF_RECV = (3 << 30) | (NOTIF_SIZE << 16) | (ord("!") << 8) | 0
IOCTL_NOTIF_SEND = (3 << 30) | (RESP_SIZE << 16) | (ord("!") << 8) | 1
ANSWER_ERRNO = 36   # ENAMETOOLONG: nothing else would make mkdir fail with it here


class Listener(threading.Thread):
    """Accepts one connection on `path`, takes the state + fd, answers one notification with -ANSWER_ERRNO."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.state: dict | None = None
        self.syscall_nr: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                fds = array.array("i")
                msg, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                self.state = json.loads(msg)
            assert len(fds) == 1
            notify_fd = fds[0]
            try:
                buf = bytearray(NOTIF_SIZE)
                fcntl.ioctl(notify_fd, IOCTL_NOTIF_RECV, buf)
                notif_id = int.from_bytes(buf[0:8], "little")
                self.syscall_nr = int.from_bytes(buf[16:20], "little", signed=True)
                resp = bytearray(RESP_SIZE)
                resp[0:8] = notif_id.to_bytes(8, "little")
                resp[16:20] = (-ANSWER_ERRNO).to_bytes(4, "little", signed=True)
                fcntl.ioctl(notify_fd, IOCTL_NOTIF_SEND, resp)
            finally:
                os.close(notify_fd)
        except BaseException as e:   # reported by the test
            self.error = e
        finally:
            self.sock.close()


def _notify_bundle(bundle, listener_path: str, args: list[str]) -> None:
    config = read_config(bundle)
    config["process"]["args"] = args
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener_path,
        "listenerMetadata": "corert-test-metadata",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }
    write_config(bundle, config)


def test_listener_gets_fd_and_state_and_answers(corert, bundle, tmp_path):
    """OCI seccomp-notify: the listener receives ContainerProcessState (ociVersion, fds ["seccompFd"], pid,
    metadata, state with id/status/bundle) plus the fd, and its answer is what the container's mkdir gets."""
    path = str(tmp_path / "listener.sock")
    _notify_bundle(bundle, path, ["sh", "-c", "mkdir /dev/shm/d; echo rc=$?"])
    listener = Listener(path)
    listener.start()
    r = corert("run", "--bundle", str(bundle), "notify1")
    listener.join(30)
    assert listener.error is None, repr(listener.error)
    assert r.returncode == 0, r.stderr
    assert "File name too long" in r.stderr and "rc=1" in r.stdout
    st = listener.state
    assert st["fds"] == ["seccompFd"] and st["metadata"] == "corert-test-metadata"
    assert st["ociVersion"].startswith("1.")
    assert st["state"]["id"] == "notify1" and st["state"]["status"] == "creating"
    assert st["state"]["bundle"] == str(bundle) and st["state"]["pid"] == st["pid"] > 0
    assert listener.syscall_nr in (83, 258)   # mkdir / mkdirat on x86_64


def test_missing_listener_fails_create_cleanly(corert, bundle, tmp_path):
    """No socket at listenerPath: create fails with one clear line and leaves no container behind."""
    _notify_bundle(bundle, str(tmp_path / "nobody.sock"), ["true"])
    r = corert("create", "--bundle", str(bundle), "notify2")
    assert r.returncode != 0
    assert "seccomp listener" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert corert("list", "-q").stdout.strip() == ""
