/*
 * s2s.h - server-to-server streams (RFC 6120): federation with other XMPP
 * servers, both ways.
 *
 * Outgoing: the router's "route/remote" hook hands every stanza for a
 * domain this server does not serve to the link from the sender's host to
 * that domain, creating it if needed.  A link resolves the domain (static
 * route, else DNS SRV _xmpps-server._tcp and _xmpp-server._tcp, else the
 * domain's A/AAAA on 5269), connects (direct TLS or STARTTLS), checks the
 * peer's certificate (RFC 6125), authenticates with SASL EXTERNAL
 * (XEP-0178) or Server Dialback (XEP-0220), and then sends what queued
 * meanwhile, in order.  A link that cannot be made bounces each queued
 * stanza with <remote-server-not-found/> or, after s2s.connect_timeout,
 * <remote-server-timeout/>, and logs one line that says why.
 *
 * Incoming: listeners with protocol "s2s" accept peers, offer STARTTLS,
 * SASL EXTERNAL when the peer's certificate is valid for the domain it
 * claims, and dialback (verified over a link back to that domain).  Every
 * stanza must come from a domain authenticated on its stream (else
 * <invalid-from/>) to a domain served here (else <host-unknown/>); it is
 * then routed as any stanza from a remote JID.
 *
 * XEP-0288 (s2s.bidi): one connection carries both directions with peers
 * that support it.
 */
#ifndef PL_S2S_H
#define PL_S2S_H

#include "buf.h"
#include "config.h"

/* The front end is pl_mod_s2s (module.h): it serves the listeners with
 * protocol "s2s" and, with s2s.enable, every host's "route/remote". */

/*
 * Appends the links as a JSON array to out: for each, direction ("out" or
 * "in"), local and remote domains, state, auth method, whether TLS is up,
 * whether it is bidirectional (XEP-0288),
 * queued stanzas and bytes, age in seconds, stanzas sent and received, and
 * the last error.  What `parleyctl s2s` shows.
 */
void pl_s2s_links_json(struct pl_buf *out);

#endif
