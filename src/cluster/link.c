/*
 * link.c - node-to-node links and remote sessions (doc/cluster.md).
 *
 * Each node listens on cluster.link and connects to every other node it
 * finds alive in Redis: a link carries one direction, from the node that
 * connected, as an XML stream whose default namespace is jabber:client
 * (a stanza goes out in the very bytes a client stream would carry, the
 * cached serialization) with control elements in urn:parley:cluster:
 *
 *   <stream xmlns='jabber:client' xmlns:c='urn:parley:cluster' node= epoch=
 *           secret=>
 *   <c:up jid= prio= avail= int= [p='1']/> [<presence/>]  a session's state
 *   <c:down jid=/>                                         it ended
 *   <c:d to= h=/> <message|presence|iq/>                   deliver to `to`
 *   <c:d to= h= r='1'/> <message|presence|iq/>             route it (a room
 *                                                          hosted here)
 *   <c:close to= cond=/>                                   end it (conflict)
 *   <c:changed mod= jid=>text</c:changed>                  a module changed
 *                                                          an account's data
 *   <c:watch bare=/>       send me the sessions of bare, and every change
 *   <c:watched bare=/>     that was all of them (after their <c:up/>)
 *   <c:unwatch bare=/>     no more changes of bare
 *
 * The other direction of the connection carries acknowledgements, <a n=/>
 * (stanzas of <c:d/> handled so far); the sender keeps each stanza until
 * then, and routes again what a node that went away did not acknowledge.
 *
 * A node sends another the sessions of the accounts that node watches
 * (watch.c): on connecting, then every change.  The receiver keeps, per
 * node, a struct remote for each: a
 * struct pl_session whose transport (struct pl_session_ops) writes to that
 * node's link.  While both directions with a node are up, its remote
 * sessions are in the session table (resources.h), so the router, presence,
 * rosters and offline storage serve them as they serve local ones, with no
 * cluster code in them: a message to a bare JID picks the highest priority
 * among local and remote resources (RFC 6121 §8.5.2), a presence broadcast
 * reaches contacts wherever they are, roster pushes go to every interested
 * resource.  When either direction drops, they leave the table: stanzas for
 * those users then take the offline path.  The receiver of <c:d/> hands the
 * stanza to its local session through its output filters (no routing
 * again); a session gone meanwhile gets it routed as the router would for
 * an unknown resource, at most once more (the h count).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "alloc.h"
#include "cluster_int.h"
#include "conn.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "router.h"
#include "server.h"
#include "xml.h"

#define NS_CLUSTER "urn:parley:cluster"
/* A stanza from a link is routed again at most this many times. */
#define MAX_HOPS 1

struct node;

/* Another node's session. */
struct remote {
    struct pl_session sess; /* first: the ops get &sess */
    struct node *node;      /* NULL once its node is gone */
    unsigned interested : 1;
};

struct link_in;

struct node {
    char *name;
    char *addr;            /* link address announced in Redis, or NULL */
    char *epoch;           /* incarnation, from Redis or the link header */
    struct pl_map remotes; /* full JID -> struct remote */
    int attached;          /* remotes are in the session table */
    int fd;                /* outgoing connect in progress, else -1 */
    struct pl_io cio;
    struct pl_conn *out; /* our link to it, once connected */
    struct link_in *in;  /* its link to us, after its header */
    int warned;          /* "cannot connect" logged */
    /* Stanzas written to out and not yet acknowledged, oldest first. */
    struct pending *head, *tail;
    uint64_t sent;              /* <c:d/> frames on this connection */
    size_t pending_bytes;       /* their serialized size */
    struct pl_xml_parser *acks; /* what comes back on out */
    char **snap;                /* full JIDs still to announce on out */
    size_t nsnap, snap_at;
    /* For operators (pl__link_json): */
    size_t npending;      /* stanzas in head..tail */
    uint64_t acked;       /* the last acknowledged count on out */
    uint64_t probe_seq;   /* a stanza whose acknowledgement is timed */
    uint64_t probe_us;    /* when it was written (monotonic) */
    int64_t rtt_us;       /* last write-to-acknowledgement time, -1 */
    uint64_t sent_before; /* <c:d/> on earlier connections */
    uint64_t got_before;  /* received on earlier connections */
    int64_t seen_ms;      /* wall clock when Redis last listed it alive */
    char phase[16];       /* what it announces: "ready", "draining"... */
    long sessions;        /* how many sessions it announces, -1: unknown */
    struct node *next;
};

/* A node that died (for operators), until it comes back. */
struct grave {
    char *name, *addr, *epoch;
    int64_t died_ms; /* wall clock */
    struct grave *next;
};

struct pending {
    uint64_t seq;         /* its number on the connection, from 1 */
    struct pl_stanza *st; /* held */
    size_t size;
    uint64_t ms; /* loop clock when written */
    struct pending *next;
};

enum expect {
    X_NONE,
    X_PRESENCE, /* after <c:up p='1'/> */
    X_STANZA,   /* after <c:d/> */
};

struct link_in {
    struct pl_conn *conn;
    struct pl_xml_parser *xml;
    struct node *node; /* after the header */
    enum expect expect;
    char *jid; /* X_PRESENCE: whose; X_STANZA: to whom */
    int hops;
    int route;      /* X_STANZA: route it again (r='1': a room hosted here) */
    uint64_t got;   /* <c:d/> stanzas handled */
    uint64_t acked; /* the last count sent back */
    struct link_in *prev, *next;
};

static struct node *nodes;
static struct grave *graves;
static struct link_in *ins;
static int listen_fd = -1;
/* Set once the node leaves: a Redis answer still on its way must not
 * open a link again. */
static int stopping;
static struct pl_io listen_io;
static unsigned long nconns;
static int cur_hops; /* hops of the stanza being routed from a link */

static const struct pl_session_ops remote_ops;

int pl__link_is_remote(const struct pl_session *s)
{
    return s->elsewhere; /* set on every session made with remote_ops */
}

/* ---- addresses ---- */

static int parse_addr(const char *addr, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1])
        return PL_EINVAL;
    char host[64];
    size_t n = (size_t)(colon - addr);
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
        addr++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(host))
        return PL_EINVAL;
    memcpy(host, addr, n);
    host[n] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return PL_EINVAL;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
    } else {
        return PL_EINVAL;
    }
    return PL_OK;
}

