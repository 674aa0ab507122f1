/*
 * cluster.c - several parleyd nodes serving the same domains, coordinated
 * through Redis (doc/cluster.md): `pl_mod_cluster`, the `cluster` group.
 *
 * Configuration (off by default: one process, as without it):
 *   cluster: { enable = true; node = "a"; redis = "127.0.0.1:6379";
 *              link = "10.0.0.1:5290"; secret = "..."; ttl = 3000;
 *              key_prefix = "parley:";
 *              max_link_buffer = 16777216; max_link_stanza = 1048576; };
 *
 * Liveness: every ttl/3 ms a node sets <prefix>node:<name> = "<link>
 * <epoch>" with a TTL of ttl ms, adds its name to the set <prefix>nodes,
 * and reads the set and every member's key (SMEMBERS, then one MGET): a
 * member with a key is alive (link.c connects to it), a known node whose
 * key is gone is dead.  So a killed node is seen dead within ttl + ttl/3
 * ms; its links usually say so sooner (the kernel closes its sockets), and
 * then its sessions leave the routing table at once.
 *
 * The session registry: <prefix>s:<bare JID> is a hash resource ->
 * "<node>:<epoch> <priority> <available>", and <prefix>n:<node> the set of
 * full JIDs a node registered; a resource is added on bind, updated on each
 * presence broadcast, removed on unbind (only if it is still this
 * incarnation's), and a dead node's entries are removed by the survivor
 * that wins <prefix>purge:<node>:<epoch> (SET NX), which also announces
 * the dead node's available sessions unavailable ("session/closed" on
 * them: mod_presence does the rest).  Routing itself reads the mirror
 * link.c keeps of every node's sessions, never Redis: no round trip per
 * stanza.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "alloc.h"
#include "cluster_int.h"
#include "config.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "loop.h"
#include "module.h"
#include "server.h"

static const struct pl_cluster_settings defaults = {
    .ttl = 3000,
    .max_link_buffer = 16777216,
    .max_link_stanza = 1048576,
};

static const struct pl_cluster_settings *S = &defaults;
static int started;
static char self[200]; /* "<node>:<epoch>" */
static struct pl_timer beat_timer;
static uint64_t redis_up_ms; /* loop clock at the last connection */

const struct pl_cluster_settings *pl__cluster_settings(void)
{
    return S;
}

const char *pl__cluster_self(void)
{
    return self;
}

#define OFF(f) offsetof(struct pl_cluster_settings, f)

static const struct pl_option options[] = {
    {"enable", PL_OPT_BOOL, "false", 0, 0, NULL,
     "Join a cluster of nodes serving the same domains through Redis "
     "(doc/cluster.md); needs a shared database (storage.driver = "
     "\"postgresql\").",
     OFF(enable)},
    {"node", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "This node's name, unique in the cluster (letters, digits, - _ .).",
     OFF(node)},
    {"redis", PL_OPT_STRING, "\"127.0.0.1:6379\"", 0, 0, NULL,
     "Redis: \"ip:port\" (an IP literal, no name lookup) or a Unix socket "
     "path.",
     OFF(redis)},
    {"link", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "\"ip:port\" this node listens on for links from the other nodes, and "
     "announces to them (an address they can reach).",
     OFF(link)},
    {"secret", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Shared by every node (required): a link whose header does not carry "
     "it is refused.  Sent in clear: the link network must be private "
     "(doc/cluster.md).",
     OFF(secret)},
    {"ttl", PL_OPT_INT, "3000", 300, 600000, NULL,
     "Milliseconds a node's liveness key lives; refreshed every ttl/3.  A "
     "node that stops is seen dead after at most ttl + ttl/3.",
     OFF(ttl)},
    {"key_prefix", PL_OPT_STRING, "\"parley:\"", 0, 0, NULL,
     "Prefix of every Redis key the cluster uses.", OFF(prefix)},
    {"max_link_buffer", PL_OPT_INT, "16777216", 65536, 1L << 34, NULL,
     "Bytes queued toward one node, or sent and not yet acknowledged, "
     "before its link is dropped (its sessions leave the routing table "
     "until it reconnects; what it did not acknowledge is routed again).",
     OFF(max_link_buffer)},
    {"max_link_stanza", PL_OPT_INT, "1048576", 4096, 1L << 30, NULL,
     "Bytes of one element read from a node's link (a stanza or a session "
     "state); more closes the link.",
     OFF(max_link_stanza)},
    {0},
};

