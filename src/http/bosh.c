/*
 * bosh.c - XMPP over BOSH (XEP-0124 1.11, XEP-0206); see bosh.h.
 *
 * A BOSH session is a client stream (c2s.h, struct pl_c2s_transport)
 * carried by a series of HTTP POSTs to /http-bind (service "bosh").  The
 * stream sees one connection: a detached struct pl_conn record of this
 * file (no socket; the address, loop and activity clock of the requests)
 * that lives as long as the session.
 *
 * Session creation (XEP-0124 §7, XEP-0206 §4): a <body/> with rid, to,
 * wait, hold and xmpp:version opens the stream (the stream sees an
 * RFC 7395 <open/>), and the answer carries sid, the wait, hold,
 * requests, inactivity and polling in force, our stream id as authid,
 * and the stream features.
 *
 * Requests (§8-§14): each POST carries its rid; rids are processed in
 * order (one that comes early waits for the ones before it, within the
 * window of `requests`), a rid already answered gets the same answer
 * again (§14.3, the last `requests` answers are kept), anything else
 * outside the window ends the session with item-not-found.  Its body's
 * children go to the stream; xmpp:restart='true' restarts the stream
 * (XEP-0206 §5); type='terminate' ends it after its children.  The
 * request is then held until the stream has something to send, or
 * answered at once if it has; at most `hold` requests are held (the
 * oldest is answered empty when one more arrives), and each is answered
 * empty when its wait runs out.  A request with 'pause' (§10) answers
 * every held one and lets the session go up to that long (at most
 * bosh_max_pause, announced as maxpause) without a request.  What the
 * stream writes meanwhile is
 * collected and sent in one answer on the next loop turn, with the
 * namespaces a standalone element needs (framing.h).
 *
 * Ending: the stream's end is <body type='terminate'/> (with
 * condition='remote-stream-error' and the <stream:error/> when there was
 * one); a session with no request held for `inactivity` seconds is gone
 * as a lost connection would be (a stream-managed session then waits for
 * resumption).  An unknown sid gets type='terminate'
 * condition='item-not-found'; a body that is not XML or not a BOSH body
 * gets HTTP 400.
 *
 * Extending: a new attribute of the session creation is read in
 * session_create(); of every request, in on_request().
 */
#include "bosh.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "host.h"
#include "http.h"
#include "jid.h"
#include "log.h"
#include "loop.h"
#include "map.h"
#include "server.h"
#include "stanza.h"
#include "stats.h"
#include "xml.h"
#include "xmpp/c2s.h"
#include "xmpp/framing.h"

#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define NS_XBOSH "urn:xmpp:xbosh"
#define MAX_REQUESTS 4 /* answers kept, early requests waiting */

static struct pl_bosh_settings set = {
    .max_wait = 60,
    .max_inactivity = 60,
    .max_hold = 1,
    .max_sessions_per_ip = 100,
    .max_pause = 120,
};

/* A request waiting for its answer (held) or for its turn (early). */
struct held {
    struct pl_http_req *r;
    uint64_t rid;
    uint64_t deadline; /* loop ms: answered empty then */
};

/* An answer kept for a retransmitted rid (§14.3). */
struct kept {
    uint64_t rid;
    struct pl_buf body; /* the answer as sent */
};

