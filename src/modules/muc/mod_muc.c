/*
 * mod_muc.c - XEP-0045 Multi-User Chat on a service subdomain
 * (conference.<host> unless configured), with XEP-0249 direct invitations
 * passing through untouched, XEP-0359 stanza ids (by = room), XEP-0421
 * occupant ids, XEP-0410 self-ping and room avatars in a vCard
 * (XEP-0153/XEP-0054 on the room JID).
 *
 * The module claims its domain with pl_service_claim (which lists it in
 * the host's disco#items) and receives every stanza to it through the
 * hooks "muc/message", "muc/presence", "muc/iq".  Room state and the
 * permission rules live in room.c (pure, unit-tested), forms in form.c,
 * history in history.c, persistence in store.c.
 *
 * Fan-out: a broadcast is one stanza without a 'to' attribute, routed
 * once per occupant with pl_route; the router hands it to the session's
 * send_to, which splices the occupant's 'to' into the one cached
 * serialization (doc/routing.md).  Occupant presences are kept built
 * (with and without the real JID), so a join sends n prepared stanzas
 * and builds nothing per existing occupant.
 *
 * Persistent rooms are written to storage on every change of
 * configuration, affiliations, subject or vCard; the owner's IQ result
 * waits for the commit.  They are loaded when the module is ready (one
 * storage job); until then joins to unknown rooms get
 * <resource-constraint/> (wait).
 *
 * The room archive (XEP-0313 on the room JID, archive.c): when a room's
 * muc#roomconfig_enablelogging is on, every groupchat message with a body
 * is appended as broadcast, its archive id the room's stanza-id; queries
 * to the room JID are answered from it (see may_read_archive for who may
 * ask).  Destroying a room (or the end of a temporary one) clears it.
 *
 * Extending: a new IQ namespace on rooms is a branch in on_room_iq; a
 * configuration option is a row in form.c and store.c.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <time.h>

#include <sys/random.h>

#include "archive.h"
#include "form.h"
#include "history.h"
#include "room.h"
#include "store.h"

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_USER NS_MUC "#user"
#define NS_ADMIN NS_MUC "#admin"
#define NS_OWNER NS_MUC "#owner"
#define NS_REGISTER_FORM NS_MUC "#register"
#define NS_REQUEST NS_MUC "#request"
#define NS_UNIQUE NS_MUC "#unique"
#define NS_IQ_REGISTER "jabber:iq:register"
#define NS_SID "urn:xmpp:sid:0"
#define NS_OCCID "urn:xmpp:occupant-id:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_PING "urn:xmpp:ping"
#define NS_VCARD "vcard-temp"
#define NS_VCARD_UPDATE "vcard-temp:x:update"
#define NS_MAM "urn:xmpp:mam:2"

enum {
    CREATE_ANYONE = 0,
    CREATE_LOCAL,
    CREATE_ADMINS
};

struct svc {
    /* options */
    char *domain_opt;             /* "" means conference.<host> */
    char *title;                  /* service name in disco */
    int creation;                 /* who may create rooms */
    struct pl_strlist admins;     /* service admins: owners of every room */
    long max_occupants;           /* per room */
    long max_rooms;               /* per service */
    long history_default;         /* maxhistoryfetch of new rooms */
    long history_max;             /* highest maxhistoryfetch */
    int lock_new_rooms;           /* §10.1.1: locked until configured */
    int default_persistent;       /* new rooms */
    int default_public;           /* new rooms */
    long max_vcard_size;          /* bytes of a room vCard */
    long max_subject;             /* bytes of a subject */
    long archive_max_page;        /* archive results per query page */
    long archive_max_items;       /* archived messages per room, 0 = no limit */
    long archive_count_limit;     /* RSM <count/> up to this many */
    long archive_expire_after;    /* seconds, 0 = forever */
    long archive_expire_interval; /* seconds between expiry runs */
    /* runtime */
    struct pl_host *host; /* owning host */
    char *domain;         /* service domain */
    struct pl_map rooms;  /* localpart -> struct muc_room * */
    struct pl_map seats;  /* real full JID -> struct seats: the rooms
                                * a session is in, to empty them when it
                                * closes without saying goodbye */
    size_t nrooms;
    struct muc_config defaults;   /* of new rooms */
    char key[65];                 /* occupant-id secret (hex) */
    int loaded;                   /* persistent rooms are in */
    unsigned long long seq;       /* stanza-id counter */
    char sid_prefix[20];          /* per-process stanza-id prefix (random:
                                * ids are archive ids, unique forever) */
    struct pl_timer expire_timer; /* archive expiry */
    int expiring;                 /* an expiry job is queued */
};

/* ------------------------------------------------------------ helpers */

struct seats {
    struct muc_room **v; /* rooms the session occupies */
    size_t n, cap;
};

static void seat_add(struct svc *s, const char *full, struct muc_room *r)
{
    struct seats *st = pl_map_get(&s->seats, full);
    if (!st) {
        st = pl_calloc(1, sizeof(*st));
        pl_map_put(&s->seats, full, st);
    }
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 4;
        st->v = pl_realloc(st->v, st->cap * sizeof(*st->v));
    }
    st->v[st->n++] = r;
}

static void seat_del(struct svc *s, const char *full, struct muc_room *r)
{
    struct seats *st = pl_map_get(&s->seats, full);
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++)
        if (st->v[i] == r) {
            st->v[i] = st->v[--st->n];
            break;
        }
    if (st->n == 0) {
        pl_map_del(&s->seats, full);
        pl_free(st->v);
        pl_free(st);
    }
}

static struct pl_node *add_el(struct pl_stanza *st, struct pl_node *parent,
                              const char *name, const char *ns)
{
    return pl_node_add_child(st, parent, name, ns);
}

static void add_text_el(struct pl_stanza *st, struct pl_node *parent,
                        const char *name, const char *ns, const char *text)
{
    struct pl_node *e = add_el(st, parent, name, ns);
    if (text)
        pl_node_add_text(st, e, text, strlen(text));
}

static void add_status(struct pl_stanza *st, struct pl_node *x, int code)
{
    char c[8];
    snprintf(c, sizeof(c), "%d", code);
    struct pl_node *s = add_el(st, x, "status", NS_USER);
    pl_node_set_attr(st, s, "code", c);
}

/* Sends st (borrowed) from 'from' to 'to' through the router. */
static void send_st(struct pl_stanza *st, const struct pl_jid *from,
                    const struct pl_jid *to)
{
    pl_route(st, from, to, NULL);
}

/* A stanza error with any RFC 6120 condition (some, like
 * registration-required, have no PL_E* code). */
static void send_error(struct pl_stanza *st, const char *cond,
                       const char *etype, const char *text)
{
    struct pl_stanza *r = pl_stanza_error_reply(st, PL_EBAD_REQUEST, text);
    if (!r)
        return;
    struct pl_node *root = pl_stanza_root(r);
    struct pl_node *e = pl_node_child(root, "error", NULL);
    pl_node_set_attr(r, e, "type", etype);
    struct pl_node *old = pl_node_child(e, "bad-request", PL_NS_STANZAS);
    pl_node_remove(r, old);
    struct pl_node *c = pl_node_add_child(r, e, cond, PL_NS_STANZAS);
    /* The condition goes first (RFC 6120 §8.3.2). */
    pl_node_remove(r, c);
    c->next = e->children;
    c->parent = e;
    e->children = c;
    if (!e->last)
        e->last = c;
    struct pl_jid *from = NULL, *to = NULL;
    const char *f = pl_stanza_attr(r, "from");
    const char *t = pl_stanza_attr(r, "to");
    if (f && t && pl_jid_parse(pl_str_c(f), &from) == PL_OK &&
        pl_jid_parse(pl_str_c(t), &to) == PL_OK)
        send_st(r, from, to);
    pl_jid_free(from);
    pl_jid_free(to);
    pl_stanza_unref(r);
}

static void reply_error(struct pl_stanza *st, int code, const char *text)
{
    if (code == MUC_EREGISTRATION)
        send_error(st, "registration-required", "auth", text);
    else
        pl_route_error(st, code, text);
}

static void iq_result(struct pl_stanza *st, struct pl_stanza *r)
{
    pl_route_reply(st, r);
}

static void iq_ok(struct pl_stanza *st)
{
    pl_route_result(st);
}

static int is_service_admin(const struct svc *s, const struct pl_jid *j)
{
    return pl_strlist_has(&s->admins, j->bare);
}

/* Affiliation, with service admins as owners of every room. */
static int aff_of(const struct svc *s, const struct muc_room *r,
                  const struct pl_jid *j)
{
    return is_service_admin(s, j) ? MUC_AFF_OWNER : pl__muc_aff_of(r, j);
}

static void utc_stamp(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ------------------------------------------------------- persistence */

struct save_job {
    struct pl_job base; /* IQ to answer after the commit, held, or NULL;
                           * host: service domain, user: room localpart */
    struct pl_buf data; /* document; empty deletes */
    int remove;
};

static int save_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct save_job *j = arg;
    struct pl_str s = pl_buf_str(&j->data);
    return d->kv_set(db, j->base.host, j->base.user, MUC_STORE, MUC_STORE_KEY,
                     j->remove ? NULL : s.p, s.len);
}

static void save_done(int rc, void *arg)
{
    struct save_job *j = arg;
    if (rc != PL_OK)
        pl_log_error("mod_muc", "while storing room %s@%s: %s", j->base.user,
                     j->base.host, pl_strerror(rc));
    if (j->base.st) {
        if (rc == PL_OK)
            iq_ok(j->base.st);
        else
            pl_route_error(j->base.st, PL_EINTERNAL_SERVER_ERROR, NULL);
    }
    pl_buf_reset(&j->data);
    pl_job_free(j);
}

/* Writes (or for a non-persistent room, removes) the room's document;
 * answers st (if not NULL) with a result once it committed. */
static void save_room(struct svc *s, struct muc_room *r, int remove,
                      struct pl_stanza *st)
{
    struct save_job *j = pl_job_new(sizeof(*j), st, 0, s->domain, r->local);
    j->remove = remove || !r->cfg.persistent;
    if (!j->remove)
        pl__muc_store_dump(r, &j->data);
    pl_storage_submit(pl_server_loop(), save_run, save_done, j);
}

/* Saves when the room is persistent, else answers st at once. */
static void changed(struct svc *s, struct muc_room *r, struct pl_stanza *st)
{
    if (r->cfg.persistent)
        save_room(s, r, 0, st);
    else if (st)
        iq_ok(st);
}

/* --------------------------------------------------------- presence */

/*
 * The presence of o as others see it: the payload it sent (minus the
 * <x xmlns=muc/> join element), then muc#user with item and statuses,
 * then the occupant id.  with_jid adds the real JID (moderators, or
 * everyone in non-anonymous rooms).  No 'to': a fan-out stanza.
 */
