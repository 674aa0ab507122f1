/*
 * sm.c - stream management state of one session; see sm.h.
 *
 * Two rings per session: the outbound queue (stanzas sent, not yet
 * acknowledged, oldest first) and the inbound stanzas whose handling is
 * not yet durable (their barrier has jobs in flight).  h for the client is
 * one less than the oldest such stanza, or everything seen when none is
 * pending, so it only ever moves forward and never past a stanza whose
 * writes could still be lost.
 */
#include "sm.h"

#include "c2s.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "log.h"
#include "random.h"
#include "router.h"
#include "server.h"
#include "stats.h"
#include "storage.h"
#include "xml.h"

#define STORE "sm"

struct item {
    struct pl_stanza *st;   /* a reference */
    uint32_t seq;           /* its number in the outbound count */
    unsigned persisted : 1; /* a copy is in the "sm" store */
};

struct pend {
    uint32_t seq; /* inbound stanza number */
    int done;     /* its barrier completed */
};

struct pl_sm {
    struct pl_session_filter f; /* last of the session's output filters */
    const struct pl_sm_io *io;  /* transport */
    uint64_t sid;               /* session id, for barriers */
    char id[24];                /* resumption id; also the store key prefix */
    long max;                   /* resumption seconds granted, 0: none */
    int durable;                /* persist messages until acked */
    long max_queue;             /* unacked stanzas before overflow */
    uint32_t in_seen;           /* inbound stanzas received */
    uint32_t out_sent;          /* outbound stanzas sent */
    uint32_t out_acked;         /* acknowledged by the client */
    unsigned r_pending : 1;     /* an <r/> is out, no <a/> back yet */
    unsigned a_owed : 1;        /* answered an <r/> with a lagging h */
    struct item *q;             /* outbound ring */
    size_t qhead, qlen, qcap;
    struct pend *p; /* inbound ring */
    size_t phead, plen, pcap;
};

struct in_ctx {
    uint64_t sid; /* session */
    uint32_t seq; /* inbound stanza */
};

/* ---- storage jobs ---- */

struct put_job {
    char *host, *user, *key; /* document address */
    struct pl_buf xml;       /* standalone stanza */
};

static int put_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct put_job *j = arg;
    return d->kv_set(db, j->host, j->user, STORE, j->key, j->xml.data,
                     j->xml.len);
}

static void put_done(int rc, void *arg)
{
    struct put_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("sm",
                     "while storing an unacknowledged message for "
                     "%s@%s: storage error %d",
                     j->user, j->host, rc);
    pl_free(j->host);
    pl_free(j->user);
    pl_free(j->key);
    pl_buf_reset(&j->xml);
    pl_free(j);
}

/* Deletes documents of one host: "user\0key\0" pairs. */
struct del_job {
    char *host;       /* host */
    struct pl_buf kv; /* user\0key\0 ... */
};

static int del_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct del_job *j = arg;
    const char *p = j->kv.data, *end = p + j->kv.len;
    int rc = PL_OK;
    while (p < end) {
        const char *user = p;
        const char *key = user + strlen(user) + 1;
        p = key + strlen(key) + 1;
        int r = d->kv_set(db, j->host, user, STORE, key, NULL, 0);
        if (r != PL_OK && r != PL_ENOT_FOUND)
            rc = r;
    }
    return rc;
}

static void del_done(int rc, void *arg)
{
    struct del_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("sm",
                     "while deleting acknowledged messages on %s: "
                     "storage error %d",
                     j->host, rc);
    pl_free(j->host);
    pl_buf_reset(&j->kv);
    pl_free(j);
}

static struct del_job *del_new(const char *host)
{
    struct del_job *j = pl_calloc(1, sizeof(*j));
    j->host = pl_strdup(host);
    return j;
}

static void del_add(struct del_job *j, const char *user, const char *key)
{
    pl_buf_append(&j->kv, user, strlen(user) + 1);
    pl_buf_append(&j->kv, key, strlen(key) + 1);
}

static void del_submit(void *arg)
{
    struct del_job *j = arg;
    if (j->kv.len == 0) {
        del_done(PL_OK, j);
        return;
    }
    pl_storage_submit(pl_server_loop(), del_run, del_done, j);
}

static void item_key(const struct pl_sm *sm, uint32_t seq, char *buf,
                     size_t len)
{
    snprintf(buf, len, "%s:%010u", sm->id, seq);
}

/* ---- helpers ---- */

static void writes(struct pl_session *s, const char *str)
{
    if (s->sm->io->connected(s))
        s->sm->io->write(s, str, strlen(str));
}

static void write_a(struct pl_session *s)
{
    char b[64];
    snprintf(b, sizeof(b), "<a xmlns='" PL_NS_SM "' h='%u'/>",
             pl_sm_handled(s->sm));
    writes(s, b);
}

