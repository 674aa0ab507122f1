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
 *
 * Deadlines: a connection accepted by a listener (listen.h) has two, from
 * the `limits` group or its listeners entry: the handshake must be done
 * (pl_conn_established) within handshake_timeout of the accept, and no
 * byte may be missing for idle_timeout (a protocol may set its own idle
 * policy, pl_conn_set_idle).  The idle deadline runs from the start; the
 * handshake one until pl_conn_established.  When one passes, ops->timeout
 * says so (NULL: the connection is closed).  The connection's one timer
 * is re-armed lazily: nothing is done per byte; when it fires it compares
 * with the last activity and waits for the time left.
 *
 * Request/response protocols (HTTP) also need: to stop reading while an
 * answer is being made (pl_conn_hold: bytes wait in the kernel), to send
 * a file after the queued bytes without holding it in memory
 * (pl_conn_sendfile: sendfile(2) on plain sockets, pieces read as the
 * socket drains under TLS), and to learn when everything queued is
 * written (pl_conn_set_drain).
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
struct pl_tls_rec;

struct pl_conn_ops {
    /* Bytes arrived; may call pl_conn_close or pl_conn_starttls. */
    void (*data)(struct pl_conn *c, const char *p, size_t n);
    /* TLS handshake completed (direct TLS or after STARTTLS). */
    void (*tls_up)(struct pl_conn *c);
    /* The connection is gone; last callback. */
    void (*closed)(struct pl_conn *c);
    /*
     * A deadline passed (enum pl_conn_timeout).  The protocol ends the
     * stream in its own terms (pl_conn_close); if it leaves the
     * connection open (it waits for something, e.g. a verification), it
     * is asked again a second later.  NULL: the core closes at once.
     */
    void (*timeout)(struct pl_conn *c, int which);
    /*
     * Optional: where the next read may go instead of the connection's
     * own buffer (a consumer that keeps the bytes anyway, e.g. an upload
     * body, receives them in place: data() is then called with p inside
     * the returned buffer).  *room: its free bytes; NULL or 0: the
     * connection's own buffer.
     */
    char *(*rbuf)(struct pl_conn *c, size_t *room);
};

/* Which deadline passed (struct pl_conn_ops.timeout). */
enum pl_conn_timeout {
    PL_CONN_TIMEOUT_HANDSHAKE = 1, /* not established in time */
    PL_CONN_TIMEOUT_IDLE,          /* nothing read (or written) in time */
};

struct pl_conn_limits {
    size_t max_out;    /* bytes queued before a slow reader is dropped */
    size_t read_rate;  /* bytes per second sustained */
    size_t read_burst; /* bucket size */
};

enum pl_conn_tls {
    PL_CONN_PLAIN = 0, /* no TLS */
    PL_CONN_HANDSHAKE, /* TLS handshake in progress */
    PL_CONN_TLS,       /* TLS established */
};