static struct pl_stanza *build_presence(struct muc_room *r,
                                        struct muc_occupant *o,
                                        const char *type, int aff, int with_jid,
                                        const int *codes, int ncodes,
                                        const char *new_nick,
                                        const char *reason, const char *actor)
{
    struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
    struct pl_node *root = pl_stanza_root(p);
    pl_stanza_set_attr(p, "from", o->room_jid->full);
    if (type)
        pl_stanza_set_attr(p, "type", type);
    if (o->presence && !type) {
        for (struct pl_node *c =
                 pl_node_first_elem(pl_stanza_root(o->presence));
             c; c = pl_node_next_elem(c)) {
            if ((strcmp(c->ns, NS_MUC) == 0 && strcmp(c->name, "x") == 0) ||
                strcmp(c->ns, NS_USER) == 0 || strcmp(c->ns, NS_OCCID) == 0)
                continue;
            pl_node_add_copy(p, root, c);
        }
    }
    struct pl_node *x = add_el(p, root, "x", NS_USER);
    struct pl_node *item = add_el(p, x, "item", NS_USER);
    pl_node_set_attr(p, item, "affiliation", pl__muc_aff_name(aff));
    pl_node_set_attr(p, item, "role",
                     type ? "none" : pl__muc_role_name(o->role));
    if (with_jid)
        pl_node_set_attr(p, item, "jid", o->jid->full);
    if (new_nick)
        pl_node_set_attr(p, item, "nick", new_nick);
    if (actor) {
        struct pl_node *a = add_el(p, item, "actor", NS_USER);
        pl_node_set_attr(p, a, "nick", actor);
    }
    if (reason)
        add_text_el(p, item, "reason", NS_USER, reason);
    for (int i = 0; i < ncodes; i++)
        add_status(p, x, codes[i]);
    struct pl_node *oid = add_el(p, root, "occupant-id", NS_OCCID);
    pl_node_set_attr(p, oid, "id", o->occupant_id);
    return p;
}

/* Whether viewer may see real JIDs (§7.2.3, whois). */
static int sees_jids(const struct muc_room *r, const struct muc_occupant *v)
{
    return r->cfg.whois_anyone || v->role == MUC_ROLE_MODERATOR;
}

/* Drops o's prepared presences (its presence, role or nick changed). */
static void cache_drop(struct muc_occupant *o)
{
    pl_stanza_unref(o->cached[0]);
    pl_stanza_unref(o->cached[1]);
    o->cached[0] = o->cached[1] = NULL;
}

/* The occupant's current available presence for a viewer (borrowed,
 * built once until the occupant changes). */
static struct pl_stanza *current_presence(struct svc *s, struct muc_room *r,
                                          struct muc_occupant *o, int with_jid)
{
    struct pl_stanza **slot = &o->cached[with_jid ? 1 : 0];
    if (!*slot)
        *slot = build_presence(r, o, NULL, aff_of(s, r, o->jid), with_jid, NULL,
                               0, NULL, NULL, NULL);
    return *slot;
}

/* Removes o from the room, with its cached presences. */
static void occupant_gone(struct muc_room *r, struct muc_occupant *o)
{
    seat_del(r->service, o->jid->full, r);
    pl__muc_occupant_remove(r, o);
}

/*
 * Broadcasts o's presence to every occupant whose role lets it see o
 * (presencebroadcast), except o itself, which gets self_codes (110
 * first).  type NULL: the current presence; else "unavailable" with
 * codes.  Stanzas are built at most twice (with and without JID).
 */
static void broadcast_presence(struct svc *s, struct muc_room *r,
                               struct muc_occupant *o, const char *type,
                               const int *codes, int ncodes,
                               const int *self_codes, int nself,
                               const char *new_nick, const char *reason,
                               const char *actor)
{
    int aff = aff_of(s, r, o->jid);
    struct pl_stanza *v[2] = {NULL, NULL};
    int visible = (r->cfg.presence_bc & MUC_ROLEBIT(o->role)) != 0 ||
                  type != NULL;
    for (size_t i = 0; visible && i < r->nocc; i++) {
        struct muc_occupant *t = r->occ[i];
        if (t == o)
            continue;
        int wj = sees_jids(r, t);
        if (!type) {
            send_st(current_presence(s, r, o, wj), o->room_jid, t->jid);
            continue;
        }
        if (!v[wj])
            v[wj] = build_presence(r, o, type, aff, wj, codes, ncodes, new_nick,
                                   reason, actor);
        send_st(v[wj], o->room_jid, t->jid);
    }
    pl_stanza_unref(v[0]);
    pl_stanza_unref(v[1]);
    struct pl_stanza *self = build_presence(r, o, type, aff, 1, self_codes,
                                            nself, new_nick, reason, actor);
    send_st(self, o->room_jid, o->jid);
    pl_stanza_unref(self);
}

/* A role or affiliation changed: rebuild and broadcast (§9.x). */
static void presence_changed(struct svc *s, struct muc_room *r,
                             struct muc_occupant *o, const char *reason,
                             const char *actor)
{
    cache_drop(o);
    if (!reason && !actor) {
        broadcast_presence(s, r, o, NULL, NULL, 0, (int[]){110}, 1, NULL, NULL,
                           NULL);
        return;
    }
    /* With a reason the stanzas differ from the cached current one: built
     * once with and once without the real JID, and once for o itself. */
    int aff = aff_of(s, r, o->jid);
    struct pl_stanza *v[2] = {NULL, NULL};
    int visible = (r->cfg.presence_bc & MUC_ROLEBIT(o->role)) != 0;
    for (size_t i = 0; visible && i < r->nocc; i++) {
        struct muc_occupant *t = r->occ[i];
        if (t == o)
            continue;
        int wj = sees_jids(r, t);
        if (!v[wj])
            v[wj] = build_presence(r, o, NULL, aff, wj, NULL, 0, NULL, reason,
                                   actor);
        send_st(v[wj], o->room_jid, t->jid);
    }
    pl_stanza_unref(v[0]);
    pl_stanza_unref(v[1]);
    struct pl_stanza *self = build_presence(r, o, NULL, aff, 1, (int[]){110}, 1,
                                            NULL, reason, actor);
    send_st(self, o->room_jid, o->jid);
    pl_stanza_unref(self);
}

/* Every occupant of a destroyed or emptied room leaves silently. */
static void room_free(struct svc *s, struct muc_room *r)
{
    /* The room is gone: its archive with it (a room made again under the
     * same name must not show it to its new owner). */
    pl__muc_archive_clear(s->domain, r->local);
    while (r->nocc)
        occupant_gone(r, r->occ[r->nocc - 1]);
    pl_map_del(&s->rooms, r->local);
    s->nrooms--;
    /* In a cluster, the room's lease goes (doc/cluster.md, "Rooms"). */
    struct pl_event ev = {"muc/room-gone", s->host, NULL, NULL, NULL,
                          r->jid,          NULL};
    pl_hook_fire(&ev);
    pl__muc_room_free(r);
}

/* Removes o with an unavailable presence carrying codes (kick 307, ban
 * 301, affiliation 321, members-only 322, shutdown 332, error 333). */
static void remove_occupant(struct svc *s, struct muc_room *r,
                            struct muc_occupant *o, int code,
                            const char *reason, const char *actor)
{
    int codes[1] = {code};
    int self_codes[2] = {110, code};
    broadcast_presence(s, r, o, "unavailable", codes, code ? 1 : 0, self_codes,
                       code ? 2 : 1, NULL, reason, actor);
    occupant_gone(r, o);
}

static void maybe_reap(struct svc *s, struct muc_room *r)
{
    if (r->nocc == 0 && !r->cfg.persistent)
        room_free(s, r);
}

/* --------------------------------------------------------------- join */

struct hist_ud {
    const struct pl_jid *to;
};

static void send_history(struct pl_stanza *st, void *ud)
{
    struct hist_ud *h = ud;
    const char *f = pl_stanza_attr(st, "from");
    struct pl_jid *from;
    if (f && pl_jid_parse(pl_str_c(f), &from) == PL_OK) {
        send_st(st, from, h->to);
        pl_jid_free(from);
    }
}

static long attr_num(const struct pl_node *el, const char *name)
{
    const char *v = pl_node_attr(el, name);
    if (!v)
        return -1;
    char *end;
    long n = strtol(v, &end, 10);
    return *end || n < 0 ? -1 : n;
}

/* XEP-0082 date-time to time_t (the forms XEP-0045 §7.2.14 'since'
 * uses); 0 if it does not parse. */
