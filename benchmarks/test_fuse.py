"""FUSE overlay speed and memory (issue 4): kernel overlayfs vs fuse-overlayfs (C) vs corert's FUSE overlay.

One layer stack (LAYERS layers in overlay form, SMALL_FILES small files, a few whiteouts and an opaque
dir, plus one COPYUP_MB and one SEQ_MB file in the bottom layer) is generated once per session; every
backend mounts that same stack with its own empty upper dir:
- kernel:          corert's overlay driver (a plain `mount -t overlay`)
- fuse-overlayfs:  `fuse-overlayfs -f -o lowerdir=...,upperdir=...,workdir=... MNT` (Debian's, defaults)
- corert:          corert.drivers.storage.get_driver("fuse").prepare(...) (its daemon process)

"cold": a fresh mount for every round (new upper dir, empty FUSE inode/dentry/page caches; the backing
files stay in the host page cache, for all three alike: we do not drop the machine-wide caches on a host
shared with other jobs). "warm": one mount per benchmark, one untimed run of the workload, then the
timed rounds on the same mount. Mounting and unmounting are never timed.

No upper dir is deleted while this file's benchmarks run: a closed mount's upper dir goes to a trash dir
that is emptied after the last one (the copy-up rounds leave ~100 MB each there: ~2 GB at 3 rounds). On this VM's ext4 (no journal), creating inodes within ~30 s of many
deletions costs up to 10-20x (the inode allocator steps over recently freed inodes), so deleting each
round's upper dir would slow whichever backend happened to run next, whatever the overlay.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corert.drivers.storage import get_driver
from corert.drivers.storage.base import is_mounted, unmount
from corert.errors import ResourceError

ROUNDS = int(os.environ.get("BENCH_FUSE_ROUNDS") or min(int(os.environ.get("BENCH_ROUNDS", "3")), 5))
LAYERS = 3
SMALL_FILES = 20_000
SMALL_DIRS = 200
SMALL_MAX = 8192          # sizes uniform in [0, SMALL_MAX): ~80 MB of small-file content
READS = 2000              # the small-file read workload
CREATES = int(os.environ.get("BENCH_FUSE_CREATES", "2000"))   # issue: 10,000; scaled down (see README)
COPYUP_MB = 100
SEQ_MB = int(os.environ.get("BENCH_FUSE_SEQ_MB", "512"))     # issue: 1 GB; scaled down (see README)
BACKENDS = ("kernel", "fuse-overlayfs", "corert")
MOUNT_TIMEOUT = 20.0
CHUNK = 1 << 20
PY_PACKAGES = 40          # the Python import workload: PY_PACKAGES x PY_MODULES modules (+ __init__s)
PY_MODULES = 10


# ----- the layer stack ---------------------------------------------------------------------------------

def _fill(path: Path, mb: int, seed: int) -> None:
    """mb MiB of incompressible bytes (one random MiB repeated: no CPU spent on the generator)."""
    block = random.Random(seed).randbytes(CHUNK)
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(block)


@pytest.fixture(scope="session")
def layer_stack(bench_dir: Path) -> dict:
    """Layers bottom-first in overlay form; small files spread over the layers (the top ones override
    some of the bottom ones), whiteouts (char 0/0) and one opaque dir in the top layer."""
    rng = random.Random(4)
    root = bench_dir / "fuse-layers"
    layers = [root / f"l{i}" for i in range(LAYERS)]
    paths: list[str] = []
    for i, layer in enumerate(layers):
        for d in range(SMALL_DIRS):
            (layer / "usr" / f"d{d:03d}").mkdir(parents=True, exist_ok=True)
    for n in range(SMALL_FILES):
        rel = f"usr/d{n % SMALL_DIRS:03d}/f{n:05d}"
        layer = layers[0] if n % 2 == 0 else layers[1 + n % (LAYERS - 1)]   # half in the bottom layer
        (layer / rel).write_bytes(rng.randbytes(rng.randrange(SMALL_MAX)))
        paths.append(rel)
    top = layers[-1]
    for n in range(0, 400, 2):   # 200 whiteouts over bottom-layer files
        os.mknod(top / f"usr/d{n % SMALL_DIRS:03d}/f{n:05d}.tmp", 0o20000 | 0o644, os.makedev(0, 0))
        os.rename(top / f"usr/d{n % SMALL_DIRS:03d}/f{n:05d}.tmp", top / f"usr/d{n % SMALL_DIRS:03d}/f{n:05d}")
        paths.remove(f"usr/d{n % SMALL_DIRS:03d}/f{n:05d}")
    opaque = top / "usr" / f"d{SMALL_DIRS - 1:03d}"   # hides what the lower layers have in it
    os.setxattr(opaque, "trusted.overlay.opaque", b"y")
    (layers[0] / opaque.relative_to(top) / "hidden").write_bytes(b"hidden by the opaque dir above")
    paths = [p for p in paths if not p.startswith(f"usr/d{SMALL_DIRS - 1:03d}/") or (top / p).exists()]
    big = layers[0] / "big"
    big.mkdir()
    _fill(big / "copyup", COPYUP_MB, 1)
    _fill(big / "seq", SEQ_MB, 2)
    _python_tree(layers[0] / "py")
    yield {"layers": layers, "paths": paths, "reads": rng.sample(paths, READS)}
    shutil.rmtree(root)


def _python_tree(root: Path) -> None:
    """A site-packages-like tree: PY_PACKAGES packages of PY_MODULES modules with their .pyc files (as an
    image ships them), and one module `app` that imports them all."""
    import compileall

    body = "".join(f"def f{i}(x):\n    return [x * {i} for _ in range(3)]\n\n\n"
                   f"class C{i}:\n    \"\"\"Doc {i}.\"\"\"\n    v = {i}\n\n\n" for i in range(40))
    imports = []
    for p in range(PY_PACKAGES):
        pkg = root / f"pkg{p:02d}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f'"""Package {p}."""\n')
        for m in range(PY_MODULES):
            (pkg / f"mod{m}.py").write_text(body)
            imports.append(f"import pkg{p:02d}.mod{m}\n")
    (root / "app.py").write_text("".join(imports))
    compileall.compile_dir(str(root), quiet=1)


# ----- the three mounts --------------------------------------------------------------------------------

class Mount:
    """One mounted stack: .rootfs, .pid (the daemon; None for the kernel), .close() undoes everything."""

    def __init__(self, backend: str, layers: list[Path], where: Path, trash: Path, volatile: bool = False) -> None:
        self.backend, self.where, self.trash, self.pid = backend, where, trash, None
        self._prepared = self._proc = None
        if backend in ("kernel", "corert"):
            driver = get_driver("overlay" if backend == "kernel" else "fuse", volatile=volatile)
            self._prepared = driver.prepare(
                f"bench-{backend}", layers, where)
            self.rootfs = Path(self._prepared.rootfs)
            self.pid = getattr(self._prepared, "pid", None)
            return
        where.mkdir()
        for d in ("upper", "work", "merged"):
            (where / d).mkdir()
        self.rootfs = where / "merged"
        lower = ":".join(str(p) for p in reversed(layers))   # leftmost is the top layer
        self._proc = subprocess.Popen(
            ["fuse-overlayfs", "-f", "-o", f"lowerdir={lower},upperdir={where}/upper,workdir={where}/work",
             str(self.rootfs)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self._proc.pid
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not self._mounted():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.poll() is not None else ""
                self.close()
                raise RuntimeError(f"fuse-overlayfs did not mount {self.rootfs}: {err.strip() or 'timeout'}")
            time.sleep(0.01)

    def _mounted(self) -> bool:
        return is_mounted(self.rootfs)

    def close(self) -> None:
        """Unmount and undo everything, moving the upper dir into the trash rather than deleting it."""
        try:
            unmount(self.rootfs)   # lazily detached when busy; a FUSE daemon then exits
            upper = Path(self._prepared.upper) if self._prepared is not None else self.where / "upper"
            upper.rename(self.trash / f"{len(list(self.trash.iterdir()))}")
        except (OSError, ResourceError):
            pass   # still mounted, or no upper dir: teardown below deletes whatever is left
        if self._prepared is not None:
            self._prepared.teardown()   # an unmounted stack and a gone upper dir are no error
            shutil.rmtree(self.where, ignore_errors=True)
            return
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stderr.close()
        shutil.rmtree(self.where)

    def pss_kb(self) -> int | None:
        """The daemon's proportional set size from smaps_rollup (kB); None for the kernel."""
        if self.pid is None:
            return None
        with open(f"/proc/{self.pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


class Mounts:
    """Fresh mounts on demand under one work dir; whatever is still mounted is closed at the end."""

    def __init__(self, layers: list[Path], base: Path, trash: Path) -> None:
        self.layers, self.base, self.trash, self.n, self.live = layers, base, trash, 0, []

    def open(self, backend: str, volatile: bool = False) -> Mount:
        self.n += 1
        m = Mount(backend, self.layers, self.base / f"m{self.n}", self.trash, volatile)
        self.live.append(m)
        return m

    def close(self, m: Mount) -> None:
        m.close()
        self.live.remove(m)

    def close_all(self) -> None:
        while self.live:
            self.close(self.live[-1])


@pytest.fixture(scope="module")
def trash(tmp_path_factory):
    """Where closed mounts' upper dirs wait, emptied after this file's last benchmark (see the module doc)."""
    path = tmp_path_factory.mktemp("fuse-trash")
    yield path
    shutil.rmtree(path)


@pytest.fixture
def mounts(layer_stack: dict, tmp_path: Path, trash: Path):
    ms = Mounts(layer_stack["layers"], tmp_path, trash)
    yield ms
    ms.close_all()


# ----- the workloads: each takes (rootfs, stack, round number) -------------------------------------------

def walk(root: Path, stack: dict, n: int) -> int:
    count = 0
    for _, dirs, files in os.walk(root):
        count += len(dirs) + len(files)
    return count


def tar_all(root: Path, stack: dict, n: int) -> None:
    # Through a pipe: GNU tar writing to /dev/null itself skips reading the file contents.
    subprocess.run(f"tar -C {root} -cf - usr | cat > /dev/null", shell=True, check=True)


def small_reads(root: Path, stack: dict, n: int) -> None:
    for rel in stack["reads"]:
        fd = os.open(root / rel, os.O_RDONLY)
        while os.read(fd, 65536):
            pass
        os.close(fd)


def create_files(root: Path, stack: dict, n: int) -> None:
    d = root / f"new{n}"
    os.mkdir(d)
    data = b"x" * 100
    for i in range(CREATES):
        fd = os.open(d / f"n{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)


def copy_up(root: Path, stack: dict, n: int) -> None:
    fd = os.open(root / "big" / "copyup", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"!")
    os.close(fd)


_IMPORT_S = [0.0]   # the total of the children's `import app` times: import_clock's reading


def import_clock() -> float:
    """py-import's benchmark timer: pedantic's end - start around one call is that call's `import app` as
    the child timed it, without the interpreter's own start-up (which reads nothing from the mount)."""
    return _IMPORT_S[0]


def py_import(root: Path, stack: dict, n: int) -> None:
    # -I: no environment, no user site; -B: never write .pyc into the mount (the tree ships them).
    code = (f"import sys, time; sys.path.insert(0, {str(root / 'py')!r}); t = time.perf_counter(); import app; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-I", "-B", "-c", code], check=True, capture_output=True, text=True)
    _IMPORT_S[0] += float(out.stdout)


def seq_read(root: Path, stack: dict, n: int) -> None:
    buf = bytearray(CHUNK)
    total = 0
    with open(root / "big" / "seq", "rb", buffering=0) as f:
        while k := f.readinto(buf):
            total += k
    assert total == SEQ_MB * CHUNK


WORKLOADS = {
    "walk": (walk, "metadata walk (os.walk, ~20k entries)"),
    "tar": (tar_all, "read everything (tar -cf - usr | cat)"),
    "small-reads": (small_reads, f"{READS} small-file reads"),
    "py-import": (py_import, f"`import app` of {PY_PACKAGES * (PY_MODULES + 1) + 1} modules (timed in the child)"),
    "create": (create_files, f"create {CREATES} files"),
    "copy-up": (copy_up, f"copy-up of a {COPYUP_MB} MB lower file (append 1 byte)"),
    "copy-up-rm": (copy_up, f"copy-up of a {COPYUP_MB} MB lower file, mounted as for `run --rm`"),
    "seq-read": (seq_read, f"{SEQ_MB} MB sequential read"),
}
COLD_ONLY = {"copy-up", "copy-up-rm"}   # a file is copied up once per mount: there is no warm copy-up
# Mounted as `corert run --rm` mounts (StorageDriver.volatile): kernel overlayfs with `volatile`, corert's
# daemon without the copy-up fsync. fuse-overlayfs never fsyncs a copy-up, so this is the like-for-like row.
VOLATILE = {"copy-up-rm"}


ENTRIES: dict[str, int] = {}   # backend -> entries its walk saw: all three must see the same tree
CASES = [pytest.param(w, c, id=f"{w}-{c}", marks=pytest.mark.benchmark(timer=import_clock) if w == "py-import" else ())
         for w in WORKLOADS for c in ("cold", "warm") if not (c == "warm" and w in COLD_ONLY)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workload,cache", CASES)
def test_fuse(benchmark, mounts: Mounts, layer_stack: dict, workload: str, cache: str, backend: str) -> None:
    fn, what = WORKLOADS[workload]
    benchmark.group = "fuse-overlay"
    benchmark.extra_info.update(label=f"{what}, {cache} ({backend})", runtime=backend, workload=workload,
                                cache=cache, what=what)
    state = {"round": 0, "mount": None}

    def fresh():   # untimed: the previous round's mount goes, a new one comes
        if state["mount"] is not None:
            mounts.close(state["mount"])
        os.sync()   # what earlier rounds and backends left dirty is written back before this one is timed
        state["mount"] = mounts.open(backend, workload in VOLATILE)
        return (state["mount"].rootfs, layer_stack, next_round()), {}

    def next_round() -> int:
        state["round"] += 1
        return state["round"]

    if cache == "cold":
        benchmark.pedantic(fn, setup=fresh, rounds=ROUNDS, iterations=1)
    else:
        m = mounts.open(backend, workload in VOLATILE)
        fn(m.rootfs, layer_stack, 0)   # untimed warm-up on the same mount
        os.sync()
        benchmark.pedantic(lambda: fn(m.rootfs, layer_stack, next_round()), rounds=ROUNDS, iterations=1)
        state["mount"] = m
    m = state["mount"]
    if workload == "walk":
        entries = benchmark.extra_info["entries"] = walk(m.rootfs, layer_stack, 0)
        ENTRIES[backend] = entries
        assert len(set(ENTRIES.values())) == 1, f"the backends disagree about the tree: {ENTRIES}"
    if workload == "tar":   # the daemon's memory right after reading everything
        benchmark.extra_info["pss_kb"] = m.pss_kb()
    benchmark.extra_info["loadavg"] = os.getloadavg()[0]
