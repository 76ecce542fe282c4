/* The kernel floor for a container start: the least a runtime must do to run /bin/true in a rootfs.
 *
 * usage: floor ROOTFS
 * clone(NEWNS|NEWPID|NEWUTS|NEWIPC|NEWNET) -> make / private -> bind the rootfs onto itself -> mount proc
 * -> pivot_root -> detach the old root -> execve /bin/true; the parent waits and returns the exit code.
 * No cgroup, no /dev, no config parsing, no state on disk, no security setup: whatever a runtime spends
 * above this number is its own cost.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *rootfs;

static int die(const char *what) {
    perror(what);
    _exit(120);
}

static int child(void *arg) {
    (void)arg;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind rootfs");
    if (chdir(rootfs) < 0) die("chdir rootfs");
    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("mount proc");
    /* pivot_root(".", "."): the old root ends up stacked under the new one; detach it. */
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root");
    if (umount2(".", MNT_DETACH) < 0) die("detach old root");
    if (chdir("/") < 0) die("chdir /");
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {"PATH=/bin", NULL};
    execve(argv[0], argv, envp);
    return die("execve /bin/true");
}

int main(int argc, char **argv) {
    static char stack[64 * 1024] __attribute__((aligned(16)));
    int status;
    if (argc != 2) {
        fprintf(stderr, "usage: %s ROOTFS\n", argv[0]);
        return 2;
    }
    rootfs = argv[1];
    pid_t pid = clone(child, stack + sizeof(stack),
                      CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | SIGCHLD, NULL);
    if (pid < 0) {
        perror("clone");
        return 1;
    }
    if (waitpid(pid, &status, 0) < 0) {
        perror("waitpid");
        return 1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
