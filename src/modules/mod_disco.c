/*
 * mod_disco.c - XEP-0030 Service Discovery for the server and accounts.
 *
 * Features come from the descriptors of the modules enabled on the host
 * (no central list).  Modules with dynamic items or identities add them
 * through the events "disco-info/host" and "disco-items/host": ev->data
 * is the <query/> node of the reply, ev->stanza the reply itself.
 */
#include "core/modapi.h"

static void add_feature(struct pl_stanza *r, struct pl_node *q,
                        const char *var)
{
    struct pl_node *f = pl_node_add_child(r, q, "feature", PL_NS_DISCO_INFO);
    pl_node_set_attr(r, f, "var", var);
}

static void add_identity(struct pl_stanza *r, struct pl_node *q,
                         const char *cat, const char *type, const char *name)
{
    struct pl_node *i = pl_node_add_child(r, q, "identity",
                                          PL_NS_DISCO_INFO);
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
    struct pl_event e = {"disco-info/host", ev->host, ev->session, r,
                         ev->from, ev->to, q};
    pl_hook_fire(&e);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

static int on_host_items(struct pl_event *ev, void *state)
{
    if (pl_node_attr(pl_stanza_payload(ev->stanza), "node"))
        return PL_EITEM_NOT_FOUND;
    struct pl_stanza *r;
    struct pl_node *q = reply_query(ev, PL_NS_DISCO_ITEMS, &r);
    struct pl_event e = {"disco-items/host", ev->host, ev->session, r,
                         ev->from, ev->to, q};
    pl_hook_fire(&e);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

/* An account's own info (XEP-0030 §3.1 example of account/registered). */
static int on_account_info(struct pl_event *ev, void *state)
{
    if (pl_node_attr(pl_stanza_payload(ev->stanza), "node"))
        return PL_PASS;
    struct pl_stanza *r;
    struct pl_node *q = reply_query(ev, PL_NS_DISCO_INFO, &r);
    add_identity(r, q, "account", "registered", NULL);
    add_feature(r, q, PL_NS_DISCO_INFO);
    add_feature(r, q, PL_NS_DISCO_ITEMS);
    struct pl_event e = {"disco-info/account", ev->host, ev->session, r,
                         ev->from, ev->to, q};
    pl_hook_fire(&e);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

static int on_account_items(struct pl_event *ev, void *state)
{
    if (pl_node_attr(pl_stanza_payload(ev->stanza), "node"))
        return PL_PASS;
    struct pl_stanza *r;
    struct pl_node *q = reply_query(ev, PL_NS_DISCO_ITEMS, &r);
    struct pl_event e = {"disco-items/account", ev->host, ev->session, r,
                         ev->from, ev->to, q};
    pl_hook_fire(&e);
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
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
