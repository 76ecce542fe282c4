"""Pull of a ~100 MB image from a loopback registry: `corert pull` vs `podman pull --tls-verify=false`.

Setup (not timed): Debian's docker-registry on 127.0.0.1 with a private storage dir; an image of LAYERS
gzip layers, LAYER_MB of incompressible file content each (PULL_FILES files per layer), imported into a
seed corert store and pushed with `corert push`. One round is one cold CLI process pulling the image into
an empty store: corert into a fresh CORERT_DATA_ROOT, podman into a fresh private graphroot (overlay
driver, as root). Both download, verify, decompress and unpack every layer; removing the store between
rounds is not timed. Both run the same session, on the same registry, against the same bytes.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # the registry fixture's home
from integration.test_registry import Registry  # noqa: E402
from support import image_config, installed, make_tar, write_oci_layout  # noqa: E402

LAYERS = 4
LAYER_MB = 25
PULL_FILES = 400
PULL_ROUNDS = int(os.environ.get("BENCH_PULL_ROUNDS", "5"))
CORERT = str(Path(sys.executable).parent / "corert")
REF_PATH = "bench/pull:1"


def _layer(rng: random.Random, index: int) -> bytes:
    mean = LAYER_MB * 1024 * 1024 // PULL_FILES
    files = [("file", f"data{index}/f{i:04d}", {"data": rng.randbytes(rng.randint(0, 2 * mean))})
             for i in range(PULL_FILES)]
    return make_tar([("dir", f"data{index}"), *files])


def _write_layout(dest: Path) -> int:
    """An OCI layout of the bench image (LAYERS data layers, gzip level 1); returns the layer blob bytes."""
    rng = random.Random(0)
    tars = [_layer(rng, i) for i in range(LAYERS)]
    write_oci_layout(dest, tars, config=image_config(tars, ("/bin/sh",), full=False), compresslevel=1, ref="1",
                     ref_key="org.opencontainers.image.ref.name")
    index = json.loads((dest / "index.json").read_text())
    manifest = json.loads((dest / "blobs" / index["manifests"][0]["digest"].replace(":", "/")).read_text())
    return sum(layer["size"] for layer in manifest["layers"])


@pytest.fixture(scope="module")
def pull_registry(bench_dir: Path):
    """(reference of the bench image on a running loopback registry, its compressed bytes). Without
    docker-registry, Registry.start fails: a skip would drop the rows from the report unnoticed."""
    base = bench_dir / "registry"
    base.mkdir()
    size = _write_layout(base / "layout")
    reg = Registry(base).start()
    try:
        env = {**os.environ, "CORERT_DATA_ROOT": str(base / "seed")}
        subprocess.run([CORERT, "image", "import", str(base / "layout"), "bench/pull:1"], env=env, check=True,
                       capture_output=True)
        subprocess.run([CORERT, "push", "-q", "bench/pull:1",
                        f"{reg.host}/{REF_PATH}"], env=env, check=True, capture_output=True)
        _remove(base / "seed")
        yield f"{reg.host}/{REF_PATH}", size
    finally:
        reg.stop()


def _note(benchmark, label: str, runtime: str, size: int) -> None:
    benchmark.extra_info.update(label=label, runtime=runtime, blob_bytes=size, layers=LAYERS,
                                loadavg=os.getloadavg()[0])


@pytest.mark.benchmark(group="registry-pull")
def test_pull_corert(benchmark, pull_registry, tmp_path: Path) -> None:
    ref, size = pull_registry
    _note(benchmark, f"corert pull ({size / 1e6:.0f} MB, {LAYERS} layers)", "corert", size)
    data = tmp_path / "store"
    env = {**os.environ, "CORERT_DATA_ROOT": str(data)}

    def pull() -> None:
        subprocess.run([CORERT, "pull", "-q", "--tls-verify=false", ref], env=env, check=True,
                       stdout=subprocess.DEVNULL)

    benchmark.pedantic(pull, teardown=lambda *a, **k: _remove(data), rounds=PULL_ROUNDS, warmup_rounds=1)


@pytest.mark.benchmark(group="registry-pull")
def test_pull_podman(benchmark, pull_registry, tmp_path: Path) -> None:
    podman = installed("podman")   # fails: a skip would drop podman's row from the report unnoticed
    ref, size = pull_registry
    _note(benchmark, f"podman pull ({size / 1e6:.0f} MB, {LAYERS} layers)", "podman", size)
    graph, run = tmp_path / "graph", tmp_path / "r"
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\nrunroot = "{run}"\ngraphroot = "{graph}"\n')
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "CONTAINERS_STORAGE_CONF": str(conf)}

    def pull() -> None:
        subprocess.run([podman, "pull", "-q", "--tls-verify=false", ref], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def reset(*_a, **_k) -> None:
        subprocess.run([podman, "system", "reset", "-f"], env=env, check=False, capture_output=True)
        _unmount_below(tmp_path)
        for path in (graph, run):
            if path.exists():
                _remove(path)

    benchmark.pedantic(pull, teardown=reset, rounds=PULL_ROUNDS, warmup_rounds=1)


def _unmount_below(path: Path) -> None:
    """containers/storage may leave its graphroot bind-mounted private: undo it, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(str(path) + "/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _remove(path: Path) -> None:
    if path.exists():
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
        shutil.rmtree(path)
