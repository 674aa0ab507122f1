/*
 * scram.h - SCRAM (RFC 5802, RFC 7677) for the server side, with channel
 * binding (RFC 5929 tls-server-end-point, RFC 9266 tls-exporter), and the
 * key derivation that turns a password into what we store.
 *
 * Parley never stores a password: only, per hash, the salt, the iteration
 * count, StoredKey and ServerKey.  pl_scram_derive() is expensive on purpose
 * (PBKDF2) and must run off the event loop (see work.h).
 *
 * The exchange is a small state machine with no I/O: the stream layer
 * calls client_first, looks the user's keys up asynchronously, calls
 * server_first, then client_final.  Errors: PL_EINVAL (malformed-request),
 * PL_ENOT_AUTHORIZED (not-authorized: wrong proof, unknown user, channel
 * binding mismatch or downgrade), PL_EFORBIDDEN (invalid-authzid).
 */
#ifndef PL_SCRAM_H
#define PL_SCRAM_H

#include <stddef.h>

#include "buf.h"
#include "str.h"

enum pl_scram_hash {
    PL_SCRAM_SHA1 = 0,
    PL_SCRAM_SHA256 = 1,
};
#define PL_SCRAM_NHASH 2
#define PL_SCRAM_MAX_KEY 64  /* bytes, enough for SHA-512 */
#define PL_SCRAM_MAX_SALT 64 /* bytes */

/* Digest length of h in bytes (20 or 32). */
size_t pl_scram_hash_len(enum pl_scram_hash h);
/* "SHA-1" / "SHA-256", as in mechanism names. */
const char *pl_scram_hash_name(enum pl_scram_hash h);
/* HMAC-H(key, data) (RFC 2104) into out, pl_scram_hash_len(h) bytes;
 * PL_EIO only if OpenSSL fails.  The digests are fetched once. */
int pl_scram_hmac(enum pl_scram_hash h, const void *key, size_t klen,
                  const void *data, size_t dlen, unsigned char *out);

struct pl_scram_keys {
    enum pl_scram_hash hash;                    /* which digest */
    unsigned iterations;                        /* PBKDF2 rounds */
    size_t salt_len;                            /* bytes of salt */
    unsigned char salt[PL_SCRAM_MAX_SALT];      /* random per account */
    unsigned char stored_key[PL_SCRAM_MAX_KEY]; /* H(ClientKey) */
    unsigned char
        server_key[PL_SCRAM_MAX_KEY]; /* HMAC(SaltedPassword, "Server Key") */
};

/*
 * SASLprep (RFC 4013) of a password or username: mapping, NFKC,
 * prohibited output, bidi.  *out is a new NUL-terminated string.
 * PL_EINVAL if the string is prohibited.
 */
int pl_saslprep(struct pl_str in, char **out);

/*
 * Derives keys from a password (SASLprep applied here).  salt NULL makes a
 * random salt of 16 bytes.  Blocking and slow: call from a worker.
 */
int pl_scram_derive(enum pl_scram_hash h, struct pl_str password,
                    const unsigned char *salt, size_t salt_len,
                    unsigned iterations, struct pl_scram_keys *out);

/*
 * Checks a plaintext password against stored keys (for SASL PLAIN), in
 * constant time.  Returns 1 on match, 0 otherwise.  Blocking: call from a
 * worker.
 */
int pl_scram_verify_password(const struct pl_scram_keys *keys,
                             struct pl_str password);

/*
 * Deterministic fake keys for an unknown user, so that a probe sees a
 * stable salt and cannot tell unknown users from wrong passwords.
 * secret is a server-wide random value.
 */
void pl_scram_fake_keys(enum pl_scram_hash h, struct pl_str username,
                        struct pl_str secret, unsigned iterations,
                        struct pl_scram_keys *out);

struct pl_scram_server;

/*
 * plus: this is the -PLUS mechanism.  server_offers_plus: the server
 * advertised -PLUS mechanisms in this exchange (so a client that says "y"
 * is being downgraded and must fail, RFC 5802 §6).
 */
struct pl_scram_server *pl_scram_server_new(enum pl_scram_hash h, int plus,
                                            int server_offers_plus);
void pl_scram_server_free(struct pl_scram_server *s);

/*
 * Parses client-first-message.  On success *username borrows the SASLprep'd,
 * =2C/=3D-decoded username and *cb_type the requested channel binding type
 * ("tls-exporter", "tls-server-end-point") or NULL when none.  An authzid,
 * if given, is available through pl_scram_server_authzid().
 */
int pl_scram_server_client_first(struct pl_scram_server *s, struct pl_str msg,
                                 const char **username, const char **cb_type);
const char *pl_scram_server_authzid(const struct pl_scram_server *s);

/* Builds server-first-message into out (keys copied). */
int pl_scram_server_first(struct pl_scram_server *s,
                          const struct pl_scram_keys *keys, struct pl_buf *out);

/*
 * Verifies client-final-message.  cb_data is the channel binding data of
 * the type requested (NULL/0 when none).  On success writes
 * server-final-message ("v=...") into out.  One attempt per exchange: after
 * this call, success or not, every step returns PL_EINVAL.  A malformed
 * message is PL_EINVAL; a wrong proof, nonce or channel binding is
 * PL_ENOT_AUTHORIZED.
 */
int pl_scram_server_client_final(struct pl_scram_server *s, struct pl_str msg,
                                 const unsigned char *cb_data, size_t cb_len,
                                 struct pl_buf *out);

/*
 * Strict RFC 4648 base64, appending to out.  decode: PL_EINVAL on any bad
 * character, whitespace or padding, and then out is untouched.
 */
void pl_base64_encode(const unsigned char *in, size_t len, struct pl_buf *out);
int pl_base64_decode(struct pl_str in, struct pl_buf *out);

/*
 * Internal, for tests: use nonce (printable, no ',') as the server part of
 * the nonce instead of a random one, to replay the RFC examples.  Call
 * before pl_scram_server_first().
 */
void pl__scram_server_set_nonce(struct pl_scram_server *s, const char *nonce);

#endif
