/*
 * mod_mam.c - the message archive (XEP-0313 urn:xmpp:mam:2 with
 * #extended, XEP-0059 paging, XEP-0359 stanza ids, XEP-0334 hints).
 *
 * Archiving.  Chat and normal messages with a <body/> (or an encrypted
 * payload, or a <store/> hint; never with <no-store/> or
 * <no-permanent-store/>) are archived in the account's archive when it
 * receives them (events message/bare and message/full, priority 100, so
 * before delivery, offline storage and carbons) and when it sends them
 * (message/outgoing).  A received message that is archived gets
 * <stanza-id by='user@host' id='...'/> before it is delivered or stored
 * offline (XEP-0313 §3.5); a stanza-id by that JID that came with the
 * message is removed first (XEP-0359 §5: it would be forged).  Sent
 * messages get none (XEP-0313 §3.5: the contact may not read the
 * archive).  Writes are storage jobs that run after the delivery; like
 * any server, a crash in that instant loses the archive copy, never the
 * message.
 *
 * Preferences (<prefs/>, default always|never|roster with always/never
 * lists) decide on the loop, before delivery, so they are cached per
 * account: loaded at login, and for an account without a session loaded
 * on demand while its messages wait (PL_PENDING, then routed again in
 * order).  'roster' needs the roster's contacts, loaded with them; roster
 * sets and subscription presence mark them stale, reloaded before the
 * next decision.  Sent messages never wait: without cached preferences
 * the storage job decides.
 *
 * Queries run on the storage thread: the page is read through one index
 * range (see mod_storage_sqlite.c), each row becomes its complete result
 * <message/> there (XML built around the archived bytes and parsed once,
 * off the loop), and the completion only sends them and the <fin/>.  The
 * archived stanza is forwarded exactly as stored.
 *
 * Expiry: every expire_interval seconds a job removes items older than
 * expire_after seconds, in batches.  The per-user limit removes the oldest
 * items on append.  Account removal drops the archive with the account
 * (storage driver).
 */
#include <stdlib.h>
#include <sys/time.h>

#include "mam/mam.h"
#include "roster/roster.h"

#define NS_SID "urn:xmpp:sid:0"
#define NS_HINTS "urn:xmpp:hints"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define STORE "mam"

struct state {
    int archive;           /* archive messages at all */
    int default_prefs;     /* enum pl_mam_default for new accounts */
    long max_page;         /* results per page at most */
    long limit;            /* items per account, 0 = no limit */
    long expire_after;     /* seconds, 0 = keep forever */
    long expire_interval;  /* seconds between expiry runs */
    long count_cap;        /* filtered RSM counts up to this */
    long max_prefs_jids;   /* entries per always/never list */
    struct pl_host *host;  /* ours */
    struct pl_map users;   /* localpart -> struct entry */
    struct pl_timer timer; /* expiry */
    int expiring;          /* an expiry job is queued */
};

/* A message waiting for its recipient's preferences. */
struct pend {
    struct pl_stanza *st; /* held */
    struct pl_jid *from;  /* copies */
    struct pl_jid *to;
    struct pl_barrier *barrier; /* the sender's durability (storage.h) */
    struct pend *next;
};

/* Cached preferences of one account. */
struct entry {
    struct state *s;
    char *user;                /* localpart (also the map key) */
    struct pl_mam_prefs prefs; /* current */
    struct pl_map roster;      /* contacts' bare JIDs when default=roster */
    unsigned loaded : 1;       /* prefs (and roster) are valid */
    unsigned loading : 1;      /* a load job is queued */
    unsigned stale : 1;        /* the roster changed: reload first */
    unsigned exists : 1;       /* the account exists (per the last load) */
    unsigned changed : 1;      /* changed on another node while loading */
    struct pend *head, *tail;  /* waiting messages, in arrival order */
};

/* ---- identifiers and time ---- */

/* XEP-0359 ids: 128 random bits, base64url (22 characters). */
static void new_sid(char out[24])
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[16];
    pl_random(r, sizeof(r));
    int bit = 0;
    for (int i = 0; i < 22; i++) {
        int v = 0;
        for (int k = 0; k < 6; k++, bit++) {
            int b = bit < 128 ? (r[bit / 8] >> (7 - bit % 8)) & 1 : 0;
            v = v << 1 | b;
        }
        out[i] = b64[v];
    }
    out[22] = '\0';
}

/* Archive time in µs, strictly increasing in this process, so that time
 * ranges map to key ranges (mod_storage_sqlite.c). */
static long long archive_now(void)
{
    static long long last;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long t = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
    last = t > last ? t : last + 1;
    return last;
}

