/* The native front's view of one container: its locked state dir and the shortcut plan that the Python
 * side (corert/engine/shortcut.py) wrote there at `create`.
 *
 * Every check here answers "can the short path do exactly what the Python CLI would?"; whenever the
 * answer is not a clear yes the caller hands the whole command to the Python CLI (SC_FALLBACK), which
 * is the authority on every error message and every unusual container. */
#ifndef CORERT_SHORTCUT_H
#define CORERT_SHORTCUT_H

#include <sys/types.h>

/* The names of corert/engine/state.py (STATE_FILE, EXEC_FIFO, SHORTCUT_FILE) and engine/shortcut.py (MAGIC). */
#define STATE_FILE "state.json"
#define EXEC_FIFO "exec.fifo"
#define PLAN_FILE "shortcut"
#define PLAN_MAGIC "corert-shortcut 1"

enum sc_result {
    SC_DONE = 0,       /* the verb is done: exit 0 */
    SC_FALLBACK = 1,   /* nothing irreversible happened: let the Python CLI run the command */
    SC_ABSENT = 2,     /* no such container directory */
    SC_FAILED = 3,     /* failed after an irreversible step: error already reported, exit 1 */
};

#define SC_MAX_DIRS 32
#define SC_MAX_PAUSE_CHECKS 4

struct sc_pause_check {      /* the container counts as paused when `path` holds a line equal to `line` */
    const char *path;
    const char *line;
};

struct sc_container {
    char dir[4096];          /* <root>/<id> */
    int dirfd;               /* open on dir, flocked (LOCK_EX) until sc_close */
    pid_t pid;               /* the init, as the record holds it */
    unsigned long long pid_start;
    int n_dirs;              /* cgroup dirs a stopped container's teardown removes, in order */
    const char *dirs[SC_MAX_DIRS];
    int n_pause_checks;
    struct sc_pause_check pause_checks[SC_MAX_PAUSE_CHECKS];
    char text[16384];        /* the plan file; the pointers above point into it */
};

/* Open and lock <root>/<id> and read its plan; SC_DONE when the plan holds for the current state.json. */
enum sc_result sc_open(struct sc_container *c, const char *root, const char *id);
void sc_close(struct sc_container *c);

/* 1: the recorded init still runs (same start time, not a zombie); 0: gone; -1: cannot tell. */
int sc_init_alive(const struct sc_container *c);
/* 1: one of the plan's pause checks matches (or cannot be read); 0: not paused. */
int sc_maybe_paused(const struct sc_container *c);

enum sc_result sc_start(struct sc_container *c, const char *id);
enum sc_result sc_delete(struct sc_container *c);

/* One error line, as the Python CLI writes it (corert/cli/log.py): stderr, and the --log file. */
void sc_report_error(const char *message);
void sc_set_log(const char *path, int json);

#endif
