/*
 * tls.h - TLS contexts per virtual host: certificate loading, first-start
 * self-signed certificates, SNI selection, and the data SASL channel
 * binding needs.
 *
 * Only TLS 1.2 and 1.3 are enabled.  OpenSSL's buffers are released while
 * a connection is idle (SSL_MODE_RELEASE_BUFFERS), so an idle TLS session
 * costs little memory.  Contexts are reference counted by OpenSSL: a reload
 * (SIGHUP) builds new contexts for new connections while existing sessions
 * keep theirs.
 */
#ifndef PL_TLS_H
#define PL_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct pl_tls_host {
    char *domain;               /* the host's domain */
    SSL_CTX *ctx;               /* server context with its certificate */
    unsigned char endpoint[64]; /* tls-server-end-point hash (RFC 5929) */
    size_t endpoint_len;        /* its length, 0 if unavailable */
};

/*
 * Makes a self-signed certificate (EC P-256, SAN domain and *.domain, ten
 * years) at cert_path/key_path if cert_path does not exist.  Creates parent
 * directories; the key is written with mode 0600.
 */
int pl_tls_ensure_selfsigned(const char *domain, const char *cert_path,
                             const char *key_path);

/* Loads a context for one host.  PL_ETLS with a logged reason on error. */
int pl_tls_host_load(const char *domain, const char *cert, const char *key,
                     struct pl_tls_host **out);
void pl_tls_host_free(struct pl_tls_host *h);

/*
 * Installs an SNI callback on ctx that switches to the matching host's
 * context; lookup returns the host for a server name or NULL.
 */
void pl_tls_set_sni(SSL_CTX *ctx,
                    struct pl_tls_host *(*lookup)(const char *name));

/* Channel binding data (RFC 9266 tls-exporter: 32 bytes).  PL_ETLS if n/a. */
int pl_tls_exporter(SSL *ssl, unsigned char *out, size_t len);
/* The host context currently selected for ssl (after SNI). */
struct pl_tls_host *pl_tls_host_of(SSL *ssl);

/*
 * Server-to-server helpers.  A client context for outgoing connections
 * presents the host's certificate (cert/key, both may be NULL for none)
 * so that the peer can authenticate it (SASL EXTERNAL, XEP-0178), and
 * offers ALPN "xmpp-server" (XEP-0368).  The handshake accepts any server
 * certificate; pl_tls_verify_peer judges it afterwards.
 */
int pl_tls_client_ctx(const char *cert, const char *key, SSL_CTX **out);
/* The trust anchors: file and/or dir (PEM; "" for none of that kind), or
 * the system's default paths when both are "".  PL_ETLS if unreadable. */
int pl_tls_store_load(const char *file, const char *dir, X509_STORE **out);
/*
 * Whether ssl's peer certificate chains to store and names domain (RFC
 * 6125 §6: DNS-ID in subjectAltName with the usual left-most wildcard, or
 * an XmppAddr of RFC 6120 §13.7.1.4; the CN only when there is no
 * subjectAltName).  PL_OK, or PL_ETLS with an operator-readable reason in
 * why ("no certificate", "certificate has expired", "not valid for
 * a.example (names: b.example)").
 */
int pl_tls_verify_peer(SSL *ssl, X509_STORE *store, const char *domain,
                       char *why, size_t len);

#endif
