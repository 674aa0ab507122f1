/*
 * c2s_sm.c - stream management (XEP-0198) on c2s streams: <enable/>,
 * <r/>, <a/>, <resume/> and their answers, handled-count-too-high, and the
 * move of a new connection into a hibernated session.  The per-session
 * state (counters, unacknowledged queue, durable copies) lives in sm.c;
 * this file is the c2s transport's side of it (struct pl_sm_io).  API in
 * c2s_int.h: pl__c2s_on_sm, pl__c2s_resume_try.  Hibernation itself (the
 * connection is gone, the session waits) is part of the stream's
 * lifecycle in c2s.c.
 *
 * Extending: a new XEP-0198 element is a branch of pl__c2s_on_sm; another
 * transport (websocket, BOSH) would have a file like this one.
 */
#include "c2s_int.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "log.h"
#include "server.h"
#include "sm.h"
#include "stats.h"
#include "xml.h"

static void sm_write(struct pl_session *s, const char *p, size_t n)
{
    struct c2s *c = s->impl;
    if (c->conn && !c->closing)
        pl__c2s_out_n(c, p, n);
}

static int sm_connected(struct pl_session *s)
{
    struct c2s *c = s->impl;
    return c->conn && !c->closing;
}

static void sm_overflow(struct pl_session *s)
{
    struct c2s *c = s->impl;
    if (c->hibernated) {
        if (!c->no_resume) {
            c->no_resume = 1;
            pl_timer_start(pl_server_loop(), &c->timer, 0);
        }
        return;
    }
    pl__c2s_stream_error(c, "resource-constraint",
                         "too many unacknowledged stanzas");
}

static const struct pl_sm_io sm_io = {sm_write, sm_connected, sm_overflow};

static void sm_failed(struct c2s *c, const char *cond, const struct pl_sm *sm)
{
    char b[256];
    if (sm)
        snprintf(b, sizeof(b),
                 "<failed xmlns='" PL_NS_SM "' h='%u'><%s xmlns='" PL_NS_STANZAS
                 "'/></failed>",
                 pl_sm_handled(sm), cond);
    else
        snprintf(b, sizeof(b),
                 "<failed xmlns='" PL_NS_SM "'><%s xmlns='" PL_NS_STANZAS
                 "'/></failed>",
                 cond);
    pl__c2s_out(c, b);
}

/* XEP-0198 §4: h is an unsigned 32-bit integer. */
static int parse_h(struct pl_stanza *st, uint32_t *h)
{
    const char *v = pl_stanza_attr(st, "h");
    if (!v || !*v || strlen(v) > 10)
        return PL_EINVAL;
    unsigned long long x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return PL_EINVAL;
        x = x * 10 + (unsigned)(*p - '0');
    }
    if (x > 0xffffffffULL)
        return PL_EINVAL;
    *h = (uint32_t)x;
    return PL_OK;
}

static void sm_ack(struct c2s *c, uint32_t h)
{
    uint32_t sent;
    if (pl_sm_ack(&c->sess, h, &sent) != PL_OK) {
        /* XEP-0198 §4: more acknowledged than was sent. */
        if (c->closing || !c->conn)
            return;
        char b[320];
        snprintf(
            b, sizeof(b),
            "<stream:error><undefined-condition xmlns='" PL_NS_STREAM_ERRORS
            "'/><handled-count-too-high xmlns='" PL_NS_SM
            "' h='%u' send-count='%u'/></stream:error>",
            h, sent);
        pl__c2s_out(c, b);
        c->no_resume = 1;
        pl_stat_inc(stream_errors);
        pl__c2s_end(c);
    }
}

/* Moves the connection-side fields between a and b (resumption). */
static void swap_transport(struct c2s *a, struct c2s *b)
{
#define SWAP(f)                                                                \
    do {                                                                       \
        __typeof__(a->f) t_ = a->f;                                            \
        a->f = b->f;                                                           \
        b->f = t_;                                                             \
    } while (0)
    SWAP(conn);
    SWAP(tr);
    SWAP(tdata);
    SWAP(xml);
    SWAP(tls_mode);
    SWAP(keepalive_ms);
    SWAP(nelems);
#undef SWAP
    unsigned t = a->secure;
    a->secure = b->secure;
    b->secure = t;
    t = a->proxied;
    a->proxied = b->proxied;
    b->proxied = t;
    t = a->header_sent;
    a->header_sent = b->header_sent;
    b->header_sent = t;
    t = a->closing;
    a->closing = b->closing;
    b->closing = t;
    t = a->need_root;
    a->need_root = b->need_root;
    b->need_root = t;
    char id[sizeof(a->id)];
    memcpy(id, a->id, sizeof(id));
    memcpy(a->id, b->id, sizeof(id));
    memcpy(b->id, id, sizeof(id));
    struct c2s *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        if (both[i]->conn && both[i]->tr)
            both[i]->tr->attach(both[i]->tdata, both[i]);
        else if (both[i]->conn)
            both[i]->conn->data = both[i];
        if (both[i]->xml)
            pl_xml_parser_set_ud(both[i]->xml, both[i]);
    }
}

