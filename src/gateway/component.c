/*
 * component.c - the client side of XEP-0114 (jabber:component:accept):
 * parley-gateway's link to parleyd, which routes every stanza for the
 * gateway's domain down this connection.
 *
 * The stream (XEP-0114 §3): we open a stream to our domain; parleyd
 * answers with a header carrying an id; we send
 * <handshake>hex(SHA-1(id + secret))</handshake>; parleyd answers
 * <handshake/> and stanzas flow both ways.  Our stanzas must come from
 * our domain or a JID at it.  There is one link per component domain
 * (the SMS domain and the mail domain, each configured in parleyd with
 * the same secret); pl_gwc_send() picks the link of the stanza's from.  A stream error (conflict: another instance
 * holds the domain; not-authorized: a wrong secret) or a lost connection
 * ends the link, and we connect again after a delay that doubles from
 * reconnect_min to reconnect_max, with jitter, so several instances do
 * not knock in step; a link that lasted resets the delay.
 *
 * parleyd takes several links per domain (its max_links), so every
 * instance of the gateway holds its own and parleyd spreads the domain's
 * stanzas over them.
 *
 * Stream management (XEP-0198): right after <handshake/> we send
 * <enable xmlns='urn:xmpp:sm:3'/> (a component stream advertises no
 * features, so we just try; <failed/> or a stream error from an older
 * server leaves the link without it, and a later connection tries
 * again).  Inbound, each stanza parleyd sends is counted as handled only
 * when the work its handling queued on the database thread has run (a
 * no-op job queued behind it on that single, ordered thread; a handler
 * whose work passes through another queue first, such as the content
 * checks, holds the stanza with pl_gwc_hold() until its database job is
 * done): a message is acknowledged with <a h/> only once it is committed
 * to the queue, so
 * parleyd sends again, on another link, whatever a killed instance had
 * not committed.  The queue drops those duplicates (queue.c).
 * Outbound, pl_gwc_send_acked() calls back when parleyd's <a h/> covers
 * the stanza (we ask with <r/> a few ms after writing), or with ok 0 when
 * the link died first; without stream management, at once.
 *
 * The socket is the core's (conn.h: non-blocking, coalesced writes), the
 * parser the core's (xml.h, with max_stanza as its limit).
 * pl_gwc_send() is refused while there is no link for the stanza's domain
 * (callers keep what they wanted to send in the outbox and retry).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "gateway/core.h"
#include "log.h"
#include "stanza.h"
#include "xml.h"
#include "xmpp/comp_sm.h"
#include "xmpp/framing.h"

#define NS_SM "urn:xmpp:sm:3"

enum sm_state {
    SM_NONE = 0, /* not asked (yet), or refused */
    SM_ASKED,    /* <enable/> sent */
    SM_ON,       /* <enabled/> came */
};

/* A stanza written with pl_gwc_send_acked, waiting for parleyd's h. */
struct tracked {
    uint32_t seq; /* its number among the stanzas sent since <enable/> */
    pl_gwc_acked_fn *fn;
    void *ud;
};

enum link_state {
    S_IDLE = 0,   /* waiting to reconnect */
    S_CONNECTING, /* TCP connect in progress */
    S_HEADER,     /* our header sent, waiting for parleyd's */
    S_HANDSHAKE,  /* handshake sent, waiting for <handshake/> */
    S_READY,      /* stanzas flow */
};

struct link {
    const char *domain;        /* the component domain of this link */
    int state;                 /* enum link_state */
    int fd;                    /* while connecting */
    struct pl_io cio;          /* connect watcher */
    struct pl_conn *conn;      /* the connection, or NULL */
    struct pl_xml_parser *xml; /* its stream parser */
    struct pl_timer retry;     /* reconnect timer */
    long delay_ms;             /* next reconnect delay */
    uint64_t ready_ms;         /* loop time the link became ready */
    uint32_t gen;              /* connection number (stale completions) */
    int sm;                    /* enum sm_state */
    int a_owed;                /* an <r/> got a lagging h */
    struct pl_csm in;          /* inbound counters (XEP-0198) */
    uint32_t out_count;        /* stanzas sent since <enable/> */
    uint32_t r_at;             /* out_count at the last <r/> */
    struct tracked *tr;        /* ring of tracked stanzas */
    size_t trhead, trlen, trcap;
    struct pl_timer rtimer; /* <r/> coalescing */
};

