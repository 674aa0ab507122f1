/*
 * s2s_out.c - outgoing server-to-server links (RFC 6120 §3, §5, §6): one
 * per local domain and remote domain, found again by id.
 *
 * State machine:
 *   resolve -> connect -> [direct TLS] -> header -> features ->
 *   [STARTTLS -> restart] -> SASL EXTERNAL -> restart -> ready
 *                                      \-> dialback db:result -> ready
 * Targets come from s2s.routes, else DNS SRV (RFC 6120 §3.2.1, XEP-0368:
 * both record types merged by priority, direct TLS first on a tie), else
 * the domain itself on port 5269 (§3.2.2).  Each address of each target
 * is tried in turn; a link fails when none is left or at its deadline,
 * and then bounces what it queued (one log line says why).
 *
 * XEP-0288: with s2s.bidi, a link asks the peer to use it both ways when
 * the peer offers it, and routes the stanzas the peer sends back.
 *
 * API in s2s_int.h: pl__s2s_out_send (the route/remote hook's way out),
 * pl__s2s_out_find/new/start (dialback asks over a link for db:verify),
 * pl__s2s_out_ready, _abort, _fail, _detach.  Dialback on the link
 * (sending our key, the peer's answers) is in dialback.c.
 *
 * Extending: a new state is a value of enum out_state (s2s_int.h) and a
 * name in pl__s2s_out_state_names; a new stream feature is handled in
 * out_features, a new top-level element in out_stanza.
 */
#include "s2s_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "conn.h"
#include "dns.h"
#include "error.h"
#include "framing.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "stats.h"
#include "xml.h"

#define DEFAULT_PORT 5269

struct out *pl__s2s_outs; /* every link */

static void out_try_connect(struct out *o);
static void out_next_target(struct out *o);

/* ---- outgoing: lookup and queue ---- */

static struct out *out_by_id(uint64_t id)
{
    for (struct out *o = pl__s2s_outs; o; o = o->next)
        if (o->id == id)
            return o;
    return NULL;
}

struct out *pl__s2s_out_find(const char *local, const char *remote)
{
    for (struct out *o = pl__s2s_outs; o; o = o->next)
        if (!o->detached && strcmp(o->local, local) == 0 &&
            strcmp(o->remote, remote) == 0)
            return o;
    return NULL;
}

static void out_unlink(struct out *o)
{
    for (struct out **pp = &pl__s2s_outs; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            return;
        }
}

static void targets_free(struct target *t, int n)
{
    for (int i = 0; i < n; i++)
        pl_free(t[i].host);
    pl_free(t);
}

static void out_free(struct out *o)
{
    out_unlink(o);
    pl_timer_stop(&o->timer);
    if (o->fd >= 0) {
        pl_io_stop(&o->cio);
        close(o->fd);
    }
    pl_xml_parser_free(o->xml);
    targets_free(o->targets, o->ntargets);
    targets_free(o->srv, o->nsrv);
    pl_free(o->addrs);
    for (size_t i = 0; i < o->qn; i++)
        pl_stanza_unref(o->q[i]);
    pl_free(o->q);
    while (o->verifies) {
        struct verify *v = o->verifies;
        o->verifies = v->next;
        pl_free(v->id);
        pl_free(v->key);
        pl_free(v);
    }
    pl_free(o->local);
    pl_free(o->remote);
    pl_free(o);
}

/* Ends the link's life: unreachable for new stanzas, freed once its
 * socket is gone. */
void pl__s2s_out_detach(struct out *o)
{
    o->detached = 1;
    o->state = O_CLOSING;
    pl_timer_stop(&o->timer);
    if (o->conn) {
        pl_conn_close(o->conn); /* out_closed frees */
        return;
    }
    out_free(o);
}

static void out_write_stanza(struct out *o, struct pl_stanza *st)
{
    struct pl_str x = pl_stanza_serialize(st, PL_NS_SERVER);
    pl_conn_write(o->conn, x.p, x.len);
    o->sent++;
    o->last_ms = pl__s2s_now_ms();
    pl_stat_inc(stanzas_out);
}