/* ---- what is archived ---- */

/* XEP-0313 §5.1.1 and XEP-0334: whether a message belongs in a user
 * archive at all (preferences aside). */
static int archivable(struct pl_stanza *st)
{
    const char *type = pl_stanza_attr(st, "type");
    if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
        return 0;
    struct pl_node *root = pl_stanza_root(st);
    if (pl_node_child(root, "no-store", NS_HINTS) ||
        pl_node_child(root, "no-permanent-store", NS_HINTS))
        return 0;
    /* Archive results and carbon copies are copies of archived ones. */
    if (pl_node_child(root, "result", PL_NS_MAM) ||
        pl_node_child(root, "sent", NS_CARBONS) ||
        pl_node_child(root, "received", NS_CARBONS))
        return 0;
    if (pl_node_child(root, "body", NULL) ||
        pl_node_child(root, "store", NS_HINTS) ||
        pl_node_child(root, "encrypted", "eu.siacs.conversations.axolotl") ||
        pl_node_child(root, "encrypted", "urn:xmpp:omemo:2") ||
        pl_node_child(root, "openpgp", "urn:xmpp:openpgp:0"))
        return 1;
    return 0;
}

/* Removes every <stanza-id/> claiming to be by `by` (XEP-0359 §5). */
static void strip_sid(struct pl_stanza *st, const char *by)
{
    struct pl_node *root = pl_stanza_root(st);
    struct pl_node *c = pl_node_first_elem(root);
    while (c) {
        struct pl_node *next = pl_node_next_elem(c);
        if (strcmp(c->name, "stanza-id") == 0 && strcmp(c->ns, NS_SID) == 0) {
            const char *b = pl_node_attr(c, "by");
            if (b && strcmp(b, by) == 0)
                pl_node_remove(st, c);
        }
        c = next;
    }
}

/* ---- preferences cache ---- */

/* Releases p's barrier reference and frees it. */
static void pend_free(struct pend *p)
{
    if (p->barrier)
        pl_barrier_release(p->barrier);
    pl_stanza_unref(p->st);
    pl_jid_free(p->from);
    pl_jid_free(p->to);
    pl_free(p);
}

static void entry_free(struct entry *e)
{
    pl_mam_prefs_free(&e->prefs);
    pl_map_clear(&e->roster);
    while (e->head) {
        struct pend *p = e->head;
        e->head = p->next;
        pend_free(p);
    }
    pl_free(e->user);
    pl_free(e);
}

/* Drops the entry of an account without sessions once nothing waits. */
static void entry_maybe_drop(struct entry *e)
{
    char bare[2048];
    snprintf(bare, sizeof(bare), "%s@%s", e->user, e->s->host->domain);
    if (e->loading || e->head || pl_session_first(bare))
        return;
    pl_map_del(&e->s->users, e->user);
    entry_free(e);
}

struct load_job {
    struct pl_job base;   /* the account */
    struct entry *e;      /* lives while loading is set */
    struct pl_buf prefs;  /* stored <prefs/>, empty if none */
    struct pl_buf roster; /* contacts, NUL-separated */
    int def;              /* default for accounts without prefs */
    int exists;
};

static int collect_contact(const char *key, const void *data, size_t len,
                           void *ud)
{
    struct load_job *j = ud;
    struct pl_roster_item it;
    if (pl_roster_item_decode(key, data, len, &it) == PL_OK) {
        if (!it.hidden) {
            pl_buf_append(&j->roster, key, strlen(key));
            pl_buf_append(&j->roster, "", 1);
        }
        pl_roster_item_free(&it);
    }
    return 0;
}

/* Parses stored prefs (XML) into out; the default when absent or bad. */
static void prefs_decode(const struct pl_buf *b, int def,
                         struct pl_mam_prefs *out)
{
    memset(out, 0, sizeof(*out));
    out->def = def;
    struct pl_stanza *st = NULL;
    if (!b->len ||
        pl_xml_parse_fragment(b->data + b->off, b->len, &st) != PL_OK)
        return;
    struct pl_mam_prefs p;
    if (pl_mam_prefs_parse(st, pl_stanza_root(st), 100000, &p) == PL_OK)
        *out = p;
    pl_stanza_unref(st);
}

