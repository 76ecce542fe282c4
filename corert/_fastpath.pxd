# C-level declarations of the fast path: the launch plan as one flat C structure and the sync message.
# Everything here is plain C so that the child, after clone, touches no Python object and allocates nothing.

from libc.stdint cimport uint32_t, uint64_t, int32_t

cdef enum:
    FP_STATE_MAX = 16384      # the state JSON handed to startContainer hooks
    FP_PATH_MAX = 4096
    FP_TEXT_MAX = 256
    FP_NSTEPS = 16
    FP_MAX_JOIN = 8
    FP_MAX_CGROUP_TASKS = 16  # v1 hierarchies the child places itself in

# Message kinds on the parent<->child socketpair (SOCK_SEQPACKET: one message per send).
cdef enum:
    MSG_CONTINUE = 1
    MSG_STAGE = 2
    MSG_ERROR = 3

# Stages the child reports; the parent acts between them.
cdef enum:
    STAGE_PRE_PIVOT = 1    # namespaces and mounts done, rootfs not yet pivoted: network + createRuntime hooks
    STAGE_READY = 2        # about to wait on the exec fifo (or to exec): the container is "created"
    STAGE_FORKED = 3       # joined a pid namespace and forked: msg.step carries the new process's host pid
    STAGE_SECCOMP = 4      # (listener only) the filter is loaded; the message carries the notify fd

# fork_after_join modes (see enter_joined_pid_namespace).
cdef enum:
    FP_FORK_MIRROR = 1
    FP_FORK_LEAVE = 2

# Timestamp slots (monotonic ns) the child fills, for `--trace`.
cdef enum:
    T_CLONED = 0
    T_GO = 1
    T_NAMESPACES = 2
    T_MOUNTS = 3
    T_PIVOT = 4
    T_SETUP = 5
    T_READY = 6
    T_STARTED = 7
    T_SECURITY = 8

cdef struct fp_msg:
    int32_t kind
    int32_t stage
    int32_t err
    int32_t step
    char text[FP_TEXT_MAX]
    uint64_t ts[FP_NSTEPS]

cdef struct fp_mount:
    const char *source
    const char *target
    const char *fstype
    unsigned long flags
    const char *data
    unsigned long remount_flags
    unsigned long propagation
    int target_is_file

cdef struct fp_device:
    const char *path
    unsigned int kind
    unsigned int major
    unsigned int minor
    unsigned int mode
    unsigned int uid
    unsigned int gid
    int bind_from_host

cdef struct fp_pair:
    const char *a
    const char *b

cdef struct fp_hook:
    const char *path
    char **argv
    char **envp
    long timeout_ms             # 0 = no timeout

cdef struct fp_rlimit:
    int resource
    unsigned long long soft
    unsigned long long hard

cdef struct fp_plan:
    unsigned long long clone_flags
    int unshare_flags
    const char *time_offsets    # written to /proc/self/timens_offsets right after unshare(CLONE_NEWTIME)
    int join_fds[FP_MAX_JOIN]
    int join_types[FP_MAX_JOIN]
    int n_join
    int cgroup_fd
    int cgroup_task_fds[FP_MAX_CGROUP_TASKS]  # v1 `tasks` files (opened by the parent) the child writes "0" to
    int n_cgroup_task
    int sock                    # child's end of the socketpair
    int parent_sock             # parent's end (closed in the child)
    int dumpable                # 0: PR_SET_DUMPABLE 0 before joining anything (exec)
    int fork_after_join         # a joined pid namespace only applies to children: fork once more

    const char *rootfs
    const char *rootfs_fstype       # mount this fs on rootfs in the child (rootless overlay), else bind it
    const char *rootfs_data
    int rootfs_fd                   # new user ns: O_PATH fd of the rootfs opened by the parent (-1 = by path)
    unsigned long rootfs_propagation
    int readonly_rootfs
    int no_pivot
    fp_mount *mounts
    int n_mounts
    fp_device *devices
    int n_devices
    fp_pair *symlinks
    int n_symlinks
    const char **masked
    int n_masked
    const char **readonly
    int n_readonly

    const char *hostname
    const char *domainname
    fp_pair *sysctls
    int n_sysctls
    fp_rlimit *rlimits
    int n_rlimits
    unsigned int uid
    unsigned int gid
    unsigned int *groups
    int n_groups
    int set_groups
    int become_root             # in a new/joined user namespace: setresuid(0) once the maps exist
    int umask_value
    const char *cwd
    char **argv
    char **envp
    const char *path_env        # PATH from the process env, for the executable lookup

    unsigned long long cap_bounding
    unsigned long long cap_effective
    unsigned long long cap_permitted
    unsigned long long cap_inheritable
    unsigned long long cap_ambient
    int keep_all_caps
    int cap_last
    int no_new_privs
    const unsigned char *seccomp
    int seccomp_len             # number of 8-byte sock_filter entries
    unsigned int seccomp_flags  # SECCOMP_FILTER_FLAG_* for seccomp(2)
    int seccomp_listener        # NEW_LISTENER: load before READY, send the notify fd (STAGE_SECCOMP)

    fp_hook *start_hooks        # OCI startContainer hooks: run in the container after `start`, before exec
    int n_start_hooks
    char hook_state[FP_STATE_MAX]   # their stdin: the state JSON the parent sends after READY
    int hook_state_len
    int terminal
    int stdio[3]                # fds to become 0,1,2 in the child (-1 = inherit)
    const char *exec_fifo
    int fifo_fd                 # O_PATH fd of the exec fifo, opened in the child before pivot
    int preserve_fds
    int wait_continue_after_ready   # no fifo: wait for the parent's go after READY (run/exec)
    int run_init                # --init: fork right before execve and stay as PID 1 (see "--init" in the .pyx)

    # Scratch the child writes into: lives in the plan so the child never allocates.
    char exec_path[FP_PATH_MAX]
    char scratch[FP_PATH_MAX]
    char scratch2[FP_PATH_MAX]
    char scratch3[FP_PATH_MAX]
    fp_msg msg
