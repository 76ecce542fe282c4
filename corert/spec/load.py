"""Load a bundle's config.json and validate it: every refusal is a ConfigError naming the JSON path.

Runs on every `create`, so it is plain Python over dicts with light imports only. Unknown fields are
ignored (as the OCI spec asks); fields corert knows but cannot honour are refused, never silently dropped.
"""
from __future__ import annotations

import os

from corert import jsonio
from corert.errors import ConfigError
from corert.spec import host
from corert.spec.capabilities import CAPABILITIES, CAPABILITY_SETS
from corert.spec.mountopts import parse_mount_options

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:  # pathlib costs ~5 ms to import; load only needs strings
    from pathlib import Path

CONFIG_NAME = "config.json"

NAMESPACE_TYPES = frozenset(("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"))

RLIMIT_NUMBERS: dict[str, int] = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

# Filesystem types a mount entry may name; binds may use any type (commonly "bind" or "none").
MOUNT_TYPES = frozenset((
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "ramfs", "overlay", "devtmpfs",
    "securityfs", "debugfs", "tracefs", "hugetlbfs", "binfmt_misc", "fusectl", "pstore", "configfs",
    "bpf", "efivarfs", "fuse", "fuse.fuse-overlayfs", "bind", "rbind",
))

HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")

SECCOMP_ACTIONS = frozenset((
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
))
SECCOMP_OPERATORS = frozenset((
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
))
# The architectures libseccomp (through pyseccomp) can add to a filter.
SECCOMP_ARCHS = frozenset((
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_RISCV64",
))
SECCOMP_FLAGS = frozenset((
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
))

IOPRIO_CLASSES: dict[str, int] = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13

PERSONALITY_DOMAINS: dict[str, int] = {"LINUX": 0x0000, "LINUX32": 0x0008}
ROOTFS_PROPAGATIONS = frozenset(("private", "rprivate", "slave", "rslave", "shared", "rshared",
                                 "unbindable", "runbindable"))

# sysctls that live in the IPC namespace (runc's list; prefixes cover msg*/shm*/sem_next_id).
_IPC_SYSCTL_PREFIXES = ("kernel.msg", "kernel.shm", "kernel.sem", "fs.mqueue.")

_MAX_ID_MAP_LINES = 340  # the kernel's limit on lines in uid_map/gid_map
_MAX_ID = (1 << 32) - 1


