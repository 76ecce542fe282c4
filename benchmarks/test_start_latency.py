"""Container start latency: the same busybox bundle (/bin/true) through corert, runc, crun and the C floor.

Every round is one cold CLI process (or three, for create/start/delete), as an engine would spawn it,
with the same container id each round and an untimed pause before it (bundles.settle: the same cgroup
placement cost for every runtime). The numbers land in the pytest-benchmark JSON; benchmarks/report.py
turns them into the table, the ratios and the chart.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from bundles import CORERT, ROUNDS, RUNC, UNSHARE_NOOP, crun_argv, interleaved, settle

ID = "corert-bench"
OCI_RUNTIMES = ["corert", "runc", "crun"]
STORAGE_DRIVERS = ["overlay", "vfs", "fuse"]

Cli = Callable[..., list[str]]


def _note(benchmark, label: str, runtime: str) -> None:
    """What report.py reads: a label for the table/chart, the runtime, and how loaded the machine was."""
    benchmark.extra_info.update(label=label, runtime=runtime, loadavg=os.getloadavg()[0])


@pytest.fixture
def oci(request, tmp_path, runner) -> Cli:
    """argv builder for one OCI runtime with a private --root; force-deletes ID afterwards."""
    state = str(tmp_path / f"{request.param}-state")
    if request.param == "corert":
        cli: Cli = lambda *a: [CORERT, "--root", state, *a]    # noqa: E731
    elif request.param == "runc":
        cli = lambda *a: [RUNC, "--root", state, *a]           # noqa: E731
    else:
        cli = lambda *a: crun_argv("--root", state, *a)        # noqa: E731
    cli.name = request.param  # type: ignore[attr-defined]
    yield cli
    try:
        runner(cli("delete", "--force", ID))
    except RuntimeError:
        pass   # nothing left to delete: the normal case


@pytest.mark.benchmark(group="run")
@pytest.mark.parametrize("oci", OCI_RUNTIMES, indirect=True)
def test_run(benchmark, oci, bench_bundle: Path, runner) -> None:
    """`X run --bundle B ID`: create + start + wait + delete in one foreground call."""
    _note(benchmark, f"{oci.name} run", oci.name)
    benchmark.pedantic(runner, args=(oci("run", "--bundle", str(bench_bundle), ID),),
                       setup=settle, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="run-interleaved")
def test_run_interleaved(benchmark, floor_binary: Path, bench_bundle: Path, runner, tmp_path) -> None:
    """The same `X run` as test_run, plus the crun wrapper and the C floor (as test_floor runs it), taking
    turns round by round (bundles.interleaved): the ratios the verdicts in benchmarks/README.md use, every
    one from medians of this one run."""
    _note(benchmark, "corert, runc, crun run, the crun wrapper and the C floor, interleaved (one round: all five)",
          "mix")
    argv = {"corert": [CORERT, "--root", str(tmp_path / "corert"), "run", "--bundle", str(bench_bundle), ID],
            "runc": [RUNC, "--root", str(tmp_path / "runc"), "run", "--bundle", str(bench_bundle), ID],
            "crun": crun_argv("--root", str(tmp_path / "crun"), "run", "--bundle", str(bench_bundle), ID),
            "wrapper": UNSHARE_NOOP,
            "floor": [str(floor_binary), str(bench_bundle / "rootfs")]}
    interleaved(benchmark, {name: (lambda a=a: runner(a)) for name, a in argv.items()})


@pytest.mark.benchmark(group="run")
def test_unshare_wrapper(benchmark, runner) -> None:
    """crun's `unshare -m sh -c 'umount ...'` wrapper alone: subtracted from crun's time by report.py."""
    _note(benchmark, "unshare+umount (crun wrapper)", "wrapper")
    benchmark.pedantic(runner, args=(UNSHARE_NOOP,), setup=settle, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="run")
def test_floor(benchmark, floor_binary: Path, bench_bundle: Path, runner) -> None:
    """The C floor: clone(5 namespaces) + proc + pivot_root + exec /bin/true + wait."""
    _note(benchmark, "kernel floor (C)", "floor")
    benchmark.pedantic(runner, args=([str(floor_binary), str(bench_bundle / "rootfs")],),
                       setup=settle, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="create-start-delete")
@pytest.mark.parametrize("oci", OCI_RUNTIMES, indirect=True)
def test_create_start_delete(benchmark, oci, bench_bundle: Path, runner) -> None:
    """Three CLI calls, as engines drive a runtime. delete --force: /bin/true has usually exited by then,
    and an engine would have waited for that exit before deleting."""
    _note(benchmark, f"{oci.name} create+start+delete", oci.name)
    create = oci("create", "--bundle", str(bench_bundle), ID)
    start = oci("start", ID)
    delete = oci("delete", "--force", ID)

    def cycle() -> None:
        runner(create)
        runner(start)
        runner(delete)

    benchmark.pedantic(cycle, setup=settle, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="create-start-delete")
def test_create_start_delete_wrapper(benchmark, runner) -> None:
    """crun's wrapper once per CLI call of a cycle (3 calls), measured in this group for report.py's crun net."""
    _note(benchmark, "3x unshare+umount (crun wrapper, once per CLI call)", "wrapper")

    def cycle() -> None:
        for _ in range(3):
            runner(UNSHARE_NOOP)

    benchmark.pedantic(cycle, setup=settle, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="front-door")
@pytest.mark.parametrize("driver", STORAGE_DRIVERS)
def test_front_door(benchmark, driver: str, tmp_path, runner) -> None:
    """`corert run --rm --storage D busybox true`: image -> storage rootfs -> config -> run -> teardown."""
    _note(benchmark, f"corert run --rm busybox ({driver})", "corert")
    argv = [CORERT, "--root", str(tmp_path / "state"), "run", "--rm", "--storage", driver, "busybox", "true"]
    benchmark.pedantic(runner, args=(argv,), setup=settle, rounds=ROUNDS, warmup_rounds=2)
