/*
 * subscribe.c - SUBSCRIBE/NOTIFY for the presence event package (RFC 6665,
 * RFC 3856): a SIP watcher follows the presence of a user of ours, XMPP or
 * SIP alike, in PIDF (pidf.h).  API: sip_int.h ("Presence
 * subscriptions").
 *
 * A SUBSCRIBE is authenticated as PUBLISH and MESSAGE are (trusted on the
 * connection of the watcher's registration, else 407); the From is the
 * watcher, the Request-URI the presentity (a user of one of our hosts,
 * 404 otherwise).  Authorization, sip.presence_authorization:
 *   "roster" (default): the watcher's roster item for the presentity has
 *   a subscription 'to' or 'both' (RFC 6121), or watcher and presentity
 *   are the same account: active, 200.  Otherwise the SUBSCRIBE is an
 *   RFC 6121 subscription request: <presence type='subscribe'/> is routed
 *   from the watcher's account to the presentity (who answers it from any
 *   client of the account), the answer is 202 and the dialog pending (a
 *   NOTIFY with Subscription-State: pending and no body) until
 *   'subscribed' comes back to the watcher's account (then active) or
 *   'unsubscribed' (terminated;reason=rejected).
 *   "open": every authenticated watcher of the presentity's host is
 *   accepted (Kamailio's force_active).
 * An active dialog gets a NOTIFY with the PIDF of the presentity's
 * available sessions now (pl_pidf_write, one tuple per resource), then
 * one after each change ("presence/broadcast", "session/closed"),
 * coalesced: at most one per dialog per sip.presence_notify_interval ms,
 * always the latest state (rebuilt from the sessions when sent).
 *
 * Dialogs (RFC 6665 §4.1, §4.2): the SUBSCRIBE's Call-ID, its From tag and
 * our To tag; a refresh or an un-SUBSCRIBE comes in the dialog (481 for
 * an unknown one).  Expires: the header, else 3600 (RFC 3856 §6.4), cut
 * to sip.max_expires, 423 below sip.min_expires; Expires: 0 (and an
 * expiry) ends the dialog with a last NOTIFY, Subscription-State:
 * terminated;reason=timeout (RFC 6665 §4.2.2, §4.4.1).  NOTIFYs go to the
 * SUBSCRIBE's Contact (the remote target) with our own CSeq counting up;
 * a NOTIFY answered 481 or not at all (Timer F) ends the dialog (§4.1.3),
 * and so does the end of the watcher's registration that subscribed.
 *
 * Proxies (RFC 3261 §12.1.1, §12.2.1.1): the dialog's route set is the
 * SUBSCRIBE's Record-Route URIs in order, and the 200/202 copies its
 * Record-Route fields.  NOTIFYs carry it as Route fields (a loose router
 * first: Request-URI the Contact; a strict one: Request-URI the first
 * route, the Contact last in Route) and go to the first route's address
 * (route.c: over the SUBSCRIBE's connection, or over UDP to its source at
 * the route's port), else over the flow the SUBSCRIBE came in on.  The
 * route set is fixed when the dialog is made (§12.2: a refresh does not
 * change it).  Subscriptions live in memory only.
 *
 * Extending: another event package is a row of the Event check and its
 * own body writer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "map_addr.h"
#include "pidf.h"
#include "resources.h"
#include "modules/roster/roster.h"
#include "router.h"
#include "server.h"
#include "sip_int.h"
#include "stats.h"
#include "storage.h"

#define DEFAULT_EXPIRES 3600 /* RFC 3856 §6.4 */

enum {
    SUB_PENDING = 1,
    SUB_ACTIVE
};

/* The indexes of the dialogs besides their key: each a map from a key to
 * the first of a doubly linked list through sub.link[i]. */
enum {
    BY_PRESENTITY, /* the presentity's bare JID (whom to notify) */
    BY_BINDING,    /* the watcher's binding (session id in hex), if any */
    N_INDEX
};

static struct pl_map subs; /* key -> struct sub */
static struct pl_map index_map[N_INDEX];