static struct pl_conn_limits link_limits(void)
{
    const struct pl_cluster_settings *S = pl__cluster_settings();
    struct pl_conn_limits lim = {(size_t)S->max_link_buffer, (size_t)1 << 40,
                                 (size_t)1 << 40};
    return lim;
}

/* ---- remote sessions ---- */

static struct node *node_find(const char *name)
{
    for (struct node *n = nodes; n; n = n->next)
        if (strcmp(n->name, name) == 0)
            return n;
    return NULL;
}

static void remote_free(struct remote *r)
{
    pl_session_unregister(&r->sess); /* out of the table and the ids */
    if (r->sess.host) {
        /* Modules free what session/import gave it (never bound here:
         * no session/closed, which would announce it unavailable). */
        struct pl_event ev = {"session/dropped", r->sess.host, &r->sess, NULL,
                              r->sess.jid,       NULL,         NULL};
        pl_hook_fire(&ev);
    }
    pl_stanza_unref(r->sess.presence);
    pl_jid_free(r->sess.jid);
    pl_free(r);
}

static void remote_free_deferred(void *p)
{
    remote_free(p);
}

void pl__link_remote_free(struct pl_session *s)
{
    if (s)
        remote_free((struct remote *)s);
}

/* Enters r in the table; a local session or another node's with the same
 * full JID keeps its place (the owner of the newer one closes the other). */
static void remote_register(struct remote *r)
{
    if (r->sess.registered || !r->node || !r->node->attached)
        return;
    if (pl_session_register(&r->sess, INT_MAX) != PL_OK)
        pl_log_info("cluster", "%s on node %s: the JID is taken here",
                    r->sess.jid->full, r->node->name);
}

/* After a session with this full JID left the table: another node's may
 * take its place. */
void pl__link_reregister(const char *full)
{
    if (pl_session_by_full(full))
        return;
    for (struct node *n = nodes; n; n = n->next) {
        struct remote *r = pl_map_get(&n->remotes, full);
        if (r && n->attached) {
            remote_register(r);
            return;
        }
    }
}

static void remote_unregister(struct remote *r)
{
    if (!r->sess.registered)
        return;
    pl_session_unregister(&r->sess);
    /* pl_session_unregister forgets the id too: a new one for a later
     * register (pl_session_by_id must find it again). */
    pl_session_init(&r->sess);
}

struct collect {
    struct remote **v;
    int n;
};

static void collect_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct collect *c = ud;
    c->v[c->n++] = value;
}

/* The node's remotes as an array (to free). */
static struct remote **remotes_of(struct node *n, int *count)
{
    struct collect c = {pl_calloc(n->remotes.count + 1, sizeof(void *)), 0};
    pl_map_each(&n->remotes, collect_one, &c);
    *count = c.n;
    return c.v;
}

static void attach(struct node *n)
{
    if (n->attached || !n->in || !n->out)
        return;
    n->attached = 1;
    int k;
    struct remote **v = remotes_of(n, &k);
    for (int i = 0; i < k; i++)
        remote_register(v[i]);
    pl_free(v);
    pl_log_info("cluster", "node %s: links up, %d sessions", n->name, k);
    pl__cluster_check_ready();
}

static void detach(struct node *n)
{
    if (!n->attached)
        return;
    n->attached = 0;
    int k;
    struct remote **v = remotes_of(n, &k);
    for (int i = 0; i < k; i++) {
        remote_unregister(v[i]);
        pl__link_reregister(v[i]->sess.jid->full);
    }
    pl_free(v);
    pl_log_info("cluster", "node %s: unreachable, its %d sessions are out",
                n->name, k);
    pl__watch_node_gone(n->name);
}

/* Forgets every remote of n (a new snapshot follows). */
static void drop_remotes(struct node *n)
{
    int k;
    struct remote **v = remotes_of(n, &k);
    for (int i = 0; i < k; i++) {
        pl_map_del(&n->remotes, v[i]->sess.jid->full);
        remote_unregister(v[i]);
        pl__link_reregister(v[i]->sess.jid->full);
        remote_free(v[i]);
    }
    pl_free(v);
}

/* ---- writing ---- */

static void attr(struct pl_buf *b, const char *name, const char *v)
{
    pl_buf_printf(b, " %s='", name);
    pl_buf_append_escaped(b, v, strlen(v), 1);
    pl_buf_append_str(b, "'");
}

static void write_stanza(struct pl_buf *b, struct pl_stanza *st)
{
    struct pl_str s = pl_stanza_serialize(st, PL_NS_CLIENT);
    pl_buf_append(b, s.p, s.len);
}

/*
 * <c:up/>: the session's routing state, with what modules export of
 * their own per-session state as children (the event session/export:
 * carbons enabled...), which the receiver hands to session/import on the
 * remote session, so those modules serve it as a local one.
 */
static void up_frame(struct pl_buf *b, struct pl_session *s, int interested)
{
    pl_buf_append_str(b, "<c:up");
    attr(b, "jid", s->jid->full);
    pl_buf_printf(b, " prio='%d' avail='%d' int='%d'%s", s->priority,
                  s->available ? 1 : 0,
                  interested || pl_session_is_interested(s) ? 1 : 0,
                  s->presence ? " p='1'" : "");
    struct pl_buf x = {0};
    if (s->host) {
        struct pl_event ev = {"session/export", s->host, s, NULL,
                              s->jid,           NULL,    &x};
        pl_hook_fire(&ev);
    }
    if (x.len) {
        pl_buf_append_str(b, ">");
        pl_buf_append(b, x.data + x.off, x.len);
        pl_buf_append_str(b, "</c:up>");
    } else {
        pl_buf_append_str(b, "/>");
    }
    pl_buf_reset(&x);
    if (s->presence)
        write_stanza(b, s->presence);
}

static void send_all(struct pl_buf *b)
{
    for (struct node *n = nodes; n; n = n->next)
        if (n->out)
            pl_conn_write(n->out, b->data + b->off, b->len);
    pl_buf_reset(b);
}

static void send_to_one(const char *name, void *ud)
{
    const struct pl_buf *b = ud;
    struct node *n = node_find(name);
    if (n && n->out)
        pl_conn_write(n->out, b->data + b->off, b->len);
}

