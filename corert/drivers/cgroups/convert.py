"""Pure conversions and parsers shared by the cgroup drivers (no I/O, unit-tested on their own).

OCI linux.resources values -> cgroup file values (v1 and v2), cgroupsPath -> hierarchy path,
/proc/self/mountinfo and /proc/self/cgroup parsing, device rule normalisation.
"""
from __future__ import annotations

from corert import mountinfo as _mountinfo
from corert.errors import ResourceError

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
                  "net_cls", "net_prio", "perf_event", "rdma", "misc")


# ---------------------------------------------------------------------------------------------- numbers

def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cpu.weight (1..10000), the runc/crun formula; 0 = unset -> 0."""
    if not shares:
        return 0
    # Truncating division, as the C/Go originals do (matters for shares < 2).
    weight = 1 + int(((shares - 2) * 9999) / 262142)
    return max(1, min(10000, weight))


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000) as runc converts it; 0 = unset -> 0."""
    if not weight:
        return 0
    return max(1, min(10000, 1 + int(((weight - 10) * 9999) / 990)))


def swap_to_v2(swap: int | None, limit: int | None) -> int | None:
    """OCI memory.swap is memory+swap; v2 memory.swap.max is swap alone. None = leave, -1 = "max"."""
    if swap is None or swap == 0:
        return None
    if swap == -1:
        return -1
    if not limit or limit == -1:
        raise ResourceError("linux.resources.memory.swap: a swap limit needs a memory limit on cgroup v2")
    if limit < 0 or swap < 0:
        raise ResourceError(f"linux.resources.memory: invalid values limit={limit} swap={swap}")
    if swap < limit:
        raise ResourceError(f"linux.resources.memory.swap ({swap}) must be >= memory.limit ({limit})")
    return swap - limit


def v2_limit(value: int) -> str:
    """-1 (or any negative) means unlimited: "max"."""
    return "max" if value < 0 else str(value)


def cpu_max_value(quota: int | None, period: int | None) -> str | None:
    """cpu.max content for OCI cpu.quota/period; None = leave the file alone (both unset)."""
    quota = quota or 0
    period = period or 0
    if quota == 0 and period == 0:
        return None
    value = str(quota) if quota > 0 else "max"
    if period:
        value += f" {period}"
    return value


def pids_max_value(limit: int | None) -> str | None:
    """pids.max content: 0/None = leave, negative = "max"."""
    if not limit:
        return None
    return "max" if limit < 0 else str(limit)


# ---------------------------------------------------------------------------------------------- devices

def normalize_device_rule(rule: dict, index: int) -> tuple[bool, str, int, int, str]:
    """OCI device rule -> (allow, type a|c|b, major (-1 = any), minor (-1 = any), access subset of "rwm")."""
    where = f"linux.resources.devices[{index}]"
    if not isinstance(rule, dict) or "allow" not in rule:
        raise ResourceError(f"{where}: a device rule needs 'allow'")
    kind = rule.get("type") or "a"
    if kind not in ("a", "c", "b"):
        raise ResourceError(f"{where}.type: {kind!r} is not one of a, c, b")
    numbers = []
    for key in ("major", "minor"):
        value = rule.get(key)
        if value is None:
            value = -1
        if not isinstance(value, int) or value < -1:
            raise ResourceError(f"{where}.{key}: {value!r} is not a device number")
        numbers.append(value)
    access = rule.get("access") or "rwm"
    if not isinstance(access, str) or set(access) - set("rwm"):
        raise ResourceError(f"{where}.access: {access!r} is not a subset of 'rwm'")
    ordered = "".join(c for c in "rwm" if c in access)
    return bool(rule["allow"]), kind, numbers[0], numbers[1], ordered


def device_rule_v1(rule: dict, index: int) -> tuple[str, str]:
    """OCI device rule -> (file, line) for the v1 devices controller, e.g. ("devices.allow", "c 1:3 rwm")."""
    allow, kind, major, minor, access = normalize_device_rule(rule, index)
    maj = "*" if major == -1 else str(major)
    mnr = "*" if minor == -1 else str(minor)
    if kind == "a" and major == -1 and minor == -1 and access == "rwm":
        line = "a"   # the whole-policy form: "a" switches the default
    else:
        line = f"{kind} {maj}:{mnr} {access}"
    return ("devices.allow" if allow else "devices.deny"), line


