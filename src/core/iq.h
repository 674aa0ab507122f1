/*
 * iq.h - IQ requests the server itself sends, with a callback for the
 * answer (RFC 6120 §8.2.3: every get/set gets exactly one result or
 * error).
 *
 * pl_iq_request() gives the request a unique id, remembers it with the
 * addressee, routes it, and later calls the callback exactly once: with
 * the result or error stanza the addressee sent back, or with NULL when
 * none came within the timeout (or the server shuts down).  The router
 * hands every IQ result/error addressed to a served domain or to a local
 * bare JID to pl__iq_response() first (doc/routing.md); an answer counts
 * only when its id is one of ours and its 'from' is the JID the request
 * went to, so a third party cannot answer for someone else.
 *
 * Uses: entity capabilities (XEP-0115 disco#info to a client), and later
 * anything that asks a client or a peer something (pings, federation).
 *
 * Extending: a new kind of answer matching (for example from a bare JID
 * answered by a full one) goes into pl__iq_response only.
 */
#ifndef PL_IQ_H
#define PL_IQ_H

#include "jid.h"
#include "stanza.h"

/*
 * The answer to a request: reply is the result or error IQ (borrowed: ref
 * it to keep it), or NULL on timeout.
 */
typedef void pl_iq_fn(struct pl_stanza *reply, void *arg);

/*
 * Sends st (borrowed; an <iq/> of type get or set, its id is replaced)
 * from `from` to `to` (JID strings; `from` is usually a host's domain or
 * one of its accounts) and calls cb(reply, arg) once, on the loop, when
 * the answer comes or after timeout_ms.  The callback can run before
 * pl_iq_request returns, when the router answers at once (an offline full
 * JID: <service-unavailable/>).  Returns PL_OK, PL_EINVAL if st is not a
 * get/set IQ, PL_EJID_MALFORMED if a JID does not parse; on failure
 * nothing is sent and cb never runs.
 */
int pl_iq_request(struct pl_stanza *st, const char *from, const char *to,
                  pl_iq_fn *cb, void *arg, unsigned timeout_ms);

/* Requests still waiting for their answer. */
unsigned long pl_iq_pending(void);

/*
 * Router: st is an IQ result or error from `from`.  Returns 1 when it
 * answered one of our requests (the callback ran, st is consumed), else
 * 0 and the router goes on as usual.
 */
int pl__iq_response(struct pl_stanza *st, const struct pl_jid *from);

/* Shutdown: every waiting callback runs with NULL. */
void pl__iq_shutdown(void);

#endif
