/*
 * mod_blocking.c - XEP-0191 Blocking Command (urn:xmpp:blocking).
 *
 * Protocol (§3): <blocklist/> get, <block/> and <unblock/> sets (an empty
 * <unblock/> clears the list); after each change every session of the
 * user that asked for the blocklist gets a push.  A change is written to
 * the user's "blocking" document (one JID per line) and committed before
 * the result goes out.
 *
 * Enforcement (§3.3), with XEP-0016 JID matching (an item user@domain/res
 * matches only that JID, user@domain any of its resources, domain/res
 * only that JID, domain the domain and every JID at it):
 *  - stanzas from a blocked JID to the user ("message/bare|full",
 *    "presence/bare|full", "iq/bare|full", first of all handlers, so also
 *    before offline storage): presence dropped, messages and IQ get/set
 *    answered <service-unavailable/>, other IQs and errors dropped;
 *  - a client's stanza to a blocked JID ("*\/outgoing"): not routed, the
 *    client gets <not-acceptable/> with <blocked xmlns='urn:xmpp:blocking:
 *    errors'/>;
 *  - what the server sends on the user's behalf (presence broadcasts,
 *    probe answers) to a blocked JID is dropped, locally and before
 *    "route/remote": the user's presence is hidden.  Blocking sends the
 *    contacts with a subscription 'from' unavailable presence from each
 *    available resource first; unblocking sends them the current presence
 *    (and probes contacts the user is subscribed to).
 * The server's own domains are never filtered (a user who blocks their
 * server's domain still talks to the server).
 *
 * Memory: a hash set per account, loaded when a session binds and kept
 * while one is bound; accounts checked while offline stay in an LRU of
 * `cache_size` entries.  A stanza that needs a list not read yet waits
 * (PL_PENDING) for the read, then is routed again with this module's
 * check done.  In a cluster each node keeps its own sets: a change is
 * told to the others ("user/data-changed", tell_others), whose sets
 * follow and whose sessions of the account get the push (on_elsewhere).
 */
#include "roster/roster.h"

#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"
#define STORE "blocking"
#define KEY "list"

struct deferred {
    struct pl_stanza *st; /* held */
    struct pl_jid *from, *to;
    uint64_t origin;            /* outgoing: the sending session's id */
    int outgoing;               /* checked against the sender's list */
    struct pl_barrier *barrier; /* the sender's durability (storage.h) */
    struct deferred *next;
};

struct entry {
    char *bare;           /* the account */
    struct pl_map set;    /* blocked JIDs -> (void *)1 */
    unsigned loaded : 1;  /* read from storage */
    int online;           /* bound sessions */
    uint64_t *interested; /* sessions that asked for the list */
    int ninterested;
    struct deferred *waiting, *waiting_tail; /* until loaded */
    /* The list another node wrote while this node's read was in flight
     * (that read may have come before it): it replaces what is read. */
    char *newer; /* NULL: none */
    size_t newer_len;
    struct entry *prev, *next; /* LRU while offline and loaded */
};

struct state {
    long max_items;         /* items per list */
    long cache_size;        /* lists of offline accounts kept */
    struct pl_map entries;  /* bare -> struct entry */
    struct entry *lru_head; /* most recent */
    struct entry *lru_tail; /* evicted first */
    long lru_n;
    struct pl_host *host;
};

/* A stanza whose check against `bare`'s list is done: routed again
 * without checking that list once more.  Set only around pl_route(). */
static struct {
    const struct pl_stanza *st;
    const char *bare;
} bypass;

static unsigned long push_seq;

/* ---- the cache ---- */

static void lru_unlink(struct state *S, struct entry *e)
{
    if (!e->prev && S->lru_head != e)
        return; /* not in the list */
    if (e->prev)
        e->prev->next = e->next;
    else
        S->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        S->lru_tail = e->prev;
    e->prev = e->next = NULL;
    S->lru_n--;
}

static void entry_free(struct entry *e)
{
    pl_map_clear(&e->set);
    pl_free(e->newer);
    pl_free(e->interested);
    pl_free(e->bare);
    pl_free(e);
}

