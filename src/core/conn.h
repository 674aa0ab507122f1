/*
 * conn.h - connections and listeners: non-blocking sockets with optional
 * TLS (direct or upgraded by STARTTLS), coalesced writes, read rate limits
 * with back-pressure, an outgoing-buffer cap, and asynchronous close.
 *
 * Reading: bytes (decrypted when TLS is up) go to ops->data.  A token
 * bucket (rate, burst) bounds how fast one connection is read; a fast
 * sender is paused (its socket is not read, so TCP pushes back) instead
 * of being buffered.
 *
 * Writing: pl_conn_write() appends to the connection's buffer and the
 * buffer is flushed once per loop iteration, so a burst of stanzas costs
 * one syscall.  A peer that does not read more than max_out bytes is
 * disconnected.  An idle connection holds no buffer memory.
 *
 * Closing is asynchronous: pl_conn_close() flushes what it can (bounded
 * in time), closes the socket, then calls ops->closed exactly once from a
 * deferred call; the connection is freed right after.  Callers hold the
 * conn pointer only until closed fires.
 */
#ifndef PL_CONN_H
#define PL_CONN_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "loop.h"

struct pl_conn;
struct pl_listen;

struct pl_conn_ops {
    /* Bytes arrived; may call pl_conn_close or pl_conn_starttls. */
    void (*data)(struct pl_conn *c, const char *p, size_t n);
    /* TLS handshake completed (direct TLS or after STARTTLS). */
    void (*tls_up)(struct pl_conn *c);
    /* The connection is gone; last callback. */
    void (*closed)(struct pl_conn *c);
};

struct pl_conn_limits {
    size_t max_out;    /* bytes queued before a slow reader is dropped */
    size_t read_rate;  /* bytes per second sustained */
    size_t read_burst; /* bucket size */
};

enum pl_conn_tls {
    PL_CONN_PLAIN = 0,   /* no TLS */
    PL_CONN_HANDSHAKE,   /* TLS handshake in progress */
    PL_CONN_TLS,         /* TLS established */
};

struct pl_conn {
    struct pl_io io;           /* socket watcher */
    struct pl_loop *loop;      /* owning loop */
    const struct pl_conn_ops *ops; /* protocol callbacks */
    void *data;                /* protocol's per-connection state */
    SSL *ssl;                  /* NULL while plain */
    int tls;                   /* enum pl_conn_tls */
    struct pl_buf out;         /* bytes not yet written */
    struct pl_conn_limits lim; /* copied at creation */
    double tokens;             /* read token bucket */
    uint64_t refill_ms;        /* last refill, loop clock */
    struct pl_timer timer;     /* resume reading / close deadline */
    unsigned closing : 1;      /* pl_conn_close called */
    unsigned dead : 1;         /* socket closed, closed cb pending */
    unsigned flush_queued : 1; /* a deferred flush is pending */
    unsigned paused : 1;       /* reading paused by the rate limit */
    unsigned want_tls : 1;     /* STARTTLS once out is flushed */
    SSL_CTX *pending_ctx;      /* context for want_tls */
    uint64_t bytes_in;         /* counters */
    uint64_t bytes_out;
    uint64_t last_read_ms;     /* loop clock at the last byte read */
    char ip[INET6_ADDRSTRLEN]; /* peer address; "local" for AF_UNIX */
    int port;                  /* peer port */
    int is_loopback;           /* peer is 127.0.0.0/8, ::1 or AF_UNIX */
    struct sockaddr_storage addr; /* peer address for ACLs */
    unsigned tls_client : 1;   /* TLS as the client (outgoing s2s) */
    unsigned tls_want_cert : 1; /* TLS server: ask for the peer's certificate */
    char *tls_sni;             /* TLS client: server name sent, or NULL */
    char *error;               /* why the connection failed, or NULL */
    struct pl_listen *listen;  /* accepted by (listen.h), or NULL */
};

/* Takes ownership of fd (non-blocking, accepted). */
struct pl_conn *pl_conn_new(struct pl_loop *loop, int fd,
                            const struct pl_conn_ops *ops, void *data,
                            const struct pl_conn_limits *lim);
/* Starts reading; with ctx non-NULL, begins a TLS handshake first. */
void pl_conn_start(struct pl_conn *c, SSL_CTX *ctx);
/* Queues bytes (copied). */
void pl_conn_write(struct pl_conn *c, const void *p, size_t n);
/* After the queued bytes are written, switches to TLS (STARTTLS). */
void pl_conn_starttls(struct pl_conn *c, SSL_CTX *ctx);
/* Closes after flushing (bounded); ops->closed fires later. */
void pl_conn_close(struct pl_conn *c);
/* Frees the output buffer if nothing is queued (for idle connections). */
void pl_conn_trim(struct pl_conn *c);
/*
 * Before TLS starts: client is 1 for the client side of the handshake
 * (outgoing connections; sni is the server name to send, copied), 0 for
 * the server side; with want_cert a server asks the peer for a certificate
 * (any is accepted by the handshake: the caller checks it afterwards).
 */
void pl_conn_set_tls_role(struct pl_conn *c, int client, const char *sni,
                          int want_cert);
/* Updates limits (SIGHUP). */
void pl_conn_set_limits(struct pl_conn *c, const struct pl_conn_limits *l);

/* Listener: accepts on address:port and calls accept_fn with the fd. */
struct pl_listener;
typedef void pl_accept_fn(struct pl_listener *l, int fd,
                          const struct sockaddr_storage *addr, void *data);
int pl_listener_open(struct pl_loop *loop, const char *address, int port,
                     pl_accept_fn *fn, void *data, struct pl_listener **out);
void pl_listener_close(struct pl_listener *l);

#endif