def load_config(bundle: Path | str) -> dict:
    """Read bundle/config.json into a dict (no validation; call validate())."""
    path = os.path.join(bundle, CONFIG_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("", f"JSON specification file {CONFIG_NAME} not found in bundle {str(bundle)!r}") from None
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}") from None
    try:
        config = jsonio.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ConfigError("", f"{CONFIG_NAME} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError("", f"{CONFIG_NAME} must hold a JSON object")
    return config


def load_and_validate(bundle: Path | str, *, require_process: bool = True) -> dict:
    """load_config + validate: what `create` calls."""
    config = load_config(bundle)
    validate(config, bundle, require_process=require_process)
    return config


def ioprio_value(obj: dict, path: str = "process.ioPriority") -> int:
    """OCI ioPriority {class, priority} -> the ioprio_set(2) value: class << 13 | priority."""
    _check_dict(obj, path)
    cls = obj.get("class")
    if cls not in IOPRIO_CLASSES:
        raise ConfigError(f"{path}.class", f"unknown I/O priority class {cls!r} (expected one of "
                                           f"{', '.join(IOPRIO_CLASSES)})")
    prio = obj.get("priority", 0)
    if not _is_int(prio) or not 0 <= prio <= 7:
        raise ConfigError(f"{path}.priority", f"I/O priority must be an integer from 0 to 7, got {prio!r}")
    return IOPRIO_CLASSES[cls] << IOPRIO_CLASS_SHIFT | prio


def validate(config: dict, bundle: Path | str, *, require_process: bool = True) -> None:
    """Refuse a config corert cannot run as asked; ConfigError(json_path, message) on the first problem."""
    _check_dict(config, "")
    _validate_version(config)
    _validate_root(config.get("root"), bundle)

    linux = config.get("linux")
    if linux is None:
        linux = {}
    _check_dict(linux, "linux")
    ns = _validate_namespaces(linux)

    process = config.get("process")
    if process is None:
        if require_process:
            raise ConfigError("process", "is required to create a container")
    else:
        validate_process(process)

    for key in ("hostname", "domainname"):
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(key, "must be a string")
        if value and "uts" not in ns:
            raise ConfigError(key, f"cannot set the {key} without a private UTS namespace")

    _validate_mounts(config.get("mounts"))
    _validate_hooks(config.get("hooks"))
    _validate_linux(linux, ns)


# --- helpers ---------------------------------------------------------------------------------------------

def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_dict(v: object, path: str) -> None:
    if not isinstance(v, dict):
        raise ConfigError(path, "must be a JSON object")


def _check_list(v: object, path: str) -> list:
    if not isinstance(v, list):
        raise ConfigError(path, "must be a JSON array")
    return v


def _check_str_list(v: object, path: str) -> list:
    for i, item in enumerate(_check_list(v, path)):
        if not isinstance(item, str):
            raise ConfigError(f"{path}[{i}]", "must be a string")
    return v  # type: ignore[return-value]


def _check_bool(obj: dict, key: str, path: str) -> None:
    if key in obj and not isinstance(obj[key], bool):
        raise ConfigError(f"{path}.{key}", "must be true or false")


def _check_abs(v: object, path: str, what: str = "path") -> None:
    if not isinstance(v, str) or not v:
        raise ConfigError(path, f"{what} must be a non-empty string")
    if not v.startswith("/"):
        raise ConfigError(path, f"{what} {v!r} must be absolute")


def _check_uint(obj: dict, key: str, path: str, required: bool = False, maximum: int = _MAX_ID) -> None:
    if key not in obj:
        if required:
            raise ConfigError(f"{path}.{key}", "is required")
        return
    v = obj[key]
    if not _is_int(v) or not 0 <= v <= maximum:
        raise ConfigError(f"{path}.{key}", f"must be an integer from 0 to {maximum}, got {v!r}")


# --- sections --------------------------------------------------------------------------------------------

def _validate_version(config: dict) -> None:
    version = config.get("ociVersion")
    if version is None:
        raise ConfigError("ociVersion", "is required")
    if not isinstance(version, str):
        raise ConfigError("ociVersion", "must be a string")
    parts = version.split("-", 1)[0].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or parts[0] != "1":
        raise ConfigError("ociVersion", f"unsupported version {version!r} (corert supports 1.x.y)")


def _validate_root(root: object, bundle: Path | str) -> None:
    if root is None:
        raise ConfigError("root", "is required")
    _check_dict(root, "root")
    rpath = root.get("path")  # type: ignore[union-attr]
    if not isinstance(rpath, str) or not rpath:
        raise ConfigError("root.path", "is required")
    full = rpath if rpath.startswith("/") else os.path.join(bundle, rpath)
    if not os.path.isdir(full):
        raise ConfigError("root.path", f"rootfs {full!r} is not a directory")
    _check_bool(root, "readonly", "root")  # type: ignore[arg-type]


def validate_process(process: object, path: str = "process") -> None:
    """Validate an OCI process object (config.json's, or an `exec --process` file)."""
    _check_dict(process, path)
    assert isinstance(process, dict)
    args = process.get("args")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{path}.args", "must be a non-empty array of strings")
    _check_str_list(args, f"{path}.args")
    if "commandLine" in process:
        raise ConfigError(f"{path}.commandLine", "is Windows-only")
    cwd = process.get("cwd")
    if cwd is None:
        raise ConfigError(f"{path}.cwd", "is required")
    _check_abs(cwd, f"{path}.cwd", "cwd")
    env = process.get("env")
    if env is not None:
        for i, item in enumerate(_check_list(env, f"{path}.env")):
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
                raise ConfigError(f"{path}.env[{i}]", f"must be a KEY=VALUE string, got {item!r}")
            if "\0" in item:
                raise ConfigError(f"{path}.env[{i}]", "must not contain a NUL byte")
    _check_bool(process, "terminal", path)
    _check_bool(process, "noNewPrivileges", path)
    size = process.get("consoleSize")
    if size is not None:
        _check_dict(size, f"{path}.consoleSize")
        _check_uint(size, "height", f"{path}.consoleSize", maximum=0xFFFF)
        _check_uint(size, "width", f"{path}.consoleSize", maximum=0xFFFF)

    user = process.get("user")
    if user is None:
        raise ConfigError(f"{path}.user", "is required")
    _check_dict(user, f"{path}.user")
    _check_uint(user, "uid", f"{path}.user", required=True)
    _check_uint(user, "gid", f"{path}.user", required=True)
    _check_uint(user, "umask", f"{path}.user", maximum=0o7777)
    gids = user.get("additionalGids")
    if gids is not None:
        for i, g in enumerate(_check_list(gids, f"{path}.user.additionalGids")):
            if not _is_int(g) or not 0 <= g <= _MAX_ID:
                raise ConfigError(f"{path}.user.additionalGids[{i}]", f"must be a gid >= 0, got {g!r}")

    caps = process.get("capabilities")
    if caps is not None:
        _check_dict(caps, f"{path}.capabilities")
        for cset in CAPABILITY_SETS:
            names = caps.get(cset)
            if names is None:
                continue
            for i, name in enumerate(_check_str_list(names, f"{path}.capabilities.{cset}")):
                if name not in CAPABILITIES:
                    raise ConfigError(f"{path}.capabilities.{cset}[{i}]", f"unknown capability {name!r}")

    rlimits = process.get("rlimits")
    if rlimits is not None:
        seen: set[str] = set()
        for i, rl in enumerate(_check_list(rlimits, f"{path}.rlimits")):
            p = f"{path}.rlimits[{i}]"
            _check_dict(rl, p)
            rtype = rl.get("type")
            if rtype not in RLIMIT_NUMBERS:
                raise ConfigError(f"{p}.type", f"unknown rlimit type {rtype!r}")
            if rtype in seen:
                raise ConfigError(f"{p}.type", f"duplicate rlimit type {rtype}")
            seen.add(rtype)
            _check_uint(rl, "soft", p, required=True, maximum=(1 << 64) - 1)
            _check_uint(rl, "hard", p, required=True, maximum=(1 << 64) - 1)
            if rl["soft"] > rl["hard"]:
                raise ConfigError(p, f"soft limit {rl['soft']} is above the hard limit {rl['hard']}")

    oom = process.get("oomScoreAdj")
    if oom is not None and (not _is_int(oom) or not -1000 <= oom <= 1000):
        raise ConfigError(f"{path}.oomScoreAdj", f"must be an integer from -1000 to 1000, got {oom!r}")

    profile = process.get("apparmorProfile")
    if profile:
        if not isinstance(profile, str):
            raise ConfigError(f"{path}.apparmorProfile", "must be a string")
        if not host.apparmor_enabled():
            raise ConfigError(f"{path}.apparmorProfile", "AppArmor is not enabled on this host")
    label = process.get("selinuxLabel")
    if label:
        if not isinstance(label, str):
            raise ConfigError(f"{path}.selinuxLabel", "must be a string")
        if not host.selinux_enabled():
            raise ConfigError(f"{path}.selinuxLabel", "SELinux is not enabled on this host")
    if process.get("ioPriority") is not None:
        ioprio_value(process["ioPriority"], f"{path}.ioPriority")
    if process.get("scheduler") is not None:
        raise ConfigError(f"{path}.scheduler", "scheduling policies are not supported by corert")
    if process.get("execCPUAffinity") is not None:
        raise ConfigError(f"{path}.execCPUAffinity", "exec CPU affinity is not supported by corert")


def _validate_namespaces(linux: dict) -> dict[str, str]:
    """Check linux.namespaces; return {type: path ("" = new namespace)}."""
    found: dict[str, str] = {}
    namespaces = linux.get("namespaces")
    if namespaces is None:
        return found
    for i, entry in enumerate(_check_list(namespaces, "linux.namespaces")):
        p = f"linux.namespaces[{i}]"
        _check_dict(entry, p)
        ntype = entry.get("type")
        if ntype not in NAMESPACE_TYPES:
            raise ConfigError(f"{p}.type", f"unknown namespace type {ntype!r}")
        if ntype in found:
            raise ConfigError(f"{p}.type", f"duplicate namespace type {ntype!r}")
        npath = entry.get("path")
        if npath is None or npath == "":
            npath = ""  # a new namespace
        else:
            _check_abs(npath, f"{p}.path", "namespace path")
        found[ntype] = npath
    return found


def _validate_id_mappings(linux: dict, ns: dict[str, str]) -> None:
    new_userns = ns.get("user") == ""
    for key in ("uidMappings", "gidMappings"):
        maps = linux.get(key)
        if not maps:
            if new_userns:
                raise ConfigError(f"linux.{key}", "is required with a new user namespace")
            continue
        if not new_userns:
            why = "a joined user namespace keeps its own mappings" if "user" in ns else "there is no user namespace"
            raise ConfigError(f"linux.{key}", f"mappings given but {why}")
        if len(_check_list(maps, f"linux.{key}")) > _MAX_ID_MAP_LINES:
            raise ConfigError(f"linux.{key}", f"at most {_MAX_ID_MAP_LINES} mappings are allowed")
        ranges: list[tuple[int, int, int]] = []
        for i, m in enumerate(maps):
            p = f"linux.{key}[{i}]"
            _check_dict(m, p)
            for field in ("containerID", "hostID", "size"):
                _check_uint(m, field, p, required=True)
            if m["size"] < 1:
                raise ConfigError(f"{p}.size", "must be at least 1")
            for field in ("containerID", "hostID"):
                if m[field] + m["size"] - 1 > _MAX_ID - 1:
                    raise ConfigError(p, f"{field} range ends beyond the largest id {_MAX_ID - 1}")
            ranges.append((m["containerID"], m["hostID"], m["size"]))
        # The kernel refuses overlapping ranges on either side.
        for side, name in ((0, "containerID"), (1, "hostID")):
            spans = sorted((r[side], r[side] + r[2], idx) for idx, r in enumerate(ranges))
            for (_, end, _), (start, _, idx) in zip(spans, spans[1:]):
                if start < end:
                    raise ConfigError(f"linux.{key}[{idx}].{name}", "range overlaps another mapping")


def _validate_mounts(mounts: object) -> None:
    if mounts is None:
        return
    for i, m in enumerate(_check_list(mounts, "mounts")):
        p = f"mounts[{i}]"
        _check_dict(m, p)
        _check_abs(m.get("destination"), f"{p}.destination", "mount destination")
        options = m.get("options")
        if options is not None:
            _check_list(options, f"{p}.options")
        opts = parse_mount_options(options, f"{p}.options")
        mtype = m.get("type")
        if mtype is not None and not isinstance(mtype, str):
            raise ConfigError(f"{p}.type", "must be a string")
        source = m.get("source")
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"{p}.source", "must be a string")
        if opts.is_bind:
            if not source:
                raise ConfigError(f"{p}.source", "a bind mount needs a source")
        elif mtype in ("bind", "rbind"):
            raise ConfigError(f"{p}.options", f"type {mtype!r} needs the option \"bind\" or \"rbind\"")
        elif not mtype:
            raise ConfigError(f"{p}.type", "is required for a mount that is not a bind")
        elif mtype not in MOUNT_TYPES:
            raise ConfigError(f"{p}.type", f"unknown mount type {mtype!r}")
        for key in ("uidMappings", "gidMappings"):
            if m.get(key):
                raise ConfigError(f"{p}.{key}", "idmapped mounts are not supported by corert")


