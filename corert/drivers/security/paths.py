"""Default masked and read-only paths for `corert run` (the docker/podman defaults).

Masked: a file becomes a bind of /dev/null, a directory an empty read-only tmpfs; paths missing in the
container are skipped. Read-only: bind-remounted read-only in place. `--privileged` uses neither list.
"""
from __future__ import annotations

# Kernel interfaces that leak host information or allow side channels (timers, interrupts, keys,
# raw memory, firmware tables, RAPL energy counters: CVE-2020-8694).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
)

# Host-wide knobs that a container may read but must not write.
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
