"""The escape suite: each known container-escape class, tried for real through `corert run`, must fail.

Every test names the CVE or class it covers. The attacker code is tests/security/progs/probe.c (static,
mounted read-only at /p) or busybox; the defaults are what `corert run busybox ...` gives as root.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from security.secsupport import parse
from support import CORERT, bundle_config, make_busybox_rootfs, write_config

DENIED = {"EPERM", "EACCES"}


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---- CVE-2019-5736 class: overwriting the runtime through /proc/<pid>/exe ------------------------------

def test_cve_2019_5736_exec_helper_exe_is_unreachable(corert, probe_dir):
    """CVE-2019-5736 class: while `corert exec` joins the container, its helper (a clone of the Python
    runtime, comm "corert") is visible in the container's pid namespace. A process inside watches for it
    and tries readlink, O_PATH, O_RDONLY and O_WRONLY opens of /proc/<helper>/exe: the helper is
    non-dumpable from before clone, so every attempt must fail, and the host interpreter must be unchanged."""
    interpreter = os.path.realpath(sys.executable)
    before = _sha256(interpreter)
    name = f"sec-{secrets.token_hex(4)}"
    r = corert("run", "-d", "--name", name, "-v", f"{probe_dir}:/p:ro", "busybox",
               "/p/probe", "watch", "corert", "3", "120", check=True)
    cid = r.stdout.strip()
    try:
        for _ in range(200):
            corert("exec", name, "true")
            if "seen " in corert("logs", name).stdout:   # the watcher saw 3 helpers (or gave up) and exited
                break
        corert("stop", "-t", "1", name)
        logs = corert("logs", name).stdout
    finally:
        corert("rm", "-f", cid)
    attempts = [line for line in logs.splitlines() if line.startswith("pid ")]
    assert attempts, f"the watcher never saw an exec helper in 200 execs; log: {logs!r}"
    for line in attempts:
        assert " ERR " in line, f"reached the runtime's exe from inside the container: {line}"
        assert line.rsplit(" ", 1)[1] in DENIED | {"ENOENT", "ESRCH"}, line
    assert _sha256(interpreter) == before


def test_cve_2019_5736_host_interpreter_not_writable_from_inside(run_probe, sh):
    """CVE-2019-5736 class: the container's own /proc/1/exe and /proc/self/exe lead to container binaries,
    never to the host interpreter that set the container up, and cannot be opened for writing."""
    r = sh("readlink /proc/1/exe; readlink /proc/self/exe")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/bin/busybox", "/bin/busybox"]
    assert "python" not in r.stdout
    out = parse(run_probe("open-write", "/proc/self/exe").stdout)
    assert out["open-write"] in {"ETXTBSY", "EROFS"} | DENIED, out
    out = parse(run_probe("open-write", "/proc/1/exe").stdout)
    assert out["open-write"] in {"ETXTBSY", "EROFS"} | DENIED, out


# ---- CVE-2024-21626 class: leaked fds and cwd -------------------------------------------------------

def _fd_report(stdout: str) -> tuple[dict[int, str], str, str]:
    fds, cwd, dotdot = {}, "", ""
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "fd":
            num, _, target = rest.partition(" ")
            fds[int(num)] = target
        elif kind == "cwd":
            cwd = rest
        elif kind == "dotdot":
            dotdot = rest
    return fds, cwd, dotdot


@pytest.mark.parametrize("workdir", [None, "/tmp"])
def test_cve_2024_21626_only_stdio_and_cwd_inside(run_probe, workdir):
    """CVE-2024-21626 class (leaked fd / cwd): the container process holds only fds 0, 1, 2, its cwd is
    inside the container, and `..` from it ends at the container's root."""
    opts = ("-w", workdir) if workdir else ()
    fds, cwd, dotdot = _fd_report(run_probe("fds", opts=opts).stdout)
    assert sorted(fds) == [0, 1, 2], fds
    assert cwd == (workdir or "/")
    assert dotdot == "root"


def test_cve_2024_21626_exec_gets_no_runtime_fds(corert, probe_dir):
    """CVE-2024-21626 class through `exec`: the exec'd process gets only 0, 1, 2 (not the runtime's state
    lock, namespace fds or socketpair) and its cwd is inside the container."""
    name = f"sec-{secrets.token_hex(4)}"
    cid = corert("run", "-d", "--name", name, "-v", f"{probe_dir}:/p:ro", "busybox", "sleep", "60",
                 check=True).stdout.strip()
    try:
        r = corert("exec", "-w", "/tmp", name, "/p/probe", "fds")
        assert r.returncode == 0, r.stderr
    finally:
        corert("rm", "-f", cid)
    fds, cwd, dotdot = _fd_report(r.stdout)
    assert sorted(fds) == [0, 1, 2], fds
    assert cwd == "/tmp" and dotdot == "root"


# ---- CVE-2021-30465 class: symlinked mount targets ----------------------------------------------------

