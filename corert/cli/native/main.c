/* `corert` as installed by scripts/setup (corert/cli/launcher.py): a small native front to the Python CLI.
 *
 * Engines call the runtime for every step of a container; containerd's shim runs `start`, `delete` and
 * `delete --force` after `create`, and each would pay CPython's start (~8 ms here, against runc's whole
 * 4-6 ms verb). This front does exactly those verbs itself when the container's shortcut plan
 * (corert/engine/shortcut.py) says it is a plain one. Every other command, and every case the plan does
 * not cover, is exec'ed unchanged to the Python CLI (PYTHON_CLI, relative to this program's directory),
 * which stays the one authority on behaviour and error messages. */
#define _GNU_SOURCE
#include "shortcut.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_ROOT "/run/corert"
/* A script of its own name in libexec: its process is "corert" too, as users and tools expect. */
#define PYTHON_CLI "/../libexec/corert/corert"

static char **saved_argv;

/* Run the command with the Python CLI, argv untouched. */
static int fallback(void)
{
    char path[4096 + sizeof PYTHON_CLI];
    ssize_t n = readlink("/proc/self/exe", path, 4096);
    char *slash = n > 0 ? memrchr(path, '/', (size_t)n) : NULL;
    if (!slash) {
        dprintf(STDERR_FILENO, "corert: cannot find this program (/proc/self/exe): %s\n", strerror(errno));
        return 1;
    }
    memcpy(slash, PYTHON_CLI, sizeof PYTHON_CLI);
    execv(path, saved_argv);
    dprintf(STDERR_FILENO, "corert: cannot run the Python CLI %s: %s\n", path, strerror(errno));
    return 1;
}

/* runc's container id rule, as engine/state.py checks it: [A-Za-z0-9_+-.]+, not "." or "..". */
static int valid_id(const char *id)
{
    if (!*id || !strcmp(id, ".") || !strcmp(id, ".."))
        return 0;
    for (const char *p = id; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '+' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

/* No "." or ".." component: Python's os.path.abspath collapses those as text, the kernel follows symlinks
 * first, so only such paths name the same directory for both. */
static int plain_path(const char *path)
{
    for (const char *p = path; *p; ) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p = *end ? end + 1 : end;
    }
    return 1;
}

/* A global flag's name with its dashes (one or two, Go `flag` style) stripped; NULL if not a flag. */
static const char *flag_name(const char *arg)
{
    if (arg[0] != '-' || !arg[1] || (arg[1] == '-' && (!arg[2] || arg[2] == '-')))
        return NULL;
    return arg[1] == '-' ? arg + 2 : arg + 1;
}

/* Match flag `name` taking a value, as `-name V`, `--name V` or `--name=V`; advances *i past it. */
static int value_flag(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *flag = flag_name(argv[*i]);
    size_t len = strlen(name);
    if (!flag || strncmp(flag, name, len) != 0)
        return 0;
    if (flag[len] == '=') {
        *value = flag + len + 1;
        return 1;
    }
    if (flag[len] != '\0' || *i + 1 >= argc)
        return 0;
    *value = argv[++*i];
    return 1;
}

int main(int argc, char **argv)
{
    saved_argv = argv;
    const char *root = NULL, *log = NULL, *log_format = "text";
    int i = 1;
    /* runc's global flags as engines send them; anything else is the Python CLI's to parse. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (value_flag(argc, argv, &i, "root", &root) || value_flag(argc, argv, &i, "log", &log) ||
            value_flag(argc, argv, &i, "log-format", &log_format))
            continue;
        const char *flag = flag_name(argv[i]);
        if (flag && !strcmp(flag, "systemd-cgroup"))   /* the cgroup is chosen at create */
            continue;
        return fallback();
    }
    if (i >= argc || (strcmp(log_format, "text") && strcmp(log_format, "json")))
        return fallback();
    const char *verb = argv[i++];
    int force = 0;
    if (!strcmp(verb, "delete")) {
        /* the spellings corert/cli/parse.py takes for runc's --force */
        for (; i < argc && argv[i][0] == '-'; i++) {
            if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-force") || !strcmp(argv[i], "-f"))
                force = 1;
            else
                return fallback();
        }
    } else if (strcmp(verb, "start") != 0) {
        return fallback();
    }
    if (argc - i != 1 || argv[i][0] == '-' || !valid_id(argv[i]))
        return fallback();
    const char *id = argv[i];
    if (root && (!*root || !plain_path(root)))
        return fallback();                 /* "" means the default root to Python; see plain_path */
    if (!root) {
        /* engine/state.py:default_root, for the one case that needs no more than this */
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (geteuid() != 0 || (xdg && *xdg))
            return fallback();
        root = DEFAULT_ROOT;
    }
    sc_set_log(log, !strcmp(log_format, "json"));

    struct sc_container c;
    enum sc_result result = sc_open(&c, root, id);
    if (result == SC_ABSENT && force)
        return 0;                          /* runc: `delete --force` of no container is no error */
    if (result == SC_DONE)
        result = verb[0] == 's' ? sc_start(&c, id) : sc_delete(&c);
    sc_close(&c);
    if (result == SC_DONE)
        return 0;
    if (result == SC_FAILED)
        return 1;
    return fallback();
}
