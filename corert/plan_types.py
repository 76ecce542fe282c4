"""The flat launch plan handed to the fast path: plain data, no behaviour.

plan.py compiles an OCI config (plus driver results) into a LaunchPlan; corert._fastpath turns it into one
C structure before clone, so the child never touches a Python object. Paths and strings are bytes because
that is what the kernel takes.
"""
from __future__ import annotations

from corert._record import Record, Required


class MountEntry(Record):
    """One mount made in the child before pivot_root, target resolved inside the rootfs (RESOLVE_IN_ROOT)."""

    FIELDS = {
        "target": Required,       # absolute path inside the container
        "source": None,           # host path for binds, else the fs "device" name
        "fstype": None,           # None for binds
        "flags": 0,               # MS_* flags for the initial mount (MS_BIND|MS_REC for rbind)
        "data": None,             # fs-specific options string
        "remount_flags": 0,       # binds: MS_RDONLY/MS_NOSUID/... applied with MS_REMOUNT|MS_BIND afterwards
        "propagation": 0,         # MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE (|MS_REC), 0 = leave
        "target_is_file": False,  # binds of a non-directory: create an empty file as the mount point
    }
    __slots__ = tuple(FIELDS)


class DeviceEntry(Record):
    """A device node inside the container's /dev: mknod when we may, else a bind of the host's node."""

    FIELDS = {
        "path": Required,         # absolute inside the container
        "kind": Required,         # S_IFCHR / S_IFBLK / S_IFIFO
        "major": Required,
        "minor": Required,
        "mode": Required,         # permission bits
        "uid": Required,
        "gid": Required,
        "bind_from_host": False,  # user namespaces cannot mknod: bind /dev/X from the host instead
    }
    __slots__ = tuple(FIELDS)


# The annotation that asks for the init (`corert run --init` sets it; an OCI bundle may too): "true".
INIT_ANNOTATION = "io.corert.init"


class LaunchPlan(Record):
    """Everything the child does between clone and execve, flattened."""

    FIELDS = {
        # Namespaces. clone_flags go to clone3, so every new namespace is owned by the new user namespace;
        # unshare_flags (the cgroup namespace) are unshared after the parent placed the child in its cgroup.
        "clone_flags": 0,
        "unshare_flags": 0,
        "time_offsets": None,      # "monotonic S N\nboottime S N\n" for /proc/self/timens_offsets
        # cgroup placement (cgroups.placement_fds); with neither, the parent attaches the pid instead.
        "cgroup_dir_fd": -1,       # CLONE_INTO_CGROUP target (v2, or a hybrid host's cgroup2 dir); -1 = none
        "cgroup_task_fds": list,   # v1: `tasks` files the child writes "0" to itself (no RCU wait)

        # Filesystem. rootfs empty = exec into an existing container (no mounts, no pivot).
        "rootfs": b"",
        "rootfs_mount": None,      # (fstype, data) mounted on rootfs by the child: rootless overlay, or
                                   # the rootless FUSE handoff ("fuse", "corert_fuse_handoff=...", _fastpath)
        "rootfs_propagation": 0,
        "readonly_rootfs": False,
        "no_pivot": False,
        "mounts": list,            # [MountEntry]
        "devices": list,           # [DeviceEntry]
        "symlinks": list,          # [(link target, link path)]
        "masked_paths": list,
        "readonly_paths": list,

        # Identity and environment.
        "hostname": None,
        "domainname": None,
        "sysctls": list,           # [(/proc/sys/... path, value)]
        "rlimits": list,           # [(RLIMIT_*, soft, hard)]
        "uid": 0,
        "gid": 0,
        "additional_gids": list,
        "set_groups": True,        # False when setgroups is denied (single-id rootless map)
        "become_root": False,      # in a user namespace: setresuid/gid(0) once the parent wrote the maps
        "umask": -1,               # -1 = leave as is
        "cwd": b"/",
        "args": list,
        "env": list,

        # Security, applied last (seccomp the very last step before execve).
        "cap_bounding": 0,
        "cap_effective": 0,
        "cap_permitted": 0,
        "cap_inheritable": 0,
        "cap_ambient": 0,
        "keep_all_caps": False,    # no capabilities object in the config: leave capabilities untouched
        "cap_last": 40,            # /proc/sys/kernel/cap_last_cap: the bounding set is dropped up to it
        "no_new_privs": False,
        "seccomp_bpf": None,       # struct sock_filter[] as raw bytes
        "seccomp_listener": False, # SECCOMP_FILTER_FLAG_NEW_LISTENER: send the notify fd to the parent
        "seccomp_flags": 0,        # SECCOMP_FILTER_FLAG_* given to seccomp(2) (incl. NEW_LISTENER)
        "oom_score_adj": None,     # written by the parent

        # Process plumbing.
        "start_hooks": list,       # [(path, [args], [env], timeout ms)]: OCI startContainer, in the container
        "stdio": None,             # fds that become the process's 0,1,2 (None = inherit)
        "terminal": False,         # open a pty; the master goes to the parent with the READY message
        "exec_fifo": None,         # blocks on it (open O_WRONLY) until `start`; None = exec right after READY
        "preserve_fds": 0,         # fds 3..3+N-1 reach the process; everything else >= 3 is closed on exec
        "init": False,             # --init: PID 1 forks before execve and stays as a reaping, forwarding init
    }
    __slots__ = tuple(FIELDS)
