/*
 * mod_roster.c - rosters and presence subscriptions (RFC 6121 §2, §3):
 * roster get/set/remove with pushes to every interested resource, roster
 * versioning (§2.6), a size limit, and the subscription state machine for
 * outbound and inbound subscription presence, durably stored before any
 * effect is visible.  Pending inbound requests are delivered again at the
 * next login.
 *
 * Every operation is one storage job: the transition runs on the storage
 * thread against the stored item, so concurrent requests for one user are
 * serialized and nothing is acknowledged before it is committed; the
 * completion then pushes, delivers and routes on the loop.
 */
#include <stdlib.h>

#include "roster/roster.h"

struct state {
    long max_items; /* roster size limit */
};

enum kind {
    K_GET,
    K_SET,
    K_REMOVE,
    K_OUT,
    K_IN,
    K_PENDING,
    K_PRESENCE
};

struct job {
    struct pl_job base; /* the request, session and roster owner */
    enum kind kind;
    char *contact;              /* contact's bare JID */
    char *type;                 /* presence type for K_OUT/K_IN */
    struct pl_roster_item item; /* new values, then the stored result */
    struct pl_roster roster;    /* K_GET */
    struct pl_buf pending;      /* K_PENDING: stanzas, NUL-separated */
    int flags;                  /* PL_R_* from the transition */
    int had_to, had_from;       /* K_REMOVE: what to cancel */
    long ver;                   /* version after the change */
    long max_items;
};

static struct job *job_new(enum kind kind, struct pl_event *ev,
                           const char *host, const char *user)
{
    struct job *j = pl_job_new(sizeof(*j), ev->stanza,
                               ev->session ? ev->session->id : 0, host, user);
    j->kind = kind;
    return j;
}

static void job_free(struct job *j)
{
    pl_free(j->contact);
    pl_free(j->type);
    pl_roster_item_free(&j->item);
    pl_roster_free(&j->roster);
    pl_buf_reset(&j->pending);
    pl_job_free(j);
}

static void reply_error(struct job *j, int code, const char *text)
{
    struct pl_stanza *r = pl_stanza_error_reply(j->base.st, code, text);
    if (!r)
        return;
    struct pl_session *s = pl_session_by_id(j->base.sid);
    if (s)
        pl_route_to_session(s, r);
    pl_stanza_unref(r);
}

static void reply_result(struct job *j, struct pl_stanza *r)
{
    struct pl_session *s = pl_session_by_id(j->base.sid);
    if (s) {
        pl_stanza_set_attr(r, "to", s->jid->full);
        pl_route_to_session(s, r);
    }
}

/* ---- presence helpers shared by the flows ---- */

/* Sends presence of type (NULL: available, each resource's last) from
 * every available resource of bare to `to`. */
static void send_presence_of(const char *bare, const char *to, const char *type)
{
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res) {
        if (!s->available)
            continue;
        struct pl_stanza *p;
        if (!type && s->presence) {
            p = pl_stanza_copy(s->presence);
        } else {
            p = pl_stanza_new("presence", PL_NS_CLIENT);
            if (type)
                pl_stanza_set_attr(p, "type", type);
        }
        pl_route_as(p, s->jid->full, to);
        pl_stanza_unref(p);
    }
}

/* Delivers st to every available resource of bare (inbound requests). */
static void deliver_available(const char *bare, struct pl_stanza *st)
{
    for (struct pl_session *s = pl_session_first(bare); s; s = s->next_res)
        if (s->available && s->priority >= 0)
            pl_route_to_session(s, st);
}

static void route_simple(const char *from, const char *to, const char *type)
{
    struct pl_stanza *p = pl_stanza_new("presence", PL_NS_CLIENT);
    pl_stanza_set_attr(p, "type", type);
    pl_route_as(p, from, to);
    pl_stanza_unref(p);
}

/* ---- storage-thread parts ---- */

static int load_or_new(const struct pl_storage_driver *d, void *db,
                       struct job *j)
{
    struct pl_roster_item it;
    int rc = pl_roster_load_item(d, db, j->base.host, j->base.user, j->contact,
                                 &it);
    if (rc == PL_ENOT_FOUND) {
        memset(&it, 0, sizeof(it));
        it.jid = pl_strdup(j->contact);
        it.hidden = 1;
        rc = PL_OK;
    }
    if (rc == PL_OK) {
        pl_roster_item_free(&j->item);
        j->item = it;
    }
    return rc;
}