static time_t parse_stamp(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon,
                     &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

static void send_subject(struct muc_room *r, const struct pl_jid *to)
{
    /* §7.2.15: the subject comes last, also when empty. */
    struct pl_stanza *m = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(m, "type", "groupchat");
    struct pl_jid *from = NULL;
    if (r->subject_nick)
        pl_jid_make(r->jid->local, r->jid->domain, r->subject_nick, &from);
    pl_stanza_set_attr(m, "from", from ? from->full : r->jid->bare);
    add_text_el(m, pl_stanza_root(m), "subject", PL_NS_CLIENT,
                r->subject ? r->subject : "");
    send_st(m, from ? from : r->jid, to);
    pl_jid_free(from);
    pl_stanza_unref(m);
}

static void join(struct svc *s, struct muc_room *r, struct pl_event *ev,
                 int created)
{
    struct pl_stanza *st = ev->stanza;
    const struct pl_jid *real = ev->from;
    const char *nick = ev->to->resource;
    struct pl_node *mx = pl_node_child(pl_stanza_root(st), "x", NS_MUC);
    const char *password = NULL;
    if (mx) {
        struct pl_node *pw = pl_node_child(mx, "password", NULL);
        if (pw)
            password = pl_node_text(st, pw, NULL);
    }
    int aff = aff_of(s, r, real);
    int rc = created ? PL_OK
                     : pl__muc_check_join(r, real, nick, password,
                                          s->max_occupants);
    if (rc == MUC_EREGISTRATION && aff == MUC_AFF_OWNER)
        rc = PL_OK;
    if (rc != PL_OK) {
        reply_error(st, rc, NULL);
        return;
    }
    int role = pl__muc_default_role(r, aff);
    if (role == MUC_ROLE_NONE)
        role = MUC_ROLE_PARTICIPANT; /* owner of a members-only room etc. */
    struct muc_occupant *o = pl__muc_occupant_add(r, real, nick, role, s->key);
    if (!o) {
        pl_route_error(st, PL_EJID_MALFORMED, NULL);
        maybe_reap(s, r); /* a room just created for nobody goes again */
        return;
    }
    o->presence = pl_stanza_ref(st);
    seat_add(s, real->full, r);
    /* 1. Existing occupants to the newcomer (prepared stanzas). */
    int wj = sees_jids(r, o);
    for (size_t i = 0; i < r->nocc; i++) {
        struct muc_occupant *t = r->occ[i];
        if (t != o && (r->cfg.presence_bc & MUC_ROLEBIT(t->role)))
            send_st(current_presence(s, r, t, wj), t->room_jid, real);
    }
    /* 2. The newcomer to everyone, itself last with 110 (§7.2.3). */
    int codes[5], n = 0;
    codes[n++] = 110;
    if (r->cfg.whois_anyone)
        codes[n++] = 100; /* §7.2.4 */
    if (r->cfg.logging)
        codes[n++] = 170; /* §7.2.12 */
    if (created)
        codes[n++] = 201; /* §10.1.1 */
    broadcast_presence(s, r, o, NULL, NULL, 0, codes, n, NULL, NULL, NULL);
    /* 3. History (§7.2.13), limited as asked (§7.2.14). */
    struct pl_node *h = mx ? pl_node_child(mx, "history", NULL) : NULL;
    long maxstanzas = -1, maxchars = -1, seconds = -1;
    time_t since = 0;
    if (h) {
        maxstanzas = attr_num(h, "maxstanzas");
        maxchars = attr_num(h, "maxchars");
        seconds = attr_num(h, "seconds");
        since = parse_stamp(pl_node_attr(h, "since"));
    }
    struct hist_ud hu = {real};
    pl__muc_history_each(r->history, maxstanzas, maxchars, seconds, since,
                         r->cfg.max_history, time(NULL), send_history, &hu);
    /* 4. Subject. */
    send_subject(r, real);
}

static int may_create(const struct svc *s, const struct pl_jid *j)
{
    switch (s->creation) {
    case CREATE_ANYONE: return 1;
    case CREATE_LOCAL:
        return strcmp(j->domain, s->host->domain) == 0 ||
               is_service_admin(s, j);
    default: return is_service_admin(s, j);
    }
}

static void create_and_join(struct svc *s, struct pl_event *ev)
{
    const struct pl_jid *to = ev->to;
    if (!s->loaded) {
        pl_route_error(ev->stanza, PL_ERESOURCE_CONSTRAINT,
                       "Rooms are being loaded.");
        return;
    }
    if (!may_create(s, ev->from)) {
        pl_route_error(ev->stanza, PL_ENOT_ALLOWED,
                       "Room creation is restricted.");
        return;
    }
    if ((long)s->nrooms >= s->max_rooms) {
        pl_route_error(ev->stanza, PL_ERESOURCE_CONSTRAINT, "Too many rooms.");
        return;
    }
    struct muc_room *r = pl__muc_room_new(to->local, s->domain, &s->defaults);
    if (!r) {
        pl_route_error(ev->stanza, PL_EJID_MALFORMED, NULL);
        return;
    }
    r->service = s;
    r->locked = s->lock_new_rooms;
    pl__muc_aff_set(r, ev->from->bare, MUC_AFF_OWNER, NULL);
    pl_map_put(&s->rooms, r->local, r);
    s->nrooms++;
    join(s, r, ev, 1);
}

/* §7.6: nick change by an occupant. */
static void change_nick(struct svc *s, struct muc_room *r,
                        struct muc_occupant *o, struct pl_event *ev)
{
    const char *nick = ev->to->resource;
    if (pl__muc_nick_taken(r, nick, o->jid)) {
        pl_route_error(ev->stanza, PL_ECONFLICT, NULL);
        return;
    }
    int codes[1] = {303};
    int self_codes[2] = {303, 110};
    /* The unavailable presence names the new nick (§7.6.3). */
    struct pl_jid *nj = NULL;
    if (pl_jid_make(r->jid->local, r->jid->domain, nick, &nj) != PL_OK) {
        pl_route_error(ev->stanza, PL_EJID_MALFORMED, NULL);
        return;
    }
    broadcast_presence(s, r, o, "unavailable", codes, 1, self_codes, 2,
                       nj->resource, NULL, NULL);
    cache_drop(o);
    pl__muc_occupant_rename(r, o, nj->resource);
    pl_jid_free(nj);
    pl_stanza_unref(o->presence);
    o->presence = pl_stanza_ref(ev->stanza);
    broadcast_presence(s, r, o, NULL, NULL, 0, (int[]){110}, 1, NULL, NULL,
                       NULL);
}

/* o leaves (§7.14), with st (may be NULL) as its last presence.  Another
 * session under the same nick stays: others keep seeing the nick and
 * only the leaver gets its unavailable (§7.2.9). */
static void leave(struct svc *s, struct muc_room *r, struct muc_occupant *o,
                  struct pl_stanza *st)
{
    struct muc_occupant *first = pl__muc_occupant_by_nick(r, o->nick);
    int shared = first && (first != o || first->next_same_nick);
    if (shared) {
        struct pl_stanza *self = build_presence(r, o, "unavailable",
                                                aff_of(s, r, o->jid), 1,
                                                (int[]){110}, 1, NULL, NULL,
                                                NULL);
        send_st(self, o->room_jid, o->jid);
        pl_stanza_unref(self);
        occupant_gone(r, o);
        return;
    }
    if (st) {
        pl_stanza_unref(o->presence);
        o->presence = pl_stanza_ref(st);
    }
    remove_occupant(s, r, o, 0, NULL, NULL);
    maybe_reap(s, r);
}

static int on_presence(struct pl_event *ev, void *state)
{
    struct svc *s = state;
    const struct pl_jid *to = ev->to;
    if (!ev->from)
        return PL_HANDLED;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!to->local)
        return PL_HANDLED; /* presence to the service itself: ignored */
    struct muc_room *r = pl_map_get(&s->rooms, to->local);
    struct muc_occupant *o = r ? pl__muc_occupant_by_real(r, ev->from->full)
                               : NULL;
    if (type && strcmp(type, "error") == 0) {
        if (o) { /* the occupant's client is gone (§ "Error handling") */
            remove_occupant(s, r, o, 333, NULL, NULL);
            maybe_reap(s, r);
        }
        return PL_HANDLED;
    }
    if (type && strcmp(type, "unavailable") == 0) {
        if (o)
            leave(s, r, o, ev->stanza);
        return PL_HANDLED;
    }
    if (type) /* subscriptions to rooms are not a thing (§7.1) */
        return PL_HANDLED;
    if (!to->resource) {
        /* §7.2.1: no nick. */
        pl_route_error(ev->stanza, PL_EJID_MALFORMED, NULL);
        return PL_HANDLED;
    }
    if (!r) {
        create_and_join(s, ev);
        return PL_HANDLED;
    }
    if (!o) {
        join(s, r, ev, 0);
        return PL_HANDLED;
    }
    if (strcmp(o->nick, to->resource) != 0) {
        change_nick(s, r, o, ev);
        return PL_HANDLED;
    }
    /* §7.7: a presence update is broadcast. */
    pl_stanza_unref(o->presence);
    o->presence = pl_stanza_ref(ev->stanza);
    presence_changed(s, r, o, NULL, NULL);
    return PL_HANDLED;
}

/* ----------------------------------------------------------- messages */

/* A fresh XEP-0359 id for a room message. */
static void new_stanza_id(struct svc *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s-%llx", s->sid_prefix, ++s->seq);
}

/* Copies the message for broadcast: from the occupant, no 'to', ids of
 * others that claim to be ours removed (XEP-0359 §5, XEP-0421 §4). */
static struct pl_stanza *prepare_groupchat(struct svc *s, struct muc_room *r,
                                           struct muc_occupant *o,
                                           struct pl_stanza *in, char id[64])
{
    struct pl_stanza *m = pl_stanza_copy(in);
    struct pl_node *root = pl_stanza_root(m);
    pl_stanza_set_attr(m, "to", NULL);
    pl_stanza_set_attr(m, "from", o->room_jid->full);
    for (struct pl_node *c = pl_node_first_elem(root), *next; c; c = next) {
        next = pl_node_next_elem(c);
        if (strcmp(c->ns, NS_OCCID) == 0 ||
            (strcmp(c->ns, NS_SID) == 0 && strcmp(c->name, "stanza-id") == 0) ||
            (strcmp(c->ns, NS_DELAY) == 0))
            pl_node_remove(m, c);
    }
    new_stanza_id(s, id, 64);
    struct pl_node *sid = add_el(m, root, "stanza-id", NS_SID);
    pl_node_set_attr(m, sid, "id", id);
    pl_node_set_attr(m, sid, "by", r->jid->bare);
    struct pl_node *oid = add_el(m, root, "occupant-id", NS_OCCID);
    pl_node_set_attr(m, oid, "id", o->occupant_id);
    return m;
}

static void broadcast_message(struct muc_room *r, struct pl_stanza *m,
                              const struct pl_jid *from)
{
    for (size_t i = 0; i < r->nocc; i++)
        send_st(m, from, r->occ[i]->jid);
}

static void groupchat(struct svc *s, struct muc_room *r, struct muc_occupant *o,
                      struct pl_event *ev)
{
    struct pl_stanza *st = ev->stanza;
    struct pl_node *root = pl_stanza_root(st);
    if (o->role < MUC_ROLE_PARTICIPANT) {
        /* §7.4: visitors of a moderated room have no voice. */
        pl_route_error(st, PL_EFORBIDDEN, "You have no voice in this room.");
        return;
    }
    struct pl_node *subj = pl_node_child(root, "subject", NULL);
    int body = pl_node_child(root, "body", NULL) != NULL;
    if (subj && !body) {
        /* §8.1: subject change. */
        if (!r->cfg.change_subject && o->role != MUC_ROLE_MODERATOR) {
            pl_route_error(st, PL_EFORBIDDEN,
                           "Only moderators may change the subject.");
            return;
        }
        size_t n;
        const char *text = pl_node_text(st, subj, &n);
        if ((long)n > s->max_subject) {
            pl_route_error(st, PL_ENOT_ACCEPTABLE, "The subject is too long.");
            return;
        }
        pl__muc_set_str(&r->subject, text);
        pl__muc_set_str(&r->subject_nick, o->nick);
        changed(s, r, NULL);
    }
    char id[64];
    struct pl_stanza *m = prepare_groupchat(s, r, o, st, id);
    broadcast_message(r, m, o->room_jid);
    /* XEP-0313 §5.1.2: the archive id is the stanza-id just given. */
    if (r->cfg.logging && pl__muc_archivable(m))
        pl__muc_archive_append(s->domain, r->local, o->nick, id, m,
                               s->archive_max_items);
    if (body && r->cfg.max_history > 0) {
        /* The history copy carries its delay (XEP-0203) from now on. */
        struct pl_stanza *h = pl_stanza_copy(m);
        struct pl_node *d = add_el(h, pl_stanza_root(h), "delay", NS_DELAY);
        char stamp[40];
        utc_stamp(time(NULL), stamp, sizeof(stamp));
        pl_node_set_attr(h, d, "from", r->jid->bare);
        pl_node_set_attr(h, d, "stamp", stamp);
        pl__muc_history_add(&r->history, r->cfg.max_history, h, time(NULL));
        pl_stanza_unref(h);
    }
    pl_stanza_unref(m);
}

/* §7.5: a private message between occupants. */
static void private_message(struct svc *s, struct muc_room *r,
                            struct muc_occupant *o, struct pl_event *ev)
{
    (void)s;
    struct pl_stanza *st = ev->stanza;
    const char *type = pl_stanza_attr(st, "type");
    if (type && strcmp(type, "groupchat") == 0) {
        pl_route_error(st, PL_EBAD_REQUEST, NULL);
        return;
    }
    struct muc_occupant *t = pl__muc_occupant_by_nick(r, ev->to->resource);
    if (!t) {
        pl_route_error(st, PL_EITEM_NOT_FOUND, NULL);
        return;
    }
    if (!pl__muc_may_pm(r->cfg.allow_pm, o->role)) {
        pl_route_error(st, PL_EFORBIDDEN,
                       "Private messages are not allowed here.");
        return;
    }
    struct pl_stanza *m = pl_stanza_copy(st);
    pl_stanza_set_attr(m, "to", NULL);
    pl_stanza_set_attr(m, "from", o->room_jid->full);
    struct pl_node *root = pl_stanza_root(m);
    if (!pl_node_child(root, "x", NS_USER))
        add_el(m, root, "x", NS_USER);
    for (; t; t = t->next_same_nick)
        send_st(m, o->room_jid, t->jid);
    pl_stanza_unref(m);
}

