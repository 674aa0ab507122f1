/*
 * router.h - stanza routing per RFC 6120 §10 and RFC 6121 §8.
 *
 * The router decides where a stanza goes once its 'from' is stamped and
 * its 'to' parsed: to the server itself (hooks "iq-get/host/<ns>:<name>"
 * ...), to an account (bare JID rules of RFC 6121 §8.5.2), to one
 * resource (§8.5.3), or to a remote domain (hook "route/remote", provided
 * by the federation module).  Whatever no hook handles gets the error the
 * RFC names.  doc/routing.md tabulates the rules.
 */
#ifndef PL_ROUTER_H
#define PL_ROUTER_H

#include "hook.h"
#include "jid.h"
#include "resources.h"
#include "stanza.h"

/*
 * Routes st (borrowed) from 'from' to 'to' (to NULL: the sender's own
 * account, RFC 6120 §10.3).  origin is the sending session or NULL for
 * server-generated stanzas.
 */
void pl_route(struct pl_stanza *st, const struct pl_jid *from,
              const struct pl_jid *to, struct pl_session *origin);

/*
 * Routes st (borrowed) as the server does for its own stanzas (no
 * origin): from and to are JID strings, parsed, normalized and stamped on
 * st.  PL_EJID_MALFORMED (nothing routed) if either does not parse.
 */
int pl_route_as(struct pl_stanza *st, const char *from, const char *to);

/*
 * What "message/delivered" hands its handlers in ev->data: which sessions
 * of the addressed account the router just gave the message to (RFC 6121
 * §8.5.2.1.1 for a bare JID, §8.5.3.1 for a full JID).  Fired after
 * delivery, so a handler sees the stanza as delivered (with whatever the
 * message/bare and message/full handlers added); stored offline messages
 * fire nothing.
 */
struct pl_delivery {
    struct pl_session *session; /* full JID: the one session, else NULL */
    int priority;               /* bare JID: the priority that got it */
    int all;                    /* bare JID: every non-negative one did */
};

/* Whether s (a session of the addressed account) received the message. */
static inline int pl_delivery_reached(const struct pl_delivery *d,
                                      const struct pl_session *s)
{
    if (d->session)
        return s == d->session;
    return s->available && s->priority >= 0 &&
           (d->all || s->priority == d->priority);
}

/* Delivers st to the full JID's session or acts as RFC 6121 §8.5.3.2. */
void pl_route_to_session(struct pl_session *s, struct pl_stanza *st);

/*
 * Builds an error reply to st (RFC 6120 §8.3): swaps to/from, type
 * 'error', keeps the original payload for IQs, adds the condition for
 * code.  Returns a new reference, or NULL when st must not get an error
 * (it is itself an error or an IQ result).
 */
struct pl_stanza *pl_stanza_error_reply(struct pl_stanza *st, int code,
                                        const char *text);
/* Sends that error back to st's sender. */
void pl_route_error(struct pl_stanza *st, int code, const char *text);
/* A result IQ for st (new reference, no payload). */
struct pl_stanza *pl_iq_result(struct pl_stanza *st);
/* Sends a reply built by the server (from = st's 'to' or the host). */
void pl_route_reply(struct pl_stanza *st, struct pl_stanza *reply);
/* Answers the IQ st with an empty result (pl_iq_result + pl_route_reply). */
void pl_route_result(struct pl_stanza *st);

/* "iq-get/host/urn:xmpp:ping:ping" style name for st into buf. */
void pl_iq_event_name(struct pl_stanza *st, const char *scope, char *buf,
                      size_t len);

#endif