static int is_local_account(const struct pl_storage_driver *d, void *db,
                            const char *jid, int *local)
{
    struct pl_jid *cj = NULL;
    *local = 0;
    if (pl_jid_parse(pl_str_c(jid), &cj) != PL_OK)
        return PL_EJID_MALFORMED;
    int rc = PL_OK;
    if (cj->local && pl_host_find(cj->domain)) {
        struct pl_account a;
        *local = 1;
        rc = d->account_get(db, cj->domain, cj->local, &a);
        if (rc == PL_ENOT_FOUND)
            rc = PL_EITEM_NOT_FOUND;
    }
    pl_jid_free(cj);
    return rc;
}

static int count_visible(const char *key, const void *data, size_t len,
                         void *ud)
{
    if (len > 4 && ((const char *)data)[4] == '0')
        (*(long *)ud)++;
    return 0;
}

static int pending_collect(const char *key, const void *data, size_t len,
                           void *ud)
{
    struct pl_buf *b = ud;
    pl_buf_append(b, data, len);
    pl_buf_append(b, "", 1);
    return 0;
}

static int run(const struct pl_storage_driver *d, void *db, void *arg)
{
    struct job *j = arg;
    int rc, local;
    switch (j->kind) {
    case K_PRESENCE: return PL_OK; /* an ordering barrier, see send_after() */
    case K_GET:
        return pl_roster_load(d, db, j->base.host, j->base.user, &j->roster);
    case K_PENDING:
        return d->kv_list(db, j->base.host, j->base.user, "roster_pending",
                          pending_collect, &j->pending);
    case K_SET: {
        rc = is_local_account(d, db, j->contact, &local);
        if (rc != PL_OK)
            return rc;
        struct pl_roster_item want = j->item;
        memset(&j->item, 0, sizeof(j->item));
        rc = load_or_new(d, db, j);
        if (rc == PL_OK && j->item.hidden) {
            long n = 0;
            d->kv_list(db, j->base.host, j->base.user, "roster", count_visible,
                       &n);
            if (n >= j->max_items)
                rc = PL_ENOT_ALLOWED;
        }
        if (rc == PL_OK) {
            /* Only name and groups come from the client (§2.3.2). */
            pl_free(j->item.name);
            for (int i = 0; i < j->item.ngroups; i++)
                pl_free(j->item.groups[i]);
            pl_free(j->item.groups);
            j->item.name = want.name;
            j->item.groups = want.groups;
            j->item.ngroups = want.ngroups;
            want.name = NULL;
            want.groups = NULL;
            want.ngroups = 0;
            j->item.hidden = 0;
            rc = pl_roster_save_item(d, db, j->base.host, j->base.user,
                                     &j->item, &j->ver);
        }
        pl_roster_item_free(&want);
        return rc;
    }
    case K_REMOVE:
        rc = pl_roster_load_item(d, db, j->base.host, j->base.user, j->contact,
                                 &j->item);
        if (rc == PL_ENOT_FOUND || (rc == PL_OK && j->item.hidden))
            return PL_EITEM_NOT_FOUND; /* §2.5.3 */
        if (rc != PL_OK)
            return rc;
        j->had_to = pl_roster_has_to(&j->item) || j->item.ask;
        j->had_from = pl_roster_has_from(&j->item) || j->item.pending_in;
        return pl_roster_delete_item(d, db, j->base.host, j->base.user,
                                     j->contact, &j->ver);
    case K_OUT:
    case K_IN: {
        struct pl_account a;
        rc = d->account_get(db, j->base.host, j->base.user, &a);
        if (rc != PL_OK)
            return rc;
        rc = load_or_new(d, db, j);
        if (rc != PL_OK)
            return rc;
        int was_hidden = j->item.hidden;
        j->flags = j->kind == K_OUT ? pl_roster_outbound(&j->item, j->type)
                                    : pl_roster_inbound(&j->item, j->type);
        /* Asking for or approving a subscription puts the contact in the
         * roster (§3.1.2, §3.4); cancelling or denying does not. */
        if (j->kind == K_OUT && (j->flags & PL_R_CHANGED) &&
            (strcmp(j->type, "subscribe") == 0 ||
             strcmp(j->type, "subscribed") == 0))
            j->item.hidden = 0;
        if (was_hidden && !j->item.hidden) {
            long n = 0;
            d->kv_list(db, j->base.host, j->base.user, "roster", count_visible,
                       &n);
            if (n >= j->max_items) {
                j->flags = 0;
                return PL_ENOT_ALLOWED;
            }
        }
        if (j->flags & PL_R_CHANGED)
            rc = pl_roster_save_item(d, db, j->base.host, j->base.user,
                                     &j->item, &j->ver);
        if (rc == PL_OK && (j->flags & PL_R_KEEP_PENDING)) {
            /* Standalone XML (with its xmlns) so it parses back as is. */
            struct pl_buf x = {0};
            pl_node_serialize(pl_stanza_root(j->base.st), "", PL_NS_CLIENT, &x);
            rc = d->kv_set(db, j->base.host, j->base.user, "roster_pending",
                           j->contact, x.data + x.off, x.len);
            pl_buf_reset(&x);
        }
        if (rc == PL_OK && (j->flags & PL_R_DROP_PENDING))
            rc = d->kv_set(db, j->base.host, j->base.user, "roster_pending",
                           j->contact, NULL, 0);
        return rc;
    }
    }
    return PL_EINVAL;
}

