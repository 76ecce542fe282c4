"""cgroup v1: one directory per mounted controller hierarchy (co-mounted controllers share one).

Used on v1 and hybrid hosts (v1 owns the controllers there). The container cgroup goes under the
runtime's current cgroup of each hierarchy; named hierarchies (name=systemd) are joined when writable.
"""
from __future__ import annotations

import os
import time

from corert.errors import ResourceError

from . import _util as u
from .convert import device_rule_v1, host_dir, pids_max_value, resolve_cgroups_path

_UNLIMITED_V1 = 1 << 62   # the kernel shows "unlimited" as PAGE_COUNTER_MAX * PAGE_SIZE (~9.2e18)
_LEGACY_UNIFIED_KEY = "unified"   # older saved state: the cgroup2 dir as a fake hierarchy in dirs


class _Hierarchy:
    __slots__ = ("key", "controllers", "mountpoint", "root", "current", "named")

    def __init__(self, controllers: frozenset[str], mountpoint: str, root: str, current: str) -> None:
        self.controllers = controllers
        self.key = ",".join(sorted(controllers))
        self.mountpoint = mountpoint
        self.root = root
        self.current = current
        self.named = all(c.startswith("name=") for c in controllers)


def hierarchies(host: tuple | None = None) -> list[_Hierarchy]:
    """Mounted v1 hierarchies (first mount of each), with our current cgroup in each (host: u.host_view)."""
    mounts, current = u.host_view(host)
    found: dict[str, _Hierarchy] = {}
    for fstype, mountpoint, root, controllers in mounts:
        if fstype != "cgroup" or not controllers:
            continue
        h = _Hierarchy(controllers, mountpoint, root, "/")
        if h.key in found:
            continue   # a second mount (bind) of the same hierarchy
        h.current = next((current[c] for c in sorted(controllers) if c in current), "/")
        found[h.key] = h
    return list(found.values())


class V1Driver:
    name = "v1"

    def __init__(self, note: str | None = None, host: tuple | None = None) -> None:
        self.note = note
        self._host = host   # what detect() read of the host; read at create when None

    def create(self, container_id: str, cgroups_path: str | None, resources: dict | None) -> "V1Handle":
        resources = resources or {}
        _refuse_unified(resources)
        mounts, current = u.host_view(self._host)
        hiers = hierarchies((mounts, current))
        if not any(not h.named for h in hiers):
            raise ResourceError("cgroup v1: no controller hierarchy is mounted")
        dirs: dict[str, str] = {}
        names: dict[str, str] = {}
        created: list[str] = []
        try:
            for h in hiers:
                path = resolve_cgroups_path(container_id, cgroups_path, h.current)
                target = host_dir(h.mountpoint, h.root, path)
                try:
                    made = u.make_dirs(target)
                except ResourceError:
                    if h.named:
                        continue   # e.g. a read-only name=systemd hierarchy: not ours to use
                    raise
                created.extend(made)
                if "cpuset" in h.controllers:
                    # A new cpuset cgroup starts with empty cpus/mems and refuses tasks until they are set.
                    for d in made or [target]:
                        _init_cpuset(d)
                dirs[h.key] = target
                names[h.key] = os.path.basename(h.mountpoint.rstrip("/")) or h.key
            from .psi import make_unified
            # Hybrid host: the container's cgroup2 dir, for per-container PSI (psi.py).
            unified = make_unified(container_id, cgroups_path, mounts, current)
            if unified is not None:
                created.extend(unified[1])
            handle = V1Handle(dirs, names, unified[0] if unified is not None else None)
            handle.apply(resources, update=False)
            return handle
        except OSError as e:   # a read of a cgroup file that vanished or is unreadable
            u.remove_dirs(created)
            raise ResourceError(f"cgroup: {e.filename}: {e.strerror}") from None
        except BaseException:
            u.remove_dirs(created)
            raise

    def load(self, state: dict) -> "V1Handle":
        if state.get("driver") != "v1":
            raise ResourceError(f"cgroup state is for driver {state.get('driver')!r}, not v1")
        dirs, mounts = dict(state["dirs"]), dict(state.get("mounts", {}))
        legacy = dirs.pop(_LEGACY_UNIFIED_KEY, None)
        mounts.pop(_LEGACY_UNIFIED_KEY, None)
        return V1Handle(dirs, mounts, state.get("unified") or legacy)


