/*
 * rooms.c - MUC rooms in a cluster (doc/cluster.md, "Rooms"): each room
 * is hosted by one node at a time, the holder of its lease in Redis.
 *
 *   <prefix>room:<room bare JID> = "<node>:<epoch>", PX room_lease
 *
 * Every stanza to a room JID (groupchat, presence, IQ to the room or to an
 * occupant) reaches the room service's hooks ("muc/message",
 * "muc/presence", "muc/iq"); ours run first (priority 10000):
 *
 *   - a room hosted here: PASS, mod_muc serves it as on a single node;
 *   - a room another node holds: the stanza goes over that node's link
 *     (<c:d r='1'/>: routed there again, where it is a room hosted here);
 *   - a room we know nothing of: the stanza waits (at most max_room_queue
 *     per room) while one EVAL asks for the lease (ACQUIRE_SCRIPT: set it
 *     when it is free, ours, or held by a node whose liveness key is gone
 *     or names another epoch; else answer the holder).  The winner fires
 *     "muc/room-load" (mod_muc reads the room from the shared database,
 *     then fires "muc/room-loaded") and routes the waiting stanzas again;
 *     a loser forwards them to the winner.
 *
 * Every ttl/3 (the liveness poll) the node renews its leases in one EVAL
 * (RENEW_SCRIPT, which also sets them again in a Redis that restarted
 * empty); a lease found in another node's hands is lost: "muc/room-lost"
 * (mod_muc removes the occupants with status 332 and forgets the room).
 * After a (re)connection to Redis, no lease is asked for during the grace
 * of pl__cluster_in_grace(): the holders set theirs again first.
 *
 * Occupants on this node of rooms hosted elsewhere are noted from the
 * room's self-presence (status 110) the links deliver to them; when the
 * hosting node dies, each survivor sends its own such occupants an
 * unavailable self-presence with status 332 (XEP-0045: removed because
 * of a system shutdown) and forgets the room: the next stanza for it
 * takes the lease and loads it from the database.  A clean stop does the
 * same from the host itself, then deletes its leases.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cluster_int.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "router.h"
#include "server.h"

#define NS_MUC_USER "http://jabber.org/protocol/muc#user"

enum rstate {
    R_NEW,     /* nothing asked yet (Redis in its grace) */
    R_ASKING,  /* the lease is being asked for */
    R_LOADING, /* ours; mod_muc loads the room */
    R_HERE,    /* hosted here */
    R_THERE,   /* hosted by node `owner` */
};

struct held {
    struct pl_stanza *st;
    struct pl_jid *from, *to;
    struct held *next;
};

/* A session of this node in a room hosted elsewhere. */
struct seat {
    char *full; /* the session */
    char *nick;
    struct seat *next;
};

struct room {
    char *jid; /* bare room JID, the map's key */
    struct pl_host *host;
    enum rstate state;
    char *owner; /* R_THERE */
    struct held *head, *tail;
    long nheld;
    struct seat *seats; /* R_THERE */
};

static struct pl_map rooms; /* bare room JID -> struct room */
static int on;

/* Takes the lease when it is free, already ours, or held by a process
 * that is gone (its node's liveness key missing or naming another
 * epoch); answers the holder.  KEYS[1] lease, ARGV[1] "<node>:<epoch>",
 * ARGV[2] lease ms, ARGV[3] prefix of the liveness keys. */
static const char *const ACQUIRE_SCRIPT =
    "local v = redis.call('GET', KEYS[1]) "
    "if v and v ~= ARGV[1] then "
    "local name, epoch = string.match(v, '^([^:]+):(.+)$') "
    "local live = name and redis.call('GET', ARGV[3] .. name) "
    "if live and string.find(' ' .. live .. ' ', ' ' .. epoch .. ' ', 1, "
    "true) then "
    "return v end end "
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return ARGV[1]";

/* Renews each lease that is ours, sets again one that is gone (Redis
 * restarted empty); 0 for one another process holds.  KEYS the leases,
 * ARGV[1] "<node>:<epoch>", ARGV[2] lease ms. */
static const char *const RENEW_SCRIPT =
    "local out = {} "
    "for i, k in ipairs(KEYS) do "
    "local v = redis.call('GET', k) "
    "if not v or v == ARGV[1] then "
    "redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) out[i] = 1 "
    "else out[i] = 0 end end return out";

