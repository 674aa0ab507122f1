/*
 * s2s.c - server-to-server links; see s2s.h.
 *
 * Outgoing link state machine (one per local domain and remote domain):
 *   resolve -> connect -> [direct TLS] -> header -> features ->
 *   [STARTTLS -> restart] -> SASL EXTERNAL -> restart -> ready
 *                                      \-> dialback db:result -> ready
 * Targets come from s2s.routes, else DNS SRV (RFC 6120 §3.2.1, XEP-0368:
 * both record types merged by priority, direct TLS first on a tie), else
 * the domain itself on port 5269 (§3.2.2).  Each address of each target
 * is tried in turn; a link fails when none is left or at its deadline.
 *
 * Incoming streams: header -> features -> [STARTTLS -> restart] ->
 * SASL EXTERNAL -> restart, or dialback db:result pairs (verified with
 * db:verify over the outgoing link to the claimed domain); db:verify
 * requests from receiving servers are answered on any incoming stream.
 *
 * XEP-0288: with s2s.bidi, an outgoing link asks the peer to use it both
 * ways when the peer offers it, and an incoming stream whose peer asks
 * carries our stanzas to that peer too (only for the domain pairs it
 * authenticated), so two servers need one connection, not two.
 *
 * Dialback keys follow XEP-0185: HMAC-SHA256 keyed with SHA-256 of the
 * server secret over "receiving originating stream-id".
 *
 * Objects are found again by id (DNS answers, verification results):
 * links live in two lists and die independently.
 */
#include "s2s.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "conn.h"
#include "dns.h"
#include "error.h"
#include "framing.h"
#include "hook.h"
#include "host.h"
#include "log.h"
#include "loop.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "stats.h"
#include "tls.h"
#include "xml.h"

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_DB "jabber:server:dialback"
#define NS_DB_FEATURE "urn:xmpp:features:dialback"
#define NS_XMLNS "http://www.w3.org/2000/xmlns/"
#define NS_BIDI "urn:xmpp:bidi"
#define NS_BIDI_FEATURE "urn:xmpp:features:bidi"
#define DEFAULT_PORT 5269

enum auth { A_NONE = 0, A_EXTERNAL, A_DIALBACK };
static const char *const auth_names[] = {"none", "external", "dialback"};

/* ---- outgoing ---- */

enum out_state {
    O_RESOLVING = 0, /* DNS */
    O_CONNECTING,    /* TCP */
    O_STREAM,        /* header sent, negotiating */
    O_AUTH,          /* EXTERNAL or dialback key sent */
    O_READY,         /* authenticated: stanzas flow */
    O_CLOSING,       /* closed on purpose, waiting for the socket */
};
static const char *const out_state_names[] = {
    "resolving", "connecting", "negotiating", "authenticating", "ready",
    "closing",
};

struct target {
    char *host; /* name or IP literal */
    int port;   /* TCP port */
    int tls;    /* PL_TLS_STARTTLS or PL_TLS_DIRECT */
    int prio;   /* SRV priority (sorting) */
    int weight; /* SRV weight (sorting) */
};

/* A db:verify this server must send for one of its incoming streams. */
struct verify {
    char *id;            /* the incoming stream's id */
    char *key;           /* the key the originating server sent */
    uint64_t in_id;      /* the incoming stream (struct in id) */
    unsigned sent : 1;   /* written on the link */
    struct verify *next; /* more for the same link */
};

struct out {
    uint64_t id;                  /* for DNS answers and lookups */
    char *local, *remote;         /* domains: ours and the peer's */
    int state;                    /* enum out_state */
    int auth;                     /* enum auth once ready */
    struct pl_conn *conn;         /* NULL until connected */
    int fd;                       /* connecting socket, -1 if none */
    struct pl_io cio;             /* watches fd while connecting */
    struct pl_xml_parser *xml;    /* the peer's stream */
    struct target *targets;       /* where to connect, in order */
    int ntargets, ti;             /* count, current */
    struct sockaddr_storage *addrs; /* the current target's addresses */
    int naddrs, ai;               /* count, current */
    int srv_left;                 /* SRV answers outstanding */
    struct target *srv;           /* SRV targets gathered so far */
    int nsrv;                     /* their count */
    int srv_dot;                  /* an SRV answer said "no service" */
    char srv_why[96];             /* the last SRV failure */
    struct pl_stanza **q;         /* queued until ready (refs) */
    size_t qn, qcap, qbytes;      /* count, capacity, bytes */
    struct verify *verifies;      /* db:verify to send on this link */
    char sid[128];                /* the peer's stream id */
    char why[384];                /* the last problem, for logs and ctl */
    unsigned secure : 1;          /* TLS is up */
    unsigned cert_ok : 1;         /* the peer's certificate is valid */
    unsigned ext_failed : 1;      /* SASL EXTERNAL was refused */
    unsigned fatal : 1;           /* no point trying other addresses */
    unsigned detached : 1;        /* out of the lookup list */
    unsigned bidi : 1;            /* XEP-0288 requested: the peer may
                                   * send its stanzas back on this link */
    unsigned long sent;           /* stanzas written */
    unsigned long received;       /* stanzas routed (bidi) */
    uint64_t created_ms;          /* loop time at creation */
    uint64_t last_ms;             /* loop time of the last stanza */
    struct pl_timer timer;        /* connect deadline, then idle checks */
    struct out *next;             /* all links */
};

/* ---- incoming ---- */

struct pair {
    char *from;        /* the peer's domain */
    char *to;          /* our domain */
    int valid;         /* dialback verified (or certificate) */
    struct pair *next; /* more on the stream */
};

struct in {
    uint64_t id;               /* for verification results */
    struct pl_conn *conn;      /* NULL once closed */
    struct pl_xml_parser *xml; /* stream parser */
    struct pl_host *host;      /* named by the header's 'to' */
    char *from_hdr;            /* the header's 'from', normalized, or NULL */
    char *remote;              /* domain authenticated by EXTERNAL */
    struct pair *pairs;        /* dialback domain pairs */
    int tls_mode;              /* listener's enum pl_tls_mode */
    int auth;                  /* enum auth, for ctl */
    char sid[24];              /* our stream id */
    char why[256];             /* why it ended, for the log */
    unsigned secure : 1;       /* TLS is up */
    unsigned header_sent : 1;  /* our header is out */
    unsigned closing : 1;      /* error or close sent */
    unsigned cert_checked : 1; /* cert_ok is known for from_hdr */
    unsigned cert_ok : 1;      /* certificate valid for from_hdr */
    unsigned bidi : 1;         /* XEP-0288: we may send to the peer here */
    unsigned long received;    /* stanzas routed */
    unsigned long sent;        /* stanzas written (bidi) */
    uint64_t last_sent_ms;     /* loop time of the last one */
    uint64_t opened_ms;        /* loop time at accept */
    struct pl_timer timer;     /* handshake and idle deadlines */
    struct in *prev, *next;    /* all incoming streams */
};

