/*
 * watch.c - which of the other nodes' sessions this node knows
 * (doc/cluster.md, "Watches").
 *
 * A node keeps copies of other nodes' sessions (link.c's remote sessions)
 * only for the accounts it watches: its own users' accounts, and every
 * account a stanza was routed to here (a contact's presence or probe, a
 * message, a room's stanza to an occupant).  So its memory follows its
 * own users and their contacts, not the size of the cluster, and a login
 * is announced only to the nodes that watch that account.
 *
 * Redis: <prefix>w:<bare> is the set of incarnations ("<node>:<epoch>")
 * watching the account.  Watching is one script: add us to the set,
 * return the registry's hash <prefix>s:<bare>; every other node listed
 * there is sent <c:watch bare=/> and answers with a <c:up/> per session
 * of the account it has, then <c:watched bare=/>.  A login is one script
 * too: the resource into the registry, the node into the set (its own
 * users' accounts are watched), the set and the hash back; each watcher is
 * sent the session's <c:up/> and is remembered (the watchers of each local
 * account) for every later change; each other node with a session of the
 * account is asked as above.  Redis runs one script after the other: the
 * login's reply names the watcher, or the watch's reply names the login's
 * node, so no login is missed.
 *
 * A stanza routed to an account this node does not watch yet waits (the
 * hook returns PL_PENDING, holding its sender's durability barrier) until
 * every node asked has answered or cluster.watch_timeout has passed, then
 * is routed again.  A watch goes after cluster.watch_idle ms without a
 * stanza routed to the account, once no local session of the account is
 * left and no local account that sent it a stanza is online (presence
 * and PEP notifications to contacts need their sessions).
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cluster_int.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "loop.h"
#include "map.h"
#include "router.h"
#include "server.h"
#include "storage.h"

/* Local accounts that sent to a watched one, kept per watch: while one
 * is online the watch stays. */
#define MAX_PINS 4

struct parked {
    struct pl_stanza *st;
    struct pl_jid *from, *to;
    struct pl_barrier *barrier; /* the sender's durability (storage.h) */
    struct parked *next;
};

struct watch {
    char *bare;
    int ready;   /* answered (or timed out): stanzas pass */
    char **wait; /* nodes asked that have not answered */
    int nwait;
    struct parked *head, *tail;
    uint64_t used; /* loop clock of the last stanza routed to it */
    char *pins[MAX_PINS];
    int npins;
    struct pl_timer timer; /* watch_timeout */
};

/* Another node's names for one local account. */
struct watchers {
    char **v;
    int n;
};

static struct pl_map watches;  /* bare -> struct watch */
static struct pl_map watchers; /* local bare -> struct watchers */
static struct pl_timer sweep_timer;
static int on;
static unsigned long nparked;

/* KEYS[1] w:<bare>, KEYS[2] s:<bare>, ARGV[1] us. */
static const char *const WATCH_SCRIPT = "redis.call('SADD', KEYS[1], ARGV[1]) "
                                        "return redis.call('HGETALL', KEYS[2])";

/* KEYS[1] s:<bare>, KEYS[2] n:<node>, KEYS[3] w:<bare>; ARGV[1] resource,
 * ARGV[2] its entry, ARGV[3] full JID, ARGV[4] us.  Returns the watchers,
 * the registry's hash and the resource's former entry (or ""). */
static const char *const BIND_SCRIPT =
    "local old = redis.call('HGET', KEYS[1], ARGV[1]) or '' "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('SADD', KEYS[2], ARGV[3]) "
    "redis.call('SADD', KEYS[3], ARGV[4]) "
    "return {redis.call('SMEMBERS', KEYS[3]), redis.call('HGETALL', KEYS[1]), "
    "old}";

static uint64_t now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

/* Whether bare has a session of this node (other than `but`). */
static int has_local(const char *bare, const struct pl_session *but)
{
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res)
        if (s != but && !pl__link_is_remote(s))
            return 1;
    return 0;
}

/* ---- the watchers of local accounts ---- */

static int watchers_has(const struct watchers *w, const char *node)
{
    for (int i = 0; w && i < w->n; i++)
        if (strcmp(w->v[i], node) == 0)
            return 1;
    return 0;
}