/* Deletes the lease while it is ours.  KEYS[1], ARGV[1] "<node>:<epoch>". */
static const char *const RELEASE_SCRIPT =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('DEL', KEYS[1]) end return 0";

/* ---- rooms ---- */

static void seats_free(struct room *r)
{
    while (r->seats) {
        struct seat *s = r->seats;
        r->seats = s->next;
        pl_free(s->full);
        pl_free(s->nick);
        pl_free(s);
    }
}

/* Answers every waiting stanza with code (or drops them: code 0). */
static void held_fail(struct room *r, int code, const char *text)
{
    struct held *h = r->head;
    r->head = r->tail = NULL;
    r->nheld = 0;
    while (h) {
        struct held *next = h->next;
        if (code)
            pl_route_error(h->st, code, text);
        pl_stanza_unref(h->st);
        pl_jid_free(h->from);
        pl_jid_free(h->to);
        pl_free(h);
        h = next;
    }
}

static void room_free(struct room *r)
{
    held_fail(r, 0, NULL);
    seats_free(r);
    pl_free(r->jid);
    pl_free(r->owner);
    pl_free(r);
}

static void room_forget(struct room *r)
{
    pl_map_del(&rooms, r->jid);
    room_free(r);
}

/* Routes the waiting stanzas again: our hook finds the room hosted here
 * (mod_muc serves them) or elsewhere (they go to its node). */
static void held_replay(struct room *r)
{
    struct held *h = r->head;
    r->head = r->tail = NULL;
    r->nheld = 0;
    while (h) {
        struct held *next = h->next;
        pl_route(h->st, h->from, h->to, NULL);
        pl_stanza_unref(h->st);
        pl_jid_free(h->from);
        pl_jid_free(h->to);
        pl_free(h);
        h = next;
    }
}

static void lease_key(char *buf, size_t len, const char *jid)
{
    snprintf(buf, len, "%sroom:%s", pl__cluster_settings()->prefix, jid);
}

/* ---- acquiring ---- */

static void loaded(struct room *r)
{
    r->state = R_HERE;
    pl_log_info("cluster", "room %s: hosted here", r->jid);
    held_replay(r);
}

static void on_acquire(redisReply *rep, void *ud)
{
    char *jid = ud;
    struct room *r = on ? pl_map_get(&rooms, jid) : NULL;
    pl_free(jid);
    if (!r || r->state != R_ASKING)
        return;
    if (!rep || rep->type != REDIS_REPLY_STRING) {
        held_fail(r, PL_ERESOURCE_CONSTRAINT, "The room is not available.");
        room_forget(r);
        return;
    }
    if (strcmp(rep->str, pl__cluster_self()) == 0) {
        r->state = R_LOADING;
        struct pl_jid *j = NULL;
        int rc = PL_PASS;
        if (pl_jid_parse(pl_str_c(r->jid), &j) == PL_OK) {
            struct pl_event ev =
                {"muc/room-load", r->host, NULL, NULL, NULL, j, NULL};
            rc = pl_hook_fire(&ev);
        }
        pl_jid_free(j);
        if (rc == PL_PASS)
            loaded(r); /* nothing to load: mod_muc has it */
        return;
    }
    const char *colon = strchr(rep->str, ':');
    r->state = R_THERE;
    r->owner = pl_strndup(rep->str, colon ? (size_t)(colon - rep->str)
                                          : strlen(rep->str));
    held_replay(r);
}

static void ask(struct room *r)
{
    const struct pl_cluster_settings *S = pl__cluster_settings();
    if (pl__redis_is_up() && pl__cluster_in_grace()) {
        r->state = R_NEW; /* pl__rooms_tick asks once the grace is over */
        return;
    }
    char key[1200], live[200], ms[32];
    lease_key(key, sizeof(key), r->jid);
    snprintf(live, sizeof(live), "%snode:", S->prefix);
    snprintf(ms, sizeof(ms), "%ld", S->room_lease);
    r->state = R_ASKING;
    char *ud = pl_strdup(r->jid);
    if (pl__redis_cmd(on_acquire, ud, "EVAL %s 1 %s %s %s %s", ACQUIRE_SCRIPT,
                      key, pl__cluster_self(), ms, live) != PL_OK) {
        pl_free(ud);
        held_fail(r, PL_ERESOURCE_CONSTRAINT,
                  "The room service cannot reach its coordinator.");
        room_forget(r);
    }
}

static void tick_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct room *r = value;
    struct room ***v = ud;
    if (r->state == R_NEW)
        *(*v)++ = r;
}

