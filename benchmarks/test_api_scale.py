"""The embedding API at scale: many containers from one trio process, no CLI spawn per container.

- api-scale: 100 containers (/bin/true on the benchmark bundle) started concurrently from one Runtime, vs a
  loop of 100 `runc run` and of 100 `crun run` over the same bundle; also 100 image containers (busybox,
  overlay rootfs each). extra_info: containers_per_s (from the median round).
- api-latency: one container after another through the API (create+start+wait+delete of /bin/true),
  next to `crun run` and the C floor on the same bundle.
- api-memory: growth of the embedding process's RSS per running container (50 running `sleep`).
Nothing here asserts a time.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import trio

from bundles import REPO, ROUNDS, RUNC, crun_argv, settle

# `python -m pytest` (benchmarks/run) puts the repo first on sys.path, where corert has no compiled fast
# path; the API creates containers in this very process, so it must import the installed package.
if "corert" not in sys.modules:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
from corert.api import Runtime  # noqa: E402

N = int(os.environ.get("BENCH_API_CONTAINERS", "100"))
SCALE_ROUNDS = int(os.environ.get("BENCH_API_ROUNDS", "3"))
RUNNING = int(os.environ.get("BENCH_API_RUNNING", "50"))


def _note(benchmark, label: str, runtime: str, **extra: Any) -> None:
    benchmark.extra_info.update(label=label, runtime=runtime, loadavg=os.getloadavg()[0], **extra)


def _rate(benchmark, n: int) -> None:
    """containers/s from the median round (pytest-benchmark fills stats after the run)."""
    median = benchmark.stats.stats.median
    benchmark.extra_info["containers_per_s"] = round(n / median, 1)
    benchmark.extra_info["containers"] = n


class TrioHost:
    """One Runtime living in a trio loop on a thread; the benchmark calls into it with run(fn)."""

    def __init__(self, **runtime_args: Any) -> None:
        self._args = runtime_args
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.rt: Runtime | None = None

    async def _main(self) -> None:
        async with Runtime(**self._args) as rt:
            self.rt = rt
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> TrioHost:
        self._thread.start()
        self._ready.wait(60)
        return self

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def __exit__(self, *exc: object) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(60)


@pytest.fixture
def host(tmp_path):
    with TrioHost(root=tmp_path / "api-state", data_root=tmp_path / "api-data") as h:
        yield h


async def _many_from_bundle(rt: Runtime, bundle: Path, n: int) -> None:
    failures = []

    async def one(i: int) -> None:
        async with rt.create_from_bundle(f"api-{i}", bundle, stdout="null", stderr="null") as c:
            await c.start()
            status = await c.wait()
            if status.exit_code != 0:
                failures.append((i, status))
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    assert not failures, failures


async def _many_from_image(rt: Runtime, n: int) -> None:
    results = []

    async def one() -> None:
        results.append(await rt.run("busybox", ["true"]))
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    assert [r.exit_code for r in results] == [0] * n


@pytest.mark.benchmark(group="api-scale")
def test_api_concurrent_bundle(benchmark, host, bench_bundle: Path) -> None:
    """100 bundle containers at once from one Runtime: create+start+wait+delete each."""
    _note(benchmark, f"API: {N} concurrent (bundle)", "corert-api")
    benchmark.pedantic(host.run, args=(_many_from_bundle, host.rt, bench_bundle, N), rounds=SCALE_ROUNDS,
                       warmup_rounds=1)
    _rate(benchmark, N)


@pytest.mark.benchmark(group="api-scale")
def test_api_concurrent_image(benchmark, host) -> None:
    """100 busybox containers at once, each with its own overlay rootfs (rt.run)."""
    host.run(host.rt.images.get, "busybox")
    _note(benchmark, f"API: {N} concurrent (busybox, overlay)", "corert-api")
    benchmark.pedantic(host.run, args=(_many_from_image, host.rt, N), rounds=SCALE_ROUNDS, warmup_rounds=1)
    _rate(benchmark, N)


@pytest.mark.benchmark(group="api-scale")
@pytest.mark.parametrize("peer", ["runc", "crun"])
def test_cli_run_loop(benchmark, peer: str, tmp_path, bench_bundle: Path, runner) -> None:
    """The same 100 containers as a loop of `X run` (one CLI process each, one after another)."""
    state = str(tmp_path / f"{peer}-state")

    def argv(i: int) -> list[str]:
        args = ("--root", state, "run", "--bundle", str(bench_bundle), f"loop-{i}")
        return [RUNC, *args] if peer == "runc" else crun_argv(*args)
    commands = [argv(i) for i in range(N)]

    def loop() -> None:
        for cmd in commands:
            runner(cmd)
    _note(benchmark, f"{peer} run loop x{N}", peer)
    benchmark.pedantic(loop, rounds=SCALE_ROUNDS, warmup_rounds=0)
    _rate(benchmark, N)


async def _one_cycle(rt: Runtime, bundle: Path) -> None:
    async with rt.create_from_bundle("api-latency", bundle, stdout="null", stderr="null") as c:
        await c.start()
        status = await c.wait()
    assert status.exit_code == 0


@pytest.mark.benchmark(group="api-latency")
def test_api_latency(benchmark, host, bench_bundle: Path) -> None:
    """One container through the API: create + start + wait + delete of /bin/true."""
    _note(benchmark, "API create+start+wait+delete", "corert-api")
    benchmark.pedantic(host.run, args=(_one_cycle, host.rt, bench_bundle), setup=settle, rounds=ROUNDS,
                       warmup_rounds=2)


@pytest.mark.benchmark(group="api-latency")
def test_crun_run_latency(benchmark, tmp_path, bench_bundle: Path, runner) -> None:
    _note(benchmark, "crun run", "crun")
    argv = crun_argv("--root", str(tmp_path / "crun-state"), "run", "--bundle", str(bench_bundle), "lat")
    benchmark.pedantic(runner, args=(argv,), setup=settle, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="api-latency")
def test_floor_latency(benchmark, floor_binary: Path, bench_bundle: Path, runner) -> None:
    _note(benchmark, "kernel floor (C)", "floor")
    benchmark.pedantic(runner, args=([str(floor_binary), str(bench_bundle / "rootfs")],), setup=settle,
                       rounds=ROUNDS, warmup_rounds=2)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _hold_running(rt: Runtime, bundle: Path, n: int, measure: Callable[[], None]) -> None:
    """n containers running `sleep` at once; `measure` runs while all of them are alive."""
    started = 0
    all_started = trio.Event()

    async def one(i: int) -> None:
        nonlocal started
        async with rt.create_from_bundle(f"mem-{i}", bundle, stdout="null", stderr="null") as c:
            await c.start()
            started += 1
            if started == n:
                all_started.set()
            await trio.sleep_forever()
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
        await all_started.wait()
        measure()
        nursery.cancel_scope.cancel()    # structured teardown: every container killed and removed


@pytest.mark.benchmark(group="api-memory")
def test_api_memory_per_container(benchmark, host, bench_dir: Path, bench_bundle: Path) -> None:
    """RSS growth of the embedding process per running container (the API's own bookkeeping)."""
    import json
    import shutil

    bundle = bench_dir / "sleep-bundle"
    if not bundle.exists():
        bundle.mkdir()
        config = json.loads((bench_bundle / "config.json").read_text())
        config["process"]["args"] = ["sleep", "1000"]
        config["root"]["path"] = str(bench_bundle / "rootfs")
        (bundle / "config.json").write_text(json.dumps(config))
    # Warm up once (imports, thread pool, seccomp cache) so the delta is per container, not per process.
    host.run(_hold_running, host.rt, bundle, 5, lambda: None)
    samples: list[int] = []
    before = _rss_kib()
    benchmark.pedantic(host.run, args=(_hold_running, host.rt, bundle, RUNNING,
                                       lambda: samples.append(_rss_kib())), rounds=1, warmup_rounds=0)
    per = (samples[0] - before) / RUNNING
    _note(benchmark, f"API memory, {RUNNING} running", "corert-api", rss_before_kib=before,
          rss_running_kib=samples[0], kib_per_container=round(per, 1))
    shutil.rmtree(bundle)