/* One link per component domain (parleyd takes one connection per
 * domain): the SMS domain and the mail domain, when configured. */
static struct {
    struct link links[2];
    int n;
    int stopping; /* shutdown: no reconnect */
    pl_gwc_stanza_fn *on_stanza;
    void (*on_ready)(void);
} G;

static void schedule(struct link *L);
static void fail(struct link *L, const char *why);

/* Calls back the tracked stanzas up to h (all: every one) with ok. */
static void tracked_resolve(struct link *L, int all, uint32_t h)
{
    while (L->trlen) {
        struct tracked t = L->tr[L->trhead];
        /* seq <= h modulo 2^32: h - seq is "small". */
        if (!all && (uint32_t)(h - t.seq) >= 0x80000000u)
            break;
        L->trhead = (L->trhead + 1) % L->trcap;
        L->trlen--;
        t.fn(t.ud, all ? 0 : 1);
    }
}

static void write_a(struct link *L)
{
    char b[80];
    snprintf(b, sizeof(b), "<a xmlns='" NS_SM "' h='%u'/>", L->in.in_handled);
    pl_conn_write(L->conn, b, strlen(b));
    L->a_owed = L->in.in_handled != L->in.in_seen;
}

/* A no-op job on the database thread behind the work a stanza's handling
 * queued there: when it completes, that stanza is handled. */
struct handled_job {
    struct pl_work w;
    struct link *L;
    uint32_t gen, seq;
    int holds; /* the handler itself + pl_gwc_hold()s not yet released */
};

/* The stanza being handled (G.on_stanza), for pl_gwc_hold(). */
static struct handled_job *cur_handled;

void *pl_gwc_hold(void)
{
    if (!cur_handled)
        return NULL;
    cur_handled->holds++;
    return cur_handled;
}

void pl_gwc_release(void *hold)
{
    struct handled_job *j = hold;
    if (j && --j->holds == 0)
        pl_gw_db_submit(&j->w); /* behind every write the stanza caused */
}

static void handled_work(struct pl_work *w)
{
    (void)w;
}

static void handled_done(struct pl_work *w)
{
    struct handled_job *j = (struct handled_job *)w;
    struct link *L = j->L;
    if (L->gen == j->gen && L->sm == SM_ON && L->conn &&
        pl_csm_in_done(&L->in, j->seq) && L->a_owed)
        write_a(L); /* XEP-0198 §4: unrequested acks are allowed */
    pl_free(j);
}

static void on_rtimer(struct pl_timer *t)
{
    struct link *L = t->data;
    if (L->sm == SM_ON && L->conn && L->trlen && L->r_at != L->out_count) {
        L->r_at = L->out_count;
        pl_conn_write(L->conn, "<r xmlns='" NS_SM "'/>",
                      strlen("<r xmlns='" NS_SM "'/>"));
    }
}

/* An XEP-0198 element from parleyd. */
static void on_sm(struct link *L, struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    if (strcmp(name, "enabled") == 0 && L->sm == SM_ASKED) {
        L->sm = SM_ON;
        pl_csm_enable(&L->in);
        pl_log_info("component", "%s: stream management on", L->domain);
    } else if (strcmp(name, "failed") == 0 && L->sm == SM_ASKED) {
        /* An older server: the link works as before, acks are
         * implicit. */
        L->sm = SM_NONE;
        tracked_resolve(L, 0, L->out_count);
        pl_log_info("component", "%s: parleyd refused stream management",
                    L->domain);
    } else if (strcmp(name, "r") == 0 && L->sm == SM_ON) {
        write_a(L);
    } else if (strcmp(name, "a") == 0 && L->sm == SM_ON) {
        uint32_t h = 0;
        if (pl_csm_parse_h(pl_stanza_attr(st, "h"), &h) != PL_OK ||
            (uint32_t)(L->out_count - h) >= 0x80000000u) {
            fail(L, "parleyd acknowledged more than was sent");
            return;
        }
        tracked_resolve(L, 0, h);
    } else {
        pl_log_debug("component", "ignored <%s/> (stream management)", name);
    }
}