static void write_r(struct pl_session *s)
{
    if (!s->sm->io->connected(s))
        return;
    writes(s, "<r xmlns='" PL_NS_SM "'/>");
    s->sm->r_pending = 1;
}

/* Messages RFC 6121 §8.5.2 would store offline or give another resource. */
static int reroutable(struct pl_stanza *st)
{
    if (strcmp(pl_stanza_name(st), "message") != 0)
        return 0;
    const char *type = pl_stanza_attr(st, "type");
    return !type || strcmp(type, "chat") == 0 || strcmp(type, "normal") == 0;
}

/* ---- enable ---- */

/* The session's last output filter: what goes out is counted and kept. */
static int sm_filter(struct pl_session *s, struct pl_stanza *st,
                     struct pl_session_filter *f)
{
    (void)f;
    pl_sm_send(s, st);
    return 1;
}

void pl_sm_enable(struct pl_session *s, const struct pl_sm_io *io, int resume,
                  long max)
{
    const struct pl_c2s_settings *set = pl_c2s_settings();
    struct pl_sm *sm = pl_calloc(1, sizeof(*sm));
    sm->io = io;
    sm->sid = s->id;
    unsigned char raw[8];
    pl_random(raw, sizeof(raw));
    for (int i = 0; i < 8; i++)
        snprintf(sm->id + 2 * i, 3, "%02x", raw[i]);
    if (resume && set->sm_resume_timeout > 0)
        sm->max = max > 0 && max < set->sm_resume_timeout
                      ? max
                      : set->sm_resume_timeout;
    sm->durable = set->sm_durable;
    sm->max_queue = set->sm_max_queue;
    s->sm = sm;
    sm->f.fn = sm_filter;
    sm->f.priority = -1000;
    pl_session_filter_add(s, &sm->f);
    char b[160];
    if (sm->max)
        snprintf(b, sizeof(b),
                 "<enabled xmlns='" PL_NS_SM "' id='%s' resume='true' "
                 "max='%ld'/>",
                 sm->id, sm->max);
    else
        snprintf(b, sizeof(b), "<enabled xmlns='" PL_NS_SM "'/>");
    writes(s, b);
    pl_stat_inc(sm_enabled);
}

const char *pl_sm_id(const struct pl_sm *sm)
{
    return sm->max ? sm->id : NULL;
}

int pl_sm_congested(const struct pl_sm *sm)
{
    return (long)sm->qlen * 2 >= sm->max_queue;
}

long pl_sm_max(const struct pl_sm *sm)
{
    return sm->max;
}

/* ---- inbound ---- */

uint32_t pl_sm_handled(const struct pl_sm *sm)
{
    return sm->plen ? sm->p[sm->phead].seq - 1 : sm->in_seen;
}

size_t pl_sm_pending(const struct pl_sm *sm)
{
    return sm->plen;
}

static void in_done(void *arg)
{
    struct in_ctx *ctx = arg;
    struct pl_session *s = pl_session_by_id(ctx->sid);
    struct pl_sm *sm = s ? s->sm : NULL;
    if (sm && sm->sid == ctx->sid) {
        uint32_t before = pl_sm_handled(sm);
        for (size_t i = 0; i < sm->plen; i++) {
            struct pend *e = &sm->p[(sm->phead + i) % sm->pcap];
            if (e->seq == ctx->seq) {
                e->done = 1;
                break;
            }
        }
        while (sm->plen && sm->p[sm->phead].done) {
            sm->phead = (sm->phead + 1) % sm->pcap;
            sm->plen--;
        }
        /* An <r/> was answered with a lagging h: tell the client as soon
         * as it moved (XEP-0198 §4 allows unrequested acks). */
        if (sm->a_owed && pl_sm_handled(sm) != before) {
            write_a(s);
            sm->a_owed = pl_sm_handled(sm) != sm->in_seen;
        }
    }
    pl_free(ctx);
}

struct pl_barrier *pl_sm_in_begin(struct pl_session *s)
{
    struct pl_sm *sm = s->sm;
    if (sm->plen == sm->pcap) {
        size_t ncap = sm->pcap ? sm->pcap * 2 : 8;
        struct pend *np = pl_malloc(ncap * sizeof(*np));
        for (size_t i = 0; i < sm->plen; i++)
            np[i] = sm->p[(sm->phead + i) % sm->pcap];
        pl_free(sm->p);
        sm->p = np;
        sm->pcap = ncap;
        sm->phead = 0;
    }
    uint32_t seq = ++sm->in_seen;
    sm->p[(sm->phead + sm->plen) % sm->pcap] = (struct pend){seq, 0};
    sm->plen++;
    struct in_ctx *ctx = pl_malloc(sizeof(*ctx));
    ctx->sid = sm->sid;
    ctx->seq = seq;
    struct pl_barrier *b = pl_barrier_new(in_done, ctx);
    pl_barrier_enter(b);
    return b;
}