/* §7.8.2: a mediated invitation; §7.8.3... declines. */
static void invitation(struct svc *s, struct muc_room *r,
                       struct muc_occupant *o, struct pl_event *ev,
                       struct pl_node *x)
{
    struct pl_stanza *st = ev->stanza;
    struct pl_node *inv = pl_node_child(x, "invite", NS_USER);
    struct pl_node *dec = pl_node_child(x, "decline", NS_USER);
    struct pl_node *el = inv ? inv : dec;
    const char *to_s = pl_node_attr(el, "to");
    struct pl_jid *to = NULL;
    if (!to_s || pl_jid_parse(pl_str_c(to_s), &to) != PL_OK) {
        pl_route_error(st, PL_EJID_MALFORMED, NULL);
        return;
    }
    int aff = aff_of(s, r, ev->from);
    if (inv) {
        if (!o) {
            pl_route_error(st, PL_ENOT_ACCEPTABLE,
                           "Only occupants may invite.");
            goto out;
        }
        if (r->cfg.members_only && aff < MUC_AFF_ADMIN &&
            !r->cfg.allow_invites) {
            pl_route_error(st, PL_EFORBIDDEN,
                           "Only admins may invite to this room.");
            goto out;
        }
        if (r->cfg.members_only && pl__muc_aff_of(r, to) < MUC_AFF_MEMBER) {
            /* §7.8.2: the invitee becomes a member. */
            pl__muc_aff_set(r, to->bare, MUC_AFF_MEMBER, NULL);
            changed(s, r, NULL);
        }
    }
    struct pl_stanza *m = pl_stanza_new("message", PL_NS_CLIENT);
    struct pl_node *root = pl_stanza_root(m);
    pl_stanza_set_attr(m, "from", r->jid->bare);
    pl_stanza_set_attr(m, "to", to->full);
    const char *id = pl_stanza_attr(st, "id");
    if (id)
        pl_stanza_set_attr(m, "id", id);
    struct pl_node *nx = add_el(m, root, "x", NS_USER);
    struct pl_node *ne = add_el(m, nx, inv ? "invite" : "decline", NS_USER);
    pl_node_set_attr(m, ne, "from", inv ? ev->from->full : ev->from->bare);
    struct pl_node *reason = pl_node_child(el, "reason", NULL);
    if (reason)
        pl_node_add_copy(m, ne, reason);
    struct pl_node *cont = pl_node_child(el, "continue", NULL);
    if (cont)
        pl_node_add_copy(m, ne, cont);
    if (inv && r->cfg.password_protected && r->cfg.password)
        add_text_el(m, nx, "password", NS_USER, r->cfg.password);
    if (inv) {
        char body[512];
        snprintf(body, sizeof(body), "%.200s invites you to the room %.200s",
                 ev->from->bare, r->jid->bare);
        add_text_el(m, root, "body", PL_NS_CLIENT, body);
    }
    send_st(m, r->jid, to);
    pl_stanza_unref(m);
out:
    pl_jid_free(to);
}

/* §7.13 and §8.6: voice requests and their approval. */
static void voice_request(struct svc *s, struct muc_room *r,
                          struct muc_occupant *o, struct pl_event *ev,
                          struct pl_node *form)
{
    struct pl_stanza *st = ev->stanza;
    const char *allow = pl__muc_form_text(st, form, "muc#request_allow");
    if (allow && o->role == MUC_ROLE_MODERATOR) {
        if (strcmp(allow, "1") != 0 && strcmp(allow, "true") != 0)
            return; /* denied: nothing to do */
        const char *nick = pl__muc_form_text(st, form, "muc#roomnick");
        struct muc_occupant *t = nick ? pl__muc_occupant_by_nick(r, nick)
                                      : NULL;
        if (t && t->role == MUC_ROLE_VISITOR) {
            for (struct muc_occupant *x = t; x; x = x->next_same_nick) {
                x->role = MUC_ROLE_PARTICIPANT;
                presence_changed(s, r, x, NULL, o->nick);
            }
        }
        return;
    }
    if (!r->cfg.voice_requests) {
        pl_route_error(st, PL_EFORBIDDEN, "Voice requests are disabled.");
        return;
    }
    if (o->role != MUC_ROLE_VISITOR) {
        pl_route_error(st, PL_EBAD_REQUEST, "You have voice already.");
        return;
    }
    struct pl_stanza *m = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(m, "from", r->jid->bare);
    struct pl_node *x = pl__muc_form_new(m, pl_stanza_root(m), "form",
                                         NS_REQUEST);
    struct pl_node *t = pl_node_add_child(m, x, "title", NS_DATA);
    pl_node_add_text(m, t, "Voice request", 13);
    pl__muc_form_field(m, x, "muc#role", "list-single", "Requested role",
                       "participant");
    pl__muc_form_field(m, x, "muc#jid", "jid-single", "User ID", o->jid->full);
    pl__muc_form_field(m, x, "muc#roomnick", "text-single", "Room nickname",
                       o->nick);
    pl__muc_form_field(m, x, "muc#request_allow", "boolean",
                       "Grant voice to this person?", "false");
    for (size_t i = 0; i < r->nocc; i++)
        if (r->occ[i]->role == MUC_ROLE_MODERATOR)
            send_st(m, r->jid, r->occ[i]->jid);
    pl_stanza_unref(m);
}

static int on_message(struct pl_event *ev, void *state)
{
    struct svc *s = state;
    struct pl_stanza *st = ev->stanza;
    const struct pl_jid *to = ev->to;
    if (!ev->from)
        return PL_HANDLED;
    const char *type = pl_stanza_attr(st, "type");
    if (!to->local) {
        if (type && strcmp(type, "error") == 0)
            return PL_HANDLED;
        return PL_ESERVICE_UNAVAILABLE;
    }
    struct muc_room *r = pl_map_get(&s->rooms, to->local);
    if (!r) {
        if (type && strcmp(type, "error") == 0)
            return PL_HANDLED;
        return PL_EITEM_NOT_FOUND;
    }
    struct muc_occupant *o = pl__muc_occupant_by_real(r, ev->from->full);
    if (type && strcmp(type, "error") == 0) {
        if (o && !to->resource) {
            remove_occupant(s, r, o, 333, NULL, NULL);
            maybe_reap(s, r);
        }
        return PL_HANDLED;
    }
    if (to->resource) {
        if (!o) {
            pl_route_error(st, PL_ENOT_ACCEPTABLE,
                           "Only occupants may send private messages.");
            return PL_HANDLED;
        }
        private_message(s, r, o, ev);
        return PL_HANDLED;
    }
    struct pl_node *root = pl_stanza_root(st);
    struct pl_node *x = pl_node_child(root, "x", NS_USER);
    if (x && (pl_node_child(x, "invite", NS_USER) ||
              pl_node_child(x, "decline", NS_USER))) {
        invitation(s, r, o, ev, x);
        return PL_HANDLED;
    }
    if (!o) {
        /* §7.4: non-occupants may not speak. */
        pl_route_error(st, PL_ENOT_ACCEPTABLE,
                       "Only occupants may send messages to the room.");
        return PL_HANDLED;
    }
    struct pl_node *form = pl_node_child(root, "x", NS_DATA);
    if (form && (!type || strcmp(type, "groupchat") != 0)) {
        const char *ft = pl__muc_form_type(st, form);
        if (ft && strcmp(ft, NS_REQUEST) == 0) {
            voice_request(s, r, o, ev, form);
            return PL_HANDLED;
        }
    }
    if (type && strcmp(type, "groupchat") == 0) {
        groupchat(s, r, o, ev);
        return PL_HANDLED;
    }
    pl_route_error(st, PL_EBAD_REQUEST,
                   "Messages to a room are of type groupchat.");
    return PL_HANDLED;
}

/* -------------------------------------------------------------- admin */

struct change {
    struct muc_occupant *o; /* role change target, or NULL */
    char *real;             /* its real full JID: o may be gone when an
                             * earlier item of the same request removed it */
    char *jid;              /* affiliation change target (bare) */
    int role, aff;          /* new value, -1 unchanged */
    const char *reason;     /* borrowed from the request */
};

/* Applies an affiliation change to everyone present with that bare JID. */
static void aff_applied(struct svc *s, struct muc_room *r, const char *bare,
                        int aff, const char *reason, const char *actor)
{
    for (size_t i = 0; i < r->nocc;) {
        struct muc_occupant *o = r->occ[i];
        if (strcmp(o->jid->bare, bare) != 0) {
            i++;
            continue;
        }
        if (aff == MUC_AFF_OUTCAST) {
            remove_occupant(s, r, o, 301, reason, actor); /* §9.1 */
            continue;
        }
        if (aff < MUC_AFF_MEMBER && r->cfg.members_only &&
            !is_service_admin(s, o->jid)) {
            remove_occupant(s, r, o, 321, reason, actor); /* §9.4 */
            continue;
        }
        int role = pl__muc_default_role(r, aff_of(s, r, o->jid));
        if (role == MUC_ROLE_NONE)
            role = MUC_ROLE_PARTICIPANT;
        o->role = role;
        presence_changed(s, r, o, reason, actor);
        i++;
    }
}

static void admin_set(struct svc *s, struct muc_room *r,
                      struct muc_occupant *actor, int actor_aff,
                      struct pl_event *ev, struct pl_node *q)
{
    struct pl_stanza *st = ev->stanza;
    size_t n = pl_node_count_elems(q);
    struct change *ch = pl_calloc(n + 1, sizeof(*ch));
    size_t k = 0;
    int rc = PL_OK, aff_changed = 0;
    int actor_role = actor ? actor->role : MUC_ROLE_NONE;
    for (struct pl_node *it = pl_node_first_elem(q); it && rc == PL_OK;
         it = pl_node_next_elem(it)) {
        if (strcmp(it->name, "item") != 0)
            continue;
        struct change *c = &ch[k++];
        c->role = c->aff = -1;
        struct pl_node *rn = pl_node_child(it, "reason", NULL);
        c->reason = rn ? pl_node_text(st, rn, NULL) : NULL;
        const char *role = pl_node_attr(it, "role");
        const char *aff = pl_node_attr(it, "affiliation");
        if (role) {
            const char *nick = pl_node_attr(it, "nick");
            c->role = pl__muc_role_parse(role);
            c->o = nick ? pl__muc_occupant_by_nick(r, nick) : NULL;
            if (c->role < 0 || !nick) {
                rc = PL_EBAD_REQUEST;
                break;
            }
            if (!c->o) {
                rc = PL_EITEM_NOT_FOUND;
                break;
            }
            c->real = pl_strdup(c->o->jid->full);
            int taff = aff_of(s, r, c->o->jid);
            rc = pl__muc_may_set_role(actor_aff, actor_role, taff, c->o->role,
                                      c->role);
            if (rc == PL_OK && c->role == MUC_ROLE_NONE && c->o == actor)
                rc = PL_ECONFLICT; /* a moderator kicking itself */
        } else if (aff) {
            const char *j = pl_node_attr(it, "jid");
            struct pl_jid *jj = NULL;
            c->aff = pl__muc_aff_parse(aff);
            if (c->aff < 0 || !j || pl_jid_parse(pl_str_c(j), &jj) != PL_OK) {
                rc = c->aff < 0 || !j ? PL_EBAD_REQUEST : PL_EJID_MALFORMED;
                break;
            }
            c->jid = pl_strdup(jj->bare);
            int taff = pl__muc_aff_of(r, jj);
            pl_jid_free(jj);
            rc = pl__muc_may_set_aff(actor_aff, taff, c->aff);
            /* §10.6/§10.8: the last owner cannot step down. */
            if (rc == PL_OK && taff == MUC_AFF_OWNER &&
                c->aff != MUC_AFF_OWNER &&
                pl__muc_count_aff(r, MUC_AFF_OWNER) <= 1)
                rc = PL_ECONFLICT;
        } else {
            rc = PL_EBAD_REQUEST;
        }
    }
    if (rc == PL_OK && k == 0)
        rc = PL_EBAD_REQUEST;
    if (rc != PL_OK) {
        pl_route_error(st, rc, NULL);
        goto out;
    }
    const char *actor_nick = actor ? actor->nick : NULL;
    for (size_t i = 0; i < k; i++) {
        struct change *c = &ch[i];
        if (c->jid) {
            pl__muc_aff_set(r, c->jid, c->aff, c->reason);
            aff_applied(s, r, c->jid, c->aff, c->reason, actor_nick);
            aff_changed = 1;
        } else if (c->real &&
                   (c->o = pl__muc_occupant_by_real(r, c->real)) != NULL) {
            if (c->role == MUC_ROLE_NONE)
                remove_occupant(s, r, c->o, 307, c->reason, actor_nick);
            else {
                c->o->role = c->role;
                presence_changed(s, r, c->o, c->reason, actor_nick);
            }
        }
    }
    if (aff_changed)
        changed(s, r, st);
    else
        iq_ok(st);
    maybe_reap(s, r);
out:
    for (size_t i = 0; i < k; i++) {
        pl_free(ch[i].jid);
        pl_free(ch[i].real);
    }
    pl_free(ch);
}

