/*
 * bench/common.c - the load generators' shared /proc accounting and JSON
 * result; see common.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- /proc ---- */

int bench_proc_stat(int pid, unsigned long *ticks, int *ppid)
{
    char path[64], line[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t k = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[k] = 0;
    char *p = strrchr(line, ')'); /* comm may hold spaces */
    if (!k || !p)
        return -1;
    unsigned long ut = 0, st = 0;
    int pp = 0;
    /* After ")": state, ppid, ... utime is field 14, stime 15. */
    if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &pp,
               &ut, &st) != 3)
        return -1;
    if (ticks)
        *ticks = ut + st;
    if (ppid)
        *ppid = pp;
    return 0;
}

long bench_proc_kib(int pid, const char *file, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long kib = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0) {
            kib = atol(line + kl);
            break;
        }
    fclose(f);
    return kib;
}

double bench_ticks_us(unsigned long ticks)
{
    return (double)ticks * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

double bench_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- clocks ---- */

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- JSON ---- */

static char json[8192];
static size_t jlen; /* bytes in json; 2 stay free: '}' and the NUL */

void vjadd(const char *fmt, va_list ap)
{
    if (jlen + 2 >= sizeof(json))
        return;
    size_t room = sizeof(json) - jlen - 1; /* one for '}' */
    int n = vsnprintf(json + jlen, room, fmt, ap);
    if (n > 0)
        jlen += (size_t)n < room ? (size_t)n : room - 1;
}

void jadd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vjadd(fmt, ap);
    va_end(ap);
}

void jquote(const char *s)
{
    jadd("\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            jadd("\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            jadd(" ");
        else
            jadd("%c", *p);
    }
    jadd("\"");
}

size_t jlength(void)
{
    return jlen;
}

void jflush(void)
{
    if (!jlen)
        json[jlen++] = '{';
    json[jlen++] = '}';
    json[jlen] = 0;
    printf("%s\n", json);
    fflush(stdout);
    jlen = 0;
}
