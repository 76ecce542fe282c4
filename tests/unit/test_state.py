"""The state store, live status, and the engine's query/control verbs against real processes.

The "containers" here are plain child processes that follow the init's exec.fifo protocol (open the fifo
for writing, write one byte, exec): enough to drive start/kill/state/ps for real without namespaces.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from corert.engine import console, control, query
from corert.engine.hooks import run_hooks
from corert.engine.signals import parse_signal, signal_name, signal_names
from corert.engine.state import (ContainerRecord, StateStore, live_status, oci_state, proc_start_time,
                                 rfc3339_nano, validate_id)
from corert.errors import (ContainerExists, ContainerNotFound, CorertError, HookError, InvalidState,
                           UsageError)
from support import exited, poll, small_tmpfs


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "corert-state")


@pytest.fixture
def procs():
    """Children started by a test; all killed and reaped afterwards (nothing outlives the test)."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # spawn() makes each init a group leader
            except ProcessLookupError:
                pass
            p.kill()
        p.wait(timeout=10)
    for p in started:
        assert not os.path.exists(f"/proc/{p.pid}") or proc_start_time(p.pid) is None or p.returncode is not None


def spawn(procs: list, store: StateStore, cid: str, script: str, *, fifo: bool = True) -> ContainerRecord:
    """A fake container: reserve, make exec.fifo, start `sh -c script` as its init, save it "created"."""
    record = store.reserve(cid)
    directory = Path(store.container_dir(cid))
    if fifo:
        os.mkfifo(directory / "exec.fifo", 0o622)
    p = subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True,
                         env={"FIFO": str(directory / "exec.fifo"), "PATH": os.environ.get("PATH", "/bin")})
    procs.append(p)
    record.pid = p.pid
    record.pid_start = proc_start_time(p.pid) or 0
    record.bundle = str(directory)
    record.rootfs = str(directory / "rootfs")
    record.status = "created" if fifo else "running"
    store.save(record)
    return record


INIT = 'printf 0 > "$FIFO"; exec sleep 60'   # waits for `start`, then becomes the container process


# Local processes settle fast: a short bound on each wait (it only bounds a hang), polled finely.
wait_until = partial(poll, timeout=5.0, interval=0.01)


# ---- ids, store ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", ["c1", "k1", "a.b-c_d+e", "0123456789abcdef" * 4])
def test_valid_ids(cid: str) -> None:
    validate_id(cid)


@pytest.mark.parametrize("cid", ["", ".", "..", "bad/id", "bad id", "../x", "a:b", "é"])
def test_invalid_ids(store: StateStore, cid: str) -> None:
    with pytest.raises(CorertError, match="invalid container ID format"):
        store.reserve(cid)
    assert not os.path.exists(store.root) or os.listdir(store.root) == []


def test_reserve_save_load(store: StateStore) -> None:
    record = store.reserve("c1")
    directory = Path(store.container_dir("c1"))
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory / "state.json").st_mode) == 0o600
    assert record.status == "creating" and record.pid == 0
    assert record.created.endswith("Z") and record.created[:4].isdigit()
    record.bundle, record.rootfs, record.pid = "/b", "/b/rootfs", 42
    record.annotations = {"a": "b"}
    record.extra = {"image": "sha256:00"}
    store.save(record)
    again = store.load("c1")
    assert again == record
    with pytest.raises(ContainerExists):
        store.reserve("c1")


def test_load_missing_and_corrupt(store: StateStore) -> None:
    with pytest.raises(ContainerNotFound):
        store.load("nosuch")
    store.reserve("c1")
    (Path(store.container_dir("c1")) / "state.json").write_text("{not json")
    with pytest.raises(CorertError, match="unreadable state") as info:
        store.load("c1")
    assert not isinstance(info.value, ContainerNotFound)


