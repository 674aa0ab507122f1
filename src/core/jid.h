/*
 * jid.h - XMPP addresses per RFC 7622, parsed and normalized once, at the
 * edge (the stream layer), so the rest of the server compares bytes.
 *
 * Normalization: the localpart is enforced with the PRECIS
 * UsernameCaseMapped profile (RFC 8265 §3.3), the domainpart is an IDNA2008
 * domain (libidn2; stored lowercase, as a U-label string in UTF-8, trailing
 * dot removed) or an IP literal, the resourcepart is enforced with the
 * OpaqueString profile (RFC 8265 §4.2).  Each part is 1..1023 bytes.
 *
 * A struct pl_jid is one allocation holding all of its strings; it is
 * immutable once built.  pl_jid_free() releases it.
 */
#ifndef PL_JID_H
#define PL_JID_H

#include "str.h"

struct pl_jid {
    const char *local;    /* normalized localpart or NULL */
    const char *domain;   /* normalized domainpart, never NULL */
    const char *resource; /* normalized resourcepart or NULL */
    const char *bare;     /* "local@domain" or "domain" */
    const char *full;     /* bare plus "/resource" when there is one */
};

/* Parses and normalizes in; PL_EJID_MALFORMED if it is not a valid JID. */
int pl_jid_parse(struct pl_str in, struct pl_jid **out);
/* Builds from parts (local and resource may be NULL), normalizing each. */
int pl_jid_make(const char *local, const char *domain, const char *resource,
                struct pl_jid **out);
/* Same JID without its resource (a new object). */
struct pl_jid *pl_jid_bare(const struct pl_jid *j);
struct pl_jid *pl_jid_dup(const struct pl_jid *j);
void pl_jid_free(struct pl_jid *j);

/* Part-wise preparation, for callers that hold one part (registration). */
int pl_jid_prep_local(struct pl_str in, char **out);    /* new string */
int pl_jid_prep_domain(struct pl_str in, char **out);   /* new string */
int pl_jid_prep_resource(struct pl_str in, char **out); /* new string */

#endif
