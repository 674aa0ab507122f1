/*
 * mod_offline.c - offline messages (XEP-0160): chat and normal messages to
 * an account with no available resource are stored durably, with an
 * XEP-0203 <delay/> stamped by the server, and delivered in order, once,
 * when the account next sends available presence with a non-negative
 * priority.  A per-user quota answers a full store with
 * <service-unavailable/> (RFC 6121 §8.5.2.2.1).
 *
 * Each store is a storage job; the storage queue commits every job waiting
 * at one moment in one transaction, so a burst of offline messages costs
 * one sync.  Delivery reads and deletes in one transaction, then writes
 * to the session.  "message/stored" fires once a message is committed
 * (its stanza: the stored copy, with the original's id, from and to).
 */
#include <limits.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "core/modapi.h"

#define NS_DELAY "urn:xmpp:delay"

struct state {
    long quota; /* messages kept per user */
};

/* Keys sort in arrival order across restarts: microseconds since the
 * epoch at start-up, then a counter. */
static unsigned long long next_seq;

/*
 * Per-session flags in the session's offline slot: the session got its first
 * flush (it may get more), a flush is running, and another is wanted (a
 * message was stored while the user was already available: it lost the
 * race with the flush and would otherwise wait for the next login).
 * One flush at a time per session, so nothing is read twice.
 */
enum {
    F_FLUSHED = 1,
    F_RUNNING = 2,
    F_AGAIN = 4
};

static uintptr_t flags(struct pl_session *s)
{
    return (uintptr_t)pl_session_ctx(s, offline);
}

static void set_flags(struct pl_session *s, uintptr_t f)
{
    pl_session_ctx(s, offline) = (void *)f;
}

static void start_flush(struct pl_session *s);

/* A flush of session sid ended: run the one that was asked meanwhile. */
static void flush_ended(uint64_t sid)
{
    struct pl_session *s = pl_session_by_id(sid);
    if (!s)
        return;
    uintptr_t f = flags(s) & ~(uintptr_t)F_RUNNING;
    set_flags(s, f);
    if (f & F_AGAIN)
        start_flush(s);
}

struct store_job {
    struct pl_job base; /* the account; st: a private copy with <delay/> */
    char key[24];
    long quota;
};

static int store_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct store_job *j = arg;
    long n = 0;
    int rc = d->kv_count(db, j->base.host, j->base.user, "offline", &n);
    if (rc != PL_OK)
        return rc;
    if (n >= j->quota)
        return PL_ELIMIT;
    /* Standalone XML (with its xmlns) so it parses back as is. */
    struct pl_buf x = {0};
    pl_node_serialize(pl_stanza_root(j->base.st), "", PL_NS_CLIENT, &x);
    rc = d->kv_set(db, j->base.host, j->base.user, "offline", j->key,
                   x.data + x.off, x.len);
    pl_buf_reset(&x);
    return rc;
}

static void store_done(int rc, void *arg)
{
    struct store_job *j = arg;
    if (rc == PL_ELIMIT) {
        pl_log_info("mod_offline", "offline store of %s@%s is full",
                    j->base.user, j->base.host);
        pl_route_error(j->base.st, PL_ESERVICE_UNAVAILABLE,
                       "offline storage is full");
    } else if (rc == PL_ESTORAGE) {
        /* Not stored (a full disk, a failed commit): the sender hears it
         * before its stream management ack covers the message, and may
         * send again later (RFC 6120 §8.3.3.18, type wait). */
        pl_log_error("mod_offline", "storing for %s@%s failed", j->base.user,
                     j->base.host);
        pl_route_error(j->base.st, PL_ERESOURCE_CONSTRAINT,
                       "offline storage failed; try again later");
    } else if (rc != PL_OK) {
        pl_log_error("mod_offline", "storing for %s@%s failed: %s",
                     j->base.user, j->base.host, pl_strerror(rc));
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
    } else {
        /* Committed: whoever waits to tell a sender (a SIP MESSAGE's 202
         * Accepted) learns it now. */
        struct pl_event ev = {"message/stored",
                              pl_host_find(j->base.host),
                              NULL,
                              j->base.st,
                              NULL,
                              NULL,
                              NULL};
        if (ev.host)
            pl_hook_fire(&ev);
        /* The user may have come online while this was being stored.  A
         * session of another cluster node (transport "cluster") was
         * flushed there at its presence, maybe before this commit: it is
         * flushed from here, through its node's link (doc/cluster.md). */
        for (struct pl_session *s = pl_session_first(j->base.bare); s;
             s = s->next_res)
            if (((flags(s) & F_FLUSHED) || s->elsewhere) && s->available &&
                s->priority >= 0) {
                start_flush(s);
                break;
            }
    }
    pl_job_free(j);
}

