/*
 * digest.h - HTTP Digest access authentication (RFC 7616) for the server
 * side, as SIP uses it (RFC 3261 §22, RFC 8760), without any SIP or HTTP
 * parsing: the keys an account stores, nonces, challenges, and the check of
 * a response whose parameters the caller has parsed and unquoted.
 *
 * Keys.  Parley never stores a password.  For digest it stores, per
 * algorithm, HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2),
 * username being the account's localpart and realm the host's domain
 * (pl_account_set_password() in account.h computes them with the SCRAM
 * keys, on a worker).  The password bytes are hashed as given, without
 * SASLprep or NFC: phones hash what the user typed, and no charset is
 * announced.  An HA1 opens the account to anyone who holds it, for that
 * realm: it must be kept as secret as a password (RFC 7616 §5.2).
 *
 * Algorithms: MD5 and SHA-256, the non-session variants (RFC 8760 §2.1);
 * qop "auth" only: auth-int would hash the body, which TLS protects better.
 *
 * Nonces (RFC 7616 §3.3, §5.4) are PL_DIGEST_NONCE_LEN lowercase hex digits
 * encoding the issue time, this verifier's random epoch, a serial number,
 * and 128 bits of HMAC-SHA-256 over them and the realm, keyed from the
 * server secret: checking one needs no state.  A nonce is good for
 * nonce_lifetime seconds, then stale.
 *
 * Replay (RFC 7616 §3.4 "nc", §5.5): for each nonce used, the highest nonce
 * count accepted is kept in a table of at most max_nonces entries, allocated
 * at creation; an entry is made only by a response that verified, so a
 * flood of forged requests adds nothing.  Each nc is accepted once per
 * nonce: above the highest accepted, or out of order within the 64 below
 * it (a window, as RFC 4303 §3.4.3 keeps for IPsec: UDP clients with
 * requests in flight resend a lost one after later ones passed); older
 * counts are stale.  When the table is full the
 * oldest entry goes and every nonce issued up to it that is not in the table
 * is refused as stale from then on, so forgetting never lets a replay
 * through; nonces of another epoch (an earlier run of parleyd) are stale
 * too.  A refused client just answers a new challenge.
 *
 * No qop (the RFC 2069 form): RFC 3261 §22.4 says servers MUST be backward
 * compatible with RFC 2069 and that qop "must unfortunately remain optional
 * for clients and servers to receive"; RFC 8760 §2.6 item 8 keeps it
 * optional to receive, while a UAS always sends qop and an RFC 8760 UAC
 * always answers with it.  So, when conf.rfc2069 is set (the default), a
 * response without qop, nc and cnonce is accepted for MD5 only (a client
 * that knows SHA-256 sends qop) and only once per nonce, since without nc
 * the uses of a nonce cannot be counted.  Without conf.rfc2069 it is
 * PL_DIGEST_INVALID.
 *
 * Results (pl_digest_verify):
 *   PL_DIGEST_OK       authenticated.
 *   PL_DIGEST_STALE    the response is right for its nonce, but the nonce
 *                      expired, or its nc was used or is too old, or it
 *                      was forgotten, or it is from an earlier run:
 *                      re-challenge with stale=true (RFC 7616 §3.3).
 *   PL_DIGEST_BAD      wrong response, unknown user, no key stored for the
 *                      algorithm, wrong realm, or a nonce this server did
 *                      not make (tampered): re-challenge without stale.
 *   PL_DIGEST_INVALID  a parameter is missing or malformed, or names what
 *                      was not offered (auth-int, MD5-sess...): answer 400
 *                      (RFC 7616 §3.4).
 * An unknown user, or an account with no key for the algorithm (created
 * before digest keys were stored, or with MD5 keys disabled), is checked
 * against a fake HA1 (pl_digest_fake_ha1), with the same work, and is
 * PL_DIGEST_BAD exactly like a wrong password.
 *
 * Left to the caller: looking the account up (asynchronously), comparing
 * the uri parameter with the Request-URI (RFC 8760 §2.6 item 6), the
 * opaque value, which algorithms to offer, Authentication-Info.
 *
 * A struct pl_digest is used on one thread only (the loop): its replay
 * table is not locked.  pl_digest_ha1, pl_digest_fake_ha1, pl_digest_unquote
 * and pl_digest_challenge keep no state and run anywhere.
 *
 * To extend: a new algorithm (SHA-512-256) is a value in enum
 * pl_digest_alg and a row in algs[] of digest.c; accounts then store a key
 * for it (account.c, the storage drivers).
 */
