"""The OCI runtime on the real kernel, with runc as the oracle: the same bundle must behave the same."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from support import exited, poll, proc_status_field, read_config, set_args, status, wait_for, write_config

PROBE = ("echo host=$(hostname); id; echo pid=$$; pwd; grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status;"
         " env | sort | grep -v '^HOSTNAME'; cut -d' ' -f2,3 /proc/self/mounts | sort")


def test_run_matches_runc(corert, runc, bundle):
    """hostname, uid/gid, pid 1, cwd, capabilities, no_new_privs, env and mounts are runc's."""
    set_args(bundle, "sh", "-c", PROBE)
    ours = corert("run", "--bundle", str(bundle), "c1", check=True)
    theirs = runc("run", "--bundle", str(bundle), "c1", check=True)
    assert ours.stdout == theirs.stdout
    assert "pid=1\n" in ours.stdout and "uid=0(root)" in ours.stdout


def test_exit_codes_and_signals_match_runc(corert, runc, bundle):
    # (pid 1 ignores signals it has no handler for, even from itself: both runtimes report 0 for that)
    for script, expected in (("exit 3", 3), ("sh -c 'kill -9 $$'; exit $?", 137), ("kill -9 $$", 0), ("true", 0)):
        set_args(bundle, "sh", "-c", script)
        ours = corert("run", "--bundle", str(bundle), "c2")
        theirs = runc("run", "--bundle", str(bundle), "c2")
        assert (ours.returncode, theirs.returncode) == (expected, expected), script


