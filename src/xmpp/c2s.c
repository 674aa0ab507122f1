/*
 * c2s.c - client-to-server XML streams; see c2s.h.
 *
 * State machine (RFC 6120 §4-§7):
 *   header -> features -> [STARTTLS -> restart] -> SASL -> restart ->
 *   bind -> bound (stanzas routed)
 * Any violation ends the stream with the stream error the RFC names
 * (§4.9.3), preceded by our stream header if it was not sent yet
 * (§4.9.1.2).  Blocking steps (account lookup, PBKDF2 for PLAIN) run off
 * the loop; their completions find the stream again by session id.
 *
 * Files: this one holds the state machine, stream features, STARTTLS,
 * resource binding, routing of bound stanzas, timers, accept and the
 * lifecycle (hibernation of XEP-0198 sessions included); SASL is in
 * sasl.c, the XEP-0198 elements in c2s_sm.c, headers and stream errors in
 * framing.c; struct c2s and the pl__c2s_* functions they share are in
 * c2s_int.h.
 *
 * Extending: a new negotiation step is a branch of on_stanza and, if it is
 * offered, a feature in send_features; a concern of its own gets a file
 * (see c2s_int.h).  Modules take part through the hooks of c2s.h.
 */
#include "c2s_int.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "framing.h"
#include "host.h"
#include "listen.h"
#include "log.h"
#include "loop.h"
#include "map.h"
#include "random.h"
#include "router.h"
#include "scram.h"
#include "server.h"
#include "sm.h"
#include "storage.h"
#include "stats.h"
#include "work.h"
#include "xml.h"


static unsigned long nconns;
static struct pl_settings *S;            /* core settings in force (limits) */
static const struct pl_c2s_settings *CS; /* the c2s group in force */
static struct c2s *all;                  /* every open stream */
static struct pl_map resumable;          /* XEP-0198 id -> struct c2s */
static int stopping;                     /* the front end stopped */

static unsigned long napped;       /* parsers freed since the last trim */
static struct pl_timer trim_timer; /* hands freed memory back */
static struct pl_work trim_work;   /* malloc_trim off the loop */
static int trim_busy;              /* trim_work is queued */

static const struct pl_session_ops session_ops;

const struct pl_settings *pl__c2s_settings(void)
{
    return S;
}

/* ---- output ---- */

/* One element in n pieces: straight onto the connection over TCP, or
 * framed by the transport. */
static void write_elem(struct c2s *c, const struct pl_str *v, int n)
{
    if (!c->conn)
        return;
    if (c->tr) {
        c->tr->element(c->tdata, v, n);
        return;
    }
    for (int i = 0; i < n; i++)
        pl_conn_write(c->conn, v[i].p, v[i].len);
}

void pl__c2s_out_n(struct c2s *c, const char *p, size_t n)
{
    struct pl_str v = {p, n};
    write_elem(c, &v, 1);
}

void pl__c2s_out(struct c2s *c, const char *s)
{
    pl__c2s_out_n(c, s, strlen(s));
}

void pl__c2s_out_buf(struct c2s *c, struct pl_buf *b)
{
    pl__c2s_out_n(c, b->data + b->off, b->len);
}

static void send_header(struct c2s *c)
{
    pl_stream_id(c->id, 17); /* 64 random bits */
    const char *from = c->host ? c->host->domain : pl_host_at(0)->domain;
    c->header_sent = 1;
    if (c->tr) {
        if (c->conn)
            c->tr->header(c->tdata, from, c->id);
        return;
    }
    struct pl_buf b = {0};
    pl_stream_header(&b, PL_NS_CLIENT, from, NULL, c->id,
                     PL_STREAM_V1 | PL_STREAM_LANG);
    if (c->conn)
        pl_conn_write(c->conn, b.data + b.off, b.len);
    pl_buf_reset(&b);
}

void pl__c2s_end(struct c2s *c)
{
    if (!c->conn)
        return;
    c->closing = 1;
    if (c->tr) {
        c->tr->close(c->tdata);
        return;
    }
    pl_conn_write(c->conn, "</stream:stream>", 16);
    pl_conn_close(c->conn);
}

/* Ends the stream with an RFC 6120 §4.9.3 condition. */
void pl__c2s_stream_error(struct c2s *c, const char *cond, const char *text)
{
    if (c->closing || !c->conn)
        return;
    if (!c->header_sent)
        send_header(c);
    struct pl_buf b = {0};
    pl_stream_error_elem(&b, cond, text);
    pl__c2s_out_buf(c, &b);
    pl_buf_reset(&b);
    /* A client that went silent may come back and resume (XEP-0198 §5);
     * any other stream error ends the session. */
    if (strcmp(cond, "connection-timeout") != 0)
        c->no_resume = 1;
    pl_stat_inc(stream_errors);
    pl_log_debug("c2s", "%s:%d: stream error %s%s%s", c->conn->ip,
                 c->conn->port, cond, text ? ": " : "", text ? text : "");
    pl__c2s_end(c);
}

void pl__c2s_close_stream(struct c2s *c)
{
    if (c->closing || !c->conn)
        return;
    c->no_resume = 1; /* a closed stream ends the session (XEP-0198 §7) */
    if (!c->tr)
        pl_conn_peer_done(c->conn);
    pl__c2s_end(c);
}

/* After the output filters (stream management is the last of them when
 * it is on: it writes through sm_write). */
static void send_stanza(struct pl_session *s, struct pl_stanza *st)
{
    struct c2s *c = s->impl;
    if (!c->conn || c->closing)
        return;
    struct pl_str x = pl_stanza_serialize(st, PL_NS_CLIENT);
    write_elem(c, &x, 1);
}

