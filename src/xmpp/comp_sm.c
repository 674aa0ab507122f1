/*
 * comp_sm.c - the XEP-0198 state of one component link: the FIFO of
 * stanza references, the outbound counters and unacknowledged queue, the
 * inbound sequence numbers and their out-of-order completions.  API and
 * rules in comp_sm.h; component.c does the I/O.
 */
#include "comp_sm.h"

#include <string.h>

#include "alloc.h"
#include "error.h"

/* ---- the FIFO ---- */

void pl_csq_push(struct pl_csq *q, struct pl_stanza *st, uint64_t t)
{
    if (q->len == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 16;
        struct pl_csq_item *nv = pl_malloc(ncap * sizeof(*nv));
        for (size_t i = 0; i < q->len; i++)
            nv[i] = q->v[(q->head + i) % q->cap];
        pl_free(q->v);
        q->v = nv;
        q->cap = ncap;
        q->head = 0;
    }
    q->v[(q->head + q->len) % q->cap] = (struct pl_csq_item){pl_stanza_ref(st),
                                                             t};
    q->len++;
}

const struct pl_csq_item *pl_csq_front(const struct pl_csq *q)
{
    return q->len ? &q->v[q->head] : NULL;
}

struct pl_stanza *pl_csq_pop(struct pl_csq *q, uint64_t *t)
{
    if (!q->len)
        return NULL;
    struct pl_csq_item it = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    if (t)
        *t = it.t;
    return it.st;
}

void pl_csq_clear(struct pl_csq *q)
{
    struct pl_stanza *st;
    while ((st = pl_csq_pop(q, NULL)))
        pl_stanza_unref(st);
    pl_free(q->v);
    memset(q, 0, sizeof(*q));
}

/* ---- outbound ---- */

void pl_csm_enable(struct pl_csm *sm)
{
    sm->enabled = 1;
    sm->out_count = 0;
    sm->in_seen = sm->in_handled = 0;
}

void pl_csm_sent(struct pl_csm *sm, struct pl_stanza *st, uint64_t now)
{
    pl_csq_push(&sm->unacked, st, now);
    sm->out_count++;
}

int pl_csm_ack(struct pl_csm *sm, uint32_t h)
{
    /* The first unacknowledged stanza is number out_count - len + 1;
     * h may be anywhere from out_count - len (nothing new) to out_count,
     * modulo 2^32. */
    uint32_t acked = sm->out_count - (uint32_t)sm->unacked.len;
    uint32_t n = h - acked;
    if (n > sm->unacked.len)
        return PL_EINVAL;
    while (n--)
        pl_stanza_unref(pl_csq_pop(&sm->unacked, NULL));
    return PL_OK;
}

size_t pl_csm_unacked(const struct pl_csm *sm)
{
    return sm->unacked.len;
}

/* ---- inbound ---- */

uint32_t pl_csm_in_begin(struct pl_csm *sm)
{
    size_t open = (size_t)(sm->in_seen - sm->in_handled);
    if (open + 1 >= sm->dcap) {
        size_t ncap = sm->dcap ? sm->dcap * 2 : 64;
        uint8_t *nd = pl_calloc(ncap, 1);
        for (uint32_t s = sm->in_handled + 1; s != sm->in_seen + 1; s++)
            nd[s % ncap] = sm->done[s % sm->dcap];
        pl_free(sm->done);
        sm->done = nd;
        sm->dcap = ncap;
    }
    uint32_t seq = ++sm->in_seen;
    sm->done[seq % sm->dcap] = 0;
    return seq;
}

int pl_csm_in_done(struct pl_csm *sm, uint32_t seq)
{
    /* Only sequence numbers still open count (seen - seq < open). */
    if (sm->in_seen - seq >= sm->in_seen - sm->in_handled)
        return 0;
    sm->done[seq % sm->dcap] = 1;
    int moved = 0;
    while (sm->in_handled != sm->in_seen &&
           sm->done[(uint32_t)(sm->in_handled + 1) % sm->dcap]) {
        sm->in_handled++;
        moved = 1;
    }
    return moved;
}

void pl_csm_free(struct pl_csm *sm)
{
    pl_csq_clear(&sm->unacked);
    pl_free(sm->done);
    sm->done = NULL;
    sm->dcap = 0;
}

int pl_csm_parse_h(const char *v, uint32_t *h)
{
    if (!v || !*v || strlen(v) > 10)
        return PL_EINVAL;
    unsigned long long x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return PL_EINVAL;
        x = x * 10 + (unsigned)(*p - '0');
    }
    if (x > UINT32_MAX)
        return PL_EINVAL;
    *h = (uint32_t)x;
    return PL_OK;
}