struct sub {
    char *key;                  /* "call-id\nfrom-tag\nto-tag" (the map's) */
    struct pl_jid *who;         /* the presentity (bare) */
    char *watcher;              /* the watcher's bare JID */
    char *call_id;              /* the dialog */
    char *remote_tag;           /* the SUBSCRIBE's From tag */
    char local_tag[17];         /* our To tag */
    char *remote_uri;           /* the watcher's From URI (NOTIFY To) */
    char *local_uri;            /* the presentity's URI (NOTIFY From) */
    char *target;               /* the SUBSCRIBE's Contact (remote target) */
    struct sip_route_set route; /* from its Record-Route (§12.1.1) */
    struct sip_flow flow;       /* where NOTIFYs go: the first hop */
    uint64_t sid;               /* the watcher's binding, 0: none */
    uint32_t cseq;              /* our last NOTIFY's */
    int state;                  /* SUB_* */
    uint64_t expires_at;        /* loop time (ms) */
    uint64_t last_notify;       /* loop time of the last NOTIFY, 0: none */
    uint64_t tx;                /* the NOTIFY in flight, 0: none */
    unsigned notifies;          /* sent */
    struct pl_timer expiry, notify;
    struct {
        struct sub *prev, *next;
    } link[N_INDEX]; /* in each index's list */
};

/* s's key in index i (buf holds it when it has to be made), NULL when s
 * is not in that index. */
static const char *index_key(const struct sub *s, int i, char buf[20])
{
    if (i == BY_PRESENTITY)
        return s->who->bare;
    if (!s->sid)
        return NULL;
    snprintf(buf, 20, "%llx", (unsigned long long)s->sid);
    return buf;
}

static void index_add(struct sub *s)
{
    char buf[20];
    for (int i = 0; i < N_INDEX; i++) {
        const char *k = index_key(s, i, buf);
        if (!k)
            continue;
        struct sub *first = pl_map_get(&index_map[i], k);
        s->link[i].prev = NULL;
        s->link[i].next = first;
        if (first)
            first->link[i].prev = s;
        pl_map_put(&index_map[i], k, s);
    }
}

static void index_del(struct sub *s)
{
    char buf[20];
    for (int i = 0; i < N_INDEX; i++) {
        const char *k = index_key(s, i, buf);
        if (!k)
            continue;
        struct sub *prev = s->link[i].prev, *next = s->link[i].next;
        if (next)
            next->link[i].prev = prev;
        if (prev)
            prev->link[i].next = next;
        else if (next)
            pl_map_put(&index_map[i], k, next);
        else
            pl_map_del(&index_map[i], k);
    }
}

/* The first dialog of key in index i; the next is s->link[i].next. */
static struct sub *index_first(int i, const char *key)
{
    return pl_map_get(&index_map[i], key);
}

static int stopping;

static uint64_t now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

static char *dialog_key(const char *call_id, const char *rtag, const char *ltag)
{
    size_t n = strlen(call_id) + strlen(rtag) + strlen(ltag) + 3;
    char *k = pl_malloc(n);
    snprintf(k, n, "%s\n%s\n%s", call_id, rtag, ltag);
    return k;
}

/* ---- the presentity's state ---- */

#define MAX_TUPLES 32

/* The PIDF of bare's available sessions into out. */
static int write_state(const struct pl_jid *who, struct pl_buf *out)
{
    struct pl_pidf st[MAX_TUPLES];
    struct pl_pidf_tuple t[MAX_TUPLES];
    size_t n = 0;
    for (struct pl_session *s = pl_session_first(who->bare);
         s && n < MAX_TUPLES; s = s->next_res) {
        if (!s->available || !s->presence || !s->jid)
            continue;
        memset(&st[n], 0, sizeof(st[n]));
        if (pl_pidf_from_presence(s->presence, &st[n]) != PL_OK ||
            st[n].basic != PL_PIDF_OPEN) {
            pl_pidf_clear(&st[n]);
            continue;
        }
        t[n].jid = s->jid;
        t[n].state = &st[n];
        n++;
    }
    int rc = pl_pidf_write(who, t, n, out);
    for (size_t i = 0; i < n; i++)
        pl_pidf_clear(&st[i]);
    return rc;
}

/* ---- dialogs ---- */

static void sub_free(struct sub *s)
{
    pl_timer_stop(&s->expiry);
    pl_timer_stop(&s->notify);
    if (s->tx)
        pl__sip_request_abandon(s->tx);
    pl_map_del(&subs, s->key);
    index_del(s);
    pl_stat_dec(sip_subscriptions);
    pl_free(s->key);
    pl_jid_free(s->who);
    pl_free(s->watcher);
    pl_free(s->call_id);
    pl_free(s->remote_tag);
    pl_free(s->remote_uri);
    pl_free(s->local_uri);
    pl_free(s->target);
    pl__sip_routes_free(&s->route);
    pl_free(s);
}

