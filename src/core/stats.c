/*
 * stats.c - the counters; see stats.h.
 */
#include "stats.h"

#include <string.h>

struct pl_stats pl_stats;

void pl_stats_print(FILE *f)
{
#define X(name)                                                                \
    fprintf(f, "parley_%s %lu\n", #name,                                       \
            atomic_load_explicit(&pl_stats.name, memory_order_relaxed));
    PL_STATS_FIELDS(X)
#undef X
}

/* RFC 6120 §4.9.3, in its order. */
const char *const pl_stream_conditions[PL_STATS_NSTREAM_CONDS + 1] = {
    "bad-format",
    "bad-namespace-prefix",
    "conflict",
    "connection-timeout",
    "host-gone",
    "host-unknown",
    "improper-addressing",
    "internal-server-error",
    "invalid-from",
    "invalid-namespace",
    "invalid-xml",
    "not-authorized",
    "not-well-formed",
    "policy-violation",
    "remote-connection-failed",
    "reset",
    "resource-constraint",
    "restricted-xml",
    "see-other-host",
    "system-shutdown",
    "undefined-condition",
    "unsupported-encoding",
    "unsupported-feature",
    "unsupported-stanza-type",
    "unsupported-version",
    NULL,
};

/* RFC 6120 §8.3.3, in its order. */
const char *const pl_stanza_conditions[PL_STATS_NSTANZA_CONDS + 1] = {
    "bad-request",
    "conflict",
    "feature-not-implemented",
    "forbidden",
    "gone",
    "internal-server-error",
    "item-not-found",
    "jid-malformed",
    "not-acceptable",
    "not-allowed",
    "not-authorized",
    "policy-violation",
    "recipient-unavailable",
    "redirect",
    "registration-required",
    "remote-server-not-found",
    "remote-server-timeout",
    "resource-constraint",
    "service-unavailable",
    "subscription-required",
    "undefined-condition",
    "unexpected-request",
    NULL,
};

atomic_ulong pl_stats_stream_by_cond[PL_STATS_NSTREAM_CONDS];
atomic_ulong pl_stats_stanza_by_cond[PL_STATS_NSTANZA_CONDS];

static void count(const char *const *names, atomic_ulong *by, const char *cond)
{
    int undefined = 0;
    for (int i = 0; names[i]; i++) {
        if (cond && strcmp(names[i], cond) == 0) {
            atomic_fetch_add_explicit(&by[i], 1, memory_order_relaxed);
            return;
        }
        if (strcmp(names[i], "undefined-condition") == 0)
            undefined = i;
    }
    atomic_fetch_add_explicit(&by[undefined], 1, memory_order_relaxed);
}

void pl_stats_stream_error(const char *cond)
{
    count(pl_stream_conditions, pl_stats_stream_by_cond, cond);
}

void pl_stats_stanza_error(const char *cond)
{
    count(pl_stanza_conditions, pl_stats_stanza_by_cond, cond);
}