static void lru_push(struct state *S, struct entry *e)
{
    e->prev = NULL;
    e->next = S->lru_head;
    if (S->lru_head)
        S->lru_head->prev = e;
    S->lru_head = e;
    if (!S->lru_tail)
        S->lru_tail = e;
    S->lru_n++;
    while (S->lru_n > S->cache_size && S->lru_tail) {
        struct entry *old = S->lru_tail;
        lru_unlink(S, old);
        pl_map_del(&S->entries, old->bare);
        entry_free(old);
    }
}

/* Fills the set from a document (one JID per line). */
static void set_fill(struct pl_map *set, const char *doc, size_t len)
{
    const char *p = doc, *end = doc + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n) {
            char *k = pl_malloc(n + 1);
            memcpy(k, p, n);
            k[n] = 0;
            pl_map_put(set, k, (void *)1);
            pl_free(k);
        }
        p += n + 1;
    }
}

/* ---- storage ---- */

enum kind {
    J_LOAD,
    J_GET,
    J_BLOCK,
    J_UNBLOCK,
    J_UNBLOCK_ALL
};

struct job {
    struct pl_job base; /* the request (held), the account */
    enum kind kind;
    struct state *S;
    char **jids; /* the request's items (normalized) */
    int njids;
    struct pl_buf doc; /* the list after the job */
    char **changed;    /* items actually added or removed */
    int nchanged;
    struct pl_roster roster; /* block/unblock: for presence */
    long max_items;
};

static void job_free(struct job *j)
{
    for (int i = 0; i < j->njids; i++)
        pl_free(j->jids[i]);
    pl_free(j->jids);
    for (int i = 0; i < j->nchanged; i++)
        pl_free(j->changed[i]);
    pl_free(j->changed);
    pl_buf_reset(&j->doc);
    pl_roster_free(&j->roster);
    pl_job_free(j);
}

static void add_changed(struct job *j, const char *jid)
{
    j->changed = pl_realloc(j->changed,
                            (size_t)(j->nchanged + 1) * sizeof(char *));
    j->changed[j->nchanged++] = pl_strdup(jid);
}

static void collect_key(const char *key, void *value, void *ud)
{
    struct pl_buf *b = ud;
    pl_buf_append_str(b, key);
    pl_buf_append(b, "\n", 1);
}

static void collect_changed(const char *key, void *value, void *ud)
{
    add_changed(ud, key);
}

static int run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    struct pl_buf cur = {0};
    int rc = d->kv_get(db, j->base.host, j->base.user, STORE, KEY, &cur);
    if (rc == PL_ENOT_FOUND)
        rc = PL_OK;
    if (rc != PL_OK)
        goto out;
    if (j->kind == J_LOAD || j->kind == J_GET) {
        struct pl_str s = pl_buf_str(&cur);
        if (s.len)
            pl_buf_append(&j->doc, s.p, s.len);
        goto out;
    }
    struct pl_map set = {0};
    struct pl_str s = pl_buf_str(&cur);
    set_fill(&set, s.p ? s.p : "", s.len);
    if (j->kind == J_UNBLOCK_ALL) {
        pl_map_each(&set, collect_changed, j);
        pl_map_clear(&set);
    }
    for (int i = 0; i < j->njids; i++) {
        if (j->kind == J_BLOCK && !pl_map_get(&set, j->jids[i])) {
            pl_map_put(&set, j->jids[i], (void *)1);
            add_changed(j, j->jids[i]);
        } else if (j->kind == J_UNBLOCK && pl_map_del(&set, j->jids[i])) {
            add_changed(j, j->jids[i]);
        }
    }
    if (j->kind == J_BLOCK && (long)set.count > j->max_items) {
        pl_map_clear(&set);
        rc = PL_ELIMIT;
        goto out;
    }
    pl_map_each(&set, collect_key, &j->doc);
    pl_map_clear(&set);
    if (j->nchanged) {
        struct pl_str doc = pl_buf_str(&j->doc);
        rc = d->kv_set(db, j->base.host, j->base.user, STORE, KEY,
                       doc.len ? doc.p : NULL, doc.len);
        if (rc == PL_OK)
            rc = pl_roster_load(d, db, j->base.host, j->base.user, &j->roster);
    }