static void notify_done(void *arg, int code, osip_message_t *resp,
                        unsigned retransmissions);

/* Sends a NOTIFY now; terminated: the last one (reason). */
static void send_notify(struct sub *s, const char *reason)
{
    osip_message_t *req = NULL;
    char *from = NULL, *to = NULL;
    size_t n = strlen(s->local_uri) + 4;
    from = pl_malloc(n);
    snprintf(from, n, "<%s>", s->local_uri);
    n = strlen(s->remote_uri) + 4;
    to = pl_malloc(n);
    snprintf(to, n, "<%s>", s->remote_uri);
    int rc = pl__sip_request_new("NOTIFY", s->target, from, to, &req);
    pl_free(from);
    pl_free(to);
    if (rc == PL_OK && pl__sip_routes_apply(req, &s->route, s->target)) {
        osip_message_free(req);
        rc = PL_EINVAL;
    }
    if (rc != PL_OK)
        return;
    /* The dialog's identifiers instead of fresh ones. */
    osip_generic_param_t *tag = NULL;
    osip_from_param_get_byname(req->from, "tag", &tag);
    if (tag) {
        osip_free(tag->gvalue);
        tag->gvalue = osip_strdup(s->local_tag);
    }
    osip_to_set_tag(req->to, osip_strdup(s->remote_tag));
    osip_call_id_free(req->call_id);
    req->call_id = NULL;
    osip_message_set_call_id(req, s->call_id);
    char num[16];
    snprintf(num, sizeof(num), "%u", ++s->cseq);
    osip_free(req->cseq->number);
    req->cseq->number = osip_strdup(num);
    osip_message_set_header(req, "Event", "presence");
    char ss[64];
    uint64_t now = now_ms();
    unsigned long left = s->expires_at > now
                             ? (unsigned long)((s->expires_at - now + 999) /
                                               1000)
                             : 0;
    if (reason)
        snprintf(ss, sizeof(ss), "terminated;reason=%s", reason);
    else
        snprintf(ss, sizeof(ss), "%s;expires=%lu",
                 s->state == SUB_ACTIVE ? "active" : "pending", left);
    osip_message_set_header(req, "Subscription-State", ss);
    char sent_by[300], contact[400];
    pl__sip_flow_sent_by(&s->flow, sent_by, sizeof(sent_by));
    snprintf(contact, sizeof(contact), "<sip:%s%s%s>",
             s->who->local ? s->who->local : "", s->who->local ? "@" : "",
             sent_by);
    osip_message_set_header(req, "Contact", contact);
    if (s->state == SUB_ACTIVE && (!reason || strcmp(reason, "rejected"))) {
        struct pl_buf body = {0};
        if (write_state(s->who, &body) == PL_OK) {
            osip_message_set_content_type(req, PL_PIDF_CONTENT_TYPE);
            osip_message_set_body(req, body.data + body.off, body.len);
        }
        pl_buf_reset(&body);
    }
    s->last_notify = now;
    s->notifies++;
    if (s->tx)
        pl__sip_request_abandon(s->tx);
    s->tx = 0;
    uint64_t id = 0;
    /* The last NOTIFY outlives s: its answer concerns no one. */
    if (pl__sip_request_send(&s->flow, req, notify_done, reason ? NULL : s,
                             &id) == PL_OK) {
        pl_stat_inc(sip_notifies);
        if (!reason)
            s->tx = id;
    }
}

/* Ends s with a last NOTIFY (reason), or silently (reason NULL). */
static void sub_end(struct sub *s, const char *reason)
{
    pl_log_debug("sip", "subscription of %s to %s ends: %s", s->watcher,
                 s->who->bare, reason ? reason : "silently");
    if (reason)
        send_notify(s, reason);
    sub_free(s);
}

static void notify_done(void *arg, int code, osip_message_t *resp,
                        unsigned retransmissions)
{
    (void)resp;
    (void)retransmissions;
    struct sub *s = arg; /* alive: sub_free abandons its NOTIFY */
    if (!s)
        return;
    s->tx = 0;
    if (code >= 300)
        sub_end(s, NULL); /* RFC 6665 §4.2.2: 481, Timer F, failures */
}

