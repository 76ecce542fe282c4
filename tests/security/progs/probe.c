/* probe: one static binary that tries an escape step inside a container and reports the kernel's answer.
 *
 * Every subcommand prints one line per attempt, "<what> OK" or "<what> ERR <errno-name>", and exits 0;
 * the tests decide what the answer must be. Built with `gcc -static` by tests/security/conftest.py.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case EPERM: return "EPERM"; case ENOENT: return "ENOENT"; case ESRCH: return "ESRCH";
    case EACCES: return "EACCES"; case EROFS: return "EROFS"; case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL"; case ECONNREFUSED: return "ECONNREFUSED"; case ETXTBSY: return "ETXTBSY";
    case ENXIO: return "ENXIO"; case EBADF: return "EBADF"; case ENOEXEC: return "ENOEXEC";
    case EEXIST: return "EEXIST"; case ENOTDIR: return "ENOTDIR"; case EISDIR: return "EISDIR";
    case ENODEV: return "ENODEV"; case EOPNOTSUPP: return "EOPNOTSUPP"; case EKEYREVOKED: return "EKEYREVOKED";
    case ENOKEY: return "ENOKEY"; case EIO: return "EIO";
    default: { static char b[32]; snprintf(b, sizeof b, "E%d", e); return b; }
    }
}

static void report(const char *what, long r) {
    if (r < 0) printf("%s ERR %s\n", what, ename(errno));
    else printf("%s OK\n", what);
    fflush(stdout);
}

/* open PATH then write DATA: the error of whichever step failed. */
static void do_write(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { report(path, -1); return; }
    long r = write(fd, data, strlen(data));
    report(path, r);
    close(fd);
}

static void do_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char link[512], target[4096];
    if (!d) { report("opendir", -1); return; }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d)) continue;
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        printf("fd %d %s\n", fd, target);
    }
    closedir(d);
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd)) printf("cwd %s\n", cwd);
    else report("cwd", -1);
    /* The CVE-2024-21626 escape: a cwd outside the container's root makes ".." lead to the host. */
    struct stat a, b;
    if (stat("/", &a) == 0 && stat("../../../../../../../..", &b) == 0)
        printf("dotdot %s\n", (a.st_dev == b.st_dev && a.st_ino == b.st_ino) ? "root" : "ESCAPED");
    fflush(stdout);
}

/* Scan /proc for processes named `comm` (the exec helper is "corert") and try to reach their exe. */
static int scan_exe(const char *comm, int write_too) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int seen = 0;
    char path[320], buf[256], target[4096];
    if (!d) return 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = 0;
        if (buf[n - 1] == '\n') buf[n - 1] = 0;
        if (strcmp(buf, comm) != 0) continue;
        seen++;
        snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
        char what[300];
        ssize_t l = readlink(path, target, sizeof target - 1);
        if (l >= 0) { target[l] = 0; printf("pid %s readlink OK %s\n", e->d_name, target); }
        else printf("pid %s readlink ERR %s\n", e->d_name, ename(errno));
        int r = open(path, O_PATH | O_CLOEXEC);
        snprintf(what, sizeof what, "pid %s open-path", e->d_name); report(what, r); if (r >= 0) close(r);
        r = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(what, sizeof what, "pid %s open-read", e->d_name); report(what, r); if (r >= 0) close(r);
        if (write_too) {
            r = open(path, O_WRONLY | O_CLOEXEC);
            snprintf(what, sizeof what, "pid %s open-write", e->d_name); report(what, r); if (r >= 0) close(r);
        }
    }
    closedir(d);
    return seen;
}

/* Watch for exec helpers until `count` were seen or `seconds` passed; then print "seen N". */
static void do_watch(const char *comm, int count, int seconds) {
    time_t end = time(NULL) + seconds;
    int seen = 0;
    while (seen < count && time(NULL) < end)
        seen += scan_exe(comm, 1);
    printf("seen %d\n", seen);
    fflush(stdout);
}

static void do_connect_abstract(const char *name) {
    struct sockaddr_un a;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) { report("socket", -1); return; }
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(a.sun_path + 1, name, n);   /* sun_path[0] = 0: the abstract namespace */
    report("connect", connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n));
    close(s);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: probe CMD ...\n"); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "write") && argc == 4) do_write(argv[2], argv[3]);
    else if (!strcmp(cmd, "fds")) do_fds();
    else if (!strcmp(cmd, "watch") && argc == 5) do_watch(argv[2], atoi(argv[3]), atoi(argv[4]));
    else if (!strcmp(cmd, "open-write") && argc == 3) {
        int fd = open(argv[2], O_WRONLY | O_CLOEXEC);
        report("open-write", fd);
    } else if (!strcmp(cmd, "finit_module")) {
        int fd = open(argc > 2 ? argv[2] : "/proc/self/exe", O_RDONLY | O_CLOEXEC);
        report("finit_module", syscall(SYS_finit_module, fd, "", 0));
        static char junk[64] = "\177ELF";
        report("init_module", syscall(SYS_init_module, junk, sizeof junk, ""));
        report("delete_module", syscall(SYS_delete_module, "loop", O_NONBLOCK));
    } else if (!strcmp(cmd, "mknod") && argc == 5) {
        dev_t dev = makedev(atoi(argv[3]), atoi(argv[4]));
        report("mknod", mknod(argv[2], S_IFBLK | 0600, dev));
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        report("open", fd);
        if (fd >= 0) { char b[512]; report("read", read(fd, b, sizeof b)); }
    } else if (!strcmp(cmd, "unshare")) {
        report("unshare-user", unshare(CLONE_NEWUSER));
        report("unshare-mnt", unshare(CLONE_NEWNS));
        report("unshare-net", unshare(CLONE_NEWNET));
        report("mount-tmpfs", mount("tmpfs", "/tmp", "tmpfs", 0, NULL));
        report("mount-proc", mount("proc", "/tmp", "proc", 0, NULL));
        report("setns", setns(0, 0));
        pid_t p = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (p == 0) _exit(0);
        report("clone-newuser", p);
    } else if (!strcmp(cmd, "ptrace") && argc == 3) {
        report("ptrace-attach", ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0));
        report("kill0", kill(atoi(argv[2]), 0));
    } else if (!strcmp(cmd, "connect-abstract") && argc == 3) do_connect_abstract(argv[2]);
    else if (!strcmp(cmd, "keyctl")) {
        /* KEYCTL_GET_KEYRING_ID(KEY_SPEC_USER_KEYRING) / KEYCTL_READ of the session keyring / add_key */
        report("keyctl-get-user", syscall(SYS_keyctl, 0, -4, 0));
        char buf[256];
        report("keyctl-read-session", syscall(SYS_keyctl, 11, -3, buf, sizeof buf));
        report("add_key", syscall(SYS_add_key, "user", "corert-probe", "x", 1, -3));
        report("request_key", syscall(SYS_request_key, "user", "corert-host-key", NULL, 0));
    } else { fprintf(stderr, "probe: bad command\n"); return 2; }
    return 0;
}