static int valid_name(const char *s)
{
    if (!s[0] || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

/* "ip:port" with an IP literal ("[v6]:port" too). */
static int valid_ip_port(const char *a)
{
    const char *colon = strrchr(a, ':');
    char host[64];
    if (!colon)
        return 0;
    size_t n = (size_t)(colon - a);
    if (n >= 2 && a[0] == '[' && a[n - 1] == ']') {
        a++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(host))
        return 0;
    memcpy(host, a, n);
    host[n] = '\0';
    unsigned char buf[16];
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return !*end && port > 0 && port < 65536 &&
           (inet_pton(AF_INET, host, buf) == 1 ||
            inet_pton(AF_INET6, host, buf) == 1);
}

/* Process <index> of server.processes is node "<node>-<index>" with its
 * links on the configured port + index (every load: start and reload
 * compare the same names). */
static int per_process(struct pl_cluster_settings *s, int index, char *err,
                       size_t errlen)
{
    size_t n = strlen(s->node) + 16;
    char *node = pl_malloc(n);
    snprintf(node, n, "%s-%d", s->node, index);
    pl_free(s->node);
    s->node = node;
    const char *colon = strrchr(s->link, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || *end || port <= 0 || port + index > 65535) {
        snprintf(err, errlen,
                 "cluster.link: \"ip:port\" with room for port + %d (one "
                 "link port per process), not \"%s\"",
                 index, s->link);
        return PL_EINVAL;
    }
    n = (size_t)(colon - s->link) + 16;
    char *link = pl_malloc(n);
    snprintf(link, n, "%.*s:%ld", (int)(colon - s->link), s->link,
             port + index);
    pl_free(s->link);
    s->link = link;
    return PL_OK;
}

static int check(struct pl_config *c, void *settings, char *err, size_t errlen)
{
    struct pl_cluster_settings *s = settings;
    /* Several processes on one machine are nodes of a cluster
     * (server.processes, src/core/supervise.c): they need one. */
    if (c->s.processes > 1 || c->s.processes_auto) {
        if (!s->enable) {
            snprintf(err, errlen,
                     "server.processes = %s needs the cluster group "
                     "(cluster.enable = true, node, redis, link, secret): "
                     "the processes are nodes of a cluster",
                     c->s.processes_auto ? "\"auto\"" : "N > 1");
            return PL_EINVAL;
        }
        if (strcmp(c->s.storage_driver, "postgresql") != 0) {
            snprintf(err, errlen,
                     "server.processes = %s needs a shared database "
                     "(storage.driver = \"postgresql\"), not %s: the "
                     "embedded SQLite database serves one process",
                     c->s.processes_auto ? "\"auto\"" : "N > 1",
                     c->s.storage_driver);
            return PL_EINVAL;
        }
    }
    if (!s->enable)
        return PL_OK;
    int index = pl_config_process();
    if (index >= 0 && per_process(s, index, err, errlen) != PL_OK)
        return PL_EINVAL;
    if (!valid_name(s->node)) {
        snprintf(err, errlen,
                 "cluster.node: a name of 1 to 64 letters, digits, '-', '_' "
                 "or '.' is needed");
        return PL_EINVAL;
    }
    if (s->redis[0] != '/' && !valid_ip_port(s->redis)) {
        snprintf(err, errlen,
                 "cluster.redis: \"ip:port\" (an IP literal) or a socket "
                 "path, not \"%s\"",
                 s->redis);
        return PL_EINVAL;
    }
    if (!valid_ip_port(s->link)) {
        snprintf(err, errlen,
                 "cluster.link: \"ip:port\" (an IP literal) is needed, not "
                 "\"%s\"",
                 s->link);
        return PL_EINVAL;
    }
    if (strlen(s->secret) < 16) {
        snprintf(err, errlen,
                 "cluster.secret: a shared secret of at least 16 characters "
                 "is needed (every node has the same)");
        return PL_EINVAL;
    }
    if (strcmp(c->s.storage_driver, "postgresql") != 0)
        pl_log_warn("cluster",
                    "storage.driver is %s: offline messages and "
                    "rosters are not shared between nodes",
                    c->s.storage_driver);
    return PL_OK;
}

/* ---- the registry ---- */

/* KEYS[1] hash, ARGV[1] field, ARGV[2] owner prefix: deletes the field
 * only while it is the owner's. */
static const char *const DEL_SCRIPT =
    "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
    "if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then "
    "redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

/* KEYS[1] a node's set of full JIDs, ARGV[1] owner prefix ("a:" or
 * "a:<epoch> "), ARGV[2] key prefix of the hashes: removes the entries the
 * owner still has; returns how many. */
static const char *const PURGE_SCRIPT =
    "local n = 0 "
    "for _, full in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
    "local i = string.find(full, '/', 1, true) "
    "if i then "
    "local k = ARGV[2] .. string.sub(full, 1, i - 1) "
    "local r = string.sub(full, i + 1) "
    "local v = redis.call('HGET', k, r) "
    "if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then "
    "redis.call('HDEL', k, r) n = n + 1 end "
    "if not v or string.sub(v, 1, #ARGV[1]) == ARGV[1] then "
    "redis.call('SREM', KEYS[1], full) end "
    "end end return n";

static void registry_put(struct pl_session *s)
{
    char val[256];
    snprintf(val, sizeof(val), "%s %d %d", self, s->priority,
             s->available ? 1 : 0);
    pl__redis_cmd(NULL, NULL, "HSET %ss:%s %s %s", S->prefix, s->jid->bare,
                  s->jid->resource, val);
    pl__redis_cmd(NULL, NULL, "SADD %sn:%s %s", S->prefix, S->node,
                  s->jid->full);
}

static void registry_del(struct pl_session *s)
{
    char owner[256];
    snprintf(owner, sizeof(owner), "%s ", self);
    pl__redis_cmd(NULL, NULL, "EVAL %s 1 %ss:%s %s %s", DEL_SCRIPT, S->prefix,
                  s->jid->bare, s->jid->resource, owner);
    pl__redis_cmd(NULL, NULL, "SREM %sn:%s %s", S->prefix, S->node,
                  s->jid->full);
}

static void purge(const char *node, const char *owner)
{
    char hashes[128];
    snprintf(hashes, sizeof(hashes), "%ss:", S->prefix);
    pl__redis_cmd(NULL, NULL, "EVAL %s 1 %sn:%s %s %s", PURGE_SCRIPT, S->prefix,
                  node, owner, hashes);
}

static void put_one(struct pl_session *s, void *ud)
{
    (void)ud;
    if (s->jid && !pl__link_is_remote(s))
        registry_put(s);
}

/* ---- liveness ---- */

struct poll {
    char **names; /* the members, then the other nodes known here */
    int n;
    int listed; /* how many of names are members */
};

static void on_leftover_lock(redisReply *r, void *ud)
{
    char *name = ud;
    if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0) {
        char owner[128];
        snprintf(owner, sizeof(owner), "%s:", name);
        purge(name, owner);
        pl__redis_cmd(NULL, NULL, "SREM %snodes %s", S->prefix, name);
        pl_log_info("cluster", "node %s: left entries purged", name);
    }
    pl_free(name);
}

static void on_mget(redisReply *r, void *ud)
{
    struct poll *p = ud;
    /* Just (re)connected: a Redis that restarted empty has no key of
     * anyone yet; every live node sets its own within ttl/3 of its own
     * reconnection (retried every ttl/3), so no death is called before
     * ttl has passed. */
    int grace = pl_loop_now(pl_server_loop()) < redis_up_ms + (uint64_t)S->ttl;
    if (started && r && r->type == REDIS_REPLY_ARRAY &&
        (int)r->elements == p->n) {
        char **known = pl__link_names();
        for (int i = 0; i < p->n; i++) {
            const char *name = p->names[i];
            redisReply *v = r->element[i];
            if (strcmp(name, S->node) == 0)
                continue;
            if (v->type == REDIS_REPLY_STRING) {
                char addr[128], epoch[64];
                if (sscanf(v->str, "%127s %63s", addr, epoch) == 2)
                    pl__link_node_alive(name, addr, epoch);
                continue;
            }
            if (grace)
                continue;
            int was = 0;
            for (int k = 0; known[k]; k++)
                was |= strcmp(known[k], name) == 0;
            if (was) {
                pl__link_node_dead(name);
            } else if (i < p->listed) {
                /* A node that died unseen (or whose survivors purged it
                 * already): its entries, once. */
                pl__redis_cmd(on_leftover_lock, pl_strdup(name),
                              "SET %spurge:%s: %s NX PX %ld", S->prefix, name,
                              self, S->ttl * 10);
            }
        }
        pl__link_names_free(known);
    }
    for (int i = 0; i < p->n; i++)
        pl_free(p->names[i]);
    pl_free(p->names);
    pl_free(p);
}

/* Asks for the key of every member of the set and of every node known
 * here (one that left the set is dead only if its key is gone too). */
static void on_members(redisReply *r, void *ud)
{
    (void)ud;
    if (!r || r->type != REDIS_REPLY_ARRAY || !started)
        return;
    char **known = pl__link_names();
    int nknown = 0;
    while (known[nknown])
        nknown++;
    struct poll *p = pl_calloc(1, sizeof(*p));
    p->names = pl_calloc(r->elements + (size_t)nknown + 1, sizeof(char *));
    for (size_t i = 0; i < r->elements; i++)
        p->names[p->n++] = pl_strdup(r->element[i]->type == REDIS_REPLY_STRING
                                         ? r->element[i]->str
                                         : "");
    p->listed = p->n;
    for (int k = 0; k < nknown; k++) {
        int dup = 0;
        for (int i = 0; i < p->listed; i++)
            dup |= strcmp(p->names[i], known[k]) == 0;
        if (!dup)
            p->names[p->n++] = pl_strdup(known[k]);
    }
    pl__link_names_free(known);
    const char **argv = pl_calloc((size_t)p->n + 2, sizeof(char *));
    argv[0] = "MGET";
    for (int i = 0; i < p->n; i++) {
        size_t len = strlen(S->prefix) + strlen(p->names[i]) + 6;
        char *k = pl_calloc(1, len);
        snprintf(k, len, "%snode:%s", S->prefix, p->names[i]);
        argv[i + 1] = k;
    }
    int n = p->n;
    if (n == 0 || pl__redis_cmdv(on_mget, p, n + 1, argv) != PL_OK) {
        for (int i = 0; i < p->n; i++)
            pl_free(p->names[i]);
        pl_free(p->names);
        pl_free(p);
    }
    for (int i = 0; i < n; i++)
        pl_free((char *)argv[i + 1]);
    pl_free(argv);
}

static void beat(struct pl_timer *t)
{
    (void)t;
    if (!started)
        return;
    if (pl__redis_is_up()) {
        char val[256];
        snprintf(val, sizeof(val), "%s %s", S->link, strchr(self, ':') + 1);
        pl__redis_cmd(NULL, NULL, "SET %snode:%s %s PX %ld", S->prefix, S->node,
                      val, S->ttl);
        pl__redis_cmd(NULL, NULL, "SADD %snodes %s", S->prefix, S->node);
        pl__redis_cmd(on_members, NULL, "SMEMBERS %snodes", S->prefix);
    }
    pl_timer_start(pl_server_loop(), &beat_timer, (uint64_t)S->ttl / 3);
}

/* Connected (again): a clean slate for this node's entries, then all of
 * them (Redis may have restarted empty), then the liveness key. */
static void on_redis_up(void)
{
    redis_up_ms = pl_loop_now(pl_server_loop());
    char owner[128];
    snprintf(owner, sizeof(owner), "%s:", S->node);
    purge(S->node, owner);
    pl_session_each(put_one, NULL);
    beat(NULL);
}

/* A dead node's remote sessions (link.c gives them; we free them). */
struct gone {
    struct pl_session **v;
    int n;
    char *name;
    char *epoch; /* or NULL: unknown */
};

static void gone_free(struct gone *g)
{
    for (int i = 0; i < g->n; i++)
        pl__link_remote_free(g->v[i]);
    pl_free(g->v);
    pl_free(g->name);
    pl_free(g->epoch);
    pl_free(g);
}

static void on_purge_lock(redisReply *r, void *ud)
{
    struct gone *g = ud;
    if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0 &&
        started) {
        /* This node announces the dead node's users unavailable, as if
         * their sessions had closed here: mod_presence tells their
         * contacts, wherever they are (directed presence is lost). */
        int n = 0;
        for (int i = 0; i < g->n; i++) {
            struct pl_session *s = g->v[i];
            if (!s->available || !s->host)
                continue;
            n++;
            struct pl_event ev = {"session/closed", s->host, s,   NULL,
                                  s->jid,           NULL,    NULL};
            pl_hook_fire(&ev);
        }
        char owner[256];
        snprintf(owner, sizeof(owner), g->epoch ? "%s:%s " : "%s:", g->name,
                 g->epoch ? g->epoch : "");
        purge(g->name, owner);
        pl_log_info("cluster",
                    "node %s is dead: %d sessions announced unavailable, "
                    "its registry entries purged",
                    g->name, n);
    }
    gone_free(g);
}