static int load_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct load_job *j = arg;
    struct pl_account a;
    int rc = d->account_get(db, j->base.host, j->base.user, &a);
    if (rc == PL_ENOT_FOUND)
        return PL_OK;
    if (rc != PL_OK)
        return rc;
    j->exists = 1;
    rc = d->kv_get(db, j->base.host, j->base.user, STORE, "prefs", &j->prefs);
    if (rc != PL_OK && rc != PL_ENOT_FOUND)
        return rc;
    /* The roster only matters for default='roster'. */
    struct pl_mam_prefs p;
    prefs_decode(&j->prefs, j->def, &p);
    int def = p.def;
    pl_mam_prefs_free(&p);
    if (def == PL_MAM_ROSTER)
        return d->kv_list(db, j->base.host, j->base.user, "roster",
                          collect_contact, j);
    return PL_OK;
}

static void load_done(int rc, void *arg)
{
    struct load_job *j = arg;
    struct entry *e = j->e;
    /* e->loading stays set until the waiting messages are routed: the
     * hooks they run through must not drop the entry under us. */
    if (rc == PL_OK) {
        pl_mam_prefs_free(&e->prefs);
        prefs_decode(&j->prefs, j->def, &e->prefs);
        pl_map_clear(&e->roster);
        const char *p = j->roster.data ? j->roster.data + j->roster.off : "";
        const char *end = p + j->roster.len;
        for (; p < end; p += strlen(p) + 1)
            pl_map_put(&e->roster, p, (void *)1);
        e->exists = (unsigned)j->exists;
        e->loaded = 1;
        e->stale = 0;
    } else {
        /* Without preferences, nothing is archived for now; the waiting
         * messages are delivered all the same. */
        pl_log_error("mod_mam",
                     "reading the archive preferences of "
                     "%s@%s failed",
                     j->base.user, j->base.host);
        e->loaded = 1;
        e->stale = 1;
        e->exists = 0;
    }
    /* Route the waiting messages again, in order: the hooks now find the
     * preferences.  They are taken off first, as routing may queue. */
    struct pend *p = e->head;
    e->head = e->tail = NULL;
    while (p) {
        struct pend *next = p->next;
        if (rc != PL_OK)
            e->stale = 0; /* decide with defaults once, not loop */
        struct pl_barrier *prev = pl_barrier_enter(p->barrier);
        pl_route(p->st, p->from, p->to, NULL);
        pl_barrier_enter(prev);
        pend_free(p);
        if (rc != PL_OK)
            e->stale = 1;
        p = next;
    }
    e->loading = 0;
    if (e->changed) { /* the read may have come before that change */
        e->changed = 0;
        e->stale = 1;
    }
    pl_buf_reset(&j->prefs);
    pl_buf_reset(&j->roster);
    pl_job_free(j);
    entry_maybe_drop(e);
}

static struct entry *entry_get(struct state *s, const char *user)
{
    struct entry *e = pl_map_get(&s->users, user);
    if (!e) {
        e = pl_calloc(1, sizeof(*e));
        e->s = s;
        e->user = pl_strdup(user);
        pl_map_put(&s->users, user, e);
    }
    return e;
}

static void entry_load(struct entry *e)
{
    if (e->loading)
        return;
    e->loading = 1;
    struct load_job *j = pl_job_new(sizeof(*j), NULL, 0, e->s->host->domain,
                                    e->user);
    j->e = e;
    j->def = e->s->default_prefs;
    pl_storage_submit(pl_server_loop(), load_run, load_done, j);
}

/* 1 archive, 0 not, for a message with peer. */
static int entry_decide(struct entry *e, const struct pl_jid *peer)
{
    if (!e->exists)
        return 0;
    int r = pl_mam_prefs_decide(&e->prefs, peer->full);
    if (r < 0)
        r = pl_map_get(&e->roster, peer->bare) != NULL;
    return r;
}

/* ---- appending ---- */

struct append_job {
    struct pl_job base; /* the account */
    char sid[24];       /* XEP-0359 stanza-id */
    long long ts;
    char *with, *with_res;
    int dir;
    struct pl_buf xml;
    long limit;
    int decided;     /* 0: read the preferences here (sent messages) */
    char *peer_full; /* for that decision */
    int def;         /* default preferences */
};

