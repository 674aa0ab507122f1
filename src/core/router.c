/*
 * router.c - stanza routing; see router.h and doc/routing.md.
 */
#include "router.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "host.h"
#include "iq.h"
#include "log.h"
#include "server.h"
#include "stats.h"
#include "storage.h"

/*
 * Event names for the three stanza kinds without formatting on the hot
 * path ("message/full", ...); other names never reach the router.
 */
enum scope {
    SC_BARE,
    SC_FULL,
    SC_HOST,
    SC_OUTGOING
};

static const char *event_for(const char *name, enum scope sc)
{
    static const char *const names[3][4] = {
        {"message/bare", "message/full", "message/host", "message/outgoing"},
        {"presence/bare", "presence/full", "presence/host",
         "presence/outgoing"},
        {"iq/bare", "iq/full", "iq/host", "iq/outgoing"},
    };
    int k = name[0] == 'm' ? 0 : name[0] == 'p' ? 1 : 2;
    return names[k][sc];
}

static const char *type_of(struct pl_stanza *st)
{
    const char *t = pl_stanza_attr(st, "type");
    return t ? t : "";
}

void pl_iq_event_name(struct pl_stanza *st, const char *scope, char *buf,
                      size_t len)
{
    struct pl_node *child = pl_node_first_elem(pl_stanza_root(st));
    snprintf(buf, len, "iq-%s/%s/%s:%s", type_of(st), scope,
             child ? child->ns : "", child ? child->name : "");
}

struct pl_stanza *pl_iq_result(struct pl_stanza *st)
{
    struct pl_stanza *r = pl_stanza_new("iq", PL_NS_CLIENT);
    const char *id = pl_stanza_attr(st, "id");
    pl_stanza_set_attr(r, "type", "result");
    if (id)
        pl_stanza_set_attr(r, "id", id);
    return r;
}

struct pl_stanza *pl_stanza_error_reply(struct pl_stanza *st, int code,
                                        const char *text)
{
    const char *name = pl_stanza_name(st);
    const char *type = type_of(st);
    if (strcmp(type, "error") == 0)
        return NULL;
    if (strcmp(name, "iq") == 0 && strcmp(type, "result") == 0)
        return NULL;
    struct pl_stanza *r = pl_stanza_copy(st);
    struct pl_node *root = pl_stanza_root(r);
    const char *from = pl_stanza_attr(st, "from");
    const char *to = pl_stanza_attr(st, "to");
    pl_stanza_set_attr(r, "from", to);
    pl_stanza_set_attr(r, "to", from);
    pl_stanza_set_attr(r, "type", "error");
    /* RFC 6120 §8.3.1: the original payload may stay; an earlier error
     * does not. */
    struct pl_node *old = pl_node_child(root, "error", NULL);
    if (old)
        pl_node_remove(r, old);
    const char *cond, *etype;
    pl_error_condition(code, &cond, &etype);
    struct pl_node *e = pl_node_add_child(r, root, "error", root->ns);
    pl_node_set_attr(r, e, "type", etype);
    pl_node_add_child(r, e, cond, PL_NS_STANZAS);
    if (text) {
        struct pl_node *t = pl_node_add_child(r, e, "text", PL_NS_STANZAS);
        pl_node_add_text(r, t, text, strlen(text));
    }
    pl_stat_inc(stanza_errors);
    pl_stats_stanza_error(cond);
    return r;
}

void pl_route_error(struct pl_stanza *st, int code, const char *text)
{
    struct pl_stanza *r = pl_stanza_error_reply(st, code, text);
    if (!r)
        return;
    struct pl_jid *from = NULL, *to = NULL;
    const char *f = pl_stanza_attr(r, "from");
    const char *t = pl_stanza_attr(r, "to");
    if (t && pl_jid_parse(pl_str_c(t), &to) == PL_OK &&
        (!f || pl_jid_parse(pl_str_c(f), &from) == PL_OK)) {
        if (!from) {
            struct pl_jid *tmp;
            if (pl_jid_make(NULL, to->domain, NULL, &tmp) == PL_OK)
                from = tmp;
        }
        if (from)
            pl_route(r, from, to, NULL);
    }
    pl_jid_free(from);
    pl_jid_free(to);
    pl_stanza_unref(r);
}