@pytest.mark.parametrize("runtime", ["corert", "runc"])
def test_foreground_run_reports_signal_death(request, bundle, runtime):
    """A signal from outside kills the init: `run` returns 128+N, and forwards signals it receives."""
    import subprocess
    cli = request.getfixturevalue(runtime)
    set_args(bundle, "sleep", "30")
    proc = subprocess.Popen([cli.binary, "--root", str(cli.root), "run", "--bundle", str(bundle), "sig"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: status(cli, "sig") == "running", "the container to run", timeout=10, interval=0.02)
    cli("kill", "sig", "KILL", check=True)
    assert proc.wait(timeout=10) == 137
    proc.stdout.close()
    proc.stderr.close()


def test_create_start_state_delete(corert, bundle):
    set_args(bundle, "sleep", "30")
    corert("create", "--bundle", str(bundle), "life", check=True)
    state = json.loads(corert("state", "life", check=True).stdout)
    assert state["status"] == "created" and state["id"] == "life" and state["pid"] > 0
    assert state["bundle"] == str(bundle) and state["ociVersion"]
    # The init is blocked before exec: its command line is still not `sleep`.
    with open(f"/proc/{state['pid']}/cmdline", "rb") as f:
        assert not f.read().startswith(b"sleep")
    corert("start", "life", check=True)
    assert status(corert, "life") == "running"
    wait_for(lambda: Path(f"/proc/{state['pid']}/cmdline").read_bytes().startswith(b"sleep"), "the init to exec sleep",
             timeout=5, interval=0.02)
    r = corert("delete", "life")
    assert r.returncode == 1 and "not stopped" in r.stderr
    corert("kill", "life", "KILL", check=True)
    wait_for(lambda: status(corert, "life") == "stopped", "the container to stop", timeout=5, interval=0.02)
    corert("delete", "life", check=True)
    assert corert("state", "life").returncode == 1


def test_kill_by_name_and_number_and_stopped(corert, bundle):
    set_args(bundle, "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done")
    corert("run", "-d", "--bundle", str(bundle), "k", check=True)
    pid = json.loads(corert("state", "k").stdout)["pid"]
    wait_for(lambda: int(proc_status_field(pid, "SigCgt"), 16) & (1 << (15 - 1)), "the shell's TERM trap")
    corert("kill", "k", "15", check=True)
    wait_for(lambda: exited(pid), "the shell to exit", timeout=5, interval=0.02)
    wait_for(lambda: status(corert, "k") == "stopped", "the container to stop", interval=0.02)
    r = corert("kill", "k", "SIGKILL")
    assert r.returncode == 1 and "not running" in r.stderr
    corert("delete", "k", check=True)


def test_missing_and_duplicate_ids(corert, bundle):
    r = corert("state", "nosuch")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "nosuch" in r.stderr
    assert corert("delete", "--force", "nosuch").returncode == 0
    assert corert("kill", "nosuch").returncode == 1
    set_args(bundle, "sleep", "30")
    corert("create", "--bundle", str(bundle), "dup", check=True)
    r = corert("create", "--bundle", str(bundle), "dup")
    assert r.returncode == 1 and "exists" in r.stderr
    corert("delete", "dup", check=True)


@pytest.mark.parametrize("breakage, words", [
    (lambda b, c: (b / "config.json").unlink(), "config.json"),
    (lambda b, c: (b / "config.json").write_text("{not json"), "JSON"),
    (lambda b, c: (c.__setitem__("root", {"path": "/nonexistent/rootfs"}), write_config(b, c)), "root"),
    (lambda b, c: (c["process"].__setitem__("args", []), write_config(b, c)), "process.args"),
    (lambda b, c: (c["linux"]["namespaces"].append({"type": "pid"}), write_config(b, c)), "linux.namespaces"),
    (lambda b, c: (c["process"].__setitem__("args", ["/no/such/binary"]), write_config(b, c)), "/no/such/binary"),
])
def test_bad_input_is_one_line_and_leaves_nothing(corert, bundle, state_root, breakage, words):
    breakage(bundle, read_config(bundle))
    r = corert("create", "--bundle", str(bundle), "bad")
    assert r.returncode != 0
    assert words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (state_root / "bad").exists()


def test_delete_force_after_a_killed_create_leaves_nothing(corert, bundle, state_root, tmp_path):
    """`create` SIGKILLed halfway (its createRuntime hook blocks, with the cgroup made and the init cloned):
    `delete --force` must still find and remove the cgroup and the state dir (the autouse check looks)."""
    import subprocess
    ready, release = tmp_path / "ready", tmp_path / "release"
    os.mkfifo(release)
    config = read_config(bundle)
    config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {ready}; read line < {release}"]}]}
    write_config(bundle, config)
    proc = subprocess.Popen([corert.binary, "--root", str(state_root), "create", "--bundle", str(bundle), "k1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: ready.exists() or proc.poll() is not None, timeout=30, interval=0.02)
        assert ready.exists(), "the hook never ran"
        proc.kill()
        proc.wait()
        r = corert("delete", "--force", "k1")
        assert r.returncode == 0, r.stderr
        assert not (state_root / "k1").exists()
    finally:
        with open(release, "w") as f:   # let the orphaned hook finish
            f.write("go\n")


def test_mount_target_symlink_cannot_escape(corert, tmp_path, busybox_rootfs, bundle):
    """A symlink in the image pointing at a host path: the mount lands inside the rootfs (CVE-2021-30465)."""
    import shutil
    rootfs = tmp_path / "evil-rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    host_dir = tmp_path / "host-target"
    host_dir.mkdir()
    (rootfs / "escape").symlink_to(str(host_dir))
    config = set_args(bundle, "sh", "-c", "ls /escape/inside >/dev/null && grep -c ' /host-target/inside ' /proc/mounts || true")
    config["root"] = {"path": str(rootfs)}
    config["mounts"].append({"destination": "/escape/inside", "type": "tmpfs", "source": "tmpfs", "options": []})
    write_config(bundle, config)
    r = corert("run", "--bundle", str(bundle), "esc")
    assert r.returncode == 0, r.stderr
    assert not (host_dir / "inside").exists()
    assert (rootfs / str(host_dir).lstrip("/") / "inside").is_dir()


def test_exec_joins_the_container(corert, bundle):
    set_args(bundle, "sleep", "30")
    config = read_config(bundle)
    config["hostname"] = "execbox"
    write_config(bundle, config)
    corert("run", "-d", "--bundle", str(bundle), "ex", check=True)
    r = corert("exec", "ex", "sh", "-c", "hostname; echo $$; cat /proc/1/cmdline | tr '\\0' ' '")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "execbox" and lines[1] != "1" and lines[2].startswith("sleep 30")
    assert corert("exec", "ex", "sh", "-c", "exit 7").returncode == 7
    corert("kill", "ex", "KILL", check=True)
    corert("delete", "--force", "ex", check=True)


def test_console_socket_receives_the_pty(corert, bundle, tmp_path):
    set_args(bundle, "sh", "-c", "tty; echo hello-tty", terminal=True)
    sock_path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    corert("create", "--bundle", str(bundle), "--console-socket", sock_path, "tty", check=True)
    conn, _ = server.accept()
    _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    assert len(fds) == 1
    corert("start", "tty", check=True)
    out = b""
    deadline = time.time() + 5
    while b"hello-tty" not in out and time.time() < deadline:
        try:
            out += os.read(fds[0], 4096)
        except OSError:
            break
    assert b"/dev/pts/0" in out and b"hello-tty" in out
    os.close(fds[0])
    conn.close()
    server.close()
    corert("delete", "--force", "tty", check=True)


def test_hooks_get_state_on_stdin(corert, bundle, tmp_path):
    out = tmp_path / "hooks.log"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {out}; echo >> {out}"]}
    # startContainer runs inside the container (its /bin/sh), before the process: its stdout is the
    # container's, so the state it got shows up in front of the process's own output.
    in_container = {"path": "/bin/sh", "args": ["sh", "-c", "echo start-hook; cat; echo"]}
    config = set_args(bundle, "echo", "process-ran")
    config["hooks"] = {"createRuntime": [hook], "startContainer": [in_container], "poststart": [hook],
                       "poststop": [hook]}
    write_config(bundle, config)
    r = corert("run", "--bundle", str(bundle), "hk", check=True)
    states = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert [s["status"] for s in states] == ["creating", "running", "stopped"]
    assert all(s["id"] == "hk" and s["pid"] > 0 for s in states[:2])
    lines = r.stdout.splitlines()
    assert lines[0] == "start-hook" and lines[-1] == "process-ran", r.stdout
    started = json.loads(lines[1])
    assert started["status"] == "created" and started["pid"] == states[0]["pid"]


def test_failing_start_hook_stops_the_container(corert, bundle, state_root):
    config = set_args(bundle, "echo", "must-not-run")
    config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}
    write_config(bundle, config)
    corert("create", "--bundle", str(bundle), "fh", check=True)
    r = corert("start", "fh")
    assert r.returncode == 1 and "before it could be started" in r.stderr, r.stderr
    assert "must-not-run" not in r.stdout
    corert("delete", "--force", "fh", check=True)
    assert not (state_root / "fh").exists()


def test_cgroup_limits_are_applied(corert, bundle):
    config = set_args(bundle, "sleep", "30")
    config["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 32},
                                    "cpu": {"quota": 50000, "period": 100000}}
    write_config(bundle, config)
    corert("run", "-d", "--bundle", str(bundle), "cg", check=True)
    pid = json.loads(corert("state", "cg").stdout)["pid"]
    cgroups = dict(line.split(":", 2)[1:] for line in open(f"/proc/{pid}/cgroup").read().splitlines())
    memory = Path("/sys/fs/cgroup/memory") / cgroups["memory"].lstrip("/")
    assert int((memory / "memory.limit_in_bytes").read_text()) == 64 << 20
    pids = Path("/sys/fs/cgroup/pids") / cgroups["pids"].lstrip("/")
    assert (pids / "pids.max").read_text().strip() == "32"
    assert "corert" in cgroups["memory"]
    # The container's cgroup is a child of ours: we never move into or limit anything else.
    own = dict(line.split(":", 2)[1:] for line in open("/proc/self/cgroup").read().splitlines())
    assert cgroups["memory"].startswith(own["memory"].rstrip("/") + "/")
    corert("delete", "--force", "cg", check=True)
    assert not memory.exists()


@pytest.fixture
def shared_rootfs(busybox_rootfs):
    """The busybox rootfs at a path other users can traverse (a user namespace's root is not host root)."""
    import shutil
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="corert-userns-"))
    os.chmod(top, 0o755)
    shutil.copytree(busybox_rootfs, top / "rootfs", symlinks=True)
    yield top / "rootfs"
    shutil.rmtree(top)


