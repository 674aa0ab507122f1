/*
 * map_addr.h - SIP URIs <-> JIDs and SIP status codes <-> XMPP stanza
 * errors, as RFC 7247 §6 and §7 define them.  Pure functions: no sockets,
 * no SIP parser; the SIP front end hands in the bytes of a URI or a status
 * code and gets back a struct pl_jid, a URI string or a stanza.
 *
 * Addresses (RFC 7247 §6.4, §6.5).  A 'sip', 'sips', 'im' or 'pres' URI
 * maps to a JID: the user part is percent-decoded, must be UTF-8, and the
 * characters a JID localpart cannot hold get the XEP-0106 escapes (RFC 7247
 * names & ' /, which SIP allows raw; a percent-decoded space " : < > @ or a
 * backslash that would read as an escape are escaped the same way); the
 * localpart then goes through PRECIS (jid.h).  The host is the domainpart
 * (A-labels become U-labels, as jid.h stores them).  A "gr" URI parameter
 * (RFC 5627 GRUU, RFC 7247 §6.3) becomes the resourcepart.  The reverse
 * undoes the XEP-0106 escapes and percent-encodes what the target scheme
 * does not allow.  Examples (RFC 7247): sip:o'malley@sip.example <->
 * o\27malley@sip.example; sip:foo@sip.example;gr=bar <->
 * foo@sip.example/bar; sip:tsch%C3%BCss@xmpp.example <-> tschüss@...
 *
 * Errors (RFC 7247 §7).  pl_sip_status_for_condition() and
 * pl_sip_error_from_stanza() give the SIP final response for an XMPP error
 * (a MESSAGE bounced by the XMPP side); pl_sip_condition_for_status() and
 * pl_sip_error_reply() give the XMPP error for a SIP final response (a
 * MESSAGE the SIP side refused, or a client transaction that timed out:
 * RFC 3261 §8.1.3.1 treats Timer F as a 408, which maps to
 * <remote-server-timeout/>).
 *
 * Ownership: strings returned through char ** are pl_malloc'ed and the
 * caller's to pl_free; JIDs are the caller's to pl_jid_free; stanzas are new
 * references.  On failure nothing is returned and nothing is allocated.
 *
 * Extending: another URI scheme is a row in the scheme table of map_addr.c
 * and a case in each direction; another status code is a row in the
 * status table.
 */
#ifndef PL_SIP_MAP_ADDR_H
#define PL_SIP_MAP_ADDR_H

#include <stddef.h>

#include "jid.h"
#include "stanza.h"
#include "str.h"

enum pl_sip_scheme {
    PL_SIP_SCHEME_SIP = 1, /* sip: (RFC 3261) */
    PL_SIP_SCHEME_SIPS,    /* sips: (RFC 3261) */
    PL_SIP_SCHEME_IM,      /* im: (RFC 3860) */
    PL_SIP_SCHEME_PRES,    /* pres: (RFC 3859) */
};

/*
 * Flags.  For pl_sip_uri_to_jid(): PL_SIP_MAP_SIPS accepts sips: URIs (RFC
 * 7247 §8: a gateway must not relay them into XMPP; a server that delivers
 * over TLS itself may), PL_SIP_MAP_NO_GRUU ignores ";gr" (a bare JID).  For
 * pl_sip_jid_to_uri(): PL_SIP_MAP_GRUU appends the resource as ";gr=".
 */
#define PL_SIP_MAP_SIPS 0x1
#define PL_SIP_MAP_NO_GRUU 0x2
#define PL_SIP_MAP_GRUU 0x4

/*
 * Maps the URI uri (an addr-spec: no display name, no angle brackets, as
 * in a Request-URI or inside <...> of a From/To header) to a JID.  The
 * scheme is compared case-insensitively; a "gr" parameter with a value
 * gives the resource (one without a value, a temporary GRUU, is ignored);
 * the port, the other parameters and the headers are ignored.  A URI
 * without a user part maps to the domain JID.  *scheme (may be NULL) gets
 * the scheme.
 * Returns PL_OK, or, with no side effect:
 *   PL_EFEATURE_NOT_IMPLEMENTED  another scheme (tel:, http:...): answer
 *                                416 Unsupported URI Scheme;
 *   PL_EFORBIDDEN                sips: without PL_SIP_MAP_SIPS: 403;
 *   PL_EJID_MALFORMED            not a URI of that scheme, a password in
 *                                the userinfo, bad percent-encoding, a user
 *                                part that is not UTF-8 or no valid
 *                                localpart, a host or "gr" that is no valid
 *                                domain or resource: 400 (or 404 for a
 *                                Request-URI: no such user can exist).
 */
int pl_sip_uri_to_jid(struct pl_str uri, unsigned flags, struct pl_jid **out,
                      enum pl_sip_scheme *scheme);

