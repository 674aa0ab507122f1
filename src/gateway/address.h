/*
 * address.h - foreign addresses as JIDs of the gateway's domains.
 *
 * XEP-0106 (JID Escaping) turns an e-mail local part or any string with
 * the ten characters a JID localpart cannot carry into a localpart and
 * back: alice@example.org at mail.<host> is alice\40example.org@mail.<host>.
 * Phone numbers are E.164 ("+15551234"), which need no escaping:
 * +15551234@sms.<host>.
 *
 * API: pl_gw_escape/pl_gw_unescape (XEP-0106 §3.2, §3.3),
 * pl_gw_e164 (normalizes what a user typed to E.164, with a default
 * country code for national numbers).  All return PL_OK or PL_EINVAL
 * with *out untouched; results are new strings (pl_free).
 *
 * Extending: another foreign address kind (an IRC nick, a SIP URI) gets
 * its own pl_gw_<kind> here, with its table in tests/unit/test_gw_address.c.
 */
#ifndef PL_GW_ADDRESS_H
#define PL_GW_ADDRESS_H

#include <stddef.h>

/*
 * XEP-0106 §3.2: escapes the space, " & ' / : < > @ and the backslash
 * (only where it starts one of the ten escape sequences, so "c:\net"
 * keeps its backslash).  Refused: an empty string, and one beginning or
 * ending with a space (§3.2: \20 never starts or ends a localpart).
 */
int pl_gw_escape(const char *in, char **out);
/* XEP-0106 §3.3: each of the ten sequences \20 ... \5c becomes its
 * character; anything else (\5z, a lone backslash) stays as it is. */
int pl_gw_unescape(const char *in, char **out);

/*
 * E.164 (ITU-T E.164: at most 15 digits after '+').  Accepts "+CC...",
 * "00CC..." (international prefix) and, when default_cc is a country code
 * ("1", "33"), a national number "0..." or one without prefix, whose
 * leading trunk 0 is dropped.  Spaces, dots, dashes and parentheses are
 * ignored as visual separators (not between '+' and the first digit).
 * Refused: letters or other characters, fewer than min_digits (a sanity
 * floor, 6 here) or more than 15 digits, a number starting with 0 after
 * the country code prefix, and a national number with no default_cc.
 */
int pl_gw_e164(const char *in, const char *default_cc, char **out);

#endif