static void on_expiry(struct pl_timer *t)
{
    sub_end(t->data, "timeout");
}

static void on_notify_timer(struct pl_timer *t)
{
    struct sub *s = t->data;
    send_notify(s, NULL);
}

/* The presentity's state changed: a NOTIFY soon, at most one per
 * interval. */
static void changed(struct sub *s)
{
    if (s->state != SUB_ACTIVE || pl_timer_active(&s->notify))
        return;
    uint64_t iv = (uint64_t)pl__sip_settings()->presence_notify_interval;
    uint64_t now = now_ms();
    uint64_t at = s->last_notify + iv;
    pl_timer_start(pl_server_loop(), &s->notify, at > now ? at - now : 0);
}

static void changed_all(const char *bare)
{
    for (struct sub *s = index_first(BY_PRESENTITY, bare); s;
         s = s->link[BY_PRESENTITY].next)
        changed(s);
}

/* ---- hooks ---- */

static int on_broadcast(struct pl_event *ev, void *state)
{
    (void)state;
    if (ev->from)
        changed_all(ev->from->bare);
    return PL_PASS;
}

static int on_closed(struct pl_event *ev, void *state)
{
    (void)state;
    if (!ev->session || !ev->session->jid)
        return PL_PASS;
    changed_all(ev->session->jid->bare);
    /* A watcher's registration going away ends its subscriptions. */
    char key[20];
    snprintf(key, sizeof(key), "%llx", (unsigned long long)ev->session->id);
    struct sub *s = index_first(BY_BINDING, key);
    while (s) {
        struct sub *next = s->link[BY_BINDING].next;
        sub_end(s, NULL);
        s = next;
    }
    return PL_PASS;
}

/* 'subscribed' / 'unsubscribed' from a presentity to a watcher's
 * account: a pending dialog becomes active or ends. */
static int on_inbound(struct pl_event *ev, void *state)
{
    (void)state;
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!type || !ev->from || !ev->to ||
        (strcmp(type, "subscribed") && strcmp(type, "unsubscribed")))
        return PL_PASS;
    struct {
        struct sub **v; /* the dialogs of this watcher and presentity */
        size_t n, cap;  /* count and room */
    } cc = {NULL, 0, 0};
    for (struct sub *s = index_first(BY_PRESENTITY, ev->from->bare); s;
         s = s->link[BY_PRESENTITY].next)
        if (strcmp(s->watcher, ev->to->bare) == 0) {
            if (cc.n == cc.cap) {
                cc.cap = cc.cap ? cc.cap * 2 : 8;
                cc.v = pl_realloc(cc.v, cc.cap * sizeof(*cc.v));
            }
            cc.v[cc.n++] = s;
        }
    for (size_t i = 0; i < cc.n; i++) {
        struct sub *s = cc.v[i];
        if (strcmp(type, "unsubscribed") == 0) {
            sub_end(s, "rejected");
        } else if (s->state == SUB_PENDING) {
            s->state = SUB_ACTIVE;
            pl_timer_stop(&s->notify);
            send_notify(s, NULL);
        }
    }
    pl_free(cc.v);
    return PL_PASS;
}

/* ---- SUBSCRIBE ---- */

struct sub_ctx {
    struct pl_jid *who;     /* the presentity */
    struct pl_jid *watcher; /* the From's bare JID */
    uint64_t txn;           /* the transaction, while asking storage */
    uint64_t sid;           /* the watcher's binding on this flow */
    long expires;           /* the subscription's duration, seconds */
};

static void ctx_free(struct sub_ctx *c)
{
    pl_jid_free(c->who);
    pl_jid_free(c->watcher);
    pl_free(c);
}

/* 200 or 202 with Expires and our Contact; dialog: it makes the dialog,
 * so it copies the request's Record-Route fields (§12.1.1). */