/* ---- completions ---- */

static void done(int rc, void *arg);

/*
 * Sends the user's presence (type NULL: current) to the contact after
 * every storage job queued so far has completed: the subscription stanza
 * just routed goes through the contact's own job first, and RFC 6121
 * §3.1.5 wants presence to follow it, not overtake it.
 */
static void send_after(struct job *j, const char *type)
{
    struct job *b = pl_job_new(sizeof(*b), NULL, 0, j->base.host, j->base.user);
    b->kind = K_PRESENCE;
    b->contact = pl_strdup(j->contact);
    b->type = type ? pl_strdup(type) : NULL;
    pl_storage_submit(pl_server_loop(), run, done, b);
}

static void done(int rc, void *arg)
{
    struct job *j = arg;
    switch (j->kind) {
    case K_PRESENCE: send_presence_of(j->base.bare, j->contact, j->type); break;
    case K_GET: {
        struct pl_session *s = pl_session_by_id(j->base.sid);
        if (rc != PL_OK) {
            reply_error(j, PL_EINTERNAL_SERVER_ERROR, NULL);
            break;
        }
        if (!s)
            break;
        s->interested = 1;
        struct pl_stanza *r = pl_iq_result(j->base.st);
        const char *cv = pl_node_attr(pl_stanza_payload(j->base.st), "ver");
        char v[24];
        snprintf(v, sizeof(v), "%ld", j->roster.ver);
        /* §2.6.3: an up-to-date client gets an empty result. */
        if (!cv || strcmp(cv, v) != 0) {
            struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                                  PL_NS_ROSTER);
            pl_node_set_attr(r, q, "ver", v);
            for (int i = 0; i < j->roster.n; i++)
                if (!j->roster.v[i].hidden)
                    pl_roster_item_xml(r, q, &j->roster.v[i]);
        }
        reply_result(j, r);
        pl_stanza_unref(r);
        break;
    }
    case K_SET:
        if (rc != PL_OK) {
            reply_error(j, rc == PL_ESTORAGE ? PL_EINTERNAL_SERVER_ERROR : rc,
                        rc == PL_ENOT_ALLOWED      ? "roster is full"
                        : rc == PL_EITEM_NOT_FOUND ? "no such user"
                                                   : NULL);
            break;
        } else {
            struct pl_stanza *r = pl_iq_result(j->base.st);
            reply_result(j, r);
            pl_stanza_unref(r);
            pl_roster_push(j->base.bare, &j->item, 0, j->ver);
        }
        break;
    case K_REMOVE:
        if (rc != PL_OK) {
            reply_error(j, rc == PL_ESTORAGE ? PL_EINTERNAL_SERVER_ERROR : rc,
                        NULL);
            break;
        } else {
            struct pl_stanza *r = pl_iq_result(j->base.st);
            reply_result(j, r);
            pl_stanza_unref(r);
            pl_roster_push(j->base.bare, &j->item, 1, j->ver);
            /* §2.5.2: cancel both directions. */
            if (j->had_to)
                route_simple(j->base.bare, j->contact, "unsubscribe");
            if (j->had_from) {
                route_simple(j->base.bare, j->contact, "unsubscribed");
                send_after(j, "unavailable");
            }
        }
        break;
    case K_OUT:
        if (rc == PL_ENOT_ALLOWED)
            reply_error(j, rc, "roster is full");
        if (rc != PL_OK)
            break;
        if ((j->flags & PL_R_CHANGED) && !j->item.hidden)
            pl_roster_push(j->base.bare, &j->item, 0, j->ver);
        if (j->flags & PL_R_ROUTE) {
            /* §3.1.2: stamped with the user's bare JID. */
            pl_route_as(j->base.st, j->base.bare, j->contact);
        }
        if (j->flags & PL_R_SEND_PRESENCE)
            send_after(j, NULL);
        if (j->flags & PL_R_SEND_UNAVAIL)
            send_after(j, "unavailable");
        break;
    case K_IN:
        if (rc != PL_OK)
            break; /* no such user: presence is silently dropped */
        if ((j->flags & PL_R_CHANGED) && !j->item.hidden)
            pl_roster_push(j->base.bare, &j->item, 0, j->ver);
        if (j->flags & PL_R_DELIVER) {
            pl_stanza_set_attr(j->base.st, "to", j->base.bare);
            deliver_available(j->base.bare, j->base.st);
        }
        if (j->flags & PL_R_AUTOREPLY)
            route_simple(j->base.bare, j->contact, "subscribed");
        if (j->flags & PL_R_SEND_PRESENCE)
            send_after(j, NULL);
        /* §3.3.3: the former subscriber learns we are gone for it. */
        if (j->flags & PL_R_SEND_UNAVAIL)
            send_after(j, "unavailable");
        break;
    case K_PENDING: {
        struct pl_session *s = pl_session_by_id(j->base.sid);
        const char *p = j->pending.data ? j->pending.data + j->pending.off
                                        : NULL;
        const char *end = p ? p + j->pending.len : NULL;
        while (s && p && p < end) {
            size_t n = strlen(p);
            struct pl_stanza *st = NULL;
            if (pl_xml_parse_fragment(p, n, &st) == PL_OK) {
                pl_route_to_session(s, st);
                pl_stanza_unref(st);
            }
            p += n + 1;
        }
        break;
    }
    }
    job_free(j);
}

