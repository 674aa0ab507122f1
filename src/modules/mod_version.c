/*
 * mod_version.c - XEP-0092 Software Version of the server.
 */
#include <sys/utsname.h>

#include "core/modapi.h"

#ifndef PARLEY_VERSION
#define PARLEY_VERSION "0.1.0"
#endif

struct state {
    int show_os; /* include the operating system */
};

static void add_text(struct pl_stanza *st, struct pl_node *parent,
                     const char *name, const char *text)
{
    struct pl_node *n = pl_node_add_child(st, parent, name,
                                          "jabber:iq:version");
    pl_node_add_text(st, n, text, strlen(text));
}

static int on_version(struct pl_event *ev, void *state)
{
    struct state *s = state;
    struct pl_stanza *r = pl_iq_result(ev->stanza);
    struct pl_node *q = pl_node_add_child(r, pl_stanza_root(r), "query",
                                          "jabber:iq:version");
    add_text(r, q, "name", "Parley");
    add_text(r, q, "version", PARLEY_VERSION);
    if (s->show_os) {
        struct utsname u;
        if (uname(&u) == 0)
            add_text(r, q, "os", u.sysname);
    }
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

static const char *const features[] = {"jabber:iq:version", NULL};

static const struct pl_option options[] = {
    {"show_os", PL_OPT_BOOL, "false", 0, 0, NULL,
     "Tell the operating system's name in version replies.",
     offsetof(struct state, show_os)},
    {0},
};

static const struct pl_hook_def hooks[] = {
    {"iq-get/host/jabber:iq:version:query", on_version, 0},
    {0},
};

const struct pl_module pl_mod_version = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "version",
    .summary = "tells the server's software name and version",
    .xeps = "XEP-0092",
    .features = features,
    .options = options,
    .hooks = hooks,
    .state_size = sizeof(struct state),
};
