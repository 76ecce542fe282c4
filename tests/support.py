"""Test helpers shared by every suite: the corert CLI wrappers, busybox rootfs/bundles, leak snapshots, polling,
processes, test users, image archives."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import pytest

T = TypeVar("T")

VENV_BIN = Path(sys.executable).parent
CORERT = str(VENV_BIN / "corert")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def installed(tool: str) -> str:
    """tool's path. scripts/setup installs every tool the tests use: without one the test fails, since a skip
    would hide a broken setup as a green run."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (scripts/setup installs it)")
    return path


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's size=) on path for the with block: ENOSPC from the real kernel (root only)."""
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "corert-test-small", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


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


def links() -> set[str]:
    """The host's network link names (no @peer suffix)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


def _netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def snapshot() -> dict:
    """What a test could leak: mounts, corert cgroups, links, netns, live child processes."""
    return {"mounts": _mounts(), "cgroups": _corert_cgroups(), "links": links(), "netns": _netns(),
            "children": children()}


def leaks(before: dict, after: dict) -> dict:
    return {k: sorted(map(str, after[k] - before[k])) for k in before if after[k] - before[k]}


# ---- processes ------------------------------------------------------------------------------------------
def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...); None once pid is gone.
    Split at the last ")": a command name may hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def exited(pid: int) -> bool:
    """pid is gone or a zombie: it has ended, whether or not its parent reaped it yet."""
    fields = proc_stat(pid)
    return fields is None or fields[0] == "Z"


def children(zombies: bool = False) -> set[int]:
    """This process's live children; with zombies, those that ended and were not reaped instead."""
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None and fields[1] == me and (fields[0] == "Z") == zombies:
                found.add(int(entry))
    return found


# ---- polling --------------------------------------------------------------------------------------------
WAIT = 30.0   # upper bound of a wait for a state: it only bounds a hang, never asserts on speed


def poll(fetch: Callable[[], T], until: Callable[[T], Any] = bool, timeout: float = WAIT,
         interval: float = 0.05) -> T:
    """fetch() every interval s until until(its value) holds or timeout s have passed; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(fetch: Callable[[], T], what: str = "condition", *, until: Callable[[T], Any] = bool,
             timeout: float = WAIT, interval: float = 0.05) -> T:
    """poll() that must get there: the value until() accepted, else AssertionError naming what (and, with
    an until of its own, the last value)."""
    value = poll(fetch, until, timeout, interval)
    if not until(value):
        raise AssertionError(f"timed out waiting for {what}" + ("" if until is bool else f": {value}"))
    return value


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


def set_args(bundle: Path, *args: str, **process) -> dict:
    """Set the bundle's process args (and other process fields); the config written."""
    config = read_config(bundle)
    config["process"]["args"] = list(args)
    config["process"].update(process)
    write_config(bundle, config)
    return config


def proc_status_field(pid: int, name: str) -> str:
    """One field of /proc/<pid>/status ("SigCgt", "NoNewPrivs", ...), as the kernel prints it."""
    with open(f"/proc/{pid}/status") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith(name + ":"))


def status(cli, cid: str) -> str | None:  # noqa: ANN001 - a Cli
    """The container's status from `state`, None while it has none."""
    r = cli("state", cid)
    return json.loads(r.stdout)["status"] if r.returncode == 0 else None


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