def _validate_hooks(hooks: object) -> None:
    if hooks is None:
        return
    _check_dict(hooks, "hooks")
    assert isinstance(hooks, dict)
    for name in HOOK_NAMES:
        entries = hooks.get(name)
        if entries is None:
            continue
        for i, hook in enumerate(_check_list(entries, f"hooks.{name}")):
            p = f"hooks.{name}[{i}]"
            _check_dict(hook, p)
            _check_abs(hook.get("path"), f"{p}.path", "hook path")
            for key in ("args", "env"):
                if hook.get(key) is not None:
                    _check_str_list(hook[key], f"{p}.{key}")
            timeout = hook.get("timeout")
            if timeout is not None and (not _is_int(timeout) or timeout <= 0):
                raise ConfigError(f"{p}.timeout", f"must be a positive number of seconds, got {timeout!r}")


def _validate_linux(linux: dict, ns: dict[str, str]) -> None:
    _validate_id_mappings(linux, ns)

    if "intelRdt" in linux and linux["intelRdt"] is not None:
        raise ConfigError("linux.intelRdt", "Intel RDT is not supported by corert")
    pers = linux.get("personality")
    if pers is not None:
        _check_dict(pers, "linux.personality")
        domain = pers.get("domain")
        if domain not in PERSONALITY_DOMAINS:
            raise ConfigError("linux.personality.domain", f"personality domain {domain!r} is not supported "
                                                         f"by corert (only LINUX and LINUX32)")
        if pers.get("flags"):
            raise ConfigError("linux.personality.flags", "personality flags are not supported by corert")
    if linux.get("mountLabel") and not host.selinux_enabled():
        raise ConfigError("linux.mountLabel", "SELinux is not enabled on this host")

    offsets = linux.get("timeOffsets")
    if offsets:
        if ns.get("time") != "":
            raise ConfigError("linux.timeOffsets", "time offsets need a new time namespace")
        _check_dict(offsets, "linux.timeOffsets")
        for clock, off in offsets.items():
            p = f"linux.timeOffsets.{clock}"
            if clock not in ("monotonic", "boottime"):
                raise ConfigError(p, f"unknown clock {clock!r} (monotonic or boottime)")
            _check_dict(off, p)
            if not _is_int(off.get("secs", 0)):
                raise ConfigError(f"{p}.secs", "must be an integer")
            _check_uint(off, "nanosecs", p, maximum=999_999_999)

    prop = linux.get("rootfsPropagation")
    if prop and prop not in ROOTFS_PROPAGATIONS:
        raise ConfigError("linux.rootfsPropagation", f"unknown propagation {prop!r}")
    for key in ("maskedPaths", "readonlyPaths"):
        if linux.get(key) is not None:
            for i, item in enumerate(_check_list(linux[key], f"linux.{key}")):
                _check_abs(item, f"linux.{key}[{i}]")
    cgpath = linux.get("cgroupsPath")
    if cgpath is not None and not isinstance(cgpath, str):
        raise ConfigError("linux.cgroupsPath", "must be a string")

    _validate_sysctl(linux.get("sysctl"), ns)
    _validate_devices(linux.get("devices"))
    _validate_resources(linux.get("resources"))
    if linux.get("seccomp") is not None:
        _validate_seccomp(linux["seccomp"])


