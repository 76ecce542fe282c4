"""cgroup v2 (unified hierarchy): one directory per container, controllers enabled top-down.

Controllers a container needs are enabled in cgroup.subtree_control of its ancestors from the deepest
existing one down; the no-internal-processes rule means that fails where the ancestor has processes
(except at the root), which is reported with that reason. Device rules become an eBPF program.
"""
from __future__ import annotations

import os

from corert.errors import ResourceError

from . import _util as u
from .convert import (blkio_weight_to_io_weight, cpu_max_value, host_dir, pids_max_value, requested_limits,
                      resolve_cgroups_path, shares_to_weight, swap_to_v2, v2_limit)
from .devices_bpf import attach_device_filter, device_rules_to_bpf

__all__ = ["V2Driver", "V2Handle", "device_rules_to_bpf", "unified_mount"]

_OPTIONAL = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
_U64_MAX = (1 << 64) - 1
# OCI field (first path component under linux.resources) -> the v2 controller it needs.
_FIELD_CONTROLLER = {"memory": "memory", "pids": "pids", "blockIO": "io", "hugepageLimits": "hugetlb",
                     "rdma": "rdma"}
_REFUSED_UNIFIED = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "cgroup.kill", "cgroup.type")


def unified_mount(mounts: list | None = None) -> tuple[str, str] | None:
    """(mountpoint, root) of the cgroup2 hierarchy, preferring /sys/fs/cgroup; None if not mounted."""
    found = [(mp, root) for fstype, mp, root, _ in (u.cgroup_mounts() if mounts is None else mounts)
             if fstype == "cgroup2"]
    for mp, root in found:
        if mp == "/sys/fs/cgroup":
            return mp, root
    return found[0] if found else None


def required_controllers(resources: dict) -> dict[str, str]:
    """controller -> the OCI field that needs it (for the error message when it cannot be enabled)."""
    needed: dict[str, str] = {}
    for path in requested_limits(resources, include_devices=False):
        parts = path.split(".")   # linux.resources.<field>.<key>...
        field = parts[2].split("[")[0]
        if field == "cpu":
            controller = "cpuset" if parts[3] in ("cpus", "mems") else "cpu"
        elif field == "unified":
            controller = parts[3] if len(parts) > 3 else ""
            if controller in ("cgroup", ""):
                continue
        else:
            controller = _FIELD_CONTROLLER.get(field, "")
        if controller:
            needed.setdefault(controller, path)
    return needed


class V2Driver:
    name = "v2"

    def __init__(self, note: str | None = None, host: tuple | None = None) -> None:
        self.note = note
        self._host = host   # what detect() read of the host; read at create when None

    def create(self, container_id: str, cgroups_path: str | None, resources: dict | None) -> "V2Handle":
        resources = resources or {}
        mounts, current_cgroups = u.host_view(self._host)
        mount = unified_mount(mounts)
        if mount is None:
            raise ResourceError("cgroup v2: no cgroup2 filesystem is mounted")
        mountpoint, root = mount
        current = current_cgroups.get("", "/")
        target = host_dir(mountpoint, root, resolve_cgroups_path(container_id, cgroups_path, current))
        ours = host_dir(mountpoint, root, current)
        created = u.make_dirs(target)
        try:
            # Parents whose subtree_control decides what the container gets: the deepest existing
            # ancestor, then every intermediate we created.
            parents = [os.path.dirname(d) for d in created] or [os.path.dirname(target)]
            # The hierarchy root is never "ours", even when we run in it: it is the whole host's.
            owned = {p for p in parents if p in created or (p == ours and p.rstrip("/") != mountpoint.rstrip("/"))}
            _enable_controllers(parents, owned, required_controllers(resources))
            handle = V2Handle(target, mountpoint)
            handle.apply(resources, update=False)
            return handle
        except OSError as e:   # a read of a cgroup file that vanished or is unreadable
            u.remove_dirs(created)
            raise ResourceError(f"cgroup: {e.filename}: {e.strerror}") from None
        except BaseException:
            u.remove_dirs(created)
            raise

    def load(self, state: dict) -> "V2Handle":
        if state.get("driver") != "v2":
            raise ResourceError(f"cgroup state is for driver {state.get('driver')!r}, not v2")
        return V2Handle(state["path"], state.get("mount", "/sys/fs/cgroup"))