struct bosh {
    char sid[33];                   /* 128 random bits, hex */
    struct pl_conn conn;            /* the stream's (detached) connection */
    struct c2s *c;                  /* its stream; NULL once gone */
    uint64_t rid;                   /* the last rid processed */
    unsigned wait;                  /* seconds a request may be held */
    unsigned hold;                  /* requests held at most */
    struct held held[MAX_REQUESTS]; /* oldest first */
    int nheld;
    struct held early[MAX_REQUESTS]; /* rids ahead of their turn */
    int nearly;
    struct kept kept[MAX_REQUESTS]; /* the last answers, by rid */
    struct pl_buf out;              /* elements for the next answer */
    struct pl_timer timer; /* the nearest wait or inactivity deadline */
    struct pl_timer flush; /* the next loop turn: answer with out */
    struct pl_timer gone;  /* the next loop turn: the stream ends */
    uint64_t idle_since;   /* loop ms since no request was held */
    unsigned inactivity;   /* seconds allowed idle: set.max_inactivity,
                            * or a pause's until the next request */
    char from[256];        /* our domain, for the creation answer */
    char authid[24];       /* the stream id */
    unsigned ended : 1;    /* the stream ended: terminate answers */
    unsigned error : 1;    /* ...with a stream error in out */
    unsigned created : 1;  /* the creation answer went out */
};

static struct pl_map sessions; /* sid -> struct bosh */
static unsigned long nsessions;
static int started;

/* ---- answers ---- */

/* Answers r with o, which is then kept (not copied) for a retransmission
 * of rid (a ring of MAX_REQUESTS); o is left empty. */
static void answer(struct bosh *b, struct pl_http_req *r, uint64_t rid,
                   struct pl_buf *o)
{
    struct pl_str a = pl_buf_str(o);
    pl_http_respond(r, 200, "text/xml; charset=utf-8", a.p, a.len);
    struct kept *k = &b->kept[rid % MAX_REQUESTS];
    pl_buf_reset(&k->body);
    k->rid = rid;
    k->body = *o;
    *o = (struct pl_buf){0};
}

/* The attributes of the stream's end (XEP-0206 §8). */
static const char *terminate_attrs(const struct bosh *b)
{
    return b->error ? " type='terminate' condition='remote-stream-error'"
                      " xmlns:stream='" PL_NS_STREAMS "'"
                    : " type='terminate'";
}

/* The <body> of an answer: attrs (may be ""), then b->out. */
static void build(struct bosh *b, struct pl_buf *o, const char *attrs)
{
    pl_buf_append_str(o, "<body xmlns='" NS_HTTPBIND "'");
    pl_buf_append_str(o, attrs);
    if (b->out.len) {
        pl_buf_append_str(o, ">");
        pl_buf_append(o, b->out.data + b->out.off, b->out.len);
        pl_buf_append_str(o, "</body>");
    } else {
        pl_buf_append_str(o, "/>");
    }
    pl_buf_reset(&b->out);
}

static void session_free(struct bosh *b);
static void arm(struct bosh *b);

/* Sessions per address (values are counts). */
static struct pl_map by_ip;

static unsigned per_ip(const char *ip)
{
    return (unsigned)(uintptr_t)pl_map_get(&by_ip, ip);
}

static void per_ip_add(const char *ip, int d)
{
    unsigned n = per_ip(ip) + (unsigned)d;
    if (n)
        pl_map_put(&by_ip, ip, (void *)(uintptr_t)n);
    else
        pl_map_del(&by_ip, ip);
}


/* Answers the oldest held request with what is pending (maybe nothing);
 * with the stream ended, that is the terminate body. */
static void answer_oldest(struct bosh *b)
{
    if (!b->nheld)
        return;
    struct held h = b->held[0];
    memmove(b->held, b->held + 1, (size_t)(b->nheld - 1) * sizeof(*b->held));
    b->nheld--;
    struct pl_buf o = {0};
    build(b, &o, b->ended ? terminate_attrs(b) : "");
    h.r->data = NULL;
    answer(b, h.r, h.rid, &o);
    if (!b->nheld)
        b->idle_since = pl_loop_now(pl_server_loop());
}

static void on_flush(struct pl_timer *t)
{
    struct bosh *b = t->data;
    if (b->out.len || b->ended)
        answer_oldest(b);
    if (b->ended && !b->c) {
        session_free(b);
        return;
    }
    arm(b);
}

/* ---- the transport (c2s.h) ---- */

