/*
 * cluster_int.h - what the files of src/cluster/ share (doc/cluster.md).
 *
 *   cluster.c  pl_mod_cluster: the `cluster` options, lifetime, node
 *              liveness and the session registry in Redis, the hooks
 *              that announce this node's sessions
 *   redis.c    hiredis's asynchronous API on our loop (loop.h)
 *   link.c     node-to-node links (an XML stream each way) and the
 *              remote sessions (struct pl_session whose transport is a
 *              link) that make other nodes' users routable here
 *   rooms.c    MUC rooms: one node hosts each, holding its lease in
 *              Redis; the others forward the room's stanzas to it
 *   live.c     the liveness key, refreshed by a thread of its own
 *   watch.c    which accounts this node keeps other nodes' sessions of
 *              (its users' and those stanzas were routed to)
 */
#ifndef PL_CLUSTER_INT_H
#define PL_CLUSTER_INT_H

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "hook.h"
#include "map.h"
#include "resources.h"

struct pl_config;

struct pl_cluster_settings {
    int enable;           /* off: one process, as without the module */
    char *node;           /* this node's name */
    char *redis;          /* "ip:port" or a Unix socket path */
    char *link;           /* "ip:port" this node listens on for links */
    long ttl;             /* liveness key TTL, ms */
    long stall_limit;     /* ms without the loop before the key expires */
    char *prefix;         /* Redis key prefix */
    char *secret;         /* what a link's header must carry */
    long max_link_buffer; /* bytes queued toward one node */
    long max_link_stanza; /* bytes of one element read from a link */
    long room_lease;      /* ms a room's lease lives; renewed every ttl/3 */
    long max_room_queue;  /* stanzas held per room while its host is asked */
    long ready_timeout;   /* ms a starting node waits for its links */
    long drain_rate;      /* sessions a draining node ends per second */
    long watch_timeout;   /* ms a stanza waits for the nodes asked */
    long watch_idle;      /* ms a watch nobody uses lasts */
};

const struct pl_cluster_settings *pl__cluster_settings(void);
/* This process's incarnation ("<node>:<epoch>"), unique per start. */
const char *pl__cluster_self(void);
/* Whether Redis (re)connected less than ttl ms ago: the other nodes may
 * not have written their keys again yet. */
int pl__cluster_in_grace(void);

/* ---- redis.c ---- */

/* Called with the reply (borrowed), or NULL when the command failed or the
 * connection went away before its answer. */
typedef void pl__redis_fn(redisReply *r, void *ud);
/* Connects to addr and keeps reconnecting (every retry_ms) while it is
 * lost; on_up runs after each successful connection. */
int pl__redis_start(const char *addr, long retry_ms, void (*on_up)(void));
/* "ip:port", "[ipv6]:port" or a Unix socket path: host and port, or path
 * (the others NULL, 0); new strings.  PL_EINVAL without a port. */
int pl__redis_addr(const char *addr, char **host, int *port, char **path);
void pl__redis_stop(void);
int pl__redis_is_up(void);
/* Queues a command (hiredis format); PL_ECLOSED when not connected (fn is
 * then not called).  fn may be NULL. */
int pl__redis_cmd(pl__redis_fn *fn, void *ud, const char *fmt, ...);
int pl__redis_cmdv(pl__redis_fn *fn, void *ud, int argc, const char **argv);

/* ---- live.c ---- */

/* Starts the thread that refreshes this node's liveness key, on a Redis
 * connection of its own to addr. */
int pl__live_start(const char *addr, long stall_limit_ms);
/* From the loop's beat: the key and its value (link, epoch, phase), and
 * that the loop runs; a changed value is written at once. */
void pl__live_set(const char *key, const char *val, long ttl_ms);
/* Redis (re)connected: a key found missing next is not a stall. */
void pl__live_reset(void);
/* Stops refreshing and ends the thread (before the key is deleted). */
void pl__live_stop(void);
/* cluster.c, for live.c (on the loop): the key had expired while this
 * process ran: the others called it dead. */
void pl__cluster_presumed_dead(void);

/* ---- link.c ---- */

/* Opens the link listener on S->link. */
int pl__link_listen(const char *addr);
/* A node alive in Redis (addr, epoch): connects to it if not yet. */
void pl__link_node_alive(const char *name, const char *addr, const char *epoch);
/* A node whose liveness key is gone (or that restarted as a new epoch):
 * its remote sessions leave the table; dead_fn gets each one that was
 * available, when this node won the right to announce it. */
void pl__link_node_dead(const char *name);
/* Frees a remote session pl__cluster_node_gone was given. */
void pl__link_remote_free(struct pl_session *s);
/* Names of the nodes seen in Redis (for the poll), NULL-ended, to free with
 * pl__link_names_free. */
char **pl__link_names(void);
void pl__link_names_free(char **v);
/* A local session's state changed: tells the nodes watching its account
 * (interested forces the interested flag: a roster request is on its
 * way). */