void pl_sm_in_end(struct pl_barrier *b)
{
    pl_barrier_enter(NULL);
    pl_barrier_release(b);
}

void pl_sm_request(struct pl_session *s)
{
    write_a(s);
    s->sm->a_owed = pl_sm_handled(s->sm) != s->sm->in_seen;
}

/* ---- outbound ---- */

static void persist(struct pl_session *s, struct item *it)
{
    struct put_job *j = pl_calloc(1, sizeof(*j));
    char key[48];
    item_key(s->sm, it->seq, key, sizeof(key));
    j->host = pl_strdup(s->jid->domain);
    j->user = pl_strdup(s->jid->local);
    j->key = pl_strdup(key);
    /* Standalone XML (with its xmlns) so it parses back as is. */
    pl_node_serialize(pl_stanza_root(it->st), "", PL_NS_CLIENT, &j->xml);
    pl_storage_submit(pl_server_loop(), put_run, put_done, j);
    it->persisted = 1;
}

void pl_sm_send(struct pl_session *s, struct pl_stanza *st)
{
    struct pl_sm *sm = s->sm;
    if (sm->qlen == sm->qcap) {
        size_t ncap = sm->qcap ? sm->qcap * 2 : 16;
        struct item *nq = pl_malloc(ncap * sizeof(*nq));
        for (size_t i = 0; i < sm->qlen; i++)
            nq[i] = sm->q[(sm->qhead + i) % sm->qcap];
        pl_free(sm->q);
        sm->q = nq;
        sm->qcap = ncap;
        sm->qhead = 0;
    }
    struct item *it = &sm->q[(sm->qhead + sm->qlen) % sm->qcap];
    *it = (struct item){pl_stanza_ref(st), ++sm->out_sent, 0};
    sm->qlen++;
    if (sm->durable && s->jid && s->jid->local && reroutable(st))
        persist(s, it);
    if (sm->io->connected(s)) {
        struct pl_str x = pl_stanza_serialize(st, PL_NS_CLIENT);
        sm->io->write(s, x.p, x.len);
        if (!sm->r_pending)
            write_r(s);
    } else {
        /* Hibernated: a push module may wake the device (XEP-0357). */
        struct pl_event ev = {"session/held", s->host, s,   st,
                              NULL,           s->jid,  NULL};
        pl_hook_fire(&ev);
    }
    if ((long)sm->qlen > sm->max_queue)
        sm->io->overflow(s);
}

int pl_sm_ack(struct pl_session *s, uint32_t h, uint32_t *sent)
{
    struct pl_sm *sm = s->sm;
    uint32_t n = h - sm->out_acked; /* modulo 2^32 (XEP-0198 §4) */
    if (n > (uint32_t)sm->qlen) {
        *sent = sm->out_sent;
        return PL_EINVAL;
    }
    struct del_job *dj = NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct item *it = &sm->q[sm->qhead];
        if (it->persisted) {
            char key[48];
            item_key(sm, it->seq, key, sizeof(key));
            if (!dj)
                dj = del_new(s->jid->domain);
            del_add(dj, s->jid->local, key);
        }
        pl_stanza_unref(it->st);
        sm->qhead = (sm->qhead + 1) % sm->qcap;
        sm->qlen--;
    }
    sm->out_acked = h;
    if (dj) {
        /* Not part of any client stanza's durability. */
        struct pl_barrier *prev = pl_barrier_enter(NULL);
        del_submit(dj);
        pl_barrier_enter(prev);
    }
    sm->r_pending = 0;
    if (sm->qlen)
        write_r(s);
    return PL_OK;
}

void pl_sm_resend(struct pl_session *s)
{
    struct pl_sm *sm = s->sm;
    sm->r_pending = 0;
    for (size_t i = 0; i < sm->qlen; i++) {
        struct item *it = &sm->q[(sm->qhead + i) % sm->qcap];
        struct pl_str x = pl_stanza_serialize(it->st, PL_NS_CLIENT);
        sm->io->write(s, x.p, x.len);
    }
    if (sm->qlen)
        write_r(s);
}

/* ---- the end ---- */

/*
 * Routes an unacknowledged stanza again: messages to the bare JID, IQ
 * requests answered with an error, the rest dropped (XEP-0198 §5 leaves
 * the choice; RFC 6121 §8.5.3.2.1 treats chat and normal to a gone
 * resource like the bare JID).
 */