void pl__cluster_node_gone(const char *name, const char *epoch,
                           struct pl_session **v, int n)
{
    struct gone *g = pl_calloc(1, sizeof(*g));
    g->v = pl_calloc((size_t)n + 1, sizeof(*v));
    memcpy(g->v, v, (size_t)n * sizeof(*v));
    g->n = n;
    g->name = pl_strdup(name);
    g->epoch = epoch ? pl_strdup(epoch) : NULL;
    /* One survivor announces and purges: whoever sets the lock first. */
    if (!started ||
        pl__redis_cmd(on_purge_lock, g, "SET %spurge:%s:%s %s NX PX %ld",
                      S->prefix, name, epoch ? epoch : "", self,
                      S->ttl * 10) != PL_OK)
        gone_free(g); /* no Redis: nobody can decide; see doc/cluster.md */
}

/* ---- this node's sessions ---- */

static int on_bound(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_session *s = ev->session;
    if (!s || !s->jid || pl__link_is_remote(s))
        return PL_PASS;
    registry_put(s);
    pl__link_announce_up(s, 0);
    return PL_PASS;
}

static int on_closed(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_session *s = ev->session;
    if (!s || !s->jid || pl__link_is_remote(s))
        return PL_PASS;
    /* Replaced by a newer session of this node (RFC 6120 §7.7.2.2): that
     * one was announced already and owns the entry. */
    struct pl_session *o = pl_session_by_full(s->jid->full);
    if (o && o != s && !pl__link_is_remote(o))
        return PL_PASS;
    registry_del(s);
    pl__link_announce_down(s);
    if (!s->registered)
        pl__link_reregister(s->jid->full);
    return PL_PASS;
}