def _same_ns_as_host(path: str, kind: str) -> bool:
    """Whether a namespace path is the runtime's own (i.e. the host's) namespace of that kind."""
    try:
        a = os.stat(path)
        b = os.stat(f"/proc/self/ns/{kind}")
    except OSError:
        return False  # an unusable path is reported when the namespace is joined
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _validate_sysctl(sysctl: object, ns: dict[str, str]) -> None:
    if sysctl is None:
        return
    _check_dict(sysctl, "linux.sysctl")
    assert isinstance(sysctl, dict)
    for key, value in sysctl.items():
        p = f"linux.sysctl.{key}"
        if not isinstance(value, str):
            raise ConfigError(p, "value must be a string")
        name = key.replace("/", ".")
        if name.startswith(_IPC_SYSCTL_PREFIXES):
            if "ipc" not in ns:
                raise ConfigError(p, f"sysctl {key!r} is not allowed in the host's IPC namespace")
            continue
        if name.startswith("net."):
            if "network" not in ns or (ns["network"] and _same_ns_as_host(ns["network"], "net")):
                raise ConfigError(p, f"sysctl {key!r} is not allowed in the host's network namespace")
            continue
        if name in ("kernel.hostname", "kernel.domainname"):
            if "uts" not in ns:
                raise ConfigError(p, f"sysctl {key!r} is not allowed in the host's UTS namespace")
            if name == "kernel.hostname":
                raise ConfigError(p, "sysctl kernel.hostname is not allowed; use the hostname field")
            continue
        raise ConfigError(p, f"sysctl {key!r} is not in a separate kernel namespace")