static void reroute(struct pl_stanza *st, const char *bare)
{
    if (reroutable(st)) {
        const char *from = pl_stanza_attr(st, "from");
        struct pl_stanza *c = pl_stanza_copy(st);
        pl_stanza_mark(c, PL_STANZA_ACCEPTED);
        if (!from || pl_route_as(c, from, bare) != PL_OK)
            pl_log_warn("sm",
                        "dropped an unacknowledged message to %s "
                        "with an unusable 'from'",
                        bare);
        pl_stanza_unref(c);
        return;
    }
    const char *type = pl_stanza_attr(st, "type");
    if (strcmp(pl_stanza_name(st), "iq") == 0 && type &&
        (strcmp(type, "get") == 0 || strcmp(type, "set") == 0))
        pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
}

void pl_sm_end(struct pl_session *s)
{
    struct pl_sm *sm = s->sm;
    if (!sm)
        return;
    struct del_job *dj = s->jid ? del_new(s->jid->domain) : NULL;
    struct pl_barrier *b = dj ? pl_barrier_new(del_submit, dj) : NULL;
    struct pl_barrier *prev = pl_barrier_enter(b);
    unsigned long n = 0;
    for (size_t i = 0; i < sm->qlen; i++) {
        struct item *it = &sm->q[(sm->qhead + i) % sm->qcap];
        if (s->jid) {
            reroute(it->st, s->jid->bare);
            if (reroutable(it->st))
                n++;
            if (it->persisted) {
                char key[48];
                item_key(sm, it->seq, key, sizeof(key));
                del_add(dj, s->jid->local, key);
            }
        }
        pl_stanza_unref(it->st);
    }
    pl_barrier_enter(prev);
    /* The copies are deleted only after whatever took the messages over
     * (another resource's store, offline storage) has committed. */
    if (b)
        pl_barrier_release(b);
    if (n)
        pl_log_info("sm", "%s: %lu unacknowledged messages routed again",
                    s->jid->full, n);
    pl_free(sm->q);
    pl_free(sm->p);
    pl_session_filter_remove(s, &sm->f);
    pl_free(sm);
    s->sm = NULL;
}

/* ---- crash recovery ---- */

struct recover_job {
    struct pl_host *host; /* host scanned */
    struct pl_buf rows;   /* user\0key\0len(4 bytes)xml ... */
    unsigned long n;      /* rows */
};

static int collect(const char *user, const char *key, const void *data,
                   size_t len, void *ud)
{
    struct recover_job *j = ud;
    uint32_t l = (uint32_t)len;
    pl_buf_append(&j->rows, user, strlen(user) + 1);
    pl_buf_append(&j->rows, key, strlen(key) + 1);
    pl_buf_append(&j->rows, &l, sizeof(l));
    pl_buf_append(&j->rows, data, len);
    j->n++;
    return 0;
}

static int recover_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct recover_job *j = arg;
    return d->kv_scan_store(db, j->host->domain, STORE, collect, j);
}

static void recover_done(int rc, void *arg)
{
    struct recover_job *j = arg;
    if (rc != PL_OK) {
        pl_log_error("sm",
                     "while recovering unacknowledged messages of "
                     "%s: storage error %d",
                     j->host->domain, rc);
    } else if (j->n) {
        struct del_job *dj = del_new(j->host->domain);
        struct pl_barrier *b = pl_barrier_new(del_submit, dj);
        struct pl_barrier *prev = pl_barrier_enter(b);
        const char *p = j->rows.data, *end = p + j->rows.len;
        while (p < end) {
            const char *user = p;
            const char *key = user + strlen(user) + 1;
            p = key + strlen(key) + 1;
            uint32_t l;
            memcpy(&l, p, sizeof(l));
            p += sizeof(l);
            struct pl_stanza *st = NULL;
            if (pl_xml_parse_fragment(p, l, &st) == PL_OK) {
                char bare[3072];
                snprintf(bare, sizeof(bare), "%s@%s", user, j->host->domain);
                reroute(st, bare);
                pl_stanza_unref(st);
            } else {
                pl_log_warn("sm", "unparsable stored message %s for %s", key,
                            user);
            }
            del_add(dj, user, key);
            p += l;
        }
        pl_barrier_enter(prev);
        pl_barrier_release(b);
        pl_log_info("sm",
                    "%s: %lu messages unacknowledged at the last stop "
                    "routed again",
                    j->host->domain, j->n);
    }
    pl_buf_reset(&j->rows);
    pl_free(j);
}

void pl_sm_recover(void)
{
    struct pl_host *h;
    for (int i = 0; (h = pl_host_at(i)); i++) {
        struct recover_job *j = pl_calloc(1, sizeof(*j));
        j->host = h;
        pl_storage_submit(pl_server_loop(), recover_run, recover_done, j);
    }
}