void pl__rooms_tick(void)
{
    if (!on || !rooms.count || (pl__redis_is_up() && pl__cluster_in_grace()))
        return;
    struct room **v = pl_calloc(rooms.count + 1, sizeof(*v)), **end = v;
    pl_map_each(&rooms, tick_one, &end);
    for (struct room **p = v; p < end; p++)
        ask(*p);
    pl_free(v);
}

/* ---- the service's hooks ---- */

static int on_room_stanza(struct pl_event *ev, void *state)
{
    (void)state;
    const struct pl_jid *to = ev->to;
    if (!to || !to->local || !ev->from || !ev->stanza)
        return PL_PASS; /* the service itself: every node answers */
    if (!on) {
        /* Stopping: the rooms are gone from here (a leaving session's
         * last presence must not take a lease again). */
        pl_route_error(ev->stanza, PL_ESERVICE_UNAVAILABLE,
                       "The server is stopping.");
        return PL_HANDLED;
    }
    struct room *r = pl_map_get(&rooms, to->bare);
    if (r && r->state == R_HERE)
        return PL_PASS;
    if (r && r->state == R_THERE) {
        if (pl__link_forward(r->owner, ev->stanza) != PL_OK)
            pl_route_error(ev->stanza, PL_ERECIPIENT_UNAVAILABLE,
                           "The node hosting the room is unreachable.");
        return PL_HANDLED;
    }
    if (!r) {
        r = pl_calloc(1, sizeof(*r));
        r->jid = pl_strdup(to->bare);
        r->host = ev->host;
        r->state = R_NEW;
        pl_map_put(&rooms, r->jid, r);
    }
    if (r->nheld >= pl__cluster_settings()->max_room_queue) {
        pl_route_error(ev->stanza, PL_ERESOURCE_CONSTRAINT,
                       "Too many stanzas wait for the room.");
        return PL_HANDLED;
    }
    struct held *h = pl_calloc(1, sizeof(*h));
    h->st = pl_stanza_ref(ev->stanza);
    if (pl_jid_parse(pl_str_c(ev->from->full), &h->from) != PL_OK ||
        pl_jid_parse(pl_str_c(to->full), &h->to) != PL_OK) {
        pl_stanza_unref(h->st);
        pl_jid_free(h->from);
        pl_free(h);
        return PL_EJID_MALFORMED;
    }
    if (r->tail)
        r->tail->next = h;
    else
        r->head = h;
    r->tail = h;
    r->nheld++;
    if (r->state == R_NEW)
        ask(r);
    return PL_HANDLED;
}

/* mod_muc has read the room (or found none): it is served here. */
static int on_room_loaded(struct pl_event *ev, void *state)
{
    (void)state;
    struct room *r = ev->to ? pl_map_get(&rooms, ev->to->bare) : NULL;
    if (r && r->state == R_LOADING)
        loaded(r);
    return PL_PASS;
}

static void release(const char *jid)
{
    char key[1200];
    lease_key(key, sizeof(key), jid);
    pl__redis_cmd(NULL, NULL, "EVAL %s 1 %s %s", RELEASE_SCRIPT, key,
                  pl__cluster_self());
}

/* mod_muc destroyed the room or let a temporary one go: another node may
 * host the next room of that name. */
static int on_room_gone(struct pl_event *ev, void *state)
{
    (void)state;
    struct room *r = ev->to ? pl_map_get(&rooms, ev->to->bare) : NULL;
    if (r && r->state == R_HERE) {
        release(r->jid);
        room_forget(r);
    }
    return PL_PASS;
}

/* ---- occupants here of rooms hosted elsewhere ---- */

static int has_self_code(struct pl_stanza *st)
{
    struct pl_node *x = pl_node_child(pl_stanza_root(st), "x", NS_MUC_USER);
    for (struct pl_node *c = x ? pl_node_first_elem(x) : NULL; c;
         c = pl_node_next_elem(c)) {
        const char *code = pl_node_attr(c, "code");
        if (strcmp(c->name, "status") == 0 && code && strcmp(code, "110") == 0)
            return 1;
    }
    return 0;
}