def _validate_devices(devices: object) -> None:
    if devices is None:
        return
    for i, dev in enumerate(_check_list(devices, "linux.devices")):
        p = f"linux.devices[{i}]"
        _check_dict(dev, p)
        _check_abs(dev.get("path"), f"{p}.path", "device path")
        dtype = dev.get("type")
        if dtype not in ("c", "b", "u", "p"):
            raise ConfigError(f"{p}.type", f"unknown device type {dtype!r} (c, b, u or p)")
        if dtype != "p":
            _check_uint(dev, "major", p, required=True)
            _check_uint(dev, "minor", p, required=True)
        _check_uint(dev, "fileMode", p, maximum=0o7777)
        _check_uint(dev, "uid", p)
        _check_uint(dev, "gid", p)


def _validate_resources(res: object) -> None:
    if res is None:
        return
    _check_dict(res, "linux.resources")
    assert isinstance(res, dict)
    devices = res.get("devices")
    if devices is not None:
        for i, rule in enumerate(_check_list(devices, "linux.resources.devices")):
            p = f"linux.resources.devices[{i}]"
            _check_dict(rule, p)
            if not isinstance(rule.get("allow"), bool):
                raise ConfigError(f"{p}.allow", "is required (true or false)")
            if rule.get("type", "a") not in ("a", "b", "c"):
                raise ConfigError(f"{p}.type", f"unknown device type {rule['type']!r} (a, b or c)")
            access = rule.get("access", "rwm")
            if not isinstance(access, str) or not set(access) <= set("rwm"):
                raise ConfigError(f"{p}.access", f"must be a combination of r, w and m, got {access!r}")
            for key in ("major", "minor"):
                v = rule.get(key)
                if v is not None and (not _is_int(v) or v < -1):
                    raise ConfigError(f"{p}.{key}", f"must be a device number or -1, got {v!r}")
    for section in ("memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma", "unified"):
        v = res.get(section)
        if v is not None and not isinstance(v, (dict, list)):
            raise ConfigError(f"linux.resources.{section}", "must be a JSON object")


