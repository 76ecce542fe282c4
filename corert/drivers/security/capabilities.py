"""Capability sets: the docker default set, name lists -> kernel bitmasks, and docker's --cap-add/--cap-drop rules.

Hot path module (create/run build masks from config.json): stdlib only at top level; the name table
(corert.spec.capabilities) is imported inside the functions that need it.
"""
from __future__ import annotations

from corert.errors import ConfigError

# The set docker and podman give a non-privileged container (kernel numbering order).
DOCKER_DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
)

_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"


def caps_to_mask(names: list[str] | tuple[str, ...], json_path: str) -> int:
    """Bitmask (bit n = capability n) of OCI capability names; an unknown name is a ConfigError at json_path[i]."""
    from corert.spec.capabilities import CAPABILITIES

    if not isinstance(names, (list, tuple)):
        raise ConfigError(json_path, "must be a list of capability names")
    mask = 0
    for i, name in enumerate(names):
        number = CAPABILITIES.get(name) if isinstance(name, str) else None
        if number is None:
            raise ConfigError(f"{json_path}[{i}]", f"unknown capability {name!r}")
        mask |= 1 << number
    return mask


def kernel_cap_last_cap() -> int:
    """The highest capability number the running kernel knows; the table's last one if /proc cannot tell."""
    try:
        with open(_CAP_LAST_CAP, "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        from corert.spec.capabilities import CAPABILITIES

        return max(CAPABILITIES.values())


def kernel_cap_mask(last: int | None = None) -> int:
    """All capability bits the running kernel accepts: capset/PR_CAPBSET_DROP refuse bits beyond cap_last_cap,
    so masks handed to the fast path should be ANDed with this. last: kernel_cap_last_cap() if already read."""
    return (1 << ((kernel_cap_last_cap() if last is None else last) + 1)) - 1


def privileged_caps() -> list[str]:
    """Every named capability the running kernel knows (what `--privileged` and `--cap-add=ALL` grant)."""
    from corert.spec.capabilities import CAPABILITIES

    last = kernel_cap_last_cap()
    return [name for name, number in sorted(CAPABILITIES.items(), key=lambda kv: kv[1]) if number <= last]


def _normalize(names: list[str] | tuple[str, ...], flag: str) -> list[str]:
    """docker's spelling rules: case-insensitive, CAP_ prefix optional, "ALL" kept as is; duplicates dropped."""
    from corert.spec.capabilities import CAPABILITIES

    out: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if name != "ALL":
            if not name.startswith("CAP_"):
                name = "CAP_" + name
            if name not in CAPABILITIES:
                raise ConfigError(flag, f"unknown capability {raw!r}")
        if name not in out:
            out.append(name)
    return out


def apply_cap_changes(
    base: list[str] | tuple[str, ...],
    add: list[str] | tuple[str, ...],
    drop: list[str] | tuple[str, ...],
) -> list[str]:
    """The capability list after --cap-add/--cap-drop, with docker's precedence:
    add ALL -> every kernel capability except the dropped ones; else drop ALL -> only the added ones;
    else base minus drop, plus add. Names may omit the CAP_ prefix and use any case."""
    if not add and not drop:
        return list(base)
    adds = _normalize(add, "--cap-add")
    drops = _normalize(drop, "--cap-drop")
    if "ALL" in adds:
        caps = [c for c in privileged_caps() if c not in drops]
    elif "ALL" in drops:
        caps = list(adds)
    else:
        caps = [c for c in _normalize(base, "capabilities") if c not in drops and c != "ALL"]
        caps += [c for c in adds if c not in caps]
    return caps


def held_caps(names: list[str]) -> list[str]:
    """The names among `names` that this process's bounding set still has: what it can hand on at all.

    `--privileged` and `--cap-add=ALL` mean "everything we have", as podman reads them; on a host whose
    root was started without some capability (CAP_SYS_RESOURCE here) asking for it would fail capset."""
    from corert.spec.capabilities import CAPABILITIES

    bounding = -1
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    bounding = int(line.split()[1], 16)
    except (OSError, ValueError):
        return list(names)
    return [n for n in names if bounding >> CAPABILITIES[n] & 1]