def test_save_is_atomic(store: StateStore) -> None:
    record = store.reserve("c1")
    path = Path(store.container_dir("c1")) / "state.json"
    inode = os.stat(path).st_ino
    with open(path) as old:  # a reader holding the old file sees complete old content
        record.pid = 7
        store.save(record)
        assert json.load(old)["pid"] == 0
    assert os.stat(path).st_ino != inode  # replaced by rename, not rewritten in place


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs (the rest of this file runs as is)")
def test_failed_save_keeps_the_old_state(tmp_path: Path) -> None:
    """A save failing mid-write (a full filesystem: ENOSPC) keeps the previous state, leaves no temp file."""
    with small_tmpfs(tmp_path / "small", "256k") as small:
        store = StateStore(small / "corert-state")
        record = store.reserve("c1")
        record.pid = 7
        store.save(record)
        with open(small / "filler", "wb", buffering=0) as f, pytest.raises(OSError) as full:
            while True:   # every page taken: the temp file can be made (an inode) but gets no data
                f.write(b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
        record.pid = 99
        with pytest.raises(OSError) as failed:
            store.save(record)
        assert failed.value.errno == errno.ENOSPC
        assert store.load("c1").pid == 7
        assert sorted(os.listdir(store.container_dir("c1"))) == ["state.json"]


def test_list_skips_broken(store: StateStore) -> None:
    assert store.list() == []  # the root does not even exist yet
    for cid in ("b", "a", "c"):
        store.reserve(cid)
    (Path(store.container_dir("c")) / "state.json").write_text("garbage")
    os.mkdir(Path(store.root) / "half-made")               # no state.json (crash between mkdir and save)
    (Path(store.root) / "stray-file").write_text("x")
    os.mkdir(Path(store.root) / "bad name")
    assert [r.id for r in store.list()] == ["a", "b"]


def test_remove(store: StateStore) -> None:
    store.reserve("c1")
    os.mkfifo(store.exec_fifo_path("c1"))
    store.remove("c1")
    assert not os.path.exists(store.container_dir("c1"))
    store.remove("c1")  # idempotent
    with pytest.raises(ContainerNotFound):
        store.load("c1")


def test_lock_is_exclusive_across_open_files(store: StateStore, tmp_path: Path) -> None:
    store.reserve("c1")
    other = StateStore(store.root)  # another "process" (own open file description)
    assert not other.is_locked_elsewhere("c1")
    with store.lock("c1"):
        assert other.is_locked_elsewhere("c1")
        assert not store.is_locked_elsewhere("c1")  # our own lock is not someone else's
        with pytest.raises(CorertError, match="locked"):
            other.lock("c1", blocking=False)
        # A real second process blocks on it too.
        code = (f"import fcntl, os; fd = os.open({str(store.container_dir('c1'))!r}, os.O_RDONLY); "
                f"fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)")
        assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0
    assert not other.is_locked_elsewhere("c1")
    with other.lock("c1", blocking=False):
        pass
    with pytest.raises(ContainerNotFound):
        store.lock("nosuch")


def test_lock_release_does_not_wait_for_children(store: StateStore, procs: list) -> None:
    """A container init cloned while `create` held the lock shares its open file description; releasing
    must still free the lock (else `start` would wait for an init that waits for `start`)."""
    store.reserve("c1")
    lk = store.lock("c1")
    child = subprocess.Popen(["sleep", "60"], pass_fds=[lk._fd], start_new_session=True)  # keeps the OFD
    procs.append(child)
    lk.release()
    other = StateStore(store.root)
    assert not other.is_locked_elsewhere("c1")
    with other.lock("c1", timeout=1.0):
        with pytest.raises(CorertError, match="locked by another"):
            store.lock("c1", timeout=0.2)


def test_rfc3339_nano() -> None:
    assert rfc3339_nano(1_700_000_000_503_193_037) == "2023-11-14T22:13:20.503193037Z"
    assert rfc3339_nano(1_700_000_000_500_000_000) == "2023-11-14T22:13:20.5Z"  # trailing zeros trimmed
    assert rfc3339_nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_default_root_for_root_and_private_tmp_fallback(tmp_path: Path) -> None:
    from corert.engine.state import default_root

    if os.geteuid() == 0 and "XDG_RUNTIME_DIR" not in os.environ:
        assert default_root() == "/run/corert"
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another uid")
    uid = 54321
    target = Path(f"/tmp/corert-{uid}")
    assert not target.exists(), "leftover from an earlier run"
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PATH": "/usr/bin:/bin"}
    code = "from corert.engine.state import default_root; print(default_root())"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, user=uid, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == str(target)
        st = os.lstat(target)
        assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700
        # Someone else's directory at that path is refused.
        os.chown(target, 0, 0)
        out = subprocess.run([sys.executable, "-c", code], env=env, user=uid, capture_output=True, text=True)
        assert out.returncode != 0 and "refusing state root" in out.stderr
        # $XDG_RUNTIME_DIR wins for unprivileged users.
        out = subprocess.run([sys.executable, "-c", code], env={**env, "XDG_RUNTIME_DIR": str(tmp_path)},
                             user=uid, capture_output=True, text=True)
        assert out.stdout.strip() == str(tmp_path / "corert")
    finally:
        if target.exists():
            os.rmdir(target)


# ---- live status and OCI state ------------------------------------------------------------------

def test_live_status_follows_a_real_process(store: StateStore, procs: list) -> None:
    record = spawn(procs, store, "c1", "exec sleep 60", fifo=True)
    assert live_status(store, record) == "created"        # exec.fifo present
    os.unlink(store.exec_fifo_path("c1"))
    assert live_status(store, record) == "running"
    wrong = ContainerRecord.from_dict({**record.to_dict(), "pid_start": record.pid_start + 1})
    assert live_status(store, wrong) == "stopped"         # pid reused by another process
    os.kill(record.pid, signal.SIGKILL)
    assert wait_until(lambda: exited(record.pid))
    assert live_status(store, record) == "stopped"        # zombie (not reaped yet) counts as stopped
    procs[0].wait()
    assert live_status(store, record) == "stopped"        # gone


def test_creating_status_depends_on_the_creator_lock(store: StateStore) -> None:
    record = store.reserve("c1")
    reader = StateStore(store.root)
    with store.lock("c1"):                                # a create in progress holds the lock
        assert live_status(reader, reader.load("c1")) == "creating"
    assert live_status(reader, record) == "stopped"       # a create that died left it behind


def test_oci_state_shape(store: StateStore, procs: list) -> None:
    record = spawn(procs, store, "c1", "exec sleep 60")
    state = oci_state(store, record)
    assert list(state) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]
    assert state["status"] == "created" and state["pid"] == record.pid and state["owner"] == ""
    record.annotations = {"a.b": "c"}
    store.save(record)
    state = query.state(store, "c1")
    assert list(state)[-2:] == ["annotations", "owner"] and state["annotations"] == {"a.b": "c"}
    os.killpg(record.pid, signal.SIGKILL)
    procs[0].wait()
    state = query.state(store, "c1")
    assert state["status"] == "stopped" and state["pid"] == 0  # runc prints pid 0 once stopped