void pl__s2s_out_ready(struct out *o, int auth)
{
    o->state = O_READY;
    o->auth = auth;
    o->why[0] = '\0';
    o->last_ms = pl__s2s_now_ms();
    pl_timer_start(pl_server_loop(), &o->timer, 5000);
    pl_log_info("s2s", "link %s -> %s ready (%s, %s%s, %zu queued)", o->local,
                o->remote, pl__s2s_auth_names[auth],
                !o->secure ? "no TLS"
                : o->ti < o->ntargets && o->targets[o->ti].tls == PL_TLS_DIRECT
                    ? "direct TLS"
                    : "STARTTLS",
                o->bidi ? ", bidirectional" : "", o->qn);
    for (size_t i = 0; i < o->qn; i++) {
        out_write_stanza(o, o->q[i]);
        pl_stanza_unref(o->q[i]);
    }
    o->qn = 0;
    o->qbytes = 0;
    pl_free(o->q);
    o->q = NULL;
    o->qcap = 0;
}

/* Bounces every queued stanza with code and ends the link (one log line). */
void pl__s2s_out_fail(struct out *o, int code)
{
    if (o->detached)
        return;
    const char *cond, *type;
    pl_error_condition(code, &cond, &type);
    pl_log_warn("s2s",
                "link %s -> %s failed: %s; %zu queued stanza%s "
                "bounced with %s",
                o->local, o->remote, o->why[0] ? o->why : "unknown reason",
                o->qn, o->qn == 1 ? "" : "s", cond);
    /* Detach first: bounces are routed locally, and nothing routed now
     * may queue on this link again. */
    struct pl_stanza **q = o->q;
    size_t qn = o->qn;
    o->q = NULL;
    o->qn = o->qcap = o->qbytes = 0;
    struct verify *vs = o->verifies;
    o->verifies = NULL;
    char why[sizeof(o->why)];
    snprintf(why, sizeof(why), "%s", o->why);
    char *local = pl_strdup(o->local), *remote = pl_strdup(o->remote);
    pl__s2s_out_detach(o);
    for (size_t i = 0; i < qn; i++) {
        pl_route_error(q[i], code, why[0] ? why : NULL);
        pl_stanza_unref(q[i]);
    }
    pl_free(q);
    while (vs) {
        struct verify *v = vs;
        vs = v->next;
        pl__s2s_in_answer_verify(v->in_id, local, remote, NULL);
        pl_free(v->id);
        pl_free(v->key);
        pl_free(v);
    }
    pl_free(local);
    pl_free(remote);
}

static void on_out_timer(struct pl_timer *t)
{
    struct out *o = t->data;
    if (o->state != O_READY) {
        char prev[sizeof(o->why)];
        snprintf(prev, sizeof(prev), "%s", o->why);
        if (!prev[0] && o->ti < o->ntargets)
            pl__s2s_whyf(prev, sizeof(prev), "still %s with %s port %d%s",
                         pl__s2s_out_state_names[o->state],
                         o->targets[o->ti].host, o->targets[o->ti].port,
                         o->conn && o->conn->tls == PL_CONN_HANDSHAKE
                             ? " (TLS handshake not finished)"
                             : "");
        else if (!prev[0])
            pl__s2s_whyf(prev, sizeof(prev), "still %s",
                         pl__s2s_out_state_names[o->state]);
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "timeout: no link within %ld s%s%s",
                     pl__s2s_conf()->connect_timeout,
                     prev[0] ? "; last problem: " : "", prev);
        pl__s2s_out_fail(o, PL_EREMOTE_SERVER_TIMEOUT);
        return;
    }
    uint64_t idle = (uint64_t)pl__s2s_conf()->idle_timeout * 1000;
    uint64_t now = pl__s2s_now_ms();
    uint64_t last = o->last_ms;
    if (o->conn && o->conn->last_read_ms > last)
        last = o->conn->last_read_ms;
    if (now - last >= idle) {
        pl_log_info("s2s", "link %s -> %s idle for %ld s, closing", o->local,
                    o->remote, pl__s2s_conf()->idle_timeout);
        pl__s2s_write_str(o->conn, "</stream:stream>");
        pl__s2s_out_detach(o);
        return;
    }
    pl_timer_start(pl_server_loop(), t, 5000);
}

