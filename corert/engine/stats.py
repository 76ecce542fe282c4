"""Container statistics as `docker stats` shows them, plus pressure stall information (PSI).

One implementation for `corert stats` (corert.frontend.stats shows it) and `Container.stats()`: read_stats() returns runc's `events --stats`
data (cpu, memory, pids, blkio, hugetlb), the container's PSI and the host's, and docker's derived numbers:

- cpu_percent: docker's formula over the interval since `previous` (a Reading from the last call):
  (container cpu delta / host cpu delta from /proc/stat) * online CPUs * 100, so one busy thread is ~100%.
  Without a previous reading the interval is the container's lifetime (usage / wall time since start).
- mem_usage: usage minus inactive file cache (as docker); mem_limit: the cgroup limit, or the host's
  memory when that is smaller (unlimited); mem_percent = usage / limit.
- net_rx/tx_bytes: /proc/<init>/net/dev of the container's netns, every interface but lo (None when the
  container shares the host's netns); block_read/write_bytes: the blkio/io service bytes; pids_current.

A stopped container shows zeros, as docker does (a created one has its waiting init: real numbers).
"""
from __future__ import annotations

import os
import time

from corert.drivers.cgroups._util import CLK_TCK
from corert.engine.state import ContainerRecord, StateStore, live_status

_NS = 1_000_000_000
LIVE = ("created", "running", "paused")   # the states with a process in the cgroup


class Reading:
    """The raw counters of one sample, kept by the caller so the next sample can make rates of them."""

    __slots__ = ("cpu_ns", "system_ns", "online_cpus", "boot_ns")

    def __init__(self, cpu_ns: int, system_ns: int | None, online_cpus: int, boot_ns: int) -> None:
        self.cpu_ns = cpu_ns            # the container's cumulative CPU time
        self.system_ns = system_ns      # the host's cumulative CPU time (all CPUs), None = unknown
        self.online_cpus = online_cpus
        self.boot_ns = boot_ns          # CLOCK_BOOTTIME of the sample


def system_cpu() -> tuple[int, int]:
    """(host CPU time in ns summed over all CPUs, online CPUs) from /proc/stat, as docker reads it: the
    first seven fields (user..softirq) of the "cpu" line, and the number of "cpuN" lines."""
    total, cpus = 0, 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            fields = line.split()
            if fields[0] == "cpu":
                total = sum(int(x) for x in fields[1:8]) * _NS // CLK_TCK
            else:
                cpus += 1
    return total, cpus or (os.cpu_count() or 1)


class HostSample:
    """What read_stats needs from the host (CPU time, online CPUs, memory, PSI): read once per frame of
    `corert stats`, not once per container."""

    __slots__ = ("system_ns", "online_cpus", "memory", "pressure")

    def __init__(self) -> None:
        from corert.drivers.cgroups import psi

        self.system_ns, self.online_cpus = system_cpu()
        self.memory = host_memory()
        self.pressure = psi.host()


def host_memory() -> int:
    """MemTotal in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def net_io(pid: int) -> tuple[int, int] | None:
    """(rx bytes, tx bytes) over the non-loopback interfaces of pid's network namespace; None when it is
    the host's namespace (docker shows no network I/O then) or the process is gone."""
    try:
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return None
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]   # two header lines
    except OSError:
        return None
    rx = tx = 0
    for line in lines:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])   # 8 receive columns come first
    return rx, tx


def block_io(blkio: dict) -> tuple[int, int]:
    """(read bytes, write bytes) summed over devices from runc's blkio stats."""
    read = write = 0
    for entry in blkio.get("ioServiceBytesRecursive") or []:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += int(entry.get("value", 0))
        elif op == "write":
            write += int(entry.get("value", 0))
    return read, write


def memory_usage(memory: dict) -> int:
    """docker's "MEM USAGE": usage without the inactive page cache (total_inactive_file on v1,
    inactive_file on v2), which the kernel can drop at any time."""
    usage = int((memory.get("usage") or {}).get("usage", 0))
    raw = memory.get("raw") or {}
    inactive = raw.get("total_inactive_file", raw.get("inactive_file", 0))
    return usage - inactive if 0 < inactive < usage else usage


def cpu_percent(current: Reading, previous: Reading) -> float:
    """docker's CPU %: the container's share of host CPU time in the interval, times the online CPUs;
    by wall time when the host's CPU time is unknown for one of the two readings."""
    cpu_delta = current.cpu_ns - previous.cpu_ns
    if cpu_delta <= 0:
        return 0.0
    if current.system_ns is not None and previous.system_ns is not None:
        system_delta = current.system_ns - previous.system_ns
        return cpu_delta / system_delta * current.online_cpus * 100.0 if system_delta > 0 else 0.0
    wall = current.boot_ns - previous.boot_ns
    return cpu_delta / wall * 100.0 if wall > 0 else 0.0


def _boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def read_stats(store: StateStore, record: ContainerRecord, previous: Reading | None = None,
               host: HostSample | None = None) -> tuple[dict, Reading]:
    """One sample of a container: (the stats dict described in the module doc, the Reading to pass as
    `previous` next time). `host`: the frame's host sample when sampling several containers."""
    host = host or HostSample()
    status = live_status(store, record)
    live = status in LIVE
    system_ns, online = host.system_ns, host.online_cpus
    result: dict = {"id": record.id, "name": record.extra.get("name", record.id), "status": status,
                    "read": time.time(), "cpu": {}, "memory": {}, "pids": {}, "blkio": {}, "hugetlb": {},
                    "pressure": {}, "host_pressure": host.pressure, "online_cpus": online}
    raw: dict = {}
    if live and record.cgroup:
        from corert.drivers.cgroups import load_handle, psi
        from corert.errors import CorertError

        handle = None
        try:
            handle = load_handle(record.cgroup)
            raw = handle.stats()
        except (OSError, CorertError):   # the container exited between the status check and the read
            raw = {}
        pressure_dir = handle.pressure_dir() if handle is not None else None
        result["pressure"] = psi.read(pressure_dir) if pressure_dir else {}
    result.update(raw)
    reading = Reading(int(((raw.get("cpu") or {}).get("usage") or {}).get("total", 0)), system_ns, online,
                      _boot_ns())
    if previous is None and live and record.pid_start:
        # No earlier sample: measure from the start of the init (CPU time 0 then; starttime is in ticks).
        previous = Reading(0, None, online, record.pid_start * _NS // CLK_TCK)
    memory = result["memory"] or {}
    limit = int((memory.get("usage") or {}).get("limit", 0))
    host_mem = host.memory
    if limit <= 0 or (host_mem and limit > host_mem):
        limit = host_mem   # unlimited: the cgroup shows a huge number, docker shows the host's memory
    usage = memory_usage(memory) if memory else 0
    net = net_io(record.pid) if live else None
    block_read, block_write = block_io(result["blkio"] or {})
    result.update({
        "cpu_percent": cpu_percent(reading, previous) if live and previous is not None else 0.0,
        "mem_usage": usage,
        "mem_limit": limit if live else 0,
        "mem_percent": usage / limit * 100.0 if live and limit > 0 else 0.0,
        "net_rx_bytes": net[0] if net else (0 if not live else None),
        "net_tx_bytes": net[1] if net else (0 if not live else None),
        "block_read_bytes": block_read,
        "block_write_bytes": block_write,
        "pids_current": int((result["pids"] or {}).get("current", 0)),
    })
    return result, reading