/* The cached serialization with " to='...'" spliced in after the root's
 * name: a fan-out (a room's broadcast) serializes once for everyone. */
static void send_stanza_to(struct pl_session *s, struct pl_stanza *st,
                           const char *to)
{
    struct c2s *c = s->impl;
    if (!c->conn || c->closing)
        return;
    struct pl_str x = pl_stanza_serialize(st, PL_NS_CLIENT);
    size_t k = 1;
    while (k < x.len && x.p[k] != ' ' && x.p[k] != '>' && x.p[k] != '/')
        k++;
    char head[1200];
    struct pl_buf b = {0};
    size_t tl = strlen(to);
    size_t n = 0;
    int plain = tl < sizeof(head) - 8 && !strpbrk(to, "'&<>\"");
    if (plain) {
        memcpy(head, " to='", 5);
        memcpy(head + 5, to, tl);
        head[5 + tl] = '\'';
        n = tl + 6;
    } else {
        pl_buf_append_str(&b, " to='");
        pl_buf_append_escaped(&b, to, tl, 1);
        pl_buf_append_str(&b, "'");
    }
    struct pl_str v[3] = {{x.p, k},
                          plain ? (struct pl_str){head, n} : pl_buf_str(&b),
                          {x.p + k, x.len - k}};
    write_elem(c, v, 3);
    pl_buf_reset(&b);
}

static void on_resume_timeout(struct pl_timer *t);
static void on_timer(struct pl_timer *t);
static void on_resume_poll(struct pl_timer *t);
static void c2s_free(struct c2s *c);
static void end_session(struct c2s *c);

static void kick(struct pl_session *s, const char *cond, const char *text)
{
    struct c2s *c = s->impl;
    c->no_resume = 1;
    if (c->hibernated) {
        /* Ends on the next loop turn: the caller still holds s. */
        pl_timer_start(pl_server_loop(), &c->timer, 0);
        return;
    }
    pl__c2s_stream_error(c, cond, text);
}

static const char *peer_ip(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    return c->conn ? c->conn->ip : "";
}

static int is_loopback(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    return c->conn && c->conn->is_loopback;
}

static int is_secure(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    return pl__c2s_encrypted(c);
}

/* The transport's name ("websocket", "bosh"), "c2s" over TCP. */
static const char *transport_name(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    return c->tr ? c->tr->name : "c2s";
}

/* Past half of limits.max_outbuf queued, or half the unacknowledged
 * stanzas stream management allows. */
static int congested(const struct pl_session *s)
{
    const struct c2s *c = s->impl;
    if (c->conn && pl_conn_pending(c->conn) * 2 >= (uint64_t)S->max_outbuf)
        return 1;
    return s->sm && pl_sm_congested(s->sm);
}

static const struct pl_session_ops session_ops = {
    .congested = congested,
    .deliver = send_stanza,
    .close = kick,
    .deliver_to = send_stanza_to,
    .peer_ip = peer_ip,
    .is_loopback = is_loopback,
    .is_secure = is_secure,
    .transport = transport_name,
};

/* ---- features ---- */

static int tls_available(struct c2s *c)
{
    return c->host && c->host->tls && c->tls_mode != PL_TLS_NONE && !c->tr;
}

static void send_features(struct c2s *c)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<stream:features>");
    if (!c->authed) {
        int need_tls = !pl__c2s_encrypted(c) && tls_available(c);
        if (need_tls) {
            pl_buf_append_str(&b, "<starttls xmlns='" NS_TLS "'>");
            if (CS->require_encryption)
                pl_buf_append_str(&b, "<required/>");
            pl_buf_append_str(&b, "</starttls>");
        }
        if (pl__c2s_encrypted(c) || !CS->require_encryption) {
            pl__c2s_sasl_features(c, &b);
            struct pl_event ev = {"stream-features/preauth",
                                  c->host,
                                  &c->sess,
                                  NULL,
                                  NULL,
                                  NULL,
                                  &b};
            pl_hook_fire(&ev);
        }
    } else {
        pl_buf_append_str(&b, "<bind xmlns='" NS_BIND "'/>");
        if (CS->sm_enable)
            pl_buf_append_str(&b, "<sm xmlns='" PL_NS_SM "'/>");
        struct pl_event ev =
            {"stream-features", c->host, &c->sess, NULL, NULL, NULL, &b};
        pl_hook_fire(&ev);
    }
    pl_buf_append_str(&b, "</stream:features>");
    pl__c2s_out_buf(c, &b);
    pl_buf_reset(&b);
}

/* ---- stream header ---- */

/* The client's stream header (or RFC 7395 <open/>) names to and version. */
static void stream_open(struct c2s *c, const char *to, const char *ver)
{
    struct pl_host *h = NULL;
    if (to) {
        char *dom = NULL;
        if (pl_jid_prep_domain(pl_str_c(to), &dom) == PL_OK)
            h = pl_host_find(dom);
        pl_free(dom);
    } else {
        h = c->host ? c->host : pl_host_at(0);
    }
    if (!h || (c->host && h != c->host)) {
        pl__c2s_stream_error(c, "host-unknown", NULL);
        return;
    }
    c->host = h;
    send_header(c);
    if (!ver || strtol(ver, NULL, 10) < 1) {
        pl__c2s_stream_error(c, "unsupported-version", NULL);
        return;
    }
    c->state = ST_FEATURES;
    send_features(c);
}