/* Adds node; 1 if it was not there. */
static int watchers_add(const char *bare, const char *node)
{
    struct watchers *w = pl_map_get(&watchers, bare);
    if (!w) {
        w = pl_calloc(1, sizeof(*w));
        pl_map_put(&watchers, bare, w);
    }
    if (watchers_has(w, node))
        return 0;
    w->v = pl_realloc(w->v, (size_t)(w->n + 1) * sizeof(char *));
    w->v[w->n++] = pl_strdup(node);
    return 1;
}

static void watchers_free(struct watchers *w)
{
    for (int i = 0; w && i < w->n; i++)
        pl_free(w->v[i]);
    if (w)
        pl_free(w->v);
    pl_free(w);
}

static void watchers_remove(struct watchers *w, const char *node)
{
    for (int i = 0; w && i < w->n; i++)
        if (strcmp(w->v[i], node) == 0) {
            pl_free(w->v[i]);
            w->v[i] = w->v[--w->n];
            return;
        }
}

int pl__watchers_has(const char *bare, const char *node)
{
    return watchers_has(pl_map_get(&watchers, bare), node);
}

void pl__watchers_each(const char *bare, void (*fn)(const char *node, void *ud),
                       void *ud)
{
    struct watchers *w = pl_map_get(&watchers, bare);
    for (int i = 0; w && i < w->n; i++)
        fn(w->v[i], ud);
}

/* "<node>:<epoch>" of another live incarnation: its name (in buf), or
 * NULL for us, or for a former incarnation (then dropped from `set`). */
static const char *member_node(const char *member, const char *set_key,
                               char *buf, size_t len)
{
    const char *colon = strchr(member, ':');
    size_t n = colon ? (size_t)(colon - member) : 0;
    if (!colon || n == 0 || n >= len)
        return NULL;
    memcpy(buf, member, n);
    buf[n] = '\0';
    const char *epoch = colon + 1;
    size_t el = strcspn(epoch, " ");
    if (strcmp(buf, pl__cluster_settings()->node) == 0)
        return NULL;
    const char *known = pl__link_epoch(buf);
    if (known && (strlen(known) != el || strncmp(known, epoch, el) != 0)) {
        if (set_key)
            pl__redis_cmd(NULL, NULL, "SREM %s %s", set_key, member);
        return NULL;
    }
    return buf;
}

/* ---- watches ---- */

static void parked_free(struct parked *p)
{
    if (p->barrier)
        pl_barrier_release(p->barrier);
    pl_stanza_unref(p->st);
    pl_jid_free(p->from);
    pl_jid_free(p->to);
    pl_free(p);
    nparked--;
}

static void wait_clear(struct watch *w)
{
    for (int i = 0; i < w->nwait; i++)
        pl_free(w->wait[i]);
    pl_free(w->wait);
    w->wait = NULL;
    w->nwait = 0;
}

static void watch_free(struct watch *w)
{
    pl_timer_stop(&w->timer);
    wait_clear(w);
    while (w->head) {
        struct parked *p = w->head;
        w->head = p->next;
        parked_free(p);
    }
    for (int i = 0; i < w->npins; i++)
        pl_free(w->pins[i]);
    pl_free(w->bare);
    pl_free(w);
}

/* Answered: what waited is routed again, in order. */
static void release(struct watch *w)
{
    w->ready = 1;
    pl_timer_stop(&w->timer);
    wait_clear(w);
    struct parked *p = w->head;
    w->head = w->tail = NULL;
    while (p) {
        struct parked *next = p->next;
        struct pl_barrier *prev = pl_barrier_enter(p->barrier);
        pl_route(p->st, p->from, p->to, NULL);
        pl_barrier_enter(prev);
        parked_free(p);
        p = next;
    }
}

static void on_timeout(struct pl_timer *t)
{
    struct watch *w = t->data;
    pl_log_warn("cluster",
                "watching %s: %d nodes did not answer within "
                "cluster.watch_timeout",
                w->bare, w->nwait);
    release(w);
}

static struct watch *watch_new(const char *bare)
{
    struct watch *w = pl_calloc(1, sizeof(*w));
    w->bare = pl_strdup(bare);
    w->used = now_ms();
    pl_timer_init(&w->timer, on_timeout, w);
    pl_map_put(&watches, w->bare, w);
    return w;
}