/* To the nodes watching s's account (watch.c). */
static void send_watchers(struct pl_session *s, struct pl_buf *b)
{
    pl__watchers_each(s->jid->bare, send_to_one, b);
    pl_buf_reset(b);
}

void pl__link_announce_up(struct pl_session *s, int interested)
{
    if (!nodes || !s->jid)
        return;
    struct pl_buf b = {0};
    up_frame(&b, s, interested);
    send_watchers(s, &b);
}

void pl__link_announce_down(struct pl_session *s)
{
    if (!nodes || !s->jid)
        return;
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<c:down");
    attr(&b, "jid", s->jid->full);
    pl_buf_append_str(&b, "/>");
    send_watchers(s, &b);
}

static void bare_frame(struct pl_buf *b, const char *name, const char *bare)
{
    pl_buf_printf(b, "<c:%s", name);
    attr(b, "bare", bare);
    pl_buf_append_str(b, "/>");
}

int pl__link_send_watch(const char *name, const char *bare)
{
    struct node *n = node_find(name);
    if (!n || !n->out || !n->attached)
        return PL_ECLOSED;
    struct pl_buf b = {0};
    bare_frame(&b, "watch", bare);
    pl_conn_write(n->out, b.data + b.off, b.len);
    pl_buf_reset(&b);
    return PL_OK;
}

void pl__link_send_ups(const char *name, const char *bare, int marker)
{
    struct node *n = node_find(name);
    if (!n || !n->out)
        return; /* its link's snapshot will carry them */
    struct pl_buf b = {0};
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res)
        if (!pl__link_is_remote(s))
            up_frame(&b, s, 0);
    if (marker)
        bare_frame(&b, "watched", bare);
    if (b.len)
        pl_conn_write(n->out, b.data + b.off, b.len);
    pl_buf_reset(&b);
}

void pl__link_send_unwatch(const char *bare)
{
    struct pl_buf b = {0};
    bare_frame(&b, "unwatch", bare);
    send_all(&b);
}

struct drop_ctx {
    const struct pl_map *bares;
    struct remote **v;
    int n;
};

static void drop_pick(const char *key, void *value, void *ud)
{
    (void)key;
    struct drop_ctx *c = ud;
    struct remote *r = value;
    if (pl_map_get(c->bares, r->sess.jid->bare))
        c->v[c->n++] = r;
}

void pl__link_drop_bares(const struct pl_map *bares)
{
    for (struct node *n = nodes; n; n = n->next) {
        struct drop_ctx c = {bares,
                             pl_calloc(n->remotes.count + 1, sizeof(void *)),
                             0};
        pl_map_each(&n->remotes, drop_pick, &c);
        for (int i = 0; i < c.n; i++) {
            struct remote *r = c.v[i];
            pl_map_del(&n->remotes, r->sess.jid->full);
            int was = r->sess.registered;
            remote_unregister(r);
            if (was)
                pl__link_reregister(r->sess.jid->full);
            remote_free(r);
        }
        pl_free(c.v);
    }
}

unsigned long pl__link_copies(void)
{
    unsigned long k = 0;
    for (struct node *n = nodes; n; n = n->next)
        k += n->remotes.count;
    return k;
}

struct pl_session *pl__link_ghost(const char *full, int priority)
{
    struct pl_jid *jid = NULL;
    struct pl_host *h = NULL;
    if (pl_jid_parse(pl_str_c(full), &jid) != PL_OK || !jid->resource ||
        !(h = pl_host_find(jid->domain))) {
        pl_jid_free(jid);
        return NULL;
    }
    struct remote *r = pl_calloc(1, sizeof(*r));
    pl_session_init(&r->sess);
    r->sess.jid = jid;
    r->sess.host = h;
    r->sess.ops = &remote_ops;
    r->sess.elsewhere = 1;
    r->sess.available = 1;
    r->sess.priority = priority;
    return &r->sess;
}

void pl__link_announce_change(const struct pl_data_change *c)
{
    if (!nodes || !c->module || !c->bare)
        return;
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<c:changed");
    attr(&b, "mod", c->module);
    attr(&b, "jid", c->bare);
    pl_buf_append_str(&b, ">");
    pl_buf_append_escaped(&b, c->payload ? c->payload : "", c->len, 0);
    pl_buf_append_str(&b, "</c:changed>");
    send_all(&b);
}

/* ---- acknowledgements ---- */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The node acknowledged the first `upto` stanzas of this connection. */
static void pending_ack(struct node *n, uint64_t upto)
{
    if (upto > n->acked)
        n->acked = upto;
    if (n->probe_seq && upto >= n->probe_seq) {
        n->rtt_us = (int64_t)(mono_us() - n->probe_us);
        n->probe_seq = 0;
    }
    while (n->head && n->head->seq <= upto) {
        struct pending *p = n->head;
        n->head = p->next;
        if (!n->head)
            n->tail = NULL;
        n->npending--;
        n->pending_bytes -= p->size;
        pl_stanza_unref(p->st);
        pl_free(p);
    }
}

/* Takes what n did not acknowledge (the caller routes it again, once n's
 * sessions are out of the table). */
static struct pending *pending_take(struct node *n)
{
    struct pending *p = n->head;
    n->head = n->tail = NULL;
    n->pending_bytes = 0;
    n->npending = 0;
    n->sent_before += n->sent;
    n->sent = 0;
    n->acked = 0;
    n->probe_seq = 0;
    return p;
}

/*
 * Routes again what a node that went away did not acknowledge: the
 * addressee's session is no longer in the table, so a message goes to
 * another resource or offline storage (RFC 6121 §8.5.3.2), as if it had
 * been sent a moment later.  route: 0 drops them (shutdown).
 */
static void pending_reroute(struct pending *p, int route)
{
    int n = 0;
    while (p) {
        struct pending *next = p->next;
        const char *f = pl_stanza_attr(p->st, "from");
        const char *t = pl_stanza_attr(p->st, "to");
        struct pl_jid *from = NULL, *to = NULL;
        if (route && f && t && pl_jid_parse(pl_str_c(f), &from) == PL_OK &&
            pl_jid_parse(pl_str_c(t), &to) == PL_OK) {
            cur_hops = 1;
            pl_route(p->st, from, to, NULL);
            cur_hops = 0;
            n++;
        }
        pl_jid_free(from);
        pl_jid_free(to);
        pl_stanza_unref(p->st);
        pl_free(p);
        p = next;
    }
    if (n)
        pl_log_info("cluster", "%d unacknowledged stanzas routed again", n);
}

