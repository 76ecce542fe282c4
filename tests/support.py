"""Test helpers shared by every suite: the corert CLI wrapper, busybox rootfs/bundles, leak snapshots."""
from __future__ import annotations

import json
import os
import shutil
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