static void pin(struct watch *w, const struct pl_jid *from)
{
    if (!from || !from->local || w->npins >= MAX_PINS ||
        !pl_host_find(from->domain) || strcmp(from->bare, w->bare) == 0)
        return;
    for (int i = 0; i < w->npins; i++)
        if (strcmp(w->pins[i], from->bare) == 0)
            return;
    if (has_local(from->bare, NULL))
        w->pins[w->npins++] = pl_strdup(from->bare);
}

/* The registry's hash of the account (resource, entry pairs): each other
 * live node with a session of it is asked; wait: remember whom. */
static void ask_holders(struct watch *w, const char *bare, redisReply *hash,
                        int wait)
{
    for (size_t i = 0; hash && i + 1 < hash->elements; i += 2) {
        redisReply *v = hash->element[i + 1];
        char name[128];
        if (v->type != REDIS_REPLY_STRING ||
            !member_node(v->str, NULL, name, sizeof(name)))
            continue;
        /* Once per incarnation: an earlier resource with the same
         * "<node>:<epoch> " asked it already. */
        size_t len = strcspn(v->str, " ");
        int dup = 0;
        for (size_t k = 1; k < i && !dup; k += 2) {
            redisReply *o = hash->element[k];
            dup = o->type == REDIS_REPLY_STRING &&
                  strncmp(o->str, v->str, len) == 0 &&
                  (o->str[len] == ' ' || o->str[len] == '\0');
        }
        if (dup || pl__link_send_watch(name, bare) != PL_OK || !wait || !w)
            continue;
        w->wait = pl_realloc(w->wait, (size_t)(w->nwait + 1) * sizeof(char *));
        w->wait[w->nwait++] = pl_strdup(name);
    }
}

static void on_watch_reply(redisReply *r, void *ud)
{
    char *bare = ud;
    struct watch *w = on ? pl_map_get(&watches, bare) : NULL;
    if (w && !w->ready) {
        if (r && r->type == REDIS_REPLY_ARRAY)
            ask_holders(w, bare, r, 1);
        if (w->nwait == 0)
            release(w);
    }
    pl_free(bare);
}

/* Starts watching bare (its reply releases what waits). */
static void watch_ask(const char *bare)
{
    const struct pl_cluster_settings *S = pl__cluster_settings();
    char *ud = pl_strdup(bare);
    if (pl__redis_cmd(on_watch_reply, ud, "EVAL %s 2 %sw:%s %ss:%s %s",
                      WATCH_SCRIPT, S->prefix, bare, S->prefix, bare,
                      pl__cluster_self()) != PL_OK)
        on_watch_reply(NULL, ud);
}

/* "message/bare", "message/full", "presence/bare", "presence/full",
 * "iq/full" to a local account: its sessions must be known here first. */
static int on_route(struct pl_event *ev, void *state)
{
    (void)state;
    const struct pl_jid *to = ev->to;
    if (!on || !to || !to->local || !ev->stanza)
        return PL_PASS;
    struct watch *w = pl_map_get(&watches, to->bare);
    if (w && w->ready) {
        w->used = now_ms();
        pin(w, ev->from);
        return PL_PASS;
    }
    if (!w) {
        if (!pl__redis_is_up())
            return PL_PASS; /* nobody to ask: as the table has it */
        w = watch_new(to->bare);
        pl_timer_start(pl_server_loop(), &w->timer,
                       (uint64_t)pl__cluster_settings()->watch_timeout);
        watch_ask(to->bare);
        if (w->ready) { /* answered at once (Redis failed) */
            pin(w, ev->from);
            return PL_PASS;
        }
    }
    w->used = now_ms();
    pin(w, ev->from);
    struct parked *p = pl_calloc(1, sizeof(*p));
    p->st = pl_stanza_ref(ev->stanza);
    p->from = ev->from ? pl_jid_dup(ev->from) : NULL;
    p->to = pl_jid_dup(to);
    p->barrier = pl_barrier_hold();
    if (w->tail)
        w->tail->next = p;
    else
        w->head = p;
    w->tail = p;
    nparked++;
    return PL_PENDING;
}

int pl__watch_wants(const char *bare)
{
    return pl_map_get(&watches, bare) != NULL;
}

/* ---- this node's sessions ---- */

struct bind {
    char *bare, *full;
};