struct list_ud {
    struct pl_stanza *st;
    struct pl_node *q;
    int aff;
};

static void list_aff(const char *key, void *value, void *ud)
{
    struct list_ud *u = ud;
    const struct muc_aff_entry *e = value;
    if (e->aff != u->aff)
        return;
    struct pl_node *it = add_el(u->st, u->q, "item", NS_ADMIN);
    pl_node_set_attr(u->st, it, "affiliation", pl__muc_aff_name(e->aff));
    pl_node_set_attr(u->st, it, "jid", key);
    if (e->nick)
        pl_node_set_attr(u->st, it, "nick", e->nick);
    if (e->reason)
        add_text_el(u->st, it, "reason", NS_ADMIN, e->reason);
}

static void admin_get(struct svc *s, struct muc_room *r,
                      struct muc_occupant *actor, int actor_aff,
                      struct pl_event *ev, struct pl_node *q)
{
    struct pl_stanza *st = ev->stanza;
    struct pl_node *it = pl_node_child(q, "item", NULL);
    const char *aff_s = it ? pl_node_attr(it, "affiliation") : NULL;
    const char *role_s = it ? pl_node_attr(it, "role") : NULL;
    int aff = pl__muc_aff_parse(aff_s), role = pl__muc_role_parse(role_s);
    if (!it || (aff < 0 && role < 0)) {
        pl_route_error(st, PL_EBAD_REQUEST, NULL);
        return;
    }
    int actor_role = actor ? actor->role : MUC_ROLE_NONE;
    if (aff >= 0) {
        /* §9.5, §9.8, §10.5, §10.7: members per getmemberlist, the rest
         * admins. */
        int ok = actor_aff >= MUC_AFF_ADMIN ||
                 (aff == MUC_AFF_MEMBER &&
                  (r->cfg.member_list & MUC_ROLEBIT(actor_role)));
        if (!ok) {
            pl_route_error(st, PL_EFORBIDDEN, NULL);
            return;
        }
    } else if (actor_role != MUC_ROLE_MODERATOR) {
        pl_route_error(st, PL_EFORBIDDEN, NULL); /* §8.5, §9.9 */
        return;
    }
    struct pl_stanza *res = pl_iq_result(st);
    struct pl_node *rq = add_el(res, pl_stanza_root(res), "query", NS_ADMIN);
    if (aff >= 0) {
        struct list_ud u = {res, rq, aff};
        pl_map_each(&r->affs, list_aff, &u);
    } else {
        for (size_t i = 0; i < r->nocc; i++) {
            struct muc_occupant *o = r->occ[i];
            if (o->role != role)
                continue;
            struct pl_node *e = add_el(res, rq, "item", NS_ADMIN);
            pl_node_set_attr(res, e, "role", pl__muc_role_name(o->role));
            pl_node_set_attr(res, e, "nick", o->nick);
            pl_node_set_attr(res, e, "affiliation",
                             pl__muc_aff_name(aff_of(s, r, o->jid)));
            pl_node_set_attr(res, e, "jid", o->jid->full);
        }
    }
    iq_result(st, res);
    pl_stanza_unref(res);
}

/* -------------------------------------------------------------- owner */

static void destroy_room(struct svc *s, struct muc_room *r, struct pl_node *d,
                         struct pl_stanza *st)
{
    const char *alt = d ? pl_node_attr(d, "jid") : NULL;
    struct pl_node *rn = d ? pl_node_child(d, "reason", NULL) : NULL;
    const char *reason = rn ? pl_node_text(st, rn, NULL) : NULL;
    for (size_t i = 0; i < r->nocc; i++) {
        struct muc_occupant *o = r->occ[i];
        struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
        struct pl_node *root = pl_stanza_root(p);
        pl_stanza_set_attr(p, "from", o->room_jid->full);
        pl_stanza_set_attr(p, "type", "unavailable");
        struct pl_node *x = add_el(p, root, "x", NS_USER);
        struct pl_node *item = add_el(p, x, "item", NS_USER);
        pl_node_set_attr(p, item, "affiliation", "none");
        pl_node_set_attr(p, item, "role", "none");
        struct pl_node *de = add_el(p, x, "destroy", NS_USER);
        if (alt)
            pl_node_set_attr(p, de, "jid", alt);
        if (reason)
            add_text_el(p, de, "reason", NS_USER, reason);
        add_status(p, x, 110);
        send_st(p, o->room_jid, o->jid);
        pl_stanza_unref(p);
    }
    if (r->cfg.persistent)
        save_room(s, r, 1, st);
    else if (st)
        iq_ok(st);
    room_free(s, r);
}

/* Tells occupants what changed in the configuration (§10.2.1). */
static void notify_config(struct muc_room *r, const struct muc_config *old)
{
    struct pl_stanza *m = pl_stanza_new("message", PL_NS_CLIENT);
    pl_stanza_set_attr(m, "from", r->jid->bare);
    pl_stanza_set_attr(m, "type", "groupchat");
    struct pl_node *x = add_el(m, pl_stanza_root(m), "x", NS_USER);
    add_status(m, x, 104);
    if (old->logging != r->cfg.logging)
        add_status(m, x, r->cfg.logging ? 170 : 171);
    if (old->whois_anyone != r->cfg.whois_anyone)
        add_status(m, x, r->cfg.whois_anyone ? 172 : 173);
    broadcast_message(r, m, r->jid);
    pl_stanza_unref(m);
}

static void owner_set(struct svc *s, struct muc_room *r, int actor_aff,
                      struct pl_event *ev, struct pl_node *q)
{
    struct pl_stanza *st = ev->stanza;
    if (actor_aff != MUC_AFF_OWNER) {
        pl_route_error(st, PL_EFORBIDDEN, NULL);
        return;
    }
    struct pl_node *d = pl_node_child(q, "destroy", NULL);
    if (d) {
        destroy_room(s, r, d, st);
        return;
    }
    struct pl_node *x = pl_node_child(q, "x", NS_DATA);
    if (!x) {
        pl_route_error(st, PL_EBAD_REQUEST, NULL);
        return;
    }
    const char *xt = pl_node_attr(x, "type");
    if (xt && strcmp(xt, "cancel") == 0) {
        if (r->locked) { /* §10.1.3: cancelling creation destroys */
            destroy_room(s, r, NULL, st);
            return;
        }
        iq_ok(st);
        return;
    }
    if (!xt || strcmp(xt, "submit") != 0) {
        pl_route_error(st, PL_EBAD_REQUEST, NULL);
        return;
    }
    const char *ft = pl__muc_form_type(st, x);
    if (ft && *ft && strcmp(ft, NS_MUC "#roomconfig") != 0) {
        pl_route_error(st, PL_EBAD_REQUEST, "Wrong FORM_TYPE.");
        return;
    }
    struct muc_config old;
    pl__muc_config_copy(&old, &r->cfg);
    const char *why = NULL;
    int rc = pl__muc_config_submit(r, st, x, s->max_occupants, s->history_max,
                                   &why);
    if (rc != PL_OK) {
        pl_route_error(st, rc, why);
        pl__muc_config_release(&old);
        return;
    }
    int was_locked = r->locked;
    r->locked = 0;
    pl__muc_history_trim(r->history, r->cfg.max_history);
    /* Roles follow the new configuration: owners/admins named in the
     * form become moderators, members-only drops non-members (§9.4). */
    for (size_t i = 0; i < r->nocc;) {
        struct muc_occupant *o = r->occ[i];
        int aff = aff_of(s, r, o->jid);
        if (r->cfg.members_only && aff < MUC_AFF_MEMBER) {
            remove_occupant(s, r, o, 322, NULL, NULL);
            continue;
        }
        int role = pl__muc_default_role(r, aff);
        if (aff >= MUC_AFF_ADMIN && o->role != MUC_ROLE_MODERATOR) {
            o->role = role;
            presence_changed(s, r, o, NULL, NULL);
        } else if (aff < MUC_AFF_ADMIN && o->role == MUC_ROLE_MODERATOR &&
                   role != MUC_ROLE_MODERATOR) {
            o->role = role;
            presence_changed(s, r, o, NULL, NULL);
        } else if (old.whois_anyone != r->cfg.whois_anyone) {
            cache_drop(o);
        }
        i++;
    }
    if (!was_locked)
        notify_config(r, &old);
    if (old.persistent && !r->cfg.persistent)
        save_room(s, r, 1, st);
    else
        changed(s, r, st);
    pl__muc_config_release(&old);
    maybe_reap(s, r);
}

/* ----------------------------------------------------- registration */

static void register_get(struct muc_room *r, struct pl_event *ev)
{
    struct pl_stanza *st = ev->stanza;
    if (pl__muc_aff_of(r, ev->from) == MUC_AFF_OUTCAST) {
        pl_route_error(st, PL_EFORBIDDEN, NULL);
        return;
    }
    struct pl_stanza *res = pl_iq_result(st);
    struct pl_node *q = add_el(res, pl_stanza_root(res), "query",
                               NS_IQ_REGISTER);
    const char *nick = pl__muc_nick_of(r, ev->from->bare);
    if (nick) {
        /* §7.10: already registered. */
        add_el(res, q, "registered", NS_IQ_REGISTER);
        add_text_el(res, q, "username", NS_IQ_REGISTER, nick);
    } else {
        add_text_el(res, q, "instructions", NS_IQ_REGISTER,
                    "Choose a nickname to reserve in this room.");
        struct pl_node *x = pl__muc_form_new(res, q, "form", NS_REGISTER_FORM);
        struct pl_node *f = pl__muc_form_field(res, x, "muc#register_roomnick",
                                               "text-single", "Nickname", NULL);
        add_el(res, f, "required", NS_DATA);
    }
    iq_result(st, res);
    pl_stanza_unref(res);
}

static void register_set(struct svc *s, struct muc_room *r, struct pl_event *ev,
                         struct pl_node *q)
{
    struct pl_stanza *st = ev->stanza;
    const char *bare = ev->from->bare;
    if (pl__muc_aff_of(r, ev->from) == MUC_AFF_OUTCAST) {
        pl_route_error(st, PL_EFORBIDDEN, NULL);
        return;
    }
    if (pl_node_child(q, "remove", NULL)) {
        pl__muc_nick_register(r, bare, NULL);
        if (pl__muc_aff_of(r, ev->from) == MUC_AFF_MEMBER)
            pl__muc_aff_set(r, bare, MUC_AFF_NONE, NULL);
        changed(s, r, st);
        return;
    }
    struct pl_node *x = pl_node_child(q, "x", NS_DATA);
    const char *xt = x ? pl_node_attr(x, "type") : NULL;
    if (xt && strcmp(xt, "cancel") == 0) {
        iq_ok(st);
        return;
    }
    const char *nick = x ? pl__muc_form_text(st, x, "muc#register_roomnick")
                         : NULL;
    struct pl_jid *nj = NULL;
    if (!nick || !*nick ||
        pl_jid_make(r->jid->local, r->jid->domain, nick, &nj) != PL_OK) {
        pl_route_error(st, PL_ENOT_ACCEPTABLE, "A nickname is required.");
        return;
    }
    if (pl__muc_nick_taken(r, nj->resource, ev->from)) {
        pl_jid_free(nj);
        pl_route_error(st, PL_ECONFLICT, NULL);
        return;
    }
    pl__muc_nick_register(r, bare, nj->resource);
    pl_jid_free(nj);
    changed(s, r, st);
}