/*
 * Maps jid to a URI of scheme (RFC 7247 §6.5): "sip:m&m@xmpp.example" for
 * m\26m@xmpp.example.  The domain becomes its A-label form.  The resource
 * is appended as ";gr=" for sip/sips with PL_SIP_MAP_GRUU, and dropped
 * otherwise.  *out gets a new string.  Returns PL_OK, or PL_EJID_MALFORMED
 * if the domain has no A-label form.
 */
int pl_sip_jid_to_uri(const struct pl_jid *jid, enum pl_sip_scheme scheme,
                      unsigned flags, char **out);

/*
 * Percent-decodes s (RFC 3986 §2.1) into a new string *out (*len, may be
 * NULL, gets its length; the string may hold NUL bytes).  PL_EINVAL on a
 * '%' not followed by two hex digits.
 */
int pl_sip_pct_decode(struct pl_str s, char **out, size_t *len);

/* ---- errors ---- */

/* Flags of pl_sip_status_for_condition(). */
#define PL_SIP_ERR_BARE 0x1        /* the error is about a bare JID: 6xx */
#define PL_SIP_ERR_NEW_ADDRESS 0x2 /* <gone/> carries a new address: 301 */

/*
 * RFC 7247 §7.1, Table 2: the SIP final response for the stanza error
 * condition cond (an RFC 6120 §8.3.3 element name).  Choices where the
 * table offers two: 4xx for a full JID, 6xx (or 501) for a bare one
 * (notes 1 and 2); <remote-server-not-found/> 404; <unexpected-request/>
 * 491; <service-unavailable/> 403 (note 5: never 503).  An unknown
 * condition counts as <undefined-condition/> (400).  405, for
 * <feature-not-implemented/> about a full JID, needs an Allow header.
 */
int pl_sip_status_for_condition(const char *cond, unsigned flags);

/* What a SIP final response says, taken from an XMPP error stanza. */
struct pl_sip_error {
    int status;    /* final response code, 300..699 */
    char *reason;  /* Reason-Phrase from the error's <text/> (RFC 7247 §7),
                      sanitized (one line, at most 128 bytes); NULL: use
                      pl_sip_reason(status) */
    char *contact; /* 301/302: the new address from <gone/>/<redirect/>
                      as a sip: URI, for a Contact header; NULL if none */
};

/*
 * Fills *out from err, a stanza of type 'error' (the bounce of something
 * the SIP side sent): its <error/> child's condition, whether its 'from' is
 * a bare or a full JID, the new address in <gone/> or <redirect/> (an
 * xmpp: URI or a JID becomes a sip: URI; <gone/> without a usable address
 * is 410).  PL_EINVAL if err has no <error/> child (then out->status is
 * still 500 and the strings NULL, so the caller can answer anyway).
 * Free with pl_sip_error_clear().
 */
int pl_sip_error_from_stanza(struct pl_stanza *err, struct pl_sip_error *out);
void pl_sip_error_clear(struct pl_sip_error *e);

/*
 * RFC 7247 §7.2, Table 3: the XMPP error for the SIP final response
 * status (unlisted codes by class: 3xx <redirect/>, 4xx <bad-request/>,
 * 5xx <internal-server-error/>, 6xx <recipient-unavailable/>).  *cond and
 * *type (either may be NULL) get the condition element name and the RFC
 * 6120 §8.3.2 error type.  Returns the PL_E* code closest to it (for
 * pl_stanza_error_reply(); <redirect/>, <gone/> and
 * <registration-required/> have none and give PL_ERECIPIENT_UNAVAILABLE,
 * PL_EITEM_NOT_FOUND and PL_ENOT_AUTHORIZED), or PL_OK for 1xx and 2xx
 * (not an error: *cond and *type are set to NULL).
 */
int pl_sip_condition_for_status(int status, const char **cond,
                                const char **type);

/*
 * The error reply to st (as pl_stanza_error_reply() in router.h builds it)
 * for the SIP final response status, with the exact condition of Table 3.
 * reason (may be empty) becomes the <text/> (RFC 7247 §7); contact (may be
 * empty), the Contact of a 3xx, becomes the character data of <gone/> or
 * <redirect/> as an xmpp: URI when it maps to a JID (RFC 7247 §7.2 note 1).
 * Returns a new reference, or NULL when st must not get an error (it is
 * itself an error) or status is not a failure (below 300).
 */
struct pl_stanza *pl_sip_error_reply(struct pl_stanza *st, int status,
                                     struct pl_str reason,
                                     struct pl_str contact);

/* The RFC 3261 §21 (and RFC 3265, 3903, 6665) Reason-Phrase of status;
 * for a code without one, its class: "Progress", "Success" or "Failure"
 * (a UAC treats an unknown code as x00 of its class, §8.1.3.2).  Never
 * NULL. */
const char *pl_sip_reason(int status);

#endif