out:
    pl_buf_reset(&cur);
    return rc;
}

static void done(int rc, void *arg);

static struct job *job_new(struct state *S, enum kind kind, const char *bare)
{
    const char *at = strchr(bare, '@');
    char *user = pl_strndup(bare, (size_t)(at - bare));
    struct job *j = pl_job_new(sizeof(*j), NULL, 0, at + 1, user);
    pl_free(user);
    j->kind = kind;
    j->S = S;
    j->max_items = S->max_items;
    return j;
}

/* The account's entry; created (and its read queued) if absent. */
static struct entry *entry_get(struct state *S, const char *bare)
{
    struct entry *e = pl_map_get(&S->entries, bare);
    if (e)
        return e;
    e = pl_calloc(1, sizeof(*e));
    e->bare = pl_strdup(bare);
    pl_map_put(&S->entries, bare, e);
    pl_storage_submit(pl_server_loop(), run, done, job_new(S, J_LOAD, bare));
    return e;
}

/* ---- matching ---- */

static int has(const struct pl_map *set, const char *a, const char *b)
{
    char buf[3200];
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 2 > sizeof(buf))
        return 0; /* longer than any JID */
    memcpy(buf, a, la);
    buf[la] = '/';
    memcpy(buf + la + 1, b, lb + 1);
    return pl_map_get(set, buf) != NULL;
}

/* XEP-0016 §2.1 matching of j against the list. */
static int blocks(const struct pl_map *set, const struct pl_jid *j)
{
    if (!set->count)
        return 0;
    if (pl_map_get(set, j->full))
        return 1;
    if (j->resource && pl_map_get(set, j->bare))
        return 1;
    if (j->local && j->resource && has(set, j->domain, j->resource))
        return 1;
    return (j->local || j->resource) && pl_map_get(set, j->domain);
}

/* The server itself (any local domain) is never filtered. */
static int is_server(const struct pl_jid *j)
{
    return !j->local && !j->resource && pl_host_find(j->domain);
}

/* The loaded list of a local account (any host), or NULL. */
static struct entry *loaded_entry(const struct pl_jid *j)
{
    if (!j->local)
        return NULL;
    struct pl_host *h = pl_host_find(j->domain);
    struct state *S = h ? pl_host_module_state(h, "blocking") : NULL;
    struct entry *e = S ? pl_map_get(&S->entries, j->bare) : NULL;
    return e && e->loaded ? e : NULL;
}

static int bypassed(const struct pl_stanza *st, const char *bare)
{
    return bypass.st == st && bypass.bare && strcmp(bypass.bare, bare) == 0;
}

/* What happens to a stanza from a blocked JID (§3.3). */
static int refuse_incoming(struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    const char *type = pl_stanza_attr(st, "type");
    if (name[0] == 'p')
        return PL_HANDLED; /* no answer, no error */
    if (name[0] == 'i')
        return type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)
                   ? PL_ESERVICE_UNAVAILABLE
                   : PL_HANDLED;
    if (type && strcmp(type, "error") == 0)
        return PL_HANDLED;
    return PL_ESERVICE_UNAVAILABLE;
}

/* A client's stanza to a blocked JID: <not-acceptable/> + <blocked/>,
 * straight to the session (the contact's address is blocked for it). */
static void refuse_outgoing(struct pl_session *s, struct pl_stanza *st)
{
    struct pl_stanza *r = pl_stanza_error_reply(st, PL_ENOT_ACCEPTABLE, NULL);
    if (!r)
        return;
    struct pl_node *e = pl_node_child(pl_stanza_root(r), "error", NULL);
    if (e)
        pl_node_add_child(r, e, "blocked", NS_BLOCKING_ERRORS);
    if (s)
        pl_route_to_session(s, r);
    pl_stanza_unref(r);
}

/* Releases d's barrier reference and frees it. */
static void deferred_free(struct deferred *d)
{
    if (d->barrier)
        pl_barrier_release(d->barrier);
    pl_stanza_unref(d->st);
    pl_jid_free(d->from);
    pl_jid_free(d->to);
    pl_free(d);
}

