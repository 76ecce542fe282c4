"""Engines starting one container with corert vs runc as the OCI runtime, in the same run.

`podman run --rm IMAGE true` (conmon -> create, podman -> start, cleanup -> delete --force: three runtime
calls) and `ctr run --rm IMAGE ID true` (the runc shim -> create, start, delete, delete --force: four).
Same engine instance, same image, same private storage for both runtimes; only `--runtime` /
`--runc-binary` differs. The setup (podman, containerd, image import) is tests/engines/enginekit.py's.
Rounds: BENCH_ENGINE_ROUNDS (15); the untimed pause between rounds is bundles.settle's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from bundles import CORERT, interleaved
from engines.enginekit import RUNTIMES, Containerd, Podman, mounts_under, remove_cgroup_tree

ROUNDS = int(os.environ.get("BENCH_ENGINE_ROUNDS", "15"))
ENGINE_RUNTIMES = sorted(RUNTIMES)   # corert, runc


def _call(argv: list[str], env: dict) -> None:
    with tempfile.TemporaryFile() as err:
        rc = subprocess.call(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        if rc != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv)} exited {rc}: {err.read().decode(errors='replace')}")


def _note(benchmark, engine: str, runtime: str) -> None:
    benchmark.extra_info.update(label=f"{engine} run --rm true ({engine}: {runtime})", runtime=runtime,
                                loadavg=os.getloadavg()[0])


@pytest.fixture(scope="module")
def image_tar(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine-image") / "busybox.tar"
    subprocess.run([CORERT, "image", "export", "busybox", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def podmen(tmp_path_factory, image_tar):
    """One private podman per runtime (the runtime is a global flag), the image loaded into each."""
    if not shutil.which("podman"):
        pytest.skip("podman not installed")
    made = {}
    try:
        for name in ENGINE_RUNTIMES:
            p = Podman(tmp_path_factory.mktemp(f"pm-{name}"), RUNTIMES[name])   # short: podman caps the runroot at 50
            made[name] = p
            p("load", "-i", str(image_tar))
        yield made
    finally:
        for p in made.values():
            p("rm", "--all", "--force", "--time", "0", check=False)
            p("system", "reset", "--force", check=False)
            for m in sorted(mounts_under(str(p.base)), key=len, reverse=True):
                subprocess.run(["umount", "-l", m], capture_output=True)
            remove_cgroup_tree(p.cgroup_parent)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, image_tar):
    if not shutil.which("containerd"):
        pytest.skip("containerd not installed")
    base = tmp_path_factory.mktemp("bench-containerd")
    daemon = Containerd(base)
    try:
        daemon("images", "import", str(image_tar))
        daemon.image = daemon("images", "ls", "--quiet").stdout.split()[0]
        yield daemon
    finally:
        daemon.remove_all()
        daemon.stop()
        for m in sorted(mounts_under(str(base)), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        remove_cgroup_tree(daemon.cgroup_parent)


# Each engine test runs both runtimes, taking turns round by round (bundles.interleaved): the engines'
# own times move with the machine by more than the difference being measured.
@pytest.mark.benchmark(group="engine-podman")
def test_podman_run_rm(benchmark, podmen) -> None:
    _note(benchmark, "podman", "mix")
    calls = {}
    for runtime in ENGINE_RUNTIMES:
        p = podmen[runtime]
        calls[runtime] = (lambda argv=p.argv("run", "--rm", "localhost/busybox:latest", "true"), env=p.env:
                          _call(argv, env))
    interleaved(benchmark, calls, rounds=ROUNDS)


@pytest.mark.benchmark(group="engine-ctr")
def test_ctr_run_rm(benchmark, containerd) -> None:
    _note(benchmark, "ctr", "mix")
    calls = {}
    for runtime in ENGINE_RUNTIMES:
        argv = containerd.argv("run", "--rm", "--runc-binary", RUNTIMES[runtime],
                               "--runc-root", str(containerd.base / f"runc-root-{runtime}"),
                               "--cgroup", f"{containerd.cgroup_parent}/bench-{runtime}",
                               containerd.image, f"bench-{runtime}", "true")
        calls[runtime] = lambda argv=argv: _call(argv, containerd.env())
    interleaved(benchmark, calls, rounds=ROUNDS)
