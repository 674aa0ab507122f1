/*
 * log.c - leveled logging to stderr; see log.h.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int current = PL_LOG_INFO;
static const char *names[] = {"error", "warn", "info", "debug"};
static char tag[24]; /* "[<i>] " in a process of server.processes */

void pl_log_set_process(int index)
{
    if (index >= 0)
        snprintf(tag, sizeof(tag), "[%d] ", index);
    else
        tag[0] = '\0';
}

void pl_log_set_level(enum pl_log_level level)
{
    atomic_store(&current, (int)level);
}

enum pl_log_level pl_log_get_level(void)
{
    return (enum pl_log_level)atomic_load_explicit(&current,
                                                   memory_order_relaxed);
}

int pl_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void pl_log(enum pl_log_level level, const char *subsystem, const char *fmt,
            ...)
{
    if ((int)level > atomic_load_explicit(&current, memory_order_relaxed))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s%s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, names[level],
                     tag, subsystem);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line keeps lines whole across threads. */
    fwrite(line, 1, len, stderr);
}

void pl__assert_fail(const char *expr, const char *file, int line)
{
    pl_log(PL_LOG_ERROR, "assert", "%s:%d: assertion failed: %s", file, line,
           expr);
    abort();
}