/* --------------------------------------------------------------- disco */

static void add_feature(struct pl_stanza *st, struct pl_node *q,
                        const char *var)
{
    struct pl_node *f = add_el(st, q, "feature", PL_NS_DISCO_INFO);
    pl_node_set_attr(st, f, "var", var);
}

static void add_identity(struct pl_stanza *st, struct pl_node *q,
                         const char *cat, const char *type, const char *name)
{
    struct pl_node *i = add_el(st, q, "identity", PL_NS_DISCO_INFO);
    pl_node_set_attr(st, i, "category", cat);
    pl_node_set_attr(st, i, "type", type);
    if (name)
        pl_node_set_attr(st, i, "name", name);
}

static void room_info(struct muc_room *r, struct pl_event *ev,
                      struct pl_node *q_in)
{
    struct pl_stanza *st = ev->stanza;
    const char *node = pl_node_attr(q_in, "node");
    struct pl_stanza *res = pl_iq_result(st);
    struct pl_node *q = add_el(res, pl_stanza_root(res), "query",
                               PL_NS_DISCO_INFO);
    if (node) {
        pl_node_set_attr(res, q, "node", node);
        if (strcmp(node, "x-roomuser-item") != 0) {
            pl_stanza_unref(res);
            pl_route_error(st, PL_EITEM_NOT_FOUND, NULL);
            return;
        }
        /* §7.12: the user's reserved nick. */
        const char *nick = pl__muc_nick_of(r, ev->from->bare);
        if (nick)
            add_identity(res, q, "conference", "text", nick);
        iq_result(st, res);
        pl_stanza_unref(res);
        return;
    }
    const struct muc_config *c = &r->cfg;
    add_identity(res, q, "conference", "text", c->name ? c->name : r->local);
    add_feature(res, q, NS_MUC);
    add_feature(res, q, NS_MUC "#stable_id");
    add_feature(res, q, NS_MUC "#self-ping-optimization");
    add_feature(res, q, NS_OCCID);
    add_feature(res, q, NS_SID);
    if (c->logging) {
        add_feature(res, q, NS_MAM);
        add_feature(res, q, NS_MAM "#extended");
    }
    add_feature(res, q, NS_MUC "#request");
    add_feature(res, q, NS_IQ_REGISTER);
    add_feature(res, q, NS_VCARD);
    add_feature(res, q, PL_NS_DISCO_INFO);
    add_feature(res, q, PL_NS_DISCO_ITEMS);
    add_feature(res, q, NS_PING);
    add_feature(res, q, c->public_room ? "muc_public" : "muc_hidden");
    add_feature(res, q, c->persistent ? "muc_persistent" : "muc_temporary");
    add_feature(res, q, c->members_only ? "muc_membersonly" : "muc_open");
    add_feature(res, q, c->moderated ? "muc_moderated" : "muc_unmoderated");
    add_feature(res, q,
                c->password_protected ? "muc_passwordprotected"
                                      : "muc_unsecured");
    add_feature(res, q,
                c->whois_anyone ? "muc_nonanonymous" : "muc_semianonymous");
    pl__muc_roominfo_form(res, q, r);
    iq_result(st, res);
    pl_stanza_unref(res);
}

static void room_items(struct muc_room *r, struct pl_event *ev)
{
    struct pl_stanza *st = ev->stanza;
    struct pl_stanza *res = pl_iq_result(st);
    struct pl_node *q = add_el(res, pl_stanza_root(res), "query",
                               PL_NS_DISCO_ITEMS);
    /* §6.5: occupants are listed only to occupants of public rooms (and
     * nowhere in large rooms: a bounded list). */
    struct muc_occupant *me = pl__muc_occupant_by_real(r, ev->from->full);
    if (me && r->cfg.public_room) {
        for (size_t i = 0; i < r->nocc && i < 100; i++) {
            struct pl_node *it = add_el(res, q, "item", PL_NS_DISCO_ITEMS);
            pl_node_set_attr(res, it, "jid", r->occ[i]->room_jid->full);
        }
    }
    iq_result(st, res);
    pl_stanza_unref(res);
}

struct items_ud {
    struct pl_stanza *st;
    struct pl_node *q;
    int n;
};

static void list_room(const char *key, void *value, void *ud)
{
    (void)key;
    struct items_ud *u = ud;
    struct muc_room *r = value;
    if (!r->cfg.public_room || r->locked || u->n >= 1000)
        return;
    struct pl_node *it = add_el(u->st, u->q, "item", PL_NS_DISCO_ITEMS);
    pl_node_set_attr(u->st, it, "jid", r->jid->bare);
    pl_node_set_attr(u->st, it, "name", r->cfg.name ? r->cfg.name : r->local);
    u->n++;
}

/* The service itself (XEP-0045 §6.1, §6.2). */
static const char *const service_features[] =
    {NS_MUC,  NS_UNIQUE, NS_OCCID, NS_SID, PL_NS_DISCO_INFO, PL_NS_DISCO_ITEMS,
     NS_PING, NS_VCARD,  NULL};

static const struct pl_service service = {
    .label = "conference",
    .prefix = "muc",
    .category = "conference",
    .type = "text",
    .features = service_features,
};

static int service_iq(struct svc *s, struct pl_event *ev)
{
    struct pl_stanza *st = ev->stanza;
    const char *type = pl_stanza_attr(st, "type");
    struct pl_node *q = pl_stanza_payload(st);
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
        return PL_HANDLED;
    int get = strcmp(type, "get") == 0;
    if (!q)
        return PL_EBAD_REQUEST;
    if (get && strcmp(q->ns, PL_NS_DISCO_INFO) == 0) {
        if (pl_node_attr(q, "node"))
            return PL_EITEM_NOT_FOUND;
        struct pl_stanza *res = pl_service_info(&service, s->title, st, NULL);
        iq_result(st, res);
        pl_stanza_unref(res);
        return PL_HANDLED;
    }
    if (get && strcmp(q->ns, PL_NS_DISCO_ITEMS) == 0) {
        struct pl_node *rq;
        struct pl_stanza *res = pl_service_items(st, &rq);
        struct items_ud u = {res, rq, 0};
        pl_map_each(&s->rooms, list_room, &u);
        iq_result(st, res);
        pl_stanza_unref(res);
        return PL_HANDLED;
    }
    if (get && strcmp(q->ns, NS_UNIQUE) == 0) {
        /* §10.1.4: a name nobody uses. */
        unsigned char rnd[12];
        struct pl_str sec = pl_server_secret();
        char seed[64];
        /* sid_prefix is random per process: the nodes of a cluster share
         * the secret, and may count and tick alike. */
        snprintf(seed, sizeof(seed), "%s-%llu-%ld", s->sid_prefix, ++s->seq,
                 (long)time(NULL));
        struct pl_buf in = {0};
        pl_buf_append(&in, sec.p, sec.len);
        pl_buf_append_str(&in, seed);
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen;
        EVP_Digest(in.data, in.len, md, &mdlen, EVP_sha256(), NULL);
        pl_buf_reset(&in);
        memcpy(rnd, md, sizeof(rnd));
        char name[32];
        for (size_t i = 0; i < sizeof(rnd); i++)
            snprintf(name + 2 * i, 3, "%02x", rnd[i]);
        struct pl_stanza *res = pl_iq_result(st);
        add_text_el(res, pl_stanza_root(res), "unique", NS_UNIQUE, name);
        iq_result(st, res);
        pl_stanza_unref(res);
        return PL_HANDLED;
    }
    if (get && strcmp(q->ns, NS_PING) == 0) {
        iq_ok(st);
        return PL_HANDLED;
    }
    if (get && strcmp(q->ns, NS_VCARD) == 0 && strcmp(q->name, "vCard") == 0) {
        /* XEP-0486: avatars live on rooms; the service has none. */
        struct pl_stanza *res = pl_iq_result(st);
        add_el(res, pl_stanza_root(res), "vCard", NS_VCARD);
        iq_result(st, res);
        pl_stanza_unref(res);
        return PL_HANDLED;
    }
    return PL_ESERVICE_UNAVAILABLE;
}

/* ---------------------------------------------------------------- vCard */

static void update_avatar_hash(struct muc_room *r)
{
    r->avatar_hash[0] = '\0';
    if (!r->vcard)
        return;
    struct pl_stanza *v;
    if (pl_xml_parse_fragment(r->vcard, strlen(r->vcard), &v) != PL_OK)
        return;
    struct pl_node *photo = pl_node_child(pl_stanza_root(v), "PHOTO", NULL);
    struct pl_node *bin = photo ? pl_node_child(photo, "BINVAL", NULL) : NULL;
    if (bin) {
        /* XEP-0153 §2: the hash is of the image data, not of base64. */
        size_t n;
        const char *t = pl_node_text(v, bin, &n);
        struct pl_buf clean = {0}, raw = {0};
        for (size_t i = 0; i < n; i++)
            if (t[i] != ' ' && t[i] != '\n' && t[i] != '\r' && t[i] != '\t')
                pl_buf_append(&clean, &t[i], 1);
        if (pl_base64_decode(pl_buf_str(&clean), &raw) == PL_OK) {
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned int mdlen = 0;
            EVP_Digest(raw.data ? raw.data + raw.off : "", raw.len, md, &mdlen,
                       EVP_sha1(), NULL);
            for (unsigned i = 0; i < mdlen && i < 20; i++)
                snprintf(r->avatar_hash + 2 * i, 3, "%02x", md[i]);
        }
        pl_buf_reset(&clean);
        pl_buf_reset(&raw);
    }
    pl_stanza_unref(v);
}

/* Announces the avatar to occupants: presence from the room's bare JID
 * with the XEP-0153 hash (what clients such as Conversations read). */
static void announce_avatar(struct muc_room *r)
{
    struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
    pl_stanza_set_attr(p, "from", r->jid->bare);
    struct pl_node *x = add_el(p, pl_stanza_root(p), "x", NS_VCARD_UPDATE);
    struct pl_node *ph = add_el(p, x, "photo", NS_VCARD_UPDATE);
    if (r->avatar_hash[0])
        pl_node_add_text(p, ph, r->avatar_hash, strlen(r->avatar_hash));
    broadcast_message(r, p, r->jid);
    pl_stanza_unref(p);
}