#ifndef PL_DIGEST_H
#define PL_DIGEST_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "str.h"

enum pl_digest_alg {
    PL_DIGEST_MD5 = 0,
    PL_DIGEST_SHA256 = 1,
};
#define PL_DIGEST_NALG 2
#define PL_DIGEST_MAX_LEN 32   /* bytes of the longest digest */
#define PL_DIGEST_NONCE_LEN 72 /* characters of a nonce */

/* One stored key, in struct pl_account (storage.h). */
struct pl_digest_key {
    int set;                              /* a key is stored */
    unsigned char ha1[PL_DIGEST_MAX_LEN]; /* H(user:realm:password), the
                                           * first pl_digest_len() bytes */
};

/* Digest length of a in bytes (16, 32); 0 for an unknown value. */
size_t pl_digest_len(enum pl_digest_alg a);
/* "MD5" / "SHA-256", as in the algorithm parameter; NULL if unknown. */
const char *pl_digest_alg_name(enum pl_digest_alg a);
/*
 * The algorithm parameter's value (unquoted), case-insensitively; empty
 * means MD5 (RFC 7616 §3.3).  PL_EINVAL for anything else, the -sess
 * variants included.
 */
int pl_digest_alg_parse(struct pl_str s, enum pl_digest_alg *out);

/*
 * HA1 = H(user ":" realm ":" password) into out (pl_digest_len(a) bytes).
 * PL_EINVAL for an unknown algorithm, PL_EIO if the hash fails (MD5 in a
 * FIPS-only OpenSSL).  Never keeps the password.
 */
int pl_digest_ha1(enum pl_digest_alg a, struct pl_str user, struct pl_str realm,
                  struct pl_str password, unsigned char *out);

/*
 * A deterministic fake HA1 (pl_digest_len(a) bytes) for a user without a
 * key, from the server secret: it matches no password anyone can find.
 * pl_digest_verify() uses it by itself when given no key.
 */
void pl_digest_fake_ha1(enum pl_digest_alg a, struct pl_str user,
                        struct pl_str realm, struct pl_str secret,
                        unsigned char *out);

/*
 * Appends to out the value of a parameter as received: a quoted-string
 * (RFC 3261 §25.1, RFC 7616 unq()) loses its quotes and backslashes; a
 * token is copied.  PL_EINVAL (out untouched) for an unterminated string,
 * bytes after its closing quote, or a control character inside.  For
 * callers whose parser keeps the quotes (libosip2 does).
 */
int pl_digest_unquote(struct pl_str in, struct pl_buf *out);

struct pl_digest_conf {
    long nonce_lifetime; /* seconds a nonce is accepted, 10..86400 */
    long max_nonces;     /* replay table entries, 16..16777216 */
    int rfc2069;         /* accept MD5 responses without qop, once */
};
/* The defaults: nonces live 300 s, 16384 entries, RFC 2069 accepted. */
#define PL_DIGEST_CONF_DEFAULT                                                 \
    {                                                                          \
        300, 16384, 1                                                          \
    }

struct pl_digest;

/*
 * A verifier.  secret (copied) is the server secret (pl_server_secret()),
 * so nonces stay verifiable across restarts; conf NULL means the defaults.
 * Values of conf out of bounds are a pl_assert.  Allocates the replay table
 * at once: 16 bytes per entry and 4 or 8 for its index.
 */
struct pl_digest *pl_digest_new(struct pl_str secret,
                                const struct pl_digest_conf *conf);
void pl_digest_free(struct pl_digest *d); /* NULL is fine */