def _validate_seccomp(sec: object) -> None:
    _check_dict(sec, "linux.seccomp")
    assert isinstance(sec, dict)
    default = sec.get("defaultAction")
    if default is None:
        raise ConfigError("linux.seccomp.defaultAction", "is required")
    if default not in SECCOMP_ACTIONS:
        raise ConfigError("linux.seccomp.defaultAction", f"unknown seccomp action {default!r}")
    if default == "SCMP_ACT_NOTIFY":
        raise ConfigError("linux.seccomp.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")
    _check_uint(sec, "defaultErrnoRet", "linux.seccomp", maximum=4095)
    for key, known in (("architectures", SECCOMP_ARCHS), ("flags", SECCOMP_FLAGS)):
        if sec.get(key) is not None:
            for i, item in enumerate(_check_str_list(sec[key], f"linux.seccomp.{key}")):
                if item not in known:
                    raise ConfigError(f"linux.seccomp.{key}[{i}]", f"unknown or unsupported value {item!r}")
    listener = sec.get("listenerPath")
    if listener:
        _check_abs(listener, "linux.seccomp.listenerPath", "listener path")
    uses_notify = False
    for i, rule in enumerate(_check_list(sec.get("syscalls") or [], "linux.seccomp.syscalls")):
        p = f"linux.seccomp.syscalls[{i}]"
        _check_dict(rule, p)
        names = rule.get("names")
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{p}.names", "must be a non-empty array of syscall names")
        _check_str_list(names, f"{p}.names")
        action = rule.get("action")
        if action not in SECCOMP_ACTIONS:
            raise ConfigError(f"{p}.action", f"unknown seccomp action {action!r}")
        if action == "SCMP_ACT_NOTIFY":
            uses_notify = True
            if "write" in names:
                # The runtime itself would deadlock writing the notify fd's state to the listener.
                raise ConfigError(f"{p}.action", "SCMP_ACT_NOTIFY cannot be used for the write syscall")
        _check_uint(rule, "errnoRet", p, maximum=4095)
        args = rule.get("args")
        if args is not None:
            for j, arg in enumerate(_check_list(args, f"{p}.args")):
                ap = f"{p}.args[{j}]"
                _check_dict(arg, ap)
                _check_uint(arg, "index", ap, required=True, maximum=5)
                _check_uint(arg, "value", ap, required=True, maximum=(1 << 64) - 1)
                _check_uint(arg, "valueTwo", ap, maximum=(1 << 64) - 1)
                if arg.get("op") not in SECCOMP_OPERATORS:
                    raise ConfigError(f"{ap}.op", f"unknown seccomp operator {arg.get('op')!r}")
    if uses_notify and not listener:
        raise ConfigError("linux.seccomp.listenerPath", "is required when a rule uses SCMP_ACT_NOTIFY")