static void ack_stanza(void *ud, struct pl_stanza *st)
{
    struct node *n = ud;
    struct pl_node *root = pl_stanza_root(st);
    const char *v = pl_node_attr(root, "n");
    if (n && strcmp(root->name, "a") == 0 && v)
        pending_ack(n, strtoull(v, NULL, 10));
    pl_stanza_unref(st);
}

static void ack_open(void *ud, struct pl_stanza *header)
{
    (void)ud;
    (void)header;
}

static void ack_close(void *ud)
{
    struct node *n = ud;
    if (n && n->out)
        pl_conn_close(n->out);
}

static void ack_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct node *n = ud;
    if (!n || !n->out)
        return;
    pl_log_warn("cluster", "link to node %s: acknowledgements: %s (%s)",
                n->name, pl_xml_error_condition(err), text ? text : "");
    pl_conn_close(n->out);
}

static const struct pl_xml_callbacks ack_xml_cb = {
    .stream_open = ack_open,
    .stanza = ack_stanza,
    .stream_close = ack_close,
    .error = ack_error,
};

/* ---- the remote session's transport ---- */

/* Writes <c:d to= h= [r='1']/> and st on n's link, kept until it is
 * acknowledged.  route: the receiver routes st again (a room it hosts)
 * instead of handing it to its session `to`. */
static void send_d(struct node *n, const char *to, int route,
                   struct pl_stanza *st)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<c:d");
    attr(&b, "to", to);
    pl_buf_printf(&b, " h='%d'%s/>", cur_hops, route ? " r='1'" : "");
    write_stanza(&b, st);
    struct pending *p = pl_calloc(1, sizeof(*p));
    p->seq = ++n->sent;
    p->st = pl_stanza_ref(st);
    p->size = b.len;
    p->ms = pl_loop_now(pl_server_loop());
    if (!n->probe_seq) {
        /* One stanza at a time is timed: the link's lag, for operators. */
        n->probe_seq = p->seq;
        n->probe_us = mono_us();
    }
    n->npending++;
    if (n->tail)
        n->tail->next = p;
    else
        n->head = p;
    n->tail = p;
    n->pending_bytes += p->size;
    pl_conn_write(n->out, b.data + b.off, b.len);
    pl_buf_reset(&b);
    if (n->pending_bytes > (size_t)pl__cluster_settings()->max_link_buffer) {
        /* Not acknowledging: as a reader too slow, the link goes (what
         * it did not acknowledge is routed again, out_closed). */
        pl_log_warn("cluster",
                    "node %s: %zu bytes unacknowledged, link "
                    "dropped",
                    n->name, n->pending_bytes);
        pl_conn_close(n->out);
    }
}

static void remote_deliver(struct pl_session *s, struct pl_stanza *st)
{
    struct remote *r = (struct remote *)s;
    if (!r->node || !r->node->out)
        return; /* not in the table then: not reached */
    if (cur_hops > MAX_HOPS) {
        pl_log_warn("cluster", "a stanza for %s went round the nodes: dropped",
                    s->jid->full);
        return;
    }
    send_d(r->node, s->jid->full, 0, st);
}

int pl__link_forward(const char *name, struct pl_stanza *st)
{
    struct node *n = node_find(name);
    const char *to = pl_stanza_attr(st, "to");
    if (!n || !n->out || !n->attached || !to)
        return PL_ECLOSED;
    if (cur_hops > MAX_HOPS) {
        pl_log_warn("cluster", "a stanza for %s went round the nodes: dropped",
                    to);
        return PL_ECLOSED;
    }
    send_d(n, to, 1, st);
    return PL_OK;
}

static void close_frame(struct node *n, const char *full, const char *cond)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<c:close");
    attr(&b, "to", full);
    attr(&b, "cond", cond);
    pl_buf_append_str(&b, "/>");
    pl_conn_write(n->out, b.data + b.off, b.len);
    pl_buf_reset(&b);
}

void pl__link_send_close(const char *name, const char *full, const char *cond)
{
    struct node *n = node_find(name);
    if (n && n->out)
        close_frame(n, full, cond);
}

/* A newer session took the JID (c2s, RFC 6120 §7.7.2.2) or an operator
 * kicks it: the owner ends it; the caller takes it out of the table. */
static void remote_close(struct pl_session *s, const char *condition,
                         const char *text)
{
    (void)text;
    struct remote *r = (struct remote *)s;
    if (!r->node)
        return;
    if (r->node->out)
        close_frame(r->node, s->jid->full, condition ? condition : "reset");
    /* Forgotten now; freed after the caller's pl_session_unregister. */
    pl_map_del(&r->node->remotes, s->jid->full);
    r->node = NULL;
    pl_loop_defer(pl_server_loop(), remote_free_deferred, r);
}

static int remote_is_interested(const struct pl_session *s)
{
    return ((const struct remote *)s)->interested;
}

static const char *remote_transport(const struct pl_session *s)
{
    (void)s;
    return "cluster";
}

static const struct pl_session_ops remote_ops = {
    .deliver = remote_deliver,
    .close = remote_close,
    .is_interested = remote_is_interested,
    .transport = remote_transport,
};

/* ---- reading ---- */