/* ---- hooks ---- */

/* RFC 6121 §2.3.3: only the account itself reads and updates its
 * roster; anyone else is <forbidden/>.  The sender decides, not the
 * session: a stanza parked by an outgoing filter (blocking) is routed
 * later without its origin. */
static int own_roster(struct pl_event *ev)
{
    return ev->session && ev->session->jid && pl_event_is_self(ev);
}

static int not_own(struct pl_event *ev)
{
    return pl_event_is_self(ev) ? PL_PASS : PL_EFORBIDDEN;
}

static int on_get(struct pl_event *ev, void *state)
{
    if (!own_roster(ev))
        return not_own(ev);
    struct job *j = job_new(K_GET, ev, ev->host->domain,
                            ev->session->jid->local);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

static int on_set(struct pl_event *ev, void *state)
{
    struct state *s = state;
    if (!own_roster(ev))
        return not_own(ev);
    struct pl_node *q = pl_stanza_payload(ev->stanza);
    /* §2.3.3: exactly one item. */
    if (pl_node_count_elems(q) != 1)
        return PL_EBAD_REQUEST;
    struct pl_node *item = pl_node_child(q, "item", PL_NS_ROSTER);
    if (!item)
        return PL_EBAD_REQUEST;
    const char *jid = pl_node_attr(item, "jid");
    struct pl_jid *cj = NULL;
    if (!jid || pl_jid_parse(pl_str_c(jid), &cj) != PL_OK)
        return PL_EJID_MALFORMED;
    const char *sub = pl_node_attr(item, "subscription");
    int remove = sub && strcmp(sub, "remove") == 0;
    struct job *j = job_new(remove ? K_REMOVE : K_SET, ev, ev->host->domain,
                            ev->session->jid->local);
    j->contact = pl_strdup(cj->bare);
    pl_jid_free(cj);
    j->max_items = s->max_items;
    if (!remove) {
        const char *name = pl_node_attr(item, "name");
        if (name && *name)
            j->item.name = pl_strdup(name);
        for (struct pl_node *g = pl_node_first_elem(item); g;
             g = pl_node_next_elem(g)) {
            if (strcmp(g->name, "group") != 0)
                continue;
            size_t len;
            const char *t = pl_node_text(ev->stanza, g, &len);
            int dup = 0;
            for (int i = 0; i < j->item.ngroups; i++)
                if (strcmp(j->item.groups[i], t) == 0)
                    dup = 1;
            /* §2.3.3: empty and duplicate groups are refused. */
            if (len == 0 || len > 1023 || dup) {
                job_free(j);
                return len == 0 ? PL_ENOT_ACCEPTABLE : PL_EBAD_REQUEST;
            }
            j->item.groups = pl_realloc(j->item.groups,
                                        (size_t)(j->item.ngroups + 1) *
                                            sizeof(char *));
            j->item.groups[j->item.ngroups++] = pl_strdup(t);
        }
    }
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

static int is_subscription(const char *type)
{
    return type &&
           (strcmp(type, "subscribe") == 0 || strcmp(type, "subscribed") == 0 ||
            strcmp(type, "unsubscribe") == 0 ||
            strcmp(type, "unsubscribed") == 0);
}

/* The user's own subscription presence, before routing. */
static int on_outgoing(struct pl_event *ev, void *state)
{
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!is_subscription(type) || !ev->session || !ev->session->jid || !ev->to)
        return PL_PASS;
    struct job *j = job_new(K_OUT, ev, ev->host->domain,
                            ev->session->jid->local);
    j->contact = pl_strdup(ev->to->bare);
    j->type = pl_strdup(type);
    j->max_items = ((struct state *)state)->max_items;
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

/* A contact's subscription presence for one of our users. */
static int on_inbound(struct pl_event *ev, void *state)
{
    const char *type = pl_stanza_attr(ev->stanza, "type");
    if (!is_subscription(type) || !ev->to || !ev->to->local || !ev->from)
        return PL_PASS;
    struct job *j = job_new(K_IN, ev, ev->host->domain, ev->to->local);
    j->contact = pl_strdup(ev->from->bare);
    j->type = pl_strdup(type);
    /* §3.1.3: the request is delivered from the contact's bare JID. */
    pl_stanza_unref(j->base.st);
    j->base.st = pl_stanza_copy(ev->stanza);
    pl_stanza_set_attr(j->base.st, "from", ev->from->bare);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_HANDLED;
}

static int on_initial(struct pl_event *ev, void *state)
{
    struct job *j = job_new(K_PENDING, ev, ev->host->domain,
                            ev->session->jid->local);
    pl_storage_submit(pl_server_loop(), run, done, j);
    return PL_PASS;
}

static int on_features(struct pl_event *ev, void *state)
{
    pl_buf_append_str(ev->data, "<ver xmlns='urn:xmpp:features:rosterver'/>"
                                "<sub xmlns='urn:xmpp:features:"
                                "pre-approval'/>");
    return PL_PASS;
}

static const struct pl_option options[] = {
    {"max_items", PL_OPT_INT, "1000", 1, 1000000, NULL,
     "Most contacts in one roster; more get <not-allowed/>.",
     offsetof(struct state, max_items)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-get/bare/" PL_NS_ROSTER ":query", on_get, 0},
    {"iq-set/bare/" PL_NS_ROSTER ":query", on_set, 0},
    {"presence/outgoing", on_outgoing, 10},
    {"presence/bare", on_inbound, 10},
    {"presence/full", on_inbound, 10},
    {"presence/initial", on_initial, 0},
    {"stream-features", on_features, 0},
    {0},
};

static const char *const features[] = {PL_NS_ROSTER, NULL};

const struct pl_module pl_mod_roster = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "roster",
    .summary = "rosters and presence subscriptions",
    .xeps = "RFC 6121 §2-3",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
};