/* A new link, not started yet (out_start may end it at once). */
struct out *pl__s2s_out_new(const char *local, const char *remote)
{
    struct out *o = pl_calloc(1, sizeof(*o));
    o->id = pl__s2s_next_id++;
    o->local = pl_strdup(local);
    o->remote = pl_strdup(remote);
    o->fd = -1;
    o->created_ms = pl__s2s_now_ms();
    pl_timer_init(&o->timer, on_out_timer, o);
    o->next = pl__s2s_outs;
    pl__s2s_outs = o;
    return o;
}

/* Hands st (borrowed) to the link local -> remote: an outgoing link
 * (ready, or queueing while it is set up), else an incoming stream from
 * remote that is bidirectional (XEP-0288), else a new outgoing link. */
int pl__s2s_out_send(const char *local, const char *remote,
                     struct pl_stanza *st)
{
    struct out *o = pl__s2s_out_find(local, remote);
    if (o && o->state == O_READY && o->conn) {
        out_write_stanza(o, st);
        return PL_HANDLED;
    }
    if (!o && pl__s2s_in_send_bidi(local, remote, st))
        return PL_HANDLED;
    struct pl_str x = pl_stanza_serialize(st, PL_NS_SERVER);
    size_t queued = o ? o->qbytes : 0;
    if (queued + x.len > (size_t)pl__s2s_conf()->max_queue_bytes) {
        pl_log_warn("s2s",
                    "link %s -> %s: %zu bytes queued, refusing more "
                    "(s2s.max_queue_bytes)",
                    local, remote, queued);
        return PL_ERESOURCE_CONSTRAINT;
    }
    int fresh = !o;
    if (!o)
        o = pl__s2s_out_new(local, remote);
    if (o->qn == o->qcap) {
        o->qcap = o->qcap ? o->qcap * 2 : 8;
        o->q = pl_realloc(o->q, o->qcap * sizeof(*o->q));
    }
    o->q[o->qn++] = pl_stanza_ref(st);
    o->qbytes += x.len;
    if (fresh)
        pl__s2s_out_start(o); /* may bounce st and end the link at once */
    return PL_HANDLED;
}

/* ---- outgoing: DNS ---- */

struct srv_ask {
    uint64_t id; /* link */
    int tls;     /* PL_TLS_DIRECT for _xmpps-server */
};

static int target_cmp(const void *a, const void *b)
{
    const struct target *x = a, *y = b;
    if (x->prio != y->prio)
        return x->prio - y->prio;
    if (x->tls != y->tls) /* XEP-0368 §3: direct TLS first on a tie */
        return x->tls == PL_TLS_DIRECT ? -1 : 1;
    return y->weight - x->weight;
}