static void on_up(struct link_in *li, struct pl_stanza *st)
{
    struct node *n = li->node;
    struct pl_node *root = pl_stanza_root(st);
    const char *full = pl_node_attr(root, "jid");
    const char *prio = pl_node_attr(root, "prio");
    const char *avail = pl_node_attr(root, "avail");
    const char *interested = pl_node_attr(root, "int");
    const char *p = pl_node_attr(root, "p");
    if (!full)
        return;
    struct remote *r = pl_map_get(&n->remotes, full);
    if (!r) {
        struct pl_jid *jid = NULL;
        if (pl_jid_parse(pl_str_c(full), &jid) != PL_OK || !jid->resource) {
            pl_jid_free(jid);
            return;
        }
        if (!pl__watch_wants(jid->bare)) {
            /* Not (or no longer) watched here: the sender stops. */
            if (n->out) {
                struct pl_buf b = {0};
                bare_frame(&b, "unwatch", jid->bare);
                pl_conn_write(n->out, b.data + b.off, b.len);
                pl_buf_reset(&b);
            }
            pl_jid_free(jid);
            return;
        }
        struct pl_host *h = pl_host_find(jid->domain);
        if (!h) {
            pl_log_warn("cluster",
                        "node %s has a session of %s, not served "
                        "here",
                        n->name, jid->domain);
            pl_jid_free(jid);
            return;
        }
        r = pl_calloc(1, sizeof(*r));
        pl_session_init(&r->sess);
        r->sess.jid = jid;
        r->sess.host = h;
        r->sess.ops = &remote_ops;
        r->sess.elsewhere = 1;
        r->node = n;
        pl_map_put(&n->remotes, jid->full, r);
    }
    r->sess.priority = prio ? atoi(prio) : 0;
    r->sess.available = avail && avail[0] == '1';
    r->interested = interested && interested[0] == '1';
    pl_stanza_unref(r->sess.presence);
    r->sess.presence = NULL;
    if (p && p[0] == '1') {
        li->expect = X_PRESENCE;
        pl_free(li->jid);
        li->jid = pl_strdup(r->sess.jid->full);
    }
    /* What the node's modules exported (up_frame): theirs here take it. */
    struct pl_event ev = {"session/import", r->sess.host, &r->sess, st,
                          r->sess.jid,      NULL,         NULL};
    pl_hook_fire(&ev);
    remote_register(r);
}

static void on_down(struct link_in *li, struct pl_stanza *st)
{
    const char *full = pl_node_attr(pl_stanza_root(st), "jid");
    struct remote *r = full ? pl_map_del(&li->node->remotes, full) : NULL;
    if (!r)
        return;
    int was = r->sess.registered;
    remote_unregister(r);
    if (was)
        pl__link_reregister(r->sess.jid->full);
    remote_free(r);
}

/* Another node's module changed an account's data: this node's copy of
 * the module hears it (hook.h, struct pl_data_change). */
static void on_data_changed(struct link_in *li, struct pl_stanza *st)
{
    (void)li;
    struct pl_node *root = pl_stanza_root(st);
    const char *mod = pl_node_attr(root, "mod");
    const char *bare = pl_node_attr(root, "jid");
    /* An account, or a host's own data (its domain). */
    const char *at = bare ? strchr(bare, '@') : NULL;
    struct pl_host *h = bare ? pl_host_find(at ? at + 1 : bare) : NULL;
    if (!mod || !h)
        return;
    struct pl_data_change c = {mod, bare, NULL, 0};
    c.payload = pl_node_text(st, root, &c.len);
    struct pl_event ev =
        {"user/data-changed-elsewhere", h, NULL, NULL, NULL, NULL, &c};
    pl_hook_fire(&ev);
}

static void on_close(struct link_in *li, struct pl_stanza *st)
{
    (void)li;
    struct pl_node *root = pl_stanza_root(st);
    const char *to = pl_node_attr(root, "to");
    const char *cond = pl_node_attr(root, "cond");
    struct pl_session *s = to ? pl_session_by_full(to) : NULL;
    if (!s || pl__link_is_remote(s))
        return;
    pl_log_info("cluster", "%s: closed by node %s (%s)", to, li->node->name,
                cond ? cond : "");
    s->ops->close(s, cond ? cond : "reset", "replaced by a new session");
    pl_session_unregister(s);
}

/* A stanza for one of our sessions (<c:d/>). */
static void deliver_here(struct link_in *li, struct pl_stanza *st)
{
    struct pl_session *s = li->route ? NULL : pl_session_by_full(li->jid);
    if (s && !pl__link_is_remote(s)) {
        pl__rooms_seen(s, st);
        pl_session_send(s, st);
        return;
    }
    /* Gone since the sender looked: as the router would for a resource
     * that is not there (RFC 6121 §8.5.3.2), once. */
    const char *f = pl_stanza_attr(st, "from");
    const char *t = pl_stanza_attr(st, "to");
    struct pl_jid *from = NULL, *to = NULL;
    if (f && t && pl_jid_parse(pl_str_c(f), &from) == PL_OK &&
        pl_jid_parse(pl_str_c(t), &to) == PL_OK) {
        cur_hops = li->hops + 1;
        pl_route(st, from, to, NULL);
        cur_hops = 0;
    }
    pl_jid_free(from);
    pl_jid_free(to);
}

static void in_stream_open(void *ud, struct pl_stanza *header)
{
    struct link_in *li = ud;
    struct pl_node *root = pl_stanza_root(header);
    const char *name = pl_node_attr(root, "node");
    const char *epoch = pl_node_attr(root, "epoch");
    const char *secret = pl_node_attr(root, "secret");
    const char *want = pl__cluster_settings()->secret;
    if (!secret || strlen(secret) != strlen(want) ||
        CRYPTO_memcmp(secret, want, strlen(want)) != 0) {
        pl_log_warn("cluster", "link from %s: wrong secret, refused",
                    li->conn->ip);
        pl_conn_close(li->conn);
        return;
    }
    if (!name || !epoch || strcmp(name, pl__cluster_settings()->node) == 0) {
        pl_log_warn("cluster", "link from %s: no node name or our own",
                    li->conn->ip);
        pl_conn_close(li->conn);
        return;
    }
    struct node *n = node_find(name);
    if (n && n->epoch && strcmp(n->epoch, epoch) != 0) {
        /* Restarted: the former process is dead. */
        pl__link_node_dead(name);
        n = NULL;
    }
    if (!n) {
        pl__link_node_alive(name, NULL, epoch);
        n = node_find(name);
    }
    if (n->in) {
        n->in->node = NULL;
        pl_conn_close(n->in->conn);
        n->in = NULL;
    }
    detach(n);
    drop_remotes(n); /* its snapshot follows */
    n->in = li;
    li->node = n;
    pl_log_info("cluster", "link from node %s up", name);
    attach(n);
}

