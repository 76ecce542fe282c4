"""Image import/unpack throughput: one generated layer through corert's ImageStore vs `tar -x` of the same tar.

The layer is a plain rootfs tarball (what `corert image import` takes): LAYER_FILES regular files in
LAYER_DIRS directories, LAYER_MB of incompressible content in total, built once per session. corert's
number covers what an import does: copy the tar into the blob store while hashing it, unpack it safely
(fd-relative, O_NOFOLLOW, whiteout conversion) while hashing again for the diff id, record it in SQLite.
`tar -x` only extracts. Each round starts from an empty store / an empty directory; the removal is not
timed. Both run on the disk (ext4 here, where the store lives: file creation dominates) and on tmpfs
(where what is left is CPU: corert's Python per-entry work vs tar's C). report.py turns medians into MB/s.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

LAYER_FILES = 5000
LAYER_DIRS = 50
LAYER_MB = 50
IMPORT_ROUNDS = int(os.environ.get("BENCH_IMPORT_ROUNDS", "5"))


@pytest.fixture(scope="session")
def layer_tar(bench_dir: Path) -> tuple[Path, int]:
    """(path of the layer tar, bytes of file content); deterministic content from a fixed seed."""
    rng = random.Random(0)
    mean = LAYER_MB * 1024 * 1024 // LAYER_FILES
    path = bench_dir / "layer.tar"
    total = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(LAYER_DIRS):
            info = tarfile.TarInfo(f"usr/share/d{d:03d}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
            tf.addfile(info)
        for i in range(LAYER_FILES):
            size = rng.randint(0, 2 * mean)
            info = tarfile.TarInfo(f"usr/share/d{i % LAYER_DIRS:03d}/f{i:05d}")
            info.size, info.mode, info.mtime = size, 0o644, 1_600_000_000
            data = rng.randbytes(size)
            tf.addfile(info, _Reader(data))
            total += size
    return path, total


class _Reader:
    """tarfile.addfile wants a file object; a minimal one avoids copying into BytesIO."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


@pytest.fixture(params=["disk", "tmpfs"])
def work_dir(request, tmp_path: Path) -> Path:
    """Where the store / the extraction goes: the test's tmp dir on disk, or a dir on /dev/shm."""
    if request.param == "disk":
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="corert-bench-", dir="/dev/shm"))
    yield path
    _remove(path)


def _note(benchmark, label: str, runtime: str, layer: tuple[Path, int], where: Path) -> None:
    fs = "tmpfs" if str(where).startswith("/dev/shm") else "disk"
    benchmark.extra_info.update(label=f"{label} ({fs})", runtime=runtime, fs=fs, loadavg=os.getloadavg()[0],
                                content_bytes=layer[1], tar_bytes=layer[0].stat().st_size,
                                files=LAYER_FILES)


@pytest.mark.benchmark(group="image-import")
def test_import_corert(benchmark, layer_tar, work_dir: Path) -> None:
    """ImageStore.import_path of the rootfs tar into an empty store."""
    from corert.images import ImageStore

    _note(benchmark, "corert ImageStore.import_path", "corert", layer_tar, work_dir)
    rounds = iter(range(10**6))
    stores: list = []

    def setup():
        store = ImageStore(work_dir / f"store{next(rounds)}", rootless=False)
        stores.append(store)
        return (layer_tar[0],), {"name": "bench:latest"}

    def teardown(*_args, **_kwargs) -> None:
        store = stores.pop()
        store.close()
        _remove(store.root)

    benchmark.pedantic(lambda path, name: stores[-1].import_path(path, name=name), setup=setup,
                       teardown=teardown, rounds=IMPORT_ROUNDS, warmup_rounds=1)


@pytest.mark.benchmark(group="image-import")
def test_import_tar_x(benchmark, layer_tar, work_dir: Path, runner) -> None:
    """GNU tar -x of the same tar into an empty directory: the baseline."""
    _note(benchmark, "tar -x", "tar", layer_tar, work_dir)
    dest = work_dir / "out"

    def setup():
        dest.mkdir()
        return (["tar", "-x", "-f", str(layer_tar[0]), "-C", str(dest)],), {}

    benchmark.pedantic(runner, setup=setup, teardown=lambda *a, **k: _remove(dest),
                       rounds=IMPORT_ROUNDS, warmup_rounds=1)


def _remove(path: Path) -> None:
    # Layer dirs are made read-only by the store; chmod back so the tree can be removed.
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
    shutil.rmtree(path)