class Front:
    """The installed corert's front door (run, ps, rm, images, ...) with a private state root (base/state) and
    image store ($CORERT_DATA_ROOT: data, else base/data)."""

    def __init__(self, base: Path, data: Path | None = None, *, storage_from_env: bool = False) -> None:
        self.base = base
        self.state_root = base / "state"
        self.state_root.mkdir(mode=0o700)
        self.data = data or base / "data"
        self.env = {**os.environ, "CORERT_DATA_ROOT": str(self.data)}
        if not storage_from_env:   # the default driver unless a run says --storage: tests name what they check
            self.env.pop("CORERT_STORAGE_DRIVER", None)
        self.cli = Cli(CORERT, self.state_root)

    def __call__(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.cli(*args, env=self.env, **kw)

    def ok(self, *args: str, **kw: Any) -> str:
        """The stdout of a command that must succeed."""
        r = self(*args, **kw)
        assert r.returncode == 0, f"corert {' '.join(args)} exited {r.returncode}: {r.stderr}"
        return r.stdout

    def ps(self, *flags: str) -> list[dict]:
        """`corert ps` rows as dicts (columns split on runs of 3+ spaces, as the table is printed)."""
        import re

        lines = self.ok("ps", *flags).splitlines()
        header = re.split(r"\s{3,}", lines[0].strip())
        return [dict(zip(header, re.split(r"\s{3,}", line.strip()))) for line in lines[1:]]

    def remove_containers(self) -> None:
        """`rm -f` every container `ps -a` lists."""
        for ref in self("ps", "-aq").stdout.split():
            self("rm", "-f", ref)

    def cleanup(self) -> None:
        """Remove what a test left (its containers, then any state), so one failure does not cascade."""
        self.remove_containers()
        self.cli.cleanup()

    def assert_clean(self) -> None:
        """No container state, container data dir, staging dir or mount left by the front door."""
        assert [e for e in os.listdir(self.state_root) if not e.startswith("@")] == []
        for sub in ("containers", "tmp"):
            d = self.data / sub
            assert not d.exists() or os.listdir(d) == [], f"{d} not empty: {os.listdir(d)}"
        with open("/proc/self/mountinfo") as f:
            assert str(self.base) + "/" not in f.read()
        assert self.ps("-a") == []


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


def run_as_user(entry, *cmd: str, timeout: float = 120, cwd: str | None = None,  # noqa: ANN001 - pwd entry
                via: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """cmd run by the test user (runuser: no password, no PAM session), output captured. `via`: a command run
    as root first that execs the rest (e.g. into a private mount namespace)."""
    return subprocess.run([*via, "runuser", "-u", entry.pw_name, "--", *cmd], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def as_user(entry, *args: str, spy: Path | None = None,  # noqa: ANN001 - pwd entry
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed corert run by the test user, in a clean environment with its own XDG_RUNTIME_DIR. With
    `spy`, in a private mount namespace where /usr/bin/fusermount3 is `spy` (libfuse runs it by that absolute
    path): the host's files stay as they are."""
    runtime_dir = user_runtime_dir(entry.pw_uid)
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    os.chown(runtime_dir, entry.pw_uid, entry.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": entry.pw_dir, "USER": entry.pw_name, "XDG_RUNTIME_DIR": runtime_dir}
    via = () if spy is None else ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                                  'mount --bind "$0" /usr/bin/fusermount3 && exec "$@"', str(spy))
    return run_as_user(entry, "env", *[f"{k}={v}" for k, v in env.items()], CORERT, *args, timeout=timeout,
                       cwd="/", via=via)


def user_processes(uid: int, settle: float = 0.0, only: tuple[str, ...] = ()) -> list[str]:
    """uid's live processes as "pid stat args" lines (zombies only wait to be reaped: left out), those whose
    line names one of `only` if given; after at most `settle` s for them to end (they may get SIGTERM first)."""
    def live() -> list[str]:
        out = subprocess.run(["ps", "-u", str(uid), "-o", "pid=,stat=,args="], capture_output=True, text=True)
        return [line for line in out.stdout.splitlines()
                if line.strip() and "Z" not in line.split()[1] and (not only or any(w in line for w in only))]

    return poll(live, until=lambda found: not found, timeout=settle, interval=0.1)


def assert_user_clean(entry) -> None:  # noqa: ANN001 - pwd entry
    """Remove the test user's containers, then: none of its processes (given 5 s to end) or mounts remain."""
    for name in as_user(entry, "ps", "-aq").stdout.split():
        as_user(entry, "rm", "-f", name)
    assert user_processes(entry.pw_uid, settle=5) == []
    assert not [line for line in open("/proc/self/mountinfo") if entry.pw_dir in line]


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


# ---- image archives -------------------------------------------------------------------------------------
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(members: Iterable[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive of (header, content) pairs; the content counts for regular files only."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def make_tar(entries: list[tuple], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """entries: (kind, name[, opts]) with kind dir/file/sym/link/chr/blk/fifo; opts: mode, uid, gid, mtime,
    xattrs (name -> bytes), data (file), target (sym, link), dev ((major, minor) of chr, blk)."""
    members = []
    for kind, name, *rest in entries:
        opts = rest[0] if rest else {}
        info = tarfile.TarInfo(name)
        info.mode = opts.get("mode", 0o755 if kind == "dir" else 0o644)
        info.uid, info.gid = opts.get("uid", 0), opts.get("gid", 0)
        info.mtime = opts.get("mtime", 1_600_000_000)
        if "xattrs" in opts:
            info.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                                for k, v in opts["xattrs"].items()}
        data = b""
        if kind == "dir":
            info.type = tarfile.DIRTYPE
        elif kind == "file":
            data = opts.get("data", b"")
            info.size = len(data)
        elif kind == "sym":
            info.type, info.linkname = tarfile.SYMTYPE, opts["target"]
        elif kind == "link":
            info.type, info.linkname = tarfile.LNKTYPE, opts["target"]
        elif kind in ("chr", "blk"):
            info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
            info.devmajor, info.devminor = opts.get("dev", (1, 3))
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        members.append((info, data))
    return tar_bytes(members, fmt)


def image_config(layer_tars: list[bytes], cmd: tuple[str, ...] = ("sh",), *, full: bool = True) -> bytes:
    """An image config for these (uncompressed) layers: with full, also created, Env, WorkingDir, Labels and
    history (what an import must keep); else only architecture, os and Cmd (the image's PATH is the runtime's)."""
    doc: dict = {"architecture": "amd64", "os": "linux"}
    if full:
        doc["created"] = "2024-01-01T00:00:00Z"
        doc["config"] = {"Env": ["PATH=/bin"], "Cmd": list(cmd), "WorkingDir": "/", "Labels": {"x": "y"}}
    else:
        doc["config"] = {"Cmd": list(cmd)}
    doc["rootfs"] = {"type": "layers", "diff_ids": [f"sha256:{sha(t)}" for t in layer_tars]}
    if full:
        doc["history"] = [{"created_by": "test"} for _ in layer_tars]
    return json.dumps(doc).encode()


def write_oci_layout(dest: Path, layer_tars: list[bytes], *, config: bytes | None = None, gzip_layers: bool = True,
                     compresslevel: int = 9, ref: str = "test:1", ref_key: str = "io.containerd.image.name",
                     corrupt_layer: int | None = None) -> bytes:
    """An OCI image layout dir of these layers, its manifest named ref under the index annotation ref_key;
    returns the config bytes (`config`, else image_config's). corrupt_layer: that layer's blob holds other bytes
    than its digest says."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    config = config or image_config(layer_tars)
    descs = []
    for i, t in enumerate(layer_tars):
        blob = gzip.compress(t, compresslevel=compresslevel, mtime=0) if gzip_layers else t
        (blobs / sha(blob)).write_bytes(blob if i != corrupt_layer else blob[:-1] + bytes([blob[-1] ^ 1]))
        descs.append({"mediaType": OCI_LAYER_GZIP if gzip_layers else OCI_LAYER,
                      "digest": f"sha256:{sha(blob)}", "size": len(blob)})
    (blobs / sha(config)).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": f"sha256:{sha(config)}",
                                      "size": len(config)}, "layers": descs}).encode()
    (blobs / sha(manifest)).write_bytes(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(manifest)}", "size": len(manifest),
         "annotations": {ref_key: ref}}]}))
    return config


def write_docker_archive(dest: Path, layer_tars: list[bytes], *, tags: tuple[str, ...] = ("example.com/app:v1",),
                         config: bytes | None = None) -> bytes:
    """`docker save` format (legacy layout): manifest.json, <config-hex>.json, <id>/layer.tar."""
    config = config or image_config(layer_tars)
    with tarfile.open(dest, "w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        layers = []
        for i, t in enumerate(layer_tars):
            add(f"{i:064x}/layer.tar", t)
            layers.append(f"{i:064x}/layer.tar")
        add(f"{sha(config)}.json", config)
        add("manifest.json", json.dumps([{"Config": f"{sha(config)}.json", "RepoTags": list(tags),
                                          "Layers": layers}]).encode())
    return config