static void on_bind_reply(redisReply *r, void *ud)
{
    struct bind *b = ud;
    char *bare = b->bare;
    if (on && r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        pl_session_by_full(b->full) &&
        !pl__link_is_remote(pl_session_by_full(b->full))) {
        /* The same full JID on another node (unknown here when this one
         * bound): that one ends (RFC 6120 §7.7.2.2). */
        char name[128];
        redisReply *old = r->element[2];
        if (old->type == REDIS_REPLY_STRING &&
            member_node(old->str, NULL, name, sizeof(name)))
            pl__link_send_close(name, b->full, "conflict");
    }
    if (on && r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        has_local(bare, NULL)) {
        const struct pl_cluster_settings *S = pl__cluster_settings();
        char key[1200];
        snprintf(key, sizeof(key), "%sw:%s", S->prefix, bare);
        redisReply *set = r->element[0];
        for (size_t i = 0; set->type == REDIS_REPLY_ARRAY && i < set->elements;
             i++) {
            char name[128];
            redisReply *m = set->element[i];
            if (m->type == REDIS_REPLY_STRING &&
                member_node(m->str, key, name, sizeof(name)) &&
                watchers_add(bare, name))
                pl__link_send_ups(name, bare, 0);
        }
        struct watch *w = pl_map_get(&watches, bare);
        if (r->element[1]->type == REDIS_REPLY_ARRAY)
            ask_holders(w, bare, r->element[1], 0);
    }
    pl_free(b->bare);
    pl_free(b->full);
    pl_free(b);
}

void pl__watch_bound(struct pl_session *s, const char *entry)
{
    if (!on)
        return;
    struct watch *w = pl_map_get(&watches, s->jid->bare);
    if (!w) {
        w = watch_new(s->jid->bare);
        w->ready = 1;
    } else if (!w->ready) {
        release(w); /* its own session is here: it can wait no more */
    }
    const struct pl_cluster_settings *S = pl__cluster_settings();
    struct bind *ud = pl_calloc(1, sizeof(*ud));
    ud->bare = pl_strdup(s->jid->bare);
    ud->full = pl_strdup(s->jid->full);
    if (pl__redis_cmd(on_bind_reply, ud,
                      "EVAL %s 3 %ss:%s %sn:%s %sw:%s %s %s %s %s", BIND_SCRIPT,
                      S->prefix, s->jid->bare, S->prefix, S->node, S->prefix,
                      s->jid->bare, s->jid->resource, entry, s->jid->full,
                      pl__cluster_self()) != PL_OK)
        on_bind_reply(NULL, ud);
}

void pl__watch_closed(struct pl_session *s)
{
    if (!on || has_local(s->jid->bare, s))
        return;
    /* Its last session here: a later login reads the watchers again. */
    watchers_free(pl_map_del(&watchers, s->jid->bare));
}

/* ---- what the other nodes say ---- */

void pl__watch_requested(const char *node, const char *bare)
{
    if (!on)
        return;
    if (has_local(bare, NULL))
        watchers_add(bare, node);
    pl__link_send_ups(node, bare, 1);
}

void pl__watch_answered(const char *node, const char *bare)
{
    struct watch *w = on ? pl_map_get(&watches, bare) : NULL;
    if (!w || w->ready)
        return;
    for (int i = 0; i < w->nwait; i++)
        if (strcmp(w->wait[i], node) == 0) {
            pl_free(w->wait[i]);
            w->wait[i] = w->wait[--w->nwait];
            break;
        }
    if (w->nwait == 0)
        release(w);
}

void pl__watch_unwatched(const char *node, const char *bare)
{
    if (on)
        watchers_remove(pl_map_get(&watchers, bare), node);
}

struct pending_ctx {
    const char *node; /* NULL: every pending watch */
    char **v;
    int n, cap;
};

static int waits_for(const struct watch *w, const char *node)
{
    for (int i = 0; i < w->nwait; i++)
        if (strcmp(w->wait[i], node) == 0)
            return 1;
    return 0;
}

static void pending_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct pending_ctx *c = ud;
    struct watch *w = value;
    if (w->ready || (c->node && !waits_for(w, c->node)))
        return;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->v = pl_realloc(c->v, (size_t)c->cap * sizeof(char *));
    }
    c->v[c->n++] = pl_strdup(w->bare);
}

/* The watches waiting for node (NULL: all of them) stop waiting for it
 * (NULL: for anyone).  Released after the walk: routing may start other
 * watches. */
