/* Reading a container's shortcut plan (written by corert/engine/shortcut.py; the format is described
 * there) and the liveness checks `start` and `delete` make before acting on it. */
#define _GNU_SOURCE
#include "shortcut.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>


/* Read a whole small file into buf (NUL-terminated); its length, or -1 (errno set; E2BIG if too big). */
static ssize_t read_small(int dirfd, const char *path, char *buf, size_t size)
{
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t used = 0;
    for (;;) {
        ssize_t n = read(fd, buf + used, size - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        if (n == 0)
            break;
        used += (size_t)n;
        if (used == size - 1) {
            close(fd);
            errno = E2BIG;
            return -1;
        }
    }
    close(fd);
    buf[used] = '\0';
    return (ssize_t)used;
}

static int parse_ull(const char *text, unsigned long long *out)
{
    char *end;
    if (!*text)
        return -1;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return (errno || *end) ? -1 : 0;
}

/* Split `line` at tabs into at most `max` fields; the count. */
static int split_tabs(char *line, char **fields, int max)
{
    int n = 0;
    fields[n++] = line;
    for (char *p = line; *p && n < max; p++) {
        if (*p == '\t') {
            *p = '\0';
            fields[n++] = p + 1;
        }
    }
    return n;
}

/* Parse the plan text in place; whether it is complete and valid and describes this state.json of
 * container `id`. */
static int parse_plan(struct sc_container *c, const char *id)
{
    struct stat st;
    if (fstatat(c->dirfd, STATE_FILE, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    int saw_id = 0, saw_state = 0, saw_init = 0, saw_end = 0, first = 1;
    char *save = NULL;
    for (char *line = strtok_r(c->text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (saw_end)
            return -1;                     /* nothing may follow "end" */
        if (first) {
            if (strcmp(line, PLAN_MAGIC) != 0)
                return -1;
            first = 0;
            continue;
        }
        char *f[5];
        int n = split_tabs(line, f, 5);
        unsigned long long a, b, ns;
        if (n == 2 && strcmp(f[0], "id") == 0) {
            if (strcmp(f[1], id) != 0)
                return -1;                 /* a renamed state dir: Python refuses it */
            saw_id = 1;
        } else if (n == 4 && strcmp(f[0], "state") == 0) {
            /* state.json is only ever replaced by rename: any later save is another file. */
            if (parse_ull(f[1], &a) || parse_ull(f[2], &b) || parse_ull(f[3], &ns))
                return -1;
            unsigned long long mtime = (unsigned long long)st.st_mtim.tv_sec * 1000000000ULL +
                                       (unsigned long long)st.st_mtim.tv_nsec;
            if (a != (unsigned long long)st.st_ino || b != (unsigned long long)st.st_size || ns != mtime)
                return -1;
            saw_state = 1;
        } else if (n == 3 && strcmp(f[0], "init") == 0) {
            if (parse_ull(f[1], &a) || parse_ull(f[2], &b) || a == 0 || a > 0x7fffffff)
                return -1;
            c->pid = (pid_t)a;
            c->pid_start = b;
            saw_init = 1;
        } else if (n == 2 && strcmp(f[0], "rmdir") == 0 && f[1][0] == '/') {
            if (c->n_dirs == SC_MAX_DIRS)
                return -1;
            c->dirs[c->n_dirs++] = f[1];
        } else if (n == 3 && strcmp(f[0], "paused-if") == 0 && f[1][0] == '/') {
            if (c->n_pause_checks == SC_MAX_PAUSE_CHECKS)
                return -1;
            c->pause_checks[c->n_pause_checks].path = f[1];
            c->pause_checks[c->n_pause_checks++].line = f[2];
        } else if (n == 1 && strcmp(f[0], "end") == 0) {
            saw_end = 1;
        } else {
            return -1;                     /* a line this front does not know: the Python CLI does */
        }
    }
    return (saw_id && saw_state && saw_init && saw_end) ? 0 : -1;
}

enum sc_result sc_open(struct sc_container *c, const char *root, const char *id)
{
    c->dirfd = -1;
    c->n_dirs = 0;
    c->n_pause_checks = 0;
    if ((size_t)snprintf(c->dir, sizeof c->dir, "%s/%s", root, id) >= sizeof c->dir)
        return SC_FALLBACK;
    c->dirfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->dirfd < 0)
        return errno == ENOENT ? SC_ABSENT : SC_FALLBACK;
    /* The lock every corert verb takes; held by someone else (a create still running): the Python CLI
     * waits for it with its own timeout and messages. */
    if (flock(c->dirfd, LOCK_EX | LOCK_NB) < 0)
        goto fallback;
    if (read_small(c->dirfd, PLAN_FILE, c->text, sizeof c->text) < 0 || parse_plan(c, id) < 0)
        goto fallback;
    return SC_DONE;
fallback:
    sc_close(c);
    return SC_FALLBACK;
}

void sc_close(struct sc_container *c)
{
    if (c->dirfd >= 0) {
        close(c->dirfd);                   /* drops the flock: nothing else shares this file description */
        c->dirfd = -1;
    }
}

int sc_init_alive(const struct sc_container *c)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)c->pid);
    if (read_small(AT_FDCWD, path, buf, sizeof buf) < 0)
        return (errno == ENOENT || errno == ESRCH) ? 0 : -1;
    /* comm may hold spaces and parens: the fields after it start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    char state = *p;
    /* field 3 is the state; field 22, 19 fields on, the start time in clock ticks */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    char *end;
    unsigned long long start = strtoull(p, &end, 10);
    if (end == p)
        return -1;
    if (start != c->pid_start)
        return 0;                          /* the pid was reused */
    return !(state == 'Z' || state == 'X' || state == 'x');
}

int sc_maybe_paused(const struct sc_container *c)
{
    char buf[4096];
    for (int i = 0; i < c->n_pause_checks; i++) {
        if (read_small(AT_FDCWD, c->pause_checks[i].path, buf, sizeof buf) < 0) {
            if (errno == ENOENT)
                continue;                  /* cgroup gone: it cannot be frozen (live_status agrees) */
            return 1;
        }
        size_t len = strlen(c->pause_checks[i].line);
        for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
            if (strncmp(line, c->pause_checks[i].line, len) == 0 && (line[len] == '\n' || line[len] == '\0'))
                return 1;
        }
    }
    return 0;
}
