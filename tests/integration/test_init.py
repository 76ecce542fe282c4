"""`corert run --init` (a tiny init as PID 1, in the fast path) and `corert stop` with the stop signal.

Each behaviour is shown against the same container without --init, so that a test could not pass with the
init doing nothing: a PID 1 without a TERM handler ignores `stop`'s SIGTERM (only the SIGKILL ends it: 137)
while behind the init it dies of it (143); an orphan becomes a zombie under a PID 1 that never waits, and is
reaped by the init. Exit statuses are asserted, never durations (waits have generous upper bounds only).
Every test ends with nothing left (state, data dirs, mounts); the autouse leak check covers the machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from support import CORERT, WAIT, Front, sha, wait_for, write_docker_archive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")

# A PID 1 with no signal handler at all: only SIGKILL can end it from outside its pid namespace.
LOOP = "echo ready; while :; do sleep 1; done"


class Foreground:
    """`corert run --name NAME ...` in the foreground, as a child we can wait on for its exit code."""

    def __init__(self, front: Front, name: str, *args: str) -> None:
        self.proc = subprocess.Popen([CORERT, "--root", str(front.state_root), "run", "--name", name, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=front.env)

    def wait_ready(self) -> None:
        """The process printed its first line: it runs, with its traps (if any) installed."""
        line = self.proc.stdout.readline()
        assert line == b"ready\n", (line, self.proc.stderr.read() if self.proc.poll() is not None else b"")

    def exit_code(self) -> int:
        try:
            self.proc.wait(timeout=WAIT)
        finally:
            if self.proc.poll() is None:   # never leave the front end (and its container) behind
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()
        return self.proc.returncode


# ---- stop: the signal reaches the process only through the init ------------------------------------------
@pytest.mark.parametrize("init, grace, code", [
    ([], "1", 137),             # PID 1 ignores TERM (no handler): stop has to SIGKILL it after the grace
    (["--init"], "30", 143),    # the init forwards TERM to the process, which is no PID 1 and dies of it
])
def test_stop_sends_term_which_only_the_init_makes_effective(front, init, grace, code):
    run = Foreground(front, "ctr", *init, "busybox", "sh", "-c", LOOP)
    run.wait_ready()
    assert front.ok("stop", "-t", grace, "ctr") == "ctr\n"   # docker prints the name
    assert run.exit_code() == code
    front.ok("rm", "ctr")
    front.assert_clean()


def test_signals_to_the_front_end_reach_the_process_through_the_init(front):
    script = 'trap "exit 21" USR1; trap "exit 22" HUP; echo ready; while :; do sleep 0.1; done'
    run = Foreground(front, "sig", "--rm", "--init", "busybox", "sh", "-c", script)
    run.wait_ready()
    run.proc.send_signal(signal.SIGHUP)   # corert run -> the init -> sh
    assert run.exit_code() == 22
    front.assert_clean()


# ---- exit statuses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("script, code", [
    ("exit 0", 0),
    ("exit 42", 42),
    ("kill -USR2 $$", 128 + signal.SIGUSR2),   # killed by signal N: 128+N, as without --init
    ("kill -9 $$", 137),
    ("echo $$ > /pid; test $(cat /pid) = 2 && test $(cat /proc/1/comm) = corert-init && exit 3", 3),
])
def test_exit_status_propagates(front, script, code):
    r = front("run", "--rm", "--init", "busybox", "sh", "-c", script)
    assert r.returncode == code, r.stderr
    front.assert_clean()


# ---- zombies -----------------------------------------------------------------------------------------------
ORPHAN = "(sleep 0.3 & echo $! > /tmp/orphan)"   # the subshell exits at once: sleep goes to PID 1
STATE = 'pid=$(cat /tmp/orphan); if [ -e /proc/$pid ]; then cut -d" " -f3 /proc/$pid/stat; else echo gone; fi'
ZOMBIES = 'for f in /proc/[0-9]*/stat; do cut -d" " -f3 $f; done | grep -c Z || true'


@pytest.mark.parametrize("init, final", [([], "Z"), (["--init"], "gone")])
def test_orphans_reparented_to_pid1_are_reaped(front, init, final):
    """An orphan left by an exec'd process goes to PID 1. `sleep` as PID 1 never waits: the orphan stays a
    zombie. The init reaps it: it is gone, and no zombie is left in the container."""
    front.ok("run", "-d", "--name", "parent", *init, "busybox", "sleep", "1000")
    front.ok("exec", "parent", "sh", "-c", ORPHAN)
    wait_for(lambda: front.ok("exec", "parent", "sh", "-c", STATE).strip() == final,
             f"the orphan to end up {final}")
    zombies = int(front.ok("exec", "parent", "sh", "-c", ZOMBIES))
    assert zombies == (1 if final == "Z" else 0)
    front.ok("rm", "-f", "parent")
    front.assert_clean()


# ---- what the init keeps -----------------------------------------------------------------------------------
def test_init_is_confined_like_the_process_and_hides_the_runtime(front):
    """Same uid/gid, capabilities, no_new_privs and seccomp as the process; its exe, environment and the
    runtime's command line cannot be read from the container; it does not keep the runtime's memory."""
    fields = ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    script = ("for f in " + " ".join(fields) + "; do grep \"^$f:\" /proc/1/status; grep \"^$f:\" /proc/$$/status; done; "
              "readlink /proc/1/exe || echo exe-denied; cat /proc/1/environ >/dev/null 2>&1 || echo env-denied; "
              "tr '\\0' ' ' < /proc/1/cmdline; echo; grep ^RssAnon: /proc/1/status")
    lines = front.ok("run", "--rm", "--init", "-u", "nobody", "--cap-drop", "chown", "busybox", "sh", "-c",
                     script).splitlines()
    status, rest = lines[:2 * len(fields)], lines[2 * len(fields):]
    for i, name in enumerate(fields):
        init_line, proc_line = status[2 * i], status[2 * i + 1]
        assert init_line == proc_line, (name, init_line, proc_line)
    as_dict = dict(line.split(":", 1) for line in status[::2])
    assert as_dict["Uid"].split()[0] == "65534" and as_dict["NoNewPrivs"].strip() == "1"
    assert as_dict["Seccomp"].strip() == "2"
    assert rest[:2] == ["exe-denied", "env-denied"]
    assert rest[2].strip() == "corert-init"
    # The copy of the runtime's heap is given back: what stays is far below the runtime's own (~10 MB).
    assert rest[3].startswith("RssAnon:") and int(rest[3].split()[1]) < 4096, rest[3]
    front.assert_clean()


# ---- the stop signal: image config, --stop-signal, stop -s -------------------------------------------------
def stop_signal_image(dest: Path, stop_signal: str) -> Path:
    """A docker-archive of busybox whose config names a StopSignal."""
    from corert.images.busybox import build_layer
    from corert.images.formats import host_arch

    layer = build_layer()
    config = json.dumps({
        "architecture": host_arch(), "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"], "StopSignal": stop_signal},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(layer)}"]},
    }).encode()
    write_docker_archive(dest, [layer], tags=("stopper:1",), config=config)
    return dest


# Each signal that can arrive has its own exit code: the code says which one `stop` sent.
TRAPS = ('trap "exit 10" USR1; trap "exit 12" USR2; trap "exit 15" TERM; echo ready; '
         'while :; do sleep 0.1; done')


@pytest.mark.parametrize("run_flags, stop_flags, code", [
    ([], [], 10),                                  # the image's StopSignal (SIGUSR1)
    (["--stop-signal", "usr2"], [], 12),           # --stop-signal at run overrides the image
    ([], ["-s", "TERM"], 15),                      # stop -s overrides both
    (["--init"], [], 10),                          # and through the init, forwarded
])
def test_stop_uses_the_stop_signal(front, tmp_path, run_flags, stop_flags, code):
    front.ok("image", "import", str(stop_signal_image(tmp_path / "stopper.tar", "SIGUSR1")))
    run = Foreground(front, "stopper", *run_flags, "stopper:1", "sh", "-c", TRAPS)
    run.wait_ready()
    assert front.ok("stop", *stop_flags, "-t", "30", "stopper") == "stopper\n"
    assert run.exit_code() == code
    front.ok("rm", "stopper")
    front.ok("image", "rm", "stopper:1")
    front.assert_clean()


def test_stop_of_a_stopped_container_and_bad_input(front):
    front.ok("run", "--name", "done", "busybox", "true")
    assert front.ok("stop", "done") == "done\n"   # already exited: nothing to do, as docker
    r = front("run", "--rm", "--stop-signal", "NOPE", "busybox", "true")
    assert r.returncode == 125 and 'unknown signal "NOPE"' in r.stderr
    r = front("stop", "-s", "NOPE", "done")
    assert r.returncode == 125 and "unknown signal" in r.stderr
    r = front("stop", "-t", "-1", "done")
    assert r.returncode == 125 and "must not be negative" in r.stderr
    r = front("stop", "nosuch")
    assert r.returncode != 0 and "nosuch" in r.stderr
    front.ok("rm", "done")
    front.assert_clean()


# ---- a terminal: the process owns its foreground, ^C reaches it once ---------------------------------------
def test_interactive_shell_behind_the_init_gets_the_terminal(front):
    from integration.test_frontdoor import _on_pty

    code, out = _on_pty(front, ["run", "--rm", "-it", "--init", "busybox", "sh"], [
        # The job prints, then sleeps; ^C kills it at either point (default SIGINT), never the shell.
        ("# ", "sh -c 'cat /proc/1/comm; exec sleep 1000'\r"),
        ("corert-init", "\x03"),
        ("# ", "echo back-$((40+2)); exit 6\r"),
    ])
    assert code == 6, out
    assert "back-42" in out
    front.assert_clean()


# ---- the embedding API: init=True is RunOptions.init ------------------------------------------------------
def test_api_run_with_init(front):
    import trio

    from corert.api import Runtime

    async def main() -> tuple:
        async with Runtime(front.state_root, data_root=front.data) as rt:
            r = await rt.run("busybox", ["sh", "-c", "echo $$ $(cat /proc/1/comm); exit 4"], init=True)
            return r.exit_code, r.stdout
    assert trio.run(main) == (4, b"2 corert-init\n")
    front.assert_clean()


def test_stop_of_a_paused_container_thaws_it_to_deliver_the_signal(front):
    script = 'trap "echo got-term; exit 3" TERM; echo ready; while :; do sleep 0.1; done'
    cid = front.ok("run", "-d", "--name", "frozen", "busybox", "sh", "-c", script).strip()
    wait_for(lambda: "ready" in front.ok("logs", "frozen"), "the trap to be set")
    front.ok("pause", cid)
    assert front.ps("-a")[0]["STATUS"] == "paused"
    front.ok("stop", "-t", "30", "frozen")
    [row] = front.ps("-a")
    assert row["STATUS"] == "stopped"
    assert front.ok("logs", "frozen") == "ready\ngot-term\n"   # the TERM, not the KILL, ended it
    front.ok("rm", "frozen")
    front.assert_clean()
