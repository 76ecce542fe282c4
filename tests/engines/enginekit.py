"""Helpers for the engine tests (and benchmarks/test_engines.py): podman and containerd set up privately,
runtimes to pin, a pty runner, cgroup and mount bookkeeping."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

from support import CORERT, wait_for

# The absolute paths: engines call the runtime with an empty environment (no PATH).
RUNTIMES = {"corert": CORERT, "runc": shutil.which("runc") or "/usr/sbin/runc"}
CTR_NAMESPACE = "corert-test"


def own_cgroup_parent(name: str) -> str:
    """A cgroup path under this process's own cgroup (its memory one on v1/hybrid hosts), where the engines
    put their containers instead of /libpod_parent or /default at the hierarchy roots: the container
    processes stay inside the memory limit we run under. Absolute, as an engine's cgroupsPath is."""
    current = "/"
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                current = path
                break
            if controllers == "":
                current = path
    return (current.rstrip("/") or "") + "/" + name


def remove_cgroup_tree(path: str) -> list[str]:
    """rmdir `path` (bottom-up) in every mounted hierarchy; returns the leaf dirs that were still there
    (a container cgroup an engine or runtime left behind)."""
    left = []
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        fstype = fields[fields.index("-") + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        top = fields[4] + path
        if not os.path.isdir(top):
            continue
        for dirpath, dirnames, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            if dirpath != top and not dirnames:
                left.append(dirpath)
            for _ in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)   # the last task is still exiting
    return left


def mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def run_in_pty(argv: list[str], env: dict, *, rows: int = 33, cols: int = 77, input: bytes = b"",
               timeout: float = 60) -> tuple[int, str]:
    """Run argv with a terminal (of rows x cols) as stdin/stdout/stderr; returns (exit code, output)."""
    master, slave = pty.openpty()
    fcntl_winsize = struct.pack("HHHH", rows, cols, 0, 0)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl_winsize)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                            close_fds=True)
    os.close(slave)
    if input:
        os.write(master, input)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                raise AssertionError(f"{argv} did not finish in {timeout}s: {b''.join(chunks)!r}")
            ready, _, _ = select.select([master], [], [], min(remaining, 0.5))
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:       # EIO: every slave end is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(deadline - time.monotonic(), 1)), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Podman:
    """podman with a private everything, pinned to one OCI runtime. With `user` (a pwd entry), rootless:
    run as that user through runuser, vfs storage, no cgroups (v1 is not delegated), base owned by it."""

    def __init__(self, base: Path, runtime: str, user=None) -> None:  # noqa: ANN001 - pwd.struct_passwd
        self.base = base
        self.runtime = runtime
        self.user = user
        name = os.path.basename(runtime)
        if user is None:
            # The runtime's default --root as root (podman passes none).
            self.state_root = Path(f"/run/{name}")
            self.cgroup_parent = own_cgroup_parent(f"engines-podman-{os.getpid()}-{base.name}")
        else:
            xdg = base / "xdg"          # podman wants its own 0700 XDG_RUNTIME_DIR
            xdg.mkdir(mode=0o700)
            self.state_root = xdg / name  # runc and corert: $XDG_RUNTIME_DIR/<name> when rootless
            self.cgroup_parent = None
        self.hooks_dir = base / "hooks"
        self.hooks_dir.mkdir()
        (base / "cni").mkdir()
        conf = base / "containers.conf"
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            'netns = "none"\n'
            'log_driver = "k8s-file"\n'
            "[network]\n"
            f'network_config_dir = "{base / "cni"}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'hooks_dir = ["{self.hooks_dir}"]\n'
            # podman passes --log-format=json and reads the runtime's errors from the log only for these.
            'runtime_supports_json = ["crun", "runc", "kata", "corert"]\n')
        storage = base / "storage.conf"   # runroot "r": podman refuses one longer than 50 characters
        # skip_mount_home: containers/storage would otherwise bind-mount graph/overlay onto itself while any
        # container has a layer mounted and unmount it after the last one, so the mount comes and goes between
        # a test's start and end (a false leak for the per-test check, which would then depend on timing).
        storage.write_text(f'[storage]\ndriver = "{"vfs" if user else "overlay"}"\nrunroot = "{base / "r"}"\n'
                           f'graphroot = "{base / "graph"}"\n'
                           + ('' if user else '[storage.options.overlay]\nskip_mount_home = "true"\n'))
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base), "CONTAINERS_CONF": str(conf),
                    "CONTAINERS_STORAGE_CONF": str(storage)}
        if user is not None:
            self.env.update(USER=user.pw_name, XDG_RUNTIME_DIR=str(base / "xdg"))
            subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(base)], check=True)
        self.globals = ["--runtime", runtime, "--root", str(base / "graph"), "--runroot", str(base / "r"),
                        "--tmpdir", str(base / "libpod-tmp"), "--cgroup-manager", "cgroupfs",
                        "--events-backend", "file"]

    def argv(self, *args: str) -> list[str]:
        args = list(args)
        if args and args[0] in ("run", "create") and self.cgroup_parent:
            args[1:1] = ["--cgroup-parent", self.cgroup_parent]
        if self.user is not None:
            return ["runuser", "-u", self.user.pw_name, "--", "env", "-i",
                    *[f"{k}={v}" for k, v in self.env.items()], "podman", *self.globals, *args]
        return ["podman", *self.globals, *args]

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*args), input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, text=True, env=self.env, timeout=timeout, cwd=str(self.base))
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def inspect(self, name: str, fmt: str) -> str:
        return self("inspect", "--format", fmt, name).stdout.strip()

    def pid(self, name: str) -> int:
        return int(self.inspect(name, "{{.State.Pid}}"))

    def runtime_containers(self) -> list[str]:
        """Containers podman made (any event in its log) that the runtime still has in its state root."""
        events = self.base / "libpod-tmp" / "events" / "events.log"
        ids = set()
        if events.exists():
            for line in events.read_text().splitlines():
                event = json.loads(line)
                if event.get("Type") == "container":
                    ids.add(event["ID"])
        return sorted(i for i in ids if (self.state_root / i).exists())


class Containerd:
    """A containerd daemon of our own, and ctr pointed at it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = str(base / "containerd.sock")
        self.cgroup_parent = own_cgroup_parent(f"engines-ctr-{os.getpid()}")
        config = base / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{base / "root"}"\n'
            f'state = "{base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.address}"\n'
            f'[ttrpc]\n  address = "{self.address}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{base / "opt"}"\n')
        self.log = open(base / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        wait_for(lambda: self.proc.poll() is not None or self("version", check=False).returncode == 0,
                 what="containerd to listen")
        assert self.proc.poll() is None, (base / "containerd.log").read_text()[-2000:]

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.address, "--namespace", CTR_NAMESPACE, *args]

    def env(self) -> dict:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*args), input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def remove_all(self) -> None:
        """Kill and delete every task and container in our namespace (what a failed test may leave)."""
        for c in self("container", "ls", "--quiet", check=False).stdout.split():
            self("task", "kill", "--all", "--signal", "SIGKILL", c, check=False)
            self("task", "delete", "--force", c, check=False)
            self("container", "delete", c, check=False)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