@pytest.mark.parametrize("runtime", ["corert", "runc"])
def test_user_namespace_mappings(request, bundle, shared_rootfs, runtime):
    cli = request.getfixturevalue(runtime)
    config = set_args(bundle, "sh", "-c", "id -u; cat /proc/self/uid_map; cat /proc/self/gid_map; touch /tmp/x")
    config["root"] = {"path": str(shared_rootfs)}
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["mounts"] = [m for m in config["mounts"] if m["type"] not in ("cgroup", "sysfs")]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]})
    write_config(bundle, config)
    r = cli("run", "--bundle", str(bundle), "un")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "100000", "65536", "0", "100000", "65536"]


def test_preserve_fds(corert, bundle, tmp_path):
    import subprocess
    data = tmp_path / "data.txt"
    data.write_text("preserved!\n")
    set_args(bundle, "sh", "-c", "cat <&3; ls /proc/self/fd")
    cmd = f"exec 3<{data}; exec {corert.binary} --root {corert.root} run --preserve-fds 1 --bundle {bundle} pf"
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == "preserved!"
    # 0-2, the preserved 3 and the directory fd ls itself opened: nothing of the runtime leaks in
    # (CVE-2024-21626 class).
    assert sorted(int(x) for x in lines[1:]) == [0, 1, 2, 3, 4]


