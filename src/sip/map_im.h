/*
 * map_im.h - page-mode instant messages: a SIP MESSAGE (RFC 3428) <-> an
 * XMPP <message/> (RFC 6121 §5), as RFC 7572 maps them.  Pure functions:
 * the SIP front end parses the request (or will build it) and this file
 * maps its parts.
 *
 * SIP -> XMPP (pl_sip_im_to_xmpp): Request-URI -> 'to', From -> 'from'
 * (the sender's resource, its GRUU or registration, as the resourcepart),
 * body -> <body/>, Subject -> <subject/>, Call-ID -> <thread/>,
 * Content-Language -> xml:lang, a transaction identifier -> 'id' (RFC 7572
 * Table 2).  Only text/plain is delivered (RFC 7572 §7 "MUST"); its charset
 * must be UTF-8, which is also the default (RFC 3261 §7.4.1), or US-ASCII,
 * a subset.  Anything else is refused with 415 and an Accept of
 * PL_SIP_IM_ACCEPT (RFC 3261 §21.4.13): text/html (RFC 7572's "SHOULD",
 * to XHTML-IM, which XEP-0071 has deprecated), message/cpim, and
 * application/im-iscomposing+xml, whose senders stop after a 415 (RFC 3994
 * §4).  Line ends become LF; control characters XML cannot carry become
 * U+FFFD.  The message type is 'chat', so that XMPP clients show a
 * conversation; RFC 7572 §5 asks for 'normal', which opts->type_normal
 * gives.
 *
 * XMPP -> SIP (pl_sip_im_from_xmpp): the reverse (RFC 7572 Table 1).  Only
 * a message with a <body/> becomes a MESSAGE: chat states (XEP-0085),
 * receipts (XEP-0184), markers and other body-less messages, and errors,
 * have no SIP form and are dropped without a bounce.  A groupchat message
 * is refused (<service-unavailable/>, as RFC 6121 §8.5.2.1.1 answers one
 * sent to a user).  A body over the limit is refused with
 * <policy-violation/> (RFC 7572 §6; RFC 3428 §8 caps a whole MESSAGE over
 * UDP at 1300 bytes, so a UDP sender passes 1300 minus its headers).
 *
 * Ownership: pl_sip_im_to_xmpp returns a new stanza reference; the strings
 * of struct pl_sip_im_out are the caller's, freed by
 * pl_sip_im_out_clear().  Inputs are borrowed.  On failure nothing is
 * allocated.
 *
 * Extending: another content type is a case in to_xmpp_body() of
 * map_im.c and a word in PL_SIP_IM_ACCEPT.
 */
#ifndef PL_SIP_MAP_IM_H
#define PL_SIP_MAP_IM_H

#include <stddef.h>

#include "map_addr.h"
#include "stanza.h"
#include "str.h"

/* The Accept header value of a 415 to a MESSAGE (RFC 3261 §21.4.13). */
#define PL_SIP_IM_ACCEPT "text/plain"
/* The Content-Type of the MESSAGEs pl_sip_im_from_xmpp describes. */
#define PL_SIP_IM_CONTENT_TYPE "text/plain;charset=UTF-8"
/* Default body limit in bytes, both ways (RFC 6120 §13.12: an XMPP
 * server accepts stanzas of at least 10000 bytes). */
#define PL_SIP_IM_MAX_BODY 8192

/* A parsed Content-Type value (RFC 3261 §20.15); spans into the input. */
struct pl_sip_media_type {
    struct pl_str type;    /* m-type, as written */
    struct pl_str subtype; /* m-subtype, as written */
    struct pl_str charset; /* charset parameter, unquoted; len 0: none */
};

/*
 * Parses a Content-Type (or Accept element) value: type "/" subtype and
 * ";" parameters, with optional whitespace around the separators and
 * quoted-string values.  PL_EINVAL if it is not one, or has two charset
 * parameters.
 */
int pl_sip_media_type_parse(struct pl_str value, struct pl_sip_media_type *out);
/* Whether mt is type/subtype (case-insensitive). */
int pl_sip_media_type_is(const struct pl_sip_media_type *mt, const char *type,
                         const char *subtype);

