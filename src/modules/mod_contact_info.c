/*
 * mod_contact_info.c - XEP-0157 Contact Addresses for XMPP Services: the
 * server's disco#info carries a XEP-0128 data form (FORM_TYPE
 * http://jabber.org/network/serverinfo) with the addresses configured for
 * the host: abuse, admin, feedback, sales, security, status and support,
 * each a list of URIs (mailto:, xmpp:, https:).  Unset lists are left out;
 * with none set, no form is added.
 *
 * Extending: a new registered field is a row in `fields` and an option.
 */
#include "core/modapi.h"

#define NS_DATA "jabber:x:data"
#define FORM_TYPE "http://jabber.org/network/serverinfo"

struct state {
    struct pl_strlist abuse, admin, feedback, sales, security, status, support;
};

static const struct {
    const char *var; /* field name (XEP-0157 §5) */
    size_t offset;   /* list in struct state */
} fields[] = {
    {"abuse-addresses", offsetof(struct state, abuse)},
    {"admin-addresses", offsetof(struct state, admin)},
    {"feedback-addresses", offsetof(struct state, feedback)},
    {"sales-addresses", offsetof(struct state, sales)},
    {"security-addresses", offsetof(struct state, security)},
    {"status-addresses", offsetof(struct state, status)},
    {"support-addresses", offsetof(struct state, support)},
};

#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static const struct pl_strlist *list_at(const struct state *s, size_t i)
{
    return (const struct pl_strlist *)((const char *)s + fields[i].offset);
}

static void add_value(struct pl_stanza *r, struct pl_node *f, const char *v)
{
    struct pl_node *n = pl_node_add_child(r, f, "value", NS_DATA);
    pl_node_add_text(r, n, v, strlen(v));
}

static int on_info(struct pl_event *ev, void *state)
{
    const struct state *s = state;
    struct pl_stanza *r = ev->stanza;
    struct pl_node *q = ev->data;
    size_t any = 0;
    for (size_t i = 0; i < NFIELDS; i++)
        any += (size_t)list_at(s, i)->n;
    if (!any)
        return PL_PASS;
    struct pl_node *x = pl_node_add_child(r, q, "x", NS_DATA);
    pl_node_set_attr(r, x, "type", "result");
    struct pl_node *ft = pl_node_add_child(r, x, "field", NS_DATA);
    pl_node_set_attr(r, ft, "var", "FORM_TYPE");
    pl_node_set_attr(r, ft, "type", "hidden");
    add_value(r, ft, FORM_TYPE);
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct pl_strlist *l = list_at(s, i);
        if (!l->n)
            continue;
        struct pl_node *f = pl_node_add_child(r, x, "field", NS_DATA);
        pl_node_set_attr(r, f, "var", fields[i].var);
        for (int k = 0; k < l->n; k++)
            add_value(r, f, l->v[k]);
    }
    return PL_PASS;
}

#define LIST(name, what)                                                       \
    {                                                                          \
#name, PL_OPT_STRLIST, "[]", 0, 0, NULL,                               \
            "Addresses (URIs: mailto:, xmpp:, https:) for " what ".",          \
            offsetof(struct state, name)                                       \
    }

static const struct pl_option options[] = {
    LIST(abuse, "reports of abusive traffic"),
    LIST(admin, "the service administrators"),
    LIST(feedback, "customer feedback"),
    LIST(sales, "sales and marketing"),
    LIST(security, "security concerns"),
    LIST(status, "service status updates"),
    LIST(support, "customer support"),
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"disco-info/host", on_info, 0},
    {0},
};

const struct pl_module pl_mod_contact_info = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "contact_info",
    .summary = "contact addresses of the service in its disco#info",
    .xeps = "XEP-0157, XEP-0128",
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
};