void pl__rooms_seen(struct pl_session *s, struct pl_stanza *st)
{
    if (!on || strcmp(pl_stanza_name(st), "presence") != 0 || !s->jid)
        return;
    const char *f = pl_stanza_attr(st, "from");
    struct pl_jid *from = NULL;
    if (!f || pl_jid_parse(pl_str_c(f), &from) != PL_OK) {
        pl_jid_free(from);
        return;
    }
    struct room *r = from->local && from->resource
                         ? pl_map_get(&rooms, from->bare)
                         : NULL;
    if (r && r->state == R_THERE && has_self_code(st)) {
        const char *type = pl_stanza_attr(st, "type");
        int gone = type && strcmp(type, "unavailable") == 0;
        /* This session's seat goes (and those of sessions that ended). */
        for (struct seat **pp = &r->seats; *pp;) {
            struct seat *t = *pp;
            struct pl_session *o = pl_session_by_full(t->full);
            if (strcmp(t->full, s->jid->full) == 0 || !o ||
                pl__link_is_remote(o)) {
                *pp = t->next;
                pl_free(t->full);
                pl_free(t->nick);
                pl_free(t);
            } else {
                pp = &t->next;
            }
        }
        if (!gone && !(type && type[0])) {
            struct seat *t = pl_calloc(1, sizeof(*t));
            t->full = pl_strdup(s->jid->full);
            t->nick = pl_strdup(from->resource);
            t->next = r->seats;
            r->seats = t;
        }
    }
    pl_jid_free(from);
}

/* Tells the occupants here of r (hosted by a node that is gone) that
 * they are out of it (XEP-0045 status 332: system shutdown). */
static void announce_shutdown(struct room *r)
{
    for (struct seat *t = r->seats; t; t = t->next) {
        struct pl_session *s = pl_session_by_full(t->full);
        if (!s || pl__link_is_remote(s))
            continue;
        struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
        struct pl_node *root = pl_stanza_root(p);
        pl_stanza_set_attr(p, "type", "unavailable");
        struct pl_node *x = pl_node_add_child(p, root, "x", NS_MUC_USER);
        struct pl_node *it = pl_node_add_child(p, x, "item", NS_MUC_USER);
        pl_node_set_attr(p, it, "affiliation", "none");
        pl_node_set_attr(p, it, "role", "none");
        static const char *const codes[] = {"110", "332"};
        for (int i = 0; i < 2; i++) {
            struct pl_node *c = pl_node_add_child(p, x, "status", NS_MUC_USER);
            pl_node_set_attr(p, c, "code", codes[i]);
        }
        size_t n = strlen(r->jid) + strlen(t->nick) + 2;
        char *from = pl_malloc(n);
        snprintf(from, n, "%s/%s", r->jid, t->nick);
        pl_route_as(p, from, t->full);
        pl_free(from);
        pl_stanza_unref(p);
    }
}

struct dead {
    const char *name;
    struct room **v;
    int n;
};

static void dead_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct room *r = value;
    struct dead *d = ud;
    if (r->state == R_THERE && strcmp(r->owner, d->name) == 0)
        d->v[d->n++] = r;
}

void pl__rooms_node_dead(const char *name)
{
    if (!on || !rooms.count)
        return;
    struct dead d = {name, pl_calloc(rooms.count + 1, sizeof(void *)), 0};
    pl_map_each(&rooms, dead_one, &d);
    for (int i = 0; i < d.n; i++) {
        announce_shutdown(d.v[i]);
        room_forget(d.v[i]);
    }
    if (d.n)
        pl_log_info("cluster",
                    "node %s is gone: %d rooms it hosted are free, their "
                    "occupants here told (332)",
                    name, d.n);
    pl_free(d.v);
}

/* ---- renewal ---- */

struct renewal {
    char **jids;
    int n;
};

static void lose(struct room *r)
{
    struct pl_jid *j = NULL;
    if (pl_jid_parse(pl_str_c(r->jid), &j) == PL_OK) {
        struct pl_event ev =
            {"muc/room-lost", r->host, NULL, NULL, NULL, j, NULL};
        pl_hook_fire(&ev);
    }
    pl_jid_free(j);
    room_forget(r);
}

static void on_renew(redisReply *rep, void *ud)
{
    struct renewal *w = ud;
    if (on && rep && rep->type == REDIS_REPLY_ARRAY &&
        (int)rep->elements == w->n) {
        for (int i = 0; i < w->n; i++) {
            struct room *r = pl_map_get(&rooms, w->jids[i]);
            redisReply *e = rep->element[i];
            if (r && r->state == R_HERE && e->type == REDIS_REPLY_INTEGER &&
                e->integer == 0) {
                pl_log_warn("cluster",
                            "room %s: its lease is another node's, the "
                            "room leaves this node",
                            r->jid);
                lose(r);
            }
        }
    }
    for (int i = 0; i < w->n; i++)
        pl_free(w->jids[i]);
    pl_free(w->jids);
    pl_free(w);
}