static int append_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct append_job *j = arg;
    if (!j->decided) {
        struct pl_buf b = {0};
        int rc = d->kv_get(db, j->base.host, j->base.user, STORE, "prefs", &b);
        if (rc != PL_OK && rc != PL_ENOT_FOUND) {
            pl_buf_reset(&b);
            return rc;
        }
        struct pl_mam_prefs p;
        prefs_decode(&b, j->def, &p);
        pl_buf_reset(&b);
        int r = pl_mam_prefs_decide(&p, j->peer_full);
        pl_mam_prefs_free(&p);
        if (r < 0) {
            struct pl_roster_item it;
            r = 0;
            if (d->kv_get(db, j->base.host, j->base.user, "roster", j->with,
                          &b) == PL_OK &&
                pl_roster_item_decode(j->with, b.data + b.off, b.len, &it) ==
                    PL_OK) {
                r = !it.hidden;
                pl_roster_item_free(&it);
            }
            pl_buf_reset(&b);
        }
        if (!r)
            return PL_OK;
    }
    struct pl_archive_item it = {
        .sid = j->sid,
        .ts = j->ts,
        .with = j->with,
        .with_res = j->with_res,
        .dir = j->dir,
        .xml = j->xml.data + j->xml.off,
        .xml_len = j->xml.len,
    };
    long long key;
    return d->archive_append(db, j->base.host, j->base.user, PL_ARCHIVE_USER,
                             &it, j->limit, &key);
}

static void append_done(int rc, void *arg)
{
    struct append_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("mod_mam", "archiving a message for %s@%s failed",
                     j->base.user, j->base.host);
    pl_free(j->with);
    pl_free(j->with_res);
    pl_free(j->peer_full);
    pl_buf_reset(&j->xml);
    pl_job_free(j);
}

/* Queues st (serialized now, as it is) for user's archive; sid receives
 * its id.  decided 0 lets the job apply the stored preferences. */
static void archive(struct state *s, const char *user,
                    const struct pl_jid *peer, int dir, struct pl_stanza *st,
                    int decided, char sid[24])
{
    struct append_job *j = pl_job_new(sizeof(*j), NULL, 0, s->host->domain,
                                      user);
    new_sid(j->sid);
    memcpy(sid, j->sid, 24);
    j->ts = archive_now();
    j->with = pl_strdup(peer->bare);
    j->with_res = peer->resource ? pl_strdup(peer->resource) : NULL;
    j->dir = dir;
    j->limit = s->limit;
    j->decided = decided;
    j->peer_full = pl_strdup(peer->full);
    j->def = s->default_prefs;
    /* Standalone XML (with its xmlns), forwarded later exactly as is. */
    pl_node_serialize(pl_stanza_root(st), "", PL_NS_CLIENT, &j->xml);
    pl_storage_submit(pl_server_loop(), append_run, append_done, j);
}

/* ---- message hooks ---- */

/* A message to a local account, before delivery. */
static int incoming(struct pl_event *ev, struct state *s, int full)
{
    const struct pl_jid *to = ev->to, *from = ev->from;
    if (!to || !to->local || !from)
        return PL_PASS;
    char by[2048];
    snprintf(by, sizeof(by), "%s@%s", to->local, to->domain);
    strip_sid(ev->stanza, by);
    if (!s->archive || !archivable(ev->stanza))
        return PL_PASS;
    /* To a resource that is gone: routed to the bare JID next. */
    if (full && !pl_session_by_full(to->full))
        return PL_PASS;
    struct entry *e = entry_get(s, to->local);
    if (!e->loaded || e->stale || e->head) {
        struct pend *p = pl_calloc(1, sizeof(*p));
        p->st = pl_stanza_ref(ev->stanza);
        p->from = pl_jid_dup(from);
        p->to = pl_jid_dup(to);
        p->barrier = pl_barrier_hold();
        if (e->tail)
            e->tail->next = p;
        else
            e->head = p;
        e->tail = p;
        entry_load(e);
        return PL_PENDING;
    }
    if (!entry_decide(e, from)) {
        entry_maybe_drop(e);
        return PL_PASS;
    }
    char sid[24];
    archive(s, to->local, from, PL_ARCHIVE_IN, ev->stanza, 1, sid);
    /* XEP-0313 §3.5: the recipient learns the archive id. */
    struct pl_node *n = pl_node_add_child(ev->stanza,
                                          pl_stanza_root(ev->stanza),
                                          "stanza-id", NS_SID);
    pl_node_set_attr(ev->stanza, n, "by", by);
    pl_node_set_attr(ev->stanza, n, "id", sid);
    entry_maybe_drop(e);
    return PL_PASS;
}

static int on_bare(struct pl_event *ev, void *state)
{
    return incoming(ev, state, 0);
}

static int on_full(struct pl_event *ev, void *state)
{
    return incoming(ev, state, 1);
}

/* A message a local account sends, before routing. */
static int on_outgoing(struct pl_event *ev, void *state)
{
    struct state *s = state;
    const struct pl_jid *to = ev->to, *from = ev->from;
    if (!s->archive || !to || !from || !from->local || !archivable(ev->stanza))
        return PL_PASS;
    /* To oneself: archived once, as received. */
    if (to->local && strcmp(to->bare, from->bare) == 0)
        return PL_PASS;
    struct entry *e = pl_map_get(&s->users, from->local);
    int decided = e && e->loaded && !e->stale && e->exists;
    if (decided && !entry_decide(e, to))
        return PL_PASS;
    char sid[24];
    archive(s, from->local, to, PL_ARCHIVE_OUT, ev->stanza, decided, sid);
    return PL_PASS;
}