/* Availability or priority changed (the c2s front end has set them). */
static int on_broadcast(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_session *s = ev->session;
    if (!s || !s->jid || !s->registered || pl__link_is_remote(s))
        return PL_PASS;
    registry_put(s);
    pl__link_announce_up(s, 0);
    return PL_PASS;
}

/* A module changed per-session state it exports (session/export:
 * carbons enabled or disabled): the other nodes learn it. */
static int on_changed(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_session *s = ev->session;
    if (s && s->jid && s->registered && !pl__link_is_remote(s))
        pl__link_announce_up(s, 0);
    return PL_PASS;
}

/* A roster request makes the session interested (RFC 6121 §2.1.6) when
 * mod_roster answers; the other nodes learn it now, before its presence. */
static int on_roster_get(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_session *s = ev->session;
    if (s && s->jid && s->registered && !pl__link_is_remote(s) &&
        !pl_session_is_interested(s) && pl_event_is_self(ev))
        pl__link_announce_up(s, 1);
    return PL_PASS;
}

/* ---- for operators ---- */

static void count_local(struct pl_session *s, void *ud)
{
    if (s->jid && !pl__link_is_remote(s))
        (*(long *)ud)++;
}

/* The admin operation "cluster" (parleyctl cluster, GET /api/cluster,
 * /metrics): this node, then every node it knows, as seen from here. */