static void on_stream_open(void *ud, struct pl_stanza *hdr)
{
    struct c2s *c = ud;
    struct pl_node *root = pl_stanza_root(hdr);
    if (c->tr)
        return; /* our own root (feed_root): <open/> comes as an element */
    if (strcmp(root->ns, PL_NS_STREAMS) != 0) {
        pl__c2s_stream_error(c, "invalid-namespace", NULL);
        return;
    }
    if (strcmp(root->name, "stream") != 0) {
        pl__c2s_stream_error(c, "bad-format", NULL);
        return;
    }
    /* §4.8.2: the content namespace of a c2s stream is jabber:client. */
    const char *content = pl_node_attr(root, "xmlns");
    if (!content || strcmp(content, PL_NS_CLIENT) != 0) {
        pl__c2s_stream_error(c, "invalid-namespace", NULL);
        return;
    }
    stream_open(c, pl_node_attr(root, "to"), pl_node_attr(root, "version"));
}

void pl__c2s_restart(struct c2s *c)
{
    pl_xml_parser_stop(c->xml);
    pl_xml_parser_reset(c->xml);
    c->state = ST_HEADER;
    c->header_sent = 0;
    c->need_root = c->tr != NULL;
}

/* ---- binding ---- */

static void reply_iq_error(struct c2s *c, struct pl_stanza *st, int code,
                           const char *text)
{
    struct pl_stanza *r = pl_stanza_error_reply(st, code, text);
    if (!r)
        return;
    pl_stanza_set_attr(r, "from", NULL);
    pl_stanza_set_attr(r, "to", NULL);
    send_stanza(&c->sess, r);
    pl_stanza_unref(r);
}

static void random_resource(char *buf, size_t len)
{
    unsigned char raw[8];
    pl_random(raw, sizeof(raw));
    snprintf(buf, len, "parley-%02x%02x%02x%02x%02x%02x%02x%02x", raw[0],
             raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]);
}

static void on_bind(struct c2s *c, struct pl_stanza *st, struct pl_node *bind)
{
    if (c->state == ST_BOUND) {
        reply_iq_error(c, st, PL_ENOT_ALLOWED, "already bound");
        return;
    }
    struct pl_node *res = pl_node_child(bind, "resource", NS_BIND);
    char *resource = NULL;
    char rnd[40];
    if (res) {
        size_t len;
        const char *t = pl_node_text(st, res, &len);
        if (pl_jid_prep_resource((struct pl_str){t, len}, &resource) != PL_OK) {
            reply_iq_error(c, st, PL_EBAD_REQUEST, "invalid resource");
            return;
        }
    } else {
        random_resource(rnd, sizeof(rnd));
        resource = pl_strdup(rnd);
    }
    struct pl_jid *jid = NULL;
    if (pl_jid_make(c->user, c->host->domain, resource, &jid) != PL_OK) {
        pl_free(resource);
        reply_iq_error(c, st, PL_EBAD_REQUEST, "invalid resource");
        return;
    }
    pl_free(resource);
    struct pl_session *old = pl_session_by_full(jid->full);
    if (old) {
        if (CS->resource_conflict == PL_CONFLICT_REFUSE) {
            pl_jid_free(jid);
            reply_iq_error(c, st, PL_ECONFLICT, NULL);
            return;
        }
        if (CS->resource_conflict == PL_CONFLICT_RENAME) {
            random_resource(rnd, sizeof(rnd));
            struct pl_jid *j2 = NULL;
            char *r2 = NULL;
            size_t n = strlen(jid->resource) + strlen(rnd) + 2;
            r2 = pl_malloc(n);
            snprintf(r2, n, "%s-%s", jid->resource, rnd + 7);
            int mrc = pl_jid_make(c->user, c->host->domain, r2, &j2);
            pl_free(r2);
            pl_jid_free(jid);
            if (mrc != PL_OK) {
                /* Too long with the suffix: refuse instead. */
                reply_iq_error(c, st, PL_ECONFLICT, NULL);
                return;
            }
            jid = j2;
        } else {
            /* RFC 6120 §7.7.2.2: terminate the old session. */
            old->ops->close(old, "conflict", "replaced by a new session");
            pl_session_unregister(old);
        }
    }
    c->sess.jid = jid;
    c->sess.host = c->host;
    int rc = pl_session_register(&c->sess, (int)S->max_resources_per_user);
    if (rc != PL_OK) {
        c->sess.jid = NULL;
        pl_jid_free(jid);
        reply_iq_error(c, st, rc,
                       rc == PL_ERESOURCE_CONSTRAINT ? "too many resources"
                                                     : NULL);
        return;
    }
    c->state = ST_BOUND;
    pl_stat_inc(sessions_bound);
    /* The core's handshake deadline ends; keepalives and naps begin. */
    pl_conn_established(c->conn);
    pl_timer_start(c->conn->loop, &c->timer, 5000);
    struct pl_stanza *r = pl_iq_result(st);
    struct pl_node *b = pl_node_add_child(r, pl_stanza_root(r), "bind",
                                          NS_BIND);
    struct pl_node *j = pl_node_add_child(r, b, "jid", NS_BIND);
    pl_node_add_text(r, j, jid->full, strlen(jid->full));
    send_stanza(&c->sess, r);
    pl_stanza_unref(r);
    pl_log_info("c2s", "%s:%d: bound %s", c->conn->ip, c->conn->port,
                jid->full);
    struct pl_event ev =
        {"session/bound", c->host, &c->sess, NULL, jid, NULL, NULL};
    pl_hook_fire(&ev);
}

/* ---- stanzas ---- */