static void defer(struct entry *e, struct pl_event *ev, int outgoing)
{
    struct deferred *d = pl_calloc(1, sizeof(*d));
    d->st = pl_stanza_ref(ev->stanza);
    d->from = pl_jid_dup(ev->from);
    d->to = pl_jid_dup(ev->to);
    d->outgoing = outgoing;
    d->origin = outgoing && ev->session ? ev->session->id : 0;
    d->barrier = pl_barrier_hold();
    if (e->waiting_tail)
        e->waiting_tail->next = d;
    else
        e->waiting = d;
    e->waiting_tail = d;
}

/* The list arrived: check and route again what waited for it. */
static void release(struct entry *e)
{
    struct deferred *d = e->waiting;
    e->waiting = e->waiting_tail = NULL;
    while (d) {
        struct deferred *next = d->next;
        struct pl_session *origin = d->origin ? pl_session_by_id(d->origin)
                                              : NULL;
        struct pl_barrier *prev = pl_barrier_enter(d->barrier);
        if (d->outgoing && blocks(&e->set, d->to)) {
            refuse_outgoing(origin, d->st);
        } else if (!d->outgoing && blocks(&e->set, d->from)) {
            int rc = refuse_incoming(d->st);
            if (rc < 0)
                pl_route_error(d->st, rc, NULL);
        } else if (!d->outgoing || origin) {
            bypass.st = d->st;
            bypass.bare = e->bare;
            pl_route(d->st, d->from, d->to, origin);
            bypass.st = NULL;
            bypass.bare = NULL;
        }
        pl_barrier_enter(prev);
        deferred_free(d);
        d = next;
    }
}

/* ---- enforcement ---- */

/* message|presence|iq / bare|full: to a local account. */
static int on_inbound(struct pl_event *ev, void *state)
{
    struct state *S = state;
    const struct pl_jid *from = ev->from, *to = ev->to;
    if (!from || !to || !to->local || strcmp(from->bare, to->bare) == 0 ||
        is_server(from))
        return PL_PASS;
    /* What the server sends for a local user who blocked the addressee
     * (presence broadcasts, probe answers): dropped. */
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!ev->session && !(type && strcmp(type, "error") == 0)) {
        /* Errors the server answers for the user (to blocked senders
         * among others) go through. */
        struct entry *fe = loaded_entry(from);
        if (fe && !bypassed(ev->stanza, fe->bare) && blocks(&fe->set, to))
            return PL_HANDLED;
    }
    if (bypassed(ev->stanza, to->bare))
        return PL_PASS;
    struct entry *e = entry_get(S, to->bare);
    if (!e->loaded) {
        defer(e, ev, 0);
        return PL_PENDING;
    }
    int blocked = blocks(&e->set, from);
    if (!e->online) { /* most recently used (may evict e itself) */
        lru_unlink(S, e);
        lru_push(S, e);
    }
    return blocked ? refuse_incoming(ev->stanza) : PL_PASS;
}

/* A client's stanza with a 'to'. */
static int on_outgoing(struct pl_event *ev, void *state)
{
    struct state *S = state;
    struct pl_session *s = ev->session;
    if (!s || !s->jid || !ev->to || is_server(ev->to) ||
        strcmp(ev->to->bare, s->jid->bare) == 0 ||
        bypassed(ev->stanza, s->jid->bare))
        return PL_PASS;
    struct entry *e = entry_get(S, s->jid->bare);
    if (!e->loaded) {
        defer(e, ev, 1);
        return PL_PENDING;
    }
    if (!blocks(&e->set, ev->to))
        return PL_PASS;
    refuse_outgoing(s, ev->stanza);
    return PL_HANDLED;
}

/* Server-sent stanzas of a local user to another domain. */
static int on_remote(struct pl_event *ev, void *state)
{
    if (ev->session || !ev->from || !ev->to)
        return PL_PASS; /* clients' stanzas were checked as outgoing */
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (type && strcmp(type, "error") == 0)
        return PL_PASS;
    struct entry *fe = loaded_entry(ev->from);
    return fe && blocks(&fe->set, ev->to) ? PL_HANDLED : PL_PASS;
}

