/*
 * registrar.c - the SIP registrar (RFC 3261 §10.3): REGISTER with digest
 * authentication (auth.c) against the XMPP accounts, and the bindings it
 * keeps, each a session (resources.h) bound to user@host/<resource> like
 * a c2s stream, so that routing, presence, offline storage, carbons and
 * archives treat a registered phone as one more resource of its account.
 * API: sip_int.h ("Registrar").
 *
 * A REGISTER goes: the To URI is the address of record, which must be a
 * user of the Request-URI's host (404 otherwise, step 3); the request is
 * authenticated (401 challenge, auth.c) and the authenticated user must be
 * the AOR's (403); the Contacts are planned by pl__sip_reg_plan (binding.c:
 * expiry, "*", Call-ID/CSeq order, 423, the per-AOR maximum) and applied
 * all or nothing; the 200 lists every binding with its remaining expiry
 * and a Date (§10.3 step 8).
 *
 * A binding keeps the flow its last REGISTER came over: requests for it
 * (MESSAGE, INFO) go over the same TCP/TLS connection, or over UDP from
 * the listener's socket to the REGISTER's source address, so they reach a
 * UA behind a NAT as long as it refreshes (the common practice RFC 5626
 * describes in §3.2).  When a TCP/TLS connection closes, the bindings that
 * used it go.
 *
 * Path (RFC 3327): a REGISTER that came through edge proxies carries their
 * Path header fields.  When the UA says it supports the extension
 * (Supported or Require: path) the registrar keeps them, in order, with
 * each binding the request makes or refreshes, and copies them into the
 * 200 (§5.3); without that indication it answers 420 Bad Extension with
 * Unsupported: path, the policy §5.3 recommends (the UA learns that a
 * proxy added itself).  Requests for the binding then carry the Path as a
 * preloaded Route and go to its first hop (route.c).  A refresh without
 * Path drops the binding's route set.  Bindings live in memory only: a restart forgets them and
 * UAs register again at their next refresh.
 *
 * Each binding is a struct pl_session.  Its resource is "sip-" and a hash
 * of the Contact key (the +sip.instance if any, else the URI), so it is
 * the same across refreshes.  On registration the session enters the
 * table, "session/bound" fires and an initial <presence/> is routed from
 * it as c2s does for a client's first presence: XMPP contacts see it
 * online and offline messages are flushed to it (mod_offline).  On removal
 * (Expires 0, "*", expiry, a closed connection, a MESSAGE it could not
 * take) an unavailable presence goes out, then the session leaves the
 * table and "session/closed" fires; the memory goes on the next loop turn
 * (a close asked by the core, as for a resource conflict, returns before
 * its caller unregisters the session again).
 *
 * What a session is delivered: <message/> becomes a MESSAGE (im.c); an IQ
 * get or set is answered <service-unavailable/> as by a client that does
 * not understand it (RFC 6120 §8.4); presence is ignored: a SIP watcher
 * follows presence through its SUBSCRIBE dialogs (subscribe.c).
 *
 * A PUBLISH (publish.c) replaces the presence the registration gives with
 * the published state through pl__sip_binding_publish(), and restores it
 * when the publication goes.
 *
 * Extending: state per binding is a field of struct binding.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "hook.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "map_addr.h"
#include "pidf.h"
#include "resources.h"
#include "router.h"
#include "server.h"
#include "sip_int.h"
#include "stats.h"

struct aor;

/* One registered contact: a session of its account. */
struct binding {
    struct pl_session sess;    /* bound to user@host/resource; impl: this */
    struct aor *aor;           /* its address of record */
    char *uri;                 /* the Contact URI as the UA wrote it */
    char *key;                 /* what Contacts are matched on (binding.c) */
    char *call_id;             /* of the REGISTER that last refreshed it */
    uint32_t cseq;             /* and its CSeq number */
    uint64_t expires_at;       /* loop time (ms) it expires at */
    struct sip_flow flow;      /* its last REGISTER's flow */
    struct sip_flow send;      /* where requests for it go: flow, or the
                                * first hop of path (route.c) */
    struct sip_route_set path; /* its last REGISTER's Path (RFC 3327) */
    char ip[64];               /* the flow's peer, for peer_ip */
    struct pl_timer timer;     /* expiry */
    struct binding *next;      /* in aor->list */
    struct binding *conn_next; /* in by_conn: same TCP/TLS connection */
    unsigned linked : 1;       /* in by_conn */
    unsigned ended : 1;        /* out of the table, memory freed next turn */
};