static json_t *admin_cluster(json_t *req)
{
    (void)req;
    if (!started)
        return json_pack("{s:b, s:b}", "ok", 1, "enabled", 0);
    long local = 0;
    pl_session_each(count_local, &local);
    return json_pack("{s:b, s:b, s:s, s:s, s:s, s:s, s:b, s:I, s:o}", "ok", 1,
                     "enabled", 1, "node", S->node, "epoch",
                     strchr(self, ':') + 1, "link", S->link, "redis", S->redis,
                     "redis_connected", pl__redis_is_up(), "sessions",
                     (json_int_t)local, "nodes", pl__link_json());
}

/* ---- lifetime ---- */

static void make_self(void)
{
    unsigned char r[8];
    if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        memcpy(r, &x, sizeof(r));
    }
    int k = snprintf(self, sizeof(self), "%s:", S->node);
    for (size_t i = 0; i < sizeof(r); i++)
        k += snprintf(self + k, sizeof(self) - (size_t)k, "%02x", r[i]);
}

static int cluster_start(struct pl_config *c, void *settings)
{
    S = settings;
    pl_admin_add_op("cluster", admin_cluster);
    if (!S->enable)
        return PL_OK;
    make_self();
    if (pl__link_listen(S->link) != PL_OK)
        return PL_EIO;
    for (int i = 0; i < c->nhosts; i++) {
        struct pl_host *h = pl_host_at(i);
        pl_hook_add(h, "session/bound", on_bound, 10000, NULL);
        pl_hook_add(h, "session/closed", on_closed, 10000, NULL);
        pl_hook_add(h, "presence/broadcast", on_broadcast, 10000, NULL);
        pl_hook_add(h, "session/changed", on_changed, 10000, NULL);
        pl_hook_add(h, "iq-get/bare/jabber:iq:roster:query", on_roster_get,
                    10000, NULL);
    }
    started = 1;
    pl_timer_init(&beat_timer, beat, NULL);
    long retry = S->ttl / 3;
    if (pl__redis_start(S->redis, retry, on_redis_up) != PL_OK)
        return PL_EINVAL;
    pl_log_info("cluster", "node %s (%s), links on %s, redis %s", S->node, self,
                S->link, S->redis);
    return PL_OK;
}