void pl_route_reply(struct pl_stanza *st, struct pl_stanza *reply)
{
    const char *f = pl_stanza_attr(st, "from");
    const char *t = pl_stanza_attr(st, "to");
    struct pl_jid *to = NULL, *from = NULL;
    if (!f || pl_jid_parse(pl_str_c(f), &to) != PL_OK)
        return;
    if (!t || pl_jid_parse(pl_str_c(t), &from) != PL_OK) {
        /* RFC 6120 §8.1.2.1: a reply on behalf of the account to a request
         * without 'to' carries no 'from' (strict clients, aioxmpp, match
         * on that). */
        t = NULL;
        from = pl_jid_bare(to);
    }
    pl_stanza_set_attr(reply, "from", t ? from->full : NULL);
    pl_stanza_set_attr(reply, "to", to->full);
    pl_route(reply, from, to, NULL);
    pl_jid_free(from);
    pl_jid_free(to);
}

void pl_route_result(struct pl_stanza *st)
{
    struct pl_stanza *r = pl_iq_result(st);
    pl_route_reply(st, r);
    pl_stanza_unref(r);
}

/* Applies a hook result: errors become stanza errors. */
static void finish(struct pl_stanza *st, int rc, int unhandled_code)
{
    if (rc == PL_HANDLED || rc == PL_PENDING)
        return;
    if (rc < 0) {
        pl_route_error(st, rc, NULL);
        return;
    }
    if (unhandled_code)
        pl_route_error(st, unhandled_code, NULL);
}

static int fire(const char *name, struct pl_host *h, struct pl_stanza *st,
                const struct pl_jid *from, const struct pl_jid *to,
                struct pl_session *origin)
{
    struct pl_event ev = {name, h, origin, st, from, to, NULL};
    return pl_hook_fire(&ev);
}

/*
 * A stanza without a 'to' attribute goes out addressed to the JID it was
 * routed to: one stanza (one cached serialization) serves a whole fan-out,
 * as a room's broadcast to its occupants, and the transport splices the
 * 'to' in (pl_session_ops.send_to) instead of serializing again.
 */
static void deliver(struct pl_session *s, struct pl_stanza *st,
                    const struct pl_jid *to)
{
    pl_stat_inc(stanzas_out);
    if (to && !pl_stanza_attr(st, "to")) {
        /* The splice writes straight to the connection: not for a
         * session whose output is filtered (XEP-0352) or counted and kept
         * until acknowledged (XEP-0198). */
        if (s->ops->deliver_to && !s->filters) {
            s->ops->deliver_to(s, st, to->full);
        } else {
            struct pl_stanza *c = pl_stanza_copy(st);
            pl_stanza_set_attr(c, "to", to->full);
            pl_session_send(s, c);
            pl_stanza_unref(c);
        }
        return;
    }
    pl_session_send(s, st);
}

/* Tells "message/delivered" handlers who got a message (router.h). */
static void delivered(struct pl_host *h, struct pl_stanza *st,
                      const struct pl_jid *from, const struct pl_jid *to,
                      struct pl_session *origin, struct pl_delivery *d)
{
    struct pl_event ev = {"message/delivered", h, origin, st, from, to, d};
    pl_hook_fire(&ev);
}

/* The available resources with the highest non-negative priority; *best
 * gets that priority. */
static int deliver_highest(const struct pl_jid *to, struct pl_stanza *st,
                           int all, int *bestp)
{
    const char *bare = to->bare;
    int best = -1, n = 0;
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res)
        if (s->available && s->priority >= 0 && s->priority > best)
            best = s->priority;
    if (best < 0)
        return 0;
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res)
        if (s->available && s->priority >= 0 && (all || s->priority == best)) {
            deliver(s, st, to);
            n++;
        }
    if (bestp)
        *bestp = best;
    return n;
}

