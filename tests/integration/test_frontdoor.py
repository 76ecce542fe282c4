"""The docker-like front door through the installed CLI, as a user runs it: `corert run IMAGE`, exit codes,
--rm, -d and its lifecycle (ps, list, logs, exec, stop, rm), every run flag checked from inside the
container, -it on a real pty, the storage drivers on a multi-layer image made here, diff and commit.

Every test uses its own state root (--root) and image store ($CORERT_DATA_ROOT), never /var/lib/corert,
and ends by checking that nothing is left: no container state, no container data dir, no staging dir, no
mount under the test's directory (the autouse leak check covers mounts, cgroups and processes machine-wide).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from support import CORERT, WAIT, Front, make_tar, wait_for, write_docker_archive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")


# ---- run: output, exit codes, --rm ------------------------------------------------------------------------
def test_run_busybox_on_a_fresh_store(front):
    assert not front.data.exists()
    r = front("run", "--rm", "busybox", "echo", "hello")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")
    assert "busybox:latest" in front.ok("images")   # the default image was made on first use
    front.assert_clean()


@pytest.mark.parametrize("args, code, message", [
    (["--no-such-flag", "busybox", "true"], 125, "unrecognized arguments"),
    (["no-such-image:1", "true"], 125, "not found"),
    (["--storage", "nope", "busybox", "true"], 125, "unknown storage driver"),
    (["-u", "nosuchuser", "busybox", "true"], 125, "unable to find user"),
    (["-v", "/nonexistent-corert-src:/x", "busybox", "true"], 125, "does not exist"),
    (["--memory", "lots", "busybox", "true"], 125, "invalid size"),
    (["busybox", "/no/such/binary"], 127, "No such file"),
    (["busybox", "no-such-command"], 127, "No such file"),
    (["busybox", "sh", "-c", "exit 42"], 42, ""),
    (["busybox", "sh", "-c", "sleep 100 & kill -9 $!; wait $!"], 137, ""),
])
@pytest.mark.parametrize("rm", [True, False])
def test_exit_codes_and_nothing_left(front, args, code, message, rm):
    r = front("run", *(["--rm"] if rm else []), *args)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    if code not in (125, 126, 127) and not rm:   # the container ran: without --rm it stays for ps -a / logs / commit
        [row] = front.ps("-a")
        assert row["STATUS"] == "stopped"
        front.ok("rm", row["NAMES"])
    front.assert_clean()


def test_not_executable_is_126(front, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)   # no x bit
    r = front("run", "--rm", "-v", f"{script}:/script:ro", "busybox", "/script")
    assert r.returncode == 126 and "Permission denied" in r.stderr and "ran" not in r.stdout
    front.assert_clean()


def test_rm_leaves_nothing_for_every_driver(front):
    for driver in _drivers():
        r = front("run", "--rm", "--storage", driver, "busybox", "sh", "-c", "echo x > /new; cat /new")
        assert (r.returncode, r.stdout) == (0, "x\n"), r.stderr
        front.assert_clean()


# ---- detached containers and their lifecycle ---------------------------------------------------------------
def test_detached_lifecycle_ps_list_logs_exec_stop_rm(front):
    script = 'echo started; trap "echo got-term; exit 3" TERM; while :; do sleep 0.1; done'
    cid = front.ok("run", "-d", "--name", "web", "busybox", "sh", "-c", script).strip()
    assert len(cid) == 64
    # the front end has exited; the container runs on
    [row] = front.ps()
    assert (row["CONTAINER ID"], row["NAMES"], row["STATUS"], row["IMAGE"]) == (cid[:12], "web", "running", "busybox")
    listed = {line.split()[0]: line.split()[2] for line in front.ok("list").splitlines()[1:]}
    assert listed == {cid: "running"}
    wait_for(lambda: "started" in front.ok("logs", "web"), "the log line")
    # exec by name, by id prefix; exit codes as docker's
    assert front.ok("exec", "web", "hostname").strip() == cid[:12]   # docker's default hostname
    r = front("exec", "-e", "FOO=bar", "-w", "/etc", cid[:8], "sh", "-c", 'echo "$FOO $(pwd)"; exit 4')
    assert (r.returncode, r.stdout) == (4, "bar /etc\n")
    assert front("exec", "web", "no-such-command").returncode == 127
    # An unknown target with no docker-only flag is runc's `exec` (engines rely on its exit code 1).
    r = front("exec", "nosuchcontainer", "true")
    assert r.returncode == 1 and "does not exist" in r.stderr
    # rm of a running container is refused; stop sends SIGTERM (the trap runs)
    r = front("rm", "web")
    assert r.returncode == 125 and "stop it first" in r.stderr
    assert front.ok("stop", "-t", "30", "web").strip() == "web"
    [row] = front.ps("-a")
    assert row["STATUS"] == "stopped" and front.ps() == []
    assert front.ok("logs", "web") == "started\ngot-term\n"
    r = front("exec", "web", "true")
    assert r.returncode == 125 and "stopped" in r.stderr
    r = front("run", "--name", "web", "busybox", "true")
    assert r.returncode == 125 and "already exists" in r.stderr
    front.ok("rm", "web")
    front.assert_clean()


def test_logs_follow_until_the_container_exits(front):
    front.ok("run", "-d", "--name", "talker", "busybox", "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done")
    assert front.ok("logs", "-f", "talker") == "line1\nline2\nline3\n"
    front.ok("rm", "talker")
    front.assert_clean()


def test_stop_escalates_to_sigkill_after_the_timeout(front):
    # PID 1 of a pid namespace without a handler ignores SIGTERM: only the SIGKILL after -t ends it
    front.ok("run", "-d", "--name", "stubborn", "busybox", "sleep", "1000")
    front.ok("stop", "-t", "0.5", "stubborn")
    [row] = front.ps("-a")
    assert row["STATUS"] == "stopped"
    front.ok("rm", "stubborn")
    front.assert_clean()


def test_detached_rm_removes_itself_and_rm_force(front):
    front.ok("run", "-d", "--rm", "busybox", "sh", "-c", "sleep 0.3")
    wait_for(lambda: front.ps("-a") == [], "the -d --rm container to remove itself")
    front.assert_clean()
    front.ok("run", "-d", "--name", "long", "busybox", "sleep", "1000")
    front.ok("rm", "-f", "long")
    front.assert_clean()


# ---- run flags, each verified inside the container ---------------------------------------------------------
def test_env_workdir_user_hostname(front):
    env = {**front.env, "PASSED": "through"}
    r = front.cli("run", "--rm", "-e", "A=1", "-e", "PASSED", "-e", "UNSET_CORERT_VAR", "-w", "/tmp",
                  "-u", "65534:65534", "-h", "myhost", "busybox",
                  "sh", "-c", 'echo "$A $PASSED ${UNSET_CORERT_VAR-unset}"; pwd; id -u; id -g; hostname',
                  env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["1 through unset", "/tmp", "65534", "65534", "myhost", ""]
    assert front.ok("run", "--rm", "-u", "nobody", "busybox", "id", "-un") == "nobody\n"
    front.assert_clean()


def test_read_only_tmpfs_and_volumes(front, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in").write_text("from host\n")
    script = ("touch /rootfile 2>/dev/null && echo root-writable || echo root-ro; "
              "touch /scratch/f && echo tmpfs-ok; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; "
              "cat /rw/in; echo from-ctr > /rw/out; "
              "echo x > /ro/nope 2>/dev/null && echo ro-writable || echo ro-refused")
    r = front("run", "--rm", "--read-only", "--tmpfs", "/scratch", "-v", f"{vol}:/rw", "-v", f"{vol}:/ro:ro",
              "busybox", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["root-ro", "tmpfs-ok", "tmpfs", "from host", "ro-refused", ""]
    assert (vol / "out").read_text() == "from-ctr\n" and not (vol / "nope").exists()
    front.assert_clean()


def _cgroup_value(v1: str, v2: str) -> str:
    """Shell that prints a cgroup file of the container's own cgroup, v1 layout first, then v2."""
    return f"cat /sys/fs/cgroup/{v1} 2>/dev/null || cat /sys/fs/cgroup/{v2}"


