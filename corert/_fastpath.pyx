# cython: language_level=3
"""The fast path: clone a container init and set it up in C, then exec.

Python (corert.plan) compiles config.json into a LaunchPlan; `Launcher` copies it into one flat C
structure (fp_plan, see _fastpath.pxd) *before* clone. After clone the child runs only the nogil C
functions below: no Python object is touched and nothing is allocated, so the child is safe even when
the parent process has other threads. Parent and child talk over a SOCK_SEQPACKET socketpair:

    parent: clone3 -> [write id maps, cgroup, oom_score_adj] -> CONTINUE
    child:  join/unshare namespaces -> mounts -> STAGE_PRE_PIVOT
    parent: [network, prestart/createRuntime hooks] -> CONTINUE
    child:  pivot_root -> masks, sysctls, hostname, rlimits, pty -> STAGE_READY (+ pty master fd)
    child:  block on the exec fifo (until `start`) -> security (caps, uid, no_new_privs, seccomp) -> execve

Any failure in the child is sent back as (step, errno, detail) and becomes one clear error line.
"""

from libc.stdint cimport uint32_t, uint64_t, int32_t
from libc.string cimport memset, memcpy, strlen
from libc.stdlib cimport malloc, free
from libc.errno cimport errno



cdef extern from *:
    """
    #include <sys/syscall.h>
    #include <sys/mount.h>
    #include <sys/prctl.h>
    #include <sys/ioctl.h>
    #include <sys/socket.h>
    #include <sys/stat.h>
    #include <sys/statvfs.h>
    #include <sys/resource.h>
    #include <sys/sysmacros.h>
    #include <sys/wait.h>
    #include <sched.h>
    #include <fcntl.h>
    #include <unistd.h>
    #include <time.h>
    #include <grp.h>
    #include <signal.h>
    #include <termios.h>
    #include <linux/seccomp.h>
    #include <linux/filter.h>
    #include <linux/capability.h>

    #ifndef SYS_clone3
    #define SYS_clone3 435
    #endif
    #ifndef SYS_openat2
    #define SYS_openat2 437
    #endif
    #ifndef SYS_close_range
    #define SYS_close_range 436
    #endif
    #ifndef CLONE_PIDFD
    #define CLONE_PIDFD 0x00001000
    #endif
    #ifndef CLONE_INTO_CGROUP
    #define CLONE_INTO_CGROUP 0x200000000ULL
    #endif
    #ifndef CLONE_NEWTIME
    #define CLONE_NEWTIME 0x00000080
    #endif
    #ifndef CLOSE_RANGE_CLOEXEC
    #define CLOSE_RANGE_CLOEXEC (1U << 2)
    #endif
    #ifndef TIOCGPTPEER
    #define TIOCGPTPEER 0x5441
    #endif
    #ifndef PR_CAP_AMBIENT
    #define PR_CAP_AMBIENT 47
    #define PR_CAP_AMBIENT_RAISE 2
    #define PR_CAP_AMBIENT_CLEAR_ALL 4
    #endif
    #define FP_RESOLVE_NO_MAGICLINKS 0x02
    #define FP_RESOLVE_IN_ROOT 0x10

    struct fp_open_how { unsigned long long flags, mode, resolve; };
    struct fp_clone_args {
        unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal,
                           stack, stack_size, tls, set_tid, set_tid_size, cgroup;
    };

    /* clone3 in fork mode (no new stack): returns 0 in the child, the pid in the parent. Falls back to
       the classic clone syscall (also fork-like with a NULL stack) where clone3 is missing. */
    static long fp_clone(unsigned long long flags, int cgroup_fd, int *pidfd_out) {
        struct fp_clone_args a;
        memset(&a, 0, sizeof a);
        a.flags = flags | CLONE_PIDFD;
        if (pidfd_out) a.pidfd = (unsigned long long)(unsigned long)pidfd_out; else a.flags &= ~(unsigned long long)CLONE_PIDFD;
        a.exit_signal = SIGCHLD;
        if (cgroup_fd >= 0) { a.flags |= CLONE_INTO_CGROUP; a.cgroup = (unsigned long long)cgroup_fd; }
        long r = syscall(SYS_clone3, &a, sizeof a);
        if (r < 0 && errno == ENOSYS && cgroup_fd < 0) {
            if (pidfd_out) *pidfd_out = -1;
            r = syscall(SYS_clone, (unsigned long)(flags | SIGCHLD), 0, 0, 0, 0);
        }
        return r;
    }

    static int fp_openat2(int dirfd, const char *path, unsigned long long flags, unsigned long long resolve) {
        struct fp_open_how how;
        how.flags = flags; how.mode = 0; how.resolve = resolve;
        return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    }

    static int fp_send_msg_fd(int sock, const void *buf, size_t len, int fd) {
        struct msghdr mh; struct iovec iov; char cbuf[CMSG_SPACE(sizeof(int))];
        memset(&mh, 0, sizeof mh); memset(cbuf, 0, sizeof cbuf);
        iov.iov_base = (void *)buf; iov.iov_len = len;
        mh.msg_iov = &iov; mh.msg_iovlen = 1;
        if (fd >= 0) {
            mh.msg_control = cbuf; mh.msg_controllen = sizeof cbuf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        return (int)sendmsg(sock, &mh, MSG_NOSIGNAL);
    }

    /* The parent's receive: one message, and the fd passed with it (or -1). */
    static ssize_t fp_recv_msg_fd(int sock, void *buf, size_t len, int *fd_out) {
        struct msghdr mh; struct iovec iov; char cbuf[CMSG_SPACE(sizeof(int))]; ssize_t n;
        memset(&mh, 0, sizeof mh);
        iov.iov_base = buf; iov.iov_len = len;
        mh.msg_iov = &iov; mh.msg_iovlen = 1; mh.msg_control = cbuf; mh.msg_controllen = sizeof cbuf;
        *fd_out = -1;
        do { n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
        if (n >= 0) {
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                memcpy(fd_out, CMSG_DATA(c), sizeof(int));
        }
        return n;
    }

    static int fp_capset(unsigned long long eff, unsigned long long perm, unsigned long long inh) {
        struct __user_cap_header_struct h; struct __user_cap_data_struct d[2];
        h.version = _LINUX_CAPABILITY_VERSION_3; h.pid = 0;
        d[0].effective = (unsigned)eff; d[1].effective = (unsigned)(eff >> 32);
        d[0].permitted = (unsigned)perm; d[1].permitted = (unsigned)(perm >> 32);
        d[0].inheritable = (unsigned)inh; d[1].inheritable = (unsigned)(inh >> 32);
        return (int)syscall(SYS_capset, &h, d);
    }

    /* Returns the notify fd when flags has SECCOMP_FILTER_FLAG_NEW_LISTENER, else 0; -1 on error. */
    static int fp_seccomp(const unsigned char *bpf, int n, unsigned int flags) {
        struct sock_fprog prog;
        prog.len = (unsigned short)n; prog.filter = (struct sock_filter *)bpf;
        return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    }

    static unsigned long long fp_now(void) {
        struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
        return (unsigned long long)t.tv_sec * 1000000000ULL + (unsigned long long)t.tv_nsec;
    }

    static void fp_sleep_ms(long ms) {
        struct timespec t; t.tv_sec = ms / 1000; t.tv_nsec = (ms % 1000) * 1000000L;
        nanosleep(&t, NULL);
    }
    static int fp_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

    static int fp_pivot_root(const char *n, const char *o) { return (int)syscall(SYS_pivot_root, n, o); }
    /* A recursive copy of the tree at cwd, attached on top of cwd; returns its fd (the new mount's root). */
    static int fp_bind_cwd_onto_itself(void) {
        int t = (int)syscall(428 /* open_tree */, AT_FDCWD, ".", 1 /* OPEN_TREE_CLONE */ | O_CLOEXEC | 0x8000 /* AT_RECURSIVE */);
        if (t < 0) return -1;
        if (syscall(429 /* move_mount */, t, "", AT_FDCWD, ".", 0x4 /* MOVE_MOUNT_F_EMPTY_PATH */) < 0) {
            int e = errno; close(t); errno = e; return -1;
        }
        return t;
    }
    static int fp_close_range(unsigned int from, unsigned int to) {
        return (int)syscall(SYS_close_range, from, to, 0);
    }
    static int fp_close_range_cloexec(unsigned int from) {
        return (int)syscall(SYS_close_range, from, ~0U, CLOSE_RANGE_CLOEXEC);
    }
    static int fp_setns(int fd, int type) { return (int)syscall(SYS_setns, fd, type); }
    static int fp_unshare(int flags) { return (int)syscall(SYS_unshare, flags); }
    static int fp_setresuid(unsigned u) { return (int)syscall(SYS_setresuid, u, u, u); }
    static int fp_setresgid(unsigned g) { return (int)syscall(SYS_setresgid, g, g, g); }
    static int fp_setgroups(int n, const unsigned *g) { return (int)syscall(SYS_setgroups, n, g); }
    static unsigned long fp_statvfs_to_ms(unsigned long f) {
        /* Flags the kernel locks on a mount in a user namespace: a remount must keep them. */
        unsigned long ms = 0;
        if (f & ST_NOSUID) ms |= MS_NOSUID;
        if (f & ST_NODEV) ms |= MS_NODEV;
        if (f & ST_NOEXEC) ms |= MS_NOEXEC;
        if (f & ST_NOATIME) ms |= MS_NOATIME;
        if (f & ST_NODIRATIME) ms |= MS_NODIRATIME;
        if (f & ST_RELATIME) ms |= MS_RELATIME;
        return ms;
    }
    static int fp_is_dir_fd(int fd) { struct stat st; if (fstat(fd, &st) < 0) return -1; return S_ISDIR(st.st_mode); }
    static int fp_locked_flags(int fd, unsigned long *out) {
        struct statvfs s; if (fstatvfs(fd, &s) < 0) return -1; *out = fp_statvfs_to_ms(s.f_flag); return 0;
    }
    static unsigned long long fp_makedev(unsigned maj, unsigned min) { return makedev(maj, min); }
    #include <net/if.h>
    /* A new network namespace starts with lo down; runc brings it up, and so do we. */
    static int fp_loopback_up(void) {
        struct ifreq ifr; int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r;
        if (s < 0) return -1;
        memset(&ifr, 0, sizeof ifr); memcpy(ifr.ifr_name, "lo", 3);
        r = ioctl(s, SIOCGIFFLAGS, &ifr);
        if (r == 0) { ifr.ifr_flags |= IFF_UP | IFF_RUNNING; r = ioctl(s, SIOCSIFFLAGS, &ifr); }
        close(s);
        return r;
    }
    """
    long fp_clone(unsigned long long flags, int cgroup_fd, int *pidfd_out) nogil
    int fp_openat2(int dirfd, const char *path, unsigned long long flags, unsigned long long resolve) nogil
    int fp_send_msg_fd(int sock, const void *buf, size_t len, int fd) nogil
    ssize_t fp_recv_msg_fd(int sock, void *buf, size_t len, int *fd_out) nogil
    int fp_capset(unsigned long long eff, unsigned long long perm, unsigned long long inh) nogil
    int fp_seccomp(const unsigned char *bpf, int n, unsigned int flags) nogil
    unsigned long long fp_now() nogil
    int fp_pivot_root(const char *n, const char *o) nogil
    void fp_sleep_ms(long ms) nogil
    int fp_pipe(int *fds) nogil
    int fp_close_range_cloexec(unsigned int start) nogil
    int fp_close_range(unsigned int start, unsigned int end) nogil
    int fp_bind_cwd_onto_itself() nogil
    int fp_setns(int fd, int type) nogil
    int fp_unshare(int flags) nogil
    int fp_setresuid(unsigned int u) nogil
    int fp_setresgid(unsigned int g) nogil
    int fp_setgroups(int n, const unsigned int *g) nogil
    int fp_is_dir_fd(int fd) nogil
    int fp_locked_flags(int fd, unsigned long *out) nogil
    unsigned long long fp_makedev(unsigned int maj, unsigned int mnr) nogil
    int fp_loopback_up() nogil
    unsigned long long CLONE_NEWNET

    int FP_RESOLVE_NO_MAGICLINKS, FP_RESOLVE_IN_ROOT
    int O_PATH, O_CLOEXEC, O_DIRECTORY, O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_NOFOLLOW, O_NOCTTY, O_EXCL
    int AT_FDCWD, F_GETFD, F_SETFD, FD_CLOEXEC
    unsigned long MS_BIND, MS_REC, MS_REMOUNT, MS_RDONLY, MS_SLAVE, MS_PRIVATE, MS_MOVE, MS_NOSUID, MS_NODEV, MS_NOEXEC
    int MNT_DETACH
    int PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_GET_DUMPABLE, PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS
    int PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL
    int SIGKILL, EEXIST, ENOENT, EINTR, ENOSYS
    int SOCK_SEQPACKET, SOCK_CLOEXEC, AF_UNIX, MSG_NOSIGNAL
    unsigned long TIOCSPTLCK, TIOCGPTPEER, TIOCSCTTY
    unsigned int S_IFCHR

    int c_mount "mount"(const char *src, const char *tgt, const char *fstype, unsigned long flags, const void *data) nogil
    int umount2(const char *tgt, int flags) nogil
    int open(const char *path, int flags, ...) nogil
    int openat(int dirfd, const char *path, int flags, ...) nogil
    int close(int fd) nogil
    int mkdirat(int dirfd, const char *path, unsigned int mode) nogil
    int mknodat(int dirfd, const char *path, unsigned int mode, unsigned long long dev) nogil
    int symlinkat(const char *target, int dirfd, const char *linkpath) nogil
    ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t n) nogil
    int fchownat(int dirfd, const char *path, unsigned int uid, unsigned int gid, int flags) nogil
    int fchmodat(int dirfd, const char *path, unsigned int mode, int flags) nogil
    int sethostname(const char *name, size_t len) nogil
    int setdomainname(const char *name, size_t len) nogil
    int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) nogil
    int ioctl(int fd, unsigned long req, ...) nogil
    int dup2(int a, int b) nogil
    int setsid() nogil
    int chdir(const char *path) nogil
    int fchdir(int fd) nogil
    int chroot(const char *path) nogil
    unsigned int umask(unsigned int mask) nogil
    int execve(const char *path, char **argv, char **envp) nogil
    int access(const char *path, int mode) nogil
    void _exit(int code) nogil
    ssize_t write(int fd, const void *buf, size_t n) nogil
    ssize_t recv(int fd, void *buf, size_t n, int flags) nogil
    int fcntl(int fd, int cmd, ...) nogil
    int socketpair(int domain, int type, int proto, int *sv) nogil
    int X_OK
    struct rlimit:
        unsigned long long rlim_cur
        unsigned long long rlim_max
    int setrlimit(int resource, const rlimit *rl) nogil
    int waitpid(int pid, int *status, int options) nogil
    int WNOHANG
    bint WIFSIGNALED(int status) nogil
    int WTERMSIG(int status) nogil
    int WEXITSTATUS(int status) nogil
    ctypedef void (*sighandler_t)(int) noexcept nogil
    sighandler_t signal(int sig, sighandler_t handler) nogil
    sighandler_t SIG_DFL
    int kill(int pid, int sig) nogil
    int getpid() nogil