/* Account existence, asked of storage when nobody is online. */
struct exists_req {
    struct pl_stanza *st; /* held reference */
    struct pl_jid *from;  /* copies */
    struct pl_jid *to;
    struct pl_host *host;
    int rc;
};

static int exists_run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct exists_req *r = arg;
    struct pl_account a;
    return d->account_get(db, r->host->domain, r->to->local, &a);
}

static void offline(struct pl_host *h, struct pl_stanza *st,
                    const struct pl_jid *from, const struct pl_jid *to);

static void exists_done(int rc, void *arg)
{
    struct exists_req *r = arg;
    const char *name = pl_stanza_name(r->st);
    if (rc == PL_OK)
        offline(r->host, r->st, r->from, r->to);
    else if (strcmp(name, "presence") == 0)
        ;
    else if (rc == PL_ENOT_FOUND)
        /* RFC 6121 §8.5.1: no such account. */
        pl_route_error(r->st, PL_ESERVICE_UNAVAILABLE, NULL);
    else
        /* Storage could not tell (its batch failed): not "no such
         * account", but try again later (RFC 6120 §8.3.3.18). */
        pl_route_error(r->st, PL_ERESOURCE_CONSTRAINT,
                       "storage failed; try again later");
    pl_stanza_unref(r->st);
    pl_jid_free(r->from);
    pl_jid_free(r->to);
    pl_free(r);
}

static void check_account(struct pl_host *h, struct pl_stanza *st,
                          const struct pl_jid *from, const struct pl_jid *to)
{
    struct exists_req *r = pl_calloc(1, sizeof(*r));
    r->st = pl_stanza_ref(st);
    r->from = pl_jid_dup(from);
    r->to = pl_jid_bare(to);
    r->host = h;
    pl_storage_submit(pl_server_loop(), exists_run, exists_done, r);
}

/* The account exists and has no available resource (RFC 6121 §8.5.2.2). */
static void offline(struct pl_host *h, struct pl_stanza *st,
                    const struct pl_jid *from, const struct pl_jid *to)
{
    const char *name = pl_stanza_name(st);
    const char *type = type_of(st);
    if (strcmp(name, "message") == 0) {
        if (strcmp(type, "headline") == 0 || strcmp(type, "error") == 0)
            return; /* silently ignored */
        if (strcmp(type, "groupchat") == 0) {
            pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
            return;
        }
        int rc = fire("message/offline", h, st, from, to, NULL);
        finish(st, rc, PL_ESERVICE_UNAVAILABLE);
    } else if (strcmp(name, "presence") == 0) {
        fire("presence/offline", h, st, from, to, NULL);
    } else {
        pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
    }
}

static void route_bare(struct pl_host *h, struct pl_stanza *st,
                       const struct pl_jid *from, const struct pl_jid *to,
                       struct pl_session *origin)
{
    const char *name = pl_stanza_name(st);
    const char *type = type_of(st);
    char ev[512];
    if (strcmp(name, "iq") == 0) {
        /* "iq/bare" first: filters that apply to every IQ to an account
         * (blocking, XEP-0191 §3.3), then the namespace's own event. */
        int rc = fire("iq/bare", h, st, from, to, origin);
        if (rc != PL_PASS) {
            finish(st, rc, 0);
            return;
        }
        /* An answer to a request the server sent for the account. */
        if ((strcmp(type, "result") == 0 || strcmp(type, "error") == 0) &&
            pl__iq_response(st, from))
            return;
        pl_iq_event_name(st, "bare", ev, sizeof(ev));
        rc = fire(ev, h, st, from, to, origin);
        if (rc == PL_PASS &&
            (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)) {
            if (!pl_session_first(to->bare) &&
                !(origin && strcmp(origin->jid->bare, to->bare) == 0)) {
                check_account(h, st, from, to); /* unknown user or not */
                return;
            }
            rc = PL_ESERVICE_UNAVAILABLE;
        }
        finish(st, rc, 0);
        return;
    }
    int rc = fire(event_for(name, SC_BARE), h, st, from, to, origin);
    if (rc != PL_PASS) {
        finish(st, rc, 0);
        return;
    }
    if (strcmp(name, "message") == 0) {
        struct pl_delivery d = {NULL, 0, 0};
        if (strcmp(type, "error") == 0) {
            if (deliver_highest(to, st, 0, &d.priority))
                delivered(h, st, from, to, origin, &d);
            return;
        }
        if (strcmp(type, "groupchat") == 0) {
            pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
            return;
        }
        d.all = strcmp(type, "headline") == 0;
        if (deliver_highest(to, st, d.all, &d.priority)) {
            delivered(h, st, from, to, origin, &d);
            return;
        }
    } else { /* presence: every available resource */
        int n = 0;
        for (struct pl_session *s = pl_session_first(to->bare); s;
             s = s->next_res)
            if (s->available) {
                deliver(s, st, to);
                n++;
            }
        if (n)
            return;
    }
    if (pl_session_first(to->bare))
        offline(h, st, from, to); /* online but not available */
    else
        check_account(h, st, from, to);
}

