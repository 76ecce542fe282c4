"""What slirp4netns and pasta share: host checks with a one-line fix, the /etc files, and the helper
process, which outlives the `corert` process that started it (detached containers) and is stopped by pid
and start time (so a reused pid is never signalled)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

from corert.drivers.network import NetOptions
from corert.drivers.network.files import hosts_text, write_files
from corert.engine.state import proc_start_time, process_alive
from corert.errors import HostUnsupported

TUN = "/dev/net/tun"


def require_binary(tool: str, package: str, net: str) -> str:
    path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/bin:/usr/local/bin")
    if path is None:
        raise HostUnsupported(f"--net={net} needs {tool}, which is not installed: apt-get install {package}")
    return path


def check_tun(tool: str, net: str) -> None:
    """The helper opens /dev/net/tun as the calling user; many hosts ship it 0666, some 0600."""
    if not os.path.exists(TUN):
        raise HostUnsupported(f"--net={net}: {TUN} does not exist (load the tun module: modprobe tun)")
    if not os.access(TUN, os.R_OK | os.W_OK):
        raise HostUnsupported(f"--net={net}: {tool} cannot open {TUN} as uid {os.geteuid()} "
                              f"(fix as root: chmod 0666 {TUN})")


def write_etc(container_id: str, data_dir: str, name: str, opts: NetOptions, own_ip: str,
              nameservers: list[str]) -> tuple[str, list[dict]]:
    hostname = opts.hostname or container_id[:12]
    names = " ".join(dict.fromkeys((hostname, name)))
    return hostname, write_files(data_dir, hostname, hosts_text([(own_ip, names)], []), nameservers)


def socket_dir() -> Path:
    """A short private directory for API sockets (sun_path holds 108 bytes; data dirs are longer)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"corert-net-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.geteuid():
        raise HostUnsupported(f"{path} belongs to another user: remove it")
    return path


def record_helper(container_id: str, helper_pid: int, container_pid: int) -> None:
    """Note the helper next to the container's init, so a later sweep can stop it once the init is gone."""
    note = {"helper": [helper_pid, proc_start_time(helper_pid)],
            "container": [container_pid, proc_start_time(container_pid)]}
    (socket_dir() / f"{container_id[:16]}.helper").write_text(json.dumps(note))


def sweep_helpers() -> list[str]:
    """Stop the helpers whose container init has exited (they would otherwise live until `rm`, or forever
    after a crash). Run on every user-mode prepare and by `corert network prune`."""
    stopped = []
    for note_path in socket_dir().glob("*.helper"):
        try:
            note = json.loads(note_path.read_text())
            cpid, cstart = note["container"]
        except (OSError, ValueError, KeyError):
            continue
        if process_alive(cpid, cstart):
            continue
        stop_helper(*note["helper"])
        remove_quietly(str(note_path), str(note_path.with_suffix(".sock")))
        stopped.append(f"helper {note['helper'][0]} of container {note_path.stem}")
    return stopped


def forget_helper(container_id: str) -> None:
    remove_quietly(str(socket_dir() / f"{container_id[:16]}.helper"))


def stop_helper(pid: int | None, start: int | None, timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`, the helper (if it is still the process we started)."""
    if not pid:
        return
    if not process_alive(pid, start):
        _reap(pid)
        return
    from corert.engine.state import wait_exit
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                break
            if wait_exit(pidfd, timeout):
                break
        _reap(pid)
    finally:
        os.close(pidfd)


def _reap(pid: int) -> None:
    """Collect the exit status when this process started the helper (foreground run, the API)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def remove_quietly(*paths: str | None) -> None:
    for path in paths:
        if path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def tail(path: str, default: str) -> str:
    """The last non-empty line of a helper's log: its own words for why it failed."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else default


class HelperAttachment:
    """A container's link to a user-mode network helper (slirp4netns, pasta) that outlives `corert run`.

    Subclasses implement attach(pid); teardown stops the helper (pid + start time, so a reused pid is
    never signalled), forgets it, and removes the one runtime file named by RUNTIME_FILE in the state."""

    RUNTIME_FILE = ""

    def __init__(self, state: dict) -> None:
        self.state = state

    def teardown(self) -> None:
        stop_helper(self.state.get("pid"), self.state.get("start"))
        forget_helper(self.state["id"])
        remove_quietly(self.state.get(self.RUNTIME_FILE))
