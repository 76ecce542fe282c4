"""Pull of a ~100 MB image from a loopback registry: `corert pull` vs `podman pull --tls-verify=false`.

Setup (not timed): Debian's docker-registry on 127.0.0.1 with a private storage dir; an image of LAYERS
gzip layers, LAYER_MB of incompressible file content each (PULL_FILES files per layer), imported into a
seed corert store and pushed with `corert push`. One round is one cold CLI process pulling the image into
an empty store: corert into a fresh CORERT_DATA_ROOT, podman into a fresh private graphroot (overlay
driver, as root). Both download, verify, decompress and unpack every layer; removing the store between
rounds is not timed. Both run the same session, on the same registry, against the same bytes.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # the registry fixture's home
from integration.test_registry import REGISTRY_BIN, Registry  # noqa: E402

LAYERS = 4
LAYER_MB = 25
PULL_FILES = 400
PULL_ROUNDS = int(os.environ.get("BENCH_PULL_ROUNDS", "5"))
CORERT = str(Path(sys.executable).parent / "corert")
REF_PATH = "bench/pull:1"


def _layer(rng: random.Random, index: int) -> bytes:
    mean = LAYER_MB * 1024 * 1024 // PULL_FILES
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(f"data{index}")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
        tf.addfile(info)
        for i in range(PULL_FILES):
            data = rng.randbytes(rng.randint(0, 2 * mean))
            info = tarfile.TarInfo(f"data{index}/f{i:04d}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _write_layout(dest: Path) -> int:
    """An OCI layout of the bench image (LAYERS data layers, gzip level 1); returns the layer blob bytes."""
    rng = random.Random(0)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tars = [_layer(rng, i) for i in range(LAYERS)]
    descs, total = [], 0
    for t in tars:
        blob = gzip.compress(t, compresslevel=1, mtime=0)
        h = hashlib.sha256(blob).hexdigest()
        (blobs / h).write_bytes(blob)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{h}",
                      "size": len(blob)})
        total += len(blob)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]}}).encode()
    ch = hashlib.sha256(config).hexdigest()
    (blobs / ch).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": f"sha256:{ch}", "size": len(config)},
                           "layers": descs}).encode()
    mh = hashlib.sha256(manifest).hexdigest()
    (blobs / mh).write_bytes(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{mh}",
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    return total


@pytest.fixture(scope="module")
def pull_registry(bench_dir: Path):
    """(reference of the bench image on a running loopback registry, its compressed bytes)."""
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed")
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
    if not shutil.which("podman"):
        pytest.skip("podman not installed")
    ref, size = pull_registry
    _note(benchmark, f"podman pull ({size / 1e6:.0f} MB, {LAYERS} layers)", "podman", size)
    graph, run = tmp_path / "graph", tmp_path / "r"
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\nrunroot = "{run}"\ngraphroot = "{graph}"\n')
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "CONTAINERS_STORAGE_CONF": str(conf)}

    def pull() -> None:
        subprocess.run(["podman", "pull", "-q", "--tls-verify=false", ref], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def reset(*_a, **_k) -> None:
        subprocess.run(["podman", "system", "reset", "-f"], env=env, check=False, capture_output=True)
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