/* The bindings of one address of record. */
struct aor {
    char *bare;           /* user@host */
    struct binding *list; /* newest first */
    int n;                /* bindings */
};

static struct pl_map aors;    /* bare -> struct aor */
static int stopping;          /* shutdown began: no new bindings */
static struct pl_map by_conn; /* TCP/TLS connection id -> its bindings */
static const struct pl_session_ops session_ops;

static uint64_t now_ms(void)
{
    return pl_loop_now(pl_server_loop());
}

static struct binding *of(const struct pl_session *s)
{
    return s && s->ops == &session_ops ? s->impl : NULL;
}

int pl__sip_is_binding(const struct pl_session *s)
{
    return of(s) != NULL;
}

const struct sip_flow *pl__sip_binding_flow(const struct pl_session *s)
{
    return &of(s)->send;
}

const struct sip_route_set *pl__sip_binding_route(const struct pl_session *s)
{
    return &of(s)->path;
}

const char *pl__sip_binding_contact(const struct pl_session *s)
{
    return of(s)->uri;
}

static void conn_key(uint64_t id, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)id);
}

static void conn_unlink(struct binding *b)
{
    if (!b->linked)
        return;
    char k[17];
    conn_key(b->flow.conn, k);
    struct binding *h = pl_map_get(&by_conn, k);
    if (h == b) {
        if (b->conn_next)
            pl_map_put(&by_conn, k, b->conn_next);
        else
            pl_map_del(&by_conn, k);
    } else {
        for (; h; h = h->conn_next)
            if (h->conn_next == b) {
                h->conn_next = b->conn_next;
                break;
            }
    }
    b->conn_next = NULL;
    b->linked = 0;
}

static void conn_link(struct binding *b)
{
    if (!pl__sip_flow_reliable(&b->flow))
        return;
    char k[17];
    conn_key(b->flow.conn, k);
    b->conn_next = pl_map_get(&by_conn, k);
    pl_map_put(&by_conn, k, b);
    b->linked = 1;
}

struct pl_session *pl__sip_binding_on_conn(const char *bare,
                                           const struct sip_flow *f,
                                           const osip_message_t *req)
{
    if (!pl__sip_flow_reliable(f) || osip_list_size(&req->vias) != 1)
        return NULL;
    char k[17];
    conn_key(f->conn, k);
    for (struct binding *b = pl_map_get(&by_conn, k); b; b = b->conn_next)
        if (b->aor && b->flow.transport == f->transport && !b->path.n &&
            strcmp(b->aor->bare, bare) == 0)
            return &b->sess;
    return NULL;
}