def test_list_containers_owner_and_order(store: StateStore, procs: list) -> None:
    spawn(procs, store, "zz", "exec sleep 60")
    spawn(procs, store, "aa", "exec sleep 60")
    items = query.list_containers(store)
    assert [i["id"] for i in items] == ["aa", "zz"]
    import pwd
    assert items[0]["owner"] == pwd.getpwuid(os.geteuid()).pw_name


def test_ps_without_cgroup_finds_descendants(store: StateStore, procs: list) -> None:
    record = spawn(procs, store, "c1", "sleep 60 & sleep 60 & wait", fifo=False)
    assert wait_until(lambda: len(query.ps(store, "c1")) == 3)
    pids = query.ps(store, "c1")
    assert pids[0] == record.pid or record.pid in pids
    os.killpg(record.pid, signal.SIGKILL)
    procs[0].wait()
    assert query.ps(store, "c1") == []


# ---- start / kill -------------------------------------------------------------------------------

def test_start_releases_the_init_and_runs_poststart(store: StateStore, procs: list, tmp_path: Path) -> None:
    record = spawn(procs, store, "c1", INIT)
    out = tmp_path / "poststart.json"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ncat > {out}\n")
    hook.chmod(0o755)
    record.hooks = {"poststart": [{"path": str(hook)}]}
    store.save(record)
    control.start(store, "c1")
    assert not os.path.exists(store.exec_fifo_path("c1"))
    # The stored status stays a hint ("created"): running is derived from the gone fifo and the live init.
    assert store.load("c1").status == "created"
    assert query.state(store, "c1")["status"] == "running"
    # the init went on to exec its process
    assert wait_until(lambda: open(f"/proc/{record.pid}/cmdline", "rb").read().startswith(b"sleep"))
    state = json.loads(out.read_text())
    assert state["id"] == "c1" and state["status"] == "running" and state["pid"] == record.pid
    with pytest.raises(InvalidState, match="cannot start an already running container"):
        control.start(store, "c1")