static void tr_header(void *t, const char *from, const char *id)
{
    struct bosh *b = t;
    snprintf(b->from, sizeof(b->from), "%s", from);
    snprintf(b->authid, sizeof(b->authid), "%s", id);
}

static void tr_element(void *t, const struct pl_str *v, int n)
{
    struct bosh *b = t;
    if (b->ended)
        return;
    size_t k;
    const char *extra = pl_stream_standalone_ns(v, n, &k);
    pl_buf_append(&b->out, v[0].p, k);
    pl_buf_append_str(&b->out, extra);
    pl_buf_append(&b->out, v[0].p + k, v[0].len - k);
    for (int i = 1; i < n; i++)
        pl_buf_append(&b->out, v[i].p, v[i].len);
    if (v[0].len > 13 && memcmp(v[0].p, "<stream:error", 13) == 0)
        b->error = 1;
    if (b->created && !pl_timer_active(&b->flush))
        pl_timer_start(pl_server_loop(), &b->flush, 0);
}

/* The stream has ended (tr_close, a turn later): its side is released;
 * the session stays until its terminate answer is out (on_flush, the
 * next request, or the inactivity deadline). */
static void on_gone(struct pl_timer *t)
{
    struct bosh *b = t->data;
    struct c2s *c = b->c;
    b->c = NULL;
    if (c)
        pl_c2s_gone(c);
    if (!b->nheld)
        b->idle_since = pl_loop_now(pl_server_loop());
    arm(b);
}

static void tr_close(void *t)
{
    struct bosh *b = t;
    if (b->ended)
        return;
    b->ended = 1;
    /* Not from inside the stream's own call: it still runs. */
    pl_timer_start(pl_server_loop(), &b->gone, 0);
    if (b->nheld)
        pl_timer_start(pl_server_loop(), &b->flush, 0);
}

static void tr_keepalive(void *t)
{
    (void)t; /* empty answers at each wait keep a BOSH session alive */
}

static void tr_attach(void *t, struct c2s *c)
{
    struct bosh *b = t;
    b->c = c;
}

static const struct pl_c2s_transport transport = {
    .name = "bosh",
    .header = tr_header,
    .element = tr_element,
    .close = tr_close,
    .keepalive = tr_keepalive,
    .attach = tr_attach,
};

/* ---- sessions ---- */

static void session_free(struct bosh *b)
{
    pl_timer_stop(&b->timer);
    pl_timer_stop(&b->flush);
    pl_timer_stop(&b->gone);
    for (int i = 0; i < b->nheld; i++) {
        b->held[i].r->data = NULL;
        pl_http_respond(b->held[i].r, 200, "text/xml; charset=utf-8",
                        "<body xmlns='" NS_HTTPBIND "' type='terminate'/>",
                        sizeof("<body xmlns='" NS_HTTPBIND
                               "' type='terminate'/>") -
                            1);
    }
    for (int i = 0; i < b->nearly; i++) {
        b->early[i].r->data = NULL;
        pl_http_error(b->early[i].r, 404, NULL);
    }
    for (int i = 0; i < MAX_REQUESTS; i++)
        pl_buf_reset(&b->kept[i].body);
    pl_buf_reset(&b->out);
    pl_map_del(&sessions, b->sid);
    per_ip_add(b->conn.ip, -1);
    nsessions--;
    if (b->c) {
        struct c2s *c = b->c;
        b->c = NULL;
        pl_c2s_gone(c);
    }
    pl_free(b);
}

/* The nearest deadline: a held request's wait, or the inactivity. */
static void arm(struct bosh *b)
{
    uint64_t now = pl_loop_now(pl_server_loop());
    uint64_t at = b->nheld ? b->held[0].deadline
                           : b->idle_since + (uint64_t)b->inactivity * 1000;
    for (int i = 1; i < b->nheld; i++)
        if (b->held[i].deadline < at)
            at = b->held[i].deadline;
    pl_timer_start(pl_server_loop(), &b->timer, at > now ? at - now : 0);
}

