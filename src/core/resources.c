/*
 * resources.c - the bound-session table; see resources.h.
 */
#include "resources.h"

#include <inttypes.h>
#include <stdio.h>

#include "alloc.h"
#include "error.h"
#include "map.h"

static struct pl_map by_full; /* full JID -> session */
static struct pl_map by_bare; /* bare JID -> first session */
static struct pl_map by_id;   /* hex id -> session */
static uint64_t next_id = 1;

static void id_key(uint64_t id, char *buf)
{
    sprintf(buf, "%" PRIx64, id);
}

void pl_session_init(struct pl_session *s)
{
    char k[24];
    s->id = next_id++;
    id_key(s->id, k);
    pl_map_put(&by_id, k, s);
}

int pl_session_register(struct pl_session *s, int max_resources)
{
    if (pl_map_get(&by_full, s->jid->full))
        return PL_ECONFLICT;
    struct pl_session *first = pl_map_get(&by_bare, s->jid->bare);
    int n = 0;
    for (struct pl_session *o = first; o; o = o->next_res)
        n++;
    if (n >= max_resources)
        return PL_ERESOURCE_CONSTRAINT;
    pl_map_put(&by_full, s->jid->full, s);
    s->next_res = first;
    pl_map_put(&by_bare, s->jid->bare, s);
    s->registered = 1;
    return PL_OK;
}

void pl_session_unregister(struct pl_session *s)
{
    char k[24];
    id_key(s->id, k);
    pl_map_del(&by_id, k);
    if (!s->registered)
        return;
    s->registered = 0;
    pl_map_del(&by_full, s->jid->full);
    struct pl_session *first = pl_map_get(&by_bare, s->jid->bare);
    if (first == s) {
        if (s->next_res)
            pl_map_put(&by_bare, s->jid->bare, s->next_res);
        else
            pl_map_del(&by_bare, s->jid->bare);
    } else {
        for (struct pl_session *o = first; o; o = o->next_res)
            if (o->next_res == s) {
                o->next_res = s->next_res;
                break;
            }
    }
    s->next_res = NULL;
}

struct pl_session *pl_session_by_full(const char *full)
{
    return pl_map_get(&by_full, full);
}

struct pl_session *pl_session_first(const char *bare)
{
    return pl_map_get(&by_bare, bare);
}

struct pl_session *pl_session_by_id(uint64_t id)
{
    char k[24];
    id_key(id, k);
    return pl_map_get(&by_id, k);
}

unsigned long pl_session_count(void)
{
    return (unsigned long)by_full.count;
}

struct each_ctx {
    void (*fn)(struct pl_session *s, void *ud);
    void *ud;
};

static void each_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct each_ctx *e = ud;
    e->fn(value, e->ud);
}

void pl_session_each(void (*fn)(struct pl_session *s, void *ud), void *ud)
{
    struct each_ctx e = {fn, ud};
    pl_map_each(&by_full, each_one, &e);
}

const char *pl_session_transport(const struct pl_session *s)
{
    return s->ops && s->ops->transport ? s->ops->transport(s) : "other";
}

void pl_session_filter_add(struct pl_session *s, struct pl_session_filter *f)
{
    struct pl_session_filter **pp = &s->filters;
    while (*pp && (*pp)->priority >= f->priority)
        pp = &(*pp)->next;
    f->next = *pp;
    *pp = f;
}

void pl_session_filter_remove(struct pl_session *s, struct pl_session_filter *f)
{
    for (struct pl_session_filter **pp = &s->filters; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            f->next = NULL;
            return;
        }
}

const char *pl_session_ip(const struct pl_session *s)
{
    return s->ops && s->ops->peer_ip ? s->ops->peer_ip(s) : "";
}

int pl_session_is_loopback(const struct pl_session *s)
{
    return s->ops && s->ops->is_loopback ? s->ops->is_loopback(s) : 0;
}

int pl_session_is_secure(const struct pl_session *s)
{
    return s->ops && s->ops->is_secure ? s->ops->is_secure(s) : 0;
}