@pytest.fixture
def symlink_image(corert, tmp_path):
    """An image whose /link -> /etc (absolute) and /rel -> ../../../../../../etc (relative, escaping)."""
    rootfs = make_busybox_rootfs(tmp_path / "img")
    (rootfs / "link").symlink_to("/etc")
    (rootfs / "rel").symlink_to("../../../../../../etc")
    name = f"corert-sec-symlink-{secrets.token_hex(4)}"
    corert("image", "import", str(rootfs), name, check=True)
    yield name
    corert("image", "rm", name)


@pytest.mark.parametrize("link", ["link", "rel"])
def test_cve_2021_30465_volume_through_image_symlink_stays_in_rootfs(corert, symlink_image, tmp_path, link):
    """CVE-2021-30465 class: `-v HOSTDIR:/link/x` where /link -> /etc in the image lands on <rootfs>/etc/x;
    nothing is created or mounted on the host's /etc."""
    leaf = f"corert-sec-{secrets.token_hex(6)}"
    hostdir = tmp_path / "vol"
    hostdir.mkdir()
    (hostdir / "marker").write_text("from-the-host\n")
    r = corert("run", "--rm", "-v", f"{hostdir}:/{link}/{leaf}", symlink_image, "sh", "-c",
               f"cat /etc/{leaf}/marker; grep -c ' /etc/{leaf} ' /proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["from-the-host", "1"]
    assert not os.path.lexists(f"/etc/{leaf}")


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, bytes(a), -100, bytes(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_cve_2021_30465_race_dir_swapped_for_symlink_during_create(corert, tmp_path):
    """CVE-2021-30465 class (the race): while containers are created with a bind mount on /race/sub/mnt,
    a host loop atomically swaps the rootfs's /race directory with a symlink to a host directory
    (absolute and relative forms). Resolution is done with RESOLVE_IN_ROOT on each step, so the
    host directory must never receive a created directory or file, whatever the interleaving."""
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "race").mkdir()
    (rootfs / "race_abs").symlink_to(str(outside))
    (rootfs / "race_rel").symlink_to("../../../../../../../../" + str(outside).lstrip("/"))
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "marker").write_text("m")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = bundle_config(rootfs, readonly=False)
    config["mounts"].append({"destination": "/race/sub/mnt", "type": "bind", "source": str(vol),
                             "options": ["rbind", "ro"]})
    write_config(bundle, config)

    stop = threading.Event()
    swaps = [0]

    def swapper():
        pairs = [(rootfs / "race", rootfs / "race_abs"), (rootfs / "race", rootfs / "race_rel")]
        while not stop.is_set():
            a, b = pairs[swaps[0] % 2]
            _exchange(a, b)
            _exchange(a, b)
            swaps[0] += 1

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    results = []
    try:
        for i in range(40):
            r = corert("run", "--bundle", str(bundle), f"race{i}")
            results.append(r.returncode)
            assert not any(outside.iterdir()), f"a mount target escaped to the host: {list(outside.iterdir())}"
    finally:
        stop.set()
        t.join()
    assert swaps[0] > 40
    assert not any(outside.iterdir())
    # Creates that met a half-swapped tree may fail; the rest mounted inside the rootfs.
    assert 0 in results


# ---- Kernel interfaces: /proc/sys, /proc/sysrq-trigger, /sys, masked paths ----------------------------

WRITES = [
    ("/proc/sys/kernel/hostname", "pwned"),
    ("/proc/sys/vm/drop_caches", "3"),
    ("/proc/sys/kernel/core_pattern", "|/tmp/x"),
    ("/proc/sysrq-trigger", "h"),
    ("/proc/irq/default_smp_affinity", "1"),
    ("/sys/kernel/profiling", "1"),
    ("/sys/power/state", "freeze"),
    ("/sys/kernel/mm/transparent_hugepage/enabled", "never"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "1"),
]


@pytest.mark.parametrize("path,data", WRITES, ids=[w[0] for w in WRITES])
def test_writes_to_kernel_knobs_fail(run_probe, path, data):
    """Read-only /proc/sys, /proc/sysrq-trigger, /proc/irq, /sys (host-wide kernel knobs, e.g. core_pattern
    -> code execution on the host): every write fails with EROFS/EACCES/EPERM. A path the host kernel
    does not have at all (no CONFIG_MAGIC_SYSRQ here) may only fail with ENOENT."""
    out = parse(run_probe("write", path, data).stdout)
    allowed = {"EROFS"} | DENIED
    if not os.path.exists(path):
        allowed.add("ENOENT")
    assert out[path] in allowed, out


def test_masked_paths_are_empty(sh):
    """Information leaks and side channels (/proc/kcore, /proc/keys, /proc/timer_list, /sys/firmware,
    ...): masked files read as empty and masked directories list nothing."""
    r = sh("for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/interrupts; do "
           "[ -e $f ] && echo $f $(wc -c < $f); done; echo firmware $(ls -A /sys/firmware | wc -l); "
           "echo acpi $(ls -A /proc/acpi 2>/dev/null | wc -l)")
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        name, size = line.split()
        assert size == "0", f"{name} is not masked: {line}"
    assert "firmware 0" in r.stdout


# ---- Capabilities and seccomp: modules, devices, mounts, namespaces, keyrings ------------------------