# ---------------------------------------------------------------------------------------------- paths

def expand_slice(slice_name: str) -> str:
    """systemd slice name -> its path: "a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" -> ""."""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise ResourceError(f"cgroupsPath: invalid slice name {slice_name!r}")
    base = slice_name[: -len(".slice")]
    if base == "-":
        return ""
    if not base or base.startswith("-") or base.endswith("-") or "--" in base:
        raise ResourceError(f"cgroupsPath: invalid slice name {slice_name!r}")
    parts = base.split("-")
    return "".join("/" + "-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def _clean(path: str) -> str:
    """Normalise to "/a/b" and refuse anything that walks up ("..")."""
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise ResourceError(f"cgroupsPath: {path!r} must not contain '..'")
        parts.append(part)
    return "/" + "/".join(parts)


def resolve_cgroups_path(container_id: str, cgroups_path: str | None, current: str) -> str:
    """The container's cgroup as a path from the hierarchy root ("/..."), given our current cgroup."""
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise ResourceError(f"cgroup: invalid container id {container_id!r}")
    if not cgroups_path:
        return _clean(f"{current}/corert-{container_id}")
    if cgroups_path.startswith("/"):
        return _clean(cgroups_path)
    if cgroups_path.count(":") == 2:
        # systemd form "slice:prefix:name", mapped the way runc's cgroupfs driver falls back.
        slice_name, prefix, name = cgroups_path.split(":")
        if not name or "/" in name or "/" in prefix:
            raise ResourceError(f"cgroupsPath: invalid systemd form {cgroups_path!r}")
        parent = expand_slice(slice_name or "system.slice")
        if name.endswith(".slice"):
            leaf = name
        else:
            leaf = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        return _clean(f"{parent}/{leaf}")
    return _clean(f"{current}/{cgroups_path}")


# ---------------------------------------------------------------------------------------------- /proc

def parse_cgroup_mounts(mountinfo: str) -> list[tuple[str, str, str, frozenset[str]]]:
    """cgroup mounts from /proc/self/mountinfo: (fstype "cgroup"|"cgroup2", mountpoint, root, controllers).

    For v1 the controllers are the super options naming controllers ("cpu", "cpuacct", "name=systemd");
    for cgroup2 the set is empty (its controllers are in cgroup.controllers).
    """
    result = []
    for m in _mountinfo.parse(mountinfo):
        if m.fstype not in ("cgroup", "cgroup2"):
            continue
        controllers: frozenset[str] = frozenset()
        if m.fstype == "cgroup":
            opts = m.super_options.split(",")
            controllers = frozenset(o for o in opts if o in V1_CONTROLLERS or o.startswith("name="))
        result.append((m.fstype, m.mount_point, m.root, controllers))
    return result


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> {controller or "name=x": path, "": v2 path}."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            result[""] = path
            continue
        for controller in controllers.split(","):
            result[controller] = path
    return result


def host_dir(mountpoint: str, mount_root: str, path: str) -> str:
    """A hierarchy path ("/a/b") -> the host directory, given where (and from which root) it is mounted."""
    if mount_root not in ("", "/"):
        if path == mount_root:
            path = "/"
        elif path.startswith(mount_root + "/"):
            path = path[len(mount_root):]
    return mountpoint.rstrip("/") + (path if path != "/" else "")


# ---------------------------------------------------------------------------------------------- requests

_NO_LIMIT = (None, 0, -1, False, "", {}, [])
_IDENTIFIERS = ("major", "minor", "pageSize")   # say which device/page size, not a limit themselves


def requested_limits(resources: dict | None, *, include_devices: bool = True) -> list[str]:
    """JSON paths under linux.resources that ask for something (unset/zero/-1/empty values do not)."""
    found: list[str] = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                if key not in _IDENTIFIERS:
                    walk(sub, f"{path}.{key}")
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(sub, f"{path}[{i}]")
        elif isinstance(value, bool):
            if value:
                found.append(path)
        elif value not in _NO_LIMIT:
            found.append(path)

    for key, value in (resources or {}).items():
        if key == "devices":
            if include_devices and value:
                found.append("linux.resources.devices")
            continue
        walk(value, f"linux.resources.{key}")
    return found