static void on_srv(int rc, const char *why, const struct pl_dns_srv *v, int n,
                   void *data)
{
    struct srv_ask *a = data;
    struct out *o = out_by_id(a->id);
    int tls = a->tls;
    pl_free(a);
    if (!o || o->detached)
        return;
    o->srv_left--;
    if (rc == PL_OK) {
        for (int i = 0; i < n; i++) {
            /* RFC 2782: a target of "." means no such service. */
            if (strcmp(v[i].target, ".") == 0 || !v[i].target[0]) {
                o->srv_dot = 1;
                continue;
            }
            o->srv = pl_realloc(o->srv,
                                (size_t)(o->nsrv + 1) * sizeof(*o->srv));
            struct target *t = &o->srv[o->nsrv++];
            t->host = pl_strdup(v[i].target);
            t->port = v[i].port;
            t->tls = tls;
            t->prio = v[i].priority;
            t->weight = v[i].weight;
        }
    } else if (rc != PL_ENOT_FOUND) {
        snprintf(o->srv_why, sizeof(o->srv_why), "%s", why);
    }
    if (o->srv_left > 0)
        return;
    if (o->nsrv) {
        qsort(o->srv, (size_t)o->nsrv, sizeof(*o->srv), target_cmp);
        o->targets = o->srv;
        o->ntargets = o->nsrv;
        o->srv = NULL;
        o->nsrv = 0;
    } else if (o->srv_dot) {
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "DNS: %s publishes that it offers "
                     "no XMPP server service (SRV target \".\")",
                     o->remote);
        o->fatal = 1;
        pl__s2s_out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
        return;
    } else {
        /* RFC 6120 §3.2.2: no SRV records, the domain itself on 5269. */
        o->targets = pl_calloc(1, sizeof(*o->targets));
        o->targets[0].host = pl_strdup(o->remote);
        o->targets[0].port = DEFAULT_PORT;
        o->targets[0].tls = PL_TLS_STARTTLS;
        o->ntargets = 1;
    }
    o->ti = 0;
    out_next_target(o);
}

static void on_addr(int rc, const char *why, const struct sockaddr_storage *v,
                    int n, void *data)
{
    struct out *o = out_by_id((uint64_t)(uintptr_t)data);
    if (!o || o->detached || o->state != O_RESOLVING)
        return;
    struct target *t = &o->targets[o->ti];
    if (rc != PL_OK) {
        if (o->srv_why[0] && o->ntargets == 1)
            pl__s2s_whyf(o->why, sizeof(o->why),
                         "DNS: no address for %s (%s; SRV lookup: %s)", t->host,
                         why, o->srv_why);
        else
            pl__s2s_whyf(o->why, sizeof(o->why), "DNS: no address for %s (%s)",
                         t->host, why);
        o->ti++;
        out_next_target(o);
        return;
    }
    pl_free(o->addrs);
    o->addrs = pl_calloc((size_t)n, sizeof(*o->addrs));
    memcpy(o->addrs, v, (size_t)n * sizeof(*v));
    o->naddrs = n;
    o->ai = 0;
    o->state = O_CONNECTING;
    out_try_connect(o);
}

static void out_next_target(struct out *o)
{
    if (o->ti >= o->ntargets) {
        pl__s2s_out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
        return;
    }
    o->state = O_RESOLVING;
    struct target *t = &o->targets[o->ti];
    pl_dns_addr(t->host, t->port, on_addr, (void *)(uintptr_t)o->id);
}

void pl__s2s_out_start(struct out *o)
{
    pl_timer_start(pl_server_loop(), &o->timer,
                   (uint64_t)pl__s2s_conf()->connect_timeout * 1000);
    o->state = O_RESOLVING;
    for (int i = 0; i < pl__s2s_conf()->nroutes; i++) {
        const struct pl_s2s_route *r = &pl__s2s_conf()->routes[i];
        if (strcmp(r->domain, o->remote) != 0)
            continue;
        o->targets = pl_calloc(1, sizeof(*o->targets));
        o->targets[0].host = pl_strdup(r->host);
        o->targets[0].port = r->port;
        o->targets[0].tls = r->tls;
        o->ntargets = 1;
        out_next_target(o);
        return;
    }
    static const char *const svc[] = {"_xmpps-server._tcp.",
                                      "_xmpp-server._tcp."};
    o->srv_left = 2;
    uint64_t id = o->id;
    for (int i = 0; i < 2; i++) {
        char name[1100];
        snprintf(name, sizeof(name), "%s%s", svc[i], o->remote);
        struct srv_ask *a = pl_calloc(1, sizeof(*a));
        a->id = id;
        a->tls = i == 0 ? PL_TLS_DIRECT : PL_TLS_STARTTLS;
        pl_dns_srv(name, on_srv, a);
        if (!out_by_id(id))
            return; /* answered and failed at once */
    }
}

