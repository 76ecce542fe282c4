"""The cgroup v2 driver for real, inside the qemu guest (pure v2 hierarchy, every controller delegated).

Run by tests/vm/test_cgroup_v2_in_vm.py; not collected on the host (see tests/vm/conftest.py). Every
cgroup made here is named corert-*, so the autouse leak check of tests/conftest.py watches it. Timing
is never asserted from above: the guest runs under TCG, about 13x slower than the host.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corert.drivers import cgroups
from corert.drivers.cgroups.convert import blkio_weight_to_io_weight, shares_to_weight
from corert.errors import ResourceError
from cgroupkit import SH, assert_freeze_stops_progress, cgroup_handles, kv, read, reap, spawn, wait_until
from support import read_config, write_config

ROOT = Path("/sys/fs/cgroup")
MiB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def pure_v2():
    # Not a skip: this suite only runs where the harness promised a pure v2 guest.
    assert cgroups.detect().name == "v2", read("/proc/self/mountinfo")
    assert {"cpu", "cpuset", "io", "memory", "pids"} <= set(read(ROOT / "cgroup.subtree_control").split())


@pytest.fixture
def make():
    """driver.create(...) with a unique container id; every handle is destroyed at teardown."""
    with cgroup_handles(f"vm{os.getpid()}", cgroups.detect) as create:
        yield create


def test_create_writes_v2_files_and_failed_create_leaves_nothing(make) -> None:
    h = make({"memory": {"limit": 64 * MiB, "reservation": 16 * MiB, "swap": 96 * MiB},
              "cpu": {"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
              "pids": {"limit": 7}, "blockIO": {"weight": 500}, "unified": {"memory.high": str(60 * MiB)}})
    d = Path(h.path)
    assert d.parent == ROOT and d.name.startswith("corert-vm")   # under our (root) cgroup
    assert read(d / "memory.max") == str(64 * MiB)
    assert read(d / "memory.low") == str(16 * MiB)
    assert read(d / "memory.swap.max") == str(32 * MiB)          # v2 swap excludes memory
    assert read(d / "memory.high") == str(60 * MiB)
    assert read(d / "cpu.weight") == str(shares_to_weight(1024))
    assert read(d / "cpu.max") == "20000 100000"
    assert read(d / "cpuset.cpus") == "0"
    assert read(d / "pids.max") == "7"
    weight = read(d / "io.bfq.weight") if (d / "io.bfq.weight").exists() else read(d / "io.weight")
    assert weight.split()[-1] in ("500", str(blkio_weight_to_io_weight(500)))
    before = set(os.listdir(ROOT))
    with pytest.raises(ResourceError, match="cpuset"):
        make({"cpu": {"cpus": "63"}})                               # the guest has one cpu
    with pytest.raises(ResourceError, match="disableOOMKiller"):
        make({"memory": {"limit": 64 * MiB, "disableOOMKiller": True}})
    assert set(os.listdir(ROOT)) == before


def test_memory_max_oom_kills_and_is_reported(make) -> None:
    h = make({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    assert not h.oom_killed()
    # dd reads /dev/zero into a 64 MiB malloc'ed buffer: it must touch more than the limit.
    proc = spawn(h, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1",
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert h.oom_killed()
    assert kv(Path(h.path) / "memory.events")["oom_kill"] == 1
    usage = h.stats()["memory"]["usage"]
    assert usage["limit"] == 32 * MiB and usage["max"] > 28 * MiB and usage["failcnt"] > 0


def test_pids_max_stops_a_fork_loop(make) -> None:
    h = make({"pids": {"limit": 5}})
    script = "i=0; while [ $i -lt 20 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done"
    proc = spawn(h, SH, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _out, err = proc.communicate(timeout=60)
    assert b"fork" in err.lower()             # "Cannot fork" (dash), "can't fork" (busybox)
    assert kv(Path(h.path) / "pids.events")["max"] > 0
    assert len(h.pids()) == 4                 # the shell exited; the 4 sleeps it could start remain
    assert h.stats()["pids"] == {"current": 4, "limit": 5}


def test_cpu_max_throttles(make) -> None:
    quota, period = 10000, 100000             # 10% of a cpu
    h = make({"cpu": {"quota": quota, "period": period}})
    proc = spawn(h, SH, "-c", "while :; do :; done")
    try:
        stat = Path(h.path) / "cpu.stat"
        assert wait_until(lambda: kv(stat)["nr_periods"] >= 10)
        reap(proc)
        cpu = kv(stat)
        throttling = h.stats()["cpu"]["throttling"]
    finally:
        reap(proc)
    # A busy loop wants every period whole: nearly every one ends throttled, and it never gets more
    # than its quota per period (+2 for the periods in progress when sampled).
    assert cpu["nr_throttled"] >= 0.5 * cpu["nr_periods"], cpu
    assert cpu["usage_usec"] <= quota * (cpu["nr_periods"] + 2) * 1.1, cpu
    assert throttling["throttled_periods"] == cpu["nr_throttled"] > 0
    assert throttling["throttled_time"] == cpu["throttled_usec"] * 1000


def test_io_max_throttles_writes_to_a_virtio_disk(make) -> None:
    major, minor = (int(x) for x in read("/sys/block/vda/dev").split(":"))
    rate = 1 * MiB
    h = make({"blockIO": {"throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": rate}]}})
    assert read(Path(h.path) / "io.max") == f"{major}:{minor} rbps=max wbps={rate} riops=max wiops=max"
    started = time.monotonic()
    proc = spawn(h, "dd", "if=/dev/zero", "of=/dev/vda", "bs=256k", "count=8", "oflag=direct",
                 stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=120) == 0
    elapsed = time.monotonic() - started
    # A lower bound only (a slow guest cannot fail it): 2 MiB at 1 MiB/s cannot take under ~2 s; half
    # of that leaves room for the throttle's first slice.
    assert elapsed >= 1.0, elapsed
    written = [e["value"] for e in h.stats()["blkio"]["ioServiceBytesRecursive"]
               if (e["major"], e["minor"], e["op"]) == (major, minor, "Write")]
    assert written == [2 * MiB]


def test_device_rules_become_an_ebpf_filter(make) -> None:
    h = make({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]})
    script = ("echo x > /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null && echo zero-ok;"
              " mknod /tmp/corert-vm-null c 1 3 && echo mknod-ok; true")
    proc = spawn(h, SH, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert out.split() == [b"null-ok"]                   # /dev/zero and mknod refused
    assert err.count(b"Operation not permitted") == 2, err
    # Only the contained processes are refused.
    with open("/dev/zero", "rb") as f:
        assert f.read(1) == b"\0"
    # An update replaces the program attached to the live cgroup (not one more filter next to it).
    h.update({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                          {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]})
    proc = spawn(h, SH, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert out.split() == [b"null-ok", b"zero-ok"], err   # mknod still refused


def test_no_internal_processes_rule_is_explained(make) -> None:
    """A parent that holds a process cannot enable controllers for a child: refused, nothing left."""
    parent = ROOT / f"corert-vm-busy-{os.getpid()}"
    parent.mkdir()
    holder = subprocess.Popen([SH, "-c", f'echo $$ > {parent}/cgroup.procs && exec sleep 120'])
    try:
        assert wait_until(lambda: read(parent / "cgroup.procs") == str(holder.pid))
        with pytest.raises(ResourceError, match="no-internal-processes"):
            make({"memory": {"limit": 64 * MiB}}, cgroups_path=f"/{parent.name}/child")
        assert [e for e in os.listdir(parent) if (parent / e).is_dir()] == []
    finally:
        reap(holder)
        wait_until(lambda: read(parent / "cgroup.procs") == "", 10)
        parent.rmdir()


def test_freeze_and_thaw(make, tmp_path) -> None:
    h = make()
    counter = tmp_path / "count"
    proc = spawn(h, SH, "-c", f"i=0; while :; do i=$((i+1)); echo $i > {counter}; done")
    assert_freeze_stops_progress(h, counter, proc, lambda: kv(Path(h.path) / "cgroup.events")["frozen"] == 1,
                                 pause=0.5)


def test_kill_all(make) -> None:
    h = make()
    # TERM: freeze, signal every pid, thaw. The shell dies and so do both sleeps (no orphan survives).
    proc = spawn(h, SH, "-c", "sleep 60 & sleep 60 & wait")
    assert wait_until(lambda: len(h.pids()) == 3)
    h.kill_all(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert wait_until(lambda: h.pids() == [])
    # KILL: one write to cgroup.kill, which also gets processes that ignore every catchable signal.
    proc = spawn(h, SH, "-c", "trap '' TERM; sleep 60 & sleep 60 & wait")
    assert wait_until(lambda: len(h.pids()) == 3)
    h.kill_all(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert wait_until(lambda: h.pids() == [])


def test_update_while_running_and_stats(make) -> None:
    h = make({"memory": {"limit": 64 * MiB}, "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 10}})
    d = Path(h.path)
    hold = "import time; b = bytearray(20 << 20); print('ok', flush=True); time.sleep(120)"
    proc = spawn(h, SH, "-c", f'sleep 120 & sleep 120 & exec {sys.executable} -c "{hold}"',
                 stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ok\n"
        stats = h.stats()
        assert stats["pids"] == {"current": 3, "limit": 10}
        assert stats["memory"]["usage"]["usage"] >= 20 * MiB and stats["memory"]["raw"]["anon"] >= 20 * MiB
        assert stats["cpu"]["usage"]["total"] > 0
        h.update({"memory": {"limit": 256 * MiB}, "cpu": {"quota": 20000, "period": 50000},
                  "pids": {"limit": -1}})
        assert read(d / "memory.max") == str(256 * MiB)
        assert read(d / "cpu.max") == "20000 50000"
        assert read(d / "pids.max") == "max"
        with pytest.raises(ResourceError, match="below the current usage"):
            h.update({"memory": {"limit": 4 * MiB, "checkBeforeUpdate": True}})
        assert read(d / "memory.max") == str(256 * MiB) and proc.poll() is None
        # Without the check the new limit holds at once: the holder is OOM-killed.
        h.update({"memory": {"limit": 8 * MiB, "swap": 8 * MiB}})
        assert proc.wait(timeout=60) == -signal.SIGKILL
        assert h.oom_killed()
    finally:
        reap(proc)


# -- the whole runtime -------------------------------------------------------------------------------
@pytest.fixture
def launcher_cgroup():
    """A cgroup that admits no new task (pids.max 1): whatever corert forks inside it fails."""
    d = ROOT / f"corert-vm-launcher-{os.getpid()}"
    d.mkdir()
    (d / "pids.max").write_text("1")
    yield d
    wait_until(lambda: read(d / "cgroup.procs") == "", 10)
    d.rmdir()


def test_corert_run_is_born_in_its_cgroup(corert, bundle, launcher_cgroup) -> None:
    """clone3(CLONE_INTO_CGROUP): the init is charged to its own cgroup from birth, never to corert's."""
    config = read_config(bundle)
    cid = f"vmrun{os.getpid()}"
    config["process"]["args"] = ["sh", "-c", "cat /proc/self/cgroup /sys/fs/cgroup/memory.max"]
    config["linux"]["cgroupsPath"] = f"/corert-{cid}"   # a sibling of the launcher, not below it
    config["linux"]["resources"] = {"memory": {"limit": 48 * MiB}}
    write_config(bundle, config)
    argv = [corert.binary, "--root", str(corert.root), "run", "--bundle", str(bundle), cid]
    # corert runs alone in the launcher cgroup; a plain fork (then attach) would hit pids.max there.
    r = subprocess.run([SH, "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(launcher_cgroup), *argv],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.split()) == (0, [f"0::/corert-{cid}", str(48 * MiB)]), r.stderr
    assert kv(launcher_cgroup / "pids.events")["max"] == 0
    assert not (ROOT / f"corert-{cid}").exists()


def test_corert_run_reports_oom_kill(corert, bundle) -> None:
    config = read_config(bundle)
    config["process"]["args"] = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    config["linux"]["resources"] = {"memory": {"limit": 32 * MiB, "swap": 32 * MiB}}
    write_config(bundle, config)
    r = corert("run", "--bundle", str(bundle), "vmoom", timeout=120)
    assert r.returncode == 137
    assert "corert: container vmoom was OOM-killed" in r.stderr


def test_corert_control_verbs(corert, bundle) -> None:
    """events --stats, pause/resume (cgroup.freeze), update, kill --all (cgroup.kill) through the CLI."""
    config = read_config(bundle)
    config["process"]["args"] = ["sh", "-c", "sleep 300 & sleep 300 & wait"]
    config["linux"]["resources"] = {"memory": {"limit": 64 * MiB}, "pids": {"limit": 20}}
    write_config(bundle, config)
    corert("run", "-d", "--bundle", str(bundle), "vmctl", check=True, timeout=120)
    pid = json.loads(corert("state", "vmctl", check=True).stdout)["pid"]
    d = ROOT / read(f"/proc/{pid}/cgroup").split("::", 1)[1].lstrip("/")
    assert d.name == "corert-vmctl"
    assert wait_until(lambda: read(d / "pids.current") == "3")
    event = json.loads(corert("events", "--stats", "vmctl", check=True).stdout)
    assert event["type"] == "stats" and event["data"]["pids"] == {"current": 3, "limit": 20}
    assert event["data"]["memory"]["usage"]["limit"] == 64 * MiB
    corert("pause", "vmctl", check=True)
    assert json.loads(corert("state", "vmctl").stdout)["status"] == "paused"
    assert kv(d / "cgroup.events")["frozen"] == 1
    corert("resume", "vmctl", check=True)
    assert json.loads(corert("state", "vmctl").stdout)["status"] == "running"
    corert("update", "--memory", "48m", "--pids-limit", "10", "vmctl", check=True)
    assert (read(d / "memory.max"), read(d / "pids.max")) == (str(48 * MiB), "10")
    corert("kill", "--all", "vmctl", "KILL", check=True)
    assert wait_until(lambda: json.loads(corert("state", "vmctl").stdout)["status"] == "stopped")
    corert("delete", "vmctl", check=True)
    assert not d.exists()


def test_stats_pressure_comes_from_the_container_cgroup(corert, bundle) -> None:
    """corert stats (corert.engine.stats) on pure v2: the PSI is the container cgroup's own *.pressure."""
    from corert.drivers.cgroups import load_handle, psi
    from corert.engine.state import StateStore
    from corert.engine.stats import read_stats

    loops = (os.cpu_count() or 1) + 1   # more busy loops than CPUs: one always waits -> cpu "some" > 0
    config = read_config(bundle)
    config["process"]["args"] = ["sh", "-c", f"for i in $(seq {loops}); do (while :; do :; done) & done; wait"]
    config["linux"]["resources"] = {"memory": {"limit": 64 * MiB}}
    write_config(bundle, config)
    corert("run", "-d", "--bundle", str(bundle), "vmpsi", check=True, timeout=120)
    store = StateStore(corert.root)
    record = store.load("vmpsi")
    d = Path(record.cgroup["path"])
    try:
        assert d.name == "corert-vmpsi" and load_handle(record.cgroup).pressure_dir() == str(d)
        assert wait_until(lambda: read(d / "pids.current") == str(loops + 1))
        assert wait_until(lambda: psi.read(str(d))["cpu"]["some"]["total"] > 0)
        stats, _ = read_stats(store, record)
        assert set(stats["pressure"]) == {"cpu", "memory", "io"}
        assert stats["pressure"]["cpu"]["some"]["total"] > 0
        assert stats["pressure"]["cpu"]["some"]["total"] <= psi.read(str(d))["cpu"]["some"]["total"]
        assert (stats["mem_limit"], stats["pids_current"]) == (64 * MiB, loops + 1)
        assert stats["cpu_percent"] > 0
    finally:
        r = corert("delete", "--force", "vmpsi")
    assert r.returncode == 0, r.stderr
    assert not d.exists()
