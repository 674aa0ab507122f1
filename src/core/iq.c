/*
 * iq.c - server-originated IQ requests and their answers; see iq.h.
 *
 * Waiting requests live in one map, id -> struct pending, each with a
 * timer on the server loop.  Ids are "pl-" plus a process-wide counter
 * and a random part, so that they are unique and not guessable.
 */
#include "iq.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "loop.h"
#include "map.h"
#include "random.h"
#include "router.h"
#include "server.h"

struct pending {
    char id[48];           /* the request's id, key in `waiting` */
    char *to;              /* normalized addressee: who must answer */
    pl_iq_fn *cb;          /* the callback */
    void *arg;             /* its argument */
    struct pl_timer timer; /* the timeout */
};

static struct pl_map waiting; /* id -> struct pending */
static uint64_t counter;

static void pending_free(struct pending *p)
{
    pl_timer_stop(&p->timer);
    pl_free(p->to);
    pl_free(p);
}

static void on_timeout(struct pl_timer *t)
{
    struct pending *p = t->data;
    pl_map_del(&waiting, p->id);
    pl_log_debug("iq", "request %s to %s timed out", p->id, p->to);
    pl_iq_fn *cb = p->cb;
    void *arg = p->arg;
    pending_free(p);
    cb(NULL, arg);
}

int pl_iq_request(struct pl_stanza *st, const char *from, const char *to,
                  pl_iq_fn *cb, void *arg, unsigned timeout_ms)
{
    const char *type = pl_stanza_attr(st, "type");
    if (strcmp(pl_stanza_name(st), "iq") != 0 || !type ||
        (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
        return PL_EINVAL;
    struct pl_jid *tj;
    if (pl_jid_parse(pl_str_c(to), &tj) != PL_OK)
        return PL_EJID_MALFORMED;
    struct pl_jid *fj;
    if (pl_jid_parse(pl_str_c(from), &fj) != PL_OK) {
        pl_jid_free(tj);
        return PL_EJID_MALFORMED;
    }
    pl_jid_free(fj);
    struct pending *p = pl_calloc(1, sizeof(*p));
    uint32_t rnd;
    pl_random(&rnd, sizeof(rnd));
    snprintf(p->id, sizeof(p->id), "pl-%" PRIu64 "-%08x", ++counter, rnd);
    p->to = pl_strdup(tj->full);
    pl_jid_free(tj);
    p->cb = cb;
    p->arg = arg;
    pl_timer_init(&p->timer, on_timeout, p);
    pl_timer_start(pl_server_loop(), &p->timer, timeout_ms);
    /* Registered before routing: the router may answer at once. */
    pl_map_put(&waiting, p->id, p);
    pl_stanza_set_attr(st, "id", p->id);
    return pl_route_as(st, from, to) == PL_OK ? PL_OK : PL_EJID_MALFORMED;
}

unsigned long pl_iq_pending(void)
{
    return (unsigned long)waiting.count;
}

int pl__iq_response(struct pl_stanza *st, const struct pl_jid *from)
{
    const char *id = pl_stanza_attr(st, "id");
    if (!id || strncmp(id, "pl-", 3) != 0 || !waiting.count)
        return 0;
    struct pending *p = pl_map_get(&waiting, id);
    if (!p)
        return 0;
    /* Only the addressee answers (an answer on behalf of an account may
     * come from its server, with no 'from': compared as the domain). */
    if (!from || strcmp(from->full, p->to) != 0) {
        pl_log_debug("iq", "answer to %s from %s ignored: asked %s", id,
                     from ? from->full : "(none)", p->to);
        return 0;
    }
    pl_map_del(&waiting, id);
    pl_iq_fn *cb = p->cb;
    void *arg = p->arg;
    pending_free(p);
    cb(st, arg);
    return 1;
}

static void collect(const char *key, void *value, void *ud)
{
    struct pending ***list = ud;
    **list = value;
    (*list)++;
}

void pl__iq_shutdown(void)
{
    size_t n = waiting.count;
    if (!n) {
        pl_map_clear(&waiting);
        return;
    }
    struct pending **all = pl_calloc(n, sizeof(*all)), **at = all;
    pl_map_each(&waiting, collect, &at);
    pl_map_clear(&waiting);
    for (size_t i = 0; i < n; i++) {
        pl_iq_fn *cb = all[i]->cb;
        void *arg = all[i]->arg;
        pending_free(all[i]);
        cb(NULL, arg);
    }
    pl_free(all);
}