void pl__link_announce_up(struct pl_session *s, int interested);
void pl__link_announce_down(struct pl_session *s);
/* A module changed an account's data ("user/data-changed"): tells every
 * node, whose copy of the module hears "user/data-changed-elsewhere". */
void pl__link_announce_change(const struct pl_data_change *c);
/* A session with this full JID left the table: another node's session
 * of that JID (kept out by it) takes its place. */
void pl__link_reregister(const char *full);
/* Sends st (borrowed) to node `name` to be routed there again (a room
 * it hosts); PL_ECLOSED when its link is not up. */
int pl__link_forward(const char *name, struct pl_stanza *st);
/* How many nodes seen alive in Redis are not linked both ways yet. */
int pl__link_unlinked(void);
/* The phase a node announces in Redis ("ready", "draining"...) and how
 * many sessions it has. */
void pl__link_node_phase(const char *name, const char *phase, long sessions);
/* The epoch of a node seen alive in Redis, or NULL. */
const char *pl__link_epoch(const char *name);
/* <c:watch bare=/> to node `name`: PL_ECLOSED unless linked both ways. */
int pl__link_send_watch(const char *name, const char *bare);
/* To node `name`: a <c:up/> per local session of bare, then (marker)
 * <c:watched bare=/>. */
void pl__link_send_ups(const char *name, const char *bare, int marker);
/* <c:close to=full cond=/> to node `name`: it ends its session. */
void pl__link_send_close(const char *name, const char *full, const char *cond);
/* <c:unwatch bare=/> to every node. */
void pl__link_send_unwatch(const char *bare);
/* Forgets the copies of the sessions of the accounts in `bares` (keys). */
void pl__link_drop_bares(const struct pl_map *bares);
/* Remote sessions held here (copies of other nodes' sessions). */
unsigned long pl__link_copies(void);
/* A dead node's available session, rebuilt from the registry to be
 * announced unavailable (free with pl__link_remote_free), or NULL. */
struct pl_session *pl__link_ghost(const char *full, int priority);
/* Whether s is a remote session (another node's user). */
int pl__link_is_remote(const struct pl_session *s);
void pl__link_stop(void);
unsigned long pl__link_count(void);
void pl__link_free(void);
/* Every node known here, alive (with its links' figures) or dead, as a
 * new JSON array (the admin operation "cluster", doc/cluster.md). */
json_t *pl__link_json(void);

/* cluster.c, for link.c: a dead node's sessions were taken out of the
 * table; announce them unavailable if this node wins the purge. */
void pl__cluster_node_gone(const char *name, const char *epoch,
                           struct pl_session **v, int n);
/* cluster.c, for link.c: a node's links are up; a starting node opens
 * its listeners once every live node is linked (doc/cluster.md). */
void pl__cluster_check_ready(void);

/* ---- watch.c ---- */

/* Before mod_blocking (1000) and the SIP front end (2000): the account's
 * sessions are known when they look. */
#define PL_WATCH_PRIORITY 3000

/* Hooks the routing events of every host. */
void pl__watch_start(struct pl_config *c);
/* Whether this node watches bare (its copies are wanted). */
int pl__watch_wants(const char *bare);
/* A local session bound: registry entry `entry`, watchers told. */
void pl__watch_bound(struct pl_session *s, const char *entry);
/* A local session ended (after its <c:down/>). */
void pl__watch_closed(struct pl_session *s);
/* From the links: node asks for bare's sessions; answered; stopped. */
void pl__watch_requested(const char *node, const char *bare);
void pl__watch_answered(const char *node, const char *bare);
void pl__watch_unwatched(const char *node, const char *bare);
/* The nodes watching local account bare. */
int pl__watchers_has(const char *bare, const char *node);
void pl__watchers_each(const char *bare, void (*fn)(const char *node, void *ud),
                       void *ud);
/* A node's links went down or it died: no answer is awaited from it. */
void pl__watch_node_gone(const char *node);
/* Redis (re)connected: our watches into its sets again. */
void pl__watch_redis_up(void);
void pl__watch_stop(void);
void pl__watch_free(void);
/* {"watches", "watched_here", "parked"} for operators. */
json_t *pl__watch_json(void);

/* ---- rooms.c ---- */

/* Hooks the room services of every host (cluster enabled). */
void pl__rooms_start(struct pl_config *c);
/* Every ttl/3: renews the leases held here, asks for those that waited
 * for the end of the grace. */
void pl__rooms_renew(void);
void pl__rooms_tick(void);
/* A node is dead: the rooms it hosted are free again; their occupants on
 * this node get an unavailable presence with status 332. */
void pl__rooms_node_dead(const char *name);
/* st (a presence) reached local session s through a link: notes s in or
 * out of a room hosted elsewhere (its self-presence, status 110). */
void pl__rooms_seen(struct pl_session *s, struct pl_stanza *st);
/* Clean stop: occupants of the rooms hosted here told, leases deleted. */
void pl__rooms_stop(void);
void pl__rooms_free(void);
/* MUC rooms hosted here (parleyctl cluster). */
long pl__rooms_hosted(void);

#endif