def test_start_warns_on_failing_poststart(store: StateStore, procs: list) -> None:
    record = spawn(procs, store, "c1", INIT)
    record.hooks = {"poststart": [{"path": "/bin/false"}]}
    store.save(record)
    warnings: list[str] = []
    control.start(store, "c1", warn=warnings.append)
    assert query.state(store, "c1")["status"] == "running"
    assert len(warnings) == 1 and "poststart hook /bin/false failed" in warnings[0]


def test_start_of_stopped_and_of_dying_init(store: StateStore, procs: list) -> None:
    record = spawn(procs, store, "c1", INIT)
    os.killpg(record.pid, signal.SIGKILL)
    procs[0].wait()
    with pytest.raises(InvalidState, match="cannot start a container that has stopped"):
        control.start(store, "c1")
    # An init that opens the fifo but exits without writing: start must fail, not hang.
    spawn(procs, store, "c2", 'exec 3> "$FIFO"; exit 1')
    with pytest.raises(CorertError, match="exited before it could be started"):
        control.start(store, "c2")


def test_kill_uses_the_recorded_init_only(store: StateStore, procs: list) -> None:
    record = spawn(procs, store, "c1", "exec sleep 60", fifo=False)
    # pid reuse: a record whose start time does not match must not signal the process that has the pid
    impostor = ContainerRecord.from_dict({**record.to_dict(), "id": "c2", "pid_start": record.pid_start + 5})
    os.mkdir(Path(store.root) / "c2")
    store.save(impostor)
    with pytest.raises(InvalidState, match="container not running"):
        control.kill(store, "c2", signal.SIGKILL)
    assert procs[0].poll() is None
    control.kill(store, "c1", signal.SIGTERM)
    assert procs[0].wait(timeout=5) == -signal.SIGTERM
    with pytest.raises(InvalidState, match="container not running"):
        control.kill(store, "c1", signal.SIGTERM)
    control.kill(store, "c1", signal.SIGKILL, all=True)  # runc: --all on a stopped container is fine


def test_kill_created_container(store: StateStore, procs: list) -> None:
    spawn(procs, store, "c1", INIT)
    control.kill(store, "c1", signal.SIGKILL)
    assert procs[0].wait(timeout=5) == -signal.SIGKILL
    assert query.state(store, "c1")["status"] == "stopped"


def test_kill_all_without_cgroup_reaches_descendants(store: StateStore, procs: list) -> None:
    record = spawn(procs, store, "c1", "sleep 60 & sleep 60 & wait", fifo=False)
    assert wait_until(lambda: len(query.descendants(record.pid)) == 3)
    children = [p for p in query.descendants(record.pid) if p != record.pid]
    control.kill(store, "c1", signal.SIGKILL, all=True)
    procs[0].wait(timeout=5)
    assert wait_until(lambda: all(proc_start_time(p) is None for p in children))