def test_memory_cpus_pids_limits(front):
    script = "; ".join([_cgroup_value("memory/memory.limit_in_bytes", "memory.max"),
                        _cgroup_value("cpu/cpu.cfs_quota_us", "cpu.max"),
                        _cgroup_value("pids/pids.max", "pids.max")])
    r = front("run", "--rm", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "20", "busybox", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    mem, cpu, pids = r.stdout.split("\n")[:3]
    assert int(mem) == 64 << 20
    assert cpu.split()[0] == "50000"
    assert pids == "20"
    # and the limits bite
    r = front("run", "--rm", "--pids-limit", "5", "busybox", "sh", "-c",
              "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait")
    assert "can't fork" in r.stderr
    r = front("run", "--rm", "--memory", "16m", "busybox", "sh", "-c", "head -c 200m /dev/zero | tail")
    assert r.returncode == 137 and "OOM" in r.stderr
    front.assert_clean()


# ---- terminals ---------------------------------------------------------------------------------------------
def _on_pty(front: Front, args: list[str], steps: list[tuple[str, str]], rows=33, cols=77) -> tuple[int, str]:
    """Run the CLI with a pty as stdin/stdout/stderr; `steps`: (wait for this output, then type this)."""
    import pty
    import select

    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen([CORERT, "--root", str(front.state_root), *args], stdin=slave, stdout=slave, stderr=slave,
                            env=front.env, start_new_session=True)
    os.close(slave)
    out = b""
    pending = list(steps)
    deadline = time.monotonic() + WAIT
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0].encode() in out:
                os.write(master, pending.pop(0)[1].encode())
            if not select.select([master], [], [], 0.5)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                break   # every holder of the slave is gone
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace")