def test_load_kernel_module_fails(run_probe):
    """Kernel module loading (finit_module/init_module/delete_module): EPERM (no CAP_SYS_MODULE, and the
    default seccomp profile does not allow them)."""
    out = parse(run_probe("finit_module", "/p/probe").stdout)
    assert out == {"finit_module": "EPERM", "init_module": "EPERM", "delete_module": "EPERM"}


def _host_disk() -> tuple[str, int, int]:
    for name in sorted(os.listdir("/sys/block")):
        try:
            size = int(Path(f"/sys/block/{name}/size").read_text())
            major, minor = Path(f"/sys/block/{name}/dev").read_text().split(":")
        except (OSError, ValueError):
            continue
        if size > 0:
            return name, int(major), int(minor)
    pytest.fail("no block device with a size on this host")


def test_mknod_host_disk_cannot_be_opened(run_probe):
    """mknod of the host's disk and open it (raw access to the host filesystem): CAP_MKNOD is in docker's
    default set, so the node may be made, but the devices cgroup denies opening it (EPERM)."""
    name, major, minor = _host_disk()
    out = parse(run_probe("mknod", f"/tmp/{name}", str(major), str(minor)).stdout)
    assert out["mknod"] in {"OK"} | DENIED, out
    assert out["open"] in DENIED, f"opened the host disk {name} ({major}:{minor}): {out}"
    assert "read" not in out


def test_mount_and_namespaces_denied(run_probe):
    """Mount or unshare a user namespace under the default profile (the route to kernel bugs reachable
    from user namespaces, and to remounting /proc): unshare, clone(CLONE_NEWUSER), setns, mount: EPERM."""
    out = parse(run_probe("unshare").stdout)
    assert set(out.values()) <= DENIED, out
    assert len(out) == 7


def test_keyctl_cannot_reach_host_keyrings(run_probe):
    """Host keyring access (keys are not namespaced: CVE-2016-0728-style abuse, reading the host's
    secrets): keyctl, add_key and request_key fail with EPERM/ENOSYS."""
    out = parse(run_probe("keyctl").stdout)
    assert len(out) == 4
    assert set(out.values()) <= DENIED | {"ENOSYS"}, out


# ---- ptrace the runtime ------------------------------------------------------------------------------

def test_ptrace_runtime_not_visible(corert, probe_dir):
    """ptrace the runtime: the `corert run` process lives outside the container's pid namespace, so its
    pid names nothing inside (ESRCH), and the container's own pid 1 has no parent it can see."""
    proc = subprocess.Popen(
        [CORERT, "--root", str(corert.root), "run", "--rm", "-i", "-v", f"{probe_dir}:/p:ro", "busybox", "sh", "-c",
         "read pid; /p/probe ptrace $pid; cut -d' ' -f4 /proc/1/stat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(f"{proc.pid}\n", timeout=60)
    assert proc.returncode == 0, err
    result = parse(out)
    assert result == {"ptrace-attach": "ESRCH", "kill0": "ESRCH"}, out
    assert out.splitlines()[-1] == "0"


# ---- cgroups -----------------------------------------------------------------------------------------

def test_cannot_move_out_of_its_cgroup(sh):
    """Escaping cgroup limits: the container sees only its own cgroup dirs, read-only; writing its pid to
    any cgroup.procs (its own or the root's) fails with EROFS/EACCES/EPERM, and it stays in place."""
    r = sh("before=$(cat /proc/self/cgroup); "
           "for f in /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/*/../cgroup.procs /sys/fs/cgroup/unified/cgroup.procs; do "
           "  [ -e $f ] || continue; if echo $$ > $f 2>/dev/null; then echo MOVED $f; else echo denied $f; fi; done; "
           "[ \"$before\" = \"$(cat /proc/self/cgroup)\" ] && echo same")
    assert r.returncode == 0, r.stderr
    assert "MOVED" not in r.stdout
    assert r.stdout.count("denied") >= 3
    assert r.stdout.splitlines()[-1] == "same"


# ---- abstract unix sockets ---------------------------------------------------------------------------

def test_host_abstract_unix_socket_unreachable_from_new_netns(run_probe):
    """Host abstract unix sockets (e.g. containerd-shim's, CVE-2020-15257): they live in the network
    namespace, so a container with its own netns gets ECONNREFUSED; with --net=host it would connect,
    which shows the listener is real."""
    name = f"corert-sec-{secrets.token_hex(6)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen(8)
    try:
        out = parse(run_probe("connect-abstract", name).stdout)
        assert out == {"connect": "ECONNREFUSED"}, out
        out = parse(run_probe("connect-abstract", name, opts=("--net", "host")).stdout)
        assert out == {"connect": "OK"}, out
    finally:
        listener.close()


# ---- the rootfs stays the container's: no host paths leak through defaults ---------------------------

def test_no_host_mounts_visible(sh):
    """Nothing of the host's filesystem but what was asked for is mounted: mountinfo inside lists only the
    rootfs, proc/sys/dev/cgroup views and the masks."""
    r = sh("cat /proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        mountpoint = line.split()[4]
        assert mountpoint == "/" or mountpoint.startswith(("/proc", "/sys", "/dev")), line
