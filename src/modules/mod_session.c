/*
 * mod_session.c - the RFC 3921 <session/> establishment, kept optional
 * (RFC 6121 appendix E) for old clients that still send it.
 */
#include "core/modapi.h"

#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"

static int on_features(struct pl_event *ev, void *state)
{
    pl_buf_append_str(ev->data,
                      "<session xmlns='" NS_SESSION "'><optional/></session>");
    return PL_PASS;
}

static int on_session(struct pl_event *ev, void *state)
{
    if (ev->to->local &&
        (!ev->session || strcmp(ev->to->bare, ev->session->jid->bare)))
        return PL_PASS;
    pl_route_result(ev->stanza);
    return PL_HANDLED;
}

static const struct pl_hook_def hooks[] = {
    {"stream-features", on_features, 0},
    {"iq-set/host/" NS_SESSION ":session", on_session, 0},
    {"iq-set/bare/" NS_SESSION ":session", on_session, 0},
    {0},
};

const struct pl_module pl_mod_session = {
    .abi = PL_MODULE_ABI,
    .default_on = 1,
    .name = "session",
    .summary = "accepts the legacy session establishment of RFC 3921",
    .xeps = "RFC 3921",
    .hooks = hooks,
};