static void reply_sub(struct sip_txn *t, int code, long expires, int dialog)
{
    char e[24];
    snprintf(e, sizeof(e), "%ld", expires);
    char sent_by[300], contact[400];
    pl__sip_flow_sent_by(pl__sip_txn_flow(t), sent_by, sizeof(sent_by));
    snprintf(contact, sizeof(contact), "<sip:%s>", sent_by);
    osip_message_t *req = pl__sip_txn_request(t);
    osip_message_t *r = pl__sip_response_new(t, code, NULL);
    if (!r)
        return;
    osip_message_set_header(r, "Expires", e);
    osip_message_set_header(r, "Contact", contact);
    for (int i = 0; dialog && req && i < osip_list_size(&req->record_routes);
         i++) {
        osip_record_route_t *rr = osip_list_get(&req->record_routes, i), *c;
        if (osip_record_route_clone(rr, &c) == 0)
            osip_list_add(&r->record_routes, c, -1);
    }
    pl__sip_reply_msg(t, r);
}

/* A new dialog, authorized (active) or not (pending). */
static void create(struct sip_txn *t, struct sub_ctx *c, int active)
{
    osip_message_t *req = pl__sip_txn_request(t);
    long expires = c->expires;
    osip_contact_t *ct = osip_list_get(&req->contacts, 0);
    char *target = ct ? pl__sip_uri_str(ct->url) : NULL;
    char *call_id = NULL;
    osip_call_id_to_str(req->call_id, &call_id);
    const char *rtag = pl__sip_from_tag(req);
    if (!target || !call_id || !rtag) {
        pl_free(target);
        osip_free(call_id);
        pl__sip_reply(t, 400, "Missing Contact Or Tag", NULL);
        return;
    }
    struct sip_route_set route;
    if (pl__sip_routes_from_rr(req, &route) != PL_OK) {
        pl_free(target);
        osip_free(call_id);
        pl__sip_reply(t, 400, "Malformed Record-Route", NULL);
        return;
    }
    struct sub *s = pl_calloc(1, sizeof(*s));
    snprintf(s->local_tag, sizeof(s->local_tag), "%s", t->tag);
    s->key = dialog_key(call_id, rtag, s->local_tag);
    s->who = pl_jid_dup(c->who);
    s->watcher = pl_strdup(c->watcher->bare);
    s->call_id = pl_strdup(call_id);
    osip_free(call_id);
    s->remote_tag = pl_strdup(rtag);
    s->remote_uri = pl__sip_uri_str(req->from->url);
    s->local_uri = pl__sip_uri_str(req->req_uri);
    s->target = target;
    s->route = route;
    pl__sip_route_flow(pl__sip_txn_flow(t), &s->route, &s->flow);
    s->sid = c->sid;
    s->state = active ? SUB_ACTIVE : SUB_PENDING;
    s->expires_at = now_ms() + (uint64_t)expires * 1000;
    pl_timer_init(&s->expiry, on_expiry, s);
    pl_timer_init(&s->notify, on_notify_timer, s);
    if (pl_map_get(&subs, s->key)) {
        /* The same SUBSCRIBE again in a new transaction. */
        pl__sip_reply(t, 482, NULL, NULL);
        pl_free(s->key);
        s->key = NULL;
        pl_jid_free(s->who);
        pl_free(s->watcher);
        pl_free(s->call_id);
        pl_free(s->remote_tag);
        pl_free(s->remote_uri);
        pl_free(s->local_uri);
        pl_free(s->target);
        pl__sip_routes_free(&s->route);
        pl_free(s);
        return;
    }
    pl_map_put(&subs, s->key, s);
    index_add(s);
    pl_stat_inc(sip_subscriptions);
    reply_sub(t, active ? 200 : 202, expires, 1);
    pl_log_debug("sip", "subscription of %s to %s: %s", s->watcher,
                 s->who->bare, active ? "active" : "pending");
    if (expires == 0) {
        /* A fetch (RFC 6665 §4.4.3): one NOTIFY, terminated. */
        sub_end(s, "timeout");
        return;
    }
    pl_timer_start(pl_server_loop(), &s->expiry, (uint64_t)expires * 1000);
    send_notify(s, NULL);
    if (!active) {
        /* RFC 6121 §3.1.1: a subscription request from the account. */
        struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
        pl_stanza_set_attr(p, "type", "subscribe");
        pl_stanza_set_attr(p, "to", c->who->bare);
        pl_stanza_set_attr(p, "from", c->watcher->bare);
        struct pl_session *origin = c->sid ? pl_session_by_id(c->sid) : NULL;
        pl_route(p, c->watcher, c->who, origin);
        pl_stanza_unref(p);
    }
}

struct roster_job {
    struct pl_job base;       /* the watcher's account */
    char *contact;            /* the presentity */
    struct sub_ctx *c;        /* the request */
    struct pl_roster_item it; /* what storage says */
    int found;
};