def test_pause_needs_a_cgroup_and_a_live_container(store: StateStore, procs: list) -> None:
    spawn(procs, store, "c1", "exec sleep 60", fifo=False)
    with pytest.raises(CorertError, match="no cgroup"):
        control.pause(store, "c1")
    with pytest.raises(InvalidState, match="container not paused"):
        control.resume(store, "c1")
    with pytest.raises(CorertError, match="no cgroup"):
        control.update(store, "c1", {"pids": {"limit": 10}})
    os.killpg(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    with pytest.raises(InvalidState, match="container not running"):
        control.pause(store, "c1")
    with pytest.raises(InvalidState, match="is not running"):
        control.events(store, "c1", stats=True, interval=1.0)


# ---- hooks ---------------------------------------------------------------------------------------

def test_hooks_get_state_args_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f'echo "$0 $1 $FOO $HOME" > {out}; cat >> {out}'
    run_hooks([{"path": "/bin/sh", "args": ["sh", "-c", script, "myhook", "arg1"], "env": ["FOO=bar"]}],
              {"id": "c1", "status": "created"}, "createRuntime")
    first, second = out.read_text().splitlines()
    assert first.split() == ["myhook", "arg1", "bar"]  # args as given, env exactly the hook's (no HOME)
    assert json.loads(second) == {"id": "c1", "status": "created"}


def test_hook_failure_names_phase_and_path(tmp_path: Path) -> None:
    hook = tmp_path / "fail.sh"
    hook.write_text("#!/bin/sh\necho 'it broke' >&2\nexit 3\n")
    hook.chmod(0o755)
    with pytest.raises(HookError) as info:
        run_hooks([{"path": str(hook)}], {}, "prestart")
    assert str(info.value) == f"prestart hook {hook} failed: exit status 3: it broke"
    with pytest.raises(HookError, match="createContainer hook /nonexistent/hook failed"):
        run_hooks([{"path": "/nonexistent/hook"}], {}, "createContainer")


def test_hook_timeout_kills_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    hook = tmp_path / "slow.sh"
    hook.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nsleep 60\n")
    hook.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(HookError, match="poststop hook .* timed out after 1s"):
        run_hooks([{"path": str(hook), "timeout": 1}], {}, "poststop")
    assert time.monotonic() - started < 5
    assert proc_start_time(int(pidfile.read_text())) is None


# ---- signals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,num", [("KILL", 9), ("SIGKILL", 9), ("9", 9), ("sigterm", 15), ("usr1", 10),
                                      ("SIGRTMIN+1", int(signal.SIGRTMIN) + 1), ("RTMAX-1",
                                                                                 int(signal.SIGRTMAX) - 1),
                                      ("iot", 6), ("64", 64)])
def test_parse_signal(text: str, num: int) -> None:
    assert parse_signal(text) == num


@pytest.mark.parametrize("text", ["JUNK", "", "0", "65", "SIG", "RTMIN+99", "-9"])
def test_parse_signal_junk(text: str) -> None:
    with pytest.raises(UsageError, match="unknown signal"):
        parse_signal(text)


def test_signal_names() -> None:
    names = signal_names()
    assert names[:2] == ["HUP", "INT"] and "KILL" in names and "TERM" in names
    assert signal_name(9) == "SIGKILL"


# ---- console -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_SEQPACKET])
def test_send_console_fd(tmp_path: Path, kind: int) -> None:
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, kind)
    server.bind(path)
    server.listen(1)
    master, slave = os.openpty()
    try:
        console.send_console_fd(path, master)
        conn, _ = server.accept()
        msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
        conn.close()
        assert msg == b"/dev/ptmx" and len(fds) == 1
        assert os.fstat(fds[0]).st_rdev == os.fstat(master).st_rdev
        os.close(fds[0])
    finally:
        server.close()
        os.close(master)
        os.close(slave)
    with pytest.raises(CorertError, match="console socket"):
        console.send_console_fd(str(tmp_path / "nosuch.sock"), 0)


def test_winsize_and_relay(tmp_path: Path) -> None:
    master, slave = os.openpty()
    console.set_winsize(master, 33, 101)
    assert console.get_winsize(slave) == (33, 101)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    child = subprocess.Popen(["/bin/sh", "-c", "read x; echo got:$x; stty size"], stdin=slave, stdout=slave,
                             stderr=slave, start_new_session=True)
    os.close(slave)
    pidfd = os.pidfd_open(child.pid)
    try:
        os.write(in_w, b"hello\n")
        console.relay(master, stdin_fd=in_r, stdout_fd=out_w, pidfd=pidfd)
        assert child.wait(timeout=5) == 0
        os.close(out_w)
        output = b""
        while chunk := os.read(out_r, 4096):
            output += chunk
        assert b"got:hello" in output and b"33 101" in output
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for fd in (pidfd, master, in_r, in_w, out_r):
            os.close(fd)


# ---- with a real cgroup (the host's driver) ------------------------------------------------------