static void update_presence(struct c2s *c, struct pl_stanza *st)
{
    const char *type = pl_stanza_attr(st, "type");
    if (type && strcmp(type, "unavailable") != 0)
        return; /* subscriptions and probes do not change availability */
    if (type) {
        c->sess.available = 0;
    } else {
        c->sess.available = 1;
        struct pl_node *p = pl_node_child(pl_stanza_root(st), "priority", NULL);
        int prio = 0;
        if (p) {
            const char *t = pl_node_text(st, p, NULL);
            long v = strtol(t, NULL, 10);
            prio = v < -128 ? -128 : v > 127 ? 127 : (int)v;
        }
        c->sess.priority = prio;
    }
    pl_stanza_unref(c->sess.presence);
    c->sess.presence = pl_stanza_ref(st);
}

/* A message or an IQ request: what a storage outage refuses. */
static int wants_answer(const char *name, const char *type)
{
    if (strcmp(name, "iq") == 0)
        return strcmp(type, "get") == 0 || strcmp(type, "set") == 0;
    return strcmp(name, "message") == 0 && !(type && !strcmp(type, "error"));
}

static void on_bound_stanza(struct c2s *c, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    const char *name = root->name;
    const char *type = pl_stanza_attr(st, "type");
    if (strcmp(name, "iq") == 0) {
        /* RFC 6120 §8.2.3: id and type are required, one child for
         * get/set. */
        int getset = type &&
                     (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
        if (!pl_stanza_attr(st, "id") || !type ||
            (!getset && strcmp(type, "result") != 0 &&
             strcmp(type, "error") != 0) ||
            (getset && pl_node_count_elems(root) != 1)) {
            reply_iq_error(c, st, PL_EBAD_REQUEST, NULL);
            return;
        }
    }
    /* RFC 6120 §8.1.2.1: the server adds or overrides 'from'. */
    pl_stanza_set_attr(st, "from", c->sess.jid->full);
    const char *to = pl_stanza_attr(st, "to");
    struct pl_jid *tj = NULL;
    if (to && pl_jid_parse(pl_str_c(to), &tj) != PL_OK) {
        reply_iq_error(c, st, PL_EJID_MALFORMED, NULL);
        return;
    }
    if (tj && strcmp(to, tj->full) != 0)
        pl_stanza_set_attr(st, "to", tj->full); /* normalized form */
    if (pl_storage_unavailable() && wants_answer(name, type)) {
        /* The database is unreachable: a message or a request would wait
         * unanswered (and unacknowledged) until it returns; refuse it
         * now so that the client knows to retry (RFC 6120 §8.3.3.18). */
        pl_route_error(st, PL_ERESOURCE_CONSTRAINT,
                       "storage unavailable; try again later");
        pl_jid_free(tj);
        return;
    }
    if (!tj && strcmp(name, "presence") == 0)
        update_presence(c, st);
    pl_route(st, c->sess.jid, tj, &c->sess);
    pl_jid_free(tj);
}

static void on_preauth_iq(struct c2s *c, struct pl_stanza *st)
{
    char ev[512];
    pl_iq_event_name(st, "preauth", ev, sizeof(ev));
    if (!c->host || !pl_hook_has(c->host, ev) ||
        (!pl__c2s_encrypted(c) && CS->require_encryption)) {
        pl__c2s_stream_error(c, "not-authorized", NULL);
        return;
    }
    struct pl_event e = {ev, c->host, &c->sess, st, NULL, NULL, NULL};
    int rc = pl_hook_fire(&e);
    if (rc < 0)
        reply_iq_error(c, st, rc, NULL);
}

/* RFC 7395 §3.4, §3.6: <open/> (re)starts the stream, <close/> ends it. */
static void on_framing(struct c2s *c, struct pl_stanza *st)
{
    struct pl_node *root = pl_stanza_root(st);
    if (strcmp(root->name, "open") == 0 && c->state == ST_HEADER) {
        stream_open(c, pl_node_attr(root, "to"), pl_node_attr(root, "version"));
        return;
    }
    if (strcmp(root->name, "close") == 0) {
        pl__c2s_close_stream(c);
        return;
    }
    pl__c2s_stream_error(c, "unsupported-stanza-type", NULL);
}

static void on_stanza(void *ud, struct pl_stanza *st)
{
    struct c2s *c = ud;
    struct pl_node *root = pl_stanza_root(st);
    pl_stat_inc(stanzas_in);
    if (c->closing)
        goto out;
    if (c->tr) {
        c->nelems++;
        if (strcmp(root->ns, PL_NS_FRAMING) == 0) {
            on_framing(c, st);
            goto out;
        }
        if (c->state == ST_HEADER) {
            pl__c2s_stream_error(c, "not-authorized", "<open/> first");
            goto out;
        }
    }
    if (strcmp(root->ns, NS_TLS) == 0 && strcmp(root->name, "starttls") == 0) {
        if (pl__c2s_encrypted(c) || c->authed || !tls_available(c)) {
            pl__c2s_out(c, "<failure xmlns='" NS_TLS "'/>");
            pl__c2s_end(c);
            goto out;
        }
        pl__c2s_out(c, "<proceed xmlns='" NS_TLS "'/>");
        pl__c2s_restart(c);
        pl_conn_starttls(c->conn, c->host->tls->ctx);
        goto out;
    }
    if (strcmp(root->ns, NS_SASL) == 0) {
        pl__c2s_on_sasl(c, st);
        goto out;
    }
    if (strcmp(root->ns, PL_NS_CLIENT) != 0 &&
        strcmp(root->ns, PL_NS_STREAMS) != 0 && !c->authed) {
        /* The content namespace must be jabber:client (§4.8.2). */
        if (strcmp(root->ns, "") == 0 || strcmp(root->ns, PL_NS_SERVER) == 0) {
            pl__c2s_stream_error(c, "invalid-namespace", NULL);
            goto out;
        }
    }
    if (!c->authed) {
        if (strcmp(root->name, "iq") == 0 &&
            strcmp(root->ns, PL_NS_CLIENT) == 0) {
            on_preauth_iq(c, st);
            goto out;
        }
        pl__c2s_stream_error(c,
                             pl_stream_is_stanza(root, PL_NS_CLIENT)
                                 ? "not-authorized"
                                 : "unsupported-stanza-type",
                             NULL);
        goto out;
    }
    if (strcmp(root->ns, PL_NS_SM) == 0 && CS->sm_enable) {
        pl__c2s_on_sm(c, st); /* may free c (resumption) */
        goto out;
    }
    if (!pl_stream_is_stanza(root, PL_NS_CLIENT)) {
        if (strcmp(root->ns, "") == 0 || strcmp(root->ns, PL_NS_SERVER) == 0)
            pl__c2s_stream_error(c, "invalid-namespace", NULL);
        else {
            /* Unknown top-level elements (a later module may claim them
             * through "stream-element/<ns>:<name>"). */
            char ev[512];
            snprintf(ev, sizeof(ev), "stream-element/%s:%s", root->ns,
                     root->name);
            struct pl_event e = {ev, c->host, &c->sess, st, NULL, NULL, NULL};
            if (pl_hook_fire(&e) == PL_PASS)
                pl__c2s_stream_error(c, "unsupported-stanza-type", NULL);
        }
        goto out;
    }
    if (c->state != ST_BOUND) {
        struct pl_node *bind = pl_node_child(root, "bind", NS_BIND);
        if (strcmp(root->name, "iq") == 0 && bind &&
            pl_stanza_attr(st, "type") &&
            strcmp(pl_stanza_attr(st, "type"), "set") == 0) {
            on_bind(c, st, bind);
            goto out;
        }
        pl__c2s_stream_error(c, "not-authorized", "bind a resource first");
        goto out;
    }
    struct pl_barrier *b = c->sess.sm ? pl_sm_in_begin(&c->sess) : NULL;
    struct pl_node *bind = pl_node_child(root, "bind", NS_BIND);
    if (bind && strcmp(root->name, "iq") == 0)
        on_bind(c, st, bind);
    else
        on_bound_stanza(c, st);
    if (b)
        pl_sm_in_end(b);
out:
    pl_stanza_unref(st);
}

static void on_stream_close(void *ud)
{
    struct c2s *c = ud;
    pl__c2s_close_stream(c);
}

static void on_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct c2s *c = ud;
    pl__c2s_stream_error(c, pl_xml_error_condition(err), NULL);
    pl_log_debug("c2s", "XML error: %s", text ? text : "");
}