static int on_offline(struct pl_event *ev, void *state)
{
    struct state *s = state;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
        return PL_PASS;
    /* Messages without a body or other payload worth keeping (chat states
     * alone) are not stored (XEP-0160 §3, XEP-0334 no-store). */
    struct pl_node *root = pl_stanza_root(ev->stanza);
    if (pl_node_child(root, "no-store", "urn:xmpp:hints"))
        return PL_HANDLED;
    if (!pl_node_child(root, "body", NULL) &&
        !pl_node_child(root, "subject", NULL) &&
        pl_node_child(root, NULL, "http://jabber.org/protocol/chatstates"))
        return PL_HANDLED;
    struct store_job *j = pl_job_new(sizeof(*j), NULL, 0, ev->host->domain,
                                     ev->to->local);
    /* A message accepted before (routed again after its session or the
     * server ended) was counted against nothing new: it is kept even past
     * the quota, which is for admitting messages. */
    j->quota = pl_stanza_marks(ev->stanza) & PL_STANZA_ACCEPTED ? LONG_MAX
                                                                : s->quota;
    snprintf(j->key, sizeof(j->key), "%020llu", next_seq++);
    j->base.st = pl_stanza_copy(ev->stanza);
    /* XEP-0203: when the server received it. */
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char stamp[96];
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000) % 1000);
    struct pl_node *delay = pl_node_add_child(j->base.st,
                                              pl_stanza_root(j->base.st),
                                              "delay", NS_DELAY);
    pl_node_set_attr(j->base.st, delay, "from", ev->host->domain);
    pl_node_set_attr(j->base.st, delay, "stamp", stamp);
    pl_storage_submit(pl_server_loop(), store_run, store_done, j);
    return PL_HANDLED;
}

/*
 * A backlog goes out in pages: at most PAGE_MSGS messages or PAGE_BYTES
 * bytes are read and deleted at a time, and delivered one by one while
 * the session is not congested (ops->congested: its socket queue, or
 * stanzas its client has not acknowledged under XEP-0198, past half their
 * limits; looked at again every PACE_MS).  Read whole, ten thousand stored
 * messages would be megabytes queued at once, past limits.max_outbuf or
 * the stream management queue, either of which ends the session, and the
 * messages would come back to the store for the next login to fail the
 * same way.
 */
#define PAGE_MSGS 200
#define PAGE_BYTES 65536
#define PACE_MS 20

struct flush_job {
    struct pl_job base; /* the session flushed to, its account */
    struct pl_buf msgs; /* serialized stanzas, NUL-separated */
    struct pl_buf keys; /* their keys, NUL-separated */
    long n;
    int full;             /* the page is full: more may follow */
    size_t pos;           /* in msgs: where delivery goes on */
    struct pl_timer pace; /* waiting for the session to drain */
};

static int collect(const char *key, const void *data, size_t len, void *ud)
{
    struct flush_job *j = ud;
    pl_buf_append(&j->msgs, data, len);
    pl_buf_append(&j->msgs, "", 1);
    pl_buf_append(&j->keys, key, strlen(key) + 1);
    j->n++;
    if (j->n >= PAGE_MSGS || j->msgs.len >= PAGE_BYTES) {
        j->full = 1;
        return 1; /* enough for this page */
    }
    return 0;
}

static int flush_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct flush_job *j = arg;
    return d->kv_list(db, j->base.host, j->base.user, "offline", collect, j);
}

/* Deletes exactly the messages read (newer ones stay). */
static int forget_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct flush_job *j = arg;
    const char *k = j->keys.data + j->keys.off;
    const char *end = k + j->keys.len;
    for (; k < end; k += strlen(k) + 1) {
        int rc = d->kv_set(db, j->base.host, j->base.user, "offline", k, NULL,
                           0);
        if (rc != PL_OK && rc != PL_ENOT_FOUND)
            return rc;
    }
    return PL_OK;
}

static void flush_free(struct flush_job *j)
{
    pl_buf_reset(&j->msgs);
    pl_buf_reset(&j->keys);
    pl_job_free(j);
}

static void next_page(struct pl_session *s);