static void on_data(struct pl_conn *c, const char *p, size_t n)
{
    struct link *L = c->data;
    pl_xml_parser_feed(L->xml, p, n);
}

static void on_closed(struct pl_conn *c)
{
    struct link *L = c->data;
    L->conn = NULL;
    if (L->xml) {
        pl_xml_parser_free(L->xml);
        L->xml = NULL;
    }
    if (L->state == S_READY)
        pl_log_warn("component", "link to parleyd lost");
    L->gen++;
    pl_timer_stop(&L->rtimer);
    tracked_resolve(L, 1, 0);
    pl_csm_free(&L->in);
    memset(&L->in, 0, sizeof(L->in));
    L->sm = SM_NONE;
    L->a_owed = 0;
    /* A link that held for a minute starts the backoff afresh. */
    if (L->state == S_READY && pl_loop_now(pl_gw.loop) - L->ready_ms > 60000)
        L->delay_ms = pl_gw.c.reconnect_min_ms;
    L->state = S_IDLE;
    schedule(L);
}

static const struct pl_conn_ops ops = {
    .data = on_data,
    .closed = on_closed,
};

static void fail(struct link *L, const char *why)
{
    pl_log_warn("component", "%s", why);
    if (L->conn)
        pl_conn_close(L->conn);
}

static void on_open(void *ud, struct pl_stanza *hdr)
{
    struct link *L = ud;
    const char *id = pl_node_attr(pl_stanza_root(hdr), "id");
    if (L->state != S_HEADER || !id || !id[0]) {
        fail(L, "parleyd's stream header has no id");
        return;
    }
    /* XEP-0114 §3: lower-case hex of SHA-1(id + secret). */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    EVP_DigestInit_ex(x, EVP_sha1(), NULL);
    EVP_DigestUpdate(x, id, strlen(id));
    EVP_DigestUpdate(x, pl_gw.c.comp_secret, strlen(pl_gw.c.comp_secret));
    EVP_DigestFinal_ex(x, md, &mdlen);
    EVP_MD_CTX_free(x);
    static const char hex[] = "0123456789abcdef";
    char out[80] = "<handshake>";
    size_t k = strlen(out);
    for (unsigned i = 0; i < mdlen; i++) {
        out[k++] = hex[md[i] >> 4];
        out[k++] = hex[md[i] & 15];
    }
    strcpy(out + k, "</handshake>");
    pl_conn_write(L->conn, out, strlen(out));
    L->state = S_HANDSHAKE;
}

/* XEP-0114 §3: the component namespace carries jabber:client stanzas;
 * the rest of the gateway sees jabber:client, as parleyd's modules do. */
static void to_client_ns(struct pl_node *n)
{
    if (n->ns && strcmp(n->ns, PL_NS_COMPONENT) == 0)
        n->ns = PL_NS_CLIENT;
    for (struct pl_node *c = pl_node_first_elem(n); c; c = pl_node_next_elem(c))
        if (c->ns && strcmp(c->ns, PL_NS_COMPONENT) == 0)
            to_client_ns(c);
}

