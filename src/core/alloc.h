/*
 * alloc.h - every heap allocation in Parley goes through here.
 *
 * pl_malloc and friends never return NULL: on exhaustion parleyd logs and
 * aborts (as Redis zmalloc does), because a half-served stanza is worse than
 * a restart that loses nothing durable.  Tests can make the n-th allocation
 * fail through pl_alloc_fail_after() to exercise the abort path and the
 * PL_ENOMEM-returning pl_try_* variants used where a limit, not the process,
 * should give way (for example a huge peer-announced buffer).
 */
#ifndef PL_ALLOC_H
#define PL_ALLOC_H

#include <stddef.h>

void *pl_malloc(size_t n);                 /* never NULL */
void *pl_calloc(size_t count, size_t n);   /* zeroed, never NULL */
void *pl_realloc(void *p, size_t n);       /* never NULL */
char *pl_strdup(const char *s);            /* never NULL; s must not be NULL */
char *pl_strndup(const char *s, size_t n); /* NUL-terminated copy */
void pl_free(void *p);                     /* NULL is fine */

/* Like pl_malloc but returns NULL instead of aborting. */
void *pl_try_malloc(size_t n);

/*
 * Test hook: after n more successful allocations, the next pl_try_malloc
 * returns NULL and the next pl_malloc aborts.  n < 0 disables the hook.
 */
void pl_alloc_fail_after(long n);

/* Bytes currently allocated through this module (approximate, for stats). */
size_t pl_alloc_used(void);

#endif
