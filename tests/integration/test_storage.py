"""Storage drivers against the real kernel: overlayfs mounts and vfs copies of hand-built layer stacks.

Run as root. Layers are built in pytest tmp dirs in overlayfs form (whiteout = char dev 0:0, opaque dir =
trusted.overlay.opaque=y, or user.overlay.opaque=y for the userxattr case).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from corert.drivers.storage import DEFAULT_DRIVER, get_driver, load_prepared
from corert.drivers.storage.overlay import OverlayDriver
from corert.drivers.storage.vfs import VfsDriver
from corert.errors import HostUnsupported, ResourceError, UsageError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for real mounts")

DRIVERS = ["overlay", "vfs"]
REPO = Path(__file__).resolve().parents[2]
OLD_MTIME = 1_000_000_000 * 10**9


# --- helpers ----------------------------------------------------------------------------------------------

def mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix + "/"):
                found.append(mp)
    return found


def mkdirs(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def write(path: Path, content: str, mode: int = 0o644) -> Path:
    mkdirs(path.parent)
    path.write_text(content)
    os.chmod(path, mode)
    return path


def whiteout(path: Path) -> None:
    mkdirs(path.parent)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def opaque(path: Path, xattr: str = "trusted.overlay.opaque") -> None:
    mkdirs(path)
    os.setxattr(path, xattr, b"y")


def tree(root: Path) -> dict[str, tuple]:
    """rel path -> (kind, permission bits, content or link target) for everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("f", stat.S_IMODE(st.st_mode), p.read_text())
            else:
                out[rel] = ("other", st.st_mode, st.st_rdev)
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything that could betray a write into a layer: metadata, inode, data hash, xattrs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["."] + dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            data = b""
            if stat.S_ISREG(st.st_mode):
                data = hashlib.sha256(p.read_bytes()).digest()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p).encode()
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {n: os.getxattr(p, n) for n in os.listxattr(p)}
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                                             st.st_ino, st.st_nlink, st.st_rdev, data, sorted(xattrs.items()))
    return out


