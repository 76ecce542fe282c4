"""The flat launch plan handed to the fast path: plain data, no behaviour.

plan.py compiles an OCI config (plus driver results) into a LaunchPlan; corert._fastpath turns it into one
C structure before clone, so the child never touches a Python object. Paths and strings are bytes because
that is what the kernel takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MountEntry:
    """One mount made in the child before pivot_root, target resolved inside the rootfs (RESOLVE_IN_ROOT)."""

    target: bytes                  # absolute path inside the container
    source: bytes | None = None    # host path for binds, else the fs "device" name
    fstype: bytes | None = None    # None for binds
    flags: int = 0                 # MS_* flags for the initial mount (MS_BIND|MS_REC for rbind)
    data: bytes | None = None      # fs-specific options string
    remount_flags: int = 0         # binds: MS_RDONLY/MS_NOSUID/... applied with MS_REMOUNT|MS_BIND afterwards
    propagation: int = 0           # MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE (|MS_REC), 0 = leave
    target_is_file: bool = False   # binds of a non-directory: create an empty file as the mount point


@dataclass
class DeviceEntry:
    """A device node inside the container's /dev: mknod when we may, else a bind of the host's node."""

    path: bytes                    # absolute inside the container
    kind: int                      # S_IFCHR / S_IFBLK / S_IFIFO
    major: int
    minor: int
    mode: int                      # permission bits
    uid: int
    gid: int
    bind_from_host: bool = False   # user namespaces cannot mknod: bind /dev/X from the host instead


@dataclass
class LaunchPlan:
    # Namespaces. clone_flags are given to clone3 (user, pid, time); unshare_flags are unshared by the
    # child after the parent wrote id maps and placed it in its cgroup (mnt, uts, ipc, net, cgroup), so
    # that they are owned by the container's user namespace.
    clone_flags: int = 0
    unshare_flags: int = 0
    join_namespaces: list[tuple[int, bytes]] = field(default_factory=list)  # (CLONE_NEW*, /proc/.../ns/x)
    cgroup_dir_fd: int = -1        # v2: CLONE_INTO_CGROUP target, -1 = parent attaches the pid instead

    # Filesystem. rootfs empty = exec into an existing container (no mounts, no pivot).
    rootfs: bytes = b""
    rootfs_mount: tuple[bytes, bytes] | None = None   # (fstype, data) mounted on rootfs by the child
    rootfs_propagation: int = 0
    readonly_rootfs: bool = False
    no_pivot: bool = False
    mounts: list[MountEntry] = field(default_factory=list)
    devices: list[DeviceEntry] = field(default_factory=list)
    symlinks: list[tuple[bytes, bytes]] = field(default_factory=list)   # (link target, link path)
    masked_paths: list[bytes] = field(default_factory=list)
    readonly_paths: list[bytes] = field(default_factory=list)

    # Identity and environment.
    hostname: bytes | None = None
    domainname: bytes | None = None
    sysctls: list[tuple[bytes, bytes]] = field(default_factory=list)   # (/proc/sys/... path, value)
    rlimits: list[tuple[int, int, int]] = field(default_factory=list)  # (RLIMIT_*, soft, hard)
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    set_groups: bool = True        # False when setgroups is denied (single-id rootless map)
    become_root: bool = False      # in a user namespace: setresuid/gid(0) once the parent wrote the maps
    umask: int = -1                # -1 = leave as is
    cwd: bytes = b"/"
    args: list[bytes] = field(default_factory=list)
    env: list[bytes] = field(default_factory=list)

    # Security, applied last (seccomp the very last step before execve).
    cap_bounding: int = 0
    cap_effective: int = 0
    cap_permitted: int = 0
    cap_inheritable: int = 0
    cap_ambient: int = 0
    keep_all_caps: bool = False    # exec without a capabilities object: leave capabilities untouched
    cap_last: int = 40             # /proc/sys/kernel/cap_last_cap: the bounding set is dropped up to it
    no_new_privs: bool = False
    seccomp_bpf: bytes | None = None   # struct sock_filter[] as raw bytes
    seccomp_listener: bool = False     # SECCOMP_FILTER_FLAG_NEW_LISTENER: send the notify fd to the parent
    seccomp_flags: int = 0             # SECCOMP_FILTER_FLAG_* given to seccomp(2) (incl. NEW_LISTENER)
    oom_score_adj: int | None = None   # written by the parent

    # Process plumbing.
    stdio: tuple[int, int, int] | None = None   # fds that become the process's 0,1,2 (None = inherit)
    terminal: bool = False         # open a pty; the master goes to the parent with the READY message
    exec_fifo: bytes | None = None # blocks on it (open O_WRONLY) until `start`; None = exec right after READY
    preserve_fds: int = 0          # fds 3..3+N-1 reach the process; everything else >= 3 is closed on exec
    trace: bool = False            # collect per-step timestamps
