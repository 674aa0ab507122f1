/*
 * history.c - ring buffer of a room's recent messages; see history.h.
 */
#include "history.h"

struct item {
    struct pl_stanza *st; /* held */
    time_t t;             /* when the room received it */
};

struct muc_history {
    struct item *v; /* ring of cap items */
    long cap;       /* allocated slots */
    long head;      /* index of the oldest */
    long n;         /* items held */
};

static struct item *at(const struct muc_history *h, long i)
{
    return &h->v[(h->head + i) % h->cap];
}

void pl__muc_history_trim(struct muc_history *h, long cap)
{
    while (h && h->n > cap) {
        struct item *it = at(h, 0);
        pl_stanza_unref(it->st);
        it->st = NULL;
        h->head = (h->head + 1) % h->cap;
        h->n--;
    }
}

void pl__muc_history_add(struct muc_history **hp, long cap,
                         struct pl_stanza *st, time_t t)
{
    if (cap <= 0) {
        pl__muc_history_trim(*hp, 0);
        return;
    }
    struct muc_history *h = *hp;
    if (!h) {
        h = *hp = pl_calloc(1, sizeof(*h));
    }
    if (h->cap != cap) {
        /* Re-lay the ring to the new size, keeping the newest. */
        pl__muc_history_trim(h, cap - 1);
        struct item *v = pl_calloc((size_t)cap, sizeof(*v));
        for (long i = 0; i < h->n; i++)
            v[i] = *at(h, i);
        pl_free(h->v);
        h->v = v;
        h->cap = cap;
        h->head = 0;
    }
    if (h->n == h->cap)
        pl__muc_history_trim(h, h->cap - 1);
    struct item *it = &h->v[(h->head + h->n) % h->cap];
    it->st = pl_stanza_ref(st);
    it->t = t;
    h->n++;
}

void pl__muc_history_free(struct muc_history *h)
{
    if (!h)
        return;
    pl__muc_history_trim(h, 0);
    pl_free(h->v);
    pl_free(h);
}

long pl__muc_history_count(const struct muc_history *h)
{
    return h ? h->n : 0;
}

void pl__muc_history_each(const struct muc_history *h, long maxstanzas,
                          long maxchars, long seconds, time_t since, long cap,
                          time_t now,
                          void (*fn)(struct pl_stanza *st, void *ud), void *ud)
{
    if (!h || h->n == 0)
        return;
    long limit = h->n;
    if (cap >= 0 && cap < limit)
        limit = cap;
    if (maxstanzas >= 0 && maxstanzas < limit)
        limit = maxstanzas;
    /* Walk back from the newest while every limit holds. */
    long first = h->n;
    long chars = 0;
    while (first > 0 && h->n - first < limit) {
        const struct item *it = at(h, first - 1);
        if (seconds >= 0 && now - it->t > seconds)
            break;
        if (since && it->t < since)
            break;
        if (maxchars >= 0) {
            chars += (long)pl_stanza_serialize(it->st, NULL).len;
            if (chars > maxchars)
                break;
        }
        first--;
    }
    for (long i = first; i < h->n; i++)
        fn(at(h, i)->st, ud);
}