/* ---- outgoing: connection ---- */

static void addr_str(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(out, n, "%s:%d", ip, port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%d", ip, port);
    }
}

static const struct pl_xml_callbacks out_xml_cb;
static const struct pl_conn_ops out_conn_ops;

static void out_send_header(struct out *o)
{
    struct pl_buf b = {0};
    pl_stream_header(&b, PL_NS_SERVER, o->local, o->remote, NULL,
                     PL_STREAM_V1 | PL_STREAM_DIALBACK);
    pl__s2s_write_buf(o->conn, &b);
}

static void out_connected(struct out *o)
{
    const struct pl_settings *S = pl__s2s_settings();
    int fd = o->fd;
    pl_io_stop(&o->cio);
    o->fd = -1;
    struct pl_conn_limits lim = pl__s2s_conn_limits();
    o->conn = pl_conn_new(pl_server_loop(), fd, &out_conn_ops, o, &lim);
    pl__s2s_nconns++;
    struct target *t = &o->targets[o->ti];
    pl_conn_set_tls_role(o->conn, 1, o->remote, 0);
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    if (!o->xml)
        o->xml = pl_xml_parser_new(&xl, &out_xml_cb, o);
    else
        pl_xml_parser_reset(o->xml);
    o->secure = 0;
    o->cert_ok = 0;
    o->auth = A_NONE;
    o->ext_failed = 0;
    o->bidi = 0;
    o->sid[0] = '\0';
    for (struct verify *v = o->verifies; v; v = v->next)
        v->sent = 0; /* a new connection: ask again */
    o->state = O_STREAM;
    SSL_CTX *ctx = NULL;
    if (t->tls == PL_TLS_DIRECT) {
        ctx = pl__s2s_client_ctx_for(o->local);
        if (!ctx) {
            pl__s2s_whyf(o->why, sizeof(o->why),
                         "TLS: %s has no certificate, cannot use direct TLS",
                         o->local);
            o->fatal = 1;
        }
    }
    pl_conn_start(o->conn, ctx);
    if (t->tls != PL_TLS_DIRECT)
        out_send_header(o);
    else if (o->fatal)
        pl_conn_close(o->conn);
}

static void on_connect_io(struct pl_io *io, unsigned events)
{
    struct out *o = io->data;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(o->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS)
        return;
    if (err) {
        char a[80];
        addr_str(&o->addrs[o->ai], a, sizeof(a));
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "TCP: cannot connect to %s (%s): %s",
                     o->targets[o->ti].host, a, strerror(err));
        pl_io_stop(&o->cio);
        close(o->fd);
        o->fd = -1;
        o->ai++;
        out_try_connect(o);
        return;
    }
    out_connected(o);
}

static void out_try_connect(struct out *o)
{
    while (o->ai < o->naddrs) {
        const struct sockaddr_storage *ss = &o->addrs[o->ai];
        socklen_t sl = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6);
        int fd = socket(ss->ss_family,
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && (connect(fd, (const struct sockaddr *)ss, sl) == 0 ||
                        errno == EINPROGRESS)) {
            o->fd = fd;
            o->state = O_CONNECTING;
            pl_io_init(&o->cio, fd, on_connect_io, o);
            pl_io_set(pl_server_loop(), &o->cio, PL_IO_WRITE);
            return;
        }
        char a[80];
        addr_str(ss, a, sizeof(a));
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "TCP: cannot connect to %s (%s): %s",
                     o->targets[o->ti].host, a, strerror(errno));
        if (fd >= 0)
            close(fd);
        o->ai++;
    }
    o->ti++;
    out_next_target(o);
}

