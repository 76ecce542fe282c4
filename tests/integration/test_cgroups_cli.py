"""cgroup limits through the CLI on this (hybrid, v1-controller) host: `corert --root R ...` with busybox
bundles, and the front door's `run --memory`. The same verbs run on pure v2 in tests/vm/.

Limits are checked where the kernel keeps them: the container init's own cgroups, found from
/proc/<pid>/cgroup. No assertion depends on wall-clock time.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from corert.drivers import cgroups
from cgroupkit import cgroup_dir, kv, read, wait_until
from support import proc_stat, read_config, status, write_config

MiB = 1 << 20
BUSY = ["sh", "-c", "while :; do :; done"]
# Busy loops share this host's two cores with other work: keep them to a fifth of a cpu.
GENTLE_CPU = {"quota": 20000, "period": 100000}

# Container ids (and so cgroup names) unique to this run: other suites may run at the same time.
SUFFIX = f"-{os.getpid()}"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or cgroups.detect().name != "v1",
                                reason="needs root on a host whose controllers are on cgroup v1")


def configure(bundle: Path, args: list[str], resources: dict) -> None:
    config = read_config(bundle)
    config["process"]["args"] = args
    config["linux"]["resources"] = resources
    write_config(bundle, config)


def start_detached(corert, bundle: Path, cid: str) -> int:
    corert("run", "-d", "--bundle", str(bundle), cid, check=True)
    return json.loads(corert("state", cid, check=True).stdout)["pid"]


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid (clock ticks)."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12])


def test_run_oom_killed_exits_137_and_says_so(corert, bundle) -> None:
    cid = "oom" + SUFFIX
    cid2 = "nooom" + SUFFIX
    # dd reads /dev/zero into a 64 MiB buffer it malloc'ed: it has to touch twice the limit.
    configure(bundle, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
              {"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    r = corert("run", "--bundle", str(bundle), cid)
    assert r.returncode == 137
    assert f"corert: container {cid} was OOM-killed" in r.stderr
    # Same code, no OOM: nothing is said.
    configure(bundle, ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=4M count=1 2>/dev/null; exit 137"],
              {"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    r = corert("run", "--bundle", str(bundle), cid2)
    assert (r.returncode, r.stderr) == (137, "")


def test_front_door_run_memory_oom_exits_137(corert, tmp_path) -> None:
    env = dict(os.environ, CORERT_DATA_ROOT=str(tmp_path / "data"))
    r = corert("run", "--rm", "--memory", "32m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=128M",
               "count=1", env=env, timeout=120)
    assert r.returncode == 137, r.stderr
    assert "OOM-killed" in r.stderr


def test_pids_limit_stops_a_fork_bomb(corert, bundle) -> None:
    cid = "bomb" + SUFFIX
    configure(bundle, ["sh", "-c", "bomb() { bomb | bomb & }; bomb; exec sleep 300"],
              {"pids": {"limit": 12}, "cpu": GENTLE_CPU})
    pid = start_detached(corert, bundle, cid)
    pids = cgroup_dir(pid, "pids")
    assert wait_until(lambda: kv(pids / "pids.events")["max"] > 0)   # forks were refused
    assert int(read(pids / "pids.current")) <= 12
    assert read(pids / "pids.max") == "12"
    corert("kill", "--all", cid, "KILL", check=True)
    assert wait_until(lambda: status(corert, cid) == "stopped")
    corert("delete", cid, check=True)
    assert not pids.exists()


def test_cpu_quota_throttles(corert, bundle) -> None:
    cid = "cpu" + SUFFIX
    quota, period = 10000, 100000
    configure(bundle, BUSY, {"cpu": {"quota": quota, "period": period}})
    pid = start_detached(corert, bundle, cid)
    stat = cgroup_dir(pid, "cpu") / "cpu.stat"
    assert wait_until(lambda: kv(stat)["nr_periods"] >= 10)
    first = kv(stat)
    assert first["nr_throttled"] >= 0.5 * first["nr_periods"], first
    assert wait_until(lambda: kv(stat)["nr_throttled"] > first["nr_throttled"])   # and it keeps throttling
    event = json.loads(corert("events", "--stats", cid, check=True).stdout)
    throttling = event["data"]["cpu"]["throttling"]
    assert throttling["throttled_periods"] >= first["nr_throttled"]
    assert throttling["periods"] >= throttling["throttled_periods"] > 0
    corert("delete", "--force", cid, check=True)


def test_pause_and_resume(corert, bundle) -> None:
    cid = "frz" + SUFFIX
    configure(bundle, BUSY, {"cpu": GENTLE_CPU})
    pid = start_detached(corert, bundle, cid)
    start = cpu_ticks(pid)
    assert wait_until(lambda: cpu_ticks(pid) > start)
    corert("pause", cid, check=True)
    assert status(corert, cid) == "paused"
    assert read(cgroup_dir(pid, "freezer") / "freezer.state") == "FROZEN"
    frozen = cpu_ticks(pid)
    time.sleep(0.3)
    assert cpu_ticks(pid) == frozen
    r = corert("pause", cid)
    assert r.returncode != 0 and "not running" in r.stderr
    corert("resume", cid, check=True)
    assert status(corert, cid) == "running"
    assert wait_until(lambda: cpu_ticks(pid) > frozen)
    corert("delete", "--force", cid, check=True)


def test_update_memory_flags_and_resources_file(corert, bundle, tmp_path) -> None:
    cid = "upd" + SUFFIX
    configure(bundle, ["sleep", "300"], {"memory": {"limit": 64 * MiB}, "pids": {"limit": 50}})
    pid = start_detached(corert, bundle, cid)
    memory, pids = cgroup_dir(pid, "memory"), cgroup_dir(pid, "pids")
    assert read(memory / "memory.limit_in_bytes") == str(64 * MiB)
    corert("update", "--memory", "128m", cid, check=True)
    assert read(memory / "memory.limit_in_bytes") == str(128 * MiB)
    # podman's form: the OCI linux.resources JSON in a file (flags would be ignored).
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"memory": {"limit": 96 * MiB}, "pids": {"limit": 20}}))
    corert("update", "--resources", str(resources), "--memory", "1g", cid, check=True)
    assert read(memory / "memory.limit_in_bytes") == str(96 * MiB)
    assert read(pids / "pids.max") == "20"
    corert("update", "--resources", "-", cid, input=json.dumps({"memory": {"limit": 80 * MiB}}), check=True)
    assert read(memory / "memory.limit_in_bytes") == str(80 * MiB)
    r = corert("update", "--memory", "lots", cid)
    assert r.returncode != 0 and "memory" in r.stderr
    assert read(memory / "memory.limit_in_bytes") == str(80 * MiB)
    corert("delete", "--force", cid, check=True)


def test_events_stats_and_kill_all(corert, bundle) -> None:
    cid = "ev" + SUFFIX
    configure(bundle, ["sh", "-c", "sleep 300 & sleep 300 & wait"],
              {"memory": {"limit": 64 * MiB}, "pids": {"limit": 20}})
    pid = start_detached(corert, bundle, cid)
    assert wait_until(lambda: read(cgroup_dir(pid, "pids") / "pids.current") == "3")
    out = corert("events", "--stats", cid, check=True).stdout
    assert len(out.splitlines()) == 1
    event = json.loads(out)
    assert (event["type"], event["id"]) == ("stats", cid)
    data = event["data"]
    assert data["pids"] == {"current": 3, "limit": 20}
    assert data["memory"]["usage"]["limit"] == 64 * MiB
    assert data["memory"]["usage"]["usage"] > 0 and "total_rss" in data["memory"]["raw"]
    assert data["cpu"]["usage"]["total"] > 0
    # The init (pid 1 of its namespace) ignores SIGTERM; --all reaches the sleeps, its `wait` returns.
    corert("kill", "--all", cid, "TERM", check=True)
    assert wait_until(lambda: status(corert, cid) == "stopped")
    corert("delete", cid, check=True)


def test_failed_creates_leave_no_cgroup(corert, bundle) -> None:
    for name, resources, message in (("badcpus", {"cpu": {"cpus": "99"}}, "cpus"),
                                     ("badmem", {"memory": {"limit": 32 * MiB, "swap": 16 * MiB}}, "swap")):
        cid = name + SUFFIX
        configure(bundle, ["true"], resources)
        r = corert("run", "--bundle", str(bundle), cid)
        assert r.returncode != 0 and message in r.stderr, r.stderr
        assert cid not in corert("list", "-q").stdout.split()
        assert list(Path("/sys/fs/cgroup").glob(f"**/corert-{cid}")) == []
