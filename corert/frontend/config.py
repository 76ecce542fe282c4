"""Docker-like run options + an image's config -> an OCI runtime config.

The result goes through the same validation and the same engine as a bundle given to the OCI CLI: the
front door is only a config generator plus bookkeeping (names, storage, logs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from corert.errors import UsageError

if TYPE_CHECKING:   # the drivers are imported only when a container is made (CLI start-up time)
    from corert.drivers.network import Prepared


@dataclass
class RunOptions:
    """What `corert run` (and the embedding API) can ask for; None/empty = the image's or docker's default."""

    command: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    tty: bool = False
    interactive: bool = False
    volumes: list[str] = field(default_factory=list)        # HOST:CTR[:ro|rw]
    tmpfs: list[str] = field(default_factory=list)          # PATH[:options]
    read_only: bool = False
    memory: str | None = None
    cpus: str | None = None
    pids_limit: int | None = None
    net: str = "none"
    publish: list[str] = field(default_factory=list)        # [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)
    userns: str | None = None
    annotations: dict = field(default_factory=dict)
    init: bool = False                  # a tiny init as PID 1 (reaps zombies, forwards signals): docker --init
    stop_signal: str | None = None      # what `corert stop` sends first (default: the image's, else SIGTERM)


def _process_args(image_config: dict, opts: RunOptions) -> list[str]:
    entrypoint = opts.entrypoint if opts.entrypoint is not None else (image_config.get("Entrypoint") or [])
    cmd = opts.command or ([] if opts.entrypoint is not None else (image_config.get("Cmd") or []))
    args = list(entrypoint) + list(cmd)
    if not args:
        raise UsageError("no command given and the image has no Cmd or Entrypoint")
    return args


def _merge_env(image_env: list[str], extra: list[str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in list(image_env) + list(extra):
        key, sep, value = item.partition("=")
        if not sep:   # `-e NAME` passes the caller's value through, as docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        merged[key] = value
    if "PATH" not in merged:
        merged["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return [f"{k}={v}" for k, v in merged.items()]


def _lookup(rows: list[list[str]], name: str, field: int) -> int | None:
    for row in rows:
        if row[0] == name:
            try:
                return int(row[field])
            except ValueError:
                return None
    return None


def resolve_user(spec: str | None, rootfs: Path, *, group_rootfs: Path | None = None) -> tuple[int, int]:
    """docker's -u: uid[:gid] or name[:group], names looked up in the image. group_rootfs: where etc/group
    is read when not under rootfs (a build looks each file up in the image layer that holds it)."""
    from corert.userdb import group, passwd

    if not spec:
        return 0, 0
    user, _, grp = spec.partition(":")
    users = passwd(str(rootfs))
    if user.isdigit():
        uid = int(user)
        gid = next((int(r[3]) for r in users if r[2] == user and r[3].isdigit()), uid)
    else:
        uid = _lookup(users, user, 2)
        if uid is None:
            raise UsageError(f"unable to find user {user}: no matching entries in passwd file")
        gid = _lookup(users, user, 3) or 0
    if grp.isdigit():
        gid = int(grp)
    elif grp:
        found = _lookup(group(str(group_rootfs or rootfs)), grp, 2)
        if found is None:
            raise UsageError(f"unable to find group {grp}: no matching entries in group file")
        gid = found
    return uid, gid


def _volume_mounts(opts: RunOptions) -> list[dict]:
    mounts = []
    for spec in opts.volumes:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise UsageError(f"invalid volume {spec!r}: expected HOST:CONTAINER[:ro|rw]")
        host, ctr = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise UsageError(f"invalid volume mode {mode!r} in {spec!r}: use ro or rw")
        if not os.path.isabs(host) or not os.path.isabs(ctr):
            raise UsageError(f"invalid volume {spec!r}: both paths must be absolute")
        if not os.path.exists(host):
            raise UsageError(f"volume source {host} does not exist")
        mounts.append({"destination": ctr, "type": "bind", "source": host,
                       "options": ["rbind", "rprivate", mode]})
    for spec in opts.tmpfs:
        path, _, options = spec.partition(":")
        if not os.path.isabs(path):
            raise UsageError(f"invalid --tmpfs {spec!r}: the path must be absolute")
        mounts.append({"destination": path, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev"] + ([o for o in options.split(",") if o] or ["mode=1777"])})
    return mounts


def _resources(opts: RunOptions) -> dict:
    from corert.spec.units import parse_cpus, parse_size

    resources: dict = {}
    if opts.memory:
        limit = parse_size(opts.memory)
        resources["memory"] = {"limit": limit, "swap": limit}
    if opts.cpus:
        quota, period = parse_cpus(opts.cpus)
        resources["cpu"] = {"quota": quota, "period": period}
    if opts.pids_limit is not None:
        resources["pids"] = {"limit": opts.pids_limit}
    return resources


def _security(config: dict, opts: RunOptions) -> None:
    from corert.drivers.security.capabilities import (DOCKER_DEFAULT_CAPS, apply_cap_changes, held_caps,
                                                      privileged_caps)
    from corert.drivers.security.paths import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
    from corert.drivers.security.seccomp import load_default_profile

    process, linux = config["process"], config["linux"]
    seccomp: dict | None = load_default_profile()
    no_new_privs = True
    for item in opts.security_opt:
        key, _, value = item.partition("=")
        if key == "seccomp" and value == "unconfined":
            seccomp = None
        elif key == "seccomp" and value:
            import json
            try:
                with open(value) as f:
                    seccomp = json.load(f)
            except (OSError, ValueError) as e:
                raise UsageError(f"--security-opt seccomp={value}: {e}") from None
        elif key in ("no-new-privileges", "no_new_privs"):
            no_new_privs = value in ("", "true")
        else:
            raise UsageError(f"unsupported --security-opt {item!r}")
    if opts.privileged:
        caps = held_caps(privileged_caps())
        seccomp = None
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
    else:
        caps = apply_cap_changes(list(DOCKER_DEFAULT_CAPS), opts.cap_add, opts.cap_drop)
        if any(c.strip().upper() == "ALL" for c in opts.cap_add):
            caps = held_caps(caps)
        linux["maskedPaths"] = list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(DEFAULT_READONLY_PATHS)
    process["capabilities"] = {name: list(caps) for name in ("bounding", "effective", "permitted")}
    process["noNewPrivileges"] = no_new_privs
    if seccomp:
        linux["seccomp"] = seccomp


def build_config(image_config: dict, opts: RunOptions, rootfs: Path, *, network: Prepared, rootless: bool = False,
                 id_maps: tuple[list[dict], list[dict]] | None = None) -> dict:
    """The OCI config for one container of an image (docker's defaults where the options are silent).

    Rootless: `id_maps` (uidMappings, gidMappings) replace the spec's single-id map when given.
    `network` is the --net driver's first step: its namespace, mounts and hostname go into the config."""
    from corert.spec.defaults import default_spec

    config = default_spec(rootless=rootless)
    if rootless and id_maps:
        config["linux"]["uidMappings"], config["linux"]["gidMappings"] = id_maps
    config["root"] = {"path": str(rootfs), "readonly": opts.read_only}
    process = config["process"]
    process["terminal"] = opts.tty
    process["args"] = _process_args(image_config, opts)
    process["env"] = _merge_env(image_config.get("Env") or [], opts.env)
    if opts.tty:
        process["env"].append("TERM=xterm")
    process["cwd"] = opts.workdir or image_config.get("WorkingDir") or "/"
    uid, gid = resolve_user(opts.user or image_config.get("User"), rootfs)
    process["user"] = {"uid": uid, "gid": gid}
    process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
    _clamp_nofile(process["rlimits"])
    # The driver's name covers `--hostname ""` on bridge/slirp/pasta (it falls back to the short id).
    config["hostname"] = opts.hostname or network.hostname or ""
    if not config["hostname"]:
        config.pop("hostname")
    config["mounts"] = [m for m in config["mounts"] if not (rootless and m["type"] == "cgroup")]
    config["mounts"] += _volume_mounts(opts)
    linux = config["linux"]
    linux["resources"] = {**linux.get("resources", {}), **_resources(opts)}
    namespaces = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    if network.namespace is not None:   # None: --net host keeps the host's
        namespaces.append(network.namespace)
    config["mounts"] += network.mounts
    linux["namespaces"] = namespaces
    if opts.net == "host":
        config["mounts"] = [m for m in config["mounts"] if m["type"] != "sysfs"] + [
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
    _security(config, opts)
    _userns(config, opts, rootless)
    config["annotations"] = dict(opts.annotations)
    _init_and_stop_signal(config["annotations"], image_config, opts)
    return config


# Where the stop signal travels from the image to `corert stop` (OCI image-spec conversion.md).
STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"


def _init_and_stop_signal(annotations: dict, image_config: dict, opts: RunOptions) -> None:
    """--init becomes the annotation the launch plan reads; --stop-signal (or the image's StopSignal) one
    that `corert stop` reads from the container's record. A bad signal name fails `run`, as docker's."""
    from corert.engine.signals import parse_signal, signal_name
    from corert.plan_types import INIT_ANNOTATION

    if opts.init:
        annotations[INIT_ANNOTATION] = "true"
    stop = opts.stop_signal or image_config.get("StopSignal")
    if stop:
        annotations[STOP_SIGNAL_ANNOTATION] = signal_name(parse_signal(str(stop)))


def _userns(config: dict, opts: RunOptions, rootless: bool) -> None:
    """--userns=auto: container root becomes an unprivileged host id range (see drivers/security/userns).

    The rootfs keeps its host ownership, so inside it shows as nobody:nogroup: the container writes where
    the image lets everyone write (/tmp), its tmpfs mounts (/dev, /dev/shm, /run) and volumes.
    """
    if opts.userns in (None, "", "host"):
        return
    if opts.userns != "auto":
        raise UsageError(f"unsupported --userns {opts.userns!r}: use auto or host")
    if rootless:
        return   # rootless containers always have their own user namespace already
    from corert.drivers.security.userns import auto_mappings
    linux = config["linux"]
    linux["uidMappings"], linux["gidMappings"] = auto_mappings()
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "user"] + [{"type": "user"}]


def _clamp_nofile(rlimits: list[dict]) -> None:
    """docker asks for 1048576 open files; a host whose hard limit is lower gets its own hard limit."""
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for rl in rlimits:
        if rl["type"] == "RLIMIT_NOFILE" and hard != resource.RLIM_INFINITY and rl["hard"] > hard:
            rl["hard"] = rl["soft"] = hard