static int same_addr(const struct sip_flow *a, const struct sip_flow *b)
{
    return a->addrlen == b->addrlen &&
           memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

struct pl_session *pl__sip_binding_from(const char *bare,
                                        const struct sip_flow *f)
{
    struct aor *a = pl_map_get(&aors, bare);
    if (!a)
        return NULL;
    for (struct binding *b = a->list; b; b = b->next)
        if (b->flow.transport == f->transport &&
            (pl__sip_flow_reliable(f) ? b->flow.conn == f->conn
                                      : same_addr(&b->flow, f)))
            return &b->sess;
    return NULL;
}

/* ---- sessions ---- */

/* Routes presence from the binding's session as if its UA had sent it:
 * available (the first presence of a client, RFC 6121 §4.2) or
 * unavailable (§4.5). */
static struct pl_stanza *plain; /* <presence/>, kept by many bindings */

static void binding_presence(struct binding *b, int available)
{
    struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
    if (!available)
        pl_stanza_set_attr(p, "type", "unavailable");
    pl_stanza_set_attr(p, "from", b->sess.jid->full);
    b->sess.available = available ? 1 : 0;
    b->sess.priority = 0;
    /* What probes and new contacts are sent (as copies stamped with the
     * session's JID): the same immutable <presence/> for every binding
     * without a publication, rather than a stanza each. */
    if (available && !plain)
        plain = pl_stanza_new("presence", PL_NS_CLIENT);
    pl_stanza_unref(b->sess.presence);
    b->sess.presence = available ? pl_stanza_ref(plain) : NULL;
    pl_route(p, b->sess.jid, NULL, &b->sess);
    pl_stanza_unref(p);
}

void pl__sip_binding_publish(struct pl_session *s, const struct pl_pidf *state)
{
    struct binding *b = of(s);
    if (!b || b->ended)
        return;
    if (!state) {
        binding_presence(b, 1);
        return;
    }
    struct pl_stanza *p = pl_pidf_to_presence(state, b->sess.jid->full, NULL);
    if (!p)
        return;
    b->sess.available = state->basic == PL_PIDF_OPEN;
    b->sess.priority = state->priority > 0 ? state->priority : 0;
    pl_stanza_unref(b->sess.presence);
    b->sess.presence = pl_stanza_ref(p);
    pl_route(p, b->sess.jid, NULL, &b->sess);
    pl_stanza_unref(p);
}

static void binding_free(void *data)
{
    struct binding *b = data;
    pl_stanza_unref(b->sess.presence);
    pl_jid_free(b->sess.jid);
    pl_free(b->uri);
    pl_free(b->key);
    pl_free(b->call_id);
    pl__sip_routes_free(&b->path);
    pl_free(b);
}

/* Ends a binding: unavailable presence, out of the table, "session/closed";
 * the memory goes on the next loop turn. */
static void binding_end(struct binding *b, const char *why)
{
    if (b->ended)
        return;
    b->ended = 1;
    pl_timer_stop(&b->timer);
    conn_unlink(b);
    struct aor *a = b->aor;
    for (struct binding **pp = &a->list; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            a->n--;
            break;
        }
    if (!a->list) {
        pl_map_del(&aors, a->bare);
        pl_free(a->bare);
        pl_free(a);
    }
    b->aor = NULL;
    pl_log_info("sip", "unregistered %s (%s): %s", b->sess.jid->full, b->uri,
                why);
    if (b->sess.available)
        binding_presence(b, 0);
    pl_session_unregister(&b->sess);
    struct pl_event ev = {"session/closed", b->sess.host, &b->sess, NULL,
                          b->sess.jid,      NULL,         NULL};
    pl_hook_fire(&ev);
    pl_stat_dec(sip_bindings);
    pl_loop_defer(pl_server_loop(), binding_free, b);
}

void pl__sip_binding_drop(uint64_t sid, const char *why)
{
    struct binding *b = of(pl_session_by_id(sid));
    if (b)
        binding_end(b, why);
}

static void on_expire(struct pl_timer *t)
{
    binding_end(t->data, "expired");
}

static void deliver(struct pl_session *s, struct pl_stanza *st)
{
    const char *name = pl_stanza_name(st);
    const char *type = pl_stanza_attr(st, "type");
    if (strcmp(name, "message") == 0) {
        pl__sip_im_deliver(s, st);
    } else if (strcmp(name, "iq") == 0) {
        /* RFC 6120 §8.4: what the UA cannot answer. */
        if (type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0))
            pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
    }
    /* Presence: ignored; SIP watchers get it in their SUBSCRIBE dialogs
     * (subscribe.c), which follow the presentity's sessions. */
}

static void session_close(struct pl_session *s, const char *condition,
                          const char *text)
{
    (void)text;
    struct binding *b = of(s);
    if (b)
        binding_end(b, condition ? condition : "closed");
}

static int is_interested(const struct pl_session *s)
{
    (void)s;
    return 0; /* no roster pushes: a SIP UA has no XMPP roster */
}

static const char *peer_ip(const struct pl_session *s)
{
    return of(s)->ip;
}

static int is_loopback(const struct pl_session *s)
{
    const char *ip = of(s)->ip;
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0;
}

static int is_secure(const struct pl_session *s)
{
    return of(s)->flow.transport == SIP_TLS;
}

static const char *transport_name(const struct pl_session *s)
{
    (void)s;
    return "sip";
}

static const struct pl_session_ops session_ops = {
    .deliver = deliver,
    .close = session_close,
    .is_interested = is_interested,
    .peer_ip = peer_ip,
    .is_loopback = is_loopback,
    .is_secure = is_secure,
    .transport = transport_name,
};