struct pl_conn {
    struct pl_io io;               /* socket watcher */
    struct pl_loop *loop;          /* owning loop */
    const struct pl_conn_ops *ops; /* protocol callbacks */
    void *data;                    /* protocol's per-connection state */
    SSL *ssl;                      /* NULL while plain or handed over */
    struct pl_tls_rec *rec;        /* TLS 1.3 records after the hand-over
                                    * (pl_conn_tls_handover), or NULL */
    int tls;                       /* enum pl_conn_tls */
    struct pl_buf out;             /* bytes not yet written */
    struct pl_conn_limits lim;     /* copied at creation */
    double tokens;                 /* read token bucket */
    uint64_t refill_ms;            /* last refill, loop clock */
    struct pl_timer timer;         /* resume reading / close deadline */
    unsigned closing : 1;          /* pl_conn_close called */
    unsigned dead : 1;             /* socket closed, closed cb pending */
    unsigned flush_queued : 1;     /* a deferred flush is pending */
    unsigned paused : 1;           /* reading paused by the rate limit */
    unsigned want_tls : 1;         /* STARTTLS once out is flushed */
    unsigned established : 1;      /* pl_conn_established: no handshake
                                * deadline any more */
    unsigned idle_set : 1;         /* idle_ms set by the protocol */
    unsigned count_writes : 1;     /* writes count as activity for idle */
    unsigned handover : 1;         /* pl_conn_tls_handover asked, not done */
    unsigned peer_done : 1;        /* pl_conn_peer_done */
    uint32_t idle_ms;              /* the protocol's idle deadline, 0: none */
    SSL_CTX *pending_ctx;          /* context for want_tls */
    uint64_t bytes_in;             /* counters */
    uint64_t bytes_out;
    uint64_t last_read_ms;        /* loop clock at the last byte read */
    uint64_t last_write_ms;       /* loop clock at the last byte written */
    uint64_t opened_ms;           /* loop clock at creation */
    char ip[INET6_ADDRSTRLEN];    /* peer address; "local" for AF_UNIX */
    int port;                     /* peer port */
    int is_loopback;              /* peer is 127.0.0.0/8, ::1 or AF_UNIX */
    struct sockaddr_storage addr; /* peer address for ACLs */
    unsigned tls_client : 1;      /* TLS as the client (outgoing s2s) */
    unsigned tls_want_cert : 1; /* TLS server: ask for the peer's certificate */
    char *tls_sni;              /* TLS client: server name sent, or NULL */
    char *error;                /* why the connection failed, or NULL */
    struct pl_listen *listen;   /* accepted by (listen.h), or NULL */
    unsigned held : 1;          /* reading held by the protocol */
    unsigned held_full : 1;     /* held, and bytes wait: not watched */
    unsigned read_queued : 1;   /* a deferred read (after a hold) pending */
    int sf_fd;                  /* pl_conn_sendfile: the file (borrowed) */
    uint64_t sf_off;            /* its next byte */
    uint64_t sf_left;           /* bytes still to send, 0: none */
    struct pl_buf sf_after;     /* written while a file is sent */
    struct pl_pace *sf_pace;    /* the file's pace, or NULL */
    struct pl_conn *pace_next;  /* waiting for its turn (pace queue) */
    struct pl_conn *pace_prev;
    unsigned pace_wait : 1;           /* in its pace's queue */
    unsigned pace_turn : 1;           /* its turn came: send one slice */
    void (*drain)(struct pl_conn *c); /* pl_conn_set_drain, or NULL */
};

/* Takes ownership of fd (non-blocking, accepted). */
struct pl_conn *pl_conn_new(struct pl_loop *loop, int fd,
                            const struct pl_conn_ops *ops, void *data,
                            const struct pl_conn_limits *lim);
/* The same for fd just accepted from a pl_listener (which set
 * TCP_NODELAY for it) with the peer's address accept4 gave: two system
 * calls fewer per connection. */
struct pl_conn *pl_conn_accepted(struct pl_loop *loop, int fd,
                                 const struct sockaddr_storage *peer,
                                 const struct pl_conn_ops *ops, void *data,
                                 const struct pl_conn_limits *lim);
/*
 * The peer said its last words (closed its XMPP stream): the close that
 * follows need not wait for more.  Over plain TCP the socket is closed
 * at once instead of lingering (pl_loop_close_lingering); anything the
 * peer still sends breaks its protocol.  Over TLS its close_notify is
 * still to come, and the close lingers as before.
 */
void pl_conn_peer_done(struct pl_conn *c);
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
/*
 * The protocol needs nothing more of OpenSSL on this connection (SASL's
 * channel binding is done; no peer certificate will be asked for): once
 * nothing is in flight inside OpenSSL, a TLS 1.3 session's records go to
 * Parley's own record layer (tls_rec.h) and the SSL object (about 14 KB)
 * is freed.  Server side only; TLS 1.2 and other cases keep OpenSSL.
 */