static void on_timer(struct pl_timer *t)
{
    struct bosh *b = t->data;
    uint64_t now = pl_loop_now(pl_server_loop());
    if (!b->nheld) {
        if (now - b->idle_since >= (uint64_t)b->inactivity * 1000) {
            pl_log_debug("bosh", "%s: inactive", b->sid);
            session_free(b); /* the stream sees a lost connection */
            return;
        }
    }
    while (b->nheld && b->held[0].deadline <= now)
        answer_oldest(b);
    arm(b);
}

static void send_terminate(struct pl_http_req *r, const char *cond)
{
    char o[256];
    int n = snprintf(o, sizeof(o),
                     "<body xmlns='" NS_HTTPBIND
                     "' type='terminate' condition='%s'/>",
                     cond);
    pl_http_respond(r, 200, "text/xml; charset=utf-8", o, (size_t)n);
}

static unsigned attr_uint(const struct pl_node *n, const char *name,
                          unsigned def, unsigned max)
{
    const char *v = pl_node_attr(n, name);
    if (!v || !*v)
        return def;
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (*end || x > max)
        return max;
    return (unsigned)x;
}

static int parse_rid(const struct pl_node *body, uint64_t *rid)
{
    const char *v = pl_node_attr(body, "rid");
    if (!v || !*v || strlen(v) > 16)
        return PL_EINVAL;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || x == 0 || x >= (1ULL << 53)) /* XEP-0124 §14.1 */
        return PL_EINVAL;
    *rid = x;
    return PL_OK;
}

/* The bytes between <body ...> and </body> of the request, which parsed
 * as a BOSH body: what the stream is given. */
static struct pl_str inner(struct pl_str all)
{
    char quote = 0;
    size_t i = 0;
    for (; i < all.len; i++) {
        char ch = all.p[i];
        if (quote) {
            if (ch == quote)
                quote = 0;
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        } else if (ch == '>') {
            break;
        }
    }
    if (i >= all.len || (i > 0 && all.p[i - 1] == '/'))
        return (struct pl_str){NULL, 0}; /* <body .../>: nothing inside */
    size_t s = i + 1, e = all.len;
    while (e > s && all.p[e - 1] != '<')
        e--;
    if (e > s)
        e--; /* the '<' of the end tag */
    return (struct pl_str){all.p + s, e - s};
}

/* Hands the request's children to the stream, then restarts or ends it
 * as the body says. */
static void deliver(struct bosh *b, const struct pl_node *body,
                    struct pl_str raw)
{
    if (!b->c || b->ended)
        return;
    b->conn.last_read_ms = pl_loop_now(pl_server_loop());
    struct pl_str in = inner(raw);
    if (in.len)
        pl_c2s_feed(b->c, in.p, in.len);
    if (!b->c || b->ended)
        return;
    const char *restart = pl_node_attr_ns(body, NS_XBOSH, "restart");
    if (restart && strcmp(restart, "true") == 0) {
        char o[400];
        snprintf(o, sizeof(o),
                 "<open xmlns='" PL_NS_FRAMING "' to='%s' version='1.0'/>",
                 b->from);
        pl_c2s_feed(b->c, o, strlen(o));
    }
    const char *type = pl_node_attr(body, "type");
    if (b->c && !b->ended && type && strcmp(type, "terminate") == 0)
        pl_c2s_feed(b->c, "<close xmlns='" PL_NS_FRAMING "'/>",
                    sizeof("<close xmlns='" PL_NS_FRAMING "'/>") - 1);
}