static void set_flow(struct binding *b, const struct sip_flow *f,
                     const struct sip_route_set *path)
{
    conn_unlink(b);
    b->flow = *f;
    conn_link(b);
    pl__sip_routes_copy(&b->path, path);
    pl__sip_route_flow(&b->flow, &b->path, &b->send);
    int port = 0;
    pl__sip_flow_peer(f, b->ip, sizeof(b->ip), &port);
}

static void set_expiry(struct binding *b, long seconds)
{
    b->expires_at = now_ms() + (uint64_t)seconds * 1000;
    pl_timer_start(pl_server_loop(), &b->timer, (uint64_t)seconds * 1000);
}

/* A new binding in the table (not yet available), or NULL with *rc. */
static struct binding *binding_new(struct pl_host *h, const char *user,
                                   const char *key, const char *uri,
                                   const struct sip_flow *f,
                                   const struct sip_route_set *path, int *rc)
{
    char res[13];
    pl__sip_reg_resource(key, res);
    struct pl_jid *j = NULL;
    *rc = pl_jid_make(user, h->domain, res, &j);
    if (*rc != PL_OK)
        return NULL;
    struct binding *b = pl_calloc(1, sizeof(*b));
    pl_session_init(&b->sess);
    b->sess.jid = j;
    b->sess.host = h;
    b->sess.ops = &session_ops;
    b->sess.impl = b;
    *rc =
        pl_session_register(&b->sess,
                            (int)pl_server_config()->s.max_resources_per_user);
    if (*rc != PL_OK) {
        pl_session_unregister(&b->sess); /* leaves the id table */
        pl_jid_free(j);
        pl_free(b);
        return NULL;
    }
    b->uri = pl_strdup(uri);
    b->key = pl_strdup(key);
    set_flow(b, f, path);
    pl_timer_init(&b->timer, on_expire, b);
    return b;
}

/* ---- REGISTER ---- */

struct reg_ctx {
    struct pl_host *h;         /* the Request-URI's host */
    struct pl_jid *aor;        /* the To URI's bare JID */
    struct sip_route_set path; /* the request's Path (RFC 3327) */
};

static void ctx_free(struct reg_ctx *c)
{
    pl_jid_free(c->aor);
    pl__sip_routes_free(&c->path);
    pl_free(c);
}

/* 200 with every binding of a (may be NULL) and its remaining expiry,
 * and the request's Path (RFC 3327 §5.3). */
static void reply_bindings(struct sip_txn *t, struct aor *a,
                           const struct sip_route_set *path)
{
    osip_message_t *r = pl__sip_response_new(t, 200, NULL);
    if (!r)
        return;
    if (path->n) {
        char *v = pl__sip_routes_join(path);
        osip_message_set_header(r, "Path", v);
        pl_free(v);
    }
    uint64_t now = now_ms();
    for (struct binding *b = a ? a->list : NULL; b; b = b->next) {
        size_t n = strlen(b->uri) + 40;
        char *v = pl_malloc(n);
        snprintf(v, n, "<%s>;expires=%llu", b->uri,
                 (unsigned long long)pl__sip_seconds_left(b->expires_at, now));
        osip_message_set_header(r, "Contact", v);
        pl_free(v);
    }
    char date[64];
    time_t tt = time(NULL);
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    osip_message_set_header(r, "Date", date);
    pl__sip_reply_msg(t, r);
}

#define MAX_CONTACTS_IN_REQUEST 64