struct s2s_listener {
    struct pl_listener *l; /* socket */
    int tls;               /* enum pl_tls_mode */
};

static struct pl_settings *S;
static struct pl_config *C;
static struct out *outs;
static struct in *ins;
static struct s2s_listener *listeners;
static int nlisteners;
static uint64_t next_id = 1;
static unsigned long nconns;
static X509_STORE *store;        /* trusted authorities */
static SSL_CTX **client_ctx;     /* per host index, outgoing TLS */
static int nclient_ctx;
static int started;

static void out_fail(struct out *o, int code);
static void out_try_connect(struct out *o);
static void out_next_target(struct out *o);
static void in_answer_verify(uint64_t in_id, const char *local,
                             const char *remote, const char *type);

/* snprintf for reasons, which may be cut (no truncation warning). */
static void whyf(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void whyf(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

static int allowed(const char *method)
{
    return pl_strlist_has(&S->s2s_auth, method);
}

static uint64_t now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

/* XEP-0185 §3: the dialback key for a stream. */
static void dialback_key(const char *receiving, const char *originating,
                         const char *sid, char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    struct pl_str secret = pl_server_secret();
    unsigned char h[SHA256_DIGEST_LENGTH];
    char hk[2 * SHA256_DIGEST_LENGTH + 1];
    SHA256((const unsigned char *)secret.p, secret.len, h);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        hk[2 * i] = hex[h[i] >> 4];
        hk[2 * i + 1] = hex[h[i] & 15];
    }
    hk[2 * SHA256_DIGEST_LENGTH] = '\0';
    struct pl_buf msg = {0};
    pl_buf_printf(&msg, "%s %s %s", receiving, originating, sid);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    HMAC(EVP_sha256(), hk, (int)strlen(hk),
         (const unsigned char *)msg.data + msg.off, msg.len, mac, &mlen);
    pl_buf_reset(&msg);
    size_t i;
    for (i = 0; i < mlen && 2 * i + 2 < n; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[2 * i] = '\0';
}

static void write_str(struct pl_conn *c, const char *s)
{
    if (c)
        pl_conn_write(c, s, strlen(s));
}

static void write_buf(struct pl_conn *c, struct pl_buf *b)
{
    if (c)
        pl_conn_write(c, b->data + b->off, b->len);
    pl_buf_reset(b);
}

/* A dialback element: <db:NAME from to [id] [type]>[key]</db:NAME>. */
static void db_element(struct pl_conn *c, const char *name, const char *from,
                       const char *to, const char *id, const char *type,
                       const char *key, const char *error)
{
    struct pl_buf b = {0};
    pl_buf_printf(&b, "<db:%s from='", name);
    pl_buf_append_escaped(&b, from, strlen(from), 1);
    pl_buf_append_str(&b, "' to='");
    pl_buf_append_escaped(&b, to, strlen(to), 1);
    pl_buf_append_str(&b, "'");
    if (id) {
        pl_buf_append_str(&b, " id='");
        pl_buf_append_escaped(&b, id, strlen(id), 1);
        pl_buf_append_str(&b, "'");
    }
    if (type)
        pl_buf_printf(&b, " type='%s'", type);
    if (key) {
        pl_buf_append_str(&b, ">");
        pl_buf_append_escaped(&b, key, strlen(key), 0);
        pl_buf_printf(&b, "</db:%s>", name);
    } else if (error) {
        /* XEP-0220 §2.4: errors as stanza errors. */
        pl_buf_printf(&b, "><error type='cancel'><%s xmlns='" PL_NS_STANZAS
                          "'/></error></db:%s>",
                      error, name);
    } else {
        pl_buf_append_str(&b, "/>");
    }
    write_buf(c, &b);
}

static struct pl_conn_limits conn_limits(void)
{
    struct pl_conn_limits lim = {(size_t)S->max_outbuf, (size_t)S->read_rate,
                                 (size_t)S->read_burst};
    return lim;
}

static SSL_CTX *client_ctx_for(const char *local)
{
    for (int i = 0; i < nclient_ctx; i++) {
        struct pl_host *h = pl_host_at(i);
        if (h && strcmp(h->domain, local) == 0)
            return client_ctx[i];
    }
    return NULL;
}

/* ---- outgoing: lookup and queue ---- */

static struct out *out_by_id(uint64_t id)
{
    for (struct out *o = outs; o; o = o->next)
        if (o->id == id)
            return o;
    return NULL;
}

static struct out *out_find(const char *local, const char *remote)
{
    for (struct out *o = outs; o; o = o->next)
        if (!o->detached && strcmp(o->local, local) == 0 &&
            strcmp(o->remote, remote) == 0)
            return o;
    return NULL;
}

static void out_unlink(struct out *o)
{
    for (struct out **pp = &outs; *pp; pp = &(*pp)->next)
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
static void out_detach(struct out *o)
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
    o->last_ms = now_ms();
    pl_stat_inc(stanzas_out);
}

/* Sends the db:verify requests not yet sent (the stream is usable). */
static void out_send_verifies(struct out *o)
{
    for (struct verify *v = o->verifies; v; v = v->next) {
        if (v->sent)
            continue;
        v->sent = 1;
        db_element(o->conn, "verify", o->local, o->remote, v->id, NULL,
                   v->key, NULL);
    }
}

static void out_ready(struct out *o, int auth)
{
    o->state = O_READY;
    o->auth = auth;
    o->why[0] = '\0';
    o->last_ms = now_ms();
    pl_timer_start(pl_server_loop(), &o->timer, 5000);
    pl_log_info("s2s", "link %s -> %s ready (%s, %s%s, %zu queued)",
                o->local, o->remote, auth_names[auth],
                !o->secure ? "no TLS"
                : o->ti < o->ntargets &&
                        o->targets[o->ti].tls == PL_TLS_DIRECT
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
static void out_fail(struct out *o, int code)
{
    if (o->detached)
        return;
    const char *cond, *type;
    pl_error_condition(code, &cond, &type);
    pl_log_warn("s2s", "link %s -> %s failed: %s; %zu queued stanza%s "
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
    out_detach(o);
    for (size_t i = 0; i < qn; i++) {
        pl_route_error(q[i], code, why[0] ? why : NULL);
        pl_stanza_unref(q[i]);
    }
    pl_free(q);
    while (vs) {
        struct verify *v = vs;
        vs = v->next;
        in_answer_verify(v->in_id, local, remote, NULL);
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
            whyf(prev, sizeof(prev), "still %s with %s port %d%s",
                 out_state_names[o->state], o->targets[o->ti].host,
                 o->targets[o->ti].port,
                 o->conn && o->conn->tls == PL_CONN_HANDSHAKE
                     ? " (TLS handshake not finished)"
                     : "");
        else if (!prev[0])
            whyf(prev, sizeof(prev), "still %s", out_state_names[o->state]);
        whyf(o->why, sizeof(o->why), "timeout: no link within %ld s%s%s",
                 S->s2s_connect_timeout, prev[0] ? "; last problem: " : "",
                 prev);
        out_fail(o, PL_EREMOTE_SERVER_TIMEOUT);
        return;
    }
    uint64_t idle = (uint64_t)S->s2s_idle_timeout * 1000;
    uint64_t now = now_ms();
    uint64_t last = o->last_ms;
    if (o->conn && o->conn->last_read_ms > last)
        last = o->conn->last_read_ms;
    if (now - last >= idle) {
        pl_log_info("s2s", "link %s -> %s idle for %ld s, closing", o->local,
                    o->remote, S->s2s_idle_timeout);
        write_str(o->conn, "</stream:stream>");
        out_detach(o);
        return;
    }
    pl_timer_start(pl_server_loop(), t, 5000);
}

/* A new link, not started yet (out_start may end it at once). */
static struct out *out_new(const char *local, const char *remote)
{
    struct out *o = pl_calloc(1, sizeof(*o));
    o->id = next_id++;
    o->local = pl_strdup(local);
    o->remote = pl_strdup(remote);
    o->fd = -1;
    o->created_ms = now_ms();
    pl_timer_init(&o->timer, on_out_timer, o);
    o->next = outs;
    outs = o;
    return o;
}

static void out_start(struct out *o);

static int in_send_bidi(const char *local, const char *remote,
                        struct pl_stanza *st);

/* Hands st (borrowed) to the link local -> remote: an outgoing link
 * (ready, or queueing while it is set up), else an incoming stream from
 * remote that is bidirectional (XEP-0288), else a new outgoing link. */
static int out_send(const char *local, const char *remote,
                    struct pl_stanza *st)
{
    struct out *o = out_find(local, remote);
    if (o && o->state == O_READY && o->conn) {
        out_write_stanza(o, st);
        return PL_HANDLED;
    }
    if (!o && in_send_bidi(local, remote, st))
        return PL_HANDLED;
    struct pl_str x = pl_stanza_serialize(st, PL_NS_SERVER);
    size_t queued = o ? o->qbytes : 0;
    if (queued + x.len > (size_t)S->s2s_max_queue_bytes) {
        pl_log_warn("s2s", "link %s -> %s: %zu bytes queued, refusing more "
                    "(s2s.max_queue_bytes)", local, remote, queued);
        return PL_ERESOURCE_CONSTRAINT;
    }
    int fresh = !o;
    if (!o)
        o = out_new(local, remote);
    if (o->qn == o->qcap) {
        o->qcap = o->qcap ? o->qcap * 2 : 8;
        o->q = pl_realloc(o->q, o->qcap * sizeof(*o->q));
    }
    o->q[o->qn++] = pl_stanza_ref(st);
    o->qbytes += x.len;
    if (fresh)
        out_start(o); /* may bounce st and end the link before returning */
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

static void on_srv(int rc, const char *why, const struct pl_dns_srv *v,
                   int n, void *data)
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
            o->srv = pl_realloc(o->srv, (size_t)(o->nsrv + 1) *
                                            sizeof(*o->srv));
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
        whyf(o->why, sizeof(o->why), "DNS: %s publishes that it offers "
                 "no XMPP server service (SRV target \".\")", o->remote);
        o->fatal = 1;
        out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
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

static void on_addr(int rc, const char *why,
                    const struct sockaddr_storage *v, int n, void *data)
{
    struct out *o = out_by_id((uint64_t)(uintptr_t)data);
    if (!o || o->detached || o->state != O_RESOLVING)
        return;
    struct target *t = &o->targets[o->ti];
    if (rc != PL_OK) {
        if (o->srv_why[0] && o->ntargets == 1)
            whyf(o->why, sizeof(o->why), "DNS: no address for %s (%s; "
                     "SRV lookup: %s)", t->host, why, o->srv_why);
        else
            whyf(o->why, sizeof(o->why), "DNS: no address for %s (%s)",
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
        out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
        return;
    }
    o->state = O_RESOLVING;
    struct target *t = &o->targets[o->ti];
    pl_dns_addr(t->host, t->port, on_addr, (void *)(uintptr_t)o->id);
}

static void out_start(struct out *o)
{
    pl_timer_start(pl_server_loop(), &o->timer,
                   (uint64_t)S->s2s_connect_timeout * 1000);
    o->state = O_RESOLVING;
    for (int i = 0; i < C->nroutes; i++) {
        struct pl_s2s_route *r = &C->routes[i];
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
    write_buf(o->conn, &b);
}

static void out_connected(struct out *o)
{
    int fd = o->fd;
    pl_io_stop(&o->cio);
    o->fd = -1;
    struct pl_conn_limits lim = conn_limits();
    o->conn = pl_conn_new(pl_server_loop(), fd, &out_conn_ops, o, &lim);
    nconns++;
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
        ctx = client_ctx_for(o->local);
        if (!ctx) {
            whyf(o->why, sizeof(o->why), "TLS: %s has no certificate, "
                     "cannot use direct TLS", o->local);
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
        whyf(o->why, sizeof(o->why), "TCP: cannot connect to %s (%s): "
                 "%s", o->targets[o->ti].host, a, strerror(err));
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
        whyf(o->why, sizeof(o->why), "TCP: cannot connect to %s (%s): "
                 "%s", o->targets[o->ti].host, a, strerror(errno));
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
    nconns--;
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
        whyf(o->why, sizeof(o->why), "TLS: handshake with %s failed: %s",
                 o->targets[o->ti].host, conn->error);
    else if (!o->why[0])
        whyf(o->why, sizeof(o->why), "stream: %s closed the connection "
                 "while %s", o->targets[o->ti].host,
                 out_state_names[o->state]);
    if (o->fatal) {
        out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
        return;
    }
    o->ai++;
    out_try_connect(o);
}

/* Closes the connection and fails the link (after the socket is gone). */
static void out_abort(struct out *o, int stream_close)
{
    o->fatal = 1;
    if (stream_close)
        write_str(o->conn, "</stream:stream>");
    if (o->conn)
        pl_conn_close(o->conn);
    else
        out_fail(o, PL_EREMOTE_SERVER_NOT_FOUND);
}

static void out_tls_up(struct pl_conn *conn)
{
    struct out *o = conn->data;
    o->secure = 1;
    char why[256];
    if (pl_tls_verify_peer(conn->ssl, store, o->remote, why, sizeof(why)) ==
        PL_OK) {
        o->cert_ok = 1;
    } else if (!allowed("dialback")) {
        whyf(o->why, sizeof(o->why), "certificate: %s (and s2s.auth "
                 "does not allow dialback)", why);
        out_abort(o, 0);
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

static const struct pl_conn_ops out_conn_ops = {out_data, out_tls_up,
                                                out_closed};

static void out_stream_open(void *ud, struct pl_stanza *hdr)
{
    struct out *o = ud;
    struct pl_node *root = pl_stanza_root(hdr);
    const char *content = pl_node_attr(root, "xmlns");
    if (strcmp(root->ns, PL_NS_STREAMS) != 0 || !content ||
        strcmp(content, PL_NS_SERVER) != 0) {
        whyf(o->why, sizeof(o->why), "stream: %s did not answer with "
                 "a jabber:server stream", o->targets[o->ti].host);
        out_abort(o, 1);
        return;
    }
    const char *id = pl_node_attr(root, "id");
    snprintf(o->sid, sizeof(o->sid), "%s", id ? id : "");
    const char *ver = pl_node_attr(root, "version");
    if (!ver || strtol(ver, NULL, 10) < 1) {
        whyf(o->why, sizeof(o->why), "stream: %s speaks an XMPP older "
                 "than 1.0", o->targets[o->ti].host);
        out_abort(o, 1);
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
        out_ready(o, A_EXTERNAL);
        return;
    }
    if (!o->secure) {
        if (pl_node_child(f, "starttls", NS_TLS) && client_ctx_for(o->local)) {
            write_str(o->conn, "<starttls xmlns='" NS_TLS "'/>");
            return;
        }
        if (S->s2s_require_tls) {
            whyf(o->why, sizeof(o->why), "TLS: %s does not offer "
                     "STARTTLS and s2s.require_tls is set",
                     o->targets[o->ti].host);
            out_abort(o, 1);
            return;
        }
    }
    out_send_verifies(o);
    if (S->s2s_bidi && !o->bidi &&
        pl_node_child(f, "bidi", NS_BIDI_FEATURE)) {
        /* XEP-0288 §2.2: after TLS, before authentication. */
        write_str(o->conn, "<bidi xmlns='" NS_BIDI "'/>");
        o->bidi = 1;
    }
    for (int i = 0; i < S->s2s_auth.n; i++) {
        const char *m = S->s2s_auth.v[i];
        if (strcmp(m, "external") == 0 && o->secure && !o->ext_failed &&
            has_mech(f, "EXTERNAL", st)) {
            /* XEP-0178 §2: no authorization identity ("="). */
            write_str(o->conn, "<auth xmlns='" NS_SASL "' "
                               "mechanism='EXTERNAL'>=</auth>");
            o->state = O_AUTH;
            return;
        }
        if (strcmp(m, "dialback") == 0) {
            char key[2 * EVP_MAX_MD_SIZE + 1];
            dialback_key(o->remote, o->local, o->sid, key, sizeof(key));
            db_element(o->conn, "result", o->local, o->remote, NULL, NULL,
                       key, NULL);
            o->state = O_AUTH;
            return;
        }
    }
    whyf(o->why, sizeof(o->why), "authentication: %s offers no method "
             "s2s.auth allows%s", o->remote,
             o->ext_failed ? " (it refused our certificate)" : "");
    out_abort(o, 1);
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
        pl_buf_printf(&b, "<stream:error><%s xmlns='" PL_NS_STREAM_ERRORS
                          "'/></stream:error>", cond);
        write_buf(o->conn, &b);
        whyf(o->why, sizeof(o->why), "stream: %s sent a stanza we refused "
             "with <%s/>", o->remote, cond);
        out_abort(o, 1);
        goto out;
    }
    if (strcmp(f, from->full) != 0)
        pl_stanza_set_attr(st, "from", from->full);
    if (strcmp(t, to->full) != 0)
        pl_stanza_set_attr(st, "to", to->full);
    o->received++;
    o->last_ms = now_ms();
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
    const char *type = pl_node_attr(root, "type");
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
        whyf(o->why, sizeof(o->why), "stream: %s ended the stream with "
                 "<%s/>%s%.*s", o->remote, c ? c->name : "?",
                 text ? ": " : "", (int)tl, text ? text : "");
        out_abort(o, 1);
    } else if (strcmp(root->ns, NS_TLS) == 0 &&
               strcmp(root->name, "proceed") == 0) {
        pl_xml_parser_stop(o->xml);
        pl_conn_starttls(o->conn, client_ctx_for(o->local));
    } else if (strcmp(root->ns, NS_TLS) == 0) {
        whyf(o->why, sizeof(o->why), "TLS: %s refused STARTTLS",
                 o->remote);
        out_abort(o, 1);
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
        if (!allowed("dialback")) {
            whyf(o->why, sizeof(o->why), "certificate: %s refused our "
                     "certificate for %s (SASL <%s/>)", o->remote, o->local,
                     c ? c->name : "?");
            out_abort(o, 1);
            return;
        }
        char key[2 * EVP_MAX_MD_SIZE + 1];
        dialback_key(o->remote, o->local, o->sid, key, sizeof(key));
        db_element(o->conn, "result", o->local, o->remote, NULL, NULL, key,
                   NULL);
    } else if (strcmp(root->ns, NS_DB) == 0 &&
               strcmp(root->name, "result") == 0 && o->state == O_READY) {
        /* XEP-0288 §4: a 'valid' we did not ask for proves nothing; a
         * dialback request from the peer over a bidi link is not taken
         * (it can use a stream of its own). */
        if (!type) {
            const char *f = pl_node_attr(root, "from");
            const char *t = pl_node_attr(root, "to");
            if (f && t)
                db_element(o->conn, "result", t, f, NULL, "error", NULL,
                           "feature-not-implemented");
        }
    } else if (strcmp(root->ns, NS_DB) == 0 &&
               strcmp(root->name, "result") == 0) {
        if (type && strcmp(type, "valid") == 0) {
            out_ready(o, A_DIALBACK);
        } else {
            struct pl_node *e = pl_node_child(root, "error", NULL);
            struct pl_node *c = e ? pl_node_first_elem(e) : NULL;
            whyf(o->why, sizeof(o->why), "dialback: %s %s our key for "
                     "%s%s%s%s", o->remote,
                     type && strcmp(type, "invalid") == 0 ? "rejected"
                                                         : "could not verify",
                     o->local, c ? " (" : "", c ? c->name : "", c ? ")" : "");
            out_abort(o, 1);
        }
    } else if (strcmp(root->ns, NS_DB) == 0 &&
               strcmp(root->name, "verify") == 0) {
        const char *id = pl_node_attr(root, "id");
        struct verify **pp = &o->verifies, *v;
        while ((v = *pp) && !(v->sent && id && strcmp(v->id, id) == 0))
            pp = &v->next;
        if (v) {
            *pp = v->next;
            in_answer_verify(v->in_id, o->local, o->remote,
                             type && strcmp(type, "valid") == 0 ? "valid"
                                                                : "invalid");
            pl_free(v->id);
            pl_free(v->key);
            pl_free(v);
        }
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
        whyf(o->why, sizeof(o->why), "stream: %s closed the stream "
                 "while %s", o->remote, out_state_names[o->state]);
    if (o->state != O_READY)
        o->fatal = 1;
    write_str(o->conn, "</stream:stream>");
    if (o->conn)
        pl_conn_close(o->conn);
}

static void out_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct out *o = ud;
    whyf(o->why, sizeof(o->why), "stream: %s sent bad XML (%s)",
             o->remote, text ? text : pl_xml_error_condition(err));
    out_abort(o, 0);
}

static const struct pl_xml_callbacks out_xml_cb = {
    out_stream_open, out_stanza, out_stream_close, out_xml_error,
};

/* ---- incoming ---- */

static struct in *in_by_id(uint64_t id)
{
    for (struct in *i = ins; i; i = i->next)
        if (i->id == id)
            return i;
    return NULL;
}

static void in_send_header(struct in *i)
{
    struct pl_buf b = {0};
    pl_stream_id(i->sid, sizeof(i->sid));
    pl_stream_header(&b, PL_NS_SERVER,
                     i->host ? i->host->domain : pl_host_at(0)->domain,
                     i->from_hdr, i->sid, PL_STREAM_V1 | PL_STREAM_DIALBACK);
    write_buf(i->conn, &b);
    i->header_sent = 1;
}

/* Ends the stream with an RFC 6120 §4.9.3 condition. */
static void in_error(struct in *i, const char *cond, const char *text)
{
    if (i->closing || !i->conn)
        return;
    if (!i->header_sent)
        in_send_header(i);
    struct pl_buf b = {0};
    pl_stream_error_xml(&b, cond, text);
    write_buf(i->conn, &b);
    whyf(i->why, sizeof(i->why), "stream error <%s/>%s%s sent", cond,
             text ? ": " : "", text ? text : "");
    i->closing = 1;
    pl_stat_inc(stream_errors);
    pl_conn_close(i->conn);
}

static int cert_valid_for(struct in *i, const char *domain, char *why,
                          size_t n)
{
    if (!i->secure || !i->conn || !i->conn->ssl) {
        snprintf(why, n, "no TLS");
        return 0;
    }
    return pl_tls_verify_peer(i->conn->ssl, store, domain, why, n) == PL_OK;
}

static void in_features(struct in *i)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<stream:features>");
    if (!i->remote) {
        if (!i->secure && i->host && i->host->tls &&
            i->tls_mode != PL_TLS_NONE) {
            pl_buf_append_str(&b, "<starttls xmlns='" NS_TLS "'>");
            if (S->s2s_require_tls)
                pl_buf_append_str(&b, "<required/>");
            pl_buf_append_str(&b, "</starttls>");
        }
        if (i->secure || !S->s2s_require_tls) {
            if (i->secure && i->from_hdr && allowed("external")) {
                char why[256];
                i->cert_ok = cert_valid_for(i, i->from_hdr, why, sizeof(why));
                i->cert_checked = 1;
                if (i->cert_ok)
                    pl_buf_append_str(&b, "<mechanisms xmlns='" NS_SASL "'>"
                                          "<mechanism>EXTERNAL</mechanism>"
                                          "</mechanisms>");
                else
                    pl_log_info("s2s", "incoming link from %s (%s): no SASL "
                                "EXTERNAL: %s", i->from_hdr, i->conn->ip,
                                why);
            }
            if (allowed("dialback"))
                pl_buf_append_str(&b, "<dialback xmlns='" NS_DB_FEATURE "'>"
                                      "<errors/></dialback>");
            if (S->s2s_bidi)
                pl_buf_append_str(&b, "<bidi xmlns='" NS_BIDI_FEATURE
                                      "'/>");
        }
    }
    pl_buf_append_str(&b, "</stream:features>");
    write_buf(i->conn, &b);
}

static void in_stream_open(void *ud, struct pl_stanza *hdr)
{
    struct in *i = ud;
    struct pl_node *root = pl_stanza_root(hdr);
    if (strcmp(root->ns, PL_NS_STREAMS) != 0 ||
        strcmp(root->name, "stream") != 0) {
        in_error(i, strcmp(root->ns, PL_NS_STREAMS) ? "invalid-namespace"
                                                    : "bad-format", NULL);
        return;
    }
    const char *content = pl_node_attr(root, "xmlns");
    if (!content || strcmp(content, PL_NS_SERVER) != 0) {
        in_error(i, "invalid-namespace", NULL);
        return;
    }
    const char *to = pl_node_attr(root, "to");
    const char *from = pl_node_attr(root, "from");
    struct pl_host *h = NULL;
    char *dom = NULL;
    if (to && pl_jid_prep_domain(pl_str_c(to), &dom) == PL_OK)
        h = pl_host_find(dom);
    pl_free(dom);
    if (!h) {
        in_error(i, "host-unknown", NULL);
        return;
    }
    i->host = h;
    pl_free(i->from_hdr);
    i->from_hdr = NULL;
    if (from && pl_jid_prep_domain(pl_str_c(from), &i->from_hdr) != PL_OK) {
        in_error(i, "invalid-from", NULL);
        return;
    }
    in_send_header(i);
    const char *ver = pl_node_attr(root, "version");
    if (!ver || strtol(ver, NULL, 10) < 1) {
        in_error(i, "unsupported-version", NULL);
        return;
    }
    in_features(i);
}

static void in_restart(struct in *i)
{
    pl_xml_parser_stop(i->xml);
    pl_xml_parser_reset(i->xml);
    i->header_sent = 0;
}

static void in_sasl(struct in *i, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *mech = pl_node_attr(root, "mechanism");
    const char *cond = NULL;
    if (strcmp(root->name, "auth") != 0) {
        cond = "aborted";
    } else if (i->remote || !mech || strcmp(mech, "EXTERNAL") != 0 ||
               !allowed("external") || !i->from_hdr) {
        cond = "invalid-mechanism";
    } else {
        size_t len = 0;
        const char *t = pl_node_text(st, root, &len);
        struct pl_buf az = {0};
        if (t && len && !(len == 1 && t[0] == '=') &&
            pl_base64_decode((struct pl_str){t, len}, &az) != PL_OK) {
            cond = "incorrect-encoding";
        } else if (az.len && (az.len != strlen(i->from_hdr) ||
                              memcmp(az.data + az.off, i->from_hdr,
                                     az.len) != 0)) {
            cond = "invalid-authzid"; /* XEP-0178 §2 step 8 */
        } else if (!i->cert_checked || !i->cert_ok) {
            cond = "not-authorized";
        }
        pl_buf_reset(&az);
    }
    if (cond) {
        struct pl_buf b = {0};
        pl_buf_printf(&b, "<failure xmlns='" NS_SASL "'><%s/></failure>",
                      cond);
        write_buf(i->conn, &b);
        pl_log_info("s2s", "incoming link from %s (%s): SASL EXTERNAL "
                    "refused (%s)", i->from_hdr ? i->from_hdr : "?",
                    i->conn->ip, cond);
        return;
    }
    write_str(i->conn, "<success xmlns='" NS_SASL "'/>");
    i->remote = pl_strdup(i->from_hdr);
    i->auth = A_EXTERNAL;
    pl_log_info("s2s", "incoming link from %s (%s) authenticated with SASL "
                "EXTERNAL%s", i->remote, i->conn->ip,
                i->bidi ? " (bidirectional)" : "");
    in_restart(i);
}

static struct pair *in_pair(struct in *i, const char *from, const char *to)
{
    for (struct pair *p = i->pairs; p; p = p->next)
        if (strcmp(p->from, from) == 0 && strcmp(p->to, to) == 0)
            return p;
    return NULL;
}

/* Outcome of a db:verify for incoming stream in_id: type "valid",
 * "invalid", or NULL when the originating server could not be reached. */
static void in_answer_verify(uint64_t in_id, const char *local,
                             const char *remote, const char *type)
{
    struct in *i = in_by_id(in_id);
    if (!i || !i->conn || i->closing)
        return;
    struct pair *p = in_pair(i, remote, local);
    if (!p)
        return;
    if (type && strcmp(type, "valid") == 0) {
        p->valid = 1;
        if (!i->auth)
            i->auth = A_DIALBACK;
        pl_log_info("s2s", "incoming link from %s (%s) to %s authenticated "
                    "with dialback%s", remote, i->conn->ip, local,
                    i->bidi ? " (bidirectional)" : "");
        db_element(i->conn, "result", local, remote, NULL, "valid", NULL,
                   NULL);
        return;
    }
    pl_log_warn("s2s", "incoming link from %s (%s) to %s: dialback %s", remote,
                i->conn->ip, local,
                type ? "key rejected by the authoritative server"
                     : "could not reach the authoritative server");
    db_element(i->conn, "result", local, remote, NULL, type ? "invalid"
                                                            : "error",
               NULL, type ? NULL : "remote-server-not-found");
    /* XEP-0220 §2.3.1: the pair stays unauthenticated. */
    for (struct pair **pp = &i->pairs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            pl_free(p->from);
            pl_free(p->to);
            pl_free(p);
            break;
        }
}

/* <db:result> from an originating server: verify its key. */
static void in_db_result(struct in *i, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *f = pl_node_attr(root, "from"), *t = pl_node_attr(root, "to");
    char *from = NULL, *to = NULL;
    size_t klen = 0;
    const char *key = pl_node_text(st, root, &klen);
    if (!allowed("dialback")) {
        in_error(i, "not-authorized", "dialback is not allowed here");
        goto out;
    }
    if (S->s2s_require_tls && !i->secure) {
        in_error(i, "policy-violation", "TLS is required");
        goto out;
    }
    if (!f || pl_jid_prep_domain(pl_str_c(f), &from) != PL_OK ||
        pl_host_find(from)) {
        /* Not a domain, or one of ours: nobody else speaks for it. */
        in_error(i, "invalid-from", NULL);
        goto out;
    }
    if (!t || pl_jid_prep_domain(pl_str_c(t), &to) != PL_OK ||
        !pl_host_find(to)) {
        db_element(i->conn, "result", t ? t : i->host->domain, from, NULL,
                   "error", NULL, "item-not-found");
        goto out;
    }
    if (!key || !klen) {
        in_error(i, "bad-format", "dialback key missing");
        goto out;
    }
    struct pair *p = in_pair(i, from, to);
    if (p && p->valid) {
        db_element(i->conn, "result", to, from, NULL, "valid", NULL, NULL);
        goto out;
    }
    if (!p) {
        p = pl_calloc(1, sizeof(*p));
        p->from = pl_strdup(from);
        p->to = pl_strdup(to);
        p->next = i->pairs;
        i->pairs = p;
    }
    /* The claimed domain's own certificate is as good as its answer
     * (XEP-0344 §2.4); otherwise ask it (XEP-0220 §2.2). */
    char why[256];
    if (allowed("external") && cert_valid_for(i, from, why, sizeof(why))) {
        in_answer_verify(i->id, to, from, "valid");
        goto out;
    }
    struct out *o = out_find(to, from);
    int fresh = !o;
    if (!o)
        o = out_new(to, from);
    struct verify *v = pl_calloc(1, sizeof(*v));
    v->id = pl_strdup(i->sid);
    v->key = pl_strndup(key, klen);
    v->in_id = i->id;
    v->next = o->verifies;
    o->verifies = v;
    if (fresh)
        out_start(o); /* may answer (error) and end the link at once */
    else if (o->conn && (o->state == O_AUTH || o->state == O_READY))
        out_send_verifies(o);
out:
    pl_free(from);
    pl_free(to);
}

/* <db:verify> from a receiving server: we are the authoritative one. */
static void in_db_verify(struct in *i, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *f = pl_node_attr(root, "from"), *t = pl_node_attr(root, "to");
    const char *id = pl_node_attr(root, "id");
    size_t klen = 0;
    const char *key = pl_node_text(st, root, &klen);
    char *from = NULL, *to = NULL;
    if (!f || !t || !id || pl_jid_prep_domain(pl_str_c(f), &from) != PL_OK ||
        pl_jid_prep_domain(pl_str_c(t), &to) != PL_OK) {
        in_error(i, "bad-format", "db:verify needs from, to and id");
        goto out;
    }
    if (!pl_host_find(to)) {
        db_element(i->conn, "verify", t, from, id, "error", NULL,
                   "item-not-found");
        goto out;
    }
    char want[2 * EVP_MAX_MD_SIZE + 1];
    dialback_key(from, to, id, want, sizeof(want));
    int ok = key && klen == strlen(want) && CRYPTO_memcmp(key, want, klen) == 0;
    db_element(i->conn, "verify", to, from, id, ok ? "valid" : "invalid",
               NULL, NULL);
    pl_log_debug("s2s", "dialback verify from %s for %s: %s", from, to,
                 ok ? "valid" : "invalid");
out:
    pl_free(from);
    pl_free(to);
}

/* A stanza on an authenticated stream (RFC 6120 §8.1.1.2, §8.1.2.2). */
static void in_route(struct in *i, struct pl_stanza *st)
{
    const char *f = pl_stanza_attr(st, "from");
    const char *t = pl_stanza_attr(st, "to");
    struct pl_jid *from = NULL, *to = NULL;
    if (!f || !t) {
        in_error(i, "improper-addressing", NULL);
        return;
    }
    if (pl_jid_parse(pl_str_c(f), &from) != PL_OK) {
        in_error(i, "invalid-from", NULL);
        goto out;
    }
    if (pl_jid_parse(pl_str_c(t), &to) != PL_OK) {
        /* The sender is known: a stanza error, not a stream error. */
        pl_route_error(st, PL_EJID_MALFORMED, NULL);
        goto out;
    }
    if (!pl_host_find(to->domain)) {
        in_error(i, "host-unknown", NULL);
        goto out;
    }
    struct pair *p = in_pair(i, from->domain, to->domain);
    int ok = (i->remote && strcmp(i->remote, from->domain) == 0) ||
             (p && p->valid);
    if (!ok) {
        in_error(i, "invalid-from", NULL);
        goto out;
    }
    if (strcmp(f, from->full) != 0)
        pl_stanza_set_attr(st, "from", from->full);
    if (strcmp(t, to->full) != 0)
        pl_stanza_set_attr(st, "to", to->full);
    i->received++;
    pl_stat_inc(stanzas_in);
    pl_route(st, from, to, NULL);
out:
    pl_jid_free(from);
    pl_jid_free(to);
}

static void in_stanza(void *ud, struct pl_stanza *st)
{
    struct in *i = ud;
    struct pl_node *root = pl_stanza_root(st);
    if (i->closing)
        goto out;
    if (strcmp(root->ns, NS_TLS) == 0 && strcmp(root->name, "starttls") == 0) {
        if (i->secure || i->remote || !i->host || !i->host->tls ||
            i->tls_mode == PL_TLS_NONE) {
            write_str(i->conn, "<failure xmlns='" NS_TLS "'/>"
                               "</stream:stream>");
            i->closing = 1;
            pl_conn_close(i->conn);
            goto out;
        }
        write_str(i->conn, "<proceed xmlns='" NS_TLS "'/>");
        in_restart(i);
        pl_conn_starttls(i->conn, i->host->tls->ctx);
        goto out;
    }
    if (strcmp(root->ns, NS_SASL) == 0) {
        if (!i->secure)
            in_error(i, "policy-violation", "SASL EXTERNAL needs TLS");
        else
            in_sasl(i, st);
        goto out;
    }
    if (strcmp(root->ns, NS_BIDI) == 0 && strcmp(root->name, "bidi") == 0) {
        if (!S->s2s_bidi || (S->s2s_require_tls && !i->secure))
            in_error(i, "unsupported-stanza-type", NULL);
        else
            i->bidi = 1; /* XEP-0288 §2.2: no answer */
        goto out;
    }
    if (strcmp(root->ns, NS_DB) == 0 && strcmp(root->name, "result") == 0) {
        in_db_result(i, st);
        goto out;
    }
    if (strcmp(root->ns, NS_DB) == 0 && strcmp(root->name, "verify") == 0) {
        in_db_verify(i, st);
        goto out;
    }
    if (!pl_stream_is_stanza(root, PL_NS_SERVER)) {
        in_error(i, strcmp(root->ns, PL_NS_CLIENT) == 0 ||
                            strcmp(root->ns, "") == 0
                        ? "invalid-namespace"
                        : "unsupported-stanza-type",
                 NULL);
        goto out;
    }
    if (!i->remote && !i->pairs) {
        in_error(i, "not-authorized", NULL);
        goto out;
    }
    in_route(i, st);
out:
    pl_stanza_unref(st);
}

static void in_stream_close(void *ud)
{
    struct in *i = ud;
    if (i->closing || !i->conn)
        return;
    write_str(i->conn, "</stream:stream>");
    i->closing = 1;
    pl_conn_close(i->conn);
}

static void in_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct in *i = ud;
    in_error(i, pl_xml_error_condition(err), NULL);
}

static const struct pl_xml_callbacks in_xml_cb = {
    in_stream_open, in_stanza, in_stream_close, in_xml_error,
};

static void in_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct in *i = conn->data;
    pl_stat_add(bytes_in, n);
    if (!i->closing)
        pl_xml_parser_feed(i->xml, p, n);
}

static void in_tls_up(struct pl_conn *conn)
{
    struct in *i = conn->data;
    i->secure = 1;
}

static void in_closed(struct pl_conn *conn)
{
    struct in *i = conn->data;
    i->conn = NULL;
    nconns--;
    if (i->prev)
        i->prev->next = i->next;
    else
        ins = i->next;
    if (i->next)
        i->next->prev = i->prev;
    if (!i->remote && !i->pairs)
        pl_log_info("s2s", "incoming connection from %s:%d (%s) closed "
                    "before authentication%s%s%s%s", conn->ip, conn->port,
                    i->from_hdr ? i->from_hdr : "domain unknown",
                    conn->error ? ": TLS: " : "",
                    conn->error ? conn->error : "",
                    i->why[0] ? ": " : "", i->why);
    else
        pl_log_info("s2s", "incoming link from %s closed (%lu stanzas)",
                    i->remote ? i->remote : i->pairs->from, i->received);
    pl_timer_stop(&i->timer);
    pl_xml_parser_free(i->xml);
    while (i->pairs) {
        struct pair *p = i->pairs;
        i->pairs = p->next;
        pl_free(p->from);
        pl_free(p->to);
        pl_free(p);
    }
    pl_free(i->from_hdr);
    pl_free(i->remote);
    pl_free(i);
}

static const struct pl_conn_ops in_conn_ops = {in_data, in_tls_up, in_closed};

static void on_in_timer(struct pl_timer *t)
{
    struct in *i = t->data;
    if (!i->conn || i->closing)
        return;
    uint64_t now = now_ms();
    int authed = i->remote || i->pairs;
    if (!authed && now - i->opened_ms >= (uint64_t)S->handshake_timeout *
                                             1000) {
        in_error(i, "connection-timeout", "handshake took too long");
        return;
    }
    uint64_t last = i->conn->last_read_ms > i->last_sent_ms
                        ? i->conn->last_read_ms
                        : i->last_sent_ms;
    if (now - last >= (uint64_t)S->s2s_idle_timeout * 1000) {
        in_stream_close(i);
        return;
    }
    pl_timer_start(pl_server_loop(), t, authed ? 5000 : 1000);
}

static void on_accept(struct pl_listener *l, int fd,
                      const struct sockaddr_storage *addr, void *data)
{
    struct s2s_listener *sl = data;
    struct pl_conn_limits lim = conn_limits();
    struct in *i = pl_calloc(1, sizeof(*i));
    i->id = next_id++;
    i->conn = pl_conn_new(pl_server_loop(), fd, &in_conn_ops, i, &lim);
    i->tls_mode = sl->tls;
    i->opened_ms = now_ms();
    nconns++;
    i->next = ins;
    if (ins)
        ins->prev = i;
    ins = i;
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    i->xml = pl_xml_parser_new(&xl, &in_xml_cb, i);
    pl_timer_init(&i->timer, on_in_timer, i);
    pl_timer_start(pl_server_loop(), &i->timer, 1000);
    /* Peers authenticate with their certificate (XEP-0178): ask for it. */
    pl_conn_set_tls_role(i->conn, 0, NULL, 1);
    SSL_CTX *ctx = NULL;
    if (sl->tls == PL_TLS_DIRECT) {
        struct pl_host *h = pl_host_at(0);
        if (!h->tls) {
            i->closing = 1;
            pl_conn_close(i->conn);
            return;
        }
        ctx = h->tls->ctx;
    }
    pl_conn_start(i->conn, ctx);
}

/* Writes st on an incoming bidirectional stream authenticated for
 * remote -> local, if there is one (XEP-0288 §2.2: EXTERNAL authenticates
 * the stream's 'to' domain, dialback each verified pair). */
static int in_send_bidi(const char *local, const char *remote,
                        struct pl_stanza *st)
{
    for (struct in *i = ins; i; i = i->next) {
        if (!i->bidi || !i->conn || i->closing || !i->host)
            continue;
        struct pair *p = in_pair(i, remote, local);
        int ok = (i->remote && strcmp(i->remote, remote) == 0 &&
                  strcmp(i->host->domain, local) == 0) ||
                 (p && p->valid);
        if (!ok)
            continue;
        struct pl_str x = pl_stanza_serialize(st, PL_NS_SERVER);
        pl_conn_write(i->conn, x.p, x.len);
        i->sent++;
        i->last_sent_ms = now_ms();
        pl_stat_inc(stanzas_out);
        return 1;
    }
    return 0;
}

/* ---- the router's side ---- */

static int on_route_remote(struct pl_event *ev, void *state)
{
    /* After pl_s2s_stop (shutdown drain) no new link starts: the router
     * answers remote-server-not-found. */
    if (!S->s2s_enable || !started || !ev->from || !ev->to || !ev->stanza)
        return PL_PASS;
    return out_send(ev->host->domain, ev->to->domain, ev->stanza);
}

/* ---- lifetime ---- */

int pl_s2s_start(struct pl_config *cfg)
{
    S = &cfg->s;
    C = cfg;
    if (!S->s2s_enable)
        return PL_OK;
    if (pl_tls_store_load(S->s2s_ca_file, S->s2s_ca_dir, &store) != PL_OK)
        return PL_ETLS;
    if (pl_dns_init(pl_server_loop(), S->s2s_resolver) != PL_OK)
        return PL_EIO;
    nclient_ctx = cfg->nhosts;
    client_ctx = pl_calloc((size_t)cfg->nhosts + 1, sizeof(*client_ctx));
    for (int k = 0; k < cfg->nhosts; k++) {
        struct pl_host *h = pl_host_at(k);
        const char *cert = h->tls ? h->conf->certificate : NULL;
        const char *key = h->tls ? h->conf->key : NULL;
        if (pl_tls_client_ctx(cert, key, &client_ctx[k]) != PL_OK)
            return PL_ETLS;
        /* Last: filters (blocking) see the stanza first. */
        pl_hook_add(h, "route/remote", on_route_remote, -1000, NULL);
    }
    listeners = pl_calloc((size_t)cfg->nlisteners + 1, sizeof(*listeners));
    for (int k = 0; k < cfg->nlisteners; k++) {
        struct pl_listener_conf *lc = &cfg->listeners[k];
        if (strcmp(lc->protocol, "s2s") != 0)
            continue;
        struct s2s_listener *sl = &listeners[nlisteners];
        sl->tls = lc->tls;
        int rc = pl_listener_open(pl_server_loop(), lc->address, lc->port,
                                  on_accept, sl, &sl->l);
        if (rc != PL_OK)
            return rc;
        nlisteners++;
        pl_log_info("s2s", "listening on %s port %d (%s)", lc->address,
                    lc->port,
                    lc->tls == PL_TLS_DIRECT ? "direct TLS"
                    : lc->tls == PL_TLS_STARTTLS ? "STARTTLS" : "plain");
    }
    started = 1;
    pl_log_info("s2s", "federation on: %d static route%s, resolver %s",
                cfg->nroutes, cfg->nroutes == 1 ? "" : "s",
                S->s2s_resolver[0] ? S->s2s_resolver : "of the system");
    return PL_OK;
}

void pl_s2s_stop(void)
{
    if (!started)
        return;
    started = 0;
    while (outs) {
        struct out *o = outs;
        while (o && o->detached)
            o = o->next;
        if (!o)
            break;
        if (o->state == O_READY) {
            write_str(o->conn, "</stream:stream>");
            out_detach(o);
        } else {
            whyf(o->why, sizeof(o->why), "server shutting down");
            out_fail(o, PL_EREMOTE_SERVER_TIMEOUT);
        }
    }
    for (struct in *i = ins; i; i = i->next)
        in_error(i, "system-shutdown", NULL);
    for (int k = 0; k < nlisteners; k++)
        pl_listener_close(listeners[k].l);
    pl_free(listeners);
    listeners = NULL;
    nlisteners = 0;
    pl_dns_shutdown();
}

void pl_s2s_reload(struct pl_config *cfg)
{
    S = &cfg->s;
    C = cfg;
}

unsigned long pl_s2s_count(void)
{
    return nconns;
}

static void json_str(struct pl_buf *b, const char *s)
{
    pl_buf_append_str(b, "\"");
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            pl_buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            pl_buf_printf(b, "\\u%04x", c);
        else
            pl_buf_append(b, s, 1);
    }
    pl_buf_append_str(b, "\"");
}

void pl_s2s_links_json(struct pl_buf *b)
{
    uint64_t now = now_ms();
    int first = 1;
    pl_buf_append_str(b, "[");
    for (struct out *o = outs; o; o = o->next) {
        pl_buf_append_str(b, first ? "{" : ",{");
        first = 0;
        pl_buf_append_str(b, "\"direction\":\"out\",\"local\":");
        json_str(b, o->local);
        pl_buf_append_str(b, ",\"remote\":");
        json_str(b, o->remote);
        pl_buf_printf(b, ",\"state\":\"%s\",\"auth\":\"%s\",\"tls\":%s,"
                         "\"bidi\":%s,\"queued\":%zu,\"queued_bytes\":%zu,"
                         "\"age\":%llu,\"sent\":%lu,\"received\":%lu,"
                         "\"error\":",
                      out_state_names[o->state], auth_names[o->auth],
                      o->secure ? "true" : "false",
                      o->bidi ? "true" : "false", o->qn, o->qbytes,
                      (unsigned long long)((now - o->created_ms) / 1000),
                      o->sent, o->received);
        json_str(b, o->why);
        pl_buf_append_str(b, "}");
    }
    for (struct in *i = ins; i; i = i->next) {
        pl_buf_append_str(b, first ? "{" : ",{");
        first = 0;
        pl_buf_append_str(b, "\"direction\":\"in\",\"local\":");
        json_str(b, i->host ? i->host->domain : "");
        pl_buf_append_str(b, ",\"remote\":");
        json_str(b, i->remote ? i->remote
                    : i->pairs ? i->pairs->from
                    : i->from_hdr ? i->from_hdr : "");
        int authed = i->remote || (i->pairs && i->pairs->valid);
        pl_buf_printf(b, ",\"state\":\"%s\",\"auth\":\"%s\",\"tls\":%s,"
                         "\"bidi\":%s,\"queued\":0,\"queued_bytes\":0,"
                         "\"age\":%llu,\"sent\":%lu,\"received\":%lu,"
                         "\"error\":",
                      i->closing ? "closing" : authed ? "ready"
                                                      : "negotiating",
                      auth_names[i->auth], i->secure ? "true" : "false",
                      i->bidi ? "true" : "false",
                      (unsigned long long)((now - i->opened_ms) / 1000),
                      i->sent, i->received);
        json_str(b, i->why);
        pl_buf_append_str(b, "}");
    }
    pl_buf_append_str(b, "]");
}