/* Roster changes can change what default='roster' archives. */
static void mark_stale(struct state *s, const struct pl_jid *j)
{
    if (!j || !j->local || strcmp(j->domain, s->host->domain) != 0)
        return;
    struct entry *e = pl_map_get(&s->users, j->local);
    if (e && e->prefs.def == PL_MAM_ROSTER)
        e->stale = 1;
}

static int on_roster_set(struct pl_event *ev, void *state)
{
    mark_stale(state, ev->to);
    return PL_PASS;
}

static int on_subscription(struct pl_event *ev, void *state)
{
    const char *t = pl_stanza_attr(ev->stanza, "type");
    if (t &&
        (strcmp(t, "subscribe") == 0 || strcmp(t, "subscribed") == 0 ||
         strcmp(t, "unsubscribe") == 0 || strcmp(t, "unsubscribed") == 0)) {
        mark_stale(state, ev->from);
        mark_stale(state, ev->to);
    }
    return PL_PASS;
}

static int on_bound(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->from || !ev->from->local)
        return PL_PASS;
    struct entry *e = entry_get(s, ev->from->local);
    if (!e->loaded || e->stale)
        entry_load(e);
    return PL_PASS;
}

static int on_closed(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!ev->from || !ev->from->local)
        return PL_PASS;
    struct entry *e = pl_map_get(&s->users, ev->from->local);
    if (e)
        entry_maybe_drop(e);
    return PL_PASS;
}

/* Another cluster node stored new preferences for an account: the copy
 * here is read again before its next decision. */
static int on_elsewhere(struct pl_event *ev, void *state)
{
    struct state *s = state;
    const struct pl_data_change *c = ev->data;
    if (!c || strcmp(c->module, "mam") != 0)
        return PL_PASS;
    /* Fired on the account's host (link.c): only the localpart counts. */
    const char *at = strchr(c->bare, '@');
    if (!at)
        return PL_HANDLED;
    char user[1024];
    size_t n = (size_t)(at - c->bare);
    if (n >= sizeof(user))
        return PL_HANDLED;
    memcpy(user, c->bare, n);
    user[n] = 0;
    struct entry *e = pl_map_get(&s->users, user);
    if (e && e->loading)
        e->changed = 1;
    else if (e)
        e->stale = 1;
    return PL_HANDLED;
}

static int on_user_deleted(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct entry *e = pl_map_get(&s->users, (const char *)ev->data);
    if (e) {
        /* Forget the cache; a load in flight finds the account gone. */
        e->loaded = 0;
        e->exists = 0;
        if (!e->loading && !e->head) {
            pl_map_del(&s->users, e->user);
            entry_free(e);
        }
    }
    return PL_PASS;
}

/* ---- queries ---- */

/* Whether the IQ comes from the archive's owner (XEP-0313 §7.1). */
static int is_owner(struct pl_event *ev)
{
    return ev->session && ev->session->jid && ev->to &&
           strcmp(ev->session->jid->bare, ev->to->bare) == 0;
}

struct query_job {
    struct pl_job base;    /* the request (held), requesting session,
                                 * the archive's owner */
    char *to_full;         /* requester's full JID */
    char *from;            /* the request's 'to', or NULL */
    struct pl_mam_query q; /* parsed */
    long max;              /* page size */
    long count_cap;
    struct pl_mam_page page; /* built on the storage thread */
};

static int query_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct query_job *j = arg;
    return pl_mam_page_run(d, db, j->base.host, j->base.user, PL_ARCHIVE_USER,
                           &j->q, j->max, j->count_cap, j->to_full, j->from,
                           &j->page);
}

static void query_free(struct query_job *j)
{
    pl_mam_page_free(&j->page);
    pl_mam_query_free(&j->q);
    pl_free(j->to_full);
    pl_free(j->from);
    pl_job_free(j);
}

static void send_reply(struct pl_session *s, struct query_job *j,
                       struct pl_stanza *r)
{
    pl_stanza_set_attr(r, "to", j->to_full);
    if (j->from)
        pl_stanza_set_attr(r, "from", j->from);
    pl_route_to_session(s, r);
    pl_stanza_unref(r);
}