static void apply(struct sip_txn *t, osip_message_t *req, struct reg_ctx *c)
{
    const struct sip_settings *S = pl__sip_settings();
    struct sip_reg_limits lim = {S->default_expires, S->min_expires,
                                 S->max_expires, S->max_contacts};
    struct aor *a = pl_map_get(&aors, c->aor->bare);
    int nhave = a ? a->n : 0;
    struct sip_reg_have have[nhave ? nhave : 1];
    struct binding *hb[nhave ? nhave : 1];
    int i = 0;
    for (struct binding *b = a ? a->list : NULL; b; b = b->next, i++) {
        hb[i] = b;
        have[i] = (struct sip_reg_have){b->key, b->call_id, b->cseq};
    }
    int ncontacts = osip_list_size(&req->contacts);
    if (ncontacts > MAX_CONTACTS_IN_REQUEST) {
        pl__sip_reply(t, 403, "Too Many Contacts", NULL);
        return;
    }
    struct sip_reg_want want[MAX_CONTACTS_IN_REQUEST];
    char *keys[MAX_CONTACTS_IN_REQUEST] = {0};
    osip_contact_t *cs[MAX_CONTACTS_IN_REQUEST];
    int nwant = 0, star = 0, code = 200;
    char *call_id = NULL;
    struct sip_reg_op *ops = NULL;
    for (int k = 0; k < ncontacts; k++) {
        osip_contact_t *ct = osip_list_get(&req->contacts, k);
        if (!ct->url && ct->displayname && strcmp(ct->displayname, "*") == 0) {
            star = 1;
            continue;
        }
        keys[nwant] = pl__sip_contact_key(ct);
        if (!keys[nwant] || !ct->url->scheme ||
            (strcasecmp(ct->url->scheme, "sip") != 0 &&
             strcasecmp(ct->url->scheme, "sips") != 0)) {
            code = keys[nwant] ? 416 : 400;
            nwant++;
            goto out;
        }
        osip_generic_param_t *ep = NULL;
        osip_contact_param_get_byname(ct, "expires", &ep);
        want[nwant].key = keys[nwant];
        want[nwant].expires = ep ? pl__sip_delta_seconds(ep->gvalue) : -1;
        cs[nwant] = ct;
        nwant++;
    }
    long hdr = -1;
    const char *e = pl__sip_header(req, "Expires", 0);
    if (e)
        hdr = pl__sip_delta_seconds(e);
    osip_call_id_to_str(req->call_id, &call_id);
    uint32_t cseq = (uint32_t)strtoul(req->cseq->number, NULL, 10);
    ops = pl_calloc((size_t)(nhave > nwant ? nhave : nwant) + 1, sizeof(*ops));
    code = pl__sip_reg_plan(have, nhave, want, nwant, star, hdr, call_id, cseq,
                            &lim, ops);
    if (code == 423) {
        pl__sip_reply_too_brief(t, lim.min);
        code = 0;
    } else if (code == 403) {
        pl__sip_reply(t, 403, "Too Many Contacts", NULL);
        code = 0;
    } else if (code == 500) {
        /* §10.3 steps 6, 7: an older request than the binding's. */
        const char *hdrs[] = {"Retry-After", "1", NULL};
        pl__sip_reply(t, 500, "Out Of Order Request", hdrs);
        code = 0;
    } else if (code == 200 && star) {
        for (int k = 0; k < nhave; k++)
            binding_end(hb[k], "Contact: *");
        a = pl_map_get(&aors, c->aor->bare);
        pl_stat_inc(sip_registrations);
        reply_bindings(t, a, &c->path);
        code = 0;
    } else if (code == 200) {
        /* New bindings first: the one step that can fail (the resources
         * table), undone whole if it does (§10.3: all or nothing). */
        struct binding *fresh[MAX_CONTACTS_IN_REQUEST] = {0};
        int rc = PL_OK;
        for (int k = 0; k < nwant && rc == PL_OK; k++) {
            if (ops[k].have != -1 || ops[k].expires == 0)
                continue;
            char *u = pl__sip_uri_str(cs[k]->url);
            fresh[k] = binding_new(c->h, c->aor->local, keys[k], u,
                                   pl__sip_txn_flow(t), &c->path, &rc);
            pl_free(u);
        }
        if (rc != PL_OK) {
            for (int k = 0; k < nwant; k++)
                if (fresh[k]) {
                    conn_unlink(fresh[k]);
                    pl_session_unregister(&fresh[k]->sess);
                    binding_free(fresh[k]);
                }
            pl__sip_reply(t, 403,
                          rc == PL_ERESOURCE_CONSTRAINT ? "Too Many Resources"
                                                        : "Resource Conflict",
                          NULL);
            code = 0;
            goto out;
        }
        for (int k = 0; k < nwant; k++) {
            struct binding *b = ops[k].have >= 0 ? hb[ops[k].have] : NULL;
            if (b && ops[k].expires == 0) {
                binding_end(b, "Expires: 0");
            } else if (b) {
                pl_free(b->call_id);
                b->call_id = pl_strdup(call_id ? call_id : "");
                b->cseq = cseq;
                char *u = pl__sip_uri_str(cs[k]->url);
                if (u) {
                    pl_free(b->uri);
                    b->uri = u;
                }
                set_flow(b, pl__sip_txn_flow(t), &c->path);
                set_expiry(b, ops[k].expires);
            }
        }
        for (int k = 0; k < nwant; k++) {
            struct binding *b = fresh[k];
            if (!b)
                continue;
            a = pl_map_get(&aors, c->aor->bare);
            if (!a) {
                a = pl_calloc(1, sizeof(*a));
                a->bare = pl_strdup(c->aor->bare);
                pl_map_put(&aors, a->bare, a);
            }
            b->aor = a;
            b->next = a->list;
            a->list = b;
            a->n++;
            b->call_id = pl_strdup(call_id ? call_id : "");
            b->cseq = cseq;
            set_expiry(b, ops[k].expires);
            pl_stat_inc(sip_bindings);
            pl_stat_inc(sessions_bound);
            pl_log_info("sip", "registered %s at %s over %s", b->sess.jid->full,
                        b->uri, pl__sip_transport_name(b->flow.transport));
            struct pl_event ev = {"session/bound", c->h, &b->sess, NULL,
                                  b->sess.jid,     NULL, NULL};
            pl_hook_fire(&ev);
        }
        if (nwant)
            pl_stat_inc(sip_registrations);
        reply_bindings(t, pl_map_get(&aors, c->aor->bare), &c->path);
        /* Available once the 200 is on its way: the flush of offline
         * messages that may follow finds the UA registered. */
        for (int k = 0; k < nwant; k++)
            if (fresh[k] && !fresh[k]->ended)
                binding_presence(fresh[k], 1);
        code = 0;
    }
out:
    if (code)
        pl__sip_reply(t, code, NULL, NULL);
    osip_free(call_id);
    pl_free(ops);
    for (int k = 0; k < nwant; k++)
        pl_free(keys[k]);
}