# ---------------------------------------------------------------------------------------------------------
# Small C helpers for the child (no allocation, async-signal-safe calls only).

cdef size_t fp_strlen(const char *s) noexcept nogil:
    cdef size_t n = 0
    while s[n] != 0:
        n += 1
    return n


cdef void fp_copy(char *dst, const char *src, size_t cap) noexcept nogil:
    cdef size_t i = 0
    if src == NULL:
        dst[0] = 0
        return
    while src[i] != 0 and i + 1 < cap:
        dst[i] = src[i]
        i += 1
    dst[i] = 0


cdef size_t fp_append(char *dst, size_t at, const char *src, size_t cap) noexcept nogil:
    cdef size_t i = 0
    while src[i] != 0 and at + 1 < cap:
        dst[at] = src[i]
        at += 1
        i += 1
    dst[at] = 0
    return at


cdef size_t fp_append_int(char *dst, size_t at, long v, size_t cap) noexcept nogil:
    cdef char digits[24]
    cdef int n = 0
    if v < 0:
        if at + 1 < cap:
            dst[at] = 45  # '-'
            at += 1
        v = -v
    if v == 0:
        digits[0] = 48
        n = 1
    while v > 0 and n < 23:
        digits[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    while n > 0 and at + 1 < cap:
        n -= 1
        dst[at] = digits[n]
        at += 1
    dst[at] = 0
    return at


cdef const char *fd_path(fp_plan *p, int fd, char *buf) noexcept nogil:
    """/proc/self/fd/N: how a mount reaches a target that was resolved safely as an fd."""
    cdef size_t at = fp_append(buf, 0, b"/proc/self/fd/", FP_PATH_MAX)
    fp_append_int(buf, at, fd, FP_PATH_MAX)
    return buf


cdef void stamp(fp_plan *p, int slot) noexcept nogil:
    p.msg.ts[slot] = fp_now()


cdef void fail(fp_plan *p, int step, int err, const char *detail) noexcept nogil:
    """Report (step, errno, detail) to the parent and die. Never returns."""
    p.msg.kind = MSG_ERROR
    p.msg.step = step
    p.msg.err = err
    fp_copy(p.msg.text, detail, FP_TEXT_MAX)
    fp_send_msg_fd(p.sock, &p.msg, sizeof(fp_msg), -1)
    _exit(1)


cdef void send_stage(fp_plan *p, int stage, int fd) noexcept nogil:
    p.msg.kind = MSG_STAGE
    p.msg.stage = stage
    p.msg.err = 0
    if fp_send_msg_fd(p.sock, &p.msg, sizeof(fp_msg), fd) < 0:
        _exit(1)


cdef void wait_continue(fp_plan *p) noexcept nogil:
    """Block until the parent says go; a closed socket means the parent gave up: exit quietly."""
    cdef int32_t kind = 0
    cdef ssize_t n
    while True:
        n = recv(p.sock, &kind, sizeof(kind), 0)
        if n < 0 and errno == EINTR:
            continue
        break
    if n != sizeof(kind) or kind != MSG_CONTINUE:
        _exit(1)


# Step identifiers reported with errors; STEP_NAMES (below) turns them into words for the message.
cdef enum:
    S_SETNS = 1
    S_USERNS = 2
    S_UNSHARE = 3
    S_ROOT_PROPAGATION = 4
    S_ROOTFS_BIND = 5
    S_MOUNT_TARGET = 6
    S_MOUNT = 7
    S_REMOUNT = 8
    S_PROPAGATION = 9
    S_DEVICE = 10
    S_SYMLINK = 11
    S_PIVOT = 12
    S_MASK = 13
    S_READONLY = 14
    S_SYSCTL = 15
    S_HOSTNAME = 16
    S_RLIMIT = 17
    S_TERMINAL = 18
    S_CWD = 19
    S_EXEC_LOOKUP = 20
    S_FIFO = 21
    S_CAPS = 22
    S_USER = 23
    S_NNP = 24
    S_SECCOMP = 25
    S_EXEC = 26
    S_STDIO = 27
    S_LOOPBACK = 28
    S_INIT = 29
    S_CGROUP = 30

STEP_NAMES = {
    S_SETNS: "joining a namespace", S_USERNS: "becoming root in the user namespace",
    S_UNSHARE: "creating namespaces", S_ROOT_PROPAGATION: "making / private",
    S_ROOTFS_BIND: "mounting the rootfs", S_MOUNT_TARGET: "resolving a mount target inside the rootfs",
    S_MOUNT: "mounting", S_REMOUNT: "remounting", S_PROPAGATION: "setting mount propagation",
    S_DEVICE: "creating a device node", S_SYMLINK: "creating a /dev symlink", S_PIVOT: "pivot_root",
    S_MASK: "masking a path", S_READONLY: "making a path read-only", S_SYSCTL: "writing a sysctl",
    S_HOSTNAME: "setting the hostname", S_RLIMIT: "setting an rlimit", S_TERMINAL: "creating the terminal",
    S_CWD: "changing to the working directory", S_EXEC_LOOKUP: "looking up the executable",
    S_FIFO: "waiting on the exec fifo", S_CAPS: "setting capabilities", S_USER: "switching user",
    S_NNP: "setting no_new_privs", S_SECCOMP: "loading the seccomp filter", S_EXEC: "exec",
    S_STDIO: "setting up stdio", S_LOOPBACK: "bringing up the loopback interface",
    S_INIT: "starting the init (--init)", S_CGROUP: "joining the container's cgroup",
}


# ---------------------------------------------------------------------------------------------------------
# Paths inside the rootfs, resolved so that no symlink can lead out of it (CVE-2021-30465 class).

cdef int open_in_root(fp_plan *p, int rootfd, const char *path, int create, int as_file) noexcept nogil:
    """O_PATH fd of `path` resolved inside rootfd (RESOLVE_IN_ROOT), creating missing components.

    A symlink met on the way is followed inside the root (an absolute target starts again at the root),
    and a dangling one gets its target created there, as runc's SecureJoin+MkdirAll does: a mount on
    /a/b where /a -> /host/dir lands on <rootfs>/host/dir/b, never on the host.
    """
    cdef int fd = fp_openat2(rootfd, path, O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
    if fd >= 0 or not create or errno != ENOENT:
        return fd
    cdef char *work = p.scratch3      # the path being walked (rewritten when a symlink is followed)
    cdef char *prefix = p.scratch2    # the components walked so far
    cdef char *link = p.exec_path     # free until the executable lookup, long after the mounts
    cdef size_t i, n, start, plen, rest
    cdef int parent, r, last, hops = 0
    cdef ssize_t ln
    fp_copy(work, path, FP_PATH_MAX)
    while True:
        n = fp_strlen(work)
        i = 0
        prefix[0] = 0
        fd = -1
        while i < n:
            while i < n and work[i] == 47:   # skip '/'
                i += 1
            if i >= n:                        # only slashes: the root itself
                return fp_openat2(rootfd, b"/", O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT)
            start = i
            while i < n and work[i] != 47:
                i += 1
            last = 1
            r = <int>i
            while r < <int>n and work[r] == 47:
                r += 1
            if r < <int>n:
                last = 0
            if prefix[0] == 0:
                parent = fp_openat2(rootfd, b"/", O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT)
            else:
                parent = fp_openat2(rootfd, prefix, O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
            if parent < 0:
                return -1
            plen = fp_strlen(prefix)
            if plen + 1 + (i - start) + 1 >= FP_PATH_MAX:
                close(parent)
                return -1
            prefix[plen] = 47
            memcpy(prefix + plen + 1, work + start, i - start)
            prefix[plen + 1 + (i - start)] = 0
            fd = fp_openat2(rootfd, prefix, O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
            if fd < 0 and errno == ENOENT:
                # Missing, or a symlink whose target is missing: which one, readlinkat tells.
                ln = readlinkat(parent, prefix + plen + 1, link, FP_PATH_MAX - 1)
                if ln > 0:
                    close(parent)
                    hops += 1
                    if hops > 40:
                        return -1
                    link[ln] = 0
                    # new path = (target if absolute else walked-parent/target) + remainder
                    rest = i
                    if link[0] != 47:
                        prefix[plen] = 0
                        if fp_strlen(prefix) + 1 + <size_t>ln + 1 >= FP_PATH_MAX:
                            return -1
                        memcpy(p.scratch, prefix, plen)
                        p.scratch[plen] = 47
                        memcpy(p.scratch + plen + 1, link, ln + 1)
                    else:
                        memcpy(p.scratch, link, ln + 1)
                    if fp_strlen(p.scratch) + (n - rest) + 1 >= FP_PATH_MAX:
                        return -1
                    fp_append(p.scratch, fp_strlen(p.scratch), work + rest, FP_PATH_MAX)
                    fp_copy(work, p.scratch, FP_PATH_MAX)
                    break
                if last and as_file:
                    fd = openat(parent, prefix + plen + 1, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o644)
                    if fd >= 0:
                        close(fd)
                elif mkdirat(parent, prefix + plen + 1, 0o755) < 0 and errno != EEXIST:
                    close(parent)
                    return -1
                fd = fp_openat2(rootfd, prefix, O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
            close(parent)
            if fd < 0:
                return -1
            if last:
                return fd
            close(fd)
            fd = -1
        else:
            return fd
        # a symlink was followed: walk the rewritten path from the start


cdef int split_parent(fp_plan *p, int rootfd, const char *path, const char **name) noexcept nogil:
    """O_PATH fd of the parent directory of `path` inside the root (created if missing); *name = basename."""
    cdef size_t n = fp_strlen(path)
    cdef size_t cut = n
    while cut > 0 and path[cut - 1] != 47:
        cut -= 1
    name[0] = path + cut
    if cut >= FP_PATH_MAX:
        return -1
    memcpy(p.scratch, path, cut)
    p.scratch[cut] = 0
    if cut == 0 or (cut == 1 and path[0] == 47):
        return fp_openat2(rootfd, b"/", O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT)
    # open_in_root uses scratch2, so the parent path in scratch survives
    return open_in_root(p, rootfd, p.scratch, 1, 0)


# ---------------------------------------------------------------------------------------------------------
# The child's steps.

cdef void join_and_unshare(fp_plan *p) noexcept nogil:
    cdef int i
    for i in range(p.n_join):
        if fp_setns(p.join_fds[i], p.join_types[i]) < 0:
            fail(p, S_SETNS, errno, b"")
        close(p.join_fds[i])
    cdef int fd
    cdef size_t n
    if p.unshare_flags != 0 and fp_unshare(p.unshare_flags) < 0:
        fail(p, S_UNSHARE, errno, b"")
    if p.time_offsets != NULL:
        fd = open(b"/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC)
        n = fp_strlen(p.time_offsets)
        if fd < 0 or write(fd, p.time_offsets, n) != <ssize_t>n:
            fail(p, S_UNSHARE, errno, b"timens_offsets")
        close(fd)


cdef void do_mount(fp_plan *p, int rootfd, fp_mount *m) noexcept nogil:
    cdef int fd = open_in_root(p, rootfd, m.target, 1, m.target_is_file)
    cdef unsigned long locked = 0
    cdef int fd2
    if fd < 0:
        fail(p, S_MOUNT_TARGET, errno, m.target)
    if c_mount(m.source, fd_path(p, fd, p.scratch), m.fstype, m.flags, m.data) < 0:
        fail(p, S_MOUNT, errno, m.target)
    close(fd)
    if m.remount_flags == 0 and m.propagation == 0:
        return
    # The fd still names the covered directory: resolve again to reach the new mount on top.
    fd2 = open_in_root(p, rootfd, m.target, 0, 0)
    if fd2 < 0:
        fail(p, S_MOUNT_TARGET, errno, m.target)
    if m.remount_flags != 0:
        if fp_locked_flags(fd2, &locked) < 0:
            locked = 0
        if c_mount(NULL, fd_path(p, fd2, p.scratch), NULL,
                   MS_REMOUNT | MS_BIND | m.remount_flags | locked, NULL) < 0:
            fail(p, S_REMOUNT, errno, m.target)
    if m.propagation != 0:
        if c_mount(NULL, fd_path(p, fd2, p.scratch), NULL, m.propagation, NULL) < 0:
            fail(p, S_PROPAGATION, errno, m.target)
    close(fd2)


cdef void make_device(fp_plan *p, int rootfd, fp_device *d) noexcept nogil:
    cdef const char *name = NULL
    cdef int parent = split_parent(p, rootfd, d.path, &name)
    cdef int fd
    if parent < 0:
        fail(p, S_DEVICE, errno, d.path)
    if d.bind_from_host:
        fd = openat(parent, name, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o644)
        if fd >= 0:
            close(fd)
        fd = fp_openat2(parent, name, O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
        if fd < 0 or c_mount(d.path, fd_path(p, fd, p.scratch), NULL, MS_BIND, NULL) < 0:
            fail(p, S_DEVICE, errno, d.path)
        close(fd)
    else:
        if mknodat(parent, name, d.kind | d.mode, fp_makedev(d.major, d.minor)) < 0 and errno != EEXIST:
            fail(p, S_DEVICE, errno, d.path)
        # mknod is filtered by umask: set the exact mode, then the owner.
        if fchmodat(parent, name, d.mode, 0) < 0 or fchownat(parent, name, d.uid, d.gid, 0x100) < 0:
            fail(p, S_DEVICE, errno, d.path)
    close(parent)


cdef void make_symlink(fp_plan *p, int rootfd, fp_pair *s) noexcept nogil:
    cdef const char *name = NULL
    cdef int parent = split_parent(p, rootfd, s.b, &name)
    if parent < 0:
        fail(p, S_SYMLINK, errno, s.b)
    if symlinkat(s.a, parent, name) < 0 and errno != EEXIST:
        fail(p, S_SYMLINK, errno, s.b)
    close(parent)


# Rootless FUSE rootfs (corert.drivers.storage.fuse): the kernel lets a user namespace's root mount FUSE,
# but only with a /dev/fuse fd opened in that same user namespace. So the child opens /dev/fuse, mounts it
# on the rootfs, and hands the fd over a unix socket to the waiting FUSE daemon, which answers 'o' once it
# serves it. The plan's rootfs_mount is ("fuse", "corert_fuse_handoff=SOCKET,OPTIONS").
cdef extern from *:
    """
    #include <sys/un.h>
    #include <sys/time.h>
    #define FP_FUSE_HANDOFF "corert_fuse_handoff="
    static int fp_is_fuse_handoff(const char *fstype, const char *data) {
        return fstype && data && strcmp(fstype, "fuse") == 0
               && strncmp(data, FP_FUSE_HANDOFF, sizeof FP_FUSE_HANDOFF - 1) == 0;
    }
    static int fp_fuse_handoff(const char *target, const char *data, const char **step) {
        const char *spec = data + sizeof FP_FUSE_HANDOFF - 1, *comma = strchr(spec, ',');
        size_t plen = comma ? (size_t)(comma - spec) : strlen(spec);
        char opts[4096], dir[4096]; char *slash; struct sockaddr_un sa; struct timeval tv;
        int fd = -1, s = -1, dfd = -1, e; char ack = 0; ssize_t n;
        *step = "opening /dev/fuse";
        fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fd < 0) return -1;
        snprintf(opts, sizeof opts, "fd=%d%s%s", fd, comma ? "," : "", comma ? comma + 1 : "");
        *step = "mounting the FUSE rootfs";
        if (mount("corert-fuse", target, "fuse", 0, opts) < 0) goto fail;
        /* connect relative to the socket's dir: sun_path is too short for a path under $HOME */
        *step = "reaching the FUSE daemon's socket";
        errno = ENAMETOOLONG;
        if (plen >= sizeof dir) goto fail;
        memcpy(dir, spec, plen); dir[plen] = 0;
        slash = strrchr(dir, '/');
        if (!slash || slash == dir || strlen(slash + 1) >= sizeof sa.sun_path) goto fail;
        *slash = 0;
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fchdir(dfd) < 0) goto fail;
        s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) goto fail;
        tv.tv_sec = 60; tv.tv_usec = 0;    /* a daemon that never answers must not hang create */
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        memset(&sa, 0, sizeof sa); sa.sun_family = AF_UNIX; strcpy(sa.sun_path, slash + 1);
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) goto fail;
        if (fp_send_msg_fd(s, "F", 1, fd) < 0) goto fail;
        *step = "waiting for the FUSE daemon";
        n = recv(s, &ack, 1, 0);
        if (n != 1) { if (n == 0) errno = ECONNRESET; goto fail; }
        if (ack != 'o') { errno = EIO; goto fail; }
        close(s); close(dfd); close(fd);
        return 0;
    fail:
        e = errno;
        if (s >= 0) close(s);
        if (dfd >= 0) close(dfd);
        if (fd >= 0) close(fd);
        errno = e;
        return -1;
    }
    """
    int fp_is_fuse_handoff(const char *fstype, const char *data) nogil
    int fp_fuse_handoff(const char *target, const char *data, const char **step) nogil


cdef int prepare_rootfs(fp_plan *p) noexcept nogil:
    """Mounts inside the new mount namespace; returns an O_PATH fd of the (bind-mounted) rootfs."""
    cdef int i, rootfd = -1
    cdef unsigned long prop = p.rootfs_propagation
    if prop == 0:
        prop = MS_SLAVE | MS_REC
    # Our mounts must not propagate back to the host.
    if c_mount(NULL, b"/", NULL, prop, NULL) < 0:
        fail(p, S_ROOT_PROPAGATION, errno, b"/")
    cdef const char *step = NULL
    if fp_is_fuse_handoff(p.rootfs_fstype, p.rootfs_data):
        if fp_fuse_handoff(p.rootfs, p.rootfs_data, &step) < 0:
            fail(p, S_ROOTFS_BIND, errno, step)
    elif p.rootfs_fstype != NULL:
        if c_mount(p.rootfs_fstype, p.rootfs, p.rootfs_fstype, 0, p.rootfs_data) < 0:
            fail(p, S_ROOTFS_BIND, errno, p.rootfs_fstype)
    elif p.rootfs_fd >= 0:
        # In a user namespace whose root may not search the directories above the rootfs (0700 state and
        # storage dirs): child_main made it our cwd from the parent's fd; bind it from there.
        rootfd = fp_bind_cwd_onto_itself()
        if rootfd < 0:
            fail(p, S_ROOTFS_BIND, errno, p.rootfs)
    elif c_mount(p.rootfs, p.rootfs, NULL, MS_BIND | MS_REC, NULL) < 0:
        fail(p, S_ROOTFS_BIND, errno, p.rootfs)
    if rootfd < 0:
        rootfd = open(p.rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC)
    if rootfd < 0:
        fail(p, S_ROOTFS_BIND, errno, p.rootfs)
    for i in range(p.n_mounts):
        do_mount(p, rootfd, &p.mounts[i])
    for i in range(p.n_devices):
        make_device(p, rootfd, &p.devices[i])
    for i in range(p.n_symlinks):
        make_symlink(p, rootfd, &p.symlinks[i])
    return rootfd


cdef void pivot(fp_plan *p, int rootfd) noexcept nogil:
    if fchdir(rootfd) < 0:
        fail(p, S_PIVOT, errno, p.rootfs)
    if p.no_pivot:
        if c_mount(b".", b"/", NULL, MS_MOVE, NULL) < 0 or chroot(b".") < 0:
            fail(p, S_PIVOT, errno, b"MS_MOVE+chroot")
    else:
        # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the new.
        if fp_pivot_root(b".", b".") < 0:
            fail(p, S_PIVOT, errno, p.rootfs)
        if umount2(b".", MNT_DETACH) < 0:
            fail(p, S_PIVOT, errno, b"detaching the old root")
    if chdir(b"/") < 0:
        fail(p, S_PIVOT, errno, b"/")
    close(rootfd)
    if p.rootfs_propagation != 0 and c_mount(NULL, b"/", NULL, p.rootfs_propagation, NULL) < 0:
        fail(p, S_PROPAGATION, errno, b"/")


cdef void mask_and_protect(fp_plan *p) noexcept nogil:
    cdef int i, fd, isdir, fd2
    cdef unsigned long locked = 0
    for i in range(p.n_masked):
        fd = fp_openat2(AT_FDCWD, p.masked[i], O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
        if fd < 0:
            if errno == ENOENT:
                continue
            fail(p, S_MASK, errno, p.masked[i])
        isdir = fp_is_dir_fd(fd)
        if isdir == 1:
            if c_mount(b"tmpfs", fd_path(p, fd, p.scratch), b"tmpfs", MS_RDONLY, NULL) < 0:
                fail(p, S_MASK, errno, p.masked[i])
        elif c_mount(b"/dev/null", fd_path(p, fd, p.scratch), NULL, MS_BIND, NULL) < 0:
            fail(p, S_MASK, errno, p.masked[i])
        close(fd)
    for i in range(p.n_readonly):
        fd = fp_openat2(AT_FDCWD, p.readonly[i], O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
        if fd < 0:
            if errno == ENOENT:
                continue
            fail(p, S_READONLY, errno, p.readonly[i])
        if c_mount(fd_path(p, fd, p.scratch2), fd_path(p, fd, p.scratch), NULL, MS_BIND | MS_REC, NULL) < 0:
            fail(p, S_READONLY, errno, p.readonly[i])
        close(fd)
        fd2 = fp_openat2(AT_FDCWD, p.readonly[i], O_PATH | O_CLOEXEC, FP_RESOLVE_IN_ROOT | FP_RESOLVE_NO_MAGICLINKS)
        if fd2 < 0 or fp_locked_flags(fd2, &locked) < 0:
            fail(p, S_READONLY, errno, p.readonly[i])
        if c_mount(NULL, fd_path(p, fd2, p.scratch), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked, NULL) < 0:
            fail(p, S_READONLY, errno, p.readonly[i])
        close(fd2)
    if p.readonly_rootfs:
        fd = open(b"/", O_PATH | O_CLOEXEC)
        if fd < 0 or fp_locked_flags(fd, &locked) < 0:
            fail(p, S_READONLY, errno, b"/")
        close(fd)
        if c_mount(NULL, b"/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked, NULL) < 0:
            fail(p, S_READONLY, errno, b"/")


cdef void write_sysctls(fp_plan *p) noexcept nogil:
    cdef int i, fd
    cdef size_t n
    for i in range(p.n_sysctls):
        fd = open(p.sysctls[i].a, O_WRONLY | O_CLOEXEC)
        if fd < 0:
            fail(p, S_SYSCTL, errno, p.sysctls[i].a)
        n = fp_strlen(p.sysctls[i].b)
        if write(fd, p.sysctls[i].b, n) != <ssize_t>n:
            fail(p, S_SYSCTL, errno, p.sysctls[i].a)
        close(fd)


cdef int open_terminal(fp_plan *p) noexcept nogil:
    """A pty from the container's devpts; the slave becomes stdio and controlling tty, the master is returned."""
    cdef int unlock = 0
    cdef int master = open(b"/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
    cdef int slave
    if master < 0:
        fail(p, S_TERMINAL, errno, b"/dev/ptmx")
    if ioctl(master, TIOCSPTLCK, &unlock) < 0:
        fail(p, S_TERMINAL, errno, b"unlockpt")
    slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY)
    if slave < 0:
        fail(p, S_TERMINAL, errno, b"TIOCGPTPEER")
    if ioctl(slave, TIOCSCTTY, 0) < 0:
        fail(p, S_TERMINAL, errno, b"TIOCSCTTY")
    if dup2(slave, 0) < 0 or dup2(slave, 1) < 0 or dup2(slave, 2) < 0:
        fail(p, S_TERMINAL, errno, b"dup2")
    if slave > 2:
        close(slave)
    return master


cdef void lookup_executable(fp_plan *p) noexcept nogil:
    """Resolve argv[0] through PATH now, so a missing command fails `create`, not the later `start`."""
    cdef const char *cmd = p.argv[0]
    cdef const char *path = p.path_env
    cdef size_t i = 0, at
    cdef int has_slash = 0
    while cmd[i] != 0:
        if cmd[i] == 47:
            has_slash = 1
        i += 1
    if has_slash:
        fp_copy(p.exec_path, cmd, FP_PATH_MAX)
        if access(p.exec_path, X_OK) < 0:
            fail(p, S_EXEC_LOOKUP, errno, cmd)
        return
    i = 0
    while True:
        at = 0
        while path[i] != 0 and path[i] != 58:   # ':'
            if at + 1 < FP_PATH_MAX:
                p.exec_path[at] = path[i]
                at += 1
            i += 1
        if at == 0:
            p.exec_path[at] = 46   # empty PATH entry = current directory
            at += 1
        p.exec_path[at] = 0
        at = fp_append(p.exec_path, at, b"/", FP_PATH_MAX)
        fp_append(p.exec_path, at, cmd, FP_PATH_MAX)
        if access(p.exec_path, X_OK) == 0:
            return
        if path[i] == 0:
            break
        i += 1
    fail(p, S_EXEC_LOOKUP, ENOENT, cmd)


cdef int run_hook(fp_plan *p, fp_hook *h) noexcept nogil:
    """One startContainer hook: the state JSON on its stdin, waited for up to its timeout. 0 = success."""
    cdef int fds[2]
    cdef int status = 0
    cdef long pid, r
    cdef unsigned long long deadline = 0
    if fp_pipe(fds) < 0:
        return -1
    pid = fp_clone(0, -1, NULL)
    if pid < 0:
        return -1
    if pid == 0:
        if dup2(fds[0], 0) < 0:
            _exit(127)
        execve(h.path, h.argv, h.envp)
        _exit(127)
    close(fds[0])
    write(fds[1], p.hook_state, p.hook_state_len)   # < the pipe's 64 KiB: never blocks
    close(fds[1])
    if h.timeout_ms > 0:
        deadline = fp_now() + <unsigned long long>h.timeout_ms * 1000000ULL
    while True:
        r = waitpid(<int>pid, &status, WNOHANG)
        if r == pid:
            break
        if r < 0 and errno != EINTR:
            return -1
        if deadline and fp_now() > deadline:
            kill(<int>pid, SIGKILL)
            waitpid(<int>pid, &status, 0)
            return -1
        fp_sleep_ms(2)
    return 0 if (not WIFSIGNALED(status) and WEXITSTATUS(status) == 0) else -1


cdef void wait_for_start(fp_plan *p) noexcept nogil:
    """Block on the exec fifo until `start` opens it for reading (the create/start split).

    The startContainer hooks run between `start` opening the fifo and our go byte: if one fails we leave
    without the byte, and `start` reports that the container could not be started."""
    cdef int fd, i
    cdef char one = 48
    fd = open(fd_path(p, p.fifo_fd, p.scratch), O_WRONLY | O_CLOEXEC)
    if fd < 0:
        fail(p, S_FIFO, errno, p.exec_fifo)
    for i in range(p.n_start_hooks):
        if run_hook(p, &p.start_hooks[i]) < 0:
            _exit(1)
    if write(fd, &one, 1) != 1:
        fail(p, S_FIFO, errno, p.exec_fifo)
    close(fd)
    close(p.fifo_fd)


cdef void apply_seccomp(fp_plan *p) noexcept nogil:
    # A filter with a listener was loaded before READY (send_seccomp_listener).
    if p.seccomp_len > 0 and not p.seccomp_listener and fp_seccomp(p.seccomp, p.seccomp_len, p.seccomp_flags) < 0:
        fail(p, S_SECCOMP, errno, b"")


cdef void send_seccomp_listener(fp_plan *p) noexcept nogil:
    """Load a filter that has SCMP_ACT_NOTIFY rules and hand its notify fd to the parent, as runc does:
    the parent (still `create`) passes it on to linux.seccomp.listenerPath. Loaded while we still hold
    every capability, so no_new_privs is not needed yet; the runtime's last steps (fifo, setuid, capset,
    execve) then run under the filter, as with runc."""
    cdef int fd = fp_seccomp(p.seccomp, p.seccomp_len, p.seccomp_flags)
    if fd < 0:
        fail(p, S_SECCOMP, errno, b"listener")
    send_stage(p, STAGE_SECCOMP, fd)
    close(fd)


cdef void apply_identity_and_caps(fp_plan *p) noexcept nogil:
    cdef int c
    if not p.keep_all_caps:
        # The bounding set can only shrink, and only while we still hold CAP_SETPCAP.
        for c in range(p.cap_last + 1):
            if not (p.cap_bounding >> c) & 1:
                if prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0:
                    fail(p, S_CAPS, errno, b"bounding set")
    if p.set_groups and fp_setgroups(p.n_groups, p.groups) < 0:
        fail(p, S_USER, errno, b"setgroups")
    if prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0:
        fail(p, S_USER, errno, b"keepcaps")
    if fp_setresgid(p.gid) < 0:
        fail(p, S_USER, errno, b"setresgid")
    if fp_setresuid(p.uid) < 0:
        fail(p, S_USER, errno, b"setresuid")
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
    if not p.keep_all_caps:
        if fp_capset(p.cap_effective, p.cap_permitted, p.cap_inheritable) < 0:
            fail(p, S_CAPS, errno, b"capset")
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        # Like runc: an ambient capability outside permitted & inheritable cannot be raised; skip it.
        for c in range(p.cap_last + 1):
            if (p.cap_ambient & p.cap_permitted & p.cap_inheritable) >> c & 1:
                if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0:
                    fail(p, S_CAPS, errno, b"ambient")


cdef void enter_joined_pid_namespace(fp_plan *p) noexcept nogil:
    """setns(pid) moves only our future children: fork, and stay behind as a mirror of the new process.

    The intermediate reports the new pid, then waits for it and exits the same way, so the parent's
    waitpid on the pid it cloned still yields the exec'd process's status. The grandchild waits for the
    parent's go, so the FORKED report always arrives before anything the grandchild sends."""
    cdef long pid = fp_clone(0, -1, NULL)
    cdef int status = 0
    if pid < 0:
        fail(p, S_SETNS, errno, b"fork into the pid namespace")
    if pid > 0:
        p.msg.step = <int>pid
        send_stage(p, STAGE_FORKED, -1)
        close(p.sock)
        if p.fork_after_join == FP_FORK_LEAVE:
            _exit(0)          # detached: the new process goes to the subreaper (conmon, the shim)
        while waitpid(<int>pid, &status, 0) < 0:
            if errno != EINTR:
                _exit(1)
        if WIFSIGNALED(status):
            signal(WTERMSIG(status), SIG_DFL)
            kill(getpid(), WTERMSIG(status))
        _exit(WEXITSTATUS(status))
    # LEAVE: the intermediate exits at once, so a death signal tied to it would race with our setup and
    # kill us; a runtime that dies still ends us through the socket (wait_continue / send_stage).
    if p.fork_after_join != FP_FORK_LEAVE:
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    wait_continue(p)


cdef void close_inherited_fds(fp_plan *p) noexcept nogil:
    """Close every fd the parent had open except the ones the child needs. Not CLOEXEC: the child holds
    them until its exec, and an inherited flock or pipe end would otherwise stay alive with it."""
    cdef int keep[FP_MAX_JOIN + 4]
    cdef int n = 0, i, j, tmp
    cdef unsigned int start = 3 + p.preserve_fds
    keep[n] = p.sock
    n += 1
    if p.fifo_fd >= 0:
        keep[n] = p.fifo_fd
        n += 1
    if p.rootfs_fd >= 0:
        keep[n] = p.rootfs_fd
        n += 1
    for i in range(p.n_join):
        keep[n] = p.join_fds[i]
        n += 1
    for i in range(1, n):          # insertion sort: n is tiny
        j = i
        while j > 0 and keep[j - 1] > keep[j]:
            tmp = keep[j]
            keep[j] = keep[j - 1]
            keep[j - 1] = tmp
            j -= 1
    for i in range(n):
        if keep[i] < <int>start:
            continue
        if <unsigned int>keep[i] > start:
            fp_close_range(start, keep[i] - 1)
        start = keep[i] + 1
    fp_close_range(start, 0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------------------
# --init: a tiny init as the container's PID 1 (tini's job, in the fast path so no image needs a binary).
#
# Hooked as the last step of child_main, right before execve: every property of the plan is applied by
# then (mounts, pivot, rlimits, session, pty, cwd, umask, and the security: bounding set, uid/gid, caps,
# no_new_privs, seccomp), so the init that stays behind is confined exactly as the process is and can do
# nothing the process could not. It forks once; the child returns to child_main and execs the process;
# the parent is the init, and never returns:
#   - every signal is blocked (no handler inherited from the Python parent can ever run) and taken with
#     rt_sigtimedwait; each one except SIGCHLD is forwarded to the child alone -- not to its process group
#     -- as tini without -g (docker --init) does;
#   - on SIGCHLD it reaps every zombie, orphans reparented to it too (it is PID 1 of the pid namespace;
#     without one it makes itself a child subreaper);
#   - when the child exits it exits too: with the child's code, or 128+N when signal N killed it (PID 1
#     cannot re-raise a signal on itself). The kernel then kills what is left in the pid namespace.
# The child gets its own process group (and the terminal's foreground with -t), so a ^C on the pty reaches
# the process once, not also through the init. The init is made non-dumpable: it never exec'd, so its
# /proc/1/exe is the host's Python and its memory a copy of the runtime's; non-dumpable, neither can be
# opened or ptraced from inside the container (CVE-2019-5736 class), and its argv area (/proc/1/cmdline,
# world-readable) is overwritten. A non-root init also drops what execve would drop for the process
# (permitted/effective down to ambient). It closes every fd above 2 and gives back the runtime's heap.

cdef extern from *:
    """
    #include <sys/syscall.h>
    #include <sys/prctl.h>
    #include <signal.h>
    #ifndef PR_SET_CHILD_SUBREAPER
    #define PR_SET_CHILD_SUBREAPER 36
    #endif
    /* Raw rt_sigprocmask / rt_sigtimedwait on the kernel's 64-bit set: glibc's wrappers quietly leave
       out its two internal signals, which would then run a handler of the Python parent. */
    static int fp_init_block_all(unsigned long long *old) {
        unsigned long long all = ~0ULL;
        return (int)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, old, sizeof all);
    }
    static int fp_init_set_mask(const unsigned long long *mask) {
        return (int)syscall(SYS_rt_sigprocmask, SIG_SETMASK, mask, NULL, sizeof *mask);
    }
    /* The next pending signal (blocks); -1 with errno when the call itself is refused (seccomp). */
    static int fp_init_wait_signal(void) {
        unsigned long long all = ~0ULL; siginfo_t si; long s;
        do { s = syscall(SYS_rt_sigtimedwait, &all, &si, NULL, sizeof all); } while (s < 0 && errno == EINTR);
        return (int)s;
    }
    /* SIGCHLD ignored (inherited) would auto-reap the child and lose its status: default while we fork;
       the child puts back what it had, so the process sees what it would without --init. */
    static struct sigaction fp_init_old_chld;
    static int fp_init_sigchld_default(void) {
        struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = SIG_DFL;
        return sigaction(SIGCHLD, &sa, &fp_init_old_chld);
    }
    static void fp_init_sigchld_restore(void) { sigaction(SIGCHLD, &fp_init_old_chld, NULL); }
    #include <string.h>
    /* Number parsing by hand (/proc/self/stat and maps): strtoul reads the locale, whose data may sit on
       the heap being given back. */
    static unsigned long fp_init_num(char **s, int base) {
        unsigned long v = 0; int d;
        for (;; (*s)++) {
            char c = **s;
            if (c >= '0' && c <= '9') d = c - '0';
            else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
            else return v;
            v = v * (unsigned long)base + (unsigned long)d;
        }
    }
    /* The init is a copy of the runtime's memory, so /proc/1/cmdline (readable by everyone) would show the
       runtime's own command line, an embedding program's included: overwrite the argument area in place
       (arg_start..arg_end, fields 48 and 49 of /proc/self/stat) and the comm with "corert-init". */
    static void fp_init_rename(char *buf, size_t cap) {
        static const char name[] = "corert-init";
        unsigned long start, end, n_name = sizeof name - 1;
        int fd, field = 3; ssize_t n; char *s;
        prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
        fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return;
        n = read(fd, buf, cap - 1); close(fd);
        if (n <= 0) return;
        buf[n] = 0;
        s = strrchr(buf, ')');          /* the comm before it may hold spaces */
        if (!s || !s[1]) return;
        for (s += 2; *s && field < 48; s++) if (*s == ' ') field++;
        if (field != 48) return;
        start = fp_init_num(&s, 10);
        if (*s++ != ' ') return;
        end = fp_init_num(&s, 10);
        if (!start || end <= start + 1) return;
        memset((void *)start, 0, end - start);
        memcpy((void *)start, name, end - start - 1 < n_name ? end - start - 1 : n_name);
    }
    /* What execve would leave a non-root process that runs no file with capabilities: permitted and
       effective shrink to the ambient set (inheritable and bounding stay). The init never execs, so it
       drops them itself, or it would hold capabilities the process does not. */
    static int fp_init_caps_as_after_exec(int cap_last) {
        struct __user_cap_header_struct h; struct __user_cap_data_struct d[2];
        unsigned long long amb = 0; int c;
        if (geteuid() == 0) return 0;   /* root keeps (at least) its permitted set across exec */
        for (c = 0; c <= cap_last && c < 64; c++)
            if (prctl(PR_CAP_AMBIENT, 3 /* PR_CAP_AMBIENT_IS_SET */, c, 0, 0) == 1) amb |= 1ULL << c;
        h.version = _LINUX_CAPABILITY_VERSION_3; h.pid = 0;
        if (syscall(SYS_capget, &h, d) < 0) return -1;
        d[0].permitted = d[0].effective = (unsigned)amb;
        d[1].permitted = d[1].effective = (unsigned)(amb >> 32);
        return (int)syscall(SYS_capset, &h, d);
    }
    /* The init is a copy of the runtime process: ~10 MB of its malloc heap and Python arenas would stay
       resident (charged to the runtime's memory cgroup) for the container's whole life, once the runtime
       has exited. The init needs none of it: from here on it runs on its stack and TLS only. Every private
       anonymous mapping of 64 KiB or more that holds neither is given back (MADV_DONTNEED frees the pages;
       were one read again it would be zeros, not a fault). Reads /proc/self/maps into a stack buffer. */
    #include <sys/mman.h>
    static void fp_init_discard(unsigned long from, unsigned long to) {
        if (to > from) madvise((void *)from, to - from, MADV_DONTNEED);
    }
    /* One line of /proc/self/maps: "start-end perms offset dev inode [name]". `stack` is an address in our
       stack (its mapping is kept whole); [tls_lo, tls_hi) the page-aligned window around the TLS block and
       the TCB, kept: adjacent anonymous mappings merge, so they may share one with a Python arena. */
    static void fp_init_shed_one(char *s, unsigned long stack, unsigned long tls_lo, unsigned long tls_hi) {
        unsigned long start, end, inode;
        start = fp_init_num(&s, 16); if (*s++ != '-') return;
        end = fp_init_num(&s, 16); if (*s++ != ' ') return;
        if (s[0] != 'r' || s[1] != 'w' || s[2] == 0 || s[3] != 'p') return;   /* private and writable */
        s += 4;
        while (*s == ' ') s++;
        while (*s && *s != ' ') s++;                          /* offset */
        while (*s == ' ') s++;
        while (*s && *s != ' ') s++;                          /* device */
        while (*s == ' ') s++;
        inode = fp_init_num(&s, 10);
        while (*s == ' ') s++;
        if (inode != 0 || (*s && strcmp(s, "[heap]") != 0)) return;   /* files, [stack], [vvar]...: kept */
        if (end - start < 65536 || (stack >= start && stack < end)) return;
        if (tls_hi <= start || tls_lo >= end) { fp_init_discard(start, end); return; }
        fp_init_discard(start, tls_lo > start ? tls_lo : start);
        fp_init_discard(tls_hi < end ? tls_hi : end, end);
    }
    static void fp_init_shed_memory(void) {
        char buf[2048], line[512];
        unsigned long a = (unsigned long)&errno, b = (unsigned long)__builtin_thread_pointer();
        unsigned long tls_lo = ((a < b ? a : b) - 65536) & ~4095UL, tls_hi = ((a > b ? a : b) + 65536) & ~4095UL;
        size_t ll = 0; ssize_t n, i; int fd;
        if (tls_hi - tls_lo > (4UL << 20)) return;   /* TLS and TCB apart: an unknown layout, keep it all */
        fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return;
        while ((n = read(fd, buf, sizeof buf)) > 0) {
            for (i = 0; i < n; i++) {
                if (buf[i] != 10 /* newline */) { if (ll < sizeof line - 1) line[ll++] = buf[i]; continue; }
                line[ll] = 0; ll = 0;
                fp_init_shed_one(line, (unsigned long)buf, tls_lo, tls_hi);
            }
        }
        close(fd);
    }
    """
    void fp_init_rename(char *buf, size_t cap) nogil
    void fp_init_shed_memory() nogil
    int fp_init_caps_as_after_exec(int cap_last) nogil
    int fp_init_block_all(unsigned long long *old) nogil
    int fp_init_set_mask(const unsigned long long *mask) nogil
    int fp_init_wait_signal() nogil
    int fp_init_sigchld_default() nogil
    void fp_init_sigchld_restore() nogil
    int PR_SET_CHILD_SUBREAPER, SIGCHLD, ECHILD
    int setpgid(int pid, int pgid) nogil
    int tcsetpgrp(int fd, int pgrp) nogil


cdef void become_init(fp_plan *p) noexcept nogil:
    """Fork: returns in the child (which goes on to execve); the parent stays as the init and never returns."""
    cdef unsigned long long old_mask = 0
    cdef long pid
    if fp_init_block_all(&old_mask) < 0 or fp_init_sigchld_default() < 0:
        fail(p, S_INIT, errno, b"signals")
    # Before the fork, so the init is never dumpable for a moment; the child's execve sets its own flag.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    pid = fp_clone(0, -1, NULL)
    if pid < 0:
        fail(p, S_INIT, errno, b"fork")
    if pid == 0:
        fp_init_sigchld_restore()
        setpgid(0, 0)
        if p.terminal:
            tcsetpgrp(0, getpid())   # allowed from the background: SIGTTOU is still blocked here
        fp_init_set_mask(&old_mask)
        return
    init_loop(p, <int>pid)


cdef int init_exit_code(int status) noexcept nogil:
    if WIFSIGNALED(status):
        return 128 + WTERMSIG(status)
    return WEXITSTATUS(status)


cdef void init_loop(fp_plan *p, int child) noexcept nogil:
    """PID 1: forward signals to `child`, reap every zombie, exit as `child` does."""
    cdef int sig, status = 0, code = -1, i
    cdef long r
    if fp_init_caps_as_after_exec(p.cap_last) < 0:
        kill(child, SIGKILL)   # never leave the process under an init more privileged than itself
        _exit(1)
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    fp_init_rename(p.scratch, FP_PATH_MAX)
    if fp_close_range(3, 0xFFFFFFFF) < 0:    # kernels before 5.9: the only fds left above 2
        close(p.sock)
        for i in range(3, 3 + p.preserve_fds):
            close(i)
    fp_init_shed_memory()                    # the plan (on the runtime's heap) is not touched after this
    while True:
        sig = fp_init_wait_signal()
        if sig < 0:
            # rt_sigtimedwait refused (a seccomp profile without it): still reap, forward nothing.
            r = waitpid(-1, &status, 0)
            if r == child:
                _exit(init_exit_code(status))
            if r < 0 and errno == ECHILD:
                _exit(1)
            continue
        if sig != SIGCHLD:
            kill(child, sig)
            continue
        while True:
            r = waitpid(-1, &status, WNOHANG)
            if r <= 0:
                break
            if r == child:
                code = init_exit_code(status)
        if code >= 0:
            _exit(code)


cdef void child_main(fp_plan *p) noexcept nogil:
    cdef int rootfd = -1, master = -1, i
    stamp(p, T_CLONED)
    close(p.parent_sock)
    # v1 cgroup placement, done by the child itself: "0" written to `tasks` moves only the calling thread
    # (all there is yet), which the kernel does without the global threadgroup rwsem that the parent's
    # write of our pid takes, and so without waiting for an RCU grace period (~10 ms) first.
    for i in range(p.n_cgroup_task):
        if write(p.cgroup_task_fds[i], b"0", 1) != 1:
            fail(p, S_CGROUP, errno, b"tasks")
    for i in range(3):
        if p.stdio[i] >= 0 and p.stdio[i] != i and dup2(p.stdio[i], i) < 0:
            fail(p, S_STDIO, errno, b"dup2")
    close_inherited_fds(p)
    # Until the container is created, dying with the parent is the only safe outcome.
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if not p.dumpable:
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)

    wait_continue(p)           # the parent wrote uid/gid maps and placed us in our cgroup
    stamp(p, T_GO)
    if p.become_root:
        if fp_setresgid(0) < 0 or fp_setresuid(0) < 0:
            fail(p, S_USERNS, errno, b"no mapping for uid/gid 0")
    if p.rootfs_fd >= 0:
        # Before unshare(CLONE_NEWNS), which carries the cwd over into the new mount namespace.
        if fchdir(p.rootfs_fd) < 0:
            fail(p, S_ROOTFS_BIND, errno, p.rootfs)
        close(p.rootfs_fd)
    join_and_unshare(p)
    if p.fork_after_join:
        enter_joined_pid_namespace(p)
    if p.clone_flags & CLONE_NEWNET and fp_loopback_up() < 0:
        fail(p, S_LOOPBACK, errno, b"lo")
    stamp(p, T_NAMESPACES)

    if p.rootfs != NULL:
        rootfd = prepare_rootfs(p)
    stamp(p, T_MOUNTS)
    send_stage(p, STAGE_PRE_PIVOT, -1)
    wait_continue(p)

    if rootfd >= 0:
        pivot(p, rootfd)
        stamp(p, T_PIVOT)
        write_sysctls(p)
        mask_and_protect(p)
    if p.hostname != NULL and sethostname(p.hostname, fp_strlen(p.hostname)) < 0:
        fail(p, S_HOSTNAME, errno, p.hostname)
    if p.domainname != NULL and setdomainname(p.domainname, fp_strlen(p.domainname)) < 0:
        fail(p, S_HOSTNAME, errno, p.domainname)
    for i in range(p.n_rlimits):
        if setrlimit(p.rlimits[i].resource, <rlimit *>&p.rlimits[i].soft) < 0:
            fail(p, S_RLIMIT, errno, b"")
    setsid()
    if p.terminal:
        master = open_terminal(p)
    if chdir(p.cwd) < 0:
        fail(p, S_CWD, errno, p.cwd)
    lookup_executable(p)
    stamp(p, T_SETUP)

    # From here the container exists: it must survive the `create` process exiting.
    prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)
    if p.seccomp_listener and p.seccomp_len > 0:
        send_seccomp_listener(p)
    stamp(p, T_READY)
    send_stage(p, STAGE_READY, master)
    if master >= 0:
        close(master)
    if p.n_start_hooks > 0:
        # The parent knows the state (pid, bundle, annotations) only now: it sends the JSON once.
        p.hook_state_len = <int>recv(p.sock, p.hook_state, FP_STATE_MAX, 0)
        if p.hook_state_len <= 0:
            _exit(1)
    if p.exec_fifo != NULL:
        wait_for_start(p)
    elif p.wait_continue_after_ready:
        wait_continue(p)
    stamp(p, T_STARTED)

    # Security last; seccomp goes before the identity switch only when no_new_privs is off, because
    # without it loading a filter needs CAP_SYS_ADMIN, which the switch drops.
    if not p.no_new_privs:
        apply_seccomp(p)
    apply_identity_and_caps(p)
    if p.umask_value >= 0:
        umask(p.umask_value)
    chdir(p.cwd)               # again as the user: permissions now apply as they will for the process
    if p.no_new_privs and prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0:
        fail(p, S_NNP, errno, b"")
    # Only 0-2 and the preserved fds reach the process (CVE-2024-21626 class).
    for i in range(3, 3 + p.preserve_fds):
        fcntl(i, F_SETFD, 0)
    fp_close_range_cloexec(3 + p.preserve_fds)
    if p.no_new_privs:
        apply_seccomp(p)
    stamp(p, T_SECURITY)
    if p.run_init:
        become_init(p)         # --init: only the forked child comes back here
    execve(p.exec_path, p.argv, p.envp)
    i = errno
    fail(p, S_EXEC, i, p.exec_path)


# ---------------------------------------------------------------------------------------------------------
# The Python face: Launcher builds the C plan from a corert.plan_types.LaunchPlan and drives the protocol.

cdef char *keep_bytes(list keep, object value):
    """A stable char* to a bytes object that `keep` holds alive for the plan's lifetime."""
    if value is None:
        return NULL
    b = bytes(value)
    if b"\x00" in b:
        raise ValueError(f"NUL byte in {b!r}")
    keep.append(b)
    return <char *>(<bytes>b)


cdef char **keep_argv(list keep, list items, list owned):
    cdef char **arr = <char **>malloc((len(items) + 1) * sizeof(char *))
    if arr == NULL:
        raise MemoryError()
    owned.append(<size_t>arr)
    for i, item in enumerate(items):
        arr[i] = keep_bytes(keep, item)
    arr[len(items)] = NULL
    return arr


cdef void *keep_array(list owned, size_t count, size_t size) except NULL:
    cdef void *arr = malloc(max(count, 1) * size)
    if arr == NULL:
        raise MemoryError()
    memset(arr, 0, max(count, 1) * size)
    owned.append(<size_t>arr)
    return arr


TIMESTAMP_NAMES = ("cloned", "go", "namespaces", "mounts", "pivot", "setup", "ready", "started", "security")


cdef class Launcher:
    """Spawns one container process from a LaunchPlan and walks the parent side of the protocol."""

    cdef fp_plan plan
    cdef list _keep       # bytes objects the plan points into
    cdef list _owned      # malloc'd arrays
    cdef public int pid
    cdef public int pidfd
    cdef public int sock
    cdef public object on_seccomp_fd   # called with the notify fd when the child sends STAGE_SECCOMP

    def __cinit__(self):
        memset(&self.plan, 0, sizeof(fp_plan))
        self._keep = []
        self._owned = []
        self.pid = -1
        self.pidfd = -1
        self.sock = -1
        self.on_seccomp_fd = None

    def __init__(self, plan, join_fds=(), dumpable=True, wait_after_ready=False, int fifo_fd=-1,
                 int fork_after_join=0):
        cdef fp_plan *p = &self.plan
        cdef list keep = self._keep
        cdef int i
        p.clone_flags = plan.clone_flags
        p.unshare_flags = plan.unshare_flags
        p.time_offsets = keep_bytes(keep, plan.time_offsets)
        if len(join_fds) > FP_MAX_JOIN:
            raise ValueError("too many namespaces to join")
        for i, (nstype, fd) in enumerate(join_fds):
            p.join_types[i] = nstype
            p.join_fds[i] = fd
        p.n_join = len(join_fds)
        p.cgroup_fd = plan.cgroup_dir_fd
        if len(plan.cgroup_task_fds) > FP_MAX_CGROUP_TASKS:
            raise ValueError("too many cgroup hierarchies")
        for i, fd in enumerate(plan.cgroup_task_fds):
            p.cgroup_task_fds[i] = fd
        p.n_cgroup_task = len(plan.cgroup_task_fds)
        p.dumpable = 1 if dumpable else 0
        p.fork_after_join = fork_after_join
        p.rootfs = keep_bytes(keep, plan.rootfs) if plan.rootfs else NULL
        if plan.rootfs_mount:
            p.rootfs_fstype = keep_bytes(keep, plan.rootfs_mount[0])
            p.rootfs_data = keep_bytes(keep, plan.rootfs_mount[1])
        p.rootfs_fd = -1
        if plan.rootfs and not plan.rootfs_mount and plan.clone_flags & 0x10000000:   # CLONE_NEWUSER
            import os
            p.rootfs_fd = os.open(plan.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            # The child enters the fd as its cwd, then unshares the mount namespace, which carries the cwd
            # into the copy (a mount namespace made by clone would leave the fd pointing at the host's).
            if p.clone_flags & 0x00020000:   # CLONE_NEWNS
                p.clone_flags &= ~<unsigned long long>0x00020000
                p.unshare_flags |= 0x00020000
        p.rootfs_propagation = plan.rootfs_propagation
        p.readonly_rootfs = plan.readonly_rootfs
        p.no_pivot = plan.no_pivot

        p.n_mounts = len(plan.mounts)
        p.mounts = <fp_mount *>keep_array(self._owned, p.n_mounts, sizeof(fp_mount))
        for i, m in enumerate(plan.mounts):
            p.mounts[i].source = keep_bytes(keep, m.source)
            p.mounts[i].target = keep_bytes(keep, m.target)
            p.mounts[i].fstype = keep_bytes(keep, m.fstype)
            p.mounts[i].flags = m.flags
            p.mounts[i].data = keep_bytes(keep, m.data)
            p.mounts[i].remount_flags = m.remount_flags
            p.mounts[i].propagation = m.propagation
            p.mounts[i].target_is_file = m.target_is_file
        p.n_devices = len(plan.devices)
        p.devices = <fp_device *>keep_array(self._owned, p.n_devices, sizeof(fp_device))
        for i, d in enumerate(plan.devices):
            p.devices[i].path = keep_bytes(keep, d.path)
            p.devices[i].kind = d.kind
            p.devices[i].major = d.major
            p.devices[i].minor = d.minor
            p.devices[i].mode = d.mode
            p.devices[i].uid = d.uid
            p.devices[i].gid = d.gid
            p.devices[i].bind_from_host = d.bind_from_host
        p.n_symlinks = len(plan.symlinks)
        p.symlinks = <fp_pair *>keep_array(self._owned, p.n_symlinks, sizeof(fp_pair))
        for i, (target, link) in enumerate(plan.symlinks):
            p.symlinks[i].a = keep_bytes(keep, target)
            p.symlinks[i].b = keep_bytes(keep, link)
        p.n_masked = len(plan.masked_paths)
        p.masked = <const char **>keep_array(self._owned, p.n_masked, sizeof(char *))
        for i, path in enumerate(plan.masked_paths):
            p.masked[i] = keep_bytes(keep, path)
        p.n_readonly = len(plan.readonly_paths)
        p.readonly = <const char **>keep_array(self._owned, p.n_readonly, sizeof(char *))
        for i, path in enumerate(plan.readonly_paths):
            p.readonly[i] = keep_bytes(keep, path)

        p.hostname = keep_bytes(keep, plan.hostname)
        p.domainname = keep_bytes(keep, plan.domainname)
        p.n_sysctls = len(plan.sysctls)
        p.sysctls = <fp_pair *>keep_array(self._owned, p.n_sysctls, sizeof(fp_pair))
        for i, (path, value) in enumerate(plan.sysctls):
            p.sysctls[i].a = keep_bytes(keep, path)
            p.sysctls[i].b = keep_bytes(keep, value)
        p.n_rlimits = len(plan.rlimits)
        p.rlimits = <fp_rlimit *>keep_array(self._owned, p.n_rlimits, sizeof(fp_rlimit))
        for i, (res, soft, hard) in enumerate(plan.rlimits):
            p.rlimits[i].resource = res
            p.rlimits[i].soft = soft
            p.rlimits[i].hard = hard
        p.uid = plan.uid
        p.gid = plan.gid
        p.n_groups = len(plan.additional_gids)
        p.groups = <unsigned int *>keep_array(self._owned, p.n_groups, sizeof(unsigned int))
        for i, g in enumerate(plan.additional_gids):
            p.groups[i] = g
        p.set_groups = plan.set_groups
        p.become_root = plan.become_root
        p.umask_value = plan.umask
        p.cwd = keep_bytes(keep, plan.cwd)
        if not plan.args:
            raise ValueError("process.args is empty")
        p.argv = keep_argv(keep, list(plan.args), self._owned)
        p.envp = keep_argv(keep, list(plan.env), self._owned)
        path_env = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for entry in plan.env:
            if entry.startswith(b"PATH="):
                path_env = entry[5:]
        p.path_env = keep_bytes(keep, path_env)

        p.cap_bounding = plan.cap_bounding
        p.cap_effective = plan.cap_effective
        p.cap_permitted = plan.cap_permitted
        p.cap_inheritable = plan.cap_inheritable
        p.cap_ambient = plan.cap_ambient
        p.keep_all_caps = plan.keep_all_caps
        p.cap_last = plan.cap_last
        p.no_new_privs = plan.no_new_privs
        if plan.seccomp_bpf:
            if len(plan.seccomp_bpf) % 8:
                raise ValueError("seccomp BPF must be a whole number of 8-byte instructions")
            bpf = bytes(plan.seccomp_bpf)
            keep.append(bpf)
            p.seccomp = <const unsigned char *>(<char *>(<bytes>bpf))
            p.seccomp_len = len(plan.seccomp_bpf) // 8
            p.seccomp_flags = getattr(plan, "seccomp_flags", 0)
            p.seccomp_listener = 1 if plan.seccomp_listener else 0
        p.terminal = plan.terminal
        p.n_start_hooks = len(plan.start_hooks)
        p.start_hooks = <fp_hook *>keep_array(self._owned, p.n_start_hooks, sizeof(fp_hook))
        for i, (path, args, env, timeout_ms) in enumerate(plan.start_hooks):
            p.start_hooks[i].path = keep_bytes(keep, path)
            p.start_hooks[i].argv = keep_argv(keep, list(args) or [path], self._owned)
            p.start_hooks[i].envp = keep_argv(keep, list(env), self._owned)
            p.start_hooks[i].timeout_ms = timeout_ms
        for i in range(3):
            p.stdio[i] = plan.stdio[i] if plan.stdio else -1
        p.exec_fifo = keep_bytes(keep, plan.exec_fifo)
        # The parent opens the fifo (O_PATH): a child in a user namespace may not be able to walk the
        # state directory, but it may open the fifo itself through /proc/self/fd.
        p.fifo_fd = fifo_fd
        p.preserve_fds = plan.preserve_fds
        p.wait_continue_after_ready = 1 if wait_after_ready else 0
        p.run_init = 1 if plan.init else 0

    def spawn(self) -> int:
        """clone3 the child into its new namespaces; it waits for `proceed()`. Returns the pid."""
        cdef int sv[2]
        cdef int pidfd = -1
        cdef long pid
        cdef unsigned long long flags = self.plan.clone_flags
        cdef int cgfd = self.plan.cgroup_fd
        cdef int undump = not self.plan.dumpable
        cdef int was_dumpable = 0
        cdef int err = 0
        if socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0:
            raise OSError(errno, "socketpair")
        self.plan.sock = sv[1]
        self.plan.parent_sock = sv[0]
        with nogil:
            # The dumpable flag is inherited by clone: clearing it in the parent first leaves no window in
            # which a process of the container could open /proc/<child>/exe (CVE-2019-5736 class).
            if undump:
                was_dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
                prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            pid = fp_clone(flags, cgfd, &pidfd)
            if pid == 0:
                child_main(&self.plan)
                _exit(1)
            err = errno
            if undump and was_dumpable > 0:
                prctl(PR_SET_DUMPABLE, was_dumpable, 0, 0, 0)
        close(sv[1])
        if self.plan.rootfs_fd >= 0:
            close(self.plan.rootfs_fd)
            self.plan.rootfs_fd = -1
        self.sock = sv[0]
        if pid < 0:
            close(sv[0])
            self.sock = -1
            raise OSError(err, f"clone3: {__import__('os').strerror(err)}")
        self.pid = pid
        self.pidfd = pidfd
        return pid

    def send_hook_state(self, state: bytes) -> None:
        """The state JSON for the startContainer hooks (after READY; only when the plan has such hooks)."""
        import os
        if len(state) > FP_STATE_MAX:
            from corert.errors import CorertError
            raise CorertError(f"the container state ({len(state)} bytes) is too large for startContainer hooks")
        os.write(self.sock, state)

    def proceed(self) -> None:
        """Tell the child to go on to its next step."""
        cdef int32_t kind = MSG_CONTINUE
        import os
        os.write(self.sock, (<char *>&kind)[:sizeof(kind)])

    def wait_stage(self):
        """Wait for the child's next report: (stage, fd or -1), or (STAGE_FORKED, pid of the process that
        entered the joined pid namespace). Raises ContainerInitError when the child failed."""
        cdef fp_msg msg
        cdef int fd = -1
        cdef ssize_t n
        cdef int sock = self.sock
        while True:
            with nogil:
                n = fp_recv_msg_fd(sock, &msg, sizeof(fp_msg), &fd)
            if n != sizeof(fp_msg) or msg.kind != MSG_STAGE or msg.stage != STAGE_SECCOMP:
                break
            # The notify fd goes to the listener at once: the child may already be blocked on a notified
            # syscall, waiting for an answer.
            try:
                if self.on_seccomp_fd is not None and fd >= 0:
                    self.on_seccomp_fd(fd)
            finally:
                if fd >= 0:
                    close(fd)
            fd = -1
        if n != sizeof(fp_msg):
            if fd >= 0:
                close(fd)
            from corert.errors import ContainerInitError
            raise ContainerInitError("setup", 0, "the container process exited before it was ready")
        memcpy(self.plan.msg.ts, msg.ts, sizeof(msg.ts))
        if msg.kind == MSG_ERROR:
            from corert.errors import ContainerInitError
            raise ContainerInitError(STEP_NAMES.get(msg.step, f"step {msg.step}"), msg.err,
                                     msg.text.decode(errors="replace"))
        if msg.stage == STAGE_FORKED:
            return msg.stage, msg.step
        return msg.stage, fd

    def timestamps(self) -> dict:
        """Per-step monotonic timestamps (ns) the child recorded, for `--trace`."""
        return {name: self.plan.msg.ts[i] for i, name in enumerate(TIMESTAMP_NAMES) if self.plan.msg.ts[i]}

    def close(self) -> None:
        if self.sock >= 0:
            close(self.sock)
        self.sock = -1

    def __dealloc__(self):
        if self.plan.rootfs_fd > 0:
            close(self.plan.rootfs_fd)
        for addr in self._owned:
            free(<void *><size_t>addr)
        if self.sock >= 0:
            close(self.sock)




def setns(int fd, int nstype) -> None:
    """setns(2) for the calling thread (Python 3.11's os module has no setns)."""
    if fp_setns(fd, nstype) < 0:
        import os
        raise OSError(errno, os.strerror(errno))


# fork_after_join: 0 = no fork; MIRROR = the intermediate waits and exits as the new process does (its
# parent keeps a child to wait on); LEAVE = it exits at once (detached exec: orphan to the subreaper).
FORK_MIRROR = FP_FORK_MIRROR
FORK_LEAVE = FP_FORK_LEAVE
