"""The native `corert` front (corert/cli/native/): `start` and `delete` of a plain container without CPython,
everything else handed to the Python CLI.

Each test runs a copy of the installed front whose Python CLI (../libexec/corert/corert from it) is a script
that notes each command it gets and then runs the real one: a note means the front handed the command over,
no note means the front did it all by itself.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from corert.cli.launcher import python_cli_path
from support import CORERT, WAIT, Cli, exited, read_config, set_args, status, wait_for, write_config


class Spied(Cli):
    """The copied front, and the commands that reached the Python CLI."""

    def __init__(self, binary: str, root: Path, notes: Path) -> None:
        super().__init__(binary, root)
        self.notes = notes

    def handed_over(self) -> list[str]:
        """The verbs the Python CLI got since the last call (the first word after the global flags)."""
        if not self.notes.exists():
            return []
        lines = self.notes.read_text().splitlines()
        self.notes.unlink()
        return [_verb(line.split()) for line in lines]


def _verb(words: list[str]) -> str:
    while words[0].startswith("-"):   # the tests' global flags: --root R, --log F, --log-format F, --x=V
        words = words[1:] if "=" in words[0] else words[2:]
    return words[0]


@pytest.fixture
def front(tmp_path, state_root) -> Spied:
    binary = tmp_path / "bin" / "corert"
    binary.parent.mkdir()
    shutil.copy2(CORERT, binary)
    notes = tmp_path / "handed-over"
    spy = Path(python_cli_path(str(binary)))
    spy.parent.mkdir(parents=True)
    spy.write_text(f'#!/bin/sh\necho "$*" >> {notes}\nexec {python_cli_path(CORERT)} "$@"\n')
    spy.chmod(0o755)
    cli = Spied(str(binary), state_root, notes)
    yield cli
    cli.cleanup()


def test_plain_container_is_started_and_deleted_natively(front, bundle, state_root):
    set_args(bundle, "sleep", "30")
    front("create", "--bundle", str(bundle), "plain", check=True)
    assert front.handed_over() == ["create"]
    assert (state_root / "plain" / "shortcut").is_file()
    pid = json.loads(front("state", "plain", check=True).stdout)["pid"]
    assert front.handed_over() == ["state"]

    front("start", "plain", check=True)
    assert front.handed_over() == []
    assert status(front, "plain") == "running"
    assert not (state_root / "plain" / "exec.fifo").exists()
    wait_for(lambda: Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"), "the init to exec sleep",
             interval=0.02)
    front.handed_over()

    # A live init: refusing (or killing, with --force) is the Python CLI's, with its messages.
    r = front("delete", "plain")
    assert r.returncode == 1 and "not stopped" in r.stderr
    assert front.handed_over() == ["delete"]
    front("kill", "plain", "KILL", check=True)
    wait_for(lambda: exited(pid), "the init to die", interval=0.02)
    front.handed_over()

    front("delete", "plain", check=True)
    assert front.handed_over() == []
    assert not (state_root / "plain").exists()
    # runc: --force on no container is no error; without it the Python CLI says what is wrong.
    assert front("delete", "--force", "plain").returncode == 0
    assert front.handed_over() == []
    r = front("delete", "plain")
    assert r.returncode == 1 and r.stderr.strip() == "corert: container 'plain' does not exist"
    assert front.handed_over() == ["delete"]


def test_start_refusals_and_errors_come_from_the_python_cli(front, bundle, tmp_path):
    set_args(bundle, "sleep", "30")
    front("create", "--bundle", str(bundle), "twice", check=True)
    front("start", "twice", check=True)
    front.handed_over()
    log = tmp_path / "log.json"
    r = front("--log", str(log), "--log-format", "json", "start", "twice")
    assert r.returncode == 1 and r.stderr.strip() == "corert: cannot start an already running container"
    assert json.loads(log.read_text())["msg"] == "cannot start an already running container"
    assert front.handed_over() == ["start"]
    front("delete", "--force", "twice", check=True)
    assert front.handed_over() == ["delete"]    # it was running: the Python CLI kills and waits


def test_paused_created_container_is_refused(front, bundle):
    front("create", "--bundle", str(bundle), "frozen", check=True)
    front("pause", "frozen", check=True)
    front.handed_over()
    r = front("start", "frozen")
    assert r.returncode == 1 and "paused" in r.stderr
    assert front.handed_over() == ["start"]
    front("resume", "frozen", check=True)
    front.handed_over()
    front("start", "frozen", check=True)       # /bin/true: it exits at once
    assert front.handed_over() == []
    wait_for(lambda: status(front, "frozen") == "stopped", "the container to stop", interval=0.02)
    front.handed_over()
    front("delete", "frozen", check=True)
    assert front.handed_over() == []


def test_a_later_state_change_voids_the_plan(front, bundle):
    set_args(bundle, "sleep", "30")
    front("create", "--bundle", str(bundle), "upd", check=True)
    front("update", "--pids-limit", "50", "upd", check=True)   # saves state.json again
    front.handed_over()
    front("start", "upd", check=True)
    assert front.handed_over() == ["start"]
    front("delete", "--force", "upd", check=True)


def test_hooks_keep_the_container_with_the_python_cli(front, bundle, state_root, tmp_path):
    out = tmp_path / "poststop.log"
    config = read_config(bundle)
    config["hooks"] = {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}"]}]}
    write_config(bundle, config)
    front("create", "--bundle", str(bundle), "hooked", check=True)
    assert not (state_root / "hooked" / "shortcut").exists()
    front.handed_over()
    front("start", "hooked", check=True)
    assert front.handed_over() == ["start"]
    wait_for(lambda: status(front, "hooked") == "stopped", "the container to stop", interval=0.02)
    front.handed_over()
    front("delete", "hooked", check=True)
    assert front.handed_over() == ["delete"]
    assert json.loads(out.read_text())["status"] == "stopped"


def test_the_container_lock_is_honoured(front, bundle, state_root):
    """A stopped plain container the front would delete by itself: with its lock held elsewhere, the front
    leaves it to the Python CLI, whose delete waits in flock(2) until the lock is free."""
    front("create", "--bundle", str(bundle), "locked", check=True)
    front("start", "locked", check=True)          # /bin/true: it exits at once
    wait_for(lambda: status(front, "locked") == "stopped", "the container to stop", interval=0.02)
    front.handed_over()
    fd = os.open(state_root / "locked", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        delete = subprocess.Popen([front.binary, "--root", str(state_root), "delete", "locked"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The kernel lists a process blocked on a flock as a waiter ("->") on the dir's inode.
        inode = f":{os.stat(state_root / 'locked').st_ino} "
        wait_for(lambda: any("-> FLOCK" in line and inode in line for line in open("/proc/locks")),
                 "delete to wait for the lock", interval=0.02)
        assert delete.poll() is None and (state_root / "locked" / "state.json").exists()
    finally:
        os.close(fd)                              # closing the fd drops the lock
    assert delete.wait(timeout=WAIT) == 0
    assert front.handed_over() == ["delete"]
    assert not (state_root / "locked").exists()


def test_without_the_python_cli_the_front_still_starts_and_deletes(front, bundle, state_root):
    front("create", "--bundle", str(bundle), "alone", check=True)
    pid = json.loads((state_root / "alone" / "state.json").read_text())["pid"]
    os.unlink(python_cli_path(front.binary))
    front("start", "alone", check=True)     # /bin/true: it exits at once
    wait_for(lambda: exited(pid), "the init to exit", interval=0.02)
    front("delete", "alone", check=True)
    assert not (state_root / "alone").exists()
    r = front("--version")
    assert r.returncode == 1
    assert r.stderr.startswith("corert: cannot run the Python CLI ") and len(r.stderr.splitlines()) == 1


def test_flag_spellings_engines_use(front, bundle, state_root, tmp_path):
    """--root=R, -root R, -f: all done natively; an empty --root means the default root to the Python CLI."""
    front("create", "--bundle", str(bundle), "spell", check=True)
    binary = front.binary
    front.handed_over()
    r = subprocess.run([binary, f"--root={state_root}", "start", "spell"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not (state_root / "spell" / "exec.fifo").exists(), "the fifo to go", interval=0.02)
    pid = json.loads((state_root / "spell" / "state.json").read_text())["pid"]
    wait_for(lambda: exited(pid), "the init to exit", interval=0.02)
    r = subprocess.run([binary, "-root", str(state_root), "delete", "-f", "spell"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert front.handed_over() == []
    assert not (state_root / "spell").exists()
    r = subprocess.run([binary, "--root=", "--log", str(tmp_path / "log"), "delete", "--force", "spell"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert front.handed_over() == ["delete"]


def test_a_busy_cgroup_goes_to_the_python_cli(front, bundle, state_root):
    """Without a pid namespace the init's child outlives it in the cgroup: the front must not act on it."""
    config = set_args(bundle, "sh", "-c", "sleep 60 & exit 0")
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]
    write_config(bundle, config)
    front("create", "--bundle", str(bundle), "busy", check=True)
    record = json.loads((state_root / "busy" / "state.json").read_text())
    cgroup = record["cgroup"]
    procs = Path(next(iter(cgroup["dirs"].values())) if cgroup["driver"] == "v1" else cgroup["path"]) / "cgroup.procs"
    front("start", "busy", check=True)
    wait_for(lambda: exited(record["pid"]), "the init to exit", interval=0.02)
    left = wait_for(lambda: [int(p) for p in procs.read_text().split()], "the init's child in the cgroup")
    front.handed_over()
    front("delete", "busy", check=True)
    assert front.handed_over() == ["delete"]      # the cgroup was busy: the Python CLI killed the child
    assert all(exited(p) for p in left)
    assert not procs.parent.exists()


def test_an_init_dying_at_start_is_reported_by_the_front(front, bundle, tmp_path):
    config = read_config(bundle)
    config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}
    write_config(bundle, config)
    front("create", "--bundle", str(bundle), "dies", check=True)
    front.handed_over()
    log = tmp_path / "log.json"
    r = front("--log", str(log), "--log-format", "json", "start", "dies")
    message = "container 'dies': init exited before it could be started"
    assert (r.returncode, r.stderr.strip()) == (1, f"corert: {message}")
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and entry["msg"] == message and entry["time"]
    assert front.handed_over() == []
    front("delete", "dies", check=True)
    assert front.handed_over() == []
