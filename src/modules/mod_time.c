/*
 * mod_time.c - XEP-0202 Entity Time of the server (always UTC).
 */
#include <time.h>

#include "core/modapi.h"

static int on_time(struct pl_event *ev, void *state)
{
    struct pl_stanza *r = pl_iq_result(ev->stanza);
    struct pl_node *t = pl_node_add_child(r, pl_stanza_root(r), "time",
                                          "urn:xmpp:time");
    char utc[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(utc, sizeof(utc), "%Y-%m-%dT%H:%M:%SZ", &tm);
    struct pl_node *n = pl_node_add_child(r, t, "tzo", "urn:xmpp:time");
    pl_node_add_text(r, n, "+00:00", 6);
    n = pl_node_add_child(r, t, "utc", "urn:xmpp:time");
    pl_node_add_text(r, n, utc, strlen(utc));
    pl_route_reply(ev->stanza, r);
    pl_stanza_unref(r);
    return PL_HANDLED;
}

static const char *const features[] = {"urn:xmpp:time", NULL};

static const struct pl_hook_def hooks[] = {
    {"iq-get/host/urn:xmpp:time:time", on_time, 0},
    {0},
};

const struct pl_module pl_mod_time = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "time",
    .summary = "tells the server's time",
    .xeps = "XEP-0202",
    .features = features,
    .hooks = hooks,
};