def _refuse_unified(resources: dict) -> None:
    for key in resources.get("unified") or {}:
        raise ResourceError(f"linux.resources.unified.{key}: unified (cgroup v2) keys cannot be set on cgroup v1")


def _init_cpuset(d: str) -> None:
    parent = os.path.dirname(d)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not u.read(os.path.join(d, name)):
            u.write(os.path.join(d, name), u.read(os.path.join(parent, name)), f"cgroup {name} init")


class V1Handle:
    """The container's cgroup: one dir per hierarchy, keyed by the hierarchy's controller list; on a hybrid
    host also `unified`, its dir in the controller-less cgroup2 hierarchy (psi.py), None elsewhere."""

    def __init__(self, dirs: dict[str, str], mounts: dict[str, str], unified: str | None = None) -> None:
        self.dirs = dirs
        self.mounts = mounts
        self.unified = unified

    def _all_dirs(self) -> list[str]:
        return [*self.dirs.values(), self.unified] if self.unified else list(self.dirs.values())

    # -- lookup ---------------------------------------------------------------------------------
    def _dir(self, controller: str) -> str | None:
        for key, d in self.dirs.items():
            if controller in key.split(","):
                return d
        return None

    def _need(self, controller: str, what: str) -> str:
        d = self._dir(controller)
        if d is None:
            raise ResourceError(f"{what}: the {controller} cgroup controller is not mounted")
        return d

    def _file(self, controller: str, name: str, what: str) -> str:
        path = os.path.join(self._need(controller, what), name)
        if not os.path.exists(path):
            raise ResourceError(f"{what}: this kernel has no {name}")
        return path

    # -- protocol -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"driver": "v1", "dirs": dict(self.dirs), "mounts": dict(self.mounts), "unified": self.unified}

    def attach(self, pid: int) -> None:
        for key, d in self.dirs.items():
            try:
                u.write(os.path.join(d, "cgroup.procs"), str(pid), f"cgroup attach of pid {pid}")
            except ResourceError:
                if key.startswith("name="):
                    continue
                raise
        if self.unified:
            u.write(os.path.join(self.unified, "cgroup.procs"), str(pid), f"cgroup attach of pid {pid}")

    def into_cgroup_fd(self) -> int:
        """The hybrid host's cgroup2 dir (kept for per-container PSI, see psi.py), joined by clone3."""
        if self.unified is None:
            return -1
        try:
            return os.open(self.unified, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ResourceError(f"cgroup: cannot open {self.unified}: {e.strerror}") from None

    def pressure_dir(self) -> str | None:
        return self.unified

    def self_attach_fds(self) -> list[int]:
        """`tasks` of every v1 dir, opened here for the new child to write "0" to (the fast path's
        cgroup step): a thread moving itself needs no global lock, a pid written by the parent does
        (and waits for an RCU grace period, ~10 ms). Named hierarchies we cannot write are skipped."""
        fds: list[int] = []
        try:
            for key, d in self.dirs.items():
                try:
                    fds.append(os.open(os.path.join(d, "tasks"), os.O_WRONLY | os.O_CLOEXEC))
                except OSError as e:
                    if key.startswith("name="):
                        continue
                    raise ResourceError(f"cgroup: cannot open {d}/tasks: {e.strerror}") from None
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def update(self, resources: dict) -> None:
        self.apply(resources, update=True)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self._all_dirs():
            found |= u.procs(d)
        return sorted(found)

    def _frozen_markers(self) -> list[tuple[str, str]]:
        """(file, line): frozen when the file holds the line (also what the native front checks)."""
        d = self._dir("freezer")
        return [(os.path.join(d, "freezer.state"), "FROZEN")] if d else []

    def is_frozen(self) -> bool:
        return any(u.holds_line(path, line) for path, line in self._frozen_markers())

    def freeze(self) -> None:
        path = os.path.join(self._need("freezer", "pause"), "freezer.state")
        deadline = time.monotonic() + 5.0
        attempt = 0
        # FREEZING can stall on a task that is forking; writing FROZEN again retries the freeze.
        while True:
            u.write(path, "FROZEN", "pause")
            if u.wait_for(lambda: u.read(path) == "FROZEN", 0.05 * (1 + attempt % 5)):
                return
            attempt += 1
            if time.monotonic() >= deadline:
                u.write(path, "THAWED", "pause")
                raise ResourceError("pause: the cgroup did not reach FROZEN within 5 s")

    def thaw(self) -> None:
        path = os.path.join(self._need("freezer", "resume"), "freezer.state")
        u.write(path, "THAWED", "resume")
        if not u.wait_for(lambda: u.read(path) == "THAWED", 5.0):
            raise ResourceError("resume: the cgroup did not thaw within 5 s")

    def kill_all(self, sig: int) -> None:
        # Freezing first stops fork races: no new process can appear between listing and signalling.
        freezer = self._dir("freezer")
        use_freezer = freezer is not None and os.path.isdir(freezer)
        was_frozen = self.is_frozen()
        if use_freezer and not was_frozen:
            try:
                self.freeze()
            except ResourceError:
                use_freezer = False   # freeze() thawed again; signal unfrozen rather than not at all
        try:
            u.signal_all(self.pids(), sig)
        finally:
            # A frozen task only dies once thawed; other signals leave a paused container paused.
            if use_freezer and (not was_frozen or sig == u.SIGKILL):
                self.thaw()

    def oom_killed(self) -> bool:
        d = self._dir("memory")
        if d is None:
            return False
        return u.read_kv(os.path.join(d, "memory.oom_control")).get("oom_kill", 0) > 0

    def container_mounts(self) -> list[tuple[str, str]]:
        # Not `unified`: it only serves the host's view of the container's PSI; runc shows a container no
        # cgroup2 mount on a hybrid host, and neither does corert.
        return [(d, self.mounts.get(key, key)) for key, d in self.dirs.items()]

    def destroy(self) -> None:
        # The usual case (the init has exited, no child cgroups) is one rmdir per hierarchy; the kernel
        # refuses a busy one (EBUSY), and only then are processes killed and the tree walked.
        busy = False
        for d in self._all_dirs():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                busy = True
        if not busy:
            return
        u.kill_until_empty(self)
        for d in self._all_dirs():
            u.rmdir_tree(d)

    def shortcut(self) -> tuple[list[str], list[tuple[str, str]]]:
        return self._all_dirs(), self._frozen_markers()

    # -- resources ------------------------------------------------------------------------------
    def apply(self, resources: dict, *, update: bool) -> None:
        """Write OCI linux.resources to the controller files (runc's order: cpuset, devices, memory, ...)."""
        resources = resources or {}
        _refuse_unified(resources)
        cpu = resources.get("cpu") or {}
        for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
            if cpu.get(key):
                path = self._file("cpuset", name, f"linux.resources.cpu.{key}")
                u.write(path, str(cpu[key]), f"linux.resources.cpu.{key}")
        if resources.get("devices"):
            self._apply_devices(resources["devices"])
        if resources.get("memory"):
            self._apply_memory(resources["memory"], update)
        self._apply_cpu(cpu)
        pids = resources.get("pids") or {}
        value = pids_max_value(pids.get("limit"))
        if value is not None:
            u.write(self._file("pids", "pids.max", "linux.resources.pids.limit"), value,
                    "linux.resources.pids.limit")
        if resources.get("blockIO"):
            self._apply_blkio(resources["blockIO"])
        for i, entry in enumerate(resources.get("hugepageLimits") or []):
            what = f"linux.resources.hugepageLimits[{i}]"
            name = f"hugetlb.{entry.get('pageSize')}.limit_in_bytes"
            u.write(self._file("hugetlb", name, what), str(entry.get("limit", 0)), what)
        self._apply_network(resources.get("network") or {})
        for dev, limits in (resources.get("rdma") or {}).items():
            what = f"linux.resources.rdma.{dev}"
            line = _rdma_line(dev, limits)
            if line:
                u.write(self._file("rdma", "rdma.max", what), line, what)

    def _apply_devices(self, rules: list) -> None:
        d = self._need("devices", "linux.resources.devices")
        lines = [device_rule_v1(rule, i) for i, rule in enumerate(rules)]   # validate before writing
        u.write(os.path.join(d, "devices.deny"), "a", "linux.resources.devices")
        for i, (name, line) in enumerate(lines):
            u.write(os.path.join(d, name), line, f"linux.resources.devices[{i}]")

    def _apply_memory(self, mem: dict, update: bool) -> None:
        what = "linux.resources.memory"
        d = self._need("memory", what)
        limit = mem.get("limit") or None
        swap = mem.get("swap") or None
        if update and mem.get("checkBeforeUpdate") and limit and limit > 0:
            usage = u.read_int(os.path.join(d, "memory.usage_in_bytes"))
            if limit < usage:
                raise ResourceError(f"{what}.limit: {limit} is below the current usage {usage}")
        self._set_limit_and_swap(d, limit, swap)
        if mem.get("reservation"):
            u.write(os.path.join(d, "memory.soft_limit_in_bytes"), str(mem["reservation"]), f"{what}.reservation")
        if mem.get("kernel"):
            u.write(self._file("memory", "memory.kmem.limit_in_bytes", f"{what}.kernel"), str(mem["kernel"]),
                    f"{what}.kernel")
        if mem.get("kernelTCP"):
            u.write(self._file("memory", "memory.kmem.tcp.limit_in_bytes", f"{what}.kernelTCP"),
                    str(mem["kernelTCP"]), f"{what}.kernelTCP")
        swappiness = mem.get("swappiness")
        if swappiness is not None and swappiness != -1:
            if not 0 <= swappiness <= 100:
                raise ResourceError(f"{what}.swappiness: {swappiness} is not in 0..100")
            u.write(os.path.join(d, "memory.swappiness"), str(swappiness), f"{what}.swappiness")
        oom = mem.get("disableOOMKiller")
        if oom or (update and oom is False):
            u.write(os.path.join(d, "memory.oom_control"), "1" if oom else "0", f"{what}.disableOOMKiller")

    def _set_limit_and_swap(self, d: str, limit: int | None, swap: int | None) -> None:
        what = "linux.resources.memory"
        mem_file = os.path.join(d, "memory.limit_in_bytes")
        memsw_file = os.path.join(d, "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw_file)
        if limit == -1 and swap is None and has_memsw:
            swap = -1   # unlimited memory with swap unset means unlimited memory+swap too (runc)
        if swap is not None and not has_memsw:
            if swap != -1 and swap != limit:   # unlimited / "no swap" need no memsw file (as runc)
                raise ResourceError(f"{what}.swap: swap accounting (memory.memsw.*) is not enabled on this host")
            swap = None
        if limit is not None and swap is not None and limit != -1 and swap != -1 and swap < limit:
            raise ResourceError(f"{what}.swap ({swap}) must be >= memory.limit ({limit})")

        def big(value: int) -> int:
            return _UNLIMITED_V1 * 4 if value == -1 else value

        if limit is not None and swap is not None:
            # The kernel keeps limit <= memsw at every step: raise memsw first when growing past it.
            if big(limit) > u.read_int(memsw_file):
                order = [(memsw_file, swap, f"{what}.swap"), (mem_file, limit, f"{what}.limit")]
            else:
                order = [(mem_file, limit, f"{what}.limit"), (memsw_file, swap, f"{what}.swap")]
            for path, value, name in order:
                u.write(path, str(value), name)
        elif limit is not None:
            u.write(mem_file, str(limit), f"{what}.limit")
        elif swap is not None:
            u.write(memsw_file, str(swap), f"{what}.swap")

    def _apply_cpu(self, cpu: dict) -> None:
        what = "linux.resources.cpu"
        if cpu.get("shares"):
            u.write(self._file("cpu", "cpu.shares", f"{what}.shares"), str(cpu["shares"]), f"{what}.shares")
        writes = []
        if cpu.get("period"):
            writes.append((self._file("cpu", "cpu.cfs_period_us", f"{what}.period"), str(cpu["period"]),
                           f"{what}.period"))
        if cpu.get("quota"):
            writes.append((self._file("cpu", "cpu.cfs_quota_us", f"{what}.quota"), str(cpu["quota"]),
                           f"{what}.quota"))
        try:
            for path, value, name in writes:
                u.write(path, value, name)
        except ResourceError:
            if len(writes) != 2:
                raise
            # The new period may conflict with the old quota (or vice versa): the other order then works.
            for path, value, name in reversed(writes):
                u.write(path, value, name)
        if cpu.get("burst") is not None:
            u.write(self._file("cpu", "cpu.cfs_burst_us", f"{what}.burst"), str(cpu["burst"]), f"{what}.burst")
        # Realtime: period first, so that the runtime is checked against the new period.
        for key, name in (("realtimePeriod", "cpu.rt_period_us"), ("realtimeRuntime", "cpu.rt_runtime_us")):
            if cpu.get(key):
                u.write(self._file("cpu", name, f"{what}.{key}"), str(cpu[key]), f"{what}.{key}")
        if cpu.get("idle") is not None:
            u.write(self._file("cpu", "cpu.idle", f"{what}.idle"), str(cpu["idle"]), f"{what}.idle")

    def _apply_blkio(self, blk: dict) -> None:
        what = "linux.resources.blockIO"
        d = self._need("blkio", what)
        # Newer kernels only have the BFQ weight files.
        weight_file = "blkio.weight" if os.path.exists(os.path.join(d, "blkio.weight")) else "blkio.bfq.weight"
        wdev_file = ("blkio.weight_device" if os.path.exists(os.path.join(d, "blkio.weight_device"))
                     else "blkio.bfq.weight_device")
        if blk.get("weight"):
            u.write(self._file("blkio", weight_file, f"{what}.weight"), str(blk["weight"]), f"{what}.weight")
        if blk.get("leafWeight"):
            u.write(self._file("blkio", "blkio.leaf_weight", f"{what}.leafWeight"), str(blk["leafWeight"]),
                    f"{what}.leafWeight")
        for i, dev in enumerate(blk.get("weightDevice") or []):
            name = f"{what}.weightDevice[{i}]"
            if dev.get("weight"):
                u.write(self._file("blkio", wdev_file, name), f"{dev['major']}:{dev['minor']} {dev['weight']}", name)
            if dev.get("leafWeight"):
                u.write(self._file("blkio", "blkio.leaf_weight_device", name),
                        f"{dev['major']}:{dev['minor']} {dev['leafWeight']}", name)
        for key, fname in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                           ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                           ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                           ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
            for i, dev in enumerate(blk.get(key) or []):
                name = f"{what}.{key}[{i}]"
                u.write(self._file("blkio", fname, name), f"{dev['major']}:{dev['minor']} {dev.get('rate', 0)}", name)

    def _apply_network(self, net: dict) -> None:
        what = "linux.resources.network"
        if net.get("classID"):
            u.write(self._file("net_cls", "net_cls.classid", f"{what}.classID"), str(net["classID"]),
                    f"{what}.classID")
        for i, prio in enumerate(net.get("priorities") or []):
            name = f"{what}.priorities[{i}]"
            u.write(self._file("net_prio", "net_prio.ifpriomap", name), f"{prio['name']} {prio['priority']}", name)

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"cpu": self._cpu_stats(), "memory": self._memory_stats(), "pids": self._pids_stats(),
                "blkio": self._blkio_stats(), "hugetlb": self._hugetlb_stats()}

    def _cpu_stats(self) -> dict:
        usage = {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [], "kernel": 0, "user": 0}
        acct = self._dir("cpuacct")
        if acct:
            usage["total"] = u.read_int(os.path.join(acct, "cpuacct.usage"))
            for key, name in (("percpu", "cpuacct.usage_percpu"), ("percpu_kernel", "cpuacct.usage_percpu_sys"),
                              ("percpu_user", "cpuacct.usage_percpu_user")):
                try:
                    usage[key] = [int(x) for x in u.read(os.path.join(acct, name)).split()]
                except OSError:
                    pass
            if os.path.exists(os.path.join(acct, "cpuacct.usage_sys")):
                usage["kernel"] = u.read_int(os.path.join(acct, "cpuacct.usage_sys"))
                usage["user"] = u.read_int(os.path.join(acct, "cpuacct.usage_user"))
            else:
                ticks = u.read_kv(os.path.join(acct, "cpuacct.stat"))
                usage["kernel"] = ticks.get("system", 0) * 1_000_000_000 // u.CLK_TCK
                usage["user"] = ticks.get("user", 0) * 1_000_000_000 // u.CLK_TCK
        throttling = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        cpu = self._dir("cpu")
        if cpu:
            stat = u.read_kv(os.path.join(cpu, "cpu.stat"))
            throttling = {"periods": stat.get("nr_periods", 0), "throttled_periods": stat.get("nr_throttled", 0),
                          "throttled_time": stat.get("throttled_time", 0)}
        return {"usage": usage, "throttling": throttling}

    def _memory_stats(self) -> dict:
        d = self._dir("memory")
        if d is None:
            return {}

        def entry(prefix: str) -> dict:
            limit = u.read_int(os.path.join(d, f"{prefix}.limit_in_bytes"))
            return {"limit": limit, "usage": u.read_int(os.path.join(d, f"{prefix}.usage_in_bytes")),
                    "max": u.read_int(os.path.join(d, f"{prefix}.max_usage_in_bytes")),
                    "failcnt": u.read_int(os.path.join(d, f"{prefix}.failcnt"))}

        raw = u.read_kv(os.path.join(d, "memory.stat"))
        result = {"cache": raw.get("total_cache", raw.get("cache", 0)), "usage": entry("memory"), "raw": raw}
        if os.path.exists(os.path.join(d, "memory.memsw.usage_in_bytes")):
            result["swap"] = entry("memory.memsw")
        if os.path.exists(os.path.join(d, "memory.kmem.usage_in_bytes")):
            result["kernel"] = entry("memory.kmem")
        if os.path.exists(os.path.join(d, "memory.kmem.tcp.usage_in_bytes")):
            result["kernelTCP"] = entry("memory.kmem.tcp")
        return result

    def _pids_stats(self) -> dict:
        d = self._dir("pids")
        if d is None:
            return {}
        limit = u.read_int(os.path.join(d, "pids.max"))
        return {"current": u.read_int(os.path.join(d, "pids.current")), "limit": 0 if limit < 0 else limit}

    def _blkio_stats(self) -> dict:
        d = self._dir("blkio")
        if d is None:
            return {}
        result = {}
        for key, names in (("ioServiceBytesRecursive", ("blkio.io_service_bytes_recursive",
                                                        "blkio.throttle.io_service_bytes_recursive")),
                           ("ioServicedRecursive", ("blkio.io_serviced_recursive",
                                                    "blkio.throttle.io_serviced_recursive"))):
            for name in names:
                path = os.path.join(d, name)
                if os.path.exists(path):
                    result[key] = _blkio_entries(u.read(path))
                    break
            else:
                result[key] = []
        return result

    def _hugetlb_stats(self) -> dict:
        d = self._dir("hugetlb")
        if d is None:
            return {}
        result = {}
        for name in sorted(os.listdir(d)):
            if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes") and ".rsvd." not in name:
                size = name[len("hugetlb."):-len(".usage_in_bytes")]
                result[size] = {"usage": u.read_int(os.path.join(d, name)),
                                "max": u.read_int(os.path.join(d, f"hugetlb.{size}.max_usage_in_bytes")),
                                "failcnt": u.read_int(os.path.join(d, f"hugetlb.{size}.failcnt"))}
        return result


def _blkio_entries(text: str) -> list[dict]:
    """"8:0 Read 4096" lines -> runc BlkioEntry dicts (the trailing "Total N" line is dropped)."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, minor = parts[0].split(":", 1)
        entries.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return entries


def _rdma_line(dev: str, limits: dict) -> str:
    parts = []
    if limits.get("hcaHandles") is not None:
        parts.append(f"hca_handle={limits['hcaHandles']}")
    if limits.get("hcaObjects") is not None:
        parts.append(f"hca_object={limits['hcaObjects']}")
    return f"{dev} {' '.join(parts)}" if parts else ""