static void renew_one(const char *key, void *value, void *ud)
{
    struct room *r = value;
    struct renewal *w = ud;
    if (r->state == R_HERE || r->state == R_LOADING)
        w->jids[w->n++] = pl_strdup(key);
}

void pl__rooms_renew(void)
{
    if (!on || !rooms.count)
        return;
    const struct pl_cluster_settings *S = pl__cluster_settings();
    struct renewal *w = pl_calloc(1, sizeof(*w));
    w->jids = pl_calloc(rooms.count + 1, sizeof(char *));
    pl_map_each(&rooms, renew_one, w);
    int argc = w->n + 5;
    const char **argv = pl_calloc((size_t)argc, sizeof(char *));
    char nk[32], ms[32];
    snprintf(nk, sizeof(nk), "%d", w->n);
    snprintf(ms, sizeof(ms), "%ld", S->room_lease);
    argv[0] = "EVAL";
    argv[1] = RENEW_SCRIPT;
    argv[2] = nk;
    for (int i = 0; i < w->n; i++) {
        size_t n = strlen(S->prefix) + strlen(w->jids[i]) + 8;
        char *k = pl_malloc(n);
        snprintf(k, n, "%sroom:%s", S->prefix, w->jids[i]);
        argv[3 + i] = k;
    }
    argv[3 + w->n] = pl__cluster_self();
    argv[4 + w->n] = ms;
    int sent = w->n && pl__redis_cmdv(on_renew, w, argc, argv) == PL_OK;
    for (int i = 0; i < w->n; i++)
        pl_free((char *)argv[3 + i]);
    pl_free(argv);
    if (!sent) {
        for (int i = 0; i < w->n; i++)
            pl_free(w->jids[i]);
        pl_free(w->jids);
        pl_free(w);
    }
}

/* ---- for operators ---- */

static void count_here(const char *key, void *value, void *ud)
{
    (void)key;
    if (((struct room *)value)->state == R_HERE)
        (*(long *)ud)++;
}

long pl__rooms_hosted(void)
{
    long n = 0;
    if (on)
        pl_map_each(&rooms, count_here, &n);
    return n;
}

/* ---- lifetime ---- */

void pl__rooms_start(struct pl_config *c)
{
    for (int i = 0; i < c->nhosts; i++) {
        struct pl_host *h = pl_host_at(i);
        pl_hook_add(h, "muc/message", on_room_stanza, 10000, NULL);
        pl_hook_add(h, "muc/presence", on_room_stanza, 10000, NULL);
        pl_hook_add(h, "muc/iq", on_room_stanza, 10000, NULL);
        pl_hook_add(h, "muc/room-loaded", on_room_loaded, 0, NULL);
        pl_hook_add(h, "muc/room-gone", on_room_gone, 0, NULL);
    }
    on = 1;
}

static void collect_all(const char *key, void *value, void *ud)
{
    (void)key;
    struct room ***v = ud;
    *(*v)++ = value;
}

/* Stopping cleanly: the occupants of the rooms hosted here are told (332)
 * while the links are up, and the leases go at once. */
void pl__rooms_stop(void)
{
    if (!on)
        return;
    struct room **v = pl_calloc(rooms.count + 1, sizeof(*v)), **end = v;
    pl_map_each(&rooms, collect_all, &end);
    int n = 0;
    for (struct room **p = v; p < end; p++) {
        struct room *r = *p;
        if (r->state == R_HERE || r->state == R_LOADING) {
            if (r->state == R_HERE)
                n++;
            if (pl__redis_is_up())
                release(r->jid);
            if (r->state == R_HERE) {
                lose(r);
                continue;
            }
        }
        held_fail(r, PL_ESERVICE_UNAVAILABLE, "The server is stopping.");
        room_forget(r);
    }
    pl_free(v);
    on = 0;
    if (n)
        pl_log_info("cluster", "%d rooms hosted here released", n);
}

void pl__rooms_free(void)
{
    struct room **v = pl_calloc(rooms.count + 1, sizeof(*v)), **end = v;
    pl_map_each(&rooms, collect_all, &end);
    for (struct room **p = v; p < end; p++)
        room_free(*p);
    pl_free(v);
    pl_map_clear(&rooms);
    on = 0;
}