def test_run_it_gets_a_pty_with_the_callers_size(front):
    code, out = _on_pty(front, ["run", "--rm", "-it", "busybox", "sh"], [
        ("# ", "tty; [ -t 0 ] && [ -t 1 ] && echo both-ttys; stty size; echo typed-$((6*7)); exit 5\r"),
    ])
    assert code == 5, out
    assert "/dev/pts/" in out and "both-ttys" in out and "33 77" in out and "typed-42" in out
    front.assert_clean()


def test_exec_it_into_a_named_container(front):
    front.ok("run", "-d", "--name", "box", "busybox", "sleep", "1000")
    code, out = _on_pty(front, ["exec", "-it", "box", "sh"], [
        ("# ", "[ -t 0 ] && echo exec-tty; stty size; exit 6\r"),
    ], rows=21, cols=99)
    assert code == 6, out
    assert "exec-tty" in out and "21 99" in out
    front.ok("rm", "-f", "box")
    front.assert_clean()


# ---- storage drivers on a multi-layer image: merged view, diff, commit -------------------------------------
def _drivers() -> list[str]:
    drivers = ["overlay", "vfs"]
    try:
        import pyfuse3  # noqa: F401
        if os.path.exists("/dev/fuse"):
            drivers.append("fuse")
    except ImportError:
        pass
    return drivers


def make_layer_image(dest: Path) -> Path:
    """A docker-archive of busybox + two layers: a lower file, a whiteout, an opaque dir, a replaced file."""
    from corert.images.busybox import build_layer

    lower = make_tar([("dir", "data"), ("file", "data/keep", {"data": b"keep"}), ("file", "data/gone", {"data": b"g"}),
                      ("dir", "opq"), ("file", "opq/old", {"data": b"old"}), ("dir", "opq/oldsub"),
                      ("file", "opq/oldsub/deep"), ("file", "top", {"data": b"v1"}),
                      ("dir", "lower"), ("file", "lower/file", {"data": b"lower"})])
    upper = make_tar([("dir", "data"), ("file", "data/.wh.gone"), ("dir", "opq"), ("file", "opq/.wh..wh..opq"),
                      ("file", "opq/new", {"data": b"new"}), ("file", "top", {"data": b"v2"})])
    write_docker_archive(dest, [build_layer(), lower, upper], tags=("layered:1",))
    return dest


# Prints every path under the test dirs with its content: the merged view, compared exactly.
SHOW = "for p in $(find /data /opq /lower /top /added 2>/dev/null | sort); do " \
       "if [ -f $p ]; then echo \"$p=$(cat $p)\"; else echo $p; fi; done"