static void route_full(struct pl_host *h, struct pl_stanza *st,
                       const struct pl_jid *from, const struct pl_jid *to,
                       struct pl_session *origin)
{
    const char *name = pl_stanza_name(st);
    const char *type = type_of(st);
    int rc = fire(event_for(name, SC_FULL), h, st, from, to, origin);
    if (rc != PL_PASS) {
        finish(st, rc, 0);
        return;
    }
    struct pl_session *s = pl_session_by_full(to->full);
    if (s) {
        deliver(s, st, to);
        if (name[0] == 'm') {
            struct pl_delivery d = {s, 0, 0};
            delivered(h, st, from, to, origin, &d);
        }
        return;
    }
    /* RFC 6121 §8.5.3.2: no such resource. */
    if (strcmp(name, "message") == 0) {
        if (strcmp(type, "groupchat") == 0 || strcmp(type, "headline") == 0 ||
            strcmp(type, "error") == 0)
            return; /* silently ignored */
        struct pl_jid *bare = pl_jid_bare(to);
        route_bare(h, st, from, bare, origin);
        pl_jid_free(bare);
    } else if (strcmp(name, "iq") == 0) {
        if (!pl_session_first(to->bare))
            check_account(h, st, from, to);
        else
            pl_route_error(st, PL_ESERVICE_UNAVAILABLE, NULL);
    }
    /* presence to an unavailable resource is dropped (§8.5.3.2.3),
     * subscription states are handled by the presence/full hook above. */
}

static void route_host(struct pl_host *h, struct pl_stanza *st,
                       const struct pl_jid *from, const struct pl_jid *to,
                       struct pl_session *origin)
{
    const char *name = pl_stanza_name(st);
    const char *type = type_of(st);
    char ev[512];
    if (strcmp(name, "iq") == 0) {
        /* An answer to a request the server sent (iq.h). */
        if ((strcmp(type, "result") == 0 || strcmp(type, "error") == 0) &&
            pl__iq_response(st, from))
            return;
        pl_iq_event_name(st, "host", ev, sizeof(ev));
        int rc = fire(ev, h, st, from, to, origin);
        int get_set = strcmp(type, "get") == 0 || strcmp(type, "set") == 0;
        /* RFC 6120 §8.4: unknown namespaces get service-unavailable. */
        finish(st, rc, get_set ? PL_ESERVICE_UNAVAILABLE : 0);
        return;
    }
    int rc = fire(event_for(name, SC_HOST), h, st, from, to, origin);
    finish(st, rc, 0);
}

static void route_service(struct pl_host *h, const char *const *events,
                          struct pl_stanza *st, const struct pl_jid *from,
                          const struct pl_jid *to, struct pl_session *origin);