static void vcard_iq(struct svc *s, struct muc_room *r, struct pl_event *ev,
                     struct pl_node *q, int get)
{
    struct pl_stanza *st = ev->stanza;
    if (get) {
        struct pl_stanza *res = pl_iq_result(st);
        struct pl_stanza *v = NULL;
        if (r->vcard &&
            pl_xml_parse_fragment(r->vcard, strlen(r->vcard), &v) == PL_OK)
            pl_node_add_copy(res, pl_stanza_root(res), pl_stanza_root(v));
        else
            add_el(res, pl_stanza_root(res), "vCard", NS_VCARD);
        pl_stanza_unref(v);
        iq_result(st, res);
        pl_stanza_unref(res);
        return;
    }
    if (aff_of(s, r, ev->from) != MUC_AFF_OWNER) {
        pl_route_error(st, PL_EFORBIDDEN, NULL);
        return;
    }
    struct pl_buf b = {0};
    pl_node_serialize(q, "", PL_NS_CLIENT, &b);
    if ((long)b.len > s->max_vcard_size) {
        pl_buf_reset(&b);
        pl_route_error(st, PL_ENOT_ACCEPTABLE, "The vCard is too large.");
        return;
    }
    pl_free(r->vcard);
    r->vcard = pl_node_first_elem(q) ? pl_strdup(pl_buf_cstr(&b)) : NULL;
    pl_buf_reset(&b);
    update_avatar_hash(r);
    announce_avatar(r);
    changed(s, r, st);
}

/* ----------------------------------------------------------------- IQ */

/* IQ to room/nick: XEP-0410 self-ping, else forwarded (§7.2.? "IQs to
 * occupants"), results travel back the same way. */
static void occupant_iq(struct svc *s, struct muc_room *r, struct pl_event *ev)
{
    (void)s;
    struct pl_stanza *st = ev->stanza;
    const char *type = pl_stanza_attr(st, "type");
    struct muc_occupant *o = pl__muc_occupant_by_real(r, ev->from->full);
    int request = type &&
                  (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
    if (!o) {
        if (request)
            pl_route_error(st, PL_ENOT_ACCEPTABLE,
                           "Only occupants may address occupants.");
        return;
    }
    struct muc_occupant *t = pl__muc_occupant_by_nick(r, ev->to->resource);
    if (!t) {
        if (request)
            pl_route_error(st, PL_EITEM_NOT_FOUND, NULL);
        return;
    }
    struct pl_node *q = pl_stanza_payload(st);
    if (request && t == o && q && strcmp(q->ns, NS_PING) == 0) {
        /* XEP-0410 §3: the room answers a self-ping of a joined client. */
        iq_ok(st);
        return;
    }
    struct pl_stanza *f = pl_stanza_copy(st);
    pl_stanza_set_attr(f, "from", o->room_jid->full);
    pl_stanza_set_attr(f, "to", t->jid->full);
    send_st(f, o->room_jid, t->jid);
    pl_stanza_unref(f);
}

/*
 * Who may read a room's archive (XEP-0313 §4, XEP-0045 §7.2): whoever
 * could see its messages.  Occupants and members (admins, owners and
 * service admins rank above) may; outcasts may not; in a members-only or
 * password-protected room nobody else may (they could not enter);
 * in an open room anyone may, as anyone could enter and read along.
 */
static int may_read_archive(const struct muc_room *r,
                            const struct muc_occupant *o, int aff)
{
    if (aff == MUC_AFF_OUTCAST)
        return PL_EFORBIDDEN;
    if (o || aff >= MUC_AFF_MEMBER)
        return PL_OK;
    if (r->cfg.members_only || r->cfg.password_protected)
        return PL_EFORBIDDEN;
    return PL_OK;
}

static int on_iq(struct pl_event *ev, void *state)
{
    struct svc *s = state;
    const struct pl_jid *to = ev->to;
    if (!ev->from)
        return PL_HANDLED;
    if (!to->local)
        return service_iq(s, ev);
    struct pl_stanza *st = ev->stanza;
    const char *type = pl_stanza_attr(st, "type");
    int get = type && strcmp(type, "get") == 0;
    int set = type && strcmp(type, "set") == 0;
    struct muc_room *r = pl_map_get(&s->rooms, to->local);
    if (!r) {
        if (!s->loaded && (get || set))
            return PL_ERESOURCE_CONSTRAINT;
        return get || set ? PL_EITEM_NOT_FOUND : PL_HANDLED;
    }
    if (to->resource) {
        occupant_iq(s, r, ev);
        return PL_HANDLED;
    }
    if (!get && !set)
        return PL_HANDLED;
    struct pl_node *q = pl_stanza_payload(st);
    if (!q)
        return PL_EBAD_REQUEST;
    struct muc_occupant *o = pl__muc_occupant_by_real(r, ev->from->full);
    int aff = aff_of(s, r, ev->from);
    const char *ns = q->ns;
    if (get && strcmp(ns, PL_NS_DISCO_INFO) == 0) {
        room_info(r, ev, q);
    } else if (get && strcmp(ns, PL_NS_DISCO_ITEMS) == 0) {
        room_items(r, ev);
    } else if (strcmp(ns, NS_ADMIN) == 0) {
        if (get)
            admin_get(s, r, o, aff, ev, q);
        else
            admin_set(s, r, o, aff, ev, q);
    } else if (strcmp(ns, NS_OWNER) == 0) {
        if (get) {
            if (aff != MUC_AFF_OWNER)
                return PL_EFORBIDDEN;
            struct pl_stanza *res = pl_iq_result(st);
            struct pl_node *rq = add_el(res, pl_stanza_root(res), "query",
                                        NS_OWNER);
            pl__muc_config_form(res, rq, r, s->max_occupants);
            iq_result(st, res);
            pl_stanza_unref(res);
        } else {
            owner_set(s, r, aff, ev, q);
        }
    } else if (strcmp(ns, NS_IQ_REGISTER) == 0) {
        if (get)
            register_get(r, ev);
        else
            register_set(s, r, ev, q);
    } else if (strcmp(ns, NS_VCARD) == 0 && strcmp(q->name, "vCard") == 0) {
        vcard_iq(s, r, ev, q, get);
    } else if (get && strcmp(ns, NS_PING) == 0) {
        iq_ok(st);
    } else if (strcmp(ns, NS_MAM) == 0 && strcmp(q->name, "query") == 0) {
        if (!r->cfg.logging)
            return PL_ESERVICE_UNAVAILABLE;
        int rc = may_read_archive(r, o, aff);
        if (rc != PL_OK)
            return rc;
        if (get)
            pl__muc_archive_form(ev);
        else
            pl__muc_archive_query(s->domain, r->local, ev, s->archive_max_page,
                                  s->archive_count_limit);
    } else {
        return PL_ESERVICE_UNAVAILABLE;
    }
    return PL_HANDLED;
}

/* ------------------------------------------------------- host hooks */

/* A session ended: it leaves every room it was in, also when it never sent
 * the unavailable presence (mod_presence sends one only for sessions that
 * were available). */
static int on_session_closed(struct pl_event *ev, void *state)
{
    struct svc *s = state;
    struct pl_session *ss = ev->session;
    if (!ss || !ss->jid)
        return PL_PASS;
    struct seats *st;
    while ((st = pl_map_get(&s->seats, ss->jid->full)) != NULL) {
        struct muc_room *r = st->v[st->n - 1];
        struct muc_occupant *o = pl__muc_occupant_by_real(r, ss->jid->full);
        if (o)
            leave(s, r, o, NULL);
        else
            seat_del(s, ss->jid->full, r);
    }
    return PL_PASS;
}

/* ---------------------------------------------------- in a cluster */

/*
 * doc/cluster.md, "Rooms": one node hosts a room at a time.  The cluster
 * fires "muc/room-load" on the node that took the room's lease: the room
 * is read again from the database (another node may have changed it, or
 * hosted it until it died), then "muc/room-loaded" says it is ready.  On
 * "muc/room-lost" (the lease is another node's, or this node stops) the
 * room leaves this node: its occupants get an unavailable self-presence
 * with status 332 (XEP-0045: removed because of a system shutdown) and
 * may join again, wherever the room is hosted next.  Nothing of this runs
 * without a cluster.
 */

/* Forgets r here (no archive or storage change): another node hosts it. */
static void room_drop(struct svc *s, struct muc_room *r, int announce)
{
    while (r->nocc) {
        struct muc_occupant *o = r->occ[r->nocc - 1];
        if (announce) {
            struct pl_stanza *self = build_presence(r, o, "unavailable",
                                                    aff_of(s, r, o->jid), 1,
                                                    (int[]){110, 332}, 2, NULL,
                                                    NULL, NULL);
            send_st(self, o->room_jid, o->jid);
            pl_stanza_unref(self);
        }
        occupant_gone(r, o);
    }
    pl_map_del(&s->rooms, r->local);
    s->nrooms--;
    pl__muc_room_free(r);
}

struct old_msg {
    char *xml;
    size_t len;
    long long ts; /* µs */
};

struct reload_job {
    struct pl_job base; /* host: service domain, user: room localpart */
    struct svc *s;
    struct pl_buf data;
    int rc;
    long hmax;         /* history_max: archived messages to read back */
    struct old_msg *v; /* the room archive's newest first */
    long n;
};

static int collect_old(const struct pl_archive_item *it, void *ud)
{
    struct reload_job *j = ud;
    if (j->n >= j->hmax)
        return 1;
    struct old_msg *m = &j->v[j->n++];
    m->xml = pl_strndup(it->xml, it->xml_len);
    m->len = it->xml_len;
    m->ts = it->ts;
    return j->n >= j->hmax;
}

static int reload_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct reload_job *j = arg;
    j->rc = d->kv_get(db, j->base.host, j->base.user, MUC_STORE, MUC_STORE_KEY,
                      &j->data);
    if (j->rc != PL_OK)
        return j->rc == PL_ENOT_FOUND ? PL_OK : j->rc;
    if (j->hmax <= 0)
        return PL_OK;
    /* The newest messages of the room archive, for the history the
     * room's new host replays to joiners (kept only if logging is on). */
    struct pl_archive_query q = {0};
    q.max = j->hmax;
    q.backward = 1;
    long count;
    j->v = pl_calloc((size_t)j->hmax, sizeof(*j->v));
    return d->archive_query(db, j->base.host, j->base.user, PL_ARCHIVE_ROOM, &q,
                            collect_old, j, &count);
}

/* The archived messages (newest first) become r's history again. */
static void history_from_archive(struct muc_room *r, struct reload_job *j)
{
    for (long i = j->n - 1; i >= 0 && r->cfg.logging && r->cfg.max_history;
         i--) {
        struct pl_stanza *h = NULL;
        if (pl_xml_parse_fragment(j->v[i].xml, j->v[i].len, &h) != PL_OK)
            continue;
        struct pl_node *root = pl_stanza_root(h);
        if (!pl_node_child(root, "body", NULL)) {
            pl_stanza_unref(h);
            continue;
        }
        time_t t = (time_t)(j->v[i].ts / 1000000);
        struct pl_node *d = add_el(h, root, "delay", NS_DELAY);
        char stamp[40];
        utc_stamp(t, stamp, sizeof(stamp));
        pl_node_set_attr(h, d, "from", r->jid->bare);
        pl_node_set_attr(h, d, "stamp", stamp);
        pl__muc_history_add(&r->history, r->cfg.max_history, h, t);
        pl_stanza_unref(h);
    }
}