static void on_stanza(void *ud, struct pl_stanza *st)
{
    struct link *L = ud;
    struct pl_node *r = pl_stanza_root(st);
    if (strcmp(r->name, "error") == 0 && strcmp(r->ns, PL_NS_STREAMS) == 0) {
        struct pl_node *cond = pl_node_first_elem(r);
        pl_log_warn("component", "parleyd ended the stream: %s",
                    cond ? cond->name : "?");
        pl_stanza_unref(st);
        if (L->conn)
            pl_conn_close(L->conn);
        return;
    }
    if (L->state == S_HANDSHAKE) {
        if (strcmp(r->name, "handshake") != 0) {
            pl_stanza_unref(st);
            fail(L, "expected <handshake/>");
            return;
        }
        L->state = S_READY;
        L->ready_ms = pl_loop_now(pl_gw.loop);
        pl_conn_established(L->conn);
        pl_log_info("component", "linked to parleyd as %s", L->domain);
        static const char enable[] = "<enable xmlns='" NS_SM "'/>";
        pl_conn_write(L->conn, enable, sizeof(enable) - 1);
        L->sm = SM_ASKED;
        L->out_count = L->r_at = 0;
        pl_stanza_unref(st);
        if (G.on_ready)
            G.on_ready();
        return;
    }
    if (L->state == S_READY && r->ns && strcmp(r->ns, NS_SM) == 0) {
        on_sm(L, st);
    } else if (L->state == S_READY) {
        to_client_ns(r);
        if (L->sm == SM_ON) {
            struct handled_job *j = pl_calloc(1, sizeof(*j));
            j->w.work = handled_work;
            j->w.done = handled_done;
            j->L = L;
            j->gen = L->gen;
            j->seq = pl_csm_in_begin(&L->in);
            j->holds = 1;
            cur_handled = j;
            G.on_stanza(st);
            cur_handled = NULL;
            pl_gwc_release(j);
        } else {
            G.on_stanza(st);
        }
    }
    pl_stanza_unref(st);
}

static void on_close(void *ud)
{
    struct link *L = ud;
    if (L->conn)
        pl_conn_close(L->conn);
}

static void on_xml_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct link *L = ud;
    pl_log_warn("component", "bad XML from parleyd (%s): %s",
                pl_xml_error_condition(err), text ? text : "");
    if (L->conn)
        pl_conn_close(L->conn);
}

static const struct pl_xml_callbacks xml_cbs = {
    .stream_open = on_open,
    .stanza = on_stanza,
    .stream_close = on_close,
    .error = on_xml_error,
};

static void connected(struct link *L)
{
    struct pl_conn_limits lim = {
        .max_out = 16u << 20,
        .read_rate = 64u << 20,
        .read_burst = 64u << 20,
    };
    L->conn = pl_conn_new(pl_gw.loop, L->fd, &ops, L, &lim);
    L->fd = -1;
    struct pl_xml_limits xl = {(size_t)pl_gw.c.max_stanza, 64};
    L->xml = pl_xml_parser_new(&xl, &xml_cbs, L);
    pl_conn_start(L->conn, NULL);
    struct pl_buf b = {0};
    pl_stream_header(&b, PL_NS_COMPONENT, NULL, L->domain, NULL, 0);
    pl_conn_write(L->conn, b.data + b.off, b.len);
    pl_buf_reset(&b);
    L->state = S_HEADER;
}

static void on_connect_io(struct pl_io *io, unsigned events)
{
    (void)events;
    struct link *L = io->data;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    pl_io_stop(io);
    if (err) {
        pl_log_debug("component", "connect to %s:%ld: %s", pl_gw.c.comp_host,
                     pl_gw.c.comp_port, strerror(err));
        close(L->fd);
        L->fd = -1;
        L->state = S_IDLE;
        schedule(L);
        return;
    }
    connected(L);
}

static void try_connect(struct pl_timer *t)
{
    struct link *L = t->data;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, pl_gw.c.comp_host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)pl_gw.c.comp_port);
        sl = sizeof(*a4);
    } else if (inet_pton(AF_INET6, pl_gw.c.comp_host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)pl_gw.c.comp_port);
        sl = sizeof(*a6);
    } else {
        pl_assert(!"component.host was checked at start-up");
        return;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0 || (connect(fd, (struct sockaddr *)&ss, sl) != 0 &&
                   errno != EINPROGRESS)) {
        pl_log_debug("component", "connect: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        schedule(L);
        return;
    }
    L->fd = fd;
    L->state = S_CONNECTING;
    pl_io_init(&L->cio, fd, on_connect_io, L);
    pl_io_set(pl_gw.loop, &L->cio, PL_IO_WRITE);
}

