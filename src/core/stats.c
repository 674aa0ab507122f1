/*
 * stats.c - the counters; see stats.h.
 */
#include "stats.h"

struct pl_stats pl_stats;

void pl_stats_print(FILE *f)
{
#define X(name)                                                                \
    fprintf(f, "parley_%s %lu\n", #name,                                       \
            atomic_load_explicit(&pl_stats.name, memory_order_relaxed));
    PL_STATS_FIELDS(X)
#undef X
}