static void in_stanza(void *ud, struct pl_stanza *st)
{
    struct link_in *li = ud;
    struct pl_node *root = pl_stanza_root(st);
    if (!li->node) {
        pl_stanza_unref(st);
        return;
    }
    enum expect x = li->expect;
    li->expect = X_NONE;
    if (strcmp(root->ns, NS_CLUSTER) == 0) {
        if (strcmp(root->name, "up") == 0)
            on_up(li, st);
        else if (strcmp(root->name, "down") == 0)
            on_down(li, st);
        else if (strcmp(root->name, "close") == 0)
            on_close(li, st);
        else if (strcmp(root->name, "changed") == 0)
            on_data_changed(li, st);
        else if (strcmp(root->name, "watch") == 0 ||
                 strcmp(root->name, "watched") == 0 ||
                 strcmp(root->name, "unwatch") == 0) {
            const char *bare = pl_node_attr(root, "bare");
            const char *from = li->node->name;
            if (!bare)
                ;
            else if (root->name[0] == 'u')
                pl__watch_unwatched(from, bare);
            else if (strcmp(root->name, "watch") == 0)
                pl__watch_requested(from, bare);
            else
                pl__watch_answered(from, bare);
        } else if (strcmp(root->name, "d") == 0) {
            const char *to = pl_node_attr(root, "to");
            const char *h = pl_node_attr(root, "h");
            const char *rt = pl_node_attr(root, "r");
            if (to) {
                li->expect = X_STANZA;
                pl_free(li->jid);
                li->jid = pl_strdup(to);
                li->hops = h ? atoi(h) : 0;
                li->route = rt && rt[0] == '1';
            }
        }
    } else if (x == X_STANZA) {
        li->got++;
        deliver_here(li, st);
    } else if (x == X_PRESENCE) {
        struct remote *r = pl_map_get(&li->node->remotes, li->jid);
        if (r) {
            pl_stanza_unref(r->sess.presence);
            r->sess.presence = pl_stanza_ref(st);
        }
    }
    pl_stanza_unref(st);
}

static void in_stream_close(void *ud)
{
    struct link_in *li = ud;
    pl_conn_close(li->conn);
}

static void in_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct link_in *li = ud;
    pl_log_warn("cluster", "link from %s: %s (%s)",
                li->node ? li->node->name : li->conn->ip,
                pl_xml_error_condition(err), text ? text : "");
    pl_conn_close(li->conn);
}

static const struct pl_xml_callbacks in_xml_cb = {
    .stream_open = in_stream_open,
    .stanza = in_stanza,
    .stream_close = in_stream_close,
    .error = in_error,
};

static void in_data(struct pl_conn *c, const char *p, size_t n)
{
    struct link_in *li = c->data;
    if (!li || c->closing)
        return;
    pl_xml_parser_feed(li->xml, p, n);
    /* One acknowledgement per read: what was handed to our sessions
     * (or routed again) need not be routed again by the sender. */
    if (li->got != li->acked && !c->closing) {
        char a[48];
        int k = snprintf(a, sizeof(a), "<a n='%llu'/>",
                         (unsigned long long)li->got);
        pl_conn_write(c, a, (size_t)k);
        li->acked = li->got;
    }
}

static void in_closed(struct pl_conn *c)
{
    struct link_in *li = c->data;
    nconns--;
    if (li->node && li->node->in == li) {
        struct node *n = li->node;
        n->got_before += li->got;
        n->in = NULL;
        pl_log_info("cluster", "link from node %s closed", n->name);
        detach(n);
    }
    if (li->prev)
        li->prev->next = li->next;
    else
        ins = li->next;
    if (li->next)
        li->next->prev = li->prev;
    pl_xml_parser_free(li->xml);
    pl_free(li->jid);
    pl_free(li);
}

static const struct pl_conn_ops in_ops = {
    .data = in_data,
    .closed = in_closed,
};

static void on_accept(struct pl_io *io, unsigned events)
{
    (void)io;
    (void)events;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct link_in *li = pl_calloc(1, sizeof(*li));
        struct pl_conn_limits lim = link_limits();
        li->conn = pl_conn_new(pl_server_loop(), fd, &in_ops, li, &lim);
        struct pl_xml_limits xl =
            {(size_t)pl__cluster_settings()->max_link_stanza, 0};
        li->xml = pl_xml_parser_new(&xl, &in_xml_cb, li);
        li->next = ins;
        if (ins)
            ins->prev = li;
        ins = li;
        nconns++;
        pl_conn_start(li->conn, NULL);
        static const char hdr[] = "<stream xmlns='" NS_CLUSTER "'>";
        pl_conn_write(li->conn, hdr, sizeof(hdr) - 1);
    }
}

int pl__link_listen(const char *addr)
{
    stopping = 0;
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_addr(addr, &ss, &len) != PL_OK)
        return PL_EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    int one = 1;
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 64) < 0) {
        pl_log_error("cluster", "link %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return PL_EIO;
    }
    listen_fd = fd;
    pl_io_init(&listen_io, fd, on_accept, NULL);
    pl_io_set(pl_server_loop(), &listen_io, PL_IO_READ);
    return PL_OK;
}

/* ---- outgoing links ---- */

static void snap_free(struct node *n);

static void out_closed(struct pl_conn *c)
{
    struct node *n = c->data;
    nconns--;
    if (!n)
        return;
    n->out = NULL;
    snap_free(n);
    pl_log_info("cluster", "link to node %s closed%s%s", n->name,
                c->error ? ": " : "", c->error ? c->error : "");
    detach(n);
    pending_reroute(pending_take(n), 1);
}

/* The node's acknowledgements. */
static void out_data(struct pl_conn *c, const char *p, size_t len)
{
    struct node *n = c->data;
    if (n && n->acks && !c->closing)
        pl_xml_parser_feed(n->acks, p, len);
}

static const struct pl_conn_ops out_ops = {
    .data = out_data,
    .closed = out_closed,
};

/* Sessions written to a new link per drain of its buffer: the snapshot
 * of a big node goes out in pieces, never over max_link_buffer. */
#define SNAP_CHUNK 256

struct snap {
    char **v;
    size_t n;
    const char *node;
};

/* The sessions of the accounts the node watches. */
static void snap_one(struct pl_session *s, void *ud)
{
    struct snap *sn = ud;
    if (!pl__link_is_remote(s) && s->jid &&
        pl__watchers_has(s->jid->bare, sn->node))
        sn->v[sn->n++] = pl_strdup(s->jid->full);
}

