/*
 * mod_disco.c - XEP-0030 Service Discovery for the server and accounts.
 *
 * Features come from the descriptors of the modules enabled on the host
 * (no central list); the host's items are the service domains claimed on
 * it with a name (pl_service_claim, service.h: conference.<host> ...).
 * Modules with dynamic items or identities add them through the events
 * "disco-info/host" and "disco-items/host": ev->data is the <query/> node
 * of the reply, ev->stanza the reply itself.
 */
#include "core/modapi.h"
#include "roster/roster.h"

static void add_feature(struct pl_stanza *r, struct pl_node *q, const char *var)
{
    struct pl_node *f = pl_node_add_child(r, q, "feature", PL_NS_DISCO_INFO);
    pl_node_set_attr(r, f, "var", var);
}

static void add_identity(struct pl_stanza *r, struct pl_node *q,
                         const char *cat, const char *type, const char *name)
{
    struct pl_node *i = pl_node_add_child(r, q, "identity", PL_NS_DISCO_INFO);
    pl_node_set_attr(r, i, "category", cat);
    pl_node_set_attr(r, i, "type", type);
    if (name)
        pl_node_set_attr(r, i, "name", name);
}

static struct pl_node *reply_query(struct pl_event *ev, const char *ns,
                                   struct pl_stanza **out)
{
    struct pl_stanza *r = pl_iq_result(ev->stanza);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query", ns);
    const char *node = pl_node_attr(pl_stanza_payload(ev->stanza), "node");
    if (node)
        pl_node_set_attr(r, q, "node", node);
    *out = r;
    return q;
}

