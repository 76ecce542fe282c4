"""OCI mount options -> mount(2) flags, propagation and data string; MS_* and CLONE_NEW* constants.

The mapping follows runc's: flag words set or clear an MS_* bit, propagation words become a separate
propagation mount call, everything else is filesystem data passed through verbatim (comma-joined).
"""
from __future__ import annotations

from corert._record import Record

from corert.errors import ConfigError

# mount(2) flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_POSIXACL = 1 << 16
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

# Namespace clone flags (linux/sched.h).
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS: dict[str, int] = {
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}

# option -> (clear?, flag). "clear" options remove a bit a previous option (or the default) set.
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "acl": (False, MS_POSIXACL),
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "iversion": (False, MS_I_VERSION),
    "lazytime": (False, MS_LAZYTIME),
    "loud": (True, MS_SILENT),
    "mand": (False, MS_MANDLOCK),
    "noacl": (True, MS_POSIXACL),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "noiversion": (True, MS_I_VERSION),
    "nolazytime": (True, MS_LAZYTIME),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "silent": (False, MS_SILENT),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "symfollow": (True, MS_NOSYMFOLLOW),
    "sync": (False, MS_SYNCHRONOUS),
}

PROPAGATION_OPTIONS: dict[str, int] = {
    "private": MS_PRIVATE,
    "shared": MS_SHARED,
    "slave": MS_SLAVE,
    "unbindable": MS_UNBINDABLE,
    "rprivate": MS_PRIVATE | MS_REC,
    "rshared": MS_SHARED | MS_REC,
    "rslave": MS_SLAVE | MS_REC,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# Recursive attributes need mount_setattr(AT_RECURSIVE); corert's fast path does not do that.
RECURSIVE_OPTIONS = frozenset(
    "r" + name
    for name in ("ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "atime",
                 "relatime", "norelatime", "strictatime", "nostrictatime", "nodiratime", "diratime",
                 "nosymfollow", "symfollow")
)

# Options corert refuses, each with the reason.
REFUSED_OPTIONS: dict[str, str] = {
    "tmpcopyup": "tmpcopyup (copy the image's content into a tmpfs) is not supported by corert",
    "idmap": "idmapped mounts (idmap) are not supported by corert",
    "ridmap": "idmapped mounts (ridmap) are not supported by corert",
}

SUPPORTED_OPTIONS: tuple[str, ...] = tuple(sorted((*FLAG_OPTIONS, *PROPAGATION_OPTIONS)))


class MountOptions(Record):
    FIELDS = {
        "flags": 0,          # MS_* bits for the mount call (includes MS_BIND|MS_REC for rbind)
        "propagation": 0,    # MS_SHARED/SLAVE/PRIVATE/UNBINDABLE (|MS_REC), 0 = not asked for
        "data": "",          # filesystem-specific options, comma-joined in the order given
        "is_bind": False,
        "recursive": False,  # rbind
        "cleared": 0,        # bits explicitly cleared (rw, suid, ...): a bind remount must not keep them
    }
    __slots__ = tuple(FIELDS)


def parse_mount_options(options: list[str] | None, path: str = "options") -> MountOptions:
    """Map OCI mount options to flags like runc; ConfigError naming `path[i]` for refused options."""
    flags = 0
    cleared = 0
    propagation = 0
    data: list[str] = []
    for i, opt in enumerate(options or ()):
        if not isinstance(opt, str):
            raise ConfigError(f"{path}[{i}]", "mount option must be a string")
        entry = FLAG_OPTIONS.get(opt)
        if entry is not None:
            clear, bit = entry
            if clear:
                flags &= ~bit
                cleared |= bit
            else:
                flags |= bit
                cleared &= ~bit
            continue
        prop = PROPAGATION_OPTIONS.get(opt)
        if prop is not None:
            # The kernel takes one propagation type per call; like applying runc's list in order, the last wins.
            propagation = prop
            continue
        if opt in RECURSIVE_OPTIONS:
            raise ConfigError(f"{path}[{i}]", f"recursive mount attribute {opt!r} is not supported by corert "
                                              f"(use {opt[1:]!r})")
        reason = REFUSED_OPTIONS.get(opt)
        if reason is not None:
            raise ConfigError(f"{path}[{i}]", reason)
        data.append(opt)
    return MountOptions(
        flags=flags,
        propagation=propagation,
        data=",".join(data),
        is_bind=bool(flags & MS_BIND),
        recursive=bool(flags & MS_BIND and flags & MS_REC),
        cleared=cleared,
    )