void pl_route(struct pl_stanza *st, const struct pl_jid *from,
              const struct pl_jid *to, struct pl_session *origin)
{
    struct pl_jid *own = NULL;
    pl_stat_inc(stanzas_routed);
    if (origin && to) {
        /* The sender's host sees its users' stanzas first ("presence/
         * outgoing": subscriptions, directed presence); a handler that
         * returns HANDLED or PENDING routes the stanza itself later, with
         * origin NULL. */
        int rc = fire(event_for(pl_stanza_name(st), SC_OUTGOING), origin->host,
                      st, from, to, origin);
        if (rc != PL_PASS) {
            finish(st, rc, 0);
            return;
        }
    }
    if (!to) {
        /* RFC 6120 §10.3: no 'to' means the sender's own account. */
        if (!from)
            return;
        own = pl_jid_bare(from);
        to = own;
        if (strcmp(pl_stanza_name(st), "presence") == 0 && origin) {
            struct pl_event ev = {"presence/broadcast",
                                  origin->host,
                                  origin,
                                  st,
                                  from,
                                  NULL,
                                  NULL};
            pl_hook_fire(&ev);
            pl_jid_free(own);
            return;
        }
    }
    struct pl_host *h = pl_host_find(to->domain);
    const char *const *sv_events;
    struct pl_host *sh = h ? NULL
                           : pl_host_find_service(to->domain, &sv_events);
    if (sh) {
        route_service(sh, sv_events, st, from, to, origin);
    } else if (!h) {
        /* The sender's host: its own, or the one whose service (a
         * component, a room service) it speaks for. */
        struct pl_host *fh = from ? pl_host_find(from->domain) : NULL;
        if (from && !fh)
            fh = pl_host_find_service(from->domain, NULL);
        int rc = PL_PASS;
        /* A fan-out stanza (no 'to', see deliver) leaves the server with
         * its address written in. */
        struct pl_stanza *addressed = NULL;
        if (!pl_stanza_attr(st, "to")) {
            addressed = pl_stanza_copy(st);
            pl_stanza_set_attr(addressed, "to", to->full);
            st = addressed;
        }
        if (fh)
            rc = fire("route/remote", fh, st, from, to, origin);
        finish(st, rc, PL_EREMOTE_SERVER_NOT_FOUND);
        pl_stanza_unref(addressed);
    } else if (!to->local) {
        if (to->resource && strcmp(pl_stanza_name(st), "iq") != 0) {
            finish(st,
                   fire(event_for(pl_stanza_name(st), SC_HOST), h, st, from, to,
                        origin),
                   0);
        } else {
            route_host(h, st, from, to, origin);
        }
    } else if (!to->resource) {
        route_bare(h, st, from, to, origin);
    } else {
        route_full(h, st, from, to, origin);
    }
    pl_jid_free(own);
}

int pl_route_as(struct pl_stanza *st, const char *from, const char *to)
{
    struct pl_jid *fj = NULL, *tj = NULL;
    int rc = PL_EJID_MALFORMED;
    if (pl_jid_parse(pl_str_c(from), &fj) == PL_OK &&
        pl_jid_parse(pl_str_c(to), &tj) == PL_OK) {
        pl_stanza_set_attr(st, "from", fj->full);
        pl_stanza_set_attr(st, "to", tj->full);
        pl_route(st, fj, tj, NULL);
        rc = PL_OK;
    }
    pl_jid_free(fj);
    pl_jid_free(tj);
    return rc;
}

void pl_route_to_session(struct pl_session *s, struct pl_stanza *st)
{
    deliver(s, st, NULL);
}

/* A stanza to a service subdomain (pl_host_add_service): the owning
 * host's "<prefix>/<kind>" hook; unhandled requests get
 * service-unavailable like those to an unknown namespace. */
static void route_service(struct pl_host *h, const char *const *events,
                          struct pl_stanza *st, const struct pl_jid *from,
                          const struct pl_jid *to, struct pl_session *origin)
{
    const char *name = pl_stanza_name(st);
    const char *type = type_of(st);
    int k = name[0] == 'm' ? 0 : name[0] == 'p' ? 1 : 2;
    int rc = fire(events[k], h, st, from, to, origin);
    int code = 0;
    if (k == 2)
        code = strcmp(type, "get") == 0 || strcmp(type, "set") == 0
                   ? PL_ESERVICE_UNAVAILABLE
                   : 0;
    else if (k == 0 && strcmp(type, "error") != 0)
        code = PL_ESERVICE_UNAVAILABLE;
    finish(st, rc, code);
}