/*
 * A fresh nonce for realm, issued at now (time(NULL) seconds), into out:
 * PL_DIGEST_NONCE_LEN characters and a NUL.  Every call gives a new one.
 */
void pl_digest_nonce(struct pl_digest *d, struct pl_str realm, time_t now,
                     char out[PL_DIGEST_NONCE_LEN + 1]);

/*
 * 1 if nonce is one this server made for realm (with the same secret, in
 * this run or an earlier one, expired or not), else 0.  A cheap check
 * before looking the account up: a request whose nonce fails it can be
 * challenged again at once, as pl_digest_verify() would give
 * PL_DIGEST_BAD.
 */
int pl_digest_nonce_check(const struct pl_digest *d, struct pl_str realm,
                          struct pl_str nonce);

/*
 * Appends a challenge, the value of a WWW-Authenticate or
 * Proxy-Authenticate header field:
 *   Digest realm="R", nonce="N"[, opaque="O"], algorithm=A, qop="auth"
 *   [, stale=true]
 * realm and opaque are escaped as quoted-strings; opaque NULL: none.  A
 * 401 may carry one challenge per algorithm, the preferred first (RFC 8760
 * §2.3): SHA-256, then MD5; they may share one nonce.
 */
void pl_digest_challenge(struct pl_str realm, const char *nonce,
                         const char *opaque, enum pl_digest_alg a, int stale,
                         struct pl_buf *out);

/*
 * The parameters of an Authorization (or Proxy-Authorization) Digest
 * response, unquoted (pl_digest_unquote), borrowed.  Absent ones are
 * {NULL, 0}.
 */
struct pl_digest_params {
    struct pl_str username;  /* as the client sent it */
    struct pl_str realm;     /* must equal the realm challenged */
    struct pl_str nonce;     /* one of pl_digest_nonce() */
    struct pl_str uri;       /* digest-uri, hashed as given */
    struct pl_str response;  /* hex digits, 2 * pl_digest_len() */
    struct pl_str algorithm; /* absent: MD5 */
    struct pl_str qop;       /* "auth", or absent (RFC 2069) */
    struct pl_str nc;        /* 8 hex digits, with qop */
    struct pl_str cnonce;    /* with qop */
    struct pl_str method;    /* the request's method, e.g. "REGISTER" */
};

enum pl_digest_result {
    PL_DIGEST_OK = 0,
    PL_DIGEST_STALE,
    PL_DIGEST_BAD,
    PL_DIGEST_INVALID,
};

/* "ok", "stale", "bad", "invalid": for logs. */
const char *pl_digest_result_name(enum pl_digest_result r);

/*
 * Checks p, a response to a challenge for realm (the host's domain: the
 * realm challenged, not p->realm), at now, against ha1: the key the
 * account stores for p's algorithm (pl_digest_len() bytes), or NULL for an
 * unknown user or an account without that key.  The response is compared
 * in constant time.  Records the nonce count when the result is
 * PL_DIGEST_OK and changes nothing otherwise.  See the top of this file for
 * the results.
 */
enum pl_digest_result pl_digest_verify(struct pl_digest *d, struct pl_str realm,
                                       const struct pl_digest_params *p,
                                       const unsigned char *ha1, time_t now);

/*
 * The response p calls for with key ha1 (pl_digest_len() bytes of p's
 * algorithm; p->response is ignored): RFC 7616 §3.4.1 with qop "auth", the
 * RFC 2069 form without qop.  Lowercase hex and a NUL into out, which holds
 * 2 * PL_DIGEST_MAX_LEN + 1 bytes.  PL_EINVAL for an algorithm or qop that
 * is not supported, PL_EIO if the hash fails.  For tests and for clients;
 * pl_digest_verify() computes it itself.
 */
int pl_digest_response(const unsigned char *ha1,
                       const struct pl_digest_params *p, char *out);

/* Nonces in the replay table now (at most max_nonces): for tests and
 * stats. */
size_t pl_digest_tracked(const struct pl_digest *d);

#endif