def test_list_and_ps(corert, bundle):
    set_args(bundle, "sleep", "30")
    corert("run", "-d", "--bundle", str(bundle), "ls1", check=True)
    listing = json.loads(corert("list", "--format", "json", check=True).stdout)
    assert [c["id"] for c in listing] == ["ls1"] and listing[0]["status"] == "running"
    assert corert("list", "-q").stdout.split() == ["ls1"]
    pids = json.loads(corert("ps", "--format", "json", "ls1", check=True).stdout)
    assert pids == [json.loads(corert("state", "ls1").stdout)["pid"]]
    corert("delete", "--force", "ls1", check=True)


def test_time_namespace_offsets(corert, bundle):
    """linux.timeOffsets: the process sees the shifted boottime/monotonic clocks (CLOCK_BOOTTIME feeds
    /proc/uptime), the host does not."""
    config = set_args(bundle, "cat", "/proc/uptime")
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0},
                                      "monotonic": {"secs": 86400, "nanosecs": 0}}
    write_config(bundle, config)
    r = corert("run", "--bundle", str(bundle), "tns", check=True)
    inside = float(r.stdout.split()[0])
    host = float(open("/proc/uptime").read().split()[0])
    assert inside - host > 86400 * 364


@pytest.mark.parametrize("detached", [False, True])
def test_join_another_containers_pid_namespace(corert, bundle, tmp_path, detached):
    """A pid namespace given by path (podman --pid container:X, a Kubernetes pod sharing pids): the new
    container's process lives in it and sees the first container's processes."""
    set_args(bundle, "sleep", "60")
    corert("run", "-d", "--bundle", str(bundle), "pidowner", check=True)
    owner = json.loads(corert("state", "pidowner").stdout)["pid"]
    second = tmp_path / "second"
    second.mkdir()
    config = read_config(bundle)
    config["process"]["args"] = ["sh", "-c", "echo pid=$$; tr '\\0' ' ' < /proc/1/cmdline"]
    config["linux"]["namespaces"] = [ns if ns["type"] != "pid" else {"type": "pid", "path": f"/proc/{owner}/ns/pid"}
                                     for ns in config["linux"]["namespaces"]]
    write_config(second, config)
    if detached:
        corert("create", "--bundle", str(second), "joiner", check=True)
        state = json.loads(corert("state", "joiner").stdout)
        assert os.readlink(f"/proc/{state['pid']}/ns/pid") == os.readlink(f"/proc/{owner}/ns/pid")
        corert("start", "joiner", check=True)
        wait_for(lambda: status(corert, "joiner") == "stopped", "the joiner to stop", timeout=10, interval=0.02)
        corert("delete", "joiner", check=True)
    else:
        r = corert("run", "--bundle", str(second), "joiner")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] != "pid=1" and lines[1].strip() == "sleep 60", r.stdout   # pid 1 is the owner's sleep
    corert("delete", "--force", "pidowner", check=True)
