"""The v1 cgroup driver against the real kernel (this host is hybrid: v1 owns the controllers).

Every cgroup made here is named corert-<token>-..., created under the test process's current cgroup;
a module fixture asserts none survives. The last tests run the v2 driver's controller-free parts
(cgroup.freeze, cgroup.kill, BPF device filter) on the hybrid host's empty cgroup2 hierarchy.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from corert import mountinfo
from corert.drivers import cgroups
from corert.drivers.cgroups import _util
from corert.drivers.cgroups import v1 as v1mod
from corert.errors import ResourceError, UsageError
from cgroupkit import SH, assert_freeze_stops_progress, cgroup_handles, read, reap, spawn, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

TOKEN = f"corert-t{os.getpid()}"   # cgroup dir names: corert-<container id>, ids start with t<pid>


def _our_dirs() -> list[str]:
    """Every cgroup dir below our current cgroups (v1 and v2) whose name carries this module's token."""
    found = []
    roots = [h.mountpoint + ("" if h.current == "/" else h.current) for h in v1mod.hierarchies()]
    from corert.drivers.cgroups.v2 import unified_mount

    mount = unified_mount()
    if mount:
        roots.append(mount[0])
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            found += [os.path.join(dirpath, d) for d in dirnames if d.startswith(TOKEN)]
    return found


@pytest.fixture(scope="module", autouse=True)
def no_leftovers():
    if cgroups.detect().name != "v1":
        pytest.skip("host is not a v1/hybrid cgroup host")
    assert _our_dirs() == []
    yield
    assert _our_dirs() == [], "cgroups leaked"


@pytest.fixture
def make():
    """Factory: driver.create(...) with a unique id, destroyed at teardown even when the test fails."""
    with cgroup_handles(f"t{os.getpid()}", lambda: cgroups.detect("v1")) as create:
        yield create