def _enable_controllers(parents: list[str], owned: set[str], required: dict[str, str]) -> None:
    for parent in parents:
        available = set(u.read(os.path.join(parent, "cgroup.controllers")).split())
        enabled = set(u.read(os.path.join(parent, "cgroup.subtree_control")).split())
        control = os.path.join(parent, "cgroup.subtree_control")
        for controller, what in required.items():
            if controller in enabled:
                continue
            if controller not in available:
                raise ResourceError(f"{what}: the {controller} controller is not available in {parent} "
                                    f"(not enabled by its parent / not delegated)")
            try:
                u.write(control, f"+{controller}", what)
            except ResourceError as e:
                if _has_processes(parent):
                    raise ResourceError(f"{what}: cannot enable the {controller} controller below {parent}: it "
                                        f"has processes (cgroup v2 no-internal-processes rule); use a "
                                        f"cgroupsPath outside it") from None
                raise e
            enabled.add(controller)
        if parent in owned:
            # Best effort: makes stats and a later `update` work without the config asking up front.
            for controller in _OPTIONAL:
                if controller in available and controller not in enabled:
                    try:
                        u.write(control, f"+{controller}", "cgroup controllers")
                    except ResourceError:
                        pass


def _has_processes(d: str) -> bool:
    try:
        return bool(u.read(os.path.join(d, "cgroup.procs")))
    except OSError:
        return False


