"""The compiled default seccomp profile, loaded into the real kernel in a forked child.

Each check runs a syscall whose result differs with and without the filter (e.g. mount of a missing path:
ENOENT unfiltered, EPERM filtered), so a filter that silently did not load cannot pass.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

pyseccomp = pytest.importorskip("pyseccomp")

from corert.drivers.security.seccomp import (  # noqa: E402
    SECCOMP_FILTER_FLAG_NEW_LISTENER,
    CompiledSeccomp,
    compile_seccomp,
    load_default_profile,
)
from support import poll  # noqa: E402

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
CLONE_FS = 0x200
CLONE_NEWUSER = 0x10000000
AF_UNIX = 1
AF_VSOCK = 40
SOCK_STREAM = 1
READ_IMPLIES_EXEC = 0x0400000

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def nr(name: str) -> int:
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    assert number >= 0, name
    return number


def sys_call(number: int, *args: int | bytes | None) -> tuple[int, int]:
    """Raw syscall -> (return value, errno or 0)."""
    ctypes.set_errno(0)
    conv = [ctypes.c_long(a) if isinstance(a, int) else ctypes.c_char_p(a) for a in args]
    ret = libc.syscall(ctypes.c_long(number), *conv)
    return ret, (ctypes.get_errno() if ret == -1 else 0)


def install(compiled: CompiledSeccomp, use_seccomp_syscall: bool = False) -> int:
    buf = ctypes.create_string_buffer(compiled.bpf, len(compiled.bpf))
    prog = SockFprog(compiled.instructions, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if use_seccomp_syscall:
        ret, err = sys_call(nr("seccomp"), SECCOMP_SET_MODE_FILTER, compiled.flags, ctypes.addressof(prog))
        if ret < 0:
            raise OSError(err, "seccomp(SECCOMP_SET_MODE_FILTER)")
        return ret
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
    return 0


def run_in_filtered_child(compiled: CompiledSeccomp, checks: Callable[[int], dict], *,
                          use_seccomp_syscall: bool = False) -> dict:
    """Fork; the child loads the filter, runs checks, sends a JSON report and exits 0 only if every check passed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 99
        try:
            os.close(r)
            fd = install(compiled, use_seccomp_syscall)
            report = checks(fd)
            data = json.dumps(report).encode()
            os.write(w, data)
            code = 0 if all(v["ok"] for v in report.values()) else 1
        except BaseException as e:  # noqa: BLE001 - the child must always _exit
            try:
                os.write(w, json.dumps({"child error": {"ok": False, "got": repr(e)}}).encode())
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = b""
        done, status = poll(lambda: os.waitpid(pid, os.WNOHANG), until=lambda waited: waited[0], timeout=20,
                            interval=0.01)
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("filtered child hung")
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
    report = json.loads(data or b"{}")
    failed = {k: v for k, v in report.items() if not v["ok"]}
    assert not failed, failed
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


def expect(result: tuple[int, int], want_errno: int) -> dict:
    ret, err = result
    return {"ok": ret == -1 and err == want_errno, "got": [ret, errno.errorcode.get(err, err)],
            "want": errno.errorcode[want_errno]}


def succeed(result: tuple[int, int]) -> dict:
    ret, err = result
    return {"ok": ret >= 0, "got": [ret, errno.errorcode.get(err, err)]}


@pytest.fixture(scope="module")
def default_filter(tmp_path_factory) -> CompiledSeccomp:
    compiled = compile_seccomp(load_default_profile(), tmp_path_factory.mktemp("corert-seccomp-cache"))
    assert not compiled.needs_listener and compiled.flags == 0
    return compiled


def test_default_profile_denies_dangerous_syscalls(default_filter):
    numbers = {n: nr(n) for n in ("keyctl", "add_key", "bpf", "unshare", "setns", "mount", "umount2", "clone",
                                  "clone3", "personality", "socket", "perf_event_open", "userfaultfd",
                                  "io_uring_setup", "kexec_load", "init_module", "pivot_root", "swapoff")}
    missing = b"/corert-test-no-such-dir"

    def checks(_fd: int) -> dict:
        return {
            "keyctl": expect(sys_call(numbers["keyctl"], 0, -3, 0), errno.EPERM),
            "add_key": expect(sys_call(numbers["add_key"], b"user", b"corert", None, 0, -3), errno.EPERM),
            "bpf": expect(sys_call(numbers["bpf"], 0, 0, 0), errno.EPERM),
            "setns": expect(sys_call(numbers["setns"], -1, 0), errno.EPERM),
            # unfiltered these fail with ENOENT/EINVAL/EFAULT: EPERM can only come from the filter
            "mount": expect(sys_call(numbers["mount"], None, missing, None, 0x1000 | 0x20, None), errno.EPERM),
            "umount2": expect(sys_call(numbers["umount2"], missing, 0), errno.EPERM),
            "pivot_root": expect(sys_call(numbers["pivot_root"], missing, missing), errno.EPERM),
            "swapoff": expect(sys_call(numbers["swapoff"], missing), errno.EPERM),
            "clone(NEWUSER)": expect(sys_call(numbers["clone"], CLONE_NEWUSER | CLONE_FS | signal.SIGCHLD, 0, 0, 0, 0),
                                     errno.EPERM),
            "clone3": expect(sys_call(numbers["clone3"], 0, 0), errno.ENOSYS),
            "personality(READ_IMPLIES_EXEC)": expect(sys_call(numbers["personality"], READ_IMPLIES_EXEC), errno.EPERM),
            "socket(AF_VSOCK)": expect(sys_call(numbers["socket"], AF_VSOCK, SOCK_STREAM, 0), errno.EPERM),
            "perf_event_open": expect(sys_call(numbers["perf_event_open"], 0, 0, -1, -1, 0), errno.EPERM),
            "userfaultfd": expect(sys_call(numbers["userfaultfd"], 0), errno.EPERM),
            "io_uring_setup": expect(sys_call(numbers["io_uring_setup"], 1, 0), errno.EPERM),
            "kexec_load": expect(sys_call(numbers["kexec_load"], 0, 0, 0, 0), errno.EPERM),
            "init_module": expect(sys_call(numbers["init_module"], 0, 0, b""), errno.EPERM),
            # numbered above everything the profile names: ENOSYS from the stub, not the default EPERM
            "syscall 1000": expect(sys_call(1000), errno.ENOSYS),
            # last: unfiltered, it would move the child into a new user namespace and
            # turn the capability checks above into EPERM
            "unshare(CLONE_NEWUSER)": expect(sys_call(numbers["unshare"], CLONE_NEWUSER), errno.EPERM),
        }

    report = run_in_filtered_child(default_filter, checks)
    assert len(report) == 19


