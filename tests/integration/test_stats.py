"""`corert stats` and Container.stats() on the real kernel: docker's numbers (CPU % of a busy loop, memory
limit, pids) and per-container PSI, which on this hybrid host comes from the container's own cgroup in the
controller-less cgroup2 hierarchy (created, joined and removed with its v1 cgroups).

Every wait polls up to WAIT seconds for a state and never asserts on time; the autouse leak check covers
cgroups (the unified one included), mounts and processes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support import Front, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")

WAIT = 60.0
LOOPS = (os.cpu_count() or 1) + 1
# More busy loops than CPUs: one of them is always runnable but waiting, so the container's cpu "some"
# pressure is non-zero even on an otherwise idle host.
BUSY = f"for i in $(seq {LOOPS}); do (while :; do :; done) & done; wait"
UNIFIED = Path("/sys/fs/cgroup/unified")


class StatsFront(Front):
    def stats(self, *args: str) -> dict[str, dict]:
        """One `stats --no-stream --format json` frame: name -> row."""
        rows = [json.loads(line) for line in self.ok("stats", "--no-stream", "--format", "json", *args).splitlines()]
        return {row["name"]: row for row in rows}

    def until(self, what: str, predicate, *names: str) -> dict[str, dict]:
        """The first frame predicate accepts, polled gently: each is a `corert stats` process, which must not
        load what it measures."""
        return wait_for(lambda: self.stats(*names), what, until=predicate, timeout=WAIT, interval=0.5)


@pytest.fixture
def front(tmp_path):
    f = StatsFront(tmp_path, storage_from_env=True)
    yield f
    f.cleanup()


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))


def _some10(row: dict, resource: str = "cpu") -> float:
    return row["pressure"][resource]["some"]["avg10"]


def test_busy_container_cpu_percent_and_its_own_pressure(front):
    burn = front.ok("run", "-d", "--name", "burn", "busybox", "sh", "-c", BUSY).strip()
    front.ok("run", "-d", "--name", "idle", "busybox", "sleep", "1000")
    # PSI avg10 is a 10 s running average: wait until the busy loop's stalls show up in it.
    frame = front.until("cpu pressure of the busy container", lambda f: _some10(f["burn"]) > 1.0, "burn", "idle")
    burn_row, idle_row = frame["burn"], frame["idle"]
    # Each busy loop alone would be ~100%; the cores are shared with the host, so only a generous bound.
    assert burn_row["cpu_percent"] > 20.0, burn_row["cpu_percent"]
    assert idle_row["cpu_percent"] < burn_row["cpu_percent"]
    assert burn_row["pids_current"] == LOOPS + 1
    # The pressure is the container's own, not the host's: a sleeping container (hardly) waits for a CPU.
    assert _some10(idle_row) < _some10(burn_row)
    assert idle_row["pressure"]["cpu"]["some"]["total"] * 10 < burn_row["pressure"]["cpu"]["some"]["total"]
    assert set(burn_row["pressure"]) == {"cpu", "memory", "io"}
    assert set(burn_row["host_pressure"]) == {"cpu", "memory", "io"}
    # ... and it is read from the container's cgroup in the unified hierarchy, which its init joined.
    pid = json.loads(front.ok("state", burn))["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        unified_path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    assert unified_path.endswith(f"/corert-{burn}")
    assert str(pid) in (UNIFIED / unified_path.lstrip("/") / "cgroup.procs").read_text().split()
    # The runc `events --stats` keys stay.
    assert burn_row["cpu"]["usage"]["total"] > 0 and burn_row["pids"]["current"] == LOOPS + 1

    front.ok("rm", "-f", "burn", "idle")
    assert not (UNIFIED / unified_path.lstrip("/")).exists()


def test_memory_limit_host_memory_and_pids(front):
    front.ok("run", "-d", "--name", "capped", "-m", "64m", "busybox", "sleep", "1000")
    front.ok("run", "-d", "--name", "forks", "busybox", "sh", "-c", "sleep 1000 & sleep 1000 & wait")
    frame = front.until("the two sleeps of the forking container", lambda f: f["forks"]["pids_current"] == 3)
    capped, forks = frame["capped"], frame["forks"]
    assert capped["mem_limit"] == 64 << 20
    assert capped["memory"]["usage"]["limit"] == 64 << 20
    assert 0 < capped["mem_usage"] <= 64 << 20
    assert capped["mem_percent"] == pytest.approx(capped["mem_usage"] / (64 << 20) * 100)
    assert forks["mem_limit"] == _host_memory()            # unlimited: docker shows the host's memory
    assert capped["pids_current"] == 1
    # --net none: only lo, which is not counted
    assert (capped["net_rx_bytes"], capped["net_tx_bytes"]) == (0, 0)

    table = front.ok("stats", "--no-stream", "capped").splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%",
                                "NET", "I/O", "BLOCK", "I/O", "PIDS"]
    assert "/ 64MiB" in table[1] and table[1].split()[1] == "capped" and table[1].split()[-1] == "1"
    psi_header = next(i for i, line in enumerate(table) if line.startswith("PSI"))
    assert [line.split()[0] for line in table[psi_header + 1:]] == ["capped", "(host)"]
    assert len(table[psi_header + 1].split()) == 7     # name + cpu/mem/io x some/full


def test_stopped_container_shows_zeros_and_unknown_name_fails(front):
    front.ok("run", "--name", "done", "busybox", "true")            # no --rm: it stays, stopped
    front.ok("run", "-d", "--name", "up", "busybox", "sleep", "1000")
    assert set(front.stats()) == {"up"}                              # default: running containers only
    frame = front.stats("-a")
    assert set(frame) == {"up", "done"}
    done = frame["done"]
    assert done["status"] == "stopped"
    assert (done["cpu_percent"], done["mem_usage"], done["mem_limit"], done["pids_current"]) == (0.0, 0, 0, 0)
    assert done["pressure"] == {}
    assert front.stats("done")["done"]["status"] == "stopped"       # by name, as docker shows it

    r = front("stats", "--no-stream", "up", "nosuch")
    assert r.returncode == 125 and r.stdout == ""
    assert "nosuch" in r.stderr and "does not exist" in r.stderr
    r = front("stats", "--format", "yaml")
    assert r.returncode == 125 and "invalid choice" in r.stderr


def test_api_stats_keeps_runc_keys_and_adds_pressure(tmp_path):
    import trio

    from corert.api import Runtime

    async def main():
        async with Runtime(root=tmp_path / "state", data_root=tmp_path / "data") as rt:
            async with rt.container("busybox", ["sh", "-c", BUSY], memory="32M") as c:
                await c.start()
                first = await c.stats()       # CPU % since the start
                deadline = trio.current_time() + WAIT
                while True:
                    await trio.sleep(0.5)
                    later = await c.stats()   # CPU % since the previous call
                    if later["pressure"]["cpu"]["some"]["avg10"] > 0 or trio.current_time() > deadline:
                        return first, later

    (tmp_path / "state").mkdir(mode=0o700)
    first, later = trio.run(main)
    for s in (first, later):
        assert {"cpu", "memory", "pids", "blkio", "hugetlb", "pressure", "host_pressure"} <= set(s)
        assert s["memory"]["usage"]["limit"] == s["mem_limit"] == 32 << 20
        assert s["cpu_percent"] > 0.0
    # The first figure spans the init's whole life (also before start); the later ones only the busy loop.
    assert later["cpu_percent"] > 20.0 and later["pids_current"] == LOOPS + 1
    assert later["pressure"]["cpu"]["some"]["avg10"] > 0
    assert later["cpu"]["usage"]["total"] > first["cpu"]["usage"]["total"]