/* ---- sessions ---- */

static int on_bound(struct pl_event *ev, void *state)
{
    struct state *S = state;
    struct entry *e = entry_get(S, ev->session->jid->bare);
    if (!e->online)
        lru_unlink(S, e);
    e->online++;
    return PL_PASS;
}

static int on_closed(struct pl_event *ev, void *state)
{
    struct state *S = state;
    struct pl_session *s = ev->session;
    struct entry *e = s->jid ? pl_map_get(&S->entries, s->jid->bare) : NULL;
    if (!e || e->online <= 0)
        return PL_PASS;
    for (int i = 0; i < e->ninterested; i++)
        if (e->interested[i] == s->id) {
            e->interested[i] = e->interested[--e->ninterested];
            break;
        }
    if (--e->online == 0 && e->loaded)
        lru_push(S, e);
    return PL_PASS;
}

static int on_deleted(struct pl_event *ev, void *state)
{
    struct state *S = state;
    char bare[2048];
    snprintf(bare, sizeof(bare), "%s@%s", (const char *)ev->data,
             ev->host->domain);
    struct entry *e = pl_map_get(&S->entries, bare);
    if (e && !e->online && e->loaded && !e->waiting) {
        lru_unlink(S, e);
        pl_map_del(&S->entries, bare);
        entry_free(e);
    }
    return PL_PASS;
}

/* ---- the protocol ---- */

static void add_item(struct pl_stanza *st, struct pl_node *parent,
                     const char *jid)
{
    struct pl_node *it = pl_node_add_child(st, parent, "item", NS_BLOCKING);
    pl_node_set_attr(st, it, "jid", jid);
}

/* One line per JID of doc as <item/>s under parent. */
static void add_items(struct pl_stanza *st, struct pl_node *parent, char **v,
                      int n)
{
    for (int i = 0; i < n; i++)
        add_item(st, parent, v[i]);
}

/* §3.3, §3.4: the change to every session of the account here that
 * asked for the list. */
static void push(struct state *S, const char *bare, const char *op, char **v,
                 int n)
{
    struct entry *e = pl_map_get(&S->entries, bare);
    for (int i = 0; e && i < e->ninterested; i++) {
        struct pl_session *s = pl_session_by_id(e->interested[i]);
        if (!s)
            continue;
        struct pl_stanza *p = pl_stanza_new("iq", PL_NS_CLIENT);
        char id[32];
        snprintf(id, sizeof(id), "block-push%lu", ++push_seq);
        pl_stanza_set_attr(p, "type", "set");
        pl_stanza_set_attr(p, "id", id);
        pl_stanza_set_attr(p, "to", s->jid->full);
        struct pl_node *q = pl_node_add_child(p, pl_stanza_root(p), op,
                                              NS_BLOCKING);
        add_items(p, q, v, n);
        pl_route_to_session(s, p);
        pl_stanza_unref(p);
    }
}

/* Sends a copy of st from `from` to `to`. */
static void send_as(struct pl_stanza *st, const char *from, const char *to)
{
    struct pl_stanza *c = pl_stanza_copy(st);
    pl_route_as(c, from, to);
    pl_stanza_unref(c);
}

/*
 * The JIDs among the roster's contacts that items cover: a full or bare
 * item names one address; a domain covers every contact there.  Calls
 * fn(jid, item) for each.
 */
static void each_contact(struct job *j, char **items, int n,
                         void (*fn)(struct job *, const char *,
                                    const struct pl_roster_item *))
{
    for (int i = 0; i < n; i++) {
        struct pl_jid *x = NULL;
        if (pl_jid_parse(pl_str_c(items[i]), &x) != PL_OK)
            continue;
        for (int k = 0; k < j->roster.n; k++) {
            const struct pl_roster_item *it = &j->roster.v[k];
            if (x->local) {
                if (strcmp(it->jid, x->bare) == 0)
                    fn(j, x->full, it);
            } else if (!x->resource) {
                const char *at = strchr(it->jid, '@');
                if (at && strcmp(at + 1, x->domain) == 0)
                    fn(j, it->jid, it);
            }
        }
        pl_jid_free(x);
    }
}