static int on_host_info(struct pl_event *ev, void *state)
{
    if (pl_node_attr(pl_stanza_payload(ev->stanza), "node"))
        return PL_EITEM_NOT_FOUND; /* no nodes on the server itself */
    struct pl_stanza *r;
    struct pl_node *q = reply_query(ev, PL_NS_DISCO_INFO, &r);
    add_identity(r, q, "server", "im", "Parley");
    add_feature(r, q, PL_NS_DISCO_INFO);
    add_feature(r, q, PL_NS_DISCO_ITEMS);
    for (int i = 0; i < ev->host->nmods; i++) {
        const struct pl_module *m = ev->host->mods[i].mod;
        for (int j = 0; m->features && m->features[j]; j++)
            add_feature(r, q, m->features[j]);
    }
    struct pl_event e =
        {"disco-info/host", ev->host, ev->session, r, ev->from, ev->to, q};
    pl_hook_fire(&e);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

struct items {
    struct pl_stanza *r; /* the reply */
    struct pl_node *q;   /* its <query/> */
};

static void add_service(const char *domain, const char *name, void *ud)
{
    struct items *it = ud;
    struct pl_node *i = pl_node_add_child(it->r, it->q, "item",
                                          PL_NS_DISCO_ITEMS);
    pl_node_set_attr(it->r, i, "jid", domain);
    pl_node_set_attr(it->r, i, "name", name);
}

static int on_host_items(struct pl_event *ev, void *state)
{
    if (pl_node_attr(pl_stanza_payload(ev->stanza), "node"))
        return PL_EITEM_NOT_FOUND;
    struct pl_stanza *r;
    struct pl_node *q = reply_query(ev, PL_NS_DISCO_ITEMS, &r);
    /* The service domains claimed on the host (service.h), then what
     * modules add. */
    struct items it = {r, q};
    pl_host_each_service(ev->host, add_service, &it);
    struct pl_event e =
        {"disco-items/host", ev->host, ev->session, r, ev->from, ev->to, q};
    pl_hook_fire(&e);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

/* An account's own info (XEP-0030 §3.1 example of account/registered). */
static void account_info(struct pl_event *ev)
{
    struct pl_stanza *r;
    struct pl_node *q = reply_query(ev, PL_NS_DISCO_INFO, &r);
    add_identity(r, q, "account", "registered", NULL);
    add_feature(r, q, PL_NS_DISCO_INFO);
    add_feature(r, q, PL_NS_DISCO_ITEMS);
    struct pl_event e =
        {"disco-info/account", ev->host, ev->session, r, ev->from, ev->to, q};
    pl_hook_fire(&e);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
}

static void account_items(struct pl_event *ev, int visible)
{
    struct pl_stanza *r;
    struct pl_node *q = reply_query(ev, PL_NS_DISCO_ITEMS, &r);
    if (visible) {
        struct pl_event e = {"disco-items/account",
                             ev->host,
                             ev->session,
                             r,
                             ev->from,
                             ev->to,
                             q};
        pl_hook_fire(&e);
    }
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
}

/*
 * XEP-0030 §8 (Security Considerations): an account's disco#info is
 * answered only to the account itself and to entities allowed to see its
 * presence (a subscription "from" or "both" in its roster); everyone else
 * gets <service-unavailable/>, the same as for an account that does not
 * exist, and disco#items an empty result.  Deciding needs the storage
 * thread (does the account exist, what is the requester's item).
 */
struct visibility_job {
    struct pl_stanza *st; /* the request (a reference) */
    char *host, *user;    /* the account asked about */
    char *requester;      /* the requester's bare JID */
    int info;             /* disco#info (else #items) */
    int visible;          /* result */
};

static int visibility_run(const struct pl_storage_driver *d, void *db,
                          void *arg)
{
    struct visibility_job *j = arg;
    struct pl_account a;
    int rc = d->account_get(db, j->host, j->user, &a);
    if (rc != PL_OK)
        return rc == PL_ENOT_FOUND ? PL_OK : rc;
    struct pl_roster_item it = {0};
    rc = pl_roster_load_item(d, db, j->host, j->user, j->requester, &it);
    if (rc == PL_OK)
        j->visible = pl_roster_has_from(&it);
    pl_roster_item_free(&it);
    return rc == PL_ENOT_FOUND ? PL_OK : rc;
}

static void visibility_done(int rc, void *arg)
{
    struct visibility_job *j = arg;
    struct pl_jid *from = NULL, *to = NULL;
    const char *f = pl_stanza_attr(j->st, "from");
    const char *t = pl_stanza_attr(j->st, "to");
    struct pl_host *h = pl_host_find(j->host);
    if (rc != PL_OK) {
        pl_log_error("mod_disco",
                     "while checking who may discover %s@%s: "
                     "%s",
                     j->user, j->host, pl_strerror(rc));
        pl_route_error(j->st, PL_EINTERNAL_SERVER_ERROR, NULL);
    } else if (h && f && t && pl_jid_parse(pl_str_c(f), &from) == PL_OK &&
               pl_jid_parse(pl_str_c(t), &to) == PL_OK) {
        struct pl_event ev = {NULL, h, NULL, j->st, from, to, NULL};
        if (!j->info)
            account_items(&ev, j->visible);
        else if (j->visible)
            account_info(&ev);
        else
            pl_route_error(j->st, PL_ESERVICE_UNAVAILABLE, NULL);
    }
    pl_jid_free(from);
    pl_jid_free(to);
    pl_stanza_unref(j->st);
    pl_free(j->host);
    pl_free(j->user);
    pl_free(j->requester);
    pl_free(j);
}

/* Answers at once for the account itself; otherwise asks the storage
 * thread first. */
static int account_query(struct pl_event *ev, int info)
{
    if (pl_node_attr(pl_stanza_payload(ev->stanza), "node"))
        return PL_PASS;
    if (pl_event_is_self(ev)) {
        if (info)
            account_info(ev);
        else
            account_items(ev, 1);
        return PL_HANDLED;
    }
    if (!ev->from || !ev->to || !ev->to->local)
        return PL_PASS;
    struct visibility_job *j = pl_calloc(1, sizeof(*j));
    j->st = pl_stanza_ref(ev->stanza);
    j->host = pl_strdup(ev->to->domain);
    j->user = pl_strdup(ev->to->local);
    j->requester = pl_strdup(ev->from->bare);
    j->info = info;
    pl_storage_submit(pl_server_loop(), visibility_run, visibility_done, j);
    return PL_HANDLED;
}

static int on_account_info(struct pl_event *ev, void *state)
{
    return account_query(ev, 1);
}

static int on_account_items(struct pl_event *ev, void *state)
{
    return account_query(ev, 0);
}

static const struct pl_hook_def hooks[] = {
    {"iq-get/host/" PL_NS_DISCO_INFO ":query", on_host_info, 0},
    {"iq-get/host/" PL_NS_DISCO_ITEMS ":query", on_host_items, 0},
    {"iq-get/bare/" PL_NS_DISCO_INFO ":query", on_account_info, -10},
    {"iq-get/bare/" PL_NS_DISCO_ITEMS ":query", on_account_items, -10},
    {0},
};

const struct pl_module pl_mod_disco = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "disco",
    .summary = "service discovery of the server and of accounts",
    .xeps = "XEP-0030",
    .hooks = hooks,
};