def test_create_places_and_writes_limits(make) -> None:
    res = {"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20, "swappiness": 10},
           "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
           "pids": {"limit": 7},
           "blockIO": {"weight": 300},
           "devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 136, "access": "rw"}]}
    h = make(res)
    mem, cpu, pids = h._dir("memory"), h._dir("cpu"), h._dir("pids")
    # Under our current cgroup of each hierarchy (memory: our process_api/<hash> cgroup).
    me = _util.current_cgroups()
    assert mem.endswith(me["memory"].rstrip("/") + "/" + os.path.basename(mem))
    assert os.path.basename(mem).startswith(TOKEN)
    assert read(f"{mem}/memory.limit_in_bytes") == str(64 << 20)
    assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(96 << 20)
    assert read(f"{mem}/memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(f"{mem}/memory.swappiness") == "10"
    assert read(f"{cpu}/cpu.shares") == "512"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "20000"
    assert read(f"{cpu}/cpu.cfs_period_us") == "100000"
    assert read(f"{h._dir('cpuset')}/cpuset.cpus") == "0"
    assert read(f"{pids}/pids.max") == "7"
    assert read(f"{h._dir('blkio')}/blkio.bfq.weight").split()[-1] == "300"
    assert read(f"{h._dir('devices')}/devices.list").splitlines() == ["c 1:3 rwm", "c 136:* rw"]

    proc = spawn(h, "sleep", "30")
    try:
        assert h.pids() == [proc.pid]
        placed = _util.parse_proc_cgroup(read(f"/proc/{proc.pid}/cgroup"))
        for controller in ("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "devices", "blkio",
                           "name=systemd"):
            assert placed[controller].endswith("/" + os.path.basename(mem)), controller
        mounts = dict((name, d) for d, name in h.container_mounts())
        assert mounts["memory"] == mem and mounts["systemd"].startswith("/sys/fs/cgroup/systemd/")
        # Every hierarchy but the hybrid host's cgroup2 dir (kept for PSI only) is mounted in the container.
        state = h.state()
        assert len(mounts) == len(state["dirs"]) and "unified" not in mounts
        # A hybrid host (cgroup2 mounted beside the v1 hierarchies) gives it one for PSI; a pure v1 host none.
        hybrid = any(m.fstype == "cgroup2" for m in mountinfo.read())
        assert (state["unified"] is not None) == hybrid
        if hybrid:
            assert os.path.isdir(state["unified"]) and state["unified"] not in mounts.values()
    finally:
        reap(proc)


def test_oom_kill(make) -> None:
    h = make({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert not h.oom_killed()
    proc = spawn(h, sys.executable, "-c", "b = bytearray(200 << 20)")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert h.oom_killed()
    assert h.stats()["memory"]["usage"]["max"] > 28 << 20   # it got to the limit before the kill


def test_pids_limit_stops_fork_loop(make) -> None:
    h = make({"pids": {"limit": 5}})
    script = 'i=0; while [ $i -lt 20 ]; do sleep 10 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned $i'
    proc = spawn(h, SH, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert b"fork" in err.lower()
    pids_dir = h._dir("pids")
    assert int(read(f"{pids_dir}/pids.events").split()[1]) > 0   # "max N": forks refused
    assert len(h.pids()) <= 4   # the shell exited; at most 4 sleeps got a pid next to it
    assert h.stats()["pids"]["limit"] == 5


def test_freeze_and_thaw(make, tmp_path) -> None:
    h = make()
    counter = tmp_path / "count"
    proc = spawn(h, SH, "-c", f'i=0; while :; do i=$((i+1)); echo $i > {counter}; sleep 0.01; done')

    def frozen_on_disk() -> bool:   # v1: the freezer says so, and the task sleeps in the freezer
        return (read(f"{h._dir('freezer')}/freezer.state") == "FROZEN"
                and read(f"/proc/{proc.pid}/stat").split()[2] == "D")

    assert_freeze_stops_progress(h, counter, proc, frozen_on_disk)


def test_update_while_running(make) -> None:
    h = make({"memory": {"limit": 64 << 20}, "cpu": {"quota": 10000, "period": 100000}, "pids": {"limit": 10}})
    proc = spawn(h, sys.executable, "-c", "b = bytearray(24 << 20); import time; time.sleep(60)")
    try:
        mem = h._dir("memory")
        assert wait_until(lambda: int(read(f"{mem}/memory.usage_in_bytes")) > 24 << 20, 20)
        # Grow memory past the current memsw limit: the driver has to raise memsw first.
        h.update({"memory": {"limit": 256 << 20, "swap": 256 << 20}, "cpu": {"quota": 50000, "period": 50000},
                  "pids": {"limit": -1}})
        assert read(f"{mem}/memory.limit_in_bytes") == str(256 << 20)
        assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(256 << 20)
        assert read(f"{h._dir('cpu')}/cpu.cfs_quota_us") == "50000"
        assert read(f"{h._dir('cpu')}/cpu.cfs_period_us") == "50000"
        assert read(f"{h._dir('pids')}/pids.max") == "max"
        # Shrink both (memory first this time).
        h.update({"memory": {"limit": 128 << 20, "swap": 128 << 20}})
        assert read(f"{mem}/memory.memsw.limit_in_bytes") == str(128 << 20)
        with pytest.raises(ResourceError, match="below the current usage"):
            h.update({"memory": {"limit": 4 << 20, "checkBeforeUpdate": True}})
        with pytest.raises(ResourceError, match=r"linux\.resources\.unified\.memory\.high"):
            h.update({"unified": {"memory.high": "1M"}})
        assert proc.poll() is None
    finally:
        reap(proc)


def test_stats(make) -> None:
    h = make({"memory": {"limit": 128 << 20}, "pids": {"limit": 20}})
    proc = spawn(h, sys.executable, "-c", "b = bytearray(20 << 20); import time; time.sleep(60)")
    try:
        assert wait_until(lambda: h.stats()["memory"]["usage"]["usage"] >= 20 << 20, 20)
        stats = h.stats()
        json.dumps(stats)
        assert stats["pids"] == {"current": 1, "limit": 20}
        assert stats["memory"]["usage"]["limit"] == 128 << 20
        assert stats["memory"]["usage"]["max"] >= 20 << 20
        assert stats["memory"]["raw"]["rss"] + stats["memory"]["raw"].get("shmem", 0) > 0
        assert stats["cpu"]["usage"]["total"] > 0
        assert sum(stats["cpu"]["usage"]["percpu"]) > 0
        assert set(stats) >= {"cpu", "memory", "pids", "blkio", "hugetlb"}
        assert set(stats["blkio"]) == {"ioServiceBytesRecursive", "ioServicedRecursive"}
    finally:
        reap(proc)


def test_kill_all(make) -> None:
    h = make()
    proc = spawn(h, SH, "-c", "sleep 60 & sleep 60 & sleep 60 & wait")
    try:
        assert wait_until(lambda: len(h.pids()) == 4)
        h.kill_all(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert wait_until(lambda: h.pids() == [])
        assert not h.is_frozen()
    finally:
        reap(proc)


def test_kill_all_on_frozen_cgroup_and_destroy(make) -> None:
    h = make()
    procs = [spawn(h, "sleep", "60") for _ in range(3)]
    try:
        h.freeze()
        h.kill_all(signal.SIGKILL)   # frozen tasks die only once thawed: kill_all must thaw
        for p in procs:
            assert p.wait(timeout=10) == -signal.SIGKILL
    finally:
        for p in procs:
            reap(p)
    # destroy from another "process": the handle rebuilt from its JSON state.
    procs = [spawn(h, "sleep", "60")]
    state = json.loads(json.dumps(h.state()))
    other = cgroups.load_handle(state)
    other.destroy()
    assert procs[0].wait(timeout=10) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in [*state["dirs"].values(), state["unified"]] if d)
    other.destroy()   # idempotent
    h.destroy()


def test_failed_create_leaves_nothing() -> None:
    cid = f"t{os.getpid()}-bad"
    driver = cgroups.detect("v1")
    with pytest.raises(ResourceError, match=r"linux\.resources\.cpu\.cpus"):
        driver.create(cid, None, {"cpu": {"cpus": "999"}, "memory": {"limit": 64 << 20}})
    with pytest.raises(ResourceError, match="hugetlb cgroup controller is not mounted"):
        driver.create(cid, None, {"memory": {"limit": 64 << 20}, "hugepageLimits": [{"pageSize": "2MB",
                                                                                    "limit": 1 << 21}]})
    with pytest.raises(ResourceError, match=r"linux\.resources\.unified\.memory\.max"):
        driver.create(cid, None, {"unified": {"memory.max": "1M"}})
    with pytest.raises(ResourceError, match="must be >= memory.limit"):
        driver.create(cid, None, {"memory": {"limit": 64 << 20, "swap": 32 << 20}})
    with pytest.raises(ResourceError, match=r"devices\[1\]\.type"):
        driver.create(cid, None, {"devices": [{"allow": False}, {"allow": True, "type": "z"}]})
    assert _our_dirs() == []


def test_relative_cgroups_path(make) -> None:
    h = make({"pids": {"limit": 3}}, cgroups_path=f"{TOKEN}-parent/inner")
    pids_dir = h._dir("pids")
    assert pids_dir.endswith(f"/{TOKEN}-parent/inner")
    assert read(f"{os.path.dirname(pids_dir)}/cgroup.procs") == ""
    # cpuset: the intermediate was initialised from its parent too, or attaching would fail.
    cpuset = h._dir("cpuset")
    assert read(f"{os.path.dirname(cpuset)}/cpuset.cpus") == read(f"{os.path.dirname(os.path.dirname(cpuset))}"
                                                                  f"/cpuset.cpus")
    proc = spawn(h, "sleep", "30")
    try:
        assert h.pids() == [proc.pid]
    finally:
        reap(proc)
    h.destroy()
    state = h.state()
    parents = [os.path.dirname(d) for d in [*state["dirs"].values(), state["unified"]] if d]
    assert all(os.path.isdir(p) for p in parents)   # destroy never touches parents
    for p in parents:
        os.rmdir(p)


def test_detect_and_none_driver() -> None:
    assert cgroups.detect().name == "v1"
    assert cgroups.detect("cgroupfs").name == "v1"
    none = cgroups.detect("none")
    assert none.name == "none"
    handle = none.create("x", None, {"memory": {"limit": 0}, "pids": {"limit": -1}})
    assert handle.pids() == [] and handle.state() == {"driver": "none"}
    with pytest.raises(ResourceError, match=r"linux\.resources\.memory\.limit"):
        none.create("x", None, {"memory": {"limit": 1 << 20}})
    with pytest.raises(ResourceError, match=r"linux\.resources\.devices"):
        none.create("x", None, {"devices": [{"allow": False}]})   # root without cgroups could mknod
    with pytest.raises(UsageError):
        cgroups.detect("systemd")


def test_detect_rootless_without_delegation_is_none() -> None:
    code = ("import os; os.setgid(65534); os.setuid(65534)\n"
            "from corert.drivers import cgroups\n"
            "d = cgroups.detect(); print(d.name); print(d.note)\n"
            "d.create('x', None, {})\n"
            "try:\n    d.create('x', None, {'pids': {'limit': 5}})\nexcept Exception as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": REPO}, check=True).stdout.splitlines()
    assert out[0] == "none"
    assert out[1].startswith("rootless: cgroup /sys/fs/cgroup/") and "not delegated to uid 65534" in out[1]
    assert out[2].startswith("linux.resources.pids.limit: cannot apply resource limits without a cgroup")


# ------------------------------------------------------------------ v2 driver on the hybrid's empty cgroup2

@pytest.fixture
def v2driver():
    from corert.drivers.cgroups.v2 import V2Driver, unified_mount

    mount = unified_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    before = read(os.path.join(mount[0], "cgroup.subtree_control"))
    yield V2Driver()
    # The driver must never enable controllers in the hierarchy root (the host's, not ours).
    assert read(os.path.join(mount[0], "cgroup.subtree_control")) == before


def test_v2_device_filter_freeze_kill_on_unified(make, v2driver) -> None:
    h = make({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                          {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]}, driver=v2driver)
    assert h.state()["driver"] == "v2"
    script = ("cat /dev/null && echo null-read; echo > /dev/null && echo null-write; "
              "head -c1 /dev/zero >/dev/null && echo zero-read; echo > /dev/zero && echo zero-write; "
              "head -c1 /dev/full >/dev/null && echo full-read; exit 0")
    proc = spawn(h, SH, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.communicate(timeout=20)[0].decode().split()
    assert out == ["null-read", "null-write", "zero-read"]   # the kernel ran our BPF program

    # update replaces the program (not stacks a second one): now /dev/full is readable, /dev/zero not.
    h.update({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                          {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "r"}]})
    proc = spawn(h, SH, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.communicate(timeout=20)[0].decode().split() == ["null-read", "null-write", "full-read"]

    procs = [spawn(h, "sleep", "60") for _ in range(2)]
    try:
        h.freeze()
        assert h.is_frozen() and read(f"{h.path}/cgroup.freeze") == "1"
        h.thaw()
        assert not h.is_frozen()
        fd = h.into_cgroup_fd()
        assert fd >= 0 and os.path.samestat(os.fstat(fd), os.stat(h.path))
        os.close(fd)
        assert h.container_mounts() == [(h.path, "")]
        h.kill_all(signal.SIGKILL)   # cgroup.kill
        for p in procs:
            assert p.wait(timeout=10) == -signal.SIGKILL
    finally:
        for p in procs:
            reap(p)


def test_v2_limit_without_controller_fails_cleanly(v2driver) -> None:
    cid = f"t{os.getpid()}-v2bad"
    with pytest.raises(ResourceError, match=r"linux\.resources\.memory\.limit: the memory controller is not "
                                            r"available"):
        v2driver.create(cid, None, {"memory": {"limit": 64 << 20}})
    with pytest.raises(ResourceError, match="not a settable cgroup file name"):
        v2driver.create(cid, None, {"unified": {"../x": "1"}})
    assert _our_dirs() == []


def test_v2_enables_required_controller_top_down(v2driver_with_root_restore) -> None:
    """hugetlb is the one controller the hybrid host leaves to cgroup2: enable it along a created path."""
    driver, root = v2driver_with_root_restore
    if "hugetlb" not in read(f"{root}/cgroup.controllers").split():
        pytest.skip("hugetlb not available on the cgroup2 hierarchy")
    parent = f"{root}/{TOKEN}-v2p"
    h = driver.create(f"t{os.getpid()}-v2", f"/{TOKEN}-v2p/leaf",
                      {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    try:
        assert h.path == f"{parent}/leaf"
        assert "hugetlb" in read(f"{root}/cgroup.subtree_control").split()     # required: enabled where needed
        assert "hugetlb" in read(f"{parent}/cgroup.subtree_control").split()   # the intermediate we created
        assert read(f"{h.path}/hugetlb.2MB.max") == str(4 << 20)
        h.update({"hugepageLimits": [{"pageSize": "2MB", "limit": 8 << 20}]})
        assert h.stats()["hugetlb"]["2MB"]["max"] == 8 << 20
        with pytest.raises(ResourceError, match=r"hugepageLimits\[0\].*hugetlb\.3MB\.max does not exist"):
            h.update({"hugepageLimits": [{"pageSize": "3MB", "limit": 1 << 20}]})
    finally:
        h.destroy()
    assert not os.path.exists(h.path) and os.path.isdir(parent)
    os.rmdir(parent)


@pytest.fixture
def v2driver_with_root_restore():
    from corert.drivers.cgroups.v2 import V2Driver, unified_mount

    mount = unified_mount()
    if mount is None or mount[0] == "/sys/fs/cgroup":
        pytest.skip("needs the hybrid host's separate cgroup2 mount")
    root = mount[0]
    before = set(read(f"{root}/cgroup.subtree_control").split())
    yield V2Driver(), root
    for controller in set(read(f"{root}/cgroup.subtree_control").split()) - before:
        with open(f"{root}/cgroup.subtree_control", "w") as f:
            f.write(f"-{controller}")
    assert set(read(f"{root}/cgroup.subtree_control").split()) == before