static void schedule(struct link *L)
{
    if (G.stopping)
        return;
    long d = L->delay_ms;
    unsigned r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    long jitter = d / 4;
    long wait = d - jitter +
                (jitter ? (long)(r % (unsigned)(2 * jitter + 1)) : 0);
    L->delay_ms = d * 2 > pl_gw.c.reconnect_max_ms ? pl_gw.c.reconnect_max_ms
                                                   : d * 2;
    pl_timer_start(pl_gw.loop, &L->retry, (uint64_t)wait);
}

int pl_gwc_start(pl_gwc_stanza_fn *on_stanza_fn, void (*on_ready)(void))
{
    G.on_stanza = on_stanza_fn;
    G.on_ready = on_ready;
    const char *domains[2] = {pl_gw.c.sms_domain, pl_gw.c.mail_domain};
    for (int i = 0; i < 2; i++) {
        if (!domains[i] || !domains[i][0])
            continue;
        struct link *L = &G.links[G.n++];
        L->domain = domains[i];
        L->fd = -1;
        L->delay_ms = pl_gw.c.reconnect_min_ms;
        pl_timer_init(&L->retry, try_connect, L);
        pl_timer_init(&L->rtimer, on_rtimer, L);
        try_connect(&L->retry);
    }
    return PL_OK;
}

/* The link for the domain of st's from (or the first link). */
static struct link *link_for(struct pl_stanza *st)
{
    const char *from = st ? pl_stanza_attr(st, "from") : NULL;
    const char *at = from ? strchr(from, '@') : NULL;
    const char *dom = at ? at + 1 : from;
    for (int i = 0; dom && i < G.n; i++) {
        size_t n = strlen(G.links[i].domain);
        if (strncmp(dom, G.links[i].domain, n) == 0 &&
            (dom[n] == '\0' || dom[n] == '/'))
            return &G.links[i];
    }
    return G.n ? &G.links[0] : NULL;
}

static int link_ready(const struct link *L)
{
    return L && L->state == S_READY && L->conn;
}

int pl_gwc_ready(void)
{
    for (int i = 0; i < G.n; i++)
        if (link_ready(&G.links[i]))
            return 1;
    return 0;
}

int pl_gwc_send(struct pl_stanza *st)
{
    struct link *L = link_for(st);
    if (!link_ready(L))
        return PL_ECLOSED;
    struct pl_str x = pl_stanza_serialize(st, PL_NS_COMPONENT);
    pl_conn_write(L->conn, x.p, x.len);
    if (L->sm != SM_NONE)
        L->out_count++;
    return PL_OK;
}

int pl_gwc_send_acked(struct pl_stanza *st, pl_gwc_acked_fn *fn, void *ud)
{
    struct link *L = link_for(st);
    int rc = pl_gwc_send(st);
    if (rc != PL_OK)
        return rc;
    if (L->sm == SM_NONE) {
        fn(ud, 1); /* nothing better to go by */
        return PL_OK;
    }
    if (L->trlen == L->trcap) {
        size_t ncap = L->trcap ? L->trcap * 2 : 64;
        struct tracked *nt = pl_malloc(ncap * sizeof(*nt));
        for (size_t i = 0; i < L->trlen; i++)
            nt[i] = L->tr[(L->trhead + i) % L->trcap];
        pl_free(L->tr);
        L->tr = nt;
        L->trcap = ncap;
        L->trhead = 0;
    }
    L->tr[(L->trhead + L->trlen) % L->trcap] = (struct tracked){L->out_count,
                                                                fn, ud};
    L->trlen++;
    if (!pl_timer_active(&L->rtimer))
        pl_timer_start(pl_gw.loop, &L->rtimer, 5);
    return PL_OK;
}

void pl_gwc_stop(void)
{
    G.stopping = 1;
    for (int i = 0; i < G.n; i++) {
        struct link *L = &G.links[i];
        pl_timer_stop(&L->retry);
        pl_timer_stop(&L->rtimer);
        if (L->state == S_CONNECTING) {
            pl_io_stop(&L->cio);
            close(L->fd);
            L->fd = -1;
        }
        if (L->conn) {
            pl_conn_write(L->conn, "</stream:stream>", 16);
            pl_conn_close(L->conn);
        }
    }
}