static void out_closed(struct pl_conn *conn)
{
    struct out *o = conn->data;
    o->conn = NULL;
    pl__s2s_nconns--;
    if (o->detached) {
        out_free(o);
        return;
    }
    if (o->state == O_READY) {
        /* The peer closed an established link; the next stanza opens a
         * new one. */
        pl_log_info("s2s", "link %s -> %s closed by the peer%s%s", o->local,
                    o->remote, o->why[0] ? ": " : "", o->why);
        o->detached = 1;
        out_free(o);
        return;
    }
    if (conn->error)
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "TLS: handshake with %s failed: %s",
                     o->targets[o->ti].host, conn->error);
    else if (!o->why[0])
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "stream: %s closed the connection while %s",
                     o->targets[o->ti].host, pl__s2s_out_state_names[o->state]);
    if (o->fatal) {
        pl__s2s_out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
        return;
    }
    o->ai++;
    out_try_connect(o);
}

/* Closes the connection and fails the link (after the socket is gone). */
void pl__s2s_out_abort(struct out *o, int stream_close)
{
    o->fatal = 1;
    if (stream_close)
        pl__s2s_write_str(o->conn, "</stream:stream>");
    if (o->conn)
        pl_conn_close(o->conn);
    else
        pl__s2s_out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
}

static void out_tls_up(struct pl_conn *conn)
{
    struct out *o = conn->data;
    o->secure = 1;
    char why[256];
    if (pl__s2s_verify_peer(conn->ssl, o->remote, why, sizeof(why)) == PL_OK) {
        o->cert_ok = 1;
    } else if (!pl__s2s_allowed("dialback")) {
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "certificate: %s (and s2s.auth does not allow dialback)",
                     why);
        pl__s2s_out_abort(o, 0);
        return;
    } else {
        /* Dialback authenticates the peer through DNS instead. */
        pl_log_info("s2s", "link %s -> %s: %s; going on with dialback",
                    o->local, o->remote, why);
    }
    /* After STARTTLS the stream restarts; with direct TLS it begins. */
    pl_xml_parser_reset(o->xml);
    out_send_header(o);
}

static void out_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct out *o = conn->data;
    pl_stat_add(bytes_in, n);
    if (!o->detached && o->xml)
        pl_xml_parser_feed(o->xml, p, n);
}

/* No deadlines: the link's own timer watches it (on_out_timer). */
static const struct pl_conn_ops out_conn_ops = {
    .data = out_data,
    .tls_up = out_tls_up,
    .closed = out_closed,
};

static void out_stream_open(void *ud, struct pl_stanza *hdr)
{
    struct out *o = ud;
    struct pl_node *root = pl_stanza_root(hdr);
    const char *content = pl_node_attr(root, "xmlns");
    if (strcmp(root->ns, PL_NS_STREAMS) != 0 || !content ||
        strcmp(content, PL_NS_SERVER) != 0) {
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "stream: %s did not answer with a jabber:server stream",
                     o->targets[o->ti].host);
        pl__s2s_out_abort(o, 1);
        return;
    }
    const char *id = pl_node_attr(root, "id");
    snprintf(o->sid, sizeof(o->sid), "%s", id ? id : "");
    const char *ver = pl_node_attr(root, "version");
    if (!ver || strtol(ver, NULL, 10) < 1) {
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "stream: %s speaks an XMPP older than 1.0",
                     o->targets[o->ti].host);
        pl__s2s_out_abort(o, 1);
    }
}

static int has_mech(struct pl_node *features, const char *mech,
                    struct pl_stanza *st)
{
    struct pl_node *m = pl_node_child(features, "mechanisms", NS_SASL);
    if (!m)
        return 0;
    for (struct pl_node *c = pl_node_first_elem(m); c;
         c = pl_node_next_elem(c)) {
        size_t len;
        const char *t = pl_node_text(st, c, &len);
        if (t && len == strlen(mech) && strncmp(t, mech, len) == 0)
            return 1;
    }
    return 0;
}