static void authed(void *arg, struct sip_txn *t, struct pl_session *s)
{
    (void)s;
    struct reg_ctx *c = arg;
    if (t)
        apply(t, pl__sip_txn_request(t), c);
    ctx_free(c);
}

void pl__sip_register(struct sip_txn *t, osip_message_t *req)
{
    if (stopping) {
        pl__sip_reply_stopping(t);
        return;
    }
    struct pl_host *h = pl__sip_request_host(req);
    struct pl_jid *aor = NULL;
    int rc = pl__sip_uri_jid(req->to ? req->to->url : NULL, &aor);
    if (rc == PL_EFEATURE_NOT_IMPLEMENTED) {
        pl__sip_reply(t, 416, NULL, NULL);
        return;
    }
    /* §10.3 step 3: an AOR that is not a user of the Request-URI's
     * domain. */
    if (rc != PL_OK || !h || !aor->local || strcmp(aor->domain, h->domain)) {
        pl_jid_free(aor);
        pl__sip_reply(t, 404, NULL, NULL);
        return;
    }
    /* RFC 3327 §5.3: the proxies on the way back to the UA, accepted when
     * the UA knows of them. */
    struct sip_route_set path;
    if (pl__sip_routes_from_path(req, &path) != PL_OK) {
        pl_jid_free(aor);
        pl__sip_reply(t, 400, "Malformed Path", NULL);
        return;
    }
    if (path.n && !pl__sip_has_option(req, "Supported", "path") &&
        !pl__sip_has_option(req, "Require", "path")) {
        pl_jid_free(aor);
        pl__sip_routes_free(&path);
        const char *hdrs[] = {"Unsupported", "path", NULL};
        pl__sip_reply(t, 420, NULL, hdrs);
        return;
    }
    struct reg_ctx *c = pl_calloc(1, sizeof(*c));
    c->h = h;
    c->aor = aor;
    c->path = path;
    /* §10.3 step 3: only the AOR's own account changes its bindings. */
    pl__sip_auth(t, h, aor, NULL, 0, authed, c);
}