static void cluster_stop(void)
{
    if (!started)
        return;
    /* Leaving: the others see it at their next poll, not after the TTL. */
    if (pl__redis_is_up()) {
        pl__redis_cmd(NULL, NULL, "DEL %snode:%s", S->prefix, S->node);
        char owner[256];
        snprintf(owner, sizeof(owner), "%s ", self);
        purge(S->node, owner);
    }
    pl_timer_stop(&beat_timer);
    pl__link_stop();
}

/* The cluster's settings change only on restart (the old configuration
 * stays allocated after a reload: parleyd keeps it). */
static void cluster_reload(struct pl_config *c, void *settings)
{
    (void)c;
    const struct pl_cluster_settings *n = settings;
    if (n->enable != S->enable ||
        (S->enable &&
         (strcmp(n->node, S->node) || strcmp(n->redis, S->redis) ||
          strcmp(n->link, S->link) || strcmp(n->prefix, S->prefix) ||
          strcmp(n->secret, S->secret) || n->ttl != S->ttl ||
          n->max_link_buffer != S->max_link_buffer ||
          n->max_link_stanza != S->max_link_stanza)))
        pl_log_warn("cluster", "reload: the cluster group changes only on "
                               "restart");
}

static unsigned long cluster_count(void)
{
    return started ? pl__link_count() : 0;
}

static void cluster_free(void)
{
    if (!started)
        return;
    started = 0;
    pl__redis_stop();
    pl__link_free();
    S = &defaults;
}

/* Every node signs with the one secret of the shared database (dialback
 * keys verified by another node, upload slots...): src/core/server.c. */
static int cluster_shared_secret(const void *settings)
{
    return ((const struct pl_cluster_settings *)settings)->enable;
}

static const struct pl_protocol *const protocols[] = {NULL};

static const struct pl_frontend frontend = {
    .protocols = protocols,
    .options = options,
    .settings_size = sizeof(struct pl_cluster_settings),
    .check = check,
    .start = cluster_start,
    .stop = cluster_stop,
    .reload = cluster_reload,
    .count = cluster_count,
    .free = cluster_free,
    .shared_secret = cluster_shared_secret,
};

const struct pl_module pl_mod_cluster = {
    .abi = PL_MODULE_ABI,
    .name = "cluster",
    .summary = "nodes serving the same domains, coordinated through Redis",
    .frontend = &frontend,
};