static void send_unavailable(struct job *j, const char *to,
                             const struct pl_roster_item *it)
{
    if (!pl_roster_has_from(it))
        return;
    struct pl_stanza *u = pl_stanza_new("presence", PL_NS_CLIENT);
    pl_stanza_set_attr(u, "type", "unavailable");
    for (struct pl_session *s = pl_session_first(j->base.bare); s;
         s = s->next_res)
        if (s->available)
            send_as(u, s->jid->full, to);
    pl_stanza_unref(u);
}

static void send_current(struct job *j, const char *to,
                         const struct pl_roster_item *it)
{
    if (pl_roster_has_from(it))
        for (struct pl_session *s = pl_session_first(j->base.bare); s;
             s = s->next_res)
            if (s->available && s->presence)
                send_as(s->presence, s->jid->full, to);
    if (pl_roster_has_to(it)) {
        /* Its presence was dropped while blocked: ask again. */
        struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
        pl_stanza_set_attr(p, "type", "probe");
        send_as(p, j->base.bare, it->jid);
        pl_stanza_unref(p);
    }
}

/*
 * Other cluster nodes keep their own copy of the list (their sessions of
 * the account, their checks of its incoming stanzas): the change goes to
 * them ("user/data-changed", hook.h) as "<op>\n<items>\n\n<list>": the
 * request's verb and items for the pushes to their sessions, then the
 * whole list after the change.
 */
static void tell_others(struct job *j, const char *op, int all)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, op);
    pl_buf_append(&b, "\n", 1);
    for (int i = 0; !all && i < j->njids; i++) {
        pl_buf_append_str(&b, j->jids[i]);
        pl_buf_append(&b, "\n", 1);
    }
    pl_buf_append(&b, "\n", 1);
    struct pl_str doc = pl_buf_str(&j->doc);
    if (doc.len)
        pl_buf_append(&b, doc.p, doc.len);
    struct pl_str t = pl_buf_str(&b);
    struct pl_data_change c = {"blocking", j->base.bare, t.p, t.len};
    struct pl_event ev =
        {"user/data-changed", j->S->host, NULL, NULL, NULL, NULL, &c};
    pl_hook_fire(&ev);
    pl_buf_reset(&b);
}

/* Another node changed an account's list: the copy here follows, and
 * the account's sessions here that asked for it get the push. */
static int on_elsewhere(struct pl_event *ev, void *state)
{
    struct state *S = state;
    const struct pl_data_change *c = ev->data;
    if (!c || strcmp(c->module, "blocking") != 0)
        return PL_PASS;
    const char *p = c->payload, *end = p + c->len;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return PL_HANDLED;
    char op[16];
    size_t oplen = (size_t)(nl - p);
    if (oplen >= sizeof(op))
        return PL_HANDLED;
    memcpy(op, p, oplen);
    op[oplen] = 0;
    if (strcmp(op, "block") != 0 && strcmp(op, "unblock") != 0)
        return PL_HANDLED;
    p = nl + 1;
    char **items = NULL;
    int n = 0;
    while (p < end && *p != '\n') {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        items = pl_realloc(items, (size_t)(n + 1) * sizeof(char *));
        items[n++] = pl_strndup(p, (size_t)(nl - p));
        p = nl + 1;
    }
    if (p < end)
        p++; /* the blank line: the list follows */
    struct entry *e = pl_map_get(&S->entries, c->bare);
    if (e && e->loaded) {
        pl_map_clear(&e->set);
        set_fill(&e->set, p, (size_t)(end - p));
    } else if (e) {
        pl_free(e->newer);
        e->newer = pl_strndup(p, (size_t)(end - p));
        e->newer_len = (size_t)(end - p);
    }
    push(S, c->bare, op, items, n);
    for (int i = 0; i < n; i++)
        pl_free(items[i]);
    pl_free(items);
    return PL_HANDLED;
}