struct pl_sip_im_opts {
    size_t max_body;     /* body bytes; 0: PL_SIP_IM_MAX_BODY */
    int type_normal;     /* SIP->XMPP: type 'normal' (RFC 7572 §5), not
                            'chat' */
    unsigned addr_flags; /* PL_SIP_MAP_* (map_addr.h): SIPS and NO_GRUU
                            for the Request-URI; GRUU for the URI of a
                            'to' with a resource */
};

/* The parts of a MESSAGE request, borrowed; empty spans are absent. */
struct pl_sip_im_in {
    struct pl_str request_uri;  /* recipient (Request-URI, or To) */
    struct pl_str from_uri;     /* sender: the From URI (addr-spec) */
    const char *from_resource;  /* the sender's resource when the front
                                   end knows it (its registration);
                                   overrides a ";gr" of from_uri */
    struct pl_str content_type; /* Content-Type value */
    struct pl_str body;         /* body bytes */
    struct pl_str call_id;      /* Call-ID -> <thread/> */
    struct pl_str subject;      /* Subject -> <subject/> */
    struct pl_str language;     /* Content-Language -> xml:lang */
    struct pl_str id;           /* transaction identifier -> 'id' */
};

/*
 * Maps a MESSAGE to a <message/> in jabber:client; *out gets a new
 * reference.  On failure returns a negative code and sets *status to the
 * SIP final response to send:
 *   400 PL_EBAD_REQUEST          no body, a body without Content-Type, a
 *                                malformed Content-Type, a body or Subject
 *                                that is not what its charset says, or a
 *                                From that is no address;
 *   403 PL_EFORBIDDEN            a sips: Request-URI without
 *                                PL_SIP_MAP_SIPS (RFC 7247 §8);
 *   404 PL_EITEM_NOT_FOUND       a Request-URI no JID can have;
 *   413 PL_EPOLICY_VIOLATION     a body over the limit;
 *   415 PL_ENOT_ACCEPTABLE       another type or charset (send Accept:
 *                                PL_SIP_IM_ACCEPT);
 *   416 PL_EFEATURE_NOT_IMPLEMENTED  a Request-URI of another scheme.
 */
int pl_sip_im_to_xmpp(const struct pl_sip_im_in *in,
                      const struct pl_sip_im_opts *opts, struct pl_stanza **out,
                      int *status);

/* What a MESSAGE request carries, built from a <message/>. */
struct pl_sip_im_out {
    char *request_uri;        /* recipient's sip: URI (Request-URI, To) */
    char *from_uri;           /* sender's sip: URI, ";gr=" its resource
                                 (RFC 7572 Table 1 note 1) */
    const char *content_type; /* PL_SIP_IM_CONTENT_TYPE (static) */
    char *body;               /* NULL: nothing to send */
    size_t body_len;          /* bytes of body */
    char *subject;            /* Subject value (one line) or NULL */
    char *call_id;            /* Call-ID from <thread/>, when the thread is
                                 a valid Call-ID, or NULL; a front end that
                                 reuses it must raise CSeq each time */
    char *language;           /* Content-Language or NULL */
};

/*
 * Maps msg (a <message/> whose 'to' is the SIP user, 'from' the sender) to
 * the parts of a MESSAGE.  Returns PL_OK with out->body set (send it) or
 * NULL (nothing for SIP: drop msg silently).  Otherwise a negative code to
 * bounce msg with (pl_route_error): PL_EJID_MALFORMED ('to' or 'from'
 * missing or not a JID with a SIP form), PL_ESERVICE_UNAVAILABLE
 * (groupchat), PL_EPOLICY_VIOLATION (body over the limit).  Free with
 * pl_sip_im_out_clear() after PL_OK.
 */
int pl_sip_im_from_xmpp(struct pl_stanza *msg,
                        const struct pl_sip_im_opts *opts,
                        struct pl_sip_im_out *out);
void pl_sip_im_out_clear(struct pl_sip_im_out *o);

#endif
