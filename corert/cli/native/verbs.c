/* `start` and `delete` of a plain container, as corert/engine/control.py:start and
 * corert/engine/delete.py:delete do them for a container whose plan says it has nothing else to tear
 * down (no storage, network, hooks). Anything else goes back to the Python CLI (SC_FALLBACK), always
 * before the first irreversible step. */
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

#define EXEC_FIFO "exec.fifo"
#define STATE_FILE "state.json"

enum sc_result sc_start(struct sc_container *c, const char *id)
{
    /* Python refuses a stopped or paused container with its own messages: let it. */
    if (sc_init_alive(c) != 1 || sc_maybe_paused(c))
        return SC_FALLBACK;
    int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    if (pidfd < 0)
        return SC_FALLBACK;
    /* The pidfd pins the process: if the start time still matches, it refers to our init. */
    if (sc_init_alive(c) != 1) {
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
    enum sc_result result = SC_FALLBACK;
    struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        char byte;
        ssize_t n = read(fd, &byte, 1);
        if (n == 1) {                      /* the go signal is taken: the init execs now */
            result = SC_DONE;
            break;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            break;
        /* The init died during the handshake (a failing startContainer hook, say): engine/control.py's
         * error. (One already dead before it never gets here: Python reports a stopped container.) */
        if ((fds[1].revents & POLLIN) || (n == 0 && (fds[0].revents & POLLHUP))) {
            char message[512];
            snprintf(message, sizeof message, "container '%s': init exited before it could be started", id);
            sc_report_error(message);
            result = SC_FAILED;
            break;
        }
    }
    close(fd);
    close(pidfd);
    if (result == SC_DONE)
        unlinkat(c->dirfd, EXEC_FIFO, 0);
    return result;
}

/* Whether the state dir holds only files (the Python CLI removes anything else). */
static int only_files(DIR *d)
{
    struct dirent *e;
    rewinddir(d);
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return 0;
            type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
        }
        if (type == DT_DIR)
            return 0;
    }
    return 1;
}

enum sc_result sc_delete(struct sc_container *c)
{
    /* A live init (running, paused, created) means killing it first, or refusing: Python does both. */
    if (sc_init_alive(c) != 0)
        return SC_FALLBACK;
    /* cgroup dirs: the init is gone, so they are normally empty; a busy one (a process left outside
     * the pid namespace, or still draining) takes the Python path, which kills and waits. */
    for (int i = 0; i < c->n_dirs; i++) {
        if (rmdir(c->dirs[i]) < 0 && errno != ENOENT)
            return SC_FALLBACK;
    }
    int fd = openat(c->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return SC_FALLBACK;
    }
    if (!only_files(d)) {
        closedir(d);
        return SC_FALLBACK;
    }
    /* state.json goes last: until then a failure can still hand everything to the Python CLI. */
    struct dirent *e;
    rewinddir(d);
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, STATE_FILE))
            continue;
        if (unlinkat(c->dirfd, e->d_name, 0) < 0 && errno != ENOENT) {
            closedir(d);
            return SC_FALLBACK;
        }
    }
    closedir(d);
    if (unlinkat(c->dirfd, STATE_FILE, 0) < 0 && errno != ENOENT)
        return SC_FALLBACK;
    if (rmdir(c->dir) < 0 && errno != ENOENT) {
        char message[4200];
        snprintf(message, sizeof message, "container deleted, but its state directory %s remains: %s",
                 c->dir, strerror(errno));
        sc_report_error(message);
        return SC_FAILED;
    }
    return SC_DONE;
}