/* Holds r (rid) until there is something to send or its wait is over. */
static void hold_req(struct bosh *b, struct pl_http_req *r, uint64_t rid)
{
    if (b->nheld == MAX_REQUESTS || (unsigned)b->nheld >= b->hold)
        answer_oldest(b);
    r->data = b;
    uint64_t now = pl_loop_now(pl_server_loop());
    b->held[b->nheld++] = (struct held){r, rid, now + (uint64_t)b->wait * 1000};
    if (b->out.len || b->ended)
        pl_timer_start(pl_server_loop(), &b->flush, 0);
    arm(b);
}

static void session_create(struct pl_http_req *r, struct pl_node *body,
                           uint64_t rid)
{
    const char *to = pl_node_attr(body, "to");
    char *dom = NULL;
    struct pl_host *h = NULL;
    if (to && pl_jid_prep_domain(pl_str_c(to), &dom) == PL_OK)
        h = pl_host_find(dom);
    pl_free(dom);
    if (!h) {
        send_terminate(r, "host-unknown");
        return;
    }
    if (per_ip(r->conn->ip) >= (unsigned long)set.max_sessions_per_ip) {
        send_terminate(r, "policy-violation");
        return;
    }
    struct bosh *b = pl_calloc(1, sizeof(*b));
    unsigned char rnd[16];
    RAND_bytes(rnd, sizeof(rnd));
    for (int i = 0; i < 16; i++)
        snprintf(b->sid + 2 * i, 3, "%02x", rnd[i]);
    /* The stream's connection: the requests' address and clock. */
    b->conn.loop = r->conn->loop;
    b->conn.io.fd = -1;
    memcpy(b->conn.ip, r->conn->ip, sizeof(b->conn.ip));
    b->conn.port = r->conn->port;
    b->conn.is_loopback = r->conn->is_loopback;
    b->conn.addr = r->conn->addr;
    b->conn.lim = r->conn->lim;
    b->conn.opened_ms = pl_loop_now(pl_server_loop());
    b->conn.last_read_ms = b->conn.opened_ms;
    b->conn.last_write_ms = b->conn.opened_ms;
    b->conn.data = b;
    b->rid = rid;
    b->wait = attr_uint(body, "wait", (unsigned)set.max_wait,
                        (unsigned)set.max_wait);
    b->hold = attr_uint(body, "hold", 1, (unsigned)set.max_hold);
    if (b->hold < 1)
        b->hold = 1;
    pl_timer_init(&b->timer, on_timer, b);
    pl_timer_init(&b->flush, on_flush, b);
    pl_timer_init(&b->gone, on_gone, b);
    b->idle_since = b->conn.opened_ms;
    b->inactivity = (unsigned)set.max_inactivity;
    pl_map_put(&sessions, b->sid, b);
    per_ip_add(b->conn.ip, 1);
    nsessions++;
    b->c = pl_c2s_open(&b->conn, &transport, b, r->secure);
    if (!b->c) {
        session_free(b);
        send_terminate(r, "internal-server-error");
        return;
    }
    pl_stat_inc(bosh_sessions);
    char o[320];
    snprintf(o, sizeof(o),
             "<open xmlns='" PL_NS_FRAMING "' to='%s' version='1.0'/>",
             h->domain);
    pl_c2s_feed(b->c, o, strlen(o));
    if (b->ended) {
        struct pl_buf a = {0};
        build(b, &a, terminate_attrs(b));
        answer(b, r, rid, &a);
        return; /* freed by on_gone */
    }
    char attrs[800], maxpause[32] = "";
    if (set.max_pause)
        snprintf(maxpause, sizeof(maxpause), " maxpause='%u'",
                 (unsigned)set.max_pause);
    snprintf(attrs, sizeof(attrs),
             " sid='%s' wait='%u' requests='%u' hold='%u' inactivity='%u'%s"
             " polling='1' ver='1.11' from='%s' authid='%s'"
             " xmlns:xmpp='" NS_XBOSH "' xmpp:version='1.0'"
             " xmpp:restartlogic='true'"
             " xmlns:stream='" PL_NS_STREAMS "'",
             b->sid, b->wait, b->hold + 1, b->hold,
             (unsigned)set.max_inactivity, maxpause, b->from, b->authid);
    struct pl_buf a = {0};
    build(b, &a, attrs);
    answer(b, r, rid, &a);
    b->created = 1;
    b->idle_since = pl_loop_now(pl_server_loop());
    arm(b);
}