static void out_features(struct out *o, struct pl_stanza *st)
{
    struct pl_node *f = pl_stanza_root(st);
    if (o->state == O_READY)
        return;
    if (o->auth == A_EXTERNAL) { /* the restart after SASL success */
        pl__s2s_out_ready(o, A_EXTERNAL);
        return;
    }
    if (!o->secure) {
        if (pl_node_child(f, "starttls", NS_TLS) &&
            pl__s2s_client_ctx_for(o->local)) {
            pl__s2s_write_str(o->conn, "<starttls xmlns='" NS_TLS "'/>");
            return;
        }
        if (pl__s2s_conf()->require_tls) {
            pl__s2s_whyf(o->why, sizeof(o->why),
                         "TLS: %s does not offer "
                         "STARTTLS and s2s.require_tls is set",
                         o->targets[o->ti].host);
            pl__s2s_out_abort(o, 1);
            return;
        }
    }
    pl__s2s_out_send_verifies(o);
    if (pl__s2s_conf()->bidi && !o->bidi &&
        pl_node_child(f, "bidi", NS_BIDI_FEATURE)) {
        /* XEP-0288 §2.2: after TLS, before authentication. */
        pl__s2s_write_str(o->conn, "<bidi xmlns='" NS_BIDI "'/>");
        o->bidi = 1;
    }
    for (int i = 0; i < pl__s2s_conf()->auth.n; i++) {
        const char *m = pl__s2s_conf()->auth.v[i];
        if (strcmp(m, "external") == 0 && o->secure && !o->ext_failed &&
            has_mech(f, "EXTERNAL", st)) {
            /* XEP-0178 §2: no authorization identity ("="). */
            pl__s2s_write_str(o->conn, "<auth xmlns='" NS_SASL "' "
                                       "mechanism='EXTERNAL'>=</auth>");
            o->state = O_AUTH;
            return;
        }
        if (strcmp(m, "dialback") == 0) {
            pl__s2s_out_db_key(o);
            o->state = O_AUTH;
            return;
        }
    }
    pl__s2s_whyf(o->why, sizeof(o->why),
                 "authentication: %s offers no method s2s.auth allows%s",
                 o->remote,
                 o->ext_failed ? " (it refused our certificate)" : "");
    pl__s2s_out_abort(o, 1);
}

/*
 * A stanza the peer sent back over a bidirectional link (XEP-0288 §2.2):
 * the peer is the domain we connected to and authenticated (certificate or
 * DNS, as dialback does), and may send only from that domain to ours.
 */
static void out_route_in(struct out *o, struct pl_stanza *st)
{
    const char *f = pl_stanza_attr(st, "from");
    const char *t = pl_stanza_attr(st, "to");
    struct pl_jid *from = NULL, *to = NULL;
    const char *cond = NULL;
    if (!f || !t)
        cond = "improper-addressing";
    else if (pl_jid_parse(pl_str_c(f), &from) != PL_OK ||
             strcmp(from->domain, o->remote) != 0)
        cond = "invalid-from";
    else if (pl_jid_parse(pl_str_c(t), &to) != PL_OK ||
             strcmp(to->domain, o->local) != 0)
        cond = "host-unknown";
    if (cond) {
        struct pl_buf b = {0};
        pl_buf_printf(&b,
                      "<stream:error><%s xmlns='" PL_NS_STREAM_ERRORS
                      "'/></stream:error>",
                      cond);
        pl__s2s_write_buf(o->conn, &b);
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "stream: %s sent a stanza we refused with <%s/>",
                     o->remote, cond);
        pl__s2s_out_abort(o, 1);
        goto out;
    }
    if (strcmp(f, from->full) != 0)
        pl_stanza_set_attr(st, "from", from->full);
    if (strcmp(t, to->full) != 0)
        pl_stanza_set_attr(st, "to", to->full);
    o->received++;
    o->last_ms = pl__s2s_now_ms();
    pl_stat_inc(stanzas_in);
    pl_route(st, from, to, NULL);
out:
    pl_jid_free(from);
    pl_jid_free(to);
}