static void reply(struct job *j, struct pl_stanza *r)
{
    pl_route_reply(j->base.st, r);
    pl_stanza_unref(r);
}

static void done(int rc, void *arg)
{
    struct job *j = arg;
    struct entry *e = pl_map_get(&j->S->entries, j->base.bare);
    if (rc != PL_OK) {
        if (rc != PL_ELIMIT)
            pl_log_error("mod_blocking", "blocklist of %s: storage failed",
                         j->base.bare);
        if (j->kind == J_LOAD && e && !e->loaded) {
            /* What waits goes on (checked against nothing) rather than
             * hang; the entry goes, so the next stanza reads again. */
            pl_map_del(&j->S->entries, j->base.bare);
            e->loaded = 1;
            release(e);
            entry_free(e);
        } else if (j->base.st) {
            pl_route_error(j->base.st,
                           rc == PL_ELIMIT ? PL_ENOT_ALLOWED
                                           : PL_EINTERNAL_SERVER_ERROR,
                           rc == PL_ELIMIT ? "the blocklist is full" : NULL);
        }
        job_free(j);
        return;
    }
    struct pl_str doc = pl_buf_str(&j->doc);
    if (j->kind == J_LOAD) {
        if (e && !e->loaded) {
            if (e->newer)
                set_fill(&e->set, e->newer, e->newer_len);
            else
                set_fill(&e->set, doc.p ? doc.p : "", doc.len);
            e->loaded = 1;
            release(e);
            if (!e->online)
                lru_push(j->S, e);
        }
        job_free(j);
        return;
    }
    if (j->kind == J_GET) {
        struct pl_stanza *r = pl_iq_result(j->base.st);
        struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "blocklist",
                                              NS_BLOCKING);
        struct pl_map set = {0};
        set_fill(&set, doc.p ? doc.p : "", doc.len);
        struct job tmp = {0};
        pl_map_each(&set, collect_changed, &tmp);
        pl_map_clear(&set);
        add_items(r, q, tmp.changed, tmp.nchanged);
        for (int i = 0; i < tmp.nchanged; i++)
            pl_free(tmp.changed[i]);
        pl_free(tmp.changed);
        reply(j, r);
        job_free(j);
        return;
    }
    /* §3.3: unavailable to the newly blocked contacts, while the list
     * still lets it through. */
    if (j->kind == J_BLOCK)
        each_contact(j, j->changed, j->nchanged, send_unavailable);
    if (e && e->loaded) {
        pl_map_clear(&e->set);
        set_fill(&e->set, doc.p ? doc.p : "", doc.len);
    }
    reply(j, pl_iq_result(j->base.st));
    const char *op = j->kind == J_BLOCK ? "block" : "unblock";
    int all = j->kind == J_UNBLOCK_ALL;
    push(j->S, j->base.bare, op, all ? NULL : j->jids, all ? 0 : j->njids);
    tell_others(j, op, all);
    /* §3.4: the current presence to the unblocked contacts. */
    if (j->kind != J_BLOCK)
        each_contact(j, j->changed, j->nchanged, send_current);
    job_free(j);
}

/* The request must come from one of the account's own sessions. */
static int own(struct pl_event *ev)
{
    struct pl_session *s = ev->session;
    return s && s->jid && ev->to && strcmp(s->jid->bare, ev->to->bare) == 0;
}

static void interested(struct state *S, struct pl_session *s)
{
    struct entry *e = entry_get(S, s->jid->bare);
    for (int i = 0; i < e->ninterested; i++)
        if (e->interested[i] == s->id)
            return;
    e->interested = pl_realloc(e->interested,
                               (size_t)(e->ninterested + 1) * sizeof(uint64_t));
    e->interested[e->ninterested++] = s->id;
}

