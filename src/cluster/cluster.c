/*
 * cluster.c - several parleyd nodes serving the same domains, coordinated
 * through Redis (doc/cluster.md): `pl_mod_cluster`, the `cluster` group.
 *
 * Configuration (off by default: one process, as without it):
 *   cluster: { enable = true; node = "a"; redis = "127.0.0.1:6379";
 *              link = "10.0.0.1:5290"; secret = "..."; ttl = 3000;
 *              key_prefix = "parley:";
 *              max_link_buffer = 16777216; max_link_stanza = 1048576;
 *              room_lease = 10000; max_room_queue = 1000; };
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
 *
 * MUC rooms: one node hosts each, holding its lease in Redis (rooms.c).
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <signal.h>

#include "admin.h"
#include "alloc.h"
#include "cluster_int.h"
#include "config.h"
#include "error.h"
#include "host.h"
#include "listen.h"
#include "log.h"
#include "loop.h"
#include "module.h"
#include "map.h"
#include "server.h"
#include "supervise.h"

static const struct pl_cluster_settings defaults = {
    .ttl = 3000,
    .stall_limit = 60000,
    .max_link_buffer = 16777216,
    .max_link_stanza = 1048576,
    .room_lease = 10000,
    .max_room_queue = 1000,
    .ready_timeout = 10000,
    .drain_rate = 100,
    .watch_timeout = 2000,
    .watch_idle = 600000,
};

static const struct pl_cluster_settings *S = &defaults;
static int started;
static int leaving;    /* cluster_stop ran: sessions end with the process */
static char self[200]; /* "<node>:<epoch>" */
static struct pl_timer beat_timer;
static uint64_t redis_up_ms; /* loop clock at the last connection */

/* This node's phase (doc/cluster.md, "Rolling restart"): starting (its
 * listeners held until it has linked with every live node), ready,
 * quiesced (listeners closed, sessions kept), draining (ending its
 * sessions, drain_rate a second, then stopping). */
enum phase {
    PH_STARTING,
    PH_READY,
    PH_QUIESCED,
    PH_DRAINING
};
static const char *const phase_names[] = {"starting", "ready", "quiesced",
                                          "draining"};
static enum phase phase;
static int polled; /* a Redis poll has listed the live nodes */
static struct pl_timer ready_timer, drain_timer;
static struct pl_map asked; /* full JIDs the drain has ended */
static long drain_total;    /* local sessions when the drain began */
static uint64_t drain_last; /* loop clock of the drain's last close */

const struct pl_cluster_settings *pl__cluster_settings(void)
{
    return S;
}

const char *pl__cluster_self(void)
{
    return self;
}