static void stop_waiting(const char *node)
{
    struct pending_ctx c = {node, NULL, 0, 0};
    pl_map_each(&watches, pending_one, &c);
    for (int i = 0; i < c.n; i++) {
        struct watch *w = pl_map_get(&watches, c.v[i]);
        if (node)
            pl__watch_answered(node, c.v[i]);
        else if (w && !w->ready)
            release(w);
        pl_free(c.v[i]);
    }
    pl_free(c.v);
}

/* A node's links went down, or it died: nothing more to wait for from it
 * (its sessions left the table: stanzas take the offline path). */
void pl__watch_node_gone(const char *node)
{
    if (on)
        stop_waiting(node);
}

/* ---- forgetting ---- */

struct sweep_ctx {
    uint64_t now, idle;
    struct pl_map gone; /* bare -> (void *)1 */
};

static void sweep_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct sweep_ctx *c = ud;
    struct watch *w = value;
    if (!w->ready || c->now - w->used < c->idle || has_local(w->bare, NULL))
        return;
    for (int i = 0; i < w->npins;)
        if (has_local(w->pins[i], NULL)) {
            i++;
        } else {
            pl_free(w->pins[i]);
            w->pins[i] = w->pins[--w->npins];
        }
    if (w->npins == 0)
        pl_map_put(&c->gone, w->bare, (void *)1);
}

/* This node into or out of bare's watcher set ("SADD", "SREM"). */
static void watcher_set(const char *cmd, const char *bare)
{
    const struct pl_cluster_settings *S = pl__cluster_settings();
    pl__redis_cmd(NULL, NULL, "%s %sw:%s %s", cmd, S->prefix, bare,
                  pl__cluster_self());
}

static void drop_one(const char *bare, void *value, void *ud)
{
    (void)value;
    (void)ud;
    watcher_set("SREM", bare);
    pl__link_send_unwatch(bare);
    watch_free(pl_map_del(&watches, bare));
}

static long sweep_every(void)
{
    long idle = pl__cluster_settings()->watch_idle;
    return idle / 4 > 1000 ? idle / 4 : 1000;
}

static void sweep(struct pl_timer *t)
{
    struct sweep_ctx c = {now_ms(),
                          (uint64_t)pl__cluster_settings()->watch_idle,
                          {0}};
    pl_map_each(&watches, sweep_one, &c);
    if (c.gone.count) {
        /* The copies of their sessions go, then the watches. */
        pl__link_drop_bares(&c.gone);
        pl_log_info("cluster", "%zu idle watches dropped", c.gone.count);
        pl_map_each(&c.gone, drop_one, NULL);
    }
    pl_map_clear(&c.gone);
    pl_timer_start(pl_server_loop(), t, (uint64_t)sweep_every());
}

/* ---- lifetime ---- */

static const char *const route_events[] = {"message/bare", "message/full",
                                           "presence/bare", "presence/full",
                                           "iq/full"};

void pl__watch_start(struct pl_config *c)
{
    on = 1;
    for (int i = 0; i < c->nhosts; i++)
        for (size_t k = 0; k < sizeof(route_events) / sizeof(*route_events);
             k++)
            pl_hook_add(pl_host_at(i), route_events[k], on_route,
                        PL_WATCH_PRIORITY, NULL);
    pl_timer_init(&sweep_timer, sweep, NULL);
    pl_timer_start(pl_server_loop(), &sweep_timer, (uint64_t)sweep_every());
}

static void readd_one(const char *bare, void *value, void *ud)
{
    (void)value;
    (void)ud;
    watcher_set("SADD", bare);
}

void pl__watch_redis_up(void)
{
    if (on)
        pl_map_each(&watches, readd_one, NULL); /* Redis may be empty */
}

static void free_watch(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    watch_free(value);
}

static void free_watchers(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    watchers_free(value);
}

/* Leaving: what still waits is routed as the table has it. */
void pl__watch_stop(void)
{
    if (!on)
        return;
    pl_timer_stop(&sweep_timer);
    stop_waiting(NULL);
}

void pl__watch_free(void)
{
    pl_map_each(&watches, free_watch, NULL);
    pl_map_clear(&watches);
    pl_map_each(&watchers, free_watchers, NULL);
    pl_map_clear(&watchers);
    on = 0;
}

json_t *pl__watch_json(void)
{
    return json_pack("{s:I, s:I, s:I}", "watches", (json_int_t)watches.count,
                     "watched_here", (json_int_t)watchers.count, "parked",
                     (json_int_t)nparked);
}