static void snap_free(struct node *n)
{
    for (size_t i = n->snap_at; i < n->nsnap; i++)
        pl_free(n->snap[i]);
    pl_free(n->snap);
    n->snap = NULL;
    n->nsnap = n->snap_at = 0;
}

/*
 * Writes the next piece of the snapshot: each session's state as it is
 * now (one that ended meanwhile is skipped, its <c:down/> went out live;
 * one bound meanwhile was announced live).  The receiver may so see a
 * session's state twice, never an old one after a new one.
 */
static void snap_more(struct pl_conn *c)
{
    struct node *n = c->data;
    if (!n || !n->snap)
        return;
    struct pl_buf b = {0};
    for (int k = 0; k < SNAP_CHUNK && n->snap_at < n->nsnap; k++) {
        char *full = n->snap[n->snap_at++];
        struct pl_session *s = pl_session_by_full(full);
        if (s && !pl__link_is_remote(s))
            up_frame(&b, s, 0);
        pl_free(full);
    }
    if (n->snap_at >= n->nsnap) {
        snap_free(n);
        pl_conn_set_drain(c, NULL);
    }
    if (b.len)
        pl_conn_write(c, b.data + b.off, b.len);
    pl_buf_reset(&b);
}

static void out_connected(struct node *n)
{
    int fd = n->fd;
    pl_io_stop(&n->cio);
    n->fd = -1;
    struct pl_conn_limits lim = link_limits();
    n->out = pl_conn_new(pl_server_loop(), fd, &out_ops, n, &lim);
    nconns++;
    struct pl_xml_limits xl = {4096, 4};
    if (!n->acks)
        n->acks = pl_xml_parser_new(&xl, &ack_xml_cb, n);
    else
        pl_xml_parser_reset(n->acks);
    pl_conn_start(n->out, NULL);
    const char *self = pl__cluster_self();
    const char *epoch = strchr(self, ':') + 1;
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<stream xmlns='" PL_NS_CLIENT
                          "' xmlns:c='" NS_CLUSTER "'");
    attr(&b, "node", pl__cluster_settings()->node);
    attr(&b, "epoch", epoch);
    attr(&b, "secret", pl__cluster_settings()->secret);
    pl_buf_append_str(&b, ">");
    pl_conn_write(n->out, b.data + b.off, b.len);
    pl_buf_reset(&b);
    snap_free(n);
    struct snap sn = {pl_calloc(pl_session_count() + 1, sizeof(char *)), 0,
                      n->name};
    pl_session_each(snap_one, &sn);
    n->snap = sn.v;
    n->nsnap = sn.n;
    pl_conn_set_drain(n->out, snap_more);
    snap_more(n->out);
    n->warned = 0;
    pl_log_info("cluster", "link to node %s (%s) up", n->name, n->addr);
    attach(n);
}

static void on_connect_io(struct pl_io *io, unsigned events)
{
    (void)events;
    struct node *n = io->data;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(n->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS)
        return;
    if (err) {
        if (!n->warned)
            pl_log_warn("cluster", "link to node %s (%s): %s", n->name, n->addr,
                        strerror(err));
        n->warned = 1;
        pl_io_stop(&n->cio);
        close(n->fd);
        n->fd = -1; /* the next poll tries again */
        return;
    }
    out_connected(n);
}

static void node_connect(struct node *n)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (stopping || n->out || n->fd >= 0 || !n->addr)
        return;
    if (parse_addr(n->addr, &ss, &len) != PL_OK) {
        if (!n->warned)
            pl_log_warn("cluster", "node %s announces a bad link address %s",
                        n->name, n->addr);
        n->warned = 1;
        return;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0)
        return;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
        if (!n->warned)
            pl_log_warn("cluster", "link to node %s (%s): %s", n->name, n->addr,
                        strerror(errno));
        n->warned = 1;
        close(fd);
        return;
    }
    n->fd = fd;
    pl_io_init(&n->cio, fd, on_connect_io, n);
    pl_io_set(pl_server_loop(), &n->cio, PL_IO_WRITE);
}

/* ---- nodes ---- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void grave_free(struct grave *g)
{
    pl_free(g->name);
    pl_free(g->addr);
    pl_free(g->epoch);
    pl_free(g);
}

/* Forgets the death of name (it is back). */
static void grave_del(const char *name)
{
    for (struct grave **pp = &graves; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0) {
            struct grave *g = *pp;
            *pp = g->next;
            grave_free(g);
            return;
        }
}

void pl__link_node_alive(const char *name, const char *addr, const char *epoch)
{
    grave_del(name);
    struct node *n = node_find(name);
    if (n && epoch && n->epoch && strcmp(n->epoch, epoch) != 0) {
        pl__link_node_dead(name); /* a new process of the same name */
        n = NULL;
    }
    if (!n) {
        n = pl_calloc(1, sizeof(*n));
        n->name = pl_strdup(name);
        n->fd = -1;
        n->rtt_us = -1;
        n->sessions = -1;
        n->next = nodes;
        nodes = n;
        pl_log_info("cluster", "node %s joined", name);
    }
    if (epoch && !n->epoch)
        n->epoch = pl_strdup(epoch);
    if (addr && (!n->addr || strcmp(n->addr, addr) != 0)) {
        pl_free(n->addr);
        n->addr = pl_strdup(addr);
    }
    if (addr)
        n->seen_ms = wall_ms();
    node_connect(n);
}

static void node_close_links(struct node *n)
{
    if (n->fd >= 0) {
        pl_io_stop(&n->cio);
        close(n->fd);
        n->fd = -1;
    }
    if (n->out) {
        n->out->data = NULL;
        pl_conn_close(n->out);
        n->out = NULL;
    }
    snap_free(n);
    if (n->in) {
        n->in->node = NULL;
        pl_conn_close(n->in->conn);
        n->in = NULL;
    }
}