int pl__cluster_in_grace(void)
{
    return pl_loop_now(pl_server_loop()) < redis_up_ms + (uint64_t)S->ttl;
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
    {"stall_limit", PL_OPT_INT, "60000", 1000, 86400000, NULL,
     "Milliseconds the event loop may go without running before this node "
     "stops refreshing its liveness key (a thread refreshes it, so that a "
     "node short of CPU is not called dead) and the others call it dead.",
     OFF(stall_limit)},
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
    {"room_lease", PL_OPT_INT, "10000", 1000, 3600000, NULL,
     "Milliseconds a room's lease lives in Redis (the node hosting a MUC "
     "room renews it every ttl/3); at least ttl.  A dead node's rooms are "
     "taken over as soon as it is seen dead, the lease's end is a backstop.",
     OFF(room_lease)},
    {"max_room_queue", PL_OPT_INT, "1000", 1, 1000000, NULL,
     "Stanzas to one MUC room held while the node that hosts it is being "
     "decided (a Redis round trip and a database read); more get "
     "<resource-constraint/>.",
     OFF(max_room_queue)},
    {"ready_timeout", PL_OPT_INT, "10000", 0, 3600000, NULL,
     "Milliseconds a starting node keeps its listeners closed while it "
     "links with every live node (so that its users never see the others' "
     "users offline); after that it opens them anyway.  0: at once.",
     OFF(ready_timeout)},
    {"drain_rate", PL_OPT_INT, "100", 1, 1000000, NULL,
     "Sessions a draining node ends per second (parleyctl cluster drain, "
     "SIGUSR2, a rolling restart): their clients reconnect to the other "
     "nodes without a storm.",
     OFF(drain_rate)},
    {"watch_timeout", PL_OPT_INT, "2000", 10, 600000, NULL,
     "Milliseconds a stanza to an account this node does not watch yet "
     "waits for the nodes with sessions of it to send them (doc/cluster.md, "
     "\"Watches\"); then it is routed with what arrived.",
     OFF(watch_timeout)},
    {"watch_idle", PL_OPT_INT, "600000", 1000, 86400000, NULL,
     "Milliseconds an account this node watches is kept without a stanza "
     "routed to it, once it has no session here and no local account that "
     "sent it one is online; then the copies of its sessions go.",
     OFF(watch_idle)},
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
    if (s->room_lease < s->ttl) {
        snprintf(err, errlen,
                 "cluster.room_lease (%ld) must be at least cluster.ttl "
                 "(%ld): leases are renewed every ttl/3",
                 s->room_lease, s->ttl);
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
 * "a:<epoch> "), ARGV[2] key prefix of the hashes, ARGV[3] "1" to keep
 * the available ones: removes the entries the owner still has; returns
 * those that were available, full JID and priority after each other. */
static const char *const PURGE_SCRIPT =
    "local out = {} "
    "for _, full in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
    "local i = string.find(full, '/', 1, true) "
    "if i then "
    "local k = ARGV[2] .. string.sub(full, 1, i - 1) "
    "local r = string.sub(full, i + 1) "
    "local v = redis.call('HGET', k, r) "
    "local mine = v and string.sub(v, 1, #ARGV[1]) == ARGV[1] "
    "local p, a = nil, nil "
    "if mine then p, a = string.match(v, ' (%-?%d+) (%d)$') end "
    "if not (mine and a == '1' and ARGV[3] == '1') then "
    "if mine then redis.call('HDEL', k, r) "
    "if a == '1' then out[#out + 1] = full out[#out + 1] = p end end "
    "if not v or mine then redis.call('SREM', KEYS[1], full) end end "
    "end end return out";

/* The registry's entry of a local session. */
static void registry_entry(const struct pl_session *s, char *val, size_t len)
{
    snprintf(val, len, "%s %d %d", self, s->priority, s->available ? 1 : 0);
}

static void registry_put(struct pl_session *s)
{
    char val[256];
    registry_entry(s, val, sizeof(val));
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

/* fn gets PURGE_SCRIPT's reply (or NULL). */
static int purge_keep(const char *node, const char *owner, int keep,
                      pl__redis_fn *fn, void *ud)
{
    char hashes[128];
    snprintf(hashes, sizeof(hashes), "%ss:", S->prefix);
    return pl__redis_cmd(fn, ud, "EVAL %s 1 %sn:%s %s %s %s", PURGE_SCRIPT,
                         S->prefix, node, owner, hashes, keep ? "1" : "0");
}

static int purge(const char *node, const char *owner, pl__redis_fn *fn,
                 void *ud)
{
    return purge_keep(node, owner, 0, fn, ud);
}

/* A local session into the registry again, as at its login: a login
 * while Redis was away told no watcher (watch.c). */
static void put_one(struct pl_session *s, void *ud)
{
    (void)ud;
    if (s->jid && s->registered && !pl__link_is_remote(s)) {
        char val[256];
        registry_entry(s, val, sizeof(val));
        pl__watch_bound(s, val);
    }
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
        purge(name, owner, NULL, NULL);
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
                char addr[128], epoch[64], ph[16] = "";
                long count = -1;
                if (sscanf(v->str, "%127s %63s %15s %ld", addr, epoch, ph,
                           &count) >= 2) {
                    pl__link_node_alive(name, addr, epoch);
                    pl__link_node_phase(name, ph, count);
                }
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
        polled = 1;
        pl__cluster_check_ready();
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

static void drain_start(int end_sessions, const char *why);

/* An operator asked (through any node) that this incarnation stop
 * accepting or drain: <prefix>drain:<node> = "<epoch> quiesce|drain". */
static void on_drain_key(redisReply *r, void *ud)
{
    (void)ud;
    if (!started || !r || r->type != REDIS_REPLY_STRING)
        return;
    const char *epoch = strchr(self, ':') + 1;
    size_t el = strlen(epoch);
    if (strncmp(r->str, epoch, el) != 0 || r->str[el] != ' ')
        return; /* for an earlier incarnation of this name */
    const char *mode = r->str + el + 1;
    if (strcmp(mode, "drain") == 0 && phase != PH_DRAINING)
        drain_start(1, "asked through Redis");
    else if (strcmp(mode, "quiesce") == 0 && phase < PH_QUIESCED)
        drain_start(0, "asked through Redis");
}

/*
 * Presumed dead, and running: this node stalled past the TTL (SIGSTOP, a
 * swap storm, a VM paused) and its liveness key expired, so the others
 * called it dead: one of them purged its registry entries and told its
 * users' contacts they were unavailable, and that may still happen at
 * their next poll.  One TTL later (their polls are past) its entries go
 * back and each available session's presence goes out again, as if the
 * client had sent it: contacts see them available, the others' copies of
 * the sessions are refreshed.  The links came back meanwhile (the others
 * see its key again), routing needs no more.
 */
static struct pl_timer revive_timer;

struct ids {
    uint64_t *v;
    size_t n;
};

static void id_one(struct pl_session *s, void *ud)
{
    struct ids *ids = ud;
    if (s->jid && !pl__link_is_remote(s))
        ids->v[ids->n++] = s->id;
}

static void revive(struct pl_timer *t)
{
    (void)t;
    if (!started)
        return;
    struct ids ids = {pl_calloc(pl_session_count() + 1, sizeof(uint64_t)), 0};
    pl_session_each(id_one, &ids);
    size_t again = 0;
    for (size_t i = 0; i < ids.n; i++) {
        struct pl_session *s = pl_session_by_id(ids.v[i]);
        if (!s || !s->jid || !s->registered)
            continue;
        registry_put(s);
        if (!s->available || !s->presence || !s->host)
            continue;
        /* mod_presence broadcasts it, on_broadcast tells the nodes. */
        struct pl_stanza *st = pl_stanza_ref(s->presence);
        struct pl_event ev =
            {"presence/broadcast", s->host, s, st, s->jid, NULL, NULL};
        pl_hook_fire(&ev);
        pl_stanza_unref(st);
        again++;
    }
    pl_free(ids.v);
    pl_log_info("cluster",
                "node %s is back: %zu sessions in the registry again, %zu "
                "presences sent again",
                S->node, ids.n, again);
}

/*
 * The loop's beat (ttl/3) running late says the loop is busy or the
 * process starved of CPU: logged when more than ttl/3 late, at most once
 * per ttl.  The liveness key does not depend on it (live.c), but the
 * polls, room leases and drain requests do.
 */
static uint64_t beat_due_ms; /* when the beat was planned */
static uint64_t slow_logged_ms;

/* live.c found the key expired while this process ran. */
void pl__cluster_presumed_dead(void)
{
    if (!started || pl_timer_active(&revive_timer))
        return;
    pl_log_warn("cluster",
                "node %s was presumed dead (its key expired: a stall past "
                "cluster.ttl): its sessions are announced again in %ld ms",
                S->node, S->ttl);
    pl_timer_start(pl_server_loop(), &revive_timer, (uint64_t)S->ttl);
}

static long local_count(void);

static void beat(struct pl_timer *t)
{
    (void)t;
    if (!started)
        return;
    uint64_t now = pl_loop_now(pl_server_loop());
    uint64_t late = t && beat_due_ms && now > beat_due_ms ? now - beat_due_ms
                                                          : 0;
    if (late > (uint64_t)S->ttl / 3 &&
        (!slow_logged_ms || now - slow_logged_ms >= (uint64_t)S->ttl)) {
        slow_logged_ms = now;
        pl_log_warn("cluster",
                    "liveness refresh: the loop ran it late by %llu ms "
                    "(cluster.ttl %ld)",
                    (unsigned long long)late, S->ttl);
    }
    /* The key itself: live.c's thread, told the value and that the loop
     * runs. */
    char key[512], val[256];
    snprintf(key, sizeof(key), "%snode:%s", S->prefix, S->node);
    snprintf(val, sizeof(val), "%s %s %s %ld", S->link, strchr(self, ':') + 1,
             phase_names[phase], local_count());
    pl__live_set(key, val, S->ttl);
    if (pl__redis_is_up()) {
        pl__redis_cmd(NULL, NULL, "SADD %snodes %s", S->prefix, S->node);
        pl__redis_cmd(on_drain_key, NULL, "GET %sdrain:%s", S->prefix, S->node);
        pl__redis_cmd(on_members, NULL, "SMEMBERS %snodes", S->prefix);
        pl__rooms_renew();
    }
    /* Rooms that waited for the grace ask now (or, Redis down, fail). */
    pl__rooms_tick();
    beat_due_ms = now + (uint64_t)S->ttl / 3;
    pl_timer_start(pl_server_loop(), &beat_timer, (uint64_t)S->ttl / 3);
}

/* Connected (again): a clean slate for this node's entries, then all of
 * them (Redis may have restarted empty), then the liveness key. */
static void on_redis_up(void)
{
    redis_up_ms = pl_loop_now(pl_server_loop());
    pl__live_reset(); /* a Redis that restarted empty has no key of ours */
    char owner[128];
    snprintf(owner, sizeof(owner), "%s:", S->node);
    purge(S->node, owner, NULL, NULL);
    pl_session_each(put_one, NULL);
    pl__watch_redis_up();
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

/* The dead node's entries are gone: this node announces its users that
 * were available unavailable, as if their sessions had closed here
 * (this node may hold copies of few of them: the registry lists them
 * all): mod_presence tells their contacts, wherever they are (directed
 * presence is lost). */
static void closed_event(struct pl_session *s)
{
    struct pl_event ev = {"session/closed", s->host, s,   NULL,
                          s->jid,           NULL,    NULL};
    pl_hook_fire(&ev);
}

static void on_purged(redisReply *r, void *ud)
{
    struct gone *g = ud;
    int n = 0;
    struct pl_map seen = {0};
    /* The copies held here first (the registry may have lost entries to
     * a restarted incarnation's own purge), then the rest. */
    for (int i = 0; started && r && i < g->n; i++) {
        struct pl_session *s = g->v[i];
        if (!s->available || !s->host || pl_map_get(&seen, s->jid->full))
            continue;
        pl_map_put(&seen, s->jid->full, (void *)1);
        closed_event(s);
        n++;
    }
    for (size_t i = 0;
         started && r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements;
         i += 2) {
        redisReply *f = r->element[i], *p = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || pl_map_get(&seen, f->str))
            continue;
        struct pl_session *s = pl__link_ghost(f->str,
                                              p->type == REDIS_REPLY_STRING
                                                  ? atoi(p->str)
                                                  : 0);
        if (!s)
            continue;
        n++;
        closed_event(s);
        pl__link_remote_free(s);
    }
    pl_map_clear(&seen);
    if (r)
        pl_log_info("cluster",
                    "node %s is dead: %d sessions announced unavailable, "
                    "its registry entries purged",
                    g->name, n);
    gone_free(g);
}

static void on_purge_lock(redisReply *r, void *ud)
{
    struct gone *g = ud;
    if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0 &&
        started) {
        char owner[256];
        snprintf(owner, sizeof(owner), g->epoch ? "%s:%s " : "%s:", g->name,
                 g->epoch ? g->epoch : "");
        if (purge(g->name, owner, on_purged, g) == PL_OK)
            return; /* on_purged frees g */
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

/* ---- phases: starting, ready, quiesced, draining ---- */

static void become_ready(const char *why)
{
    if (phase != PH_STARTING)
        return;
    pl_timer_stop(&ready_timer);
    phase = PH_READY;
    pl_log_info("cluster", "node %s ready (%s): opening the listeners", S->node,
                why);
    if (pl_listen_release() != PL_OK) {
        pl_log_error("cluster", "the listeners cannot open: stopping");
        pl_loop_stop(pl_server_loop());
        return;
    }
    pl_supervise_ready();
    beat(NULL); /* the others see the phase at their next poll */
}

void pl__cluster_check_ready(void)
{
    if (started && phase == PH_STARTING && polled && !pl__link_unlinked())
        become_ready("linked with every live node");
}

static void on_ready_timeout(struct pl_timer *t)
{
    (void)t;
    if (phase != PH_STARTING)
        return;
    pl_log_warn("cluster",
                "not linked with %d live nodes after %ld ms "
                "(cluster.ready_timeout): listeners open anyway",
                polled ? pl__link_unlinked() : -1, S->ready_timeout);
    become_ready("ready_timeout");
}

/* The drain's list: full JIDs of the local sessions (a snapshot, taken
 * again when it is used up), walked drain_rate a second. */
struct todo {
    char **v;
    size_t n, at;
};
static struct todo todo;

static void todo_free(void)
{
    for (size_t i = 0; i < todo.n; i++)
        pl_free(todo.v[i]);
    pl_free(todo.v);
    memset(&todo, 0, sizeof(todo));
}

static int closable(const struct pl_session *s)
{
    return s && s->jid && !pl__link_is_remote(s) && s->ops && s->ops->close;
}

static void todo_one(struct pl_session *s, void *ud)
{
    (void)ud;
    if (closable(s) && !pl_map_get(&asked, s->jid->full))
        todo.v[todo.n++] = pl_strdup(s->jid->full);
}

/* A snapshot of the local sessions not yet asked to end; how many. */
static size_t todo_take(void)
{
    todo_free();
    todo.v = pl_calloc(pl_session_count() + 1, sizeof(char *));
    pl_session_each(todo_one, NULL);
    return todo.n;
}

static void count_closable(struct pl_session *s, void *ud)
{
    if (closable(s))
        (*(long *)ud)++;
}

/* Ends the next sessions, at most drain_rate a second; stops the node
 * once none is left (or 5 s after the last was asked to end). */
static void drain_tick(struct pl_timer *t)
{
    (void)t;
    long every = S->drain_rate >= 10 ? 100 : 1000 / S->drain_rate;
    long quota = S->drain_rate >= 10 ? S->drain_rate / 10 : 1;
    uint64_t now = pl_loop_now(pl_server_loop());
    long done = 0;
    int took = 0; /* one snapshot a tick at most */
    while (done < quota) {
        if (todo.at >= todo.n && (took++ || todo_take() == 0))
            break;
        const char *full = todo.v[todo.at++];
        struct pl_session *s = pl_session_by_full(full);
        if (!closable(s) || pl_map_get(&asked, full))
            continue; /* ended meanwhile */
        pl_map_put(&asked, full, (void *)1);
        /* RFC 6120 §4.9.3.20: the stream ends because this server
         * process stops; the client reconnects, to another process. */
        s->ops->close(s, "system-shutdown", NULL);
        drain_last = now;
        done++;
    }
    if (done == 0) {
        long left = 0;
        pl_session_each(count_closable, &left);
        if (left == 0 || now >= drain_last + 5000) {
            pl_log_info("cluster",
                        "node %s drained: %ld sessions ended (%ld still "
                        "closing): stopping",
                        S->node, (long)asked.count, left);
            todo_free();
            pl_loop_stop(pl_server_loop());
            return;
        }
    }
    pl_timer_start(pl_server_loop(), &drain_timer, (uint64_t)every);
}


/* Stops accepting (the listeners close: with SO_REUSEPORT, or behind a
 * load balancer that checks the port, new connections go to the other
 * nodes), and with end_sessions ends the sessions, paced, then stops. */
static void drain_start(int end_sessions, const char *why)
{
    if (!started || phase == PH_DRAINING)
        return;
    pl_timer_stop(&ready_timer);
    if (phase != PH_QUIESCED) {
        if (pl_listen_held())
            pl_log_info("cluster", "node %s never opened its listeners",
                        S->node);
        else
            pl_listen_close_all();
        phase = PH_QUIESCED;
        pl_log_info("cluster",
                    "node %s quiesced (%s): accepts no new "
                    "connection",
                    S->node, why);
    }
    if (end_sessions) {
        phase = PH_DRAINING;
        drain_total = local_count();
        drain_last = pl_loop_now(pl_server_loop());
        pl_log_info("cluster",
                    "node %s draining (%s): %ld sessions, %ld a second",
                    S->node, why, drain_total, S->drain_rate);
        pl_timer_start(pl_server_loop(), &drain_timer, 0);
    }
    if (pl__redis_is_up())
        beat(NULL); /* the others see the phase now */
}

static void on_quiesce_signal(struct pl_loop *loop, int signo, void *data)
{
    (void)loop;
    (void)data;
    (void)signo;
    drain_start(0, "signal from the supervisor");
}

static void on_drain_signal(struct pl_loop *loop, int signo, void *data)
{
    (void)loop;
    (void)data;
    (void)signo;
    drain_start(1, "SIGUSR2");
}

/* ---- this node's sessions ---- */

static int on_bound(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_session *s = ev->session;
    if (!s || !s->jid || pl__link_is_remote(s))
        return PL_PASS;
    char val[256];
    registry_entry(s, val, sizeof(val));
    pl__watch_bound(s, val); /* the registry; the watchers */
    pl__link_announce_up(s, 0);
    return PL_PASS;
}

static int on_closed(struct pl_event *ev, void *state)
{
    (void)state;
    struct pl_session *s = ev->session;
    if (!s || !s->jid || pl__link_is_remote(s) || leaving)
        return PL_PASS; /* leaving: the survivor's purge announces it */
    /* Replaced by a newer session of this node (RFC 6120 §7.7.2.2): that
     * one was announced already and owns the entry. */
    struct pl_session *o = pl_session_by_full(s->jid->full);
    if (o && o != s && !pl__link_is_remote(o))
        return PL_PASS;
    registry_del(s);
    pl__link_announce_down(s);
    pl__watch_closed(s);
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

static int on_data_changed(struct pl_event *ev, void *state)
{
    (void)state;
    if (ev->data)
        pl__link_announce_change(ev->data);
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

static long local_count(void)
{
    long n = 0;
    pl_session_each(count_local, &n);
    return n;
}

static json_t *refuse(const char *cond, const char *detail)
{
    return json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cond, "detail",
                     detail);
}

/* {"op": "cluster", "drain" | "quiesce": NODE}: this node at once,
 * another one through Redis (it reads its key at its next poll, within
 * ttl/3 ms). */
static json_t *admin_drain(const char *node, const char *mode)
{
    int end = strcmp(mode, "drain") == 0;
    if (strcmp(node, S->node) == 0) {
        drain_start(end, "asked by an operator");
        return json_pack("{s:b, s:s, s:s}", "ok", 1, "node", node, "phase",
                         phase_names[phase]);
    }
    const char *epoch = pl__link_epoch(node);
    if (!epoch)
        return refuse("item-not-found", "no live node of that name");
    if (!pl__redis_is_up())
        return refuse("service-unavailable", "Redis is not connected");
    char val[128];
    snprintf(val, sizeof(val), "%s %s", epoch, mode);
    pl__redis_cmd(NULL, NULL, "SET %sdrain:%s %s PX %ld", S->prefix, node, val,
                  86400000L);
    return json_pack("{s:b, s:s, s:s}", "ok", 1, "node", node, "requested",
                     mode);
}

/* The admin operation "cluster" (parleyctl cluster, GET /api/cluster,
 * /metrics): this node (with the MUC rooms it hosts), then every node it
 * knows, as seen from here. */
static json_t *admin_cluster(json_t *req)
{
    const char *drain = json_string_value(json_object_get(req, "drain"));
    const char *quiesce = json_string_value(json_object_get(req, "quiesce"));
    int restart = json_is_true(json_object_get(req, "restart"));
    if (!started)
        return (drain || quiesce || restart)
                   ? refuse("service-unavailable",
                            "the cluster is off (cluster.enable)")
                   : json_pack("{s:b, s:b}", "ok", 1, "enabled", 0);
    if (drain || quiesce)
        return admin_drain(drain ? drain : quiesce,
                           drain ? "drain" : "quiesce");
    if (restart) {
        /* The supervisor does it (SIGUSR2, src/core/supervise.c). */
        pid_t sup = pl_supervisor_pid();
        if (!sup)
            return refuse("feature-not-implemented",
                          "not a process of a supervisor (server.processes "
                          "> 1): restart the nodes one by one with "
                          "parleyctl cluster drain");
        kill(sup, SIGUSR2);
        return json_pack("{s:b, s:s}", "ok", 1, "restart", "requested");
    }
    json_t *a = json_pack("{s:b, s:b, s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:o}",
                          "ok", 1, "enabled", 1, "node", S->node, "epoch",
                          strchr(self, ':') + 1, "link", S->link, "redis",
                          S->redis, "redis_connected", pl__redis_is_up(),
                          "sessions", (json_int_t)local_count(), "rooms",
                          (json_int_t)pl__rooms_hosted(), "nodes",
                          pl__link_json());
    json_object_set_new(a, "phase", json_string(phase_names[phase]));
    json_object_set_new(a, "copies",
                        json_integer((json_int_t)pl__link_copies()));
    json_t *w = pl__watch_json();
    json_object_update(a, w);
    json_decref(w);
    if (pl_config_process() >= 0)
        json_object_set_new(a, "process", json_integer(pl_config_process()));
    return a;
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
        pl_hook_add(h, "user/data-changed", on_data_changed, 10000, NULL);
        pl_hook_add(h, "iq-get/bare/jabber:iq:roster:query", on_roster_get,
                    10000, NULL);
    }
    pl__rooms_start(c);
    pl__watch_start(c);
    started = 1;
    leaving = 0;
    phase = PH_STARTING;
    polled = 0;
    pl_timer_init(&beat_timer, beat, NULL);
    pl_timer_init(&revive_timer, revive, NULL);
    beat_due_ms = slow_logged_ms = 0;
    pl_timer_init(&ready_timer, on_ready_timeout, NULL);
    pl_timer_init(&drain_timer, drain_tick, NULL);
    pl_loop_on_signal(pl_server_loop(), SIGUSR2, on_drain_signal, NULL);
    pl_loop_on_signal(pl_server_loop(), PL_SIG_QUIESCE, on_quiesce_signal,
                      NULL);
    if (S->ready_timeout > 0) {
        /* Its users must not see the other nodes' users offline: no
         * client until it has linked with every live node. */
        pl_listen_hold();
        pl_timer_start(pl_server_loop(), &ready_timer,
                       (uint64_t)S->ready_timeout);
    }
    long retry = S->ttl / 3;
    if (pl__redis_start(S->redis, retry, on_redis_up) != PL_OK ||
        pl__live_start(S->redis, S->stall_limit) != PL_OK)
        return PL_EINVAL;
    pl_log_info("cluster", "node %s (%s), links on %s, redis %s", S->node, self,
                S->link, S->redis);
    if (S->ready_timeout <= 0)
        become_ready("cluster.ready_timeout = 0");
    return PL_OK;
}

static void cluster_stop(void)
{
    if (!started)
        return;
    leaving = 1;
    pl__rooms_stop();
    pl__live_stop(); /* no refresh after the DEL */
    /* Leaving: the others see it at their next poll, not after the TTL. */
    if (pl__redis_is_up()) {
        pl__redis_cmd(NULL, NULL, "DEL %snode:%s", S->prefix, S->node);
        char owner[256];
        snprintf(owner, sizeof(owner), "%s ", self);
        /* The available ones stay for the survivor that purges them (at
         * its next poll): it announces them unavailable to their
         * contacts, which this node, its links closing, cannot. */
        purge_keep(S->node, owner, 1, NULL, NULL);
    }
    pl_timer_stop(&beat_timer);
    pl_timer_stop(&revive_timer);
    pl_timer_stop(&ready_timer);
    pl_timer_stop(&drain_timer);
    todo_free();
    pl__watch_stop();
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
          n->stall_limit != S->stall_limit ||
          n->max_link_buffer != S->max_link_buffer ||
          n->max_link_stanza != S->max_link_stanza ||
          n->room_lease != S->room_lease ||
          n->max_room_queue != S->max_room_queue ||
          n->ready_timeout != S->ready_timeout ||
          n->drain_rate != S->drain_rate ||
          n->watch_timeout != S->watch_timeout ||
          n->watch_idle != S->watch_idle)))
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
    pl_map_clear(&asked);
    pl__redis_stop();
    pl__rooms_free();
    pl__link_free();
    pl__watch_free();
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