static void sm_resume(struct c2s *c, struct pl_stanza *st)
{
    if (c->state == ST_BOUND || c->resume_previd) {
        sm_failed(c, "unexpected-request", NULL);
        return;
    }
    const char *previd = pl_stanza_attr(st, "previd");
    uint32_t h;
    if (!previd || parse_h(st, &h) != PL_OK) {
        sm_failed(c, "bad-request", NULL);
        return;
    }
    pl__c2s_resume_try(c, previd, h);
}

void pl__c2s_resume_try(struct c2s *c, const char *previd, uint32_t h)
{
    struct c2s *o = pl__c2s_resumable_find(previd);
    /* Only the same account may resume a session (XEP-0198 §9). */
    if (!o || o == c || o->no_resume || o->host != c->host || !o->user ||
        !c->user || strcmp(o->user, c->user) != 0) {
        sm_failed(c, "item-not-found", NULL);
        return;
    }
    /* <resumed h/> tells the client which stanzas it need not send again:
     * wait (briefly, polling) until the old session's writes committed so
     * that h covers everything it received, and none is sent twice. */
    if (pl_sm_pending(o->sess.sm) && c->resume_tries < 2500) {
        c->resume_tries++;
        c->resume_previd = pl_strdup(previd);
        c->resume_h = h;
        pl_timer_start(c->conn->loop, &c->rtimer, 2);
        return;
    }
    swap_transport(o, c);
    /* A resumed session is bound: no handshake deadline any more. */
    pl_conn_established(o->conn);
    if (o->hibernated)
        pl__c2s_take_place(o, c);
    else /* the old connection has not noticed it is dead yet */
        pl__c2s_stream_error(c, "conflict",
                             "session resumed on another connection");
    pl_stat_inc(sm_resumed);
    char b[160];
    snprintf(b, sizeof(b), "<resumed xmlns='" PL_NS_SM "' h='%u' previd='%s'/>",
             pl_sm_handled(o->sess.sm), previd);
    pl__c2s_out(o, b);
    pl_log_info("c2s", "%s:%d: resumed %s", o->conn->ip, o->conn->port,
                o->sess.jid->full);
    sm_ack(o, h);
    if (!o->closing)
        pl_sm_resend(&o->sess);
}

/* XEP-0198 elements after authentication. */
void pl__c2s_on_sm(struct c2s *c, struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    struct pl_sm *sm = c->sess.sm;
    if (strcmp(name, "enable") == 0) {
        /* §3: only after binding, and only once. */
        if (c->state != ST_BOUND || sm) {
            sm_failed(c, "unexpected-request", NULL);
            return;
        }
        const char *r = pl_stanza_attr(st, "resume");
        int resume = r && (strcmp(r, "true") == 0 || strcmp(r, "1") == 0);
        const char *mx = pl_stanza_attr(st, "max");
        long max = mx ? strtol(mx, NULL, 10) : 0;
        pl_sm_enable(&c->sess, &sm_io, resume, max);
        if (pl_sm_id(c->sess.sm))
            pl__c2s_resumable_add(c);
    } else if (strcmp(name, "r") == 0) {
        if (sm)
            pl_sm_request(&c->sess);
    } else if (strcmp(name, "a") == 0) {
        uint32_t h;
        if (!sm)
            return;
        if (parse_h(st, &h) != PL_OK)
            pl__c2s_stream_error(c, "invalid-xml", "bad 'h' in <a/>");
        else
            sm_ack(c, h);
    } else if (strcmp(name, "resume") == 0) {
        sm_resume(c, st);
    } else {
        pl__c2s_stream_error(c, "unsupported-stanza-type", NULL);
    }
}