static const struct pl_xml_callbacks xml_cb = {
    on_stream_open,
    on_stanza,
    on_stream_close,
    on_xml_error,
};

/* ---- connection events ---- */

static void on_data(struct pl_conn *conn, const char *p, size_t n)
{
    struct c2s *c = conn->data;
    pl_stat_add(bytes_in, n);
    if (!c->closing)
        pl_xml_parser_feed(c->xml, p, n);
}

static void on_tls_up(struct pl_conn *conn)
{
    struct c2s *c = conn->data;
    /* With direct TLS, SNI only chose the certificate; the stream header
     * that follows names the host. */
    c->secure = 1;
}

/* Frees what a c2s holds once it has neither connection nor session. */
static void c2s_free(struct c2s *c)
{
    pl_timer_stop(&c->timer);
    pl_timer_stop(&c->rtimer);
    pl_free(c->resume_previd);
    pl_xml_parser_free(c->xml);
    pl_scram_server_free(c->scram);
    pl_stanza_unref(c->sess.presence);
    pl_jid_free(c->sess.jid);
    pl_free(c->user);
    pl_free(c);
}

struct c2s *pl__c2s_resumable_find(const char *id)
{
    return pl_map_get(&resumable, id);
}

void pl__c2s_resumable_add(struct c2s *c)
{
    pl_map_put(&resumable, pl_sm_id(c->sess.sm), c);
}

/* The session is over (its connection is already gone). */
static void end_session(struct c2s *c)
{
    if (c->sess.sm && pl_sm_id(c->sess.sm) &&
        pl_map_get(&resumable, pl_sm_id(c->sess.sm)) == c)
        pl_map_del(&resumable, pl_sm_id(c->sess.sm));
    if (c->sess.jid) {
        pl_session_unregister(&c->sess);
        if (c->state == ST_BOUND) {
            /* Also for sessions replaced by a newer one (already out of
             * the table): modules clean up and broadcast unavailable. */
            struct pl_event ev = {"session/closed", c->host, &c->sess, NULL,
                                  c->sess.jid,      NULL,    NULL};
            pl_hook_fire(&ev);
            pl_log_info("c2s", "closed %s", c->sess.jid->full);
        }
    } else {
        pl_session_unregister(&c->sess);
    }
    /* After the unavailable broadcast, so that messages routed again do
     * not come back here. */
    pl_sm_end(&c->sess);
    c2s_free(c);
}

static void on_resume_timeout(struct pl_timer *t)
{
    struct c2s *c = t->data;
    if (!c->no_resume)
        pl_log_info("c2s", "%s: not resumed in time", c->sess.jid->full);
    end_session(c);
}

