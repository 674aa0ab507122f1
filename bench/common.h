/*
 * bench/common.h - what the load generators (parley-load.c, sip-load.c)
 * share: the server's accounting from /proc and their result, one JSON
 * object on one line of stdout (bench/common.c).
 *
 * /proc:
 *   bench_proc_stat(pid, &ticks, &ppid)  utime+stime (clock ticks) and
 *                                        parent of a process; -1 if gone
 *   bench_proc_kib(pid, file, key)       the "Key: N kB" line of
 *                                        /proc/PID/<file> (status,
 *                                        smaps_rollup), 0 if none
 *   bench_ticks_us(ticks)                clock ticks in microseconds
 *   bench_self_cpu_s()                   the generator's own CPU seconds
 * Clocks (CLOCK_MONOTONIC): now_s() in seconds, now_ns() in nanoseconds.
 * JSON (one object at a time, in a static 8 KiB buffer; what does not
 * fit is left out):
 *   jadd(fmt, ...)   appends printf text as it is (the caller writes the
 *                    '{', the commas and the keys)
 *   vjadd(fmt, ap)   the same with a va_list
 *   jquote(s)        appends s as a JSON string (quotes, backslashes
 *                    escaped; control characters become spaces)
 *   jlength()        bytes so far
 *   jflush()         closes the object ("{}" if empty), prints it with a
 *                    newline, flushes stdout and starts a new one
 *
 * Extending: a figure both generators read goes here; one of a single
 * generator stays in its file.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

int bench_proc_stat(int pid, unsigned long *ticks, int *ppid);
long bench_proc_kib(int pid, const char *file, const char *key);
double bench_ticks_us(unsigned long ticks);
double bench_self_cpu_s(void);

double now_s(void);
uint64_t now_ns(void);

void jadd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vjadd(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
void jquote(const char *s);
size_t jlength(void);
void jflush(void);

#endif