static void out_stanza(void *ud, struct pl_stanza *st)
{
    struct out *o = ud;
    struct pl_node *root = pl_stanza_root(st);
    if (o->detached || o->fatal)
        goto out;
    if (strcmp(root->ns, PL_NS_STREAMS) == 0 &&
        strcmp(root->name, "features") == 0) {
        out_features(o, st);
    } else if (strcmp(root->ns, PL_NS_STREAMS) == 0 &&
               strcmp(root->name, "error") == 0) {
        struct pl_node *c = pl_node_first_elem(root);
        struct pl_node *t = pl_node_child(root, "text", PL_NS_STREAM_ERRORS);
        size_t tl = 0;
        const char *text = t ? pl_node_text(st, t, &tl) : NULL;
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "stream: %s ended the stream with <%s/>%s%.*s", o->remote,
                     c ? c->name : "?", text ? ": " : "", (int)tl,
                     text ? text : "");
        pl__s2s_out_abort(o, 1);
    } else if (strcmp(root->ns, NS_TLS) == 0 &&
               strcmp(root->name, "proceed") == 0) {
        pl_xml_parser_stop(o->xml);
        pl_conn_starttls(o->conn, pl__s2s_client_ctx_for(o->local));
    } else if (strcmp(root->ns, NS_TLS) == 0) {
        pl__s2s_whyf(o->why, sizeof(o->why), "TLS: %s refused STARTTLS",
                     o->remote);
        pl__s2s_out_abort(o, 1);
    } else if (strcmp(root->ns, NS_SASL) == 0 &&
               strcmp(root->name, "success") == 0) {
        pl_log_info("s2s", "link %s -> %s authenticated with SASL EXTERNAL",
                    o->local, o->remote);
        o->auth = A_EXTERNAL;
        pl_xml_parser_reset(o->xml);
        out_send_header(o);
    } else if (strcmp(root->ns, NS_SASL) == 0 &&
               strcmp(root->name, "failure") == 0) {
        struct pl_node *c = pl_node_first_elem(root);
        pl_log_info("s2s", "link %s -> %s: SASL EXTERNAL refused (%s)",
                    o->local, o->remote, c ? c->name : "?");
        o->ext_failed = 1;
        if (!pl__s2s_allowed("dialback")) {
            pl__s2s_whyf(o->why, sizeof(o->why),
                         "certificate: %s refused our "
                         "certificate for %s (SASL <%s/>)",
                         o->remote, o->local, c ? c->name : "?");
            pl__s2s_out_abort(o, 1);
            goto out; /* st is still ours */
        }
        pl__s2s_out_db_key(o);
    } else if (strcmp(root->ns, NS_DB) == 0 &&
               (strcmp(root->name, "result") == 0 ||
                strcmp(root->name, "verify") == 0)) {
        pl__s2s_out_db(o, st);
    } else if (o->bidi && o->state == O_READY &&
               pl_stream_is_stanza(root, PL_NS_SERVER)) {
        out_route_in(o, st);
    } else {
        /* Without XEP-0288, nothing else comes this way. */
        pl_log_debug("s2s", "link %s -> %s: ignoring <%s/>", o->local,
                     o->remote, root->name);
    }
out:
    pl_stanza_unref(st);
}

static void out_stream_close(void *ud)
{
    struct out *o = ud;
    if (o->state != O_READY && !o->why[0])
        pl__s2s_whyf(o->why, sizeof(o->why),
                     "stream: %s closed the stream while %s", o->remote,
                     pl__s2s_out_state_names[o->state]);
    if (o->state != O_READY)
        o->fatal = 1;
    pl__s2s_write_str(o->conn, "</stream:stream>");
    if (o->conn)
        pl_conn_close(o->conn);
}

static void out_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct out *o = ud;
    pl__s2s_whyf(o->why, sizeof(o->why), "stream: %s sent bad XML (%s)",
                 o->remote, text ? text : pl_xml_error_condition(err));
    pl__s2s_out_abort(o, 0);
}

static const struct pl_xml_callbacks out_xml_cb = {
    out_stream_open,
    out_stanza,
    out_stream_close,
    out_xml_error,
};