static void node_unlink(struct node *n)
{
    for (struct node **pp = &nodes; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
}

void pl__link_node_dead(const char *name)
{
    struct node *n = node_find(name);
    if (!n)
        return;
    node_unlink(n);
    node_close_links(n);
    detach(n);
    grave_del(name);
    struct grave *g = pl_calloc(1, sizeof(*g));
    g->name = pl_strdup(n->name);
    g->addr = n->addr ? pl_strdup(n->addr) : NULL;
    g->epoch = n->epoch ? pl_strdup(n->epoch) : NULL;
    g->died_ms = wall_ms();
    g->next = graves;
    graves = g;
    int k;
    struct remote **v = remotes_of(n, &k);
    for (int i = 0; i < k; i++) {
        remote_unregister(v[i]); /* a conflict may have kept one out */
        v[i]->node = NULL;
    }
    pl_map_clear(&n->remotes);
    pl_log_info("cluster", "node %s is gone with %d sessions", name, k);
    /* Its users are out of the table: what it did not acknowledge goes
     * to their other resources or offline. */
    pending_reroute(pending_take(n), 1);
    pl_xml_parser_free(n->acks);
    /* cluster.c takes the sessions (and frees them). */
    pl__cluster_node_gone(n->name, n->epoch, (struct pl_session **)v, k);
    pl_free(v);
    /* The rooms it hosted are free; their occupants here are told. */
    pl__rooms_node_dead(n->name);
    /* An event for n->cio still in this batch was voided when
     * node_close_links stopped it (loop.h). */
    pl_free(n->name);
    pl_free(n->addr);
    pl_free(n->epoch);
    pl_free(n);
}

int pl__link_unlinked(void)
{
    int k = 0;
    for (struct node *n = nodes; n; n = n->next)
        k += n->addr && !n->attached;
    return k;
}

void pl__link_node_phase(const char *name, const char *phase, long sessions)
{
    struct node *n = node_find(name);
    if (n) {
        snprintf(n->phase, sizeof(n->phase), "%s", phase);
        n->sessions = sessions;
    }
}

const char *pl__link_epoch(const char *name)
{
    struct node *n = node_find(name);
    return n && n->addr ? n->epoch : NULL;
}

char **pl__link_names(void)
{
    int k = 0;
    for (struct node *n = nodes; n; n = n->next)
        k++;
    char **v = pl_calloc((size_t)k + 1, sizeof(char *));
    k = 0;
    /* Only nodes seen in Redis (a link header may come before the poll
     * that lists its node). */
    for (struct node *n = nodes; n; n = n->next)
        if (n->addr)
            v[k++] = pl_strdup(n->name);
    return v;
}

void pl__link_names_free(char **v)
{
    for (int i = 0; v && v[i]; i++)
        pl_free(v[i]);
    pl_free(v);
}

void pl__link_stop(void)
{
    stopping = 1;
    if (listen_fd >= 0) {
        pl_io_stop(&listen_io);
        close(listen_fd);
        listen_fd = -1;
    }
    for (struct node *n = nodes; n; n = n->next)
        detach(n);
    for (struct node *n = nodes; n; n = n->next) {
        node_close_links(n);
        pending_reroute(pending_take(n), 1);
    }
    for (struct link_in *li = ins; li; li = li->next)
        pl_conn_close(li->conn);
}

unsigned long pl__link_count(void)
{
    return nconns;
}

void pl__link_free(void)
{
    while (graves) {
        struct grave *g = graves;
        graves = g->next;
        grave_free(g);
    }
    while (nodes) {
        struct node *n = nodes;
        nodes = n->next;
        node_close_links(n);
        pending_reroute(pending_take(n), 0);
        pl_xml_parser_free(n->acks);
        drop_remotes(n);
        pl_map_clear(&n->remotes);
        pl_free(n->name);
        pl_free(n->addr);
        pl_free(n->epoch);
        pl_free(n);
    }
}

/* ---- for operators ---- */

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *node_json(struct node *n, int64_t now_wall, uint64_t now)
{
    struct pl_conn *in = n->in ? n->in->conn : NULL;
    json_t *link =
        json_pack("{s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "out",
                  n->out != NULL, "in", in != NULL, "connected",
                  n->out != NULL && in != NULL, "bytes_sent",
                  (json_int_t)(n->out ? n->out->bytes_out : 0),
                  "bytes_received", (json_int_t)(in ? in->bytes_in : 0),
                  "stanzas_sent", (json_int_t)(n->sent_before + n->sent),
                  "stanzas_received",
                  (json_int_t)(n->got_before + (n->in ? n->in->got : 0)),
                  "unacked", (json_int_t)n->npending, "unacked_bytes",
                  (json_int_t)n->pending_bytes, "queued_bytes",
                  (json_int_t)(n->out ? pl_conn_pending(n->out) : 0));
    json_object_set_new(link, "oldest_unacked_ms",
                        n->head ? json_integer((json_int_t)(now - n->head->ms))
                                : json_null());
    json_object_set_new(link, "ack_rtt_us",
                        n->rtt_us >= 0 ? json_integer((json_int_t)n->rtt_us)
                                       : json_null());
    json_object_set_new(link, "up_ms",
                        n->out ? json_integer(
                                     (json_int_t)(now - n->out->opened_ms))
                               : json_null());
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:I, s:o}", "name", n->name,
                          "state", "alive", "address", str_or_null(n->addr),
                          "epoch", str_or_null(n->epoch), "copies",
                          (json_int_t)n->remotes.count, "link", link);
    json_object_set_new(o, "sessions",
                        n->sessions >= 0 ? json_integer((json_int_t)n->sessions)
                                         : json_null());
    json_object_set_new(o, "attached", json_boolean(n->attached));
    json_object_set_new(o, "phase", str_or_null(n->phase[0] ? n->phase : NULL));
    json_object_set_new(o, "last_seen_ms",
                        n->seen_ms
                            ? json_integer((json_int_t)(now_wall - n->seen_ms))
                            : json_null());
    return o;
}

json_t *pl__link_json(void)
{
    json_t *v = json_array();
    int64_t now_wall = wall_ms();
    uint64_t now = pl_loop_now(pl_server_loop());
    for (struct node *n = nodes; n; n = n->next)
        json_array_append_new(v, node_json(n, now_wall, now));
    for (struct grave *g = graves; g; g = g->next) {
        json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:I}", "name", g->name,
                              "state", "dead", "address", str_or_null(g->addr),
                              "epoch", str_or_null(g->epoch), "dead_ms",
                              (json_int_t)(now_wall - g->died_ms));
        json_array_append_new(v, o);
    }
    return v;
}