static void reload_done(int rc, void *arg)
{
    struct reload_job *j = arg;
    struct svc *s = j->s;
    struct muc_room *old = pl_map_get(&s->rooms, j->base.user);
    if (rc != PL_OK)
        pl_log_error("mod_muc", "while reading room %s@%s: %s", j->base.user,
                     j->base.host, pl_strerror(rc));
    if (rc == PL_OK && !(old && old->nocc)) {
        /* What this node had (read at start) may be stale: the
         * database's copy wins; none there: the room is new. */
        if (old)
            room_drop(s, old, 0);
        struct pl_str d = pl_buf_str(&j->data);
        if (j->rc == PL_OK && d.len) {
            struct muc_room *r = pl__muc_store_load(j->base.user, s->domain,
                                                    &s->defaults, d.p, d.len);
            if (r) {
                r->service = s;
                update_avatar_hash(r);
                history_from_archive(r, j);
                pl_map_put(&s->rooms, r->local, r);
                s->nrooms++;
            } else {
                pl_log_error("mod_muc", "stored room %s@%s does not parse",
                             j->base.user, j->base.host);
            }
        }
    }
    for (long i = 0; i < j->n; i++)
        pl_free(j->v[i].xml);
    pl_free(j->v);
    struct pl_jid *jid = NULL;
    if (pl_jid_make(j->base.user, s->domain, NULL, &jid) == PL_OK) {
        struct pl_event ev =
            {"muc/room-loaded", s->host, NULL, NULL, NULL, jid, NULL};
        pl_hook_fire(&ev);
    }
    pl_jid_free(jid);
    pl_buf_reset(&j->data);
    pl_job_free(j);
}

/* This node took the room's lease: read it from the database. */
static int on_room_load(struct pl_event *ev, void *state)
{
    struct svc *s = state;
    if (!ev->to || !ev->to->local)
        return PL_PASS;
    struct muc_room *r = pl_map_get(&s->rooms, ev->to->local);
    if (r && r->nocc)
        return PL_PASS; /* served here all along */
    struct reload_job *j = pl_job_new(sizeof(*j), NULL, 0, s->domain,
                                      ev->to->local);
    j->s = s;
    j->hmax = s->history_max;
    pl_storage_submit(pl_server_loop(), reload_run, reload_done, j);
    return PL_HANDLED;
}

/* The room's lease is another node's (or this node stops). */
static int on_room_lost(struct pl_event *ev, void *state)
{
    struct svc *s = state;
    struct muc_room *r = ev->to && ev->to->local
                             ? pl_map_get(&s->rooms, ev->to->local)
                             : NULL;
    if (r)
        room_drop(s, r, 1);
    return PL_PASS;
}

/* ------------------------------------------------------------ loading */

struct loaded_room {
    char *local;
    char *data;
    size_t len;
};

struct load_job {
    struct svc *s;
    char *domain;
    struct loaded_room *v;
    size_t n;
};

static int collect_room(const char *user, const void *data, size_t len,
                        void *ud)
{
    struct load_job *j = ud;
    j->v = pl_realloc(j->v, (j->n + 1) * sizeof(*j->v));
    j->v[j->n].local = pl_strdup(user);
    j->v[j->n].data = pl_strndup(data, len);
    j->v[j->n].len = len;
    j->n++;
    return 0;
}

static int load_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct load_job *j = arg;
    return d->kv_scan(db, j->domain, MUC_STORE, MUC_STORE_KEY, collect_room, j);
}

static void load_done(int rc, void *arg)
{
    struct load_job *j = arg;
    struct svc *s = j->s;
    if (rc != PL_OK)
        pl_log_error("mod_muc", "while loading rooms of %s: %s", j->domain,
                     pl_strerror(rc));
    size_t ok = 0;
    for (size_t i = 0; i < j->n; i++) {
        struct loaded_room *l = &j->v[i];
        if (rc == PL_OK && !pl_map_get(&s->rooms, l->local)) {
            struct muc_room *r = pl__muc_store_load(l->local, s->domain,
                                                    &s->defaults, l->data,
                                                    l->len);
            if (r) {
                r->service = s;
                update_avatar_hash(r);
                pl_map_put(&s->rooms, r->local, r);
                s->nrooms++;
                ok++;
            } else {
                pl_log_error("mod_muc", "stored room %s@%s does not parse",
                             l->local, j->domain);
            }
        }
        pl_free(l->local);
        pl_free(l->data);
    }
    if (rc == PL_OK)
        pl_log_info("mod_muc", "%s: %zu persistent rooms loaded", j->domain,
                    ok);
    s->loaded = 1;
    pl_free(j->v);
    pl_free(j->domain);
    pl_free(j);
}

/* ---------------------------------------------------------- lifetime */

/* ---- archive expiry: every interval, items older than expire_after go,
 * in batches ---- */

#define EXPIRE_BATCH 10000

static void expire_start(struct svc *s);

static void expire_done(long removed, void *ud)
{
    struct svc *s = ud;
    s->expiring = 0;
    if (removed > 0)
        pl_log_info("mod_muc", "expired %ld archived room messages on %s",
                    removed, s->domain);
    if (removed >= EXPIRE_BATCH)
        expire_start(s);
}

static void expire_start(struct svc *s)
{
    if (s->expiring || !s->archive_expire_after)
        return;
    s->expiring = 1;
    pl__muc_archive_expire(s->domain,
                           pl__muc_archive_now() -
                               s->archive_expire_after * 1000000LL,
                           EXPIRE_BATCH, expire_done, s);
}

static void on_expire_timer(struct pl_timer *t)
{
    struct svc *s = t->data;
    expire_start(s);
    pl_timer_start(pl_server_loop(), &s->expire_timer,
                   (uint64_t)s->archive_expire_interval * 1000);
}

static int load(struct pl_host *h, void *state)
{
    struct svc *s = state;
    s->host = h;
    int rc = pl_service_claim(h, &service, s->domain_opt, s->title, &s->domain);
    if (rc != PL_OK)
        return rc;
    pl__muc_config_default(&s->defaults);
    s->defaults.max_history = s->history_default;
    s->defaults.persistent = s->default_persistent;
    s->defaults.public_room = s->default_public;
    struct pl_str sec = pl_server_secret();
    for (size_t i = 0; i < sec.len && i < 32; i++)
        snprintf(s->key + 2 * i, 3, "%02x", (unsigned char)sec.p[i]);
    unsigned long long rnd = 0;
    ssize_t got = getrandom(&rnd, sizeof(rnd), 0);
    pl_assert(got == (ssize_t)sizeof(rnd));
    snprintf(s->sid_prefix, sizeof(s->sid_prefix), "%llx", rnd);
    pl_timer_init(&s->expire_timer, on_expire_timer, s);
    return PL_OK;
}

static int ready(struct pl_host *h, void *state)
{
    (void)h;
    struct svc *s = state;
    struct load_job *j = pl_calloc(1, sizeof(*j));
    j->s = s;
    j->domain = pl_strdup(s->domain);
    pl_storage_submit(pl_server_loop(), load_run, load_done, j);
    if (s->archive_expire_after)
        pl_timer_start(pl_server_loop(), &s->expire_timer,
                       (uint64_t)(s->archive_expire_interval < 5
                                      ? s->archive_expire_interval
                                      : 5) *
                           1000);
    return PL_OK;
}

static void free_room(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    struct muc_room *r = value;
    while (r->nocc)
        occupant_gone(r, r->occ[r->nocc - 1]);
    pl__muc_room_free(r);
}

static void unload(struct pl_host *h, void *state)
{
    (void)h;
    struct svc *s = state;
    pl_timer_stop(&s->expire_timer);
    pl_map_each(&s->rooms, free_room, NULL);
    pl_map_clear(&s->rooms);
    pl_map_clear(&s->seats); /* emptied by free_room */
    pl__muc_config_release(&s->defaults);
    pl_free(s->domain);
}

static const char *const creation_choices[] = {"anyone", "local", "admins",
                                               NULL};

static const struct pl_option options[] = {
    {"domain", PL_OPT_STRING, "\"\"", 0, 0, NULL,
     "Service domain; empty means conference.<host>.",
     offsetof(struct svc, domain_opt)},
    {"name", PL_OPT_STRING, "\"Chat rooms\"", 0, 0, NULL,
     "Service name shown in service discovery.", offsetof(struct svc, title)},
    {"creation", PL_OPT_ENUM, "\"local\"", 0, 0, creation_choices,
     "Who may create rooms: anyone, local (users of this host) or admins.",
     offsetof(struct svc, creation)},
    {"admins", PL_OPT_STRLIST, "[]", 0, 0, NULL,
     "Bare JIDs that own every room of the service.",
     offsetof(struct svc, admins)},
    {"max_occupants", PL_OPT_INT, "20000", 1, 1000000, NULL,
     "Most occupants of one room (owners and admins may exceed it).",
     offsetof(struct svc, max_occupants)},
    {"max_rooms", PL_OPT_INT, "100000", 1, 10000000, NULL,
     "Most rooms the service holds at once.", offsetof(struct svc, max_rooms)},
    {"history_default", PL_OPT_INT, "20", 0, 1000, NULL,
     "Messages of history new rooms keep and send on entering.",
     offsetof(struct svc, history_default)},
    {"history_max", PL_OPT_INT, "100", 0, 1000, NULL,
     "Highest history length an owner may configure.",
     offsetof(struct svc, history_max)},
    {"lock_new_rooms", PL_OPT_BOOL, "true", 0, 0, NULL,
     "New rooms stay locked until their owner configures them.",
     offsetof(struct svc, lock_new_rooms)},
    {"default_persistent", PL_OPT_BOOL, "false", 0, 0, NULL,
     "New rooms are persistent.", offsetof(struct svc, default_persistent)},
    {"default_public", PL_OPT_BOOL, "true", 0, 0, NULL,
     "New rooms are listed in the directory.",
     offsetof(struct svc, default_public)},
    {"max_vcard_size", PL_OPT_INT, "65536", 256, 16777216, NULL,
     "Bytes of a room's vCard (avatar included).",
     offsetof(struct svc, max_vcard_size)},
    {"max_subject", PL_OPT_INT, "4096", 1, 1048576, NULL,
     "Bytes of a room subject.", offsetof(struct svc, max_subject)},
    {"archive_max_page", PL_OPT_INT, "100", 1, 10000, NULL,
     "Room archive results per query page at most (RSM <max/> is capped).",
     offsetof(struct svc, archive_max_page)},
    {"archive_max_items", PL_OPT_INT, "0", 0, 1000000000, NULL,
     "Archived messages kept per room (0: no limit); the oldest go.",
     offsetof(struct svc, archive_max_items)},
    {"archive_count_limit", PL_OPT_INT, "1000", 0, 100000000, NULL,
     "Filtered room archive queries count results up to this many for "
     "RSM <count/>; beyond it <count/> is left out.",
     offsetof(struct svc, archive_count_limit)},
    {"archive_expire_after", PL_OPT_INT, "0", 0, 100L * 365 * 86400, NULL,
     "Seconds an archived room message is kept (0: forever).",
     offsetof(struct svc, archive_expire_after)},
    {"archive_expire_interval", PL_OPT_INT, "3600", 1, 86400 * 7, NULL,
     "Seconds between two room archive expiry runs.",
     offsetof(struct svc, archive_expire_interval)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"muc/presence", on_presence, 0},
    {"muc/message", on_message, 0},
    {"muc/iq", on_iq, 0},
    {"session/closed", on_session_closed, 0},
    /* Another node's session that left (doc/cluster.md): out of the rooms
     * hosted here too. */
    {"session/dropped", on_session_closed, 0},
    {"muc/room-load", on_room_load, 0},
    {"muc/room-lost", on_room_lost, 0},
    {0},
};

const struct pl_module pl_mod_muc = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "muc",
    .summary = "multi-user chat rooms on conference.<host>",
    .xeps = "XEP-0045, XEP-0249, XEP-0313, XEP-0359, XEP-0410, XEP-0421, "
            "XEP-0153",
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct svc),
    .load = load,
    .ready = ready,
    .unload = unload,
};