/* XEP-0198 §5: the connection is gone but the session stays, queueing
 * what it is sent, until the client resumes or the timeout ends it. */
static void hibernate(struct c2s *c)
{
    c->hibernated = 1;
    pl_xml_parser_free(c->xml);
    c->xml = NULL;
    pl_scram_server_free(c->scram);
    c->scram = NULL;
    pl_timer_init(&c->timer, on_resume_timeout, c);
    pl_timer_start(pl_server_loop(), &c->timer,
                   (uint64_t)pl_sm_max(c->sess.sm) * 1000);
    pl_stat_inc(sm_hibernated);
    pl_log_info("c2s", "%s: connection lost, waiting %ld s for resumption",
                c->sess.jid->full, pl_sm_max(c->sess.sm));
}

void pl__c2s_take_place(struct c2s *o, struct c2s *c)
{
    /* o takes c's place in the list of open streams. */
    o->prev = c->prev;
    o->next = c->next;
    if (o->prev)
        o->prev->next = o;
    else
        all = o;
    if (o->next)
        o->next->prev = o;
    c->prev = c->next = NULL;
    o->hibernated = 0;
    pl_timer_stop(&o->timer);
    pl_timer_init(&o->timer, on_timer, o);
    pl_timer_start(o->conn->loop, &o->timer, 5000);
    pl_session_unregister(&c->sess);
    c2s_free(c);
}

static void on_closed(struct pl_conn *conn)
{
    pl_c2s_gone(conn->data);
}

void pl_c2s_gone(struct c2s *c)
{
    c->conn = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    pl_timer_stop(&c->timer);
    nconns--;
    if (c->state == ST_BOUND && c->sess.sm && pl_sm_id(c->sess.sm) &&
        !c->no_resume && !stopping) {
        hibernate(c);
        return;
    }
    end_session(c);
}

/* conn.h: the core's deadlines (limits.handshake_timeout until bound,
 * then limits.idle_timeout since the last byte read, or the listeners
 * entry's own).  <connection-timeout/> leaves an idle stream-managed
 * session resumable (pl__c2s_stream_error, XEP-0198 §5). */
static void on_timeout(struct pl_conn *conn, int which)
{
    pl_c2s_timeout(conn->data, which);
}

void pl_c2s_timeout(struct c2s *c, int which)
{
    pl__c2s_stream_error(c, "connection-timeout",
                         which == PL_CONN_TIMEOUT_HANDSHAKE
                             ? "handshake took too long"
                             : NULL);
}

static const struct pl_conn_ops conn_ops = {
    .data = on_data,
    .tls_up = on_tls_up,
    .closed = on_closed,
    .timeout = on_timeout,
};

/* c->timer while bound: whitespace keepalives and the parser's nap. */
static void on_timer(struct pl_timer *t)
{
    struct c2s *c = t->data;
    if (!c->conn || c->closing)
        return;
    uint64_t now = pl_loop_now(c->conn->loop);
    /* A transport's connection was established for HTTP, so the core's
     * handshake deadline is over: the stream keeps its own until bound. */
    if (c->tr && c->state != ST_BOUND &&
        now - c->conn->opened_ms >= (uint64_t)S->handshake_timeout * 1000) {
        pl_c2s_timeout(c, PL_CONN_TIMEOUT_HANDSHAKE);
        return;
    }
    if (CS->keepalive_interval && c->state == ST_BOUND &&
        now - c->keepalive_ms >= (uint64_t)CS->keepalive_interval * 1000 &&
        now - c->conn->last_read_ms >=
            (uint64_t)CS->keepalive_interval * 1000) {
        if (c->tr)
            c->tr->keepalive(c->tdata);
        else
            pl_conn_write(c->conn, " ", 1);
        c->keepalive_ms = now;
    }
    /* An idle stream gives back its XML parser (about 10 KiB) until the
     * next byte arrives (xml.h, pl_xml_parser_nap). */
    if (c->state == ST_BOUND && now - c->conn->last_read_ms >= 2000) {
        if (pl_xml_parser_nap(c->xml)) {
            napped++;
            pl_stat_inc(c2s_naps);
        }
        if (c->tr && c->tr->nap)
            c->tr->nap(c->tdata);
        pl_conn_trim(c->conn);
        /* A burst of naps (sessions that logged in together) gives its
         * memory back a second after the last of them, not at the next
         * 10 s tick. */
        if (napped >= 16 && !trim_busy)
            pl_timer_start(c->conn->loop, &trim_timer, 1000);
    }
    pl_timer_start(c->conn->loop, &c->timer,
                   c->tr && c->state != ST_BOUND ? 1000 : 5000);
}

/* c->rtimer: a <resume/> waiting for the old session's writes tries again
 * (c2s_sm.c). */
static void on_resume_poll(struct pl_timer *t)
{
    struct c2s *c = t->data;
    char *previd = c->resume_previd;
    c->resume_previd = NULL;
    if (c->conn && !c->closing)
        pl__c2s_resume_try(c, previd, c->resume_h); /* may free c */
    pl_free(previd);
}

/* listen.h: a connection accepted on a c2s listener, within the limits;
 * the core starts it (TLS first on a direct TLS listener). */
