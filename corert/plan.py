"""Compile a validated OCI config (plus what the drivers prepared) into a flat LaunchPlan.

Everything that needs Python — option parsing, path joining, capability names, seccomp compilation —
happens here, before clone, so the fast path only walks arrays of C strings and numbers.
"""
from __future__ import annotations

import os
import stat

from corert.drivers.cgroups import in_user_namespace
from corert.drivers.security.capabilities import caps_to_mask, kernel_cap_last_cap, kernel_cap_mask
from corert.errors import ConfigError
from corert.plan_types import INIT_ANNOTATION, DeviceEntry, LaunchPlan, MountEntry
from corert.spec import mountopts as mo

# The devices every container gets (OCI "default devices"), as (path, major, minor).
DEFAULT_DEVICES = (
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
)
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


# Device cgroup rules every container gets after its own (as runc appends them): mknod of anything, and
# access to the default devices, ptys and /dev/net/tun.
DEFAULT_DEVICE_RULES = (
    {"allow": True, "type": "c", "access": "m"}, {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"} for _p, ma, mi in DEFAULT_DEVICES),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
)


def cgroup_resources(config: dict) -> dict | None:
    """linux.resources with the default device rules appended, for the cgroup driver."""
    resources = config.get("linux", {}).get("resources")
    if resources is None or "devices" not in resources:
        return resources
    return {**resources, "devices": list(resources["devices"]) + list(DEFAULT_DEVICE_RULES)}


def namespaces(config: dict) -> tuple[int, int, list[tuple[int, str]]]:
    """(clone flags, unshare flags, [(type, path) to join]) from linux.namespaces.

    New namespaces are created by clone3 in one go, so they are all owned by the new user namespace; the
    cgroup namespace is unshared after the parent placed the process in its cgroup, so that it is rooted
    there. Joined namespaces are entered with setns.
    """
    clone_flags = unshare_flags = 0
    joins: list[tuple[int, str]] = []
    entries = config.get("linux", {}).get("namespaces") or []
    new_user = any(ns["type"] == "user" and not ns.get("path") for ns in entries)
    for i, ns in enumerate(entries):
        flag = mo.NAMESPACE_FLAGS[ns["type"]]
        path = ns.get("path")
        if path:
            if new_user and ns["type"] != "user":
                raise ConfigError(f"linux.namespaces[{i}].path",
                                  "joining a namespace together with a new user namespace is not supported")
            joins.append((flag, path))
        elif ns["type"] == "cgroup" or (ns["type"] == "time" and config["linux"].get("timeOffsets")):
            # cgroup: rooted where the parent placed us. time with offsets: the offsets can only be
            # written before any process is in the namespace, so the child unshares it, writes them,
            # and its execve moves it in.
            unshare_flags |= flag
        else:
            clone_flags |= flag
    # The user namespace first (it grants the rights for the others), the pid namespace last: joining it
    # only affects children, so the fast path forks right after it (see engine/exec.py for the order).
    joins.sort(key=lambda j: (j[0] != mo.NAMESPACE_FLAGS["user"], j[0] == mo.NAMESPACE_FLAGS["pid"]))
    if joins and joins[0][0] == mo.NAMESPACE_FLAGS["user"] and clone_flags:
        raise ConfigError("linux.namespaces", "new namespaces inside a joined user namespace are not supported")
    return clone_flags, unshare_flags, joins


def _mount_entries(config: dict, bundle: str, cgroup_mounts: list[tuple[str, str]]) -> list[MountEntry]:
    entries: list[MountEntry] = []
    for i, m in enumerate(config.get("mounts") or []):
        dest = m["destination"]
        opts = mo.parse_mount_options(m.get("options") or [])
        mtype = m.get("type") or ""
        source = m.get("source") or ""
        if opts.is_bind or mtype == "bind":
            src = os.path.join(bundle, source)  # an absolute source stays as it is
            try:
                is_dir = stat.S_ISDIR(os.stat(src).st_mode)
            except OSError as e:
                raise ConfigError(f"mounts[{i}].source", f"{src}: {e.strerror}") from None
            bind = mo.MS_BIND | (mo.MS_REC if opts.recursive else 0)
            entries.append(MountEntry(
                target=dest.encode(), source=src.encode(), flags=bind,
                remount_flags=opts.flags & ~(mo.MS_BIND | mo.MS_REC | mo.MS_REMOUNT),
                propagation=opts.propagation, target_is_file=not is_dir))
        elif mtype == "cgroup":
            entries.extend(_cgroup_view(dest, opts, cgroup_mounts))
        else:
            entries.append(MountEntry(
                target=dest.encode(), source=(source or mtype).encode(), fstype=mtype.encode(),
                flags=opts.flags, data=opts.data.encode() or None, propagation=opts.propagation))
    return entries


def _cgroup_view(dest: str, opts, cgroup_mounts: list[tuple[str, str]]) -> list[MountEntry]:
    """A `cgroup` mount shows the container its own cgroups: a tmpfs with one bind per hierarchy."""
    ro = opts.flags & (mo.MS_RDONLY | mo.MS_NOSUID | mo.MS_NODEV | mo.MS_NOEXEC)
    entries = [MountEntry(target=dest.encode(), source=b"tmpfs", fstype=b"tmpfs",
                          flags=mo.MS_NOSUID | mo.MS_NODEV | mo.MS_NOEXEC, data=b"mode=755")]
    for host_dir, name in cgroup_mounts:
        target = dest.rstrip("/") + "/" + name if name else dest
        entries.append(MountEntry(target=target.encode(), source=host_dir.encode(),
                                  flags=mo.MS_BIND | mo.MS_REC, remount_flags=ro | mo.MS_RDONLY))
    return entries


def _devices(config: dict, user_ns: bool, mounts: list[MountEntry]) -> list[DeviceEntry]:
    """Default devices plus linux.devices, only when /dev is the container's own (not a host bind)."""
    dev_is_own = any(m.target == b"/dev" and m.fstype == b"tmpfs" for m in mounts)
    if not dev_is_own:
        return []
    wanted: dict[str, DeviceEntry] = {}
    for path, major, minor in DEFAULT_DEVICES:
        wanted[path] = DeviceEntry(path.encode(), stat.S_IFCHR, major, minor, 0o666, 0, 0, user_ns)
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    for i, d in enumerate(config.get("linux", {}).get("devices") or []):
        if d.get("type") not in kinds:
            raise ConfigError(f"linux.devices[{i}].type", f"unknown device type {d.get('type')!r}")
        wanted[d["path"]] = DeviceEntry(
            d["path"].encode(), kinds[d["type"]], d.get("major", 0), d.get("minor", 0),
            d.get("fileMode", 0o666) & 0o7777, d.get("uid", 0), d.get("gid", 0), user_ns)
    return list(wanted.values())


def _capabilities(process: dict, plan: LaunchPlan) -> None:
    caps = process.get("capabilities")
    if caps is None:
        plan.keep_all_caps = True
        return
    known = kernel_cap_mask(plan.cap_last)   # caps newer than the running kernel are ignored, as runc does
    for name in CAP_SETS:
        mask = caps_to_mask(caps.get(name) or [], f"process.capabilities.{name}")
        setattr(plan, f"cap_{name}", mask & known)


def _seccomp(config: dict, cache_dir: str | None, plan: LaunchPlan) -> None:
    profile = config.get("linux", {}).get("seccomp")
    if not profile:
        return
    from corert.drivers.security.seccomp import compile_seccomp
    compiled = compile_seccomp(profile, cache_dir)
    plan.seccomp_bpf = compiled.bpf
    plan.seccomp_flags = compiled.flags
    # SCMP_ACT_NOTIFY rules: the child sends the notify fd before READY and `create` hands it to
    # listenerPath (corert.drivers.security.notify).
    plan.seccomp_listener = compiled.needs_listener


def compile_plan(config: dict, bundle: str | os.PathLike[str], *, cgroup_mounts: list[tuple[str, str]] = (),
                 cgroup_dir_fd: int = -1, exec_fifo: str | None = None, preserve_fds: int = 0,
                 no_pivot: bool = False, seccomp_cache: str | None = None,
                 set_groups: bool = True) -> tuple[LaunchPlan, list[tuple[int, str]]]:
    """The LaunchPlan for a container's init, and the namespace paths the launcher must open to join."""
    linux = config.get("linux", {})
    process = config["process"]
    clone_flags, unshare_flags, joins = namespaces(config)
    user_ns = bool(clone_flags & mo.NAMESPACE_FLAGS["user"]) or any(
        t == mo.NAMESPACE_FLAGS["user"] for t, _ in joins)
    root = config["root"]
    bundle = os.fspath(bundle)
    rootfs = os.path.join(bundle, root["path"])  # an absolute root.path stays as it is

    plan = LaunchPlan(clone_flags=clone_flags, unshare_flags=unshare_flags, cgroup_dir_fd=cgroup_dir_fd)
    plan.cap_last = kernel_cap_last_cap()
    plan.rootfs = os.path.realpath(rootfs).encode()
    if linux.get("rootfsPropagation"):
        plan.rootfs_propagation = mo.parse_mount_options([linux["rootfsPropagation"]]).propagation
    plan.readonly_rootfs = bool(root.get("readonly"))
    plan.no_pivot = no_pivot
    if clone_flags & mo.NAMESPACE_FLAGS["mount"] or any(t == mo.NAMESPACE_FLAGS["mount"] for t, _ in joins):
        plan.mounts = _mount_entries(config, bundle, list(cgroup_mounts))
        # Inside a user namespace (ours, or the one rootless podman runs us in) mknod is refused: bind.
        plan.devices = _devices(config, user_ns or in_user_namespace(), plan.mounts)
        if plan.devices:
            plan.symlinks = [(a.encode(), b.encode()) for a, b in DEV_SYMLINKS]
            if any(m.target == b"/dev/pts" for m in plan.mounts):
                plan.symlinks.append((b"pts/ptmx", b"/dev/ptmx"))
        plan.masked_paths = [p.encode() for p in linux.get("maskedPaths") or []]
        plan.readonly_paths = [p.encode() for p in linux.get("readonlyPaths") or []]
    else:
        raise ConfigError("linux.namespaces", "a mount namespace is required")

    if config.get("hostname"):
        plan.hostname = config["hostname"].encode()
    if config.get("domainname"):
        plan.domainname = config["domainname"].encode()
    plan.sysctls = [(("/proc/sys/" + key.replace(".", "/")).encode(), str(value).encode())
                    for key, value in (linux.get("sysctl") or {}).items()]
    for i, rl in enumerate(process.get("rlimits") or []):
        if rl.get("type") not in RLIMITS:
            raise ConfigError(f"process.rlimits[{i}].type", f"unknown rlimit {rl.get('type')!r}")
        plan.rlimits.append((RLIMITS[rl["type"]], rl["soft"], rl["hard"]))

    user = process.get("user") or {}
    plan.uid, plan.gid = user.get("uid", 0), user.get("gid", 0)
    plan.additional_gids = list(user.get("additionalGids") or [])
    plan.set_groups = set_groups
    plan.become_root = user_ns
    plan.umask = user["umask"] if user.get("umask") is not None else -1
    plan.cwd = (process.get("cwd") or "/").encode()
    plan.args = [a.encode() for a in process["args"]]
    env = list(process.get("env") or [])
    if not any(e.startswith("HOME=") for e in env):
        from corert.userdb import home_of
        env.append(f"HOME={home_of(plan.rootfs.decode(), plan.uid)}")
    plan.env = [e.encode() for e in env]

    _capabilities(process, plan)
    plan.no_new_privs = bool(process.get("noNewPrivileges"))
    _seccomp(config, seccomp_cache, plan)
    plan.oom_score_adj = process.get("oomScoreAdj")
    offsets = linux.get("timeOffsets") or {}
    plan.time_offsets = "".join(f"{clock} {int(o.get('secs', 0))} {int(o.get('nanosecs', 0))}\n"
                                for clock, o in offsets.items()).encode() or None
    plan.terminal = bool(process.get("terminal"))
    plan.start_hooks = [(h["path"].encode(), [a.encode() for a in h.get("args") or [h["path"]]],
                         [e.encode() for e in h.get("env") or []], int(h.get("timeout") or 0) * 1000)
                        for h in (config.get("hooks") or {}).get("startContainer") or []]
    plan.exec_fifo = exec_fifo.encode() if exec_fifo else None
    plan.preserve_fds = preserve_fds
    # `run --init`: PID 1 forks and stays as a tiny init
    plan.init = (config.get("annotations") or {}).get(INIT_ANNOTATION) in ("true", "1")
    return plan, joins
