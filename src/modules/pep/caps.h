/*
 * caps.h - XEP-0115 entity capabilities for mod_pep: the verification
 * string of §5.1, its hash, and which nodes a set of features asks
 * notifications for (XEP-0163 §4.3 "+notify").
 *
 * Pure functions, unit-tested on their own (tests/unit/test_caps.c); the
 * cache of verified ver -> features and the per-session state live in
 * mod_pep.c.
 */
#ifndef PL_PEP_CAPS_H
#define PL_PEP_CAPS_H

#include "core/modapi.h"

#define PL_NS_CAPS "http://jabber.org/protocol/caps"

/*
 * Appends the verification string (§5.1) of a disco#info <query/> to
 * out.  PL_EINVAL for a result §5.4 says not to trust: two identical
 * identities or features, or two forms with the same FORM_TYPE.  Forms
 * without a hidden FORM_TYPE are left out (§5.4 3.6).
 */
int pl__pep_caps_ver_string(struct pl_stanza *st, const struct pl_node *query,
                            struct pl_buf *out);

/* Base64 of the hash named algo ("sha-1", "sha-256", "sha-512", the
 * IANA names) of s, appended to out; PL_EINVAL for another algorithm. */
int pl__pep_caps_hash(const char *algo, struct pl_str s, struct pl_buf *out);

/* Whether `ver`, announced with hash `algo`, is the hash of query. */
int pl__pep_caps_verify(struct pl_stanza *st, const struct pl_node *query,
                        const char *algo, const char *ver);

#endif