void pl_conn_tls_handover(struct pl_conn *c);
/* Updates limits (SIGHUP). */
void pl_conn_set_limits(struct pl_conn *c, const struct pl_conn_limits *l);
/* The handshake is done: its deadline no longer applies (idle's does). */
void pl_conn_established(struct pl_conn *c);
/*
 * The protocol's own idle policy, instead of limits.idle_timeout: ms
 * without activity before ops->timeout (0: no idle deadline); with
 * count_writes, bytes written count as activity too, not only bytes read.
 * A listeners entry's own idle_timeout still wins (listen.h).
 */
void pl_conn_set_idle(struct pl_conn *c, uint32_t ms, int count_writes);
/*
 * Holds (hold 1) or resumes (0) reading: while held, ops->data is not
 * called and the socket is not read (a peer sending more is pushed back
 * by TCP); deadlines still run.  Resuming reads again on the next loop
 * turn (bytes already decrypted by TLS included).  May be called from
 * ops->data: no further call comes in that turn.
 */
void pl_conn_hold(struct pl_conn *c, int hold);
/*
 * Sends len bytes of fd from offset off after the bytes queued so far:
 * with sendfile(2) on a plain connection, in pieces read as the socket
 * drains under TLS (never the whole file in memory).  fd is borrowed: it
 * must stay open until the drain callback says everything was written,
 * or until ops->closed.  A read error or a file shorter than announced
 * closes the connection.  One file at a time (PL_EAGAIN otherwise); bytes
 * written with pl_conn_write meanwhile go after the file.
 */
int pl_conn_sendfile(struct pl_conn *c, int fd, uint64_t off, uint64_t len);
/*
 * A pace: one budget of file bytes per second shared by every connection
 * sending a file under it (a service's share of the uplink, e.g.
 * upload.max_send_rate).  A connection that finds the budget spent, or
 * others waiting, waits its turn in order; a turn is one slice (256 KiB, or
 * a millisecond's worth when that is more), so that every
 * waiting download moves at the same pace.  Rate 0: no limit.
 */
struct pl_pace;
struct pl_pace *pl_pace_new(struct pl_loop *loop, uint64_t rate);
/* A new rate (SIGHUP); 0 lets every waiting connection go at once. */
void pl_pace_set_rate(struct pl_pace *p, uint64_t rate);
/* Freed once no connection sends under it any more. */
void pl_pace_free(struct pl_pace *p);
/* pl_conn_sendfile under pace p (NULL: none). */
int pl_conn_sendfile_paced(struct pl_conn *c, int fd, uint64_t off,
                           uint64_t len, struct pl_pace *p);
/* Bytes queued and not written yet (the file's too). */
uint64_t pl_conn_pending(const struct pl_conn *c);
/* fn (NULL: none) is called each time a flush leaves nothing queued
 * (buffer and file) after having written something. */
void pl_conn_set_drain(struct pl_conn *c, void (*fn)(struct pl_conn *c));

/* Listener: accepts on address:port and calls accept_fn with the fd. */
struct pl_listener;
typedef void pl_accept_fn(struct pl_listener *l, int fd,
                          const struct sockaddr_storage *addr, void *data);
int pl_listener_open(struct pl_loop *loop, const char *address, int port,
                     pl_accept_fn *fn, void *data, struct pl_listener **out);
/* The same; shared: SO_REUSEPORT, so that several processes (of the same
 * user) listen on the port and the kernel spreads the connections among
 * them (server.processes). */
int pl_listener_open_shared(struct pl_loop *loop, const char *address, int port,
                            int shared, pl_accept_fn *fn, void *data,
                            struct pl_listener **out);
void pl_listener_close(struct pl_listener *l);
/* Its socket (listen.c reads the bound port). */
int pl__listener_fd(const struct pl_listener *l);

#endif