def test_default_profile_allows_ordinary_work(default_filter, tmp_path):
    target = tmp_path / "corert-seccomp-file"
    target.write_bytes(b"hello")
    numbers = {n: nr(n) for n in ("getpid", "personality", "socket")}
    parent_pid = os.getpid()

    def checks(_fd: int) -> dict:
        out = {}
        pid = sys_call(numbers["getpid"])
        out["getpid"] = {"ok": pid[0] == os.getpid() != parent_pid, "got": pid}
        fd = os.open(target, os.O_RDWR)
        out["open+read"] = {"ok": os.read(fd, 5) == b"hello", "got": "read"}
        os.lseek(fd, 0, os.SEEK_END)
        out["write"] = {"ok": os.write(fd, b"!") == 1, "got": "write"}
        os.close(fd)
        r, w = os.pipe()
        os.write(w, b"x")
        out["pipe"] = {"ok": os.read(r, 1) == b"x", "got": "pipe"}
        out["personality(query)"] = succeed(sys_call(numbers["personality"], 0xFFFFFFFF))
        out["personality(PER_LINUX)"] = succeed(sys_call(numbers["personality"], 0))
        s = sys_call(numbers["socket"], AF_UNIX, SOCK_STREAM, 0)
        out["socket(AF_UNIX)"] = succeed(s)
        if s[0] >= 0:
            os.close(s[0])
        child = os.fork()  # clone(SIGCHLD) without namespace flags
        if child == 0:
            os._exit(7)
        _, status = os.waitpid(child, 0)
        out["fork"] = {"ok": os.waitstatus_to_exitcode(status) == 7, "got": status}
        out["stat+listdir"] = {"ok": "corert-seccomp-file" in os.listdir(tmp_path), "got": "listdir"}
        return out

    run_in_filtered_child(default_filter, checks)
    assert target.read_bytes() == b"hello!"


def test_notify_rule_gives_a_listener_fd(tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}],
               "listenerPath": str(tmp_path / "corert-listener.sock")}
    compiled = compile_seccomp(profile, tmp_path / "cache")
    assert compiled.needs_listener and compiled.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER

    def checks(fd: int) -> dict:
        link = os.readlink(f"/proc/self/fd/{fd}")
        return {"listener fd": {"ok": link == "anon_inode:seccomp notify", "got": link},
                "getpid still allowed": {"ok": os.getpid() > 0, "got": os.getpid()}}

    run_in_filtered_child(compiled, checks, use_seccomp_syscall=True)


def test_parent_is_not_filtered():
    # The filter lived only in the children: the test process itself still has no seccomp mode.
    status = Path("/proc/self/status").read_text()
    assert "Seccomp:\t0" in status


def test_enosys_stub_splits_at_the_highest_named_syscall():
    # A tiny allow-list: syscalls numbered above its highest entry get ENOSYS (libc falls back),
    # unlisted ones below it get the default EPERM.
    allowed = ["read", "write", "close", "mmap", "munmap", "brk", "mremap", "madvise", "rt_sigaction",
               "rt_sigprocmask", "futex", "exit", "exit_group", "getpid", "lseek", "fstat", "newfstatat"]
    allowed = [n for n in allowed if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) >= 0]
    top = max(nr(n) for n in allowed)
    below = next(nr(n) for n in ("getppid", "getuid", "sync", "uname", "getcwd") if nr(n) < top and n not in allowed)
    compiled = compile_seccomp({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]},
                               None)

    def checks(_fd: int) -> dict:
        # top + 1 is usually a real syscall: unfiltered it would not fail with ENOSYS (bad fds/args at worst)
        return {"below the top": expect(sys_call(below, -1, 0, 0), errno.EPERM),
                "top + 1": expect(sys_call(top + 1, -1, 0, 0, 0), errno.ENOSYS),
                "allowed": succeed(sys_call(nr("getpid")))}

    run_in_filtered_child(compiled, checks)