static void forget_done(int rc, void *arg)
{
    struct flush_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("mod_offline",
                     "while deleting delivered offline "
                     "messages of %s@%s: %s",
                     j->base.user, j->base.host, pl_strerror(rc));
    uint64_t sid = j->base.sid;
    int more = j->full && rc == PL_OK;
    flush_free(j);
    struct pl_session *s = more ? pl_session_by_id(sid) : NULL;
    if (s)
        next_page(s);
    else
        flush_ended(sid);
}

static void paced(struct pl_timer *t);

/* Delivers the page from where it stopped, until it ends or the session
 * is congested (then again in PACE_MS); then deletes what it read. */
static void deliver_page(struct flush_job *j)
{
    struct pl_session *s = pl_session_by_id(j->base.sid);
    const char *base = j->msgs.data + j->msgs.off;
    const char *p = base + j->pos, *end = base + j->msgs.len;
    while (p < end) {
        if (s && s->ops->congested && s->ops->congested(s)) {
            j->pos = (size_t)(p - base);
            pl_timer_init(&j->pace, paced, j);
            pl_timer_start(pl_server_loop(), &j->pace, PACE_MS);
            return;
        }
        size_t n = strlen(p);
        struct pl_stanza *st = NULL;
        if (pl_xml_parse_fragment(p, n, &st) == PL_OK) {
            if (s) {
                pl_route_to_session(s, st);
            } else {
                /* The session left meanwhile: send to the account again,
                 * which stores it anew. */
                struct pl_node *dl = pl_node_child(pl_stanza_root(st), "delay",
                                                   NS_DELAY);
                if (dl)
                    pl_node_remove(st, dl);
                pl_stanza_mark(st, PL_STANZA_ACCEPTED);
                const char *t = pl_stanza_attr(st, "to");
                const char *f = pl_stanza_attr(st, "from");
                if (t && f)
                    pl_route_as(st, f, t);
            }
            pl_stanza_unref(st);
        }
        p += n + 1;
    }
    pl_log_debug("mod_offline", "delivered %ld offline messages to %s@%s", j->n,
                 j->base.user, j->base.host);
    /* Deleted only now, after delivery started whatever makes it durable
     * on the other side (a stream-managed session's stored copies, a new
     * offline store): storage jobs run in order, so a crash in between
     * repeats a message, never loses one. */
    pl_storage_submit(pl_server_loop(), forget_run, forget_done, j);
}

static void paced(struct pl_timer *t)
{
    deliver_page(t->data);
}

static void flush_done(int rc, void *arg)
{
    struct flush_job *j = arg;
    if (rc == PL_OK && j->n) {
        deliver_page(j);
        return;
    }
    uint64_t sid = j->base.sid;
    flush_free(j);
    flush_ended(sid);
}

static void start_flush(struct pl_session *s)
{
    uintptr_t f = flags(s);
    if (f & F_RUNNING) {
        set_flags(s, f | F_AGAIN);
        return;
    }
    set_flags(s, (f | F_FLUSHED | F_RUNNING) & ~(uintptr_t)F_AGAIN);
    next_page(s);
}

/* Reads the next page of the backlog (flush_done delivers it). */
static void next_page(struct pl_session *s)
{
    struct flush_job *j = pl_job_new(sizeof(*j), NULL, s->id, s->jid->domain,
                                     s->jid->local);
    pl_storage_submit(pl_server_loop(), flush_run, flush_done, j);
}

/*
 * XEP-0160 §2: delivery when the session first sends available presence
 * with a non-negative priority; that may be a later presence than the
 * first.  Runs before mod_presence, which ends the event.
 */
static int on_presence(struct pl_event *ev, void *state)
{
    struct pl_session *s = ev->session;
    if (!s || !s->jid || pl_stanza_attr(ev->stanza, "type") ||
        s->priority < 0 || flags(s))
        return PL_PASS;
    start_flush(s);
    return PL_PASS;
}

static int load(struct pl_host *h, void *state)
{
    if (!next_seq) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        next_seq = (unsigned long long)tv.tv_sec * 1000000ULL +
                   (unsigned long long)tv.tv_usec;
    }
    return PL_OK;
}

static const struct pl_option options[] = {
    {"quota", PL_OPT_INT, "1000", 1, 10000000, NULL,
     "Offline messages kept per user; more get <service-unavailable/>.",
     offsetof(struct state, quota)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"message/offline", on_offline, 0},
    {"presence/broadcast", on_presence, 10},
    {0},
};

static const char *const features[] = {"msgoffline", NULL};
static const char *const deps[] = {"presence", NULL};

const struct pl_module pl_mod_offline = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "offline",
    .summary = "stores messages for offline users and delivers them later",
    .xeps = "XEP-0160, XEP-0203",
    .deps = deps,
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
};