/* A request whose turn it is.  One with 'pause' (§10, when we offered
 * maxpause; a longer pause is cut to it): its payloads go on, every held
 * request is answered, it is answered at once with no payload (and not
 * kept for a retransmission), and the session may stay without a
 * request that long; the next request restores the inactivity. */
static void process(struct bosh *b, struct pl_http_req *r, uint64_t rid,
                    struct pl_node *body, struct pl_str raw)
{
    b->rid = rid;
    b->inactivity = (unsigned)set.max_inactivity;
    deliver(b, body, raw);
    const char *pause = set.max_pause ? pl_node_attr(body, "pause") : NULL;
    if (!pause || b->ended) {
        hold_req(b, r, rid);
        return;
    }
    unsigned p = attr_uint(body, "pause", (unsigned)set.max_inactivity,
                           (unsigned)set.max_pause);
    while (b->nheld)
        answer_oldest(b);
    static const char empty[] = "<body xmlns='" NS_HTTPBIND "'/>";
    pl_http_respond(r, 200, "text/xml; charset=utf-8", empty,
                    sizeof(empty) - 1);
    b->inactivity = p ? p : 1;
    b->idle_since = pl_loop_now(pl_server_loop());
    pl_log_debug("bosh", "%s: paused for %u s", b->sid, b->inactivity);
    arm(b);
}

static void on_abort(struct pl_http_req *r)
{
    struct bosh *b = r->data;
    if (!b)
        return;
    for (int i = 0; i < b->nheld; i++)
        if (b->held[i].r == r) {
            memmove(b->held + i, b->held + i + 1,
                    (size_t)(b->nheld - i - 1) * sizeof(*b->held));
            b->nheld--;
            break;
        }
    for (int i = 0; i < b->nearly; i++)
        if (b->early[i].r == r) {
            memmove(b->early + i, b->early + i + 1,
                    (size_t)(b->nearly - i - 1) * sizeof(*b->early));
            b->nearly--;
            break;
        }
    if (!b->nheld)
        b->idle_since = pl_loop_now(pl_server_loop());
    arm(b);
}

