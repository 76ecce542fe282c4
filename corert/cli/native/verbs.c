/* `start` and `delete` of a plain container, as corert/engine/control.py:start and
 * corert/engine/delete.py:delete do them for a container whose plan says it has nothing else to tear
 * down (no storage, network, hooks). Anything else goes back to the Python CLI (SC_FALLBACK) before the
 * first step the Python verb could not take again: opening the exec fifo at start (the init proceeds
 * once it has a reader), unlinking state.json at delete (cgroup rmdirs and the other files of the state
 * dir are undone or redone by Python's delete as it finds them). */
#define _GNU_SOURCE
#include "shortcut.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434                 /* the same number on every architecture */
#endif

#define MAX_ENTRIES 64                     /* of a plain container's state dir: state.json, shortcut, fifo */

enum sc_result sc_start(struct sc_container *c, const char *id)
{
    /* The pidfd pins the process: if the start time then matches, it refers to our init. Python refuses a
     * stopped or paused container with its own messages: let it. */
    int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    if (pidfd < 0)
        return SC_FALLBACK;
    if (sc_init_alive(c) != 1 || sc_maybe_paused(c)) {
        close(pidfd);
        return SC_FALLBACK;
    }
    /* O_NONBLOCK: never hang in open() if the init died; poll both the fifo and the init's pidfd. No
     * fifo: already started ("cannot start an already running container" comes from Python). */
    int fd = openat(c->dirfd, EXEC_FIFO, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        close(pidfd);
        return SC_FALLBACK;
    }
    /* From here on the init proceeds (it was blocked opening the fifo for writing): no hand-over. */
    enum sc_result result = SC_FAILED;
    char message[512];
    struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            snprintf(message, sizeof message, "container '%s': start: poll: %s", id, strerror(errno));
            sc_report_error(message);
            break;
        }
        char byte;
        ssize_t n = read(fd, &byte, 1);
        if (n == 1) {                      /* the go signal is taken: the init execs now */
            result = SC_DONE;
            break;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(message, sizeof message, "container '%s': start: exec fifo: %s", id, strerror(errno));
            sc_report_error(message);
            break;
        }
        /* The init died during the handshake (a failing startContainer hook, say): engine/control.py's
         * error. (One already dead before it never gets here: Python reports a stopped container.) */
        if ((fds[1].revents & POLLIN) || (n == 0 && (fds[0].revents & POLLHUP))) {
            snprintf(message, sizeof message, "container '%s': init exited before it could be started", id);
            sc_report_error(message);
            break;
        }
    }
    close(fd);
    close(pidfd);
    if (result == SC_DONE)
        unlinkat(c->dirfd, EXEC_FIFO, 0);
    return result;
}

/* The names in the state dir other than state.json, into names[] (NUL-separated in buf); their count,
 * or -1 when the dir holds a directory or more than fits (the Python CLI removes anything). Read whole
 * before anything is unlinked: readdir's view of a dir changing under it is unspecified. */
static int list_files(int dirfd, char names[][256], int max)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, STATE_FILE))
            continue;
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            type = fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
        }
        if (type == DT_DIR || n == max) {
            n = -1;
            break;
        }
        snprintf(names[n++], 256, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

/* Unlink the listed files; whether all went (or were gone already). */
static int unlink_files(int dirfd, char names[][256], int n)
{
    for (int i = 0; i < n; i++) {
        if (unlinkat(dirfd, names[i], 0) < 0 && errno != ENOENT)
            return 0;
    }
    return 1;
}

enum sc_result sc_delete(struct sc_container *c)
{
    /* A live init (running, paused, created) means killing it first, or refusing: Python does both. */
    if (sc_init_alive(c) != 0)
        return SC_FALLBACK;
    char names[MAX_ENTRIES][256];
    int n = list_files(c->dirfd, names, MAX_ENTRIES);
    if (n < 0)
        return SC_FALLBACK;
    /* cgroup dirs: the init is gone, so they are normally empty; a busy one (a process left outside
     * the pid namespace, or still draining) takes the Python path, which kills and waits. */
    for (int i = 0; i < c->n_dirs; i++) {
        if (rmdir(c->dirs[i]) < 0 && errno != ENOENT)
            return SC_FALLBACK;
    }
    /* state.json goes last: until then a failure can still hand everything to the Python CLI. */
    if (!unlink_files(c->dirfd, names, n))
        return SC_FALLBACK;
    if (unlinkat(c->dirfd, STATE_FILE, 0) < 0 && errno != ENOENT)
        return SC_FALLBACK;
    /* We hold the lock, so only a process that ignores it could add files now: list and unlink again. */
    for (int attempt = 0; rmdir(c->dir) < 0 && errno != ENOENT; attempt++) {
        int saved = errno;
        if (saved != ENOTEMPTY || attempt == 3 || (n = list_files(c->dirfd, names, MAX_ENTRIES)) < 0 ||
            !unlink_files(c->dirfd, names, n)) {
            char message[4200];
            snprintf(message, sizeof message, "container deleted, but its state directory %s remains: %s",
                     c->dir, strerror(saved));
            sc_report_error(message);
            return SC_FAILED;
        }
    }
    return SC_DONE;
}
