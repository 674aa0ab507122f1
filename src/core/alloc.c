/*
 * alloc.c - checked allocation with an abort on exhaustion and a failure
 * injection hook for tests.  See alloc.h.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_after = -1;

static int should_fail(void)
{
    long n = atomic_load_explicit(&fail_after, memory_order_relaxed);
    if (n < 0)
        return 0;
    if (n == 0)
        return 1;
    atomic_fetch_sub_explicit(&fail_after, 1, memory_order_relaxed);
    return 0;
}

static void oom(size_t n)
{
    fprintf(stderr, "parley: out of memory allocating %zu bytes, aborting\n",
            n);
    abort();
}

void pl_alloc_fail_after(long n)
{
    atomic_store(&fail_after, n);
}

void *pl_try_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *pl_malloc(size_t n)
{
    void *p = should_fail() ? NULL : malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *pl_calloc(size_t count, size_t n)
{
    void *p = should_fail() ? NULL : calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom(count * n);
    return p;
}

void *pl_realloc(void *old, size_t n)
{
    void *p = should_fail() ? NULL : realloc(old, n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

char *pl_strdup(const char *s)
{
    return pl_strndup(s, strlen(s));
}

char *pl_strndup(const char *s, size_t n)
{
    char *p = pl_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void pl_free(void *p)
{
    free(p);
}

size_t pl_alloc_used(void)
{
    return 0; /* glibc's mallinfo2 is reported by the stats code instead */
}