static void on_request(struct pl_http_req *r)
{
    struct pl_str raw = pl_buf_str(&r->body);
    const struct pl_settings *s = &pl_server_config()->s;
    struct pl_xml_limits lim = {(size_t)s->max_stanza_size * MAX_REQUESTS,
                                (unsigned)s->max_depth + 1};
    struct pl_stanza *st = NULL;
    if (!raw.len ||
        pl_xml_parse_fragment_limited(raw.p, raw.len, &lim, &st) != PL_OK) {
        pl_http_error(r, 400, "not a BOSH body");
        return;
    }
    struct pl_node *body = pl_stanza_root(st);
    uint64_t rid;
    if (strcmp(body->ns, NS_HTTPBIND) != 0 || strcmp(body->name, "body") != 0 ||
        parse_rid(body, &rid) != PL_OK) {
        pl_stanza_unref(st);
        pl_http_error(r, 400, "not a BOSH body");
        return;
    }
    pl_stat_inc(bosh_requests);
    const char *sida = pl_node_attr(body, "sid");
    char sid[sizeof(((struct bosh *)0)->sid)];
    /* A sid longer than ours is nobody's (not truncated into one). */
    snprintf(sid, sizeof(sid), "%s",
             sida && strlen(sida) < sizeof(sid) ? sida : "");
    if (!sida) {
        session_create(r, body, rid);
        pl_stanza_unref(st);
        return;
    }
    struct bosh *b = pl_map_get(&sessions, sid);
    if (!b) {
        pl_stanza_unref(st);
        send_terminate(r, "item-not-found");
        return;
    }
    if (b->ended) {
        /* The stream ended while no request was held: this one says so
         * (with the stream error, if any), and the session is over. */
        pl_stanza_unref(st);
        while (b->nheld)
            answer_oldest(b);
        r->data = b;
        b->held[b->nheld++] = (struct held){r, rid, 0};
        answer_oldest(b);
        session_free(b);
        return;
    }
    if (rid <= b->rid) {
        /* §14.3: a retransmission gets the same answer again. */
        struct kept *k = &b->kept[rid % MAX_REQUESTS];
        pl_stanza_unref(st);
        if (k->body.len && k->rid == rid && b->rid - rid < MAX_REQUESTS)
            pl_http_respond(r, 200, "text/xml; charset=utf-8",
                            k->body.data + k->body.off, k->body.len);
        else
            send_terminate(r, "item-not-found");
        return;
    }
    if (rid > b->rid + b->hold + 1) {
        /* §14.1: beyond the window ends the session. */
        pl_stanza_unref(st);
        send_terminate(r, "item-not-found");
        session_free(b);
        return;
    }
    if (rid != b->rid + 1) {
        /* Early: waits for the requests before it (its body is kept). */
        if (b->nearly == MAX_REQUESTS) {
            pl_stanza_unref(st);
            send_terminate(r, "policy-violation");
            return;
        }
        r->data = b;
        b->early[b->nearly++] = (struct held){r, rid, 0};
        pl_stanza_unref(st);
        return;
    }
    process(b, r, rid, body, raw);
    pl_stanza_unref(st);
    /* The ones that were waiting for this one, in order. */
    for (int again = 1; again && b == pl_map_get(&sessions, sid);) {
        again = 0;
        for (int i = 0; i < b->nearly; i++) {
            if (b->early[i].rid != b->rid + 1)
                continue;
            struct pl_http_req *er = b->early[i].r;
            uint64_t erid = b->early[i].rid;
            memmove(b->early + i, b->early + i + 1,
                    (size_t)(b->nearly - i - 1) * sizeof(*b->early));
            b->nearly--;
            struct pl_str eraw = pl_buf_str(&er->body);
            struct pl_stanza *est = NULL;
            if (pl_xml_parse_fragment_limited(eraw.p, eraw.len, &lim, &est) ==
                PL_OK) {
                process(b, er, erid, pl_stanza_root(est), eraw);
                pl_stanza_unref(est);
            }
            again = 1;
            break;
        }
    }
}

static struct pl_http_route route = {
    .path = PL_BOSH_PATH,
    .service = "bosh",
    .methods = "POST",
    .cors = 1,
    .on_request = on_request,
    .on_abort = on_abort,
};

struct collect {
    struct bosh **v;
    size_t n;
};

static void collect_one(const char *key, void *value, void *ud)
{
    (void)key;
    struct collect *c = ud;
    c->v = pl_realloc(c->v, (c->n + 1) * sizeof(*c->v));
    c->v[c->n++] = value;
}

int pl__bosh_start(const struct pl_bosh_settings *s)
{
    if (s)
        set = *s;
    const struct pl_settings *core = &pl_server_config()->s;
    route.max_body = (uint64_t)core->max_stanza_size * MAX_REQUESTS;
    started = 1;
    return pl_http_route_add(&route);
}

void pl__bosh_stop(void)
{
    if (!started)
        return;
    started = 0;
    pl_http_route_remove(&route);
    struct collect all = {0};
    pl_map_each(&sessions, collect_one, &all);
    for (size_t i = 0; i < all.n; i++)
        session_free(all.v[i]);
    pl_free(all.v);
    pl_map_clear(&sessions);
    pl_map_clear(&by_ip);
}

unsigned long pl__bosh_sessions(void)
{
    return nsessions;
}