static int roster_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct roster_job *j = arg;
    int rc = pl_roster_load_item(d, db, j->base.host, j->base.user, j->contact,
                                 &j->it);
    j->found = rc == PL_OK;
    return rc == PL_ENOT_FOUND ? PL_OK : rc;
}

static void roster_done(int rc, void *arg)
{
    struct roster_job *j = arg;
    struct sip_txn *t = pl__sip_txn_find(j->c->txn);
    if (t && !stopping) {
        if (rc != PL_OK)
            pl__sip_reply(t, 500, NULL, NULL);
        else
            create(t, j->c, j->found && pl_roster_has_to(&j->it));
    }
    if (j->found)
        pl_roster_item_free(&j->it);
    ctx_free(j->c);
    pl_free(j->contact);
    pl_job_free(j);
}

/* The request is from watcher (authenticated). */
static void proceed(struct sip_txn *t, struct sub_ctx *c)
{
    c->expires = pl__sip_expires(t, DEFAULT_EXPIRES);
    if (c->expires < 0) {
        ctx_free(c);
        return;
    }
    if (pl__sip_settings()->presence_authorization == SIP_PRESENCE_OPEN ||
        strcmp(c->watcher->bare, c->who->bare) == 0) {
        create(t, c, 1);
        ctx_free(c);
        return;
    }
    c->txn = t->id;
    struct roster_job *j = pl_job_new(sizeof(*j), NULL, 0, c->watcher->domain,
                                      c->watcher->local);
    j->contact = pl_strdup(c->who->bare);
    j->c = c;
    pl_storage_submit(pl_server_loop(), roster_run, roster_done, j);
}

/* In the dialog: refresh or un-SUBSCRIBE. */
static void in_dialog(struct sip_txn *t, osip_message_t *req,
                      const char *watcher)
{
    char *call_id = NULL;
    osip_call_id_to_str(req->call_id, &call_id);
    const char *rtag = pl__sip_from_tag(req), *ltag = pl__sip_to_tag(req);
    char *key = dialog_key(call_id ? call_id : "", rtag ? rtag : "",
                           ltag ? ltag : "");
    osip_free(call_id);
    struct sub *s = pl_map_get(&subs, key);
    pl_free(key);
    if (!s || strcmp(s->watcher, watcher) != 0) {
        pl__sip_reply(t, 481, NULL, NULL);
        return;
    }
    long expires = pl__sip_expires(t, DEFAULT_EXPIRES);
    if (expires < 0)
        return;
    reply_sub(t, s->state == SUB_ACTIVE ? 200 : 202, expires, 0);
    if (expires == 0) {
        sub_end(s, "timeout");
        return;
    }
    s->expires_at = now_ms() + (uint64_t)expires * 1000;
    pl_timer_start(pl_server_loop(), &s->expiry, (uint64_t)expires * 1000);
    pl_timer_stop(&s->notify);
    send_notify(s, NULL); /* RFC 6665 §4.2.1.2: a NOTIFY per refresh */
}

static void go(struct sip_txn *t, struct sub_ctx *c)
{
    osip_message_t *req = pl__sip_txn_request(t);
    if (pl__sip_to_tag(req)) {
        in_dialog(t, req, c->watcher->bare);
        ctx_free(c);
        return;
    }
    proceed(t, c);
}

static void authed(void *arg, struct sip_txn *t, struct pl_session *s)
{
    struct sub_ctx *c = arg;
    if (!t) {
        ctx_free(c);
        return;
    }
    c->sid = s ? s->id : 0;
    go(t, c);
}

/* Whether a q parameter of 0 excludes an Accept entry (RFC 3261 §20.1
 * takes RFC 2616's q-values: 0 means "not acceptable"). */
static int q_zero(osip_accept_t *a)
{
    osip_generic_param_t *q = NULL;
    if (osip_generic_param_get_byname(&a->gen_params, "q", &q) != 0 || !q ||
        !q->gvalue)
        return 0;
    const char *v = q->gvalue;
    if (*v++ != '0')
        return 0;
    if (*v == '.')
        for (v++; *v == '0'; v++)
            ;
    return *v == '\0';
}

/* Whether NOTIFYs may carry PIDF: no Accept means the package's default,
 * PIDF (RFC 3856 §6.6); else an entry must cover application/pidf+xml. */
