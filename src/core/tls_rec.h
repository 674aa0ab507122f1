/*
 * tls_rec.h - TLS 1.3 records after the handshake, without OpenSSL's
 * connection object: an idle TLS session costs a few hundred bytes
 * instead of about 14 KB.
 *
 * OpenSSL runs the handshake (and everything before the protocol says it
 * needs nothing more of it: SASL's channel binding, a peer's
 * certificate).  Meanwhile a server connection is watched: OpenSSL's key
 * log callback hands over the application traffic secrets and its
 * message callback counts the records each way since each side's
 * Finished, which are the sequence numbers.  pl_tls_rec_take then builds
 * the record layer of RFC 8446 §5 from them and the SSL object can be
 * freed: records are sealed and opened with the negotiated AEAD
 * (AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305) through one cipher
 * context per thread, keyed per record; KeyUpdate (§4.6.3) is honoured
 * both ways and our own write key is renewed long before AES-GCM's limit
 * (§5.5); alerts follow §6 (close_notify ends the stream, a fatal one is
 * sent for a bad record and the connection fails).
 *
 * Only TLS 1.3 is taken over; TLS 1.2 sessions keep OpenSSL.  Bytes read
 * and not yet handed out (a record's rest, a partial record) are the only
 * memory besides the keys, and are freed once delivered.
 */
#ifndef PL_TLS_REC_H
#define PL_TLS_REC_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pl_tls_rec;

/* On a server context: hand the traffic secrets of watched connections
 * to this module (the key log callback; nothing is written anywhere). */
void pl_tls_rec_keylog(SSL_CTX *ctx);
/* Before the handshake of ssl: watch it so that it can be taken over. */
int pl_tls_rec_watch(SSL *ssl);
/*
 * The record layer of ssl into *out: PL_OK, and ssl is no longer needed
 * (the caller frees it; nothing may be written to or read from it any
 * more); PL_EAGAIN, not now (the handshake is not over, or bytes are
 * still inside OpenSSL: a record partly read); PL_ETLS, never (not
 * TLS 1.3, another cipher, not watched, a KeyUpdate already seen).
 */
int pl_tls_rec_take(SSL *ssl, struct pl_tls_rec **out);
void pl_tls_rec_free(struct pl_tls_rec *r);

/*
 * Plaintext read from fd into dst (at most want): > 0 bytes; 0 at the
 * end (close_notify or the socket's end); -1 with errno EAGAIN when
 * nothing is there yet, or another errno when the connection failed (a
 * fatal alert was received, or was sent: EPROTO).
 */
ssize_t pl_tls_rec_read(struct pl_tls_rec *r, int fd, void *dst, size_t want);
/* Bytes already read that pl_tls_rec_read can return without the
 * socket (no event of the socket will announce them). */
int pl_tls_rec_pending(const struct pl_tls_rec *r);
/*
 * Seals and writes up to n bytes of p: the count taken (sealed: sent, or
 * queued inside to go first next time), or -1 with errno EAGAIN (the
 * socket is full with earlier records) or another errno (failed).
 */
ssize_t pl_tls_rec_write(struct pl_tls_rec *r, int fd, const void *p, size_t n);
/* Writes the records sealed and not sent yet: 1 all gone, 0 the socket
 * is full, -1 failed. */
int pl_tls_rec_flush(struct pl_tls_rec *r, int fd);
/* Bytes sealed and not written yet. */
size_t pl_tls_rec_unsent(const struct pl_tls_rec *r);
/* Best effort close_notify (§6.1), without waiting. */
void pl_tls_rec_close_notify(struct pl_tls_rec *r, int fd);

/* For tests: a record layer from known secrets (cipher: the TLS 1.3
 * suite's IANA number, 0x1301-0x1303) and the sequence numbers. */
struct pl_tls_rec *pl_tls_rec_new(unsigned suite, const unsigned char *rsecret,
                                  const unsigned char *wsecret, uint64_t rseq,
                                  uint64_t wseq);
/* For tests and the fuzz target: one record of inner content type type
 * (p, n bytes, then pad zero bytes) into out, which has room for n + pad
 * + 22 bytes; a well-formed KeyUpdate message renews the write key after
 * it, as sending one does.  Its size, 0 on failure. */
size_t pl_tls_rec_seal_raw(struct pl_tls_rec *r, int type, const void *p,
                           size_t n, size_t pad, unsigned char *out);
/* HKDF-Expand-Label of RFC 8446 §7.1 with an empty context. */
int pl_tls_rec_expand_label(unsigned suite, const unsigned char *secret,
                            const char *label, unsigned char *out, size_t len);

#endif
