/*
 * smtp_listen.h - runs the SMTP/LMTP engine (smtp.h) on the core's
 * connections (conn.h): a TCP port, or a unix socket for LMTP (Postfix's
 * `mailbox_transport = lmtp:unix:/path`).
 *
 * Why not listen.h: the core's listener providers (struct pl_protocol)
 * are opened from parleyd's configuration and module table, which
 * parley-gateway does not have.  So TCP accepts through the core's plain
 * listener (pl_listener_open, conn.h) and unix sockets through a small
 * accept watcher on the same loop; each accepted socket becomes a
 * pl_conn (read rate limit, output cap, idle deadline) and a pl_smtp.
 *
 * Flow control: replies are written while the connection has less than
 * max_out bytes queued; beyond that (a pipelining client that does not
 * read) reading is held (pl_conn_hold) until the connection drains.
 * Reading is also held while a verdict is pending.  The command timeout
 * (RFC 5321 §4.5.3.2.7: at least 5 minutes) is the connection's idle
 * deadline; when it passes the client gets 421 4.4.2.
 *
 * STARTTLS (RFC 3207): with cfg.smtp.tls other than PL_SMTP_TLS_NONE,
 * the server loads tls_cert/tls_key (core tls.c: TLS 1.2 minimum; with
 * tls_make_cert a self-signed certificate for the hostname is made first
 * when tls_cert does not exist) and, when the engine accepts STARTTLS,
 * sends its 220 and switches the connection to TLS (pl_conn_starttls);
 * once the handshake is done the engine starts over (pl_smtp_tls_started).
 * Bytes pipelined after STARTTLS never reach the TLS session: the engine
 * drops those it holds, and any still in the socket are read by the
 * handshake as garbage, which fails it.
 *
 * Events go to cfg.fn with cfg.data; a callback that answers later
 * (PL_EAGAIN) calls pl_smtp_server_resume() with the session it got, and
 * must forget the session when cfg.gone says it closed.
 */
#ifndef PL_GW_SMTP_LISTEN_H
#define PL_GW_SMTP_LISTEN_H

#include <stdint.h>

#include "conn.h"
#include "gateway/mail/smtp.h"
#include "loop.h"

struct pl_smtp_server;

struct pl_smtp_server_config {
    struct pl_smtp_config smtp; /* engine settings (peer is filled in) */
    const char *address;        /* TCP: IP address to bind, or NULL */
    int port;                   /* TCP: port (0: any free one) */
    const char *unix_path;      /* or a unix socket path (replaced) */
    struct pl_conn_limits conn; /* per connection; zeros: defaults */
    const char *tls_cert;       /* PEM chain, with smtp.tls != NONE */
    const char *tls_key;        /* its PEM key */
    int tls_make_cert;          /* make a self-signed one if none exists */
    uint32_t timeout_ms;        /* command timeout (300000) */
    unsigned max_sessions;      /* open at once, beyond: 421 (1000) */
    pl_smtp_event_fn *fn;       /* events, as for pl_smtp_new */
    void *data;                 /* fn's pointer */
    /* A session ended (any way); forget s.  NULL: nothing to say. */
    void (*gone)(void *data, struct pl_smtp *s);
};

/* Fills in the defaults (engine defaults, 127.0.0.1, port 0). */
void pl_smtp_server_config_default(struct pl_smtp_server_config *cfg);

/*
 * Starts accepting on loop.  cfg is copied (strings too).  PL_EIO if the
 * socket cannot be opened, PL_EINVAL for a bad address or path, PL_ETLS
 * if TLS is asked for and the certificate cannot be made or loaded.
 */
int pl_smtp_server_open(struct pl_loop *loop,
                        const struct pl_smtp_server_config *cfg,
                        struct pl_smtp_server **out);

/* The TCP port bound (useful after port 0), -1 for a unix socket. */
int pl_smtp_server_port(const struct pl_smtp_server *srv);

/* Sessions open now. */
unsigned pl_smtp_server_sessions(const struct pl_smtp_server *srv);

/*
 * Gives a pending verdict (pl_smtp_resume) of a session of this server
 * and sends what follows.  PL_EINVAL if nothing was pending.
 */
int pl_smtp_server_resume(struct pl_smtp *s,
                          const struct pl_smtp_reply *replies, size_t n);

/*
 * Stops accepting (a unix socket's file is removed); open sessions get
 * 421 4.3.2 and are closed (their gone callbacks fire later, from the
 * loop).  The server is freed once the last session has closed.
 */
void pl_smtp_server_close(struct pl_smtp_server *srv);

#endif