static struct c2s *c2s_new(struct pl_conn *conn, int tls_mode, int proxied)
{
    struct c2s *c = pl_calloc(1, sizeof(*c));
    c->conn = conn;
    c->tls_mode = tls_mode;
    c->proxied = proxied;
    c->next = all;
    if (all)
        all->prev = c;
    all = c;
    nconns++;
    c->sess.impl = c;
    c->sess.ops = &session_ops;
    pl_session_init(&c->sess);
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    c->xml = pl_xml_parser_new(&xl, &xml_cb, c);
    /* Started once bound; the core watches the handshake until then. */
    pl_timer_init(&c->timer, on_timer, c);
    pl_timer_init(&c->rtimer, on_resume_poll, c);
    return c;
}

static int c2s_accept(struct pl_listen *l, struct pl_conn *conn)
{
    struct c2s *c = c2s_new(conn, l->conf->tls, l->conf->secure);
    pl_conn_set_handlers(conn, &conn_ops, c);
    return PL_OK;
}

struct c2s *pl_c2s_open(struct pl_conn *conn, const struct pl_c2s_transport *tr,
                        void *t, int secure)
{
    if (!S)
        return NULL;
    struct c2s *c = c2s_new(conn, PL_TLS_NONE, 0);
    c->tr = tr;
    c->tdata = t;
    c->secure = conn->tls == PL_CONN_TLS;
    c->proxied = secure && !c->secure;
    c->need_root = 1;
    /* Checks the handshake deadline until bound (on_timer). */
    pl_timer_start(conn->loop, &c->timer, 1000);
    return c;
}

/* The root every element of a transport's stream is parsed under: the
 * namespaces a TCP stream's header would declare. */
static const char ws_root[] = "<stream:stream xmlns='" PL_NS_CLIENT
                              "' xmlns:stream='" PL_NS_STREAMS "'>";

/*
 * Feeds whole elements; returns the stream to check afterwards, or NULL.
 * The element may resume another session (XEP-0198): the parser then
 * belongs to that stream and c is gone, so the answer comes from the
 * parser.
 */
static struct c2s *feed_elems(struct c2s *c, const char *p, size_t n)
{
    pl_stat_add(bytes_in, n);
    if (c->closing || !c->xml)
        return NULL;
    struct pl_xml_parser *xml = c->xml;
    if (c->need_root) {
        c->need_root = 0;
        pl_xml_parser_feed(xml, ws_root, sizeof(ws_root) - 1);
    }
    c->nelems = 0;
    if (pl_xml_parser_feed(xml, p, n) != PL_OK)
        return NULL;
    c = pl_xml_parser_ud(xml);
    return c->closing || c->xml != xml ? NULL : c;
}

void pl_c2s_feed(struct c2s *c, const char *p, size_t n)
{
    c = feed_elems(c, p, n);
    if (c && !c->need_root && !pl_xml_parser_between(c->xml))
        pl__c2s_stream_error(c, "not-well-formed", "half an element");
}

void pl_c2s_input(struct c2s *c, const char *p, size_t n)
{
    c = feed_elems(c, p, n);
    /* RFC 7395 §3.3.3: one whole element per message, no more, no less
     * (a restart resets the count: the element that caused it was the
     * message's one). */
    if (c && !c->need_root &&
        (c->nelems != 1 || !pl_xml_parser_between(c->xml)))
        pl__c2s_stream_error(c, "not-well-formed",
                             "a WebSocket message must hold one whole element");
}

/* listen.h: over a connection limit; RFC 6120 §4.9.3.14/.18 say why. */
static void c2s_refuse(struct pl_listen *l, struct pl_conn *conn, int why)
{
    (void)l;
    pl_stream_refuse(conn, PL_NS_CLIENT, pl_host_at(0)->domain, PL_STREAM_V1,
                     why);
}

int pl__c2s_accept_fd(int fd, int tls_mode)
{
    if (!S)
        return PL_EINVAL;
    return pl__listen_accept_fd("c2s", tls_mode, fd);
}

/*
 * Freed parsers leave holes in the heap that glibc keeps; malloc_trim
 * returns those pages to the kernel.  It walks the heap, so it runs on a
 * worker thread, at most once per interval and only after naps.
 */
static void trim_run(struct pl_work *w)
{
    malloc_trim(0);
}

static void trim_done(struct pl_work *w)
{
    trim_busy = 0;
}

static void on_trim_timer(struct pl_timer *t)
{
    pl_xml_spares_trim(); /* the parser pages a burst of logins left */
    if (napped >= 16 && !trim_busy) {
        napped = 0;
        trim_busy = 1;
        trim_work.work = trim_run;
        trim_work.done = trim_done;
        pl_workq_submit(pl_server_cpu(), pl_server_loop(), &trim_work);
    }
    pl_timer_start(pl_server_loop(), t, 10000);
}

const struct pl_c2s_settings *pl_c2s_settings(void)
{
    return CS;
}

static int c2s_start(struct pl_config *cfg, void *settings)
{
    S = &cfg->s;
    CS = settings;
    /* Accounts' password hashing cost, for whoever sets a password. */
    pl_server_set_scram_iterations(CS->scram_iterations);
    pl_timer_init(&trim_timer, on_trim_timer, NULL);
    pl_timer_start(pl_server_loop(), &trim_timer, 10000);
    /* Messages a crash left unacknowledged go to their accounts again. */
    pl_sm_recover();
    return PL_OK;
}

static void collect_hibernated(const char *key, void *value, void *ud)
{
    (void)key;
    struct c2s ***v = ud;
    struct c2s *c = value;
    if (!c->hibernated)
        return;
    size_t n = 0;
    while (*v && (*v)[n])
        n++;
    *v = pl_realloc(*v, (n + 2) * sizeof(**v));
    (*v)[n] = c;
    (*v)[n + 1] = NULL;
}