static void query_done(int rc, void *arg)
{
    struct query_job *j = arg;
    struct pl_session *s = pl_session_by_id(j->base.sid);
    if (!s)
        goto out;
    if (rc != PL_OK) {
        if (rc != PL_EITEM_NOT_FOUND)
            pl_log_error("mod_mam", "archive query of %s@%s failed",
                         j->base.user, j->base.host);
        struct pl_stanza *r = pl_stanza_error_reply(
            j->base.st,
            rc == PL_EITEM_NOT_FOUND ? rc : PL_EINTERNAL_SERVER_ERROR, NULL);
        if (r) {
            pl_stanza_set_attr(r, "from", j->from);
            pl_route_to_session(s, r);
            pl_stanza_unref(r);
        }
        goto out;
    }
    for (long i = 0; i < j->page.n; i++)
        pl_route_to_session(s, j->page.msgs[i]);
    struct pl_stanza *r = pl_mam_fin(j->base.st, &j->q, &j->page);
    send_reply(s, j, r);
out:
    query_free(j);
}

static int on_query(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!is_owner(ev))
        return PL_EFORBIDDEN;
    struct query_job *j = pl_job_new(sizeof(*j), ev->stanza, ev->session->id,
                                     ev->host->domain, ev->to->local);
    const char *text;
    int rc = pl_mam_query_parse(ev->stanza, pl_stanza_payload(ev->stanza),
                                &j->q, &text);
    if (rc == PL_OK && j->q.nids > s->max_page) {
        rc = PL_EPOLICY_VIOLATION;
        text = "too many ids";
    }
    if (rc != PL_OK) {
        query_free(j);
        pl_route_error(ev->stanza, rc, text);
        return PL_HANDLED;
    }
    j->to_full = pl_strdup(ev->session->jid->full);
    const char *to = pl_stanza_attr(ev->stanza, "to");
    j->from = to ? pl_strdup(ev->to->bare) : NULL;
    j->max = j->q.max < 0 || j->q.max > s->max_page ? s->max_page : j->q.max;
    j->count_cap = s->count_cap;
    pl_storage_submit(pl_server_loop(), query_run, query_done, j);
    return PL_HANDLED;
}

/* XEP-0313 §4.1.5: the fields this archive understands. */
static int on_query_form(struct pl_event *ev, void *state)
{
    if (!is_owner(ev))
        return PL_EFORBIDDEN;
    struct pl_stanza *r = pl_mam_form(ev->stanza);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

/* ---- metadata (XEP-0313 §6) ---- */

struct meta_job {
    struct pl_job base; /* the request (held), the archive's owner */
    char sid[2][64];    /* oldest, newest */
    long long ts[2];
    int n;
};

static int meta_item(const struct pl_archive_item *it, void *ud)
{
    struct meta_job *j = ud;
    if (j->n < 2) {
        snprintf(j->sid[j->n], sizeof(j->sid[0]), "%s", it->sid);
        j->ts[j->n] = it->ts;
        j->n++;
    }
    return 0;
}

static int meta_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct meta_job *j = arg;
    return d->archive_ends(db, j->base.host, j->base.user, PL_ARCHIVE_USER,
                           meta_item, j);
}

static void meta_done(int rc, void *arg)
{
    struct meta_job *j = arg;
    if (rc != PL_OK) {
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
    } else {
        struct pl_stanza *r = pl_iq_result(j->base.st);
        struct pl_node *m = pl_node_add_child(r, pl_stanza_root(r), "metadata",
                                              PL_NS_MAM);
        for (int i = 0; i < j->n; i++) {
            char stamp[48];
            pl_mam_time_format(j->ts[i], stamp, sizeof(stamp));
            struct pl_node *e = pl_node_add_child(r, m, i ? "end" : "start",
                                                  PL_NS_MAM);
            pl_node_set_attr(r, e, "id", j->sid[i]);
            pl_node_set_attr(r, e, "timestamp", stamp);
        }
        pl_route_reply(j->base.st, r);
        pl_stanza_unref(r);
    }
    pl_job_free(j);
}

static int on_metadata(struct pl_event *ev, void *state)
{
    if (!is_owner(ev))
        return PL_EFORBIDDEN;
    struct meta_job *j = pl_job_new(sizeof(*j), ev->stanza, 0, ev->host->domain,
                                    ev->to->local);
    pl_storage_submit(pl_server_loop(), meta_run, meta_done, j);
    return PL_HANDLED;
}

/* ---- preferences (XEP-0441, in urn:xmpp:mam:2) ---- */

struct prefs_job {
    struct pl_job base; /* the request (held), the account */
    struct state *s;
    struct pl_buf data; /* get: what is stored; set: what to store */
    int set;
    int def;
};