@pytest.mark.parametrize("driver", _drivers())
def test_storage_driver_layer_semantics_diff_and_commit(front, tmp_path, driver):
    front.ok("image", "import", str(make_layer_image(tmp_path / "layered.tar")))
    out = front.ok("run", "--rm", "--storage", driver, "layered:1", "sh", "-c", SHOW)
    assert out.split("\n") == ["/data", "/data/keep=keep", "/lower", "/lower/file=lower", "/opq",
                               "/opq/new=new", "/top=v2", ""]
    # change things: delete a lower file, add, modify, recreate the opaque dir, hard and symbolic links
    secret = tmp_path / "host-secret"   # exists only on the host: a symlink to it must stay a symlink
    secret.write_text("host only\n")
    change = ("rm /data/keep; echo added > /data/new; echo changed > /top; rm -r /opq; mkdir /opq; "
              "echo again > /opq/again; mkdir -p /added/sub; ln /top /added/sub/hard; ln -s /top /added/sym; "
              f"ln -s {secret} /added/secret")
    front.ok("run", "--name", "changer", "--storage", driver, "layered:1", "sh", "-c", change)
    assert front.ok("diff", "changer").split("\n") == [
        "A /added", "A /added/secret", "A /added/sub", "A /added/sub/hard", "A /added/sym", "C /data",
        "D /data/keep",
        "A /data/new", "C /opq", "A /opq/again", "D /opq/new", "C /top", ""]
    new_id = front.ok("commit", "changer", "committed:1").strip()
    info = json.loads(front.ok("image", "inspect", "committed:1"))
    base = json.loads(front.ok("image", "inspect", "layered:1"))
    assert info["id"] == new_id and len(info["layers"]) == len(base["layers"]) + 1
    assert [lay["chain_id"] for lay in info["layers"][:-1]] == [lay["chain_id"] for lay in base["layers"]]
    assert info["config"]["Cmd"] == base["config"]["Cmd"]
    top_layer = Path(info["layers"][-1]["path"])
    assert os.readlink(top_layer / "added/secret") == str(secret)
    front.ok("rm", "changer")
    out = front.ok("run", "--rm", "--storage", driver, "committed:1", "sh", "-c",
                   SHOW + "; stat -c %h /top; readlink /added/sym")
    assert out.split("\n") == ["/added", "/added/secret", "/added/sub", "/added/sub/hard=changed",
                               "/added/sym=changed",
                               "/data", "/data/new=added", "/lower", "/lower/file=lower", "/opq",
                               "/opq/again=again", "/top=changed", "2", "/top", ""]
    front.ok("image", "rm", "committed:1", "layered:1")
    front.assert_clean()


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_commit_of_a_running_container_keeps_it_running(front, driver):
    front.ok("run", "-d", "--name", "live", "--storage", driver, "busybox", "sh", "-c",
             "echo state > /made; exec sleep 1000")
    wait_for(lambda: front("exec", "live", "cat", "/made").stdout == "state\n", "the file")
    front.ok("commit", "live", "snap:1")
    [row] = front.ps()
    assert row["STATUS"] == "running"   # paused for the commit, resumed after
    assert front.ok("run", "--rm", "snap:1", "cat", "/made") == "state\n"
    # the image is in use by `live`: removal is refused until the container is gone
    r = front("image", "rm", "busybox")
    assert r.returncode == 125 and "in use" in r.stderr
    front.ok("rm", "-f", "live")
    front.ok("image", "rm", "snap:1")
    front.assert_clean()


def test_diff_and_commit_refuse_bad_references(front):
    assert front("diff", "nosuch").returncode == 125
    assert front("commit", "nosuch", "x:1").returncode == 125
    front.ok("run", "--name", "c", "busybox", "true")
    r = front("commit", "c", "sha256:bad")
    assert r.returncode == 125 and "invalid image name" in r.stderr
    assert [line.split()[0] for line in front.ok("images").splitlines()[1:]] == ["busybox:latest"]
    front.ok("rm", "c")
    front.assert_clean()