@pytest.fixture
def cgroup_handle():
    """A real container cgroup from the host's driver, destroyed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    from corert.drivers.cgroups import detect

    driver = detect()
    if driver.name == "none":
        pytest.skip("no usable cgroup hierarchy")
    handle = driver.create(f"corert-test-state-{os.getpid()}", None, None)
    yield handle
    handle.destroy()


def test_pause_resume_update_events_with_a_cgroup(store: StateStore, procs: list, cgroup_handle) -> None:
    import io
    import threading

    # The init joins the cgroup while it waits for `start`; what it forks afterwards is born inside.
    record = spawn(procs, store, "c1", 'printf 0 > "$FIFO"; sleep 60 & exec sleep 60')
    cgroup_handle.attach(record.pid)
    record.cgroup = cgroup_handle.state()
    store.save(record)
    control.pause(store, "c1")                            # runc pauses created containers too
    assert query.state(store, "c1")["status"] == "paused"
    control.resume(store, "c1")
    assert query.state(store, "c1")["status"] == "created"
    control.start(store, "c1")
    assert wait_until(lambda: len(cgroup_handle.pids()) == 2)
    assert query.ps(store, "c1") == sorted(cgroup_handle.pids())

    control.pause(store, "c1")
    assert query.state(store, "c1")["status"] == "paused"
    with pytest.raises(InvalidState, match="container not running"):
        control.pause(store, "c1")
    control.resume(store, "c1")
    assert query.state(store, "c1")["status"] == "running"
    with pytest.raises(InvalidState, match="container not paused"):
        control.resume(store, "c1")

    control.update(store, "c1", {"pids": {"limit": 42}})
    pids_dir = cgroup_handle.state().get("dirs", {}).get("pids")
    if pids_dir:
        assert open(os.path.join(pids_dir, "pids.max")).read().strip() == "42"

    out = io.StringIO()
    control.events(store, "c1", stats=True, interval=5.0, out=out)
    event = json.loads(out.getvalue())
    assert (event["type"], event["id"]) == ("stats", "c1") and "pids" in event["data"]

    stream = io.StringIO()
    worker = threading.Thread(target=control.events, args=(store, "c1", False, 0.2, stream))
    worker.start()
    time.sleep(0.5)
    control.pause(store, "c1")
    control.kill(store, "c1", signal.SIGKILL, all=True)  # kill --all reaches a frozen container too
    worker.join(timeout=10)
    assert not worker.is_alive()                          # events ends once the container stopped
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all(ev["type"] == "stats" and ev["id"] == "c1" for ev in lines)
    assert procs[0].wait(timeout=5) == -signal.SIGKILL
    assert wait_until(lambda: cgroup_handle.pids() == [])


def test_relay_from_a_local_terminal_restores_it() -> None:
    import termios

    local_master, local_slave = os.openpty()        # stands in for the user's terminal
    master, slave = os.openpty()                    # the container's console
    console.set_winsize(local_slave, 20, 70)
    before = termios.tcgetattr(local_slave)
    winch_before = signal.getsignal(signal.SIGWINCH)
    out_r, out_w = os.pipe()
    child = subprocess.Popen(["/bin/sh", "-c", "read x; stty size; echo got:$x"], stdin=slave, stdout=slave,
                             stderr=slave, start_new_session=True)
    os.close(slave)
    pidfd = os.pidfd_open(child.pid)
    import threading
    watchdog = threading.Timer(10, child.kill)      # a broken relay fails the test instead of hanging it
    watchdog.start()
    try:
        # typed ahead, before relay switches the terminal to raw mode: must not be discarded
        os.write(local_master, b"typed\r")
        console.relay(master, stdin_fd=local_slave, stdout_fd=out_w, pidfd=pidfd)
        assert child.wait(timeout=5) == 0
        os.close(out_w)
        output = b""
        while chunk := os.read(out_r, 4096):
            output += chunk
        assert b"20 70" in output and b"got:typed" in output  # window size copied to the console
        assert termios.tcgetattr(local_slave) == before          # raw mode undone
        assert signal.getsignal(signal.SIGWINCH) == winch_before
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        for fd in (pidfd, master, local_master, local_slave, out_r):
            os.close(fd)