static int prefs_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct prefs_job *j = arg;
    if (j->set)
        return d->kv_set(db, j->base.host, j->base.user, STORE, "prefs",
                         j->data.data + j->data.off, j->data.len);
    int rc = d->kv_get(db, j->base.host, j->base.user, STORE, "prefs",
                       &j->data);
    return rc == PL_ENOT_FOUND ? PL_OK : rc;
}

static void prefs_done(int rc, void *arg)
{
    struct prefs_job *j = arg;
    if (rc != PL_OK) {
        pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
        goto out;
    }
    struct pl_mam_prefs p;
    prefs_decode(&j->data, j->def, &p);
    if (j->set) {
        /* The cache follows what is now stored, here and on the other
         * cluster nodes (on_elsewhere). */
        struct entry *e = pl_map_get(&j->s->users, j->base.user);
        if (e && e->loaded) {
            pl_mam_prefs_free(&e->prefs);
            prefs_decode(&j->data, j->def, &e->prefs);
            if (e->prefs.def == PL_MAM_ROSTER)
                e->stale = 1; /* its roster may not be loaded */
        }
        struct pl_data_change c = {"mam", j->base.bare, "prefs", 5};
        struct pl_event ev =
            {"user/data-changed", j->s->host, NULL, NULL, NULL, NULL, &c};
        pl_hook_fire(&ev);
    }
    struct pl_stanza *r = pl_iq_result(j->base.st);
    pl_mam_prefs_build(&p, r, pl_stanza_root(r));
    pl_mam_prefs_free(&p);
    pl_route_reply(j->base.st, r);
    pl_stanza_unref(r);
out:
    pl_buf_reset(&j->data);
    pl_job_free(j);
}

static int on_prefs(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!is_owner(ev))
        return PL_EFORBIDDEN;
    struct prefs_job *j = pl_job_new(sizeof(*j), ev->stanza, 0,
                                     ev->host->domain, ev->to->local);
    const char *type = pl_stanza_attr(ev->stanza, "type");
    j->set = type && strcmp(type, "set") == 0;
    if (j->set) {
        struct pl_mam_prefs p;
        int rc = pl_mam_prefs_parse(ev->stanza, pl_stanza_payload(ev->stanza),
                                    s->max_prefs_jids, &p);
        if (rc != PL_OK) {
            pl_job_free(j);
            return rc;
        }
        /* Stored as the canonical element, standalone XML. */
        struct pl_stanza *tmp = pl_stanza_new("x", "urn:x");
        pl_mam_prefs_build(&p, tmp, pl_stanza_root(tmp));
        pl_node_serialize(pl_node_first_elem(pl_stanza_root(tmp)), "",
                          PL_NS_CLIENT, &j->data);
        pl_stanza_unref(tmp);
        pl_mam_prefs_free(&p);
    }
    j->s = s;
    j->def = s->default_prefs;
    pl_storage_submit(pl_server_loop(), prefs_run, prefs_done, j);
    return PL_HANDLED;
}

/* ---- expiry ---- */

#define EXPIRE_BATCH 10000

struct expire_job {
    struct state *s;
    char *host;
    long long before;
    long removed;
};

static void expire_start(struct state *s);

static int expire_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct expire_job *j = arg;
    return d->archive_expire(db, j->host, PL_ARCHIVE_USER, j->before,
                             EXPIRE_BATCH, &j->removed);
}

static void expire_done(int rc, void *arg)
{
    struct expire_job *j = arg;
    struct state *s = j->s;
    s->expiring = 0;
    if (rc != PL_OK)
        pl_log_error("mod_mam", "archive expiry on %s failed", j->host);
    else if (j->removed)
        pl_log_info("mod_mam", "expired %ld archived messages on %s",
                    j->removed, j->host);
    /* A full batch: more may be due; the next batch goes behind the
     * other storage jobs queued meanwhile. */
    if (rc == PL_OK && j->removed >= EXPIRE_BATCH)
        expire_start(s);
    pl_free(j->host);
    pl_free(j);
}

static void expire_start(struct state *s)
{
    if (s->expiring || !s->expire_after)
        return;
    s->expiring = 1;
    struct expire_job *j = pl_calloc(1, sizeof(*j));
    j->s = s;
    j->host = pl_strdup(s->host->domain);
    j->before = archive_now() - s->expire_after * 1000000LL;
    pl_storage_submit(pl_server_loop(), expire_run, expire_done, j);
}

static void on_timer(struct pl_timer *t)
{
    struct state *s = t->data;
    expire_start(s);
    pl_timer_start(pl_server_loop(), &s->timer,
                   (uint64_t)s->expire_interval * 1000);
}