static int on_get(struct pl_event *ev, void *state)
{
    if (!own(ev))
        return PL_PASS;
    interested(state, ev->session);
    struct job *j = job_new(state, J_GET, ev->session->jid->bare);
    j->base.st = pl_stanza_ref(ev->stanza);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

static int on_set(struct pl_event *ev, void *state, enum kind kind)
{
    if (!own(ev))
        return PL_PASS;
    struct pl_node *op = pl_stanza_payload(ev->stanza);
    struct job *j = job_new(state, kind, ev->session->jid->bare);
    for (struct pl_node *it = pl_node_first_elem(op); it;
         it = pl_node_next_elem(it)) {
        if (strcmp(it->name, "item") != 0 || strcmp(it->ns, NS_BLOCKING))
            continue;
        const char *jid = pl_node_attr(it, "jid");
        struct pl_jid *x = NULL;
        if (!jid) {
            job_free(j);
            return PL_EBAD_REQUEST;
        }
        if (pl_jid_parse(pl_str_c(jid), &x) != PL_OK) {
            job_free(j);
            return PL_EJID_MALFORMED;
        }
        j->jids = pl_realloc(j->jids, (size_t)(j->njids + 1) * sizeof(char *));
        j->jids[j->njids++] = pl_strdup(x->full);
        pl_jid_free(x);
    }
    if (!j->njids) {
        if (kind == J_BLOCK) { /* §3.3: at least one item */
            job_free(j);
            return PL_EBAD_REQUEST;
        }
        j->kind = J_UNBLOCK_ALL;
    }
    if (j->njids > j->max_items) {
        job_free(j);
        return PL_ENOT_ALLOWED;
    }
    j->base.st = pl_stanza_ref(ev->stanza);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

static int on_block(struct pl_event *ev, void *state)
{
    return on_set(ev, state, J_BLOCK);
}

static int on_unblock(struct pl_event *ev, void *state)
{
    return on_set(ev, state, J_UNBLOCK);
}

static void free_entry_cb(const char *key, void *value, void *ud)
{
    struct entry *e = value;
    struct deferred *d = e->waiting;
    while (d) {
        struct deferred *next = d->next;
        deferred_free(d);
        d = next;
    }
    entry_free(e);
}

static int load(struct pl_host *h, void *state)
{
    ((struct state *)state)->host = h;
    return PL_OK;
}

static void unload(struct pl_host *h, void *state)
{
    struct state *S = state;
    pl_map_each(&S->entries, free_entry_cb, NULL);
    pl_map_clear(&S->entries);
}

static const struct pl_option options[] = {
    {"max_items", PL_OPT_INT, "1000", 1, 1000000, NULL,
     "JIDs per blocklist; a block that would exceed it gets <not-allowed/>.",
     offsetof(struct state, max_items)},
    {"cache_size", PL_OPT_INT, "10000", 0, 100000000, NULL,
     "Blocklists of offline accounts kept in memory (least recently used "
     "first out); online accounts' lists are always kept.",
     offsetof(struct state, cache_size)},
    {0},
};

#define FIRST 1000 /* before every other handler of these events */

static const struct pl_hook_def hooks[] = {
    {"iq-get/bare/" NS_BLOCKING ":blocklist", on_get, 0},
    {"iq-set/bare/" NS_BLOCKING ":block", on_block, 0},
    {"iq-set/bare/" NS_BLOCKING ":unblock", on_unblock, 0},
    {"message/bare", on_inbound, FIRST},
    {"message/full", on_inbound, FIRST},
    {"presence/bare", on_inbound, FIRST},
    {"presence/full", on_inbound, FIRST},
    {"iq/bare", on_inbound, FIRST},
    {"iq/full", on_inbound, FIRST},
    {"message/outgoing", on_outgoing, FIRST},
    {"presence/outgoing", on_outgoing, FIRST},
    {"iq/outgoing", on_outgoing, FIRST},
    {"route/remote", on_remote, FIRST},
    {"session/bound", on_bound, 0},
    {"session/closed", on_closed, 0},
    {"user/deleted", on_deleted, 0},
    {"user/data-changed-elsewhere", on_elsewhere, 0},
    {0},
};

static const char *const features[] = {NS_BLOCKING, NULL};
static const char *const deps[] = {"roster", NULL};

const struct pl_module pl_mod_blocking = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "blocking",
    .summary = "blocks communication with JIDs a user chooses",
    .xeps = "XEP-0191",
    .deps = deps,
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
    .load = load,
    .unload = unload,
};
