/* The native front's error line, in the formats of corert/cli/log.py (logrus's, which containerd and
 * conmon parse): "corert: MSG" on stderr and, with --log, one json or text line appended to the file. */
#define _GNU_SOURCE
#include "shortcut.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_path;
static int log_json;

void sc_set_log(const char *path, int json)
{
    log_path = path;
    log_json = json;
}

/* Go's json string quoting (corert.cli.output.go_json): <, > and & escaped as json.Marshal does. */
static size_t go_quote(char *out, size_t size, const char *text)
{
    size_t n = 0;
    out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)text; *p && n + 8 < size; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p == '\n') {
            n += (size_t)snprintf(out + n, size - n, "\\n");
        } else if (*p == '\t') {
            n += (size_t)snprintf(out + n, size - n, "\\t");
        } else if (*p == '\r') {
            n += (size_t)snprintf(out + n, size - n, "\\r");
        } else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&') {
            n += (size_t)snprintf(out + n, size - n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

/* Local time as Go's time.RFC3339 prints it: Z for UTC, else +hh:mm. */
static void rfc3339_now(char *out, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    long offset = tm.tm_gmtoff;
    if (offset == 0) {
        snprintf(out + n, size - n, "Z");
        return;
    }
    char sign = offset > 0 ? '+' : '-';
    if (offset < 0)
        offset = -offset;
    snprintf(out + n, size - n, "%c%02ld:%02ld", sign, offset / 3600, (offset / 60) % 60);
}

void sc_report_error(const char *message)
{
    dprintf(STDERR_FILENO, "corert: %s\n", message);
    if (!log_path)
        return;
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char quoted[8192], stamp[64];
    go_quote(quoted, sizeof quoted, message);
    rfc3339_now(stamp, sizeof stamp);
    if (log_json)
        dprintf(fd, "{\"level\":\"error\",\"msg\":%s,\"time\":\"%s\"}\n", quoted, stamp);
    else
        dprintf(fd, "time=\"%s\" level=error msg=%s\n", stamp, quoted);
    close(fd);
}