def move(src: Path, dst: Path) -> None:
    """What mv does: rename, and copy + delete when the fs answers EXDEV (overlay, redirect_dir=off)."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.copytree(src, dst, symlinks=True)
        shutil.rmtree(src)


def build_stack(base: Path, opaque_xattr: str = "trusted.overlay.opaque") -> list[Path]:
    l1, l2, l3 = (mkdirs(base / f"corert-layer{i}") for i in (1, 2, 3))
    write(l1 / "etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    write(l1 / "etc/hosts", "127.0.0.1 localhost\n")
    tool = write(l1 / "bin/tool", "#!tool v1\n", 0o755)
    os.chmod(tool, 0o4755)
    os.setxattr(tool, "user.test", b"hello")
    os.utime(tool, ns=(OLD_MTIME, OLD_MTIME))
    write(l1 / "data/keep.txt", "keep\n")
    write(l1 / "data/old/a.txt", "a\n")
    write(l1 / "data/old/b.txt", "b\n")
    write(l1 / "hard1", "linked\n")
    os.link(l1 / "hard1", l1 / "hard2")
    os.symlink("etc/passwd", l1 / "link")
    write(l1 / "todelete", "bye\n")
    write(l1 / "dir1/sub/f", "f\n")
    owned = write(l1 / "owned", "owned\n", 0o640)
    os.chown(owned, 1234, 5678)
    os.utime(owned, ns=(OLD_MTIME, OLD_MTIME))

    whiteout(l2 / "todelete")
    opaque(l2 / "data/old", opaque_xattr)
    write(l2 / "data/old/c.txt", "c\n")
    write(l2 / "etc/hosts", "127.0.0.1 corert\n")

    write(l3 / "usr/bin/new", "new\n", 0o755)
    os.symlink("/etc/hosts", l3 / "abs")
    return [l1, l2, l3]


EXPECTED_VIEW = {
    "etc": ("d", 0o755),
    "etc/passwd": ("f", 0o644, "root:x:0:0::/root:/bin/sh\n"),
    "etc/hosts": ("f", 0o644, "127.0.0.1 corert\n"),
    "bin": ("d", 0o755),
    "bin/tool": ("f", 0o4755, "#!tool v1\n"),
    "data": ("d", 0o755),
    "data/keep.txt": ("f", 0o644, "keep\n"),
    "data/old": ("d", 0o755),
    "data/old/c.txt": ("f", 0o644, "c\n"),
    "hard1": ("f", 0o644, "linked\n"),
    "hard2": ("f", 0o644, "linked\n"),
    "link": ("l", "etc/passwd"),
    "dir1": ("d", 0o755),
    "dir1/sub": ("d", 0o755),
    "dir1/sub/f": ("f", 0o644, "f\n"),
    "owned": ("f", 0o640, "owned\n"),
    "usr": ("d", 0o755),
    "usr/bin": ("d", 0o755),
    "usr/bin/new": ("f", 0o755, "new\n"),
    "abs": ("l", "/etc/hosts"),
}


@pytest.fixture
def stack(tmp_path: Path) -> list[Path]:
    return build_stack(tmp_path / "layers")


@pytest.fixture
def prepare(tmp_path: Path):
    """prepare(driver, layers, name) -> PreparedRootfs; everything is torn down and checked afterwards."""
    made = []

    def _prepare(driver, layers: list[Path], name: str = "c1"):
        p = driver.prepare(f"corert-test-{name}", layers, tmp_path / f"corert-{name}")
        made.append(p)
        return p

    yield _prepare
    for p in reversed(made):
        p.teardown()
    assert mounts_under(tmp_path) == []


# --- merged view ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("driver_name", DRIVERS)
def test_merged_view_is_exact(driver_name, stack, prepare):
    p = prepare(get_driver(driver_name), stack)
    root = p.rootfs
    assert tree(root) == EXPECTED_VIEW
    tool = os.lstat(root / "bin/tool")
    assert os.getxattr(root / "bin/tool", "user.test") == b"hello"
    assert tool.st_mtime_ns == OLD_MTIME
    owned = os.lstat(root / "owned")
    assert (owned.st_uid, owned.st_gid, owned.st_mtime_ns) == (1234, 5678, OLD_MTIME)
    h1, h2 = os.lstat(root / "hard1"), os.lstat(root / "hard2")
    assert h1.st_ino == h2.st_ino and h1.st_nlink == 2
    assert not [n for n in os.listxattr(root / "data/old") if ".overlay." in n]
    # The root of the rootfs carries the image root's attributes.
    assert stat.S_IMODE(os.stat(root).st_mode) == stat.S_IMODE(os.stat(stack[-1]).st_mode)
    assert p.changes() == []
    if driver_name == "overlay":
        assert mounts_under(p.rootfs) == [str(p.rootfs)]
        assert p.usage() == 0


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_writes_copy_up_and_leave_layers_alone(driver_name, stack, prepare):
    before = [snapshot(layer) for layer in stack]
    p = prepare(get_driver(driver_name), stack)
    root = p.rootfs
    used = p.usage()
    with open(root / "etc/passwd", "a") as f:
        f.write("corert:x:1000:1000::/home:/bin/sh\n")
    os.chmod(root / "bin/tool", 0o755)
    (root / "newfile").write_bytes(b"x" * 100_000)
    assert (root / "etc/passwd").read_text().endswith("corert:x:1000:1000::/home:/bin/sh\n")
    assert stat.S_IMODE(os.stat(root / "bin/tool").st_mode) == 0o755
    assert [snapshot(layer) for layer in stack] == before
    assert p.changes() == [("C", "/bin"), ("C", "/bin/tool"), ("C", "/etc"), ("C", "/etc/passwd"),
                           ("A", "/newfile")]
    grown = p.usage() - used
    if driver_name == "overlay":  # copied up whole: passwd and tool, plus the new file
        assert grown == 100_000 + os.path.getsize(root / "etc/passwd") + os.path.getsize(root / "bin/tool")
    else:  # the copy only grows by what was appended and added
        assert grown == 100_000 + len("corert:x:1000:1000::/home:/bin/sh\n")


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_deletes_show_as_D(driver_name, stack, prepare):
    before = [snapshot(layer) for layer in stack]
    p = prepare(get_driver(driver_name), stack)
    root = p.rootfs
    os.unlink(root / "data/keep.txt")
    shutil.rmtree(root / "dir1")
    assert not (root / "data/keep.txt").exists() and not (root / "dir1").exists()
    assert p.changes() == [("C", "/data"), ("D", "/data/keep.txt"), ("D", "/dir1")]
    assert [snapshot(layer) for layer in stack] == before


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_recreated_dir_hides_image_contents(driver_name, stack, prepare):
    p = prepare(get_driver(driver_name), stack)
    root = p.rootfs
    shutil.rmtree(root / "data/old")
    os.mkdir(root / "data/old", 0o755)
    os.chmod(root / "data/old", 0o755)
    (root / "data/old/z").write_text("z\n")
    assert sorted(os.listdir(root / "data/old")) == ["z"]
    assert p.changes() == [("C", "/data"), ("C", "/data/old"), ("D", "/data/old/c.txt"), ("A", "/data/old/z")]


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_rename_dir_and_file(driver_name, stack, prepare):
    before = [snapshot(layer) for layer in stack]
    p = prepare(get_driver(driver_name), stack)
    root = p.rootfs
    move(root / "dir1", root / "dir2")
    os.rename(root / "etc/hosts", root / "etc/hosts.bak")
    view = tree(root)
    assert "dir1" not in view and view["dir2/sub/f"] == ("f", 0o644, "f\n")
    assert "etc/hosts" not in view and view["etc/hosts.bak"] == ("f", 0o644, "127.0.0.1 corert\n")
    assert p.changes() == [("D", "/dir1"), ("A", "/dir2"), ("A", "/dir2/sub"), ("A", "/dir2/sub/f"),
                           ("C", "/etc"), ("D", "/etc/hosts"), ("A", "/etc/hosts.bak")]
    assert [snapshot(layer) for layer in stack] == before


# --- teardown ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("driver_name", DRIVERS)
def test_teardown_leaves_nothing_and_is_idempotent(driver_name, stack, tmp_path):
    cdir = tmp_path / "corert-fresh"
    p = get_driver(driver_name).prepare("corert-test-td", stack, cdir)
    (p.rootfs / "scratch").write_text("scratch\n")
    if driver_name == "overlay":
        assert mounts_under(cdir) == [str(cdir / "merged")]
    p.teardown()
    p.teardown()
    assert mounts_under(tmp_path) == []
    assert not cdir.exists()  # prepare made it, teardown removes it

    # A container dir that already held something keeps it; only the driver's own dirs go.
    kept = mkdirs(tmp_path / "corert-kept")
    (kept / "state.json").write_text("{}")
    p = get_driver(driver_name).prepare("corert-test-td2", stack, kept)
    p.teardown()
    assert os.listdir(kept) == ["state.json"]


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_teardown_from_another_process(driver_name, stack, tmp_path):
    cdir = tmp_path / "corert-other"
    p = get_driver(driver_name).prepare("corert-test-other", stack, cdir)
    (p.rootfs / "scratch").write_text("scratch\n")
    state = json.loads(json.dumps(p.state()))
    assert state["driver"] == driver_name and state["rootfs"] == str(p.rootfs)
    code = ("import json, sys; from corert.drivers.storage import load_prepared;"
            "p = load_prepared(json.loads(sys.argv[1])); print(len(p.changes())); p.teardown()")
    try:
        out = subprocess.run([sys.executable, "-c", code, json.dumps(state)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "1"  # the scratch file below is the one change the other process saw
    finally:
        load_prepared(state).teardown()
    assert mounts_under(tmp_path) == [] and not cdir.exists()


def test_teardown_detaches_a_busy_overlay(stack, tmp_path):
    cdir = tmp_path / "corert-busy"
    p = get_driver("overlay").prepare("corert-test-busy", stack, cdir)
    fd = os.open(p.rootfs / "etc/passwd", os.O_RDONLY)  # keeps the mount busy: plain umount gives EBUSY
    try:
        p.teardown()
        assert mounts_under(tmp_path) == []
        assert not cdir.exists()
        assert os.read(fd, 4) == b"root"  # the detached mount still serves the open file
    finally:
        os.close(fd)
        p.teardown()  # idempotent; cleans up if the assertions above failed


# --- long stacks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mount_api", ["fsconfig", "legacy"])
def test_forty_long_layers_overlay(mount_api, tmp_path, prepare):
    layers = []
    for i in range(40):
        layer = mkdirs(tmp_path / ("corert-long-layer-" + "x" * 120 + f"-{i:02d}"))
        write(layer / f"only{i}", f"{i}\n")
        write(layer / "common", f"{i}\n")
        if i == 20:
            whiteout(layer / "only5")
        layers.append(layer)
    assert len(":".join(map(str, layers))) > 4096
    p = prepare(OverlayDriver(mount_api=mount_api), layers, f"long-{mount_api}")
    names = set(os.listdir(p.rootfs))
    assert names == {"common"} | {f"only{i}" for i in range(40) if i != 5}
    assert (p.rootfs / "common").read_text() == "39\n"
    assert (p.rootfs / "only0").read_text() == "0\n"
    assert not (p.rootfs.parent / "l").exists()  # the legacy path's short links are gone after the mount
    with open("/proc/self/mountinfo") as f:
        options = next(line for line in f if line.split()[4] == str(p.rootfs)).split()[-1]
    # Proof of which way it was mounted: relative short links, or one lowerdir+ per layer.
    assert ("lowerdir=l/0:l/1:" in options) if mount_api == "legacy" else (options.count("lowerdir+=") == 40)
    assert p.changes() == []


# --- failures ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("driver_name", DRIVERS)
@pytest.mark.parametrize("precreate", [False, True])
def test_missing_layer_fails_cleanly(driver_name, precreate, stack, tmp_path):
    cdir = tmp_path / "corert-fail"
    if precreate:
        mkdirs(cdir)
    with pytest.raises(ResourceError, match="does-not-exist"):
        get_driver(driver_name).prepare("corert-test-fail", [*stack, tmp_path / "does-not-exist"], cdir)
    assert (os.listdir(cdir) == []) if precreate else not cdir.exists()
    assert mounts_under(tmp_path) == []


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_empty_layer_list_is_an_error(driver_name, tmp_path):
    with pytest.raises(ResourceError, match="no layers"):
        get_driver(driver_name).prepare("corert-test-empty", [], tmp_path / "corert-empty")
    assert not (tmp_path / "corert-empty").exists()


@pytest.mark.parametrize("driver_name", DRIVERS)
def test_prepare_twice_in_one_dir_fails_and_keeps_the_first(driver_name, stack, prepare, tmp_path):
    first = prepare(get_driver(driver_name), stack, "twice")
    with pytest.raises(ResourceError, match="already exists"):
        get_driver(driver_name).prepare("corert-test-twice", stack, tmp_path / "corert-twice")
    assert tree(first.rootfs) == EXPECTED_VIEW


def test_kernel_refusal_undoes_everything(stack, prepare, tmp_path):
    # overlayfs stacks at most two deep: an overlay on an overlay on an overlay is refused by the kernel
    # after the upper/work/merged dirs exist, which exercises the undo path for real.
    a = prepare(get_driver("overlay"), stack, "depth1")
    b = prepare(get_driver("overlay"), [a.rootfs], "depth2")
    assert (b.rootfs / "etc/hosts").read_text() == "127.0.0.1 corert\n"
    cdir = tmp_path / "corert-depth3"
    with pytest.raises(ResourceError, match="overlay mount on .* failed"):
        get_driver("overlay").prepare("corert-test-depth3", [b.rootfs], cdir)
    assert not cdir.exists()
    assert sorted(mounts_under(tmp_path)) == sorted([str(a.rootfs), str(b.rootfs)])


def test_layer_inside_container_dir_is_refused(stack, tmp_path):
    cdir = mkdirs(tmp_path / "corert-overlap")
    inner = mkdirs(cdir / "layer")
    for name in DRIVERS:
        with pytest.raises(ResourceError, match="overlaps"):
            get_driver(name).prepare("corert-test-overlap", [inner], cdir)
    assert os.listdir(cdir) == ["layer"]


# --- rootless form (userxattr), mounted here as root ------------------------------------------------------

def test_rootless_overlay_uses_userxattr(tmp_path, prepare):
    assert "userxattr" in OverlayDriver(rootless=True).options()
    assert "userxattr" not in OverlayDriver().options()
    layers = build_stack(tmp_path / "layers", opaque_xattr="user.overlay.opaque")
    p = prepare(get_driver("overlay", rootless=True), layers, "userxattr")
    assert tree(p.rootfs) == EXPECTED_VIEW
    with open("/proc/self/mountinfo") as f:
        line = next(line for line in f if line.split()[4] == str(p.rootfs))
    assert "userxattr" in line.split()[-1].split(",")
    shutil.rmtree(p.rootfs / "data/old")
    os.mkdir(p.rootfs / "data/old", 0o755)
    os.chmod(p.rootfs / "data/old", 0o755)
    upper_old = p.rootfs.parent / "upper/data/old"
    assert os.getxattr(upper_old, "user.overlay.opaque") == b"y"  # the kernel wrote the user.* form
    os.unlink(p.rootfs / "owned")
    assert p.changes() == [("C", "/data"), ("C", "/data/old"), ("D", "/data/old/c.txt"), ("D", "/owned")]


def test_vfs_reads_userxattr_layers(tmp_path, prepare):
    layers = build_stack(tmp_path / "layers", opaque_xattr="user.overlay.opaque")
    p = prepare(VfsDriver(rootless=True), layers, "vfs-userxattr")
    assert tree(p.rootfs) == EXPECTED_VIEW


# --- registry ---------------------------------------------------------------------------------------------

def test_registry(monkeypatch):
    assert DEFAULT_DRIVER == "overlay"
    monkeypatch.delenv("CORERT_STORAGE_DRIVER", raising=False)
    assert isinstance(get_driver(None), OverlayDriver)
    monkeypatch.setenv("CORERT_STORAGE_DRIVER", "vfs")
    assert isinstance(get_driver(None), VfsDriver)
    assert get_driver("overlay", rootless=True).rootless is True
    with pytest.raises(UsageError, match="unknown storage driver 'zfs'"):
        get_driver("zfs")
    try:
        fuse = get_driver("fuse")
    except HostUnsupported as e:
        assert "fuse" in str(e)
    else:
        assert fuse.name == "fuse" and callable(fuse.prepare)


def test_storage_modules_stay_light():
    code = ("import sys, corert.drivers.storage, corert.drivers.storage.overlay, corert.drivers.storage.vfs;"
            "print(','.join(m for m in ('typing', 'ctypes', 'shutil', 'threading', 'subprocess', 'trio')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_vfs_teardown_never_deletes_through_a_leftover_bind(stack, tmp_path):
    from corert.drivers.storage.base import MS_BIND, mount, unmount

    host_dir = mkdirs(tmp_path / "corert-hostdir")
    write(host_dir / "precious", "keep me\n")
    p = get_driver("vfs").prepare("corert-test-bind", stack, tmp_path / "corert-bind")
    target = mkdirs(p.rootfs / "mnt")
    mount(str(host_dir), str(target), "", MS_BIND, "")  # same filesystem: st_dev alone would not tell
    try:
        with pytest.raises(ResourceError, match="still mounted"):
            p.teardown()
        assert (host_dir / "precious").read_text() == "keep me\n"
    finally:
        unmount(target)
    p.teardown()
    assert not (tmp_path / "corert-bind").exists()
    assert (host_dir / "precious").read_text() == "keep me\n"


# --- volatile (`run --rm`): copy-ups without fsync ---------------------------------------------------------

def _root_mount_options(front, *run_args: str) -> list[str]:
    """The options of / inside a front-door container (its mountinfo's super options)."""
    r = front("run", *run_args, "busybox", "cat", "/proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    root = next(line for line in r.stdout.splitlines() if line.split()[4] == "/")
    return root.split(" - ")[1].split()[2].split(",")


def _volatile(options: list[str]) -> bool:
    return "volatile" in options or "fsync=volatile" in options   # newer kernels show the fsync= form


def test_run_rm_mounts_the_kernel_overlay_volatile(front):
    assert _volatile(_root_mount_options(front, "--rm", "--storage=overlay"))
    assert not _volatile(_root_mount_options(front, "--storage=overlay", "--name", "kept"))
    front.ok("rm", "kept")
    front.assert_clean()


@pytest.mark.parametrize("driver_name", ["overlay", "fuse"])
def test_volatile_copy_up_is_still_a_whole_copy(driver_name, stack, prepare):
    p = prepare(get_driver(driver_name, volatile=True), stack, f"volatile-{driver_name}")
    if driver_name == "fuse":   # told to the daemon; the copy-up below then runs without its fsync
        with open(f"/proc/{p.pid}/cmdline", "rb") as f:
            assert b"--volatile" in f.read().split(b"\0")
    else:
        with open("/proc/self/mountinfo") as f:
            line = next(line for line in f if line.split()[4] == str(p.rootfs))
        assert _volatile(line.split()[-1].split(","))
    before = (p.rootfs / "etc/passwd").read_bytes()
    with open(p.rootfs / "etc/passwd", "ab") as f:
        f.write(b"appended\n")
    assert (p.rootfs / "etc/passwd").read_bytes() == before + b"appended\n"
    assert (p.rootfs.parent / "upper/etc/passwd").read_bytes() == before + b"appended\n"