class V2Handle:
    def __init__(self, path: str, mount: str = "/sys/fs/cgroup") -> None:
        self.path = path
        self.mount = mount

    def _f(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _file(self, name: str, what: str) -> str:
        path = self._f(name)
        if not os.path.exists(path):
            controller = name.split(".")[0]
            raise ResourceError(f"{what}: {name} does not exist (is the {controller} controller enabled for "
                                f"{os.path.dirname(self.path)}?)")
        return path

    # -- protocol -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"driver": "v2", "path": self.path, "mount": self.mount}

    def attach(self, pid: int) -> None:
        u.write(self._f("cgroup.procs"), str(pid), f"cgroup attach of pid {pid}")

    def self_attach_fds(self) -> list[int]:
        return []   # clone3 places the child (into_cgroup_fd)

    def into_cgroup_fd(self) -> int:
        try:
            return os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ResourceError(f"cgroup: cannot open {self.path}: {e.strerror}") from None

    def update(self, resources: dict) -> None:
        self.apply(resources, update=True)

    def pids(self) -> list[int]:
        return sorted(u.procs(self.path))

    def _frozen_marker(self) -> tuple[str, str]:
        """(file, line): frozen when the file holds the line (also what the native front checks)."""
        return self._f("cgroup.events"), "frozen 1"

    def is_frozen(self) -> bool:
        return u.holds_line(*self._frozen_marker())

    def freeze(self) -> None:
        u.write(self._f("cgroup.freeze"), "1", "pause")
        if not u.wait_for(self.is_frozen, 5.0):
            u.write(self._f("cgroup.freeze"), "0", "pause")
            raise ResourceError("pause: the cgroup did not report frozen within 5 s")

    def thaw(self) -> None:
        u.write(self._f("cgroup.freeze"), "0", "resume")
        if not u.wait_for(lambda: not self.is_frozen(), 5.0):
            raise ResourceError("resume: the cgroup did not thaw within 5 s")

    def kill_all(self, sig: int) -> None:
        if sig == u.SIGKILL and os.path.exists(self._f("cgroup.kill")):
            u.write(self._f("cgroup.kill"), "1", "kill --all")
            return
        was_frozen = self.is_frozen()
        frozen = False
        if not was_frozen:
            try:
                self.freeze()   # no fork can race the listing below
                frozen = True
            except ResourceError:
                pass
        try:
            u.signal_all(self.pids(), sig)
        finally:
            if frozen or (was_frozen and sig == u.SIGKILL):
                self.thaw()

    def oom_killed(self) -> bool:
        return u.read_kv(self._f("memory.events")).get("oom_kill", 0) > 0

    def pressure_dir(self) -> str | None:
        return self.path

    def container_mounts(self) -> list[tuple[str, str]]:
        return [(self.path, "")]

    def destroy(self) -> None:
        if not os.path.isdir(self.path):
            return
        u.kill_until_empty(self)
        u.rmdir_tree(self.path)

    def shortcut(self) -> tuple[list[str], list[tuple[str, str]]]:
        return [self.path], [self._frozen_marker()]

    # -- resources ------------------------------------------------------------------------------
    def apply(self, resources: dict, *, update: bool) -> None:
        resources = resources or {}
        cpu = resources.get("cpu") or {}
        for key in ("cpus", "mems"):
            if cpu.get(key):
                what = f"linux.resources.cpu.{key}"
                u.write(self._file(f"cpuset.{key}", what), str(cpu[key]), what)
        if resources.get("memory"):
            self._apply_memory(resources["memory"], update)
        self._apply_cpu(cpu)
        value = pids_max_value((resources.get("pids") or {}).get("limit"))
        if value is not None:
            u.write(self._file("pids.max", "linux.resources.pids.limit"), value, "linux.resources.pids.limit")
        if resources.get("blockIO"):
            self._apply_io(resources["blockIO"])
        for i, entry in enumerate(resources.get("hugepageLimits") or []):
            what = f"linux.resources.hugepageLimits[{i}]"
            u.write(self._file(f"hugetlb.{entry.get('pageSize')}.max", what), str(entry.get("limit", 0)), what)
        for dev, limits in (resources.get("rdma") or {}).items():
            parts = []
            if limits.get("hcaHandles") is not None:
                parts.append(f"hca_handle={limits['hcaHandles']}")
            if limits.get("hcaObjects") is not None:
                parts.append(f"hca_object={limits['hcaObjects']}")
            if parts:
                what = f"linux.resources.rdma.{dev}"
                u.write(self._file("rdma.max", what), f"{dev} {' '.join(parts)}", what)
        network = resources.get("network") or {}
        for key in ("classID", "priorities"):
            if network.get(key):
                raise ResourceError(f"linux.resources.network.{key}: net_cls/net_prio do not exist on cgroup v2")
        self._apply_unified(resources.get("unified") or {})
        if resources.get("devices"):
            self._apply_devices(resources["devices"])

    def _apply_memory(self, mem: dict, update: bool) -> None:
        what = "linux.resources.memory"
        for key in ("kernel", "kernelTCP"):
            if mem.get(key):
                raise ResourceError(f"{what}.{key}: kernel memory limits do not exist on cgroup v2")
        if mem.get("swappiness") is not None and mem["swappiness"] != -1:
            raise ResourceError(f"{what}.swappiness: per-cgroup swappiness does not exist on cgroup v2")
        if mem.get("disableOOMKiller"):
            raise ResourceError(f"{what}.disableOOMKiller: cannot disable the OOM killer on cgroup v2")
        limit = mem.get("limit") or None
        swap = mem.get("swap") or None
        if update and mem.get("checkBeforeUpdate") and limit and limit > 0:
            usage = u.read_int(self._f("memory.current"))
            if limit < usage:
                raise ResourceError(f"{what}.limit: {limit} is below the current usage {usage}")
        if swap is not None and swap != -1 and limit is None and update:
            limit = u.read_int(self._f("memory.max"))   # swap is relative to the limit already in place
        swap_max = swap_to_v2(swap, limit)
        if limit is not None and mem.get("limit"):
            u.write(self._file("memory.max", f"{what}.limit"), v2_limit(limit), f"{what}.limit")
        if swap_max in (-1, 0) and not os.path.exists(self._f("memory.swap.max")):
            swap_max = None   # no swap accounting: "unlimited" and "no swap" need no file (as runc)
        if swap_max is not None:
            u.write(self._file("memory.swap.max", f"{what}.swap"), v2_limit(swap_max), f"{what}.swap")
        if mem.get("reservation"):
            u.write(self._file("memory.low", f"{what}.reservation"), v2_limit(mem["reservation"]),
                    f"{what}.reservation")

    def _apply_cpu(self, cpu: dict) -> None:
        what = "linux.resources.cpu"
        for key in ("realtimeRuntime", "realtimePeriod"):
            if cpu.get(key):
                raise ResourceError(f"{what}.{key}: realtime cpu limits do not exist on cgroup v2")
        if cpu.get("shares"):
            u.write(self._file("cpu.weight", f"{what}.shares"), str(shares_to_weight(cpu["shares"])),
                    f"{what}.shares")
        value = cpu_max_value(cpu.get("quota"), cpu.get("period"))
        if value is not None:
            u.write(self._file("cpu.max", f"{what}.quota"), value, f"{what}.quota")
        if cpu.get("burst") is not None:
            u.write(self._file("cpu.max.burst", f"{what}.burst"), str(cpu["burst"]), f"{what}.burst")
        if cpu.get("idle") is not None:
            u.write(self._file("cpu.idle", f"{what}.idle"), str(cpu["idle"]), f"{what}.idle")

    def _apply_io(self, blk: dict) -> None:
        what = "linux.resources.blockIO"
        if blk.get("leafWeight"):
            raise ResourceError(f"{what}.leafWeight: leaf weights do not exist on cgroup v2")
        bfq = os.path.exists(self._f("io.bfq.weight"))
        # io.bfq.weight takes blkio's 1..1000 scale; io.weight (iocost) is 1..10000.
        name = "io.bfq.weight" if bfq else "io.weight"

        def scaled(weight: int) -> int:
            return weight if bfq else blkio_weight_to_io_weight(weight)

        if blk.get("weight"):
            u.write(self._file(name, f"{what}.weight"), f"default {scaled(blk['weight'])}", f"{what}.weight")
        for i, dev in enumerate(blk.get("weightDevice") or []):
            where = f"{what}.weightDevice[{i}]"
            if dev.get("leafWeight"):
                raise ResourceError(f"{where}.leafWeight: leaf weights do not exist on cgroup v2")
            if dev.get("weight"):
                u.write(self._file(name, where), f"{dev['major']}:{dev['minor']} {scaled(dev['weight'])}", where)
        for key, limit in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                           ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
            for i, dev in enumerate(blk.get(key) or []):
                where = f"{what}.{key}[{i}]"
                rate = dev.get("rate", 0)
                u.write(self._file("io.max", where), f"{dev['major']}:{dev['minor']} {limit}={rate or 'max'}",
                        where)

    def _apply_unified(self, unified: dict) -> None:
        for key, value in unified.items():
            what = f"linux.resources.unified.{key}"
            if not key or "/" in key or ".." in key or key.startswith(".") or key in _REFUSED_UNIFIED:
                raise ResourceError(f"{what}: not a settable cgroup file name")
            u.write(self._file(key, what), str(value), what)

    def _apply_devices(self, rules: list) -> None:
        program = device_rules_to_bpf(rules)
        try:
            attach_device_filter(self.path, program)
        except ResourceError:
            # Rootless cannot load BPF; its user namespace already keeps host devices out of reach.
            if os.geteuid() != 0:
                return
            raise

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict:
        cpu = u.read_kv(self._f("cpu.stat"))
        result: dict = {
            "cpu": {
                "usage": {"total": cpu.get("usage_usec", 0) * 1000, "percpu": [], "percpu_kernel": [],
                          "percpu_user": [], "kernel": cpu.get("system_usec", 0) * 1000,
                          "user": cpu.get("user_usec", 0) * 1000},
                "throttling": {"periods": cpu.get("nr_periods", 0), "throttled_periods": cpu.get("nr_throttled", 0),
                               "throttled_time": cpu.get("throttled_usec", 0) * 1000},
            },
            "memory": {}, "pids": {}, "blkio": {}, "hugetlb": {},
        }
        if os.path.exists(self._f("memory.current")):
            raw = u.read_kv(self._f("memory.stat"))
            events = u.read_kv(self._f("memory.events"))

            def limit(name: str) -> int:
                value = u.read_int(self._f(name))
                return _U64_MAX if value < 0 else value

            result["memory"] = {
                "cache": raw.get("file", 0),
                "usage": {"limit": limit("memory.max"), "usage": u.read_int(self._f("memory.current")),
                          "max": u.read_int(self._f("memory.peak")), "failcnt": events.get("max", 0)},
                "swap": {"limit": limit("memory.swap.max"), "usage": u.read_int(self._f("memory.swap.current")),
                         "max": u.read_int(self._f("memory.swap.peak")), "failcnt": 0},
                "raw": raw,
            }
        if os.path.exists(self._f("pids.current")):
            pids_limit = u.read_int(self._f("pids.max"))
            result["pids"] = {"current": u.read_int(self._f("pids.current")),
                              "limit": 0 if pids_limit < 0 else pids_limit}
        if os.path.exists(self._f("io.stat")):
            result["blkio"] = _io_stats(u.read(self._f("io.stat")))
        for name in sorted(os.listdir(self.path)):
            if name.startswith("hugetlb.") and name.endswith(".current") and ".rsvd." not in name:
                size = name[len("hugetlb."):-len(".current")]
                events = u.read_kv(self._f(f"hugetlb.{size}.events"))
                result["hugetlb"][size] = {"usage": u.read_int(self._f(name)),
                                           "max": u.read_int(self._f(f"hugetlb.{size}.max")),
                                           "failcnt": events.get("max", 0)}
        return result


def _io_stats(text: str) -> dict:
    """io.stat "8:0 rbytes=1 wbytes=2 rios=3 wios=4 ..." -> runc's blkio recursive entries."""
    service_bytes, serviced = [], []
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, minor = (int(x) for x in parts[0].split(":", 1))
        values = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for key, op, target in (("rbytes", "Read", service_bytes), ("wbytes", "Write", service_bytes),
                                ("rios", "Read", serviced), ("wios", "Write", serviced)):
            if key in values:
                target.append({"major": major, "minor": minor, "op": op, "value": int(values[key])})
    return {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}

