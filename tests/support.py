"""Test helpers shared by every suite: the corert CLI wrapper, busybox rootfs/bundles, leak snapshots."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
CORERT = str(VENV_BIN / "corert")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {" ".join(line.split()[3:5]) for line in f}


def _corert_cgroups() -> set[str]:
    found = set()
    for base in Path("/sys/fs/cgroup").iterdir():
        for path in base.glob("**/corert*"):
            if path.is_dir():
                found.add(str(path))
    return found


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


def _netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def _children() -> set[int]:
    me = os.getpid()
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == me and fields[0] != "Z":
                    kids.add(int(entry))
            except (OSError, IndexError):
                continue
    return kids


def snapshot() -> dict:
    """What a test could leak: mounts, corert cgroups, links, netns, live child processes."""
    return {"mounts": _mounts(), "cgroups": _corert_cgroups(), "links": _links(), "netns": _netns(),
            "children": _children()}


def leaks(before: dict, after: dict) -> dict:
    return {k: sorted(map(str, after[k] - before[k])) for k in before if after[k] - before[k]}


def make_busybox_rootfs(dest: Path) -> Path:
    """A minimal rootfs made from the host's static busybox: /bin/busybox plus applet symlinks."""
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "usr/bin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            link = dest / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


def runc_spec() -> dict:
    """The config `corert spec` writes (the same shape as `runc spec`)."""
    from corert.spec.defaults import default_spec
    return default_spec()


def bundle_config(rootfs: Path, *, readonly: bool = True, args: tuple[str, ...] = ("true",)) -> dict:
    """`corert spec` defaults for a busybox rootfs: the command, no terminal, the rootfs path."""
    config = runc_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = list(args)
    config["root"] = {"path": str(rootfs), "readonly": readonly}
    return config


def write_config(bundle: Path, config: dict) -> None:
    (bundle / "config.json").write_text(json.dumps(config))


def read_config(bundle: Path) -> dict:
    return json.loads((bundle / "config.json").read_text())


class Cli:
    """Runs the installed corert (or runc/crun) with a private --root."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def __call__(self, *args: str, check: bool = False, input: str | None = None, timeout: float = 60,
                 env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
        import tempfile
        # Files, not pipes: a created/detached container inherits stdout/stderr and keeps them open,
        # so waiting for EOF on a pipe would wait for the container.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run([self.binary, "--root", str(self.root), *args], stdout=out, stderr=err,
                               input=input.encode() if input is not None else None,
                               stdin=None if input is not None else subprocess.DEVNULL,
                               timeout=timeout, env=env, cwd=cwd)
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(errors="replace"),
                                            err.read().decode(errors="replace"))
        if check and r.returncode != 0:
            raise AssertionError(f"{self.binary} {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def cleanup(self) -> None:
        """Force-delete whatever a test left, so one failure does not cascade into leak reports."""
        if self.root.exists():
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.name.startswith("."):
                    self("delete", "--force", entry.name)


# ---- test users --------------------------------------------------------------------------------------------
SUBID_FILES = ("/etc/subuid", "/etc/subgid")


def user_runtime_dir(uid: int) -> str:
    """XDG_RUNTIME_DIR for a test user: pytest's tmp dirs are private to root."""
    return f"/tmp/corert-test-run-{uid}"


def set_subids(name: str, ids: str | None) -> None:
    """Give name exactly the subordinate uid/gid range ids ("start:count"), or none: useradd may or may
    not add one (SUB_UID_* in login.defs), a test needs to know which."""
    for path in SUBID_FILES:
        with open(path) as f:
            lines = [line for line in f.read().splitlines() if not line.startswith(f"{name}:")]
        if ids is not None:
            lines.append(f"{name}:{ids}")
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines))


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                continue
    return pids


def remove_test_user(name: str) -> None:
    """Kill the user's processes, delete it with its home and runtime dir, drop its subordinate ids."""
    import pwd
    import signal
    import time

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return
    # Rootless engines leave processes behind (podman's pause process holds the user namespace).
    for _ in range(50):
        pids = _pids_of(entry.pw_uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)
    shutil.rmtree(user_runtime_dir(entry.pw_uid), ignore_errors=True)
    set_subids(name, None)
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    raise AssertionError(f"userdel left user {name}")


def make_test_user(name: str, subids: str | None, home: bool = True, shell: str = "/bin/sh"):
    """A fresh unprivileged user (whatever an earlier run left is removed first) with exactly the
    subordinate id range subids ("start:count", or None). Returns its pwd entry."""
    import pwd

    remove_test_user(name)
    subprocess.run(["useradd", "--create-home" if home else "--no-create-home", "--shell", shell, name],
                   check=True, capture_output=True)
    set_subids(name, subids)
    return pwd.getpwnam(name)


def http_get(host: str, port: int) -> str:
    """The body's last line of GET / from host:port, or the error (this machine's own addresses only)."""
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError as e:
        return f"error: {e}"
    lines = data.decode(errors="replace").strip().splitlines()
    # An empty reply: a port forwarder (slirp4netns, pasta) accepted before the server listened.
    return lines[-1] if lines else "error: empty reply"