static void c2s_stop(void)
{
    pl_timer_stop(&trim_timer);
    pl__c2s_sasl_stop();
    stopping = 1;
    for (struct c2s *c = all; c; c = c->next)
        pl__c2s_stream_error(c, "system-shutdown", NULL);
    /* Hibernated sessions end now: their messages go offline. */
    struct c2s **h = NULL;
    size_t nh = 0;
    pl_map_each(&resumable, collect_hibernated, &h);
    while (h && h[nh])
        nh++;
    for (size_t i = 0; i < nh; i++)
        end_session(h[i]);
    pl_free(h);
}

static void c2s_reload(struct pl_config *cfg, void *settings)
{
    CS = settings;
    pl_server_set_scram_iterations(CS->scram_iterations);
    S = &cfg->s;
    struct pl_conn_limits lim = {(size_t)S->max_outbuf, (size_t)S->read_rate,
                                 (size_t)S->read_burst};
    struct pl_xml_limits xl = {(size_t)S->max_stanza_size,
                               (unsigned)S->max_depth};
    for (struct c2s *c = all; c; c = c->next) {
        if (c->conn)
            pl_conn_set_limits(c->conn, &lim);
        pl_xml_parser_set_limits(c->xml, &xl);
    }
}

static unsigned long c2s_count(void)
{
    return nconns;
}

#define CS(field) offsetof(struct pl_c2s_settings, field)

static const char *const conflict_policies[] = {"kick_old", "refuse", "rename",
                                                NULL};

static const struct pl_option options[] = {
    {"require_encryption", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Refuse SASL and stanzas until TLS is in place.", CS(require_encryption)},
    {"allow_plain", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Offer SASL PLAIN (only ever inside TLS).", CS(allow_plain)},
    {"channel_binding", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Offer SCRAM-*-PLUS with tls-exporter and tls-server-end-point.",
     CS(channel_binding)},
    {"tls_unique", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Also accept tls-unique channel binding (RFC 5929), on TLS 1.3 too, "
     "for clients that know no other type (slixmpp 1.8).",
     CS(tls_unique)},
    {"tls_handover", PL_OPT_BOOL, "true", 0, 0, NULL,
     "After authentication, seal and open TLS 1.3 records in Parley "
     "(src/core/tls_rec.c) and free OpenSSL's per-connection state (about "
     "14 KB per session); false keeps OpenSSL for the whole session.",
     CS(tls_handover)},
    {"resource_conflict", PL_OPT_ENUM, "\"kick_old\"", 0, 0, conflict_policies,
     "Binding a resource already in use: kick_old, refuse or rename.",
     CS(resource_conflict)},
    {"max_auth_failures", PL_OPT_INT, "3", 1, 100, NULL,
     "SASL failures on one connection before it is closed.",
     CS(max_auth_failures)},
    {"auth_failures_per_ip", PL_OPT_INT, "20", 1, 1000000, NULL,
     "SASL failures from one IP address within auth_failure_window before "
     "its attempts get <temporary-auth-failure/> until the window ends.",
     CS(auth_failures_per_ip)},
    {"auth_failure_window", PL_OPT_INT, "300", 1, 86400, NULL,
     "Seconds over which auth_failures_per_ip is counted.",
     CS(auth_failure_window)},
    {"scram_iterations", PL_OPT_INT, "10000", 4096, 10000000, NULL,
     "PBKDF2 iterations for newly set passwords.", CS(scram_iterations)},
    {"keepalive_interval", PL_OPT_INT, "0", 0, 86400, NULL,
     "Seconds between whitespace keepalives sent to idle clients "
     "(0: never).",
     CS(keepalive_interval)},
    {"sm_enable", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Offer stream management (XEP-0198): acks and resumption.", CS(sm_enable)},
    {"sm_resume_timeout", PL_OPT_INT, "300", 0, 86400, NULL,
     "Seconds a dropped stream-managed session waits for its client to "
     "resume (0: no resumption); a client may ask for less.",
     CS(sm_resume_timeout)},
    {"sm_max_queue", PL_OPT_INT, "1000", 16, 1000000, NULL,
     "Unacknowledged stanzas kept for one session; a client that lets "
     "more pile up gets <resource-constraint/>, a hibernated session ends "
     "and its messages go to offline storage.",
     CS(sm_max_queue)},
    {"sm_durable", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Store each chat or normal message sent to a stream-managed session "
     "until the client acknowledges it, so that a crash of the server "
     "loses none (they go to offline storage on restart).",
     CS(sm_durable)},
    {0},
};

static const struct pl_protocol c2s_protocol = {
    .name = "c2s",
    .summary = "XMPP clients (RFC 6120)",
    .transports = PL_TRANSPORT_TCP,
    .default_port = 5222,
    .listen_by_default = 1,
    .default_tls_port = 5223,
    .accept = c2s_accept,
    .refuse = c2s_refuse,
};

static const struct pl_protocol *const protocols[] = {&c2s_protocol, NULL};

static const struct pl_frontend frontend = {
    .protocols = protocols,
    .options = options,
    .settings_size = sizeof(struct pl_c2s_settings),
    .start = c2s_start,
    .stop = c2s_stop,
    .reload = c2s_reload,
    .count = c2s_count,
};

const struct pl_module pl_mod_c2s = {
    .abi = PL_MODULE_ABI,
    .name = "c2s",
    .summary = "XMPP client streams: TLS, SASL, binding, stream management",
    .xeps = "RFC 6120, RFC 6121, XEP-0198, XEP-0368, XEP-0440",
    .frontend = &frontend,
};
