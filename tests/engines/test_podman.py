"""podman (Debian's) with corert pinned as its OCI runtime, and the same sequence with runc as the oracle.

Everything is private to the test: storage root, run root, libpod tmp dir, network config, hooks dir,
and a cgroup parent under our own cgroup. The runtime's state root stays its default (/run/corert,
/run/runc): podman drops `--runtime-flag` on the `delete` its cleanup process sends, so a private one
would leak; the test instead checks that no container podman made (its events log) is left there. The host
needs `default_ulimits` within its hard NOFILE/NPROC limits (root lacks CAP_SYS_RESOURCE here), so the
containers.conf written below pins them. Each step is checked against what podman itself reports (exit
codes, inspect, logs, top, stats) and, where podman is silent, against the kernel (cgroup files, /proc).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cgroupkit import cgroup_dir
from engines.enginekit import RUNTIMES, Podman, mounts_under, remove_cgroup_tree, run_in_pty
from support import wait_for

pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman needs root"),
    pytest.mark.skipif(not shutil.which("podman") or not shutil.which("conmon"), reason="podman not installed"),
]

IMAGE = "localhost/busybox:latest"
# A container that reports SIGUSR1 and exits 7 on SIGTERM (busybox sh runs traps between sleeps).
TRAPPER = ["sh", "-c", "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 7' TERM; echo ready; "
           "while :; do sleep 0.1; done"]
# busybox `stty size` on a 0x0 pty prints an error and still exits 0: wait for a real size.
WAIT_SIZE = "until size=$(stty size 2>/dev/null); [ -n \"$size\" ] && [ \"$size\" != '0 0' ]; do sleep 0.05; done; echo $size"


@pytest.fixture(scope="module", params=sorted(RUNTIMES))
def podman_env(request, tmp_path_factory, image_tar):
    base = tmp_path_factory.mktemp(f"podman-{request.param}")
    p = Podman(base, RUNTIMES[request.param])
    p.name = request.param
    try:
        p("load", "-i", str(image_tar))
        yield p
    finally:
        p("rm", "--all", "--force", "--time", "0", check=False)
        p("rmi", "--all", "--force", check=False)
        p("system", "reset", "--force", check=False)
        left_mounts = mounts_under(str(base))
        for m in sorted(left_mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        # podman's own conmon cgroup is not a container's: only libpod-* dirs would be a runtime's leak.
        left_cgroups = [d for d in remove_cgroup_tree(p.cgroup_parent) if os.path.basename(d) != "conmon"]
        assert not left_mounts, f"podman left mounts: {left_mounts}"
        assert not left_cgroups, f"container cgroups left behind: {left_cgroups}"


@pytest.fixture
def podman(podman_env):
    """The module's podman; every container a test made is force-removed after it, and the runtime must
    have forgotten them all (its state root holds no container)."""
    yield podman_env
    podman_env("rm", "--all", "--force", "--time", "0", check=False)
    assert podman_env.runtime_containers() == []


def test_run_exit_codes_and_errors(podman):
    r = podman("run", "--rm", IMAGE, "echo", "hello")
    assert r.stdout == "hello\n"
    assert podman("run", "--rm", IMAGE, "sh", "-c", "exit 3", check=False).returncode == 3
    # podman maps the runtime's error text to 127 (not found) / 126 (not executable), and shows the
    # message it read from the runtime's json log: one clean line, no doubled program name.
    r = podman("run", "--rm", IMAGE, "/nonexistent", check=False)
    assert r.returncode == 127, r.stderr
    assert "/nonexistent" in r.stderr and "command that was not found" in r.stderr
    r = podman("run", "--rm", IMAGE, "/etc/passwd", check=False)
    assert r.returncode == 126, r.stderr
    assert f"{podman.runtime}: {podman.name}:" not in r.stderr
    assert podman("ps", "--all", "--quiet").stdout == ""


def test_run_interactive_stdin(podman):
    r = podman("run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo done", input="line one\nline two\n")
    assert r.stdout == "line one\nline two\ndone\n"


def test_only_stdio_reaches_the_processes(podman):
    """conmon runs the runtime with its sync/start pipes (_OCI_SYNCPIPE, _OCI_STARTPIPE) open: neither
    the container's init nor an exec'd process may inherit them (or anything else of the runtime's), nor
    see those variables. Checked from the host, in /proc."""
    podman("run", "-d", "--name", "fd", IMAGE, "sleep", "1000")
    podman("exec", "--detach", "fd", "sleep", "999")
    hpids = {line.split(None, 1)[1].strip(): line.split()[0]
             for line in podman("top", "fd", "hpid", "args").stdout.splitlines()[1:]}
    assert set(hpids) == {"sleep 1000", "sleep 999"}, hpids
    for hpid in hpids.values():
        assert sorted(os.listdir(f"/proc/{hpid}/fd"), key=int) == ["0", "1", "2"]
        with open(f"/proc/{hpid}/environ", "rb") as f:
            assert b"_OCI_" not in f.read()
    podman("rm", "-f", "-t", "0", "fd")


def test_run_tty_gets_terminal_and_window_size(podman):
    """-t: conmon hands the runtime a console socket; the pty master comes back over it, sized as ours."""
    rc, out = run_in_pty(podman.argv("run", "--rm", "-t", IMAGE, "sh", "-c",
                                     "test -t 0 && test -t 1 && echo is-a-tty; " + WAIT_SIZE + "; exit 4"),
                         podman.env, rows=33, cols=77)
    assert rc == 4, out
    assert "is-a-tty" in out and "33 77" in out


def test_exec_variants(podman):
    podman("run", "-d", "--name", "ex", IMAGE, "sleep", "1000")
    assert podman("exec", "ex", "echo", "from-exec").stdout == "from-exec\n"
    r = podman("exec", "-u", "1000", "-w", "/tmp", "-e", "FOO=bar", "ex", "sh", "-c", "echo $(id -u) $(pwd) $FOO")
    assert r.stdout == "1000 /tmp bar\n"
    assert podman("exec", "ex", "sh", "-c", "exit 5", check=False).returncode == 5
    r = podman("exec", "-i", "ex", "sh", "-c", "tr a-z A-Z", input="shout\n")
    assert r.stdout == "SHOUT\n"
    # conmon sizes the pty when podman's resize message arrives, which can be just after the process
    # starts (with runc too): the process waits for a size instead of racing it.
    rc, out = run_in_pty(podman.argv("exec", "-t", "ex", "sh", "-c", "test -t 0 && echo exec-tty; " + WAIT_SIZE),
                         podman.env, rows=21, cols=99)
    assert rc == 0 and "exec-tty" in out and "21 99" in out, out
    # The exec'd processes ran in the container's pid namespace, and are gone: only the init is left.
    top = podman("top", "ex", "pid", "args").stdout.splitlines()
    assert [line.split() for line in top[1:]] == [["1", "sleep", "1000"]]
    assert podman("exec", "ex", "sh", "-c", "echo $$").stdout.strip() != "1"
    podman("rm", "-f", "-t", "0", "ex")


def test_logs_pause_kill_and_graceful_stop(podman):
    podman("run", "-d", "--name", "lk", IMAGE, *TRAPPER)
    wait_for(lambda: "ready" in podman("logs", "lk").stdout, what="the container's first output")
    pid = podman.pid("lk")

    podman("pause", "lk")
    assert podman.inspect("lk", "{{.State.Status}}") == "paused"
    freezer = cgroup_dir(pid, "freezer")
    assert freezer   # v1 freezer (this host): the kernel's word that every task is frozen
    assert Path(freezer, "freezer.state").read_text().strip() == "FROZEN"
    podman("unpause", "lk")
    assert podman.inspect("lk", "{{.State.Status}}") == "running"

    podman("kill", "--signal", "USR1", "lk")
    wait_for(lambda: "got-usr1" in podman("logs", "lk").stdout, what="the USR1 trap")
    assert podman.inspect("lk", "{{.State.Status}}") == "running"

    # The trap exits 7 on SIGTERM, well within the grace period: no SIGKILL, podman records 7.
    podman("stop", "--time", "30", "lk")
    assert podman.inspect("lk", "{{.State.Status}} {{.State.ExitCode}}") == "exited 7"
    assert podman("logs", "lk").stdout.splitlines()[-1] == "got-term"
    assert not os.path.exists(f"/proc/{pid}")


def test_stop_escalates_then_start_restart_and_rm_force(podman):
    podman("run", "-d", "--name", "sr", IMAGE, "sleep", "1000")   # pid 1 ignores SIGTERM
    r = podman("stop", "--time", "1", "sr")
    assert "resorting to SIGKILL" in r.stderr
    assert podman.inspect("sr", "{{.State.Status}} {{.State.ExitCode}}") == "exited 137"
    assert podman.runtime_containers() == []          # podman deleted it from the runtime

    podman("start", "sr")
    first = podman.pid("sr")
    assert podman.inspect("sr", "{{.State.Status}}") == "running"
    podman("restart", "--time", "1", "sr")
    second = podman.pid("sr")
    assert second != first and podman.inspect("sr", "{{.State.Status}}") == "running"
    cgroup = cgroup_dir(second, "memory")

    podman("rm", "--force", "--time", "1", "sr")     # running: kill 15, kill 9, delete --force
    assert podman("ps", "--all", "--quiet").stdout == ""
    assert not os.path.exists(f"/proc/{second}")
    assert podman.runtime_containers() == []
    assert cgroup and not os.path.exists(cgroup), "the runtime left the container's cgroup"


def test_update_top_ps_stats(podman):
    podman("run", "-d", "--name", "up", "--memory", "256m", "--pids-limit", "100", IMAGE, "sleep", "1000")
    pid = podman.pid("up")
    memory = cgroup_dir(pid, "memory")
    # The container's cgroup is podman's cgroupsPath, absolute under the hierarchy roots (as runc puts it).
    assert memory and str(memory).endswith(f"{podman.cgroup_parent}/libpod-{podman.inspect('up', '{{.Id}}')}")
    assert Path(memory, "memory.limit_in_bytes").read_text().strip() == str(256 << 20)

    # podman writes the new linux.resources to a file: `update --resources FILE`.
    podman("update", "--memory", "64m", "--cpu-period", "100000", "--cpu-quota", "50000", "up")
    assert Path(memory, "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    cpu = cgroup_dir(pid, "cpu")
    assert cpu and Path(cpu, "cpu.cfs_quota_us").read_text().strip() == "50000"
    pids = cgroup_dir(pid, "pids")
    assert pids and Path(pids, "pids.max").read_text().strip() == "100"   # set at create, kept by the update
    # What the container itself sees through its cgroup mount.
    assert podman("exec", "up", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").stdout.strip() == str(64 << 20)

    ps = podman("ps", "--format", "{{.Names}} {{.Status}}").stdout.split("\n")
    assert ps[0].startswith("up Up")
    top = podman("top", "up", "pid", "user", "args").stdout.splitlines()
    assert top[1].split() == ["1", "root", "sleep", "1000"]
    stats = json.loads(podman("stats", "--no-stream", "--format", "json", "up").stdout)
    assert stats[0]["name"] == "up" and stats[0]["pids"] == "1"
    podman("rm", "-f", "-t", "0", "up")


def test_pid_host(podman):
    r = podman("run", "--rm", "--pid", "host", IMAGE, "sh", "-c", "echo $$; readlink /proc/self/ns/pid")
    pid, ns = r.stdout.split()
    assert pid != "1"
    assert ns == os.readlink("/proc/self/ns/pid")
    # Detached with the host's pid namespace, podman stops it with `kill --all`.
    podman("run", "-d", "--name", "ph", "--pid", "host", IMAGE, "sleep", "1000")
    host_pid = podman.pid("ph")
    assert os.readlink(f"/proc/{host_pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    podman("stop", "--time", "1", "ph")
    assert podman.inspect("ph", "{{.State.Status}}") == "exited"
    assert not os.path.exists(f"/proc/{host_pid}")
    podman("rm", "ph")


def test_joined_network_namespace_path(podman):
    """--network ns:PATH: the spec's network namespace is a path the runtime joins (as podman's own netns)."""
    name = f"corert-eng-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        inode = os.stat(f"/run/netns/{name}").st_ino
        r = podman("run", "--rm", "--network", f"ns:/run/netns/{name}", IMAGE, "readlink", "/proc/self/ns/net")
        assert r.stdout.strip() == f"net:[{inode}]"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_socket_activation_fds(podman, tmp_path):
    """LISTEN_FDS from a service manager: podman passes the fds on (--preserve-fds) and the process sees them."""
    data = tmp_path / "activation"
    data.write_text("socket-activation-data\n")
    env = dict(podman.env, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    with open(data) as f:
        # fd 3 is what LISTEN_FDS=1 means: the child moves the file there before exec'ing podman.
        r = subprocess.run(podman.argv("run", "--rm", IMAGE, "sh", "-c", "echo $LISTEN_FDS $LISTEN_PID; cat <&3"),
                           env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                           pass_fds=(3,), preexec_fn=lambda: os.dup2(f.fileno(), 3))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1 1\nsocket-activation-data\n"


def test_oci_hooks_run_with_state(podman, tmp_path):
    """podman's hooks dir puts prestart/poststop hooks in the spec; the runtime runs them with the state."""
    out = tmp_path / "hooks-out"
    out.mkdir()
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\ncat > "{out}/$1"\n')
    script.chmod(0o755)
    for stage in ("prestart", "poststop"):
        (podman.hooks_dir / f"{stage}.json").write_text(json.dumps({
            "version": "1.0.0", "hook": {"path": str(script), "args": ["hook.sh", stage]},
            "when": {"annotations": {"^corert-test-hooks$": "^yes$"}}, "stages": [stage]}))
    try:
        podman("run", "--name", "hk", "--annotation", "corert-test-hooks=yes", IMAGE, "true")
        cid = podman.inspect("hk", "{{.Id}}")
        podman("rm", "hk")
        pre = json.loads((out / "prestart").read_text())
        assert pre["id"] == cid and pre["pid"] > 0 and pre["status"] in ("created", "creating")
        post = json.loads((out / "poststop").read_text())
        assert post["id"] == cid and post["status"] == "stopped"
    finally:
        for stage in ("prestart", "poststop"):
            (podman.hooks_dir / f"{stage}.json").unlink()

