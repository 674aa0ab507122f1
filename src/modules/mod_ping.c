/*
 * mod_ping.c - XEP-0199 XMPP Ping: the server answers pings addressed to
 * it.  The smallest complete module; copy it to start a new one.
 */
#include "core/modapi.h"

static int on_ping(struct pl_event *ev, void *state)
{
    pl_route_result(ev->stanza);
    return PL_HANDLED;
}

static const char *const features[] = {"urn:xmpp:ping", NULL};

static const struct pl_hook_def hooks[] = {
    {"iq-get/host/urn:xmpp:ping:ping", on_ping, 0},
    {0},
};

const struct pl_module pl_mod_ping = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "ping",
    .summary = "answers XMPP pings sent to the server",
    .xeps = "XEP-0199",
    .features = features,
    .hooks = hooks,
};
