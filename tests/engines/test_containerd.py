"""containerd (Debian's) started by the test in a private directory, driving corert through the runc shim
(io.containerd.runc.v2 with `ctr run --runc-binary`), and the same sequence with runc as the oracle.

The daemon gets its own root, state, sockets and namespace; the shim's runtime root (`--runc-root`) and
each container's cgroup (`--cgroup`, under our own cgroup) are private too. ctr never closes a task's
stdin (with any runtime), so the stdin check reads one line instead of waiting for EOF.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cgroupkit import cgroup_dir
from engines.enginekit import CTR_NAMESPACE, RUNTIMES, Containerd, mounts_under, remove_cgroup_tree, run_in_pty
from support import proc_status_field, wait_for

pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
    pytest.mark.skipif(not shutil.which("containerd") or not shutil.which("ctr")
                       or not shutil.which("containerd-shim-runc-v2"), reason="containerd not installed"),
]

# busybox `stty size` on a 0x0 pty prints an error and still exits 0: wait for a real size.
WAIT_SIZE = "until size=$(stty size 2>/dev/null); [ -n \"$size\" ] && [ \"$size\" != '0 0' ]; do sleep 0.05; done; echo $size"
# Records SIGUSR1 in a file and exits 7 on SIGTERM (busybox sh runs traps between sleeps).
TRAPPER = ["sh", "-c", "trap 'echo got-usr1 >> /tmp/events' USR1; trap 'exit 7' TERM; touch /tmp/ready; "
           "while :; do sleep 0.1; done"]


class Ctr:
    """ctr for one runtime: `run` gets --runc-binary, a private --runc-root and a cgroup under ours."""

    def __init__(self, daemon: Containerd, name: str) -> None:
        self.daemon = daemon
        self.name = name
        self.binary = RUNTIMES[name]
        self.runc_root = daemon.base / f"runc-root-{name}"
        self.image = daemon.image

    def run_args(self, container: str, *args: str) -> list[str]:
        return ["run", "--runc-binary", self.binary, "--runc-root", str(self.runc_root),
                "--cgroup", f"{self.daemon.cgroup_parent}/{self.name}-{container}", *args]

    def run(self, container: str, *args: str, **kw) -> subprocess.CompletedProcess:
        """`ctr run [options...] IMAGE ID CMD...`: args are options, then ctr.image, ID and the command."""
        return self.daemon(*self.run_args(container, *args), **kw)

    def __call__(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.daemon(*args, **kw)

    def task_status(self, container: str) -> str:
        for line in self("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container:
                return fields[2]
        return "none"

    def runtime_containers(self) -> list[str]:
        top = self.runc_root / CTR_NAMESPACE
        return sorted(p.name for p in top.iterdir() if p.is_dir()) if top.is_dir() else []


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, image_tar):
    base = tmp_path_factory.mktemp("containerd")
    daemon = Containerd(base)
    try:
        daemon("images", "import", str(image_tar))
        daemon.image = daemon("images", "ls", "--quiet").stdout.split()[0]   # the tar's own ref name
        yield daemon
    finally:
        daemon.remove_all()
        daemon("images", "rm", getattr(daemon, "image", "-"), check=False)
        daemon.stop()
        left_mounts = mounts_under(str(base))
        for m in sorted(left_mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        left_cgroups = remove_cgroup_tree(daemon.cgroup_parent)
        assert not left_mounts, f"containerd left mounts: {left_mounts}"
        assert not left_cgroups, f"container cgroups left behind: {left_cgroups}"


@pytest.fixture(params=sorted(RUNTIMES))
def ctr(request, containerd):
    c = Ctr(containerd, request.param)
    yield c
    for name in containerd("container", "ls", "--quiet", check=False).stdout.split():
        containerd("task", "delete", "--force", name, check=False)
        containerd("container", "delete", name, check=False)
    assert c.runtime_containers() == [], "the runtime still has containers the shim deleted"


def test_run_rm_output_and_exit_codes(ctr):
    assert ctr.run("k1", "--rm", ctr.image, "k1", "echo", "hello").stdout == "hello\n"
    assert ctr.run("k1", "--rm", ctr.image, "k1", "sh", "-c", "exit 3", check=False).returncode == 3
    r = ctr.run("k1", "--rm", ctr.image, "k1", "/nonexistent", check=False)
    assert r.returncode != 0 and "/nonexistent" in r.stderr
    assert ctr("container", "ls", "--quiet").stdout == ""


def test_run_stdin(ctr):
    r = ctr.run("k1", "--rm", ctr.image, "k1", "sh", "-c", "read line; echo got $line", input="hello\n")
    assert r.stdout == "got hello\n"


def test_run_tty(ctr):
    rc, out = run_in_pty(ctr.daemon.argv(*ctr.run_args("k1", "--rm", "-t", ctr.image, "k1", "sh", "-c",
                                                         "test -t 0 && echo is-a-tty; " + WAIT_SIZE + "; exit 4")),
                         ctr.daemon.env(), rows=25, cols=91)
    assert rc == 4, out
    assert "is-a-tty" in out and "25 91" in out


def test_detached_task_exec_pause_signals_delete(ctr):
    ctr.run("k2", "-d", ctr.image, "k2", *TRAPPER)
    wait_for(lambda: ctr("task", "exec", "--exec-id", "probe", "k2", "test", "-e", "/tmp/ready",
                         check=False).returncode == 0, what="the trapper to start")
    pid = int(ctr("task", "ls").stdout.split("k2", 1)[1].split()[0])

    assert ctr("task", "exec", "--exec-id", "e1", "k2", "echo", "from-exec").stdout == "from-exec\n"
    assert ctr("task", "exec", "--exec-id", "e2", "k2", "sh", "-c", "exit 5", check=False).returncode == 5
    r = ctr("task", "exec", "--exec-id", "e3", "--user", "1000", "--cwd", "/tmp", "k2", "sh", "-c",
            "echo $(id -u) $(pwd)")
    assert r.stdout == "1000 /tmp\n"
    rc, out = run_in_pty(ctr.daemon.argv("task", "exec", "-t", "--exec-id", "e4", "k2", "sh", "-c",
                                         "test -t 0 && echo exec-tty; " + WAIT_SIZE), ctr.daemon.env(),
                         rows=19, cols=101)
    assert rc == 0 and "exec-tty" in out and "19 101" in out, out

    # `ps --format json` through the shim: the init and its loop's `sleep`; no exec'd process is left.
    pids = [int(line.split()[0]) for line in ctr("task", "ps", "k2").stdout.splitlines()[1:]]
    assert pid in pids
    assert all(_parent(p) in (pid, None) for p in pids if p != pid), pids

    ctr("task", "pause", "k2")
    assert ctr.task_status("k2") == "PAUSED"
    freezer = cgroup_dir(pid, "freezer")
    assert freezer and Path(freezer, "freezer.state").read_text().strip() == "FROZEN"
    ctr("task", "resume", "k2")
    assert ctr.task_status("k2") == "RUNNING"

    metrics = ctr("task", "metrics", "k2").stdout
    assert re.search(r"^pids\.current\s+1$", metrics, re.M) or re.search(r"memory", metrics), metrics

    # update through the shim's form: `update --resources -` with the JSON on stdin.
    memory = cgroup_dir(pid, "memory")
    update = subprocess.run([ctr.binary, "--root", str(ctr.runc_root / CTR_NAMESPACE), "update", "--resources", "-",
                             "k2"], input=json.dumps({"memory": {"limit": 48 << 20}}), capture_output=True,
                            text=True, env={}, timeout=60)
    assert update.returncode == 0, update.stderr
    assert memory and Path(memory, "memory.limit_in_bytes").read_text().strip() == str(48 << 20)

    ctr("task", "kill", "--signal", "SIGUSR1", "k2")
    wait_for(lambda: "got-usr1" in ctr("task", "exec", "--exec-id", "e5", "k2", "cat", "/tmp/events",
                                       check=False).stdout, what="the USR1 trap")
    ctr("task", "kill", "k2")           # SIGTERM: the trap exits 7
    wait_for(lambda: ctr.task_status("k2") == "STOPPED", what="the task to stop")
    r = ctr("task", "delete", "k2")
    assert re.search(r"exit code 7\b", r.stderr) or r.stdout.strip().endswith("7"), (r.stdout, r.stderr)
    assert not os.path.exists(f"/proc/{pid}")
    ctr("container", "delete", "k2")
    assert memory is None or not os.path.exists(memory), "the runtime left the container's cgroup"


def test_kill_all_and_force_delete(ctr):
    ctr.run("k3", "-d", ctr.image, "k3", "sleep", "1000")
    pid = int(ctr("task", "ls").stdout.split("k3", 1)[1].split()[0])
    ctr("task", "kill", "--all", "--signal", "SIGKILL", "k3")
    wait_for(lambda: ctr.task_status("k3") == "STOPPED", what="kill --all")
    r = ctr("task", "delete", "k3")
    assert "137" in r.stderr or r.stdout.strip().endswith("137"), (r.stdout, r.stderr)
    ctr("container", "delete", "k3")

    ctr.run("k4", "-d", ctr.image, "k4", "sleep", "1000")
    pid = int(ctr("task", "ls").stdout.split("k4", 1)[1].split()[0])
    ctr("task", "delete", "--force", "k4")   # running: kill --all 9, delete, delete --force
    assert ctr.task_status("k4") == "none"
    assert not os.path.exists(f"/proc/{pid}")
    ctr("container", "delete", "k4")


def test_joined_network_namespace(ctr):
    name = f"corert-ctr-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        inode = os.stat(f"/run/netns/{name}").st_ino
        r = ctr.run("k5", "--rm", "--with-ns", f"network:/run/netns/{name}", ctr.image, "k5",
                    "readlink", "/proc/self/ns/net")
        assert r.stdout.strip() == f"net:[{inode}]"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)



def _parent(pid: int) -> int | None:
    """PPid of a live process, None once it is gone."""
    try:
        return int(proc_status_field(pid, "PPid"))
    except FileNotFoundError:
        return None