/* ---- the part ---- */

struct collect_ctx {
    struct binding **v; /* every binding */
    size_t n, cap;      /* count and room */
};

static void collect(const char *key, void *value, void *ud)
{
    (void)key;
    struct collect_ctx *cc = ud;
    for (struct binding *b = ((struct aor *)value)->list; b; b = b->next) {
        if (cc->n == cc->cap) {
            cc->cap = cc->cap ? cc->cap * 2 : 16;
            cc->v = pl_realloc(cc->v, cc->cap * sizeof(*cc->v));
        }
        cc->v[cc->n++] = b;
    }
}

static void free_aor(const char *key, void *value, void *ud)
{
    (void)key;
    (void)ud;
    struct aor *a = value;
    pl_free(a->bare);
    pl_free(a);
}

static void end_all(const char *why)
{
    struct collect_ctx cc = {NULL, 0, 0};
    pl_map_each(&aors, collect, &cc);
    for (size_t i = 0; i < cc.n; i++)
        binding_end(cc.v[i], why);
    pl_free(cc.v);
}

static void flow_closed(uint64_t conn)
{
    char k[17];
    conn_key(conn, k);
    struct binding *v[64];
    for (;;) {
        /* binding_end unlinks: take a batch, end it, look again. */
        size_t n = 0;
        for (struct binding *b = pl_map_get(&by_conn, k); b && n < 64;
             b = b->conn_next)
            v[n++] = b;
        if (!n)
            break;
        for (size_t i = 0; i < n; i++)
            binding_end(v[i], "connection closed");
    }
}

static int start(struct pl_config *c)
{
    (void)c;
    stopping = 0;
    return pl__sip_auth_start();
}

/* Shutdown: every binding ends as on expiry (its contacts see it go);
 * the loop runs once more, which frees them. */
static void stop(void)
{
    stopping = 1;
    end_all("shutdown");
}

static void part_free(void)
{
    /* Nothing is left after stop(); should something be, the loop will
     * not run again to free it: at once, without presence. */
    struct collect_ctx cc = {NULL, 0, 0};
    pl_map_each(&aors, collect, &cc);
    for (size_t i = 0; i < cc.n; i++) {
        pl_timer_stop(&cc.v[i]->timer);
        conn_unlink(cc.v[i]);
        pl_session_unregister(&cc.v[i]->sess);
        binding_free(cc.v[i]);
    }
    pl_free(cc.v);
    pl_map_each(&aors, free_aor, NULL);
    pl_map_clear(&aors);
    pl_map_clear(&by_conn);
    pl_stanza_unref(plain); /* the bindings' references are their own */
    plain = NULL;
    pl__sip_auth_free();
}

static void admin(json_t *answer)
{
    struct collect_ctx cc = {NULL, 0, 0};
    pl_map_each(&aors, collect, &cc);
    json_t *l = json_array();
    uint64_t now = now_ms();
    for (size_t i = 0; i < cc.n; i++) {
        struct binding *b = cc.v[i];
        char ip[64];
        int port = 0;
        pl__sip_flow_peer(&b->flow, ip, sizeof(ip), &port);
        char peer[80];
        snprintf(peer, sizeof(peer), strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip,
                 port);
        char *path = b->path.n ? pl__sip_routes_join(&b->path) : NULL;
        json_array_append_new(
            l, json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "aor",
                         b->aor->bare, "contact", b->uri, "transport",
                         pl__sip_transport_name(b->flow.transport),
                         "expires_in", pl__sip_seconds_left(b->expires_at, now),
                         "resource", b->sess.jid->resource, "peer", peer,
                         "path", path ? path : ""));
        pl_free(path);
    }
    pl_free(cc.v);
    json_object_set_new(answer, "registrations", l);
    json_object_set_new(answer, "digest_nonces",
                        json_integer((json_int_t)pl__sip_auth_tracked()));
    json_object_set_new(answer, "digest_keys_cached",
                        json_integer((json_int_t)pl__sip_auth_cached()));
}

const struct sip_part pl__sip_registrar = {
    .name = "registrar",
    .start = start,
    .stop = stop,
    .free = part_free,
    .admin = admin,
    .flow_closed = flow_closed,
};
