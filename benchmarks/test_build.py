"""`corert build`: a cold build (--no-cache, every step executed) and a fully cached rebuild of the same
Containerfile, through the installed CLI with a private image store.

The Containerfile has 10 steps: FROM busybox, ENV, WORKDIR, COPY of a FILES-file tree (MB MiB), three RUN
steps (each one a container: create, start, wait, commit of its upper dir, removal), USER, EXPOSE, CMD.
The cached rebuild reads the Containerfile, hashes the COPY's files (its cache key) and looks every step
up: what an unchanged `build` costs in a CI loop. Both are one CLI process per round.
"""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from bundles import CORERT, ROUNDS

FILES = 200
MB = 4
BUILD_ROUNDS = min(ROUNDS, int(os.environ.get("BENCH_BUILD_ROUNDS", "10")))
CONTAINERFILE = """\
FROM busybox
ENV APP=/srv/app
WORKDIR /srv/app
COPY src/ ./src/
RUN cat src/* | md5sum > /checksum
RUN mkdir -p /var/data && echo ready > /var/data/state
RUN ls -R /srv/app > /listing
USER nobody
EXPOSE 8080
CMD ["cat", "/checksum"]
"""


@pytest.fixture(scope="session")
def build_env(bench_dir: Path) -> dict:
    rng = random.Random(7)
    ctx = bench_dir / "build-ctx"
    (ctx / "src").mkdir(parents=True)
    for i in range(FILES):
        (ctx / "src" / f"f{i:04d}").write_bytes(rng.randbytes(MB * 1024 * 1024 // FILES))
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    env = {**os.environ, "CORERT_DATA_ROOT": str(bench_dir / "build-data")}
    env.pop("CORERT_STORAGE_DRIVER", None)
    state = bench_dir / "build-state"
    state.mkdir(mode=0o700)
    argv = [CORERT, "--root", str(state), "build", "-t", "bench:1"]
    _build(argv + [str(ctx)], env)   # the default image and a first cache, untimed
    return {"argv": argv, "ctx": str(ctx), "env": env}


def _build(argv: list[str], env: dict) -> None:
    r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise AssertionError(f"build failed: {r.stderr}")


def _note(benchmark, label: str) -> None:
    benchmark.extra_info.update(label=label, runtime="corert", loadavg=os.getloadavg()[0], files=FILES, mb=MB)


@pytest.mark.benchmark(group="build")
def test_build_cached_rebuild(benchmark, build_env):
    _note(benchmark, f"build, all 10 steps cached ({FILES} files / {MB} MiB COPY hashed)")
    benchmark.pedantic(_build, args=(build_env["argv"] + [build_env["ctx"]], build_env["env"]),
                       rounds=BUILD_ROUNDS, warmup_rounds=1)


@pytest.mark.benchmark(group="build")
def test_build_cold(benchmark, build_env):
    _note(benchmark, "build --no-cache, 10 steps (3 RUN containers, 1 COPY layer)")
    benchmark.pedantic(_build, args=(build_env["argv"] + ["--no-cache", build_env["ctx"]], build_env["env"]),
                       rounds=BUILD_ROUNDS, warmup_rounds=0)