static int accepts_pidf(osip_message_t *req)
{
    int n = osip_list_size(&req->accepts);
    if (n == 0)
        return 1;
    for (int i = 0; i < n; i++) {
        osip_accept_t *a = osip_list_get(&req->accepts, i);
        if (!a->type || !a->subtype || q_zero(a))
            continue; /* an empty Accept accepts nothing */
        if ((strcmp(a->type, "*") == 0 && strcmp(a->subtype, "*") == 0) ||
            (strcasecmp(a->type, "application") == 0 &&
             (strcmp(a->subtype, "*") == 0 ||
              strcasecmp(a->subtype, "pidf+xml") == 0)))
            return 1;
    }
    return 0;
}

void pl__sip_subscribe(struct sip_txn *t, osip_message_t *req)
{
    /* In a dialog the Request-URI is our Contact (the remote target,
     * §12.2.1.1), which names no user: the dialog says who. */
    int in_dlg = pl__sip_to_tag(req) != NULL;
    struct pl_host *h;
    struct pl_jid *who;
    if (!pl__sip_presence_request(t, req, stopping, !in_dlg, &h, &who))
        return;
    if (!accepts_pidf(req)) {
        /* RFC 6665 §4.2.1.1: no body this notifier can make is
         * acceptable. */
        pl_jid_free(who);
        pl__sip_reply(t, 406, NULL, NULL);
        return;
    }
    struct pl_jid *watcher = NULL;
    int rc = pl__sip_uri_jid(req->from ? req->from->url : NULL, &watcher);
    struct pl_host *wh = rc == PL_OK ? pl_host_find(watcher->domain) : NULL;
    if (rc != PL_OK || !wh || !watcher->local) {
        pl_jid_free(watcher);
        pl_jid_free(who);
        pl__sip_reply(t, 403, "Not A User Of This Server", NULL);
        return;
    }
    if (pl__sip_settings()->presence_authorization == SIP_PRESENCE_OPEN &&
        !in_dlg && wh != h) {
        pl_jid_free(watcher);
        pl_jid_free(who);
        pl__sip_reply(t, 403, NULL, NULL);
        return;
    }
    struct sub_ctx *c = pl_calloc(1, sizeof(*c));
    c->who = who;
    c->watcher = watcher;
    pl__sip_auth(t, wh, watcher, "Not The Authenticated User",
                 SIP_AUTH_FLOW | SIP_AUTH_PROXY, authed, c);
}

/* ---- the part ---- */

static int start(struct pl_config *c)
{
    (void)c;
    stopping = 0;
    for (int i = 0; pl_host_at(i); i++) {
        struct pl_host *h = pl_host_at(i);
        pl_hook_add(h, "presence/broadcast", on_broadcast, 100, NULL);
        pl_hook_add(h, "session/closed", on_closed, 100, NULL);
        pl_hook_add(h, "presence/bare", on_inbound, 100, NULL);
    }
    return PL_OK;
}

static void end_all(const char *reason)
{
    size_t n;
    void **v = pl__sip_map_values(&subs, &n);
    for (size_t i = 0; i < n; i++)
        sub_end(v[i], reason);
    pl_free(v);
}

/* Shutdown: RFC 6665 §4.2.2 "noresource"-like end; watchers may come
 * back. */
static void stop(void)
{
    stopping = 1;
    end_all("deactivated");
}

static void part_free(void)
{
    end_all(NULL);
    pl_map_clear(&subs);
    for (int i = 0; i < N_INDEX; i++)
        pl_map_clear(&index_map[i]);
}

static json_t *admin_row(void *value, uint64_t now)
{
    struct sub *s = value;
    return json_pack("{s:s, s:s, s:s, s:I, s:I}", "watcher", s->watcher,
                     "presentity", s->who->bare, "state",
                     s->state == SUB_ACTIVE ? "active" : "pending",
                     "expires_in", pl__sip_seconds_left(s->expires_at, now),
                     "notifies", (json_int_t)s->notifies);
}

static void admin(json_t *answer)
{
    pl__sip_admin_list(answer, "subscriptions", &subs, admin_row);
}

const struct sip_part pl__sip_subscriber = {
    .name = "subscribe",
    .start = start,
    .stop = stop,
    .free = part_free,
    .admin = admin,
    .flow_closed = NULL,
};
