"""Linux capability names <-> numbers (linux/capability.h), shared by validation and the security driver."""
from __future__ import annotations

# Order is the kernel's numbering; CAP_CHECKPOINT_RESTORE (40) is the last one as of Linux 6.x.
_NAMES = (
    "CAP_CHOWN",               # 0
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",                # 5
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",    # 10
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",           # 15
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",           # 20
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",            # 25
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",       # 30
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",          # 35
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",  # 40
)

CAPABILITIES: dict[str, int] = {name: number for number, name in enumerate(_NAMES)}
CAP_NAMES: dict[int, str] = dict(enumerate(_NAMES))
ALL_CAPABILITIES: tuple[str, ...] = _NAMES

# The OCI process.capabilities sets, in the order the kernel applies them.
CAPABILITY_SETS: tuple[str, ...] = ("bounding", "effective", "inheritable", "permitted", "ambient")


def mask_to_caps(mask: int) -> list[str]:
    """The CAP_* names set in a mask, in kernel order; bits beyond the known table become "CAP_<n>"."""
    out = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            out.append(CAP_NAMES.get(bit, f"CAP_{bit}"))
        bit += 1
    return out