/* ---- account discovery ---- */

static int on_account_info(struct pl_event *ev, void *state)
{
    if (!is_owner(ev))
        return PL_PASS;
    struct pl_node *q = ev->data;
    static const char *const vars[] = {PL_NS_MAM, PL_NS_MAM_EXT};
    for (int i = 0; i < 2; i++) {
        struct pl_node *f = pl_node_add_child(ev->stanza, q, "feature",
                                              PL_NS_DISCO_INFO);
        pl_node_set_attr(ev->stanza, f, "var", vars[i]);
    }
    return PL_PASS;
}

/* ---- module ---- */

static int load(struct pl_host *h, void *state)
{
    struct state *s = state;
    s->host = h;
    pl_timer_init(&s->timer, on_timer, s);
    return PL_OK;
}

static int ready(struct pl_host *h, void *state)
{
    struct state *s = state;
    if (s->expire_after && pl_server_loop()) {
        /* A first run soon after start-up, then every interval. */
        pl_timer_start(pl_server_loop(), &s->timer,
                       (uint64_t)(s->expire_interval < 5 ? s->expire_interval
                                                         : 5) *
                           1000);
    }
    return PL_OK;
}

static void drop_entry(const char *key, void *value, void *ud)
{
    entry_free(value);
}

static void unload(struct pl_host *h, void *state)
{
    struct state *s = state;
    pl_timer_stop(&s->timer);
    pl_map_each(&s->users, drop_entry, NULL);
    pl_map_clear(&s->users);
}

static const char *const default_choices[] = {"always", "never", "roster",
                                              NULL};

static const struct pl_option options[] = {
    {"archive", PL_OPT_BOOL, "true", 0, 0, NULL,
     "Archive messages (false: queries still answer from what is stored).",
     offsetof(struct state, archive)},
    {"default", PL_OPT_ENUM, "\"always\"", 0, 0, default_choices,
     "Archiving default for accounts without preferences: always, never, "
     "roster.",
     offsetof(struct state, default_prefs)},
    {"max_page", PL_OPT_INT, "100", 1, 10000, NULL,
     "Results per query page at most (RSM <max/> is capped to it).",
     offsetof(struct state, max_page)},
    {"max_items", PL_OPT_INT, "0", 0, 1000000000, NULL,
     "Archived messages kept per account (0: no limit); the oldest go.",
     offsetof(struct state, limit)},
    {"expire_after", PL_OPT_INT, "0", 0, 100L * 365 * 86400, NULL,
     "Seconds an archived message is kept (0: forever).",
     offsetof(struct state, expire_after)},
    {"expire_interval", PL_OPT_INT, "3600", 1, 86400 * 7, NULL,
     "Seconds between two expiry runs.",
     offsetof(struct state, expire_interval)},
    {"count_limit", PL_OPT_INT, "1000", 0, 100000000, NULL,
     "Filtered queries count their results up to this many for RSM "
     "<count/>; beyond it <count/> is left out.",
     offsetof(struct state, count_cap)},
    {"max_prefs_jids", PL_OPT_INT, "1000", 1, 100000, NULL,
     "JIDs in each of the always and never lists at most.",
     offsetof(struct state, max_prefs_jids)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"message/bare", on_bare, 100},
    {"message/full", on_full, 100},
    {"message/outgoing", on_outgoing, 100},
    {"iq-set/bare/" PL_NS_MAM ":query", on_query, 0},
    {"iq-get/bare/" PL_NS_MAM ":query", on_query_form, 0},
    {"iq-get/bare/" PL_NS_MAM ":metadata", on_metadata, 0},
    {"iq-get/bare/" PL_NS_MAM ":prefs", on_prefs, 0},
    {"iq-set/bare/" PL_NS_MAM ":prefs", on_prefs, 0},
    {"iq-set/bare/jabber:iq:roster:query", on_roster_set, 100},
    {"presence/outgoing", on_subscription, 100},
    {"presence/bare", on_subscription, 100},
    {"session/bound", on_bound, 0},
    {"session/closed", on_closed, 0},
    {"user/deleted", on_user_deleted, 0},
    {"user/data-changed-elsewhere", on_elsewhere, 0},
    {"disco-info/account", on_account_info, 0},
    {0},
};

const struct pl_module pl_mod_mam = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "mam",
    .summary = "message archive with queries, preferences and expiry",
    .xeps = "XEP-0313, XEP-0059, XEP-0359, XEP-0334, XEP-0441",
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
    .ready = ready,
    .unload = unload,
};
