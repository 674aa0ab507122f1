/*
 * listen.h - listeners and the protocols that serve them.
 *
 * Every entry of the configuration's `listeners` list names a protocol
 * ("c2s", "s2s", "component", "sip", later "http"...).  A front end
 * (module.h, struct pl_frontend) provides protocols: a struct pl_protocol
 * each.  The core opens the sockets, stream (TCP) or datagram (UDP), and
 * keeps owning what every protocol needs the same way:
 *   - accept, with the per-address and total connection limits of the
 *     `limits` group (counted per protocol; an entry may lower or raise
 *     them with its own max_connections_per_ip / max_connections);
 *   - the read rate limit and output cap of each connection (conn.h);
 *   - the deadlines of each connection (conn.h): handshake_timeout from
 *     the accept until the protocol calls pl_conn_established, and
 *     idle_timeout since the last byte read; an entry may set its own
 *     handshake_timeout / idle_timeout, and a protocol its own idle policy
 *     (pl_conn_set_idle: the entry's still wins); a protocol says how a
 *     stream ends on a deadline (struct pl_conn_ops.timeout);
 *   - TLS: tls = "direct" starts the handshake with the hosts'
 *     certificates (SNI picks the host) before the protocol sees a byte;
 *     tls = "starttls" leaves the upgrade to the protocol;
 *   - datagrams: received in batches, handed over with their source.
 * The provider gets the accepted connection (accept), installs its
 * handlers and state, and from then on owns the conversation; over a
 * limit it may say why in its own terms first (refuse).
 *
 * Extending: a new protocol is a struct pl_protocol in its front end's
 * folder, named in the front end's descriptor; nothing here changes.
 */
#ifndef PL_LISTEN_H
#define PL_LISTEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "conn.h"
#include "loop.h"

struct pl_listen;
struct pl_module;

/* Transports a protocol can be served over (struct pl_protocol). */
enum pl_transport {
    PL_TRANSPORT_TCP = 1, /* stream sockets: connections */
    PL_TRANSPORT_UDP = 2, /* datagram sockets */
};

/* Why the core refused a connection (struct pl_protocol.refuse). */
enum pl_refusal {
    PL_REFUSE_PER_IP = 1, /* the address has too many connections */
    PL_REFUSE_FULL,       /* the protocol has too many connections */
};

struct pl_protocol {
    const char *name;    /* `protocol = "<name>"` in a listeners entry */
    const char *summary; /* one line, for errors and documentation */
    int transports;      /* enum pl_transport bits it can serve */
    int default_port;    /* the port an entry without one gets (0: none) */
    /* Without a `listeners` list, every protocol with listen_by_default
     * gets 127.0.0.1:default_port (STARTTLS) and, if default_tls_port,
     * 127.0.0.1:default_tls_port (direct TLS). */
    int listen_by_default;
    /* Also the port of an entry with tls = "direct" and no port (0: the
     * default_port). */
    int default_tls_port;
    /*
     * A stream connection was accepted within the limits.  The provider
     * sets c->ops and c->data (pl_conn_set_handlers) and returns PL_OK;
     * the core then starts reading (after the TLS handshake for a direct
     * TLS listener).  Any other return closes c silently.
     */
    int (*accept)(struct pl_listen *l, struct pl_conn *c);
    /*
     * A connection over a limit (enum pl_refusal), before it is closed:
     * the provider may write a protocol-level error (the connection is
     * plain: a direct TLS listener closes without calling this).  NULL:
     * closed silently.  c->ops are the core's: do not change them.
     */
    void (*refuse)(struct pl_listen *l, struct pl_conn *c, int why);
    /* A datagram arrived on a UDP listener (bytes borrowed, and the
     * provider's to change in place: the core's receive buffer, which
     * the next datagram overwrites). */
    void (*datagram)(struct pl_listen *l, char *p, size_t n,
                     const struct sockaddr_storage *from, socklen_t fromlen);
};

/* One open listeners entry. */
struct pl_listen {
    const struct pl_protocol *proto;     /* who serves it */
    const struct pl_module *owner;       /* the front end providing proto */
    const struct pl_listener_conf *conf; /* the entry (owned by config) */
    int transport;                       /* PL_TRANSPORT_TCP or _UDP */
    struct pl_listener *tcp;             /* stream socket, or NULL */
    struct pl_io udp;                    /* datagram socket (fd -1 if none) */
    uint64_t accepted;                   /* connections handed over */
    uint64_t refused;                    /* connections over a limit */
    uint64_t datagrams;                  /* datagrams handed over */
    uint64_t send_drops;                 /* datagrams the kernel refused */
    void *data;                          /* the provider's, per listener */
};

/* Installs the protocol's handlers on an accepted connection. */
static inline void pl_conn_set_handlers(struct pl_conn *c,
                                        const struct pl_conn_ops *ops,
                                        void *data)
{
    c->ops = ops;
    c->data = data;
}

/*
 * Sends a datagram from l's socket to `to`.  PL_OK, PL_EAGAIN if the
 * socket buffer is full (the datagram is dropped and counted: datagram
 * protocols retransmit), PL_EIO on other errors, PL_EINVAL if l has no
 * datagram socket.
 */
int pl_listen_sendto(struct pl_listen *l, const void *p, size_t n,
                     const struct sockaddr_storage *to, socklen_t tolen);

/* The port l is bound to (useful after port 0), -1 if none. */
int pl_listen_port(const struct pl_listen *l);

/* The i-th open listener (from 0), NULL past the end: a front end lists
 * its own (l->proto) for operations, or finds a socket to send from. */
struct pl_listen *pl_listen_at(int i);

/* Open connections accepted for protocol (every listener of it). */
unsigned long pl_listen_conns(const char *protocol);

/*
 * Holding the listeners (a cluster node that has not linked with the
 * other nodes yet, doc/cluster.md): pl_listen_hold, called by a front
 * end's start (before the core opens the listeners), makes the entries
 * without opening their sockets; pl_listen_release opens them (PL_OK, or
 * the error of the first that cannot open); pl_listen_close_all closes
 * every socket for good (a draining node: connections stay, new ones go
 * to the other processes sharing the port, or are refused).
 */
void pl_listen_hold(void);
int pl_listen_held(void);
int pl_listen_release(void);
void pl_listen_close_all(void);

/*
 * Server lifetime (parleyd).  start opens every entry of c whose
 * protocol is provided (PL_EIO if one cannot open, PL_EINVAL for an entry
 * no front end serves); stop closes the sockets (connections stay: their
 * front ends end them); reload takes the new limits (entries themselves
 * change only on restart).
 */
int pl__listen_start(struct pl_config *c);
void pl__listen_stop(void);
/* After the last connection is gone: frees the entries and counts. */
void pl__listen_free(void);
void pl__listen_reload(struct pl_config *c);
/*
 * Checks every entry against the providers: known protocol, transport it
 * serves, TLS mode allowed.  Errors name the file and line and, for an
 * unknown protocol, the protocols there are.
 */
int pl__listen_check(struct pl_config *c, char *err, size_t errlen);
/*
 * One entry (l->proto, l->owner and l->conf set by the caller): opens its
 * socket and starts accepting or receiving.  pl__listen_start does this
 * for every entry of the configuration; tests call it with a protocol of
 * their own.  close undoes it.
 */
int pl__listen_open(struct pl_listen *l);
void pl__listen_close(struct pl_listen *l);
/* conn.c, when a connection is freed: leaves its protocol's counts. */
void pl__listen_release(struct pl_conn *c);
/*
 * conn.c: the deadlines of c, accepted by c->listen, in ms: the entry's
 * or the limits group's handshake_timeout; the entry's idle_timeout, else
 * (when the protocol set none, c->idle_set) the limits group's, else
 * *idle_ms is left as it is.  Read at each check: a reload applies to
 * open connections too.
 */
void pl__listen_deadlines(const struct pl_conn *c, uint64_t *handshake_ms,
                          uint64_t *idle_ms);
/*
 * For tests: treats fd as a connection accepted by the first listener of
 * protocol (or, with none open, as one of an entry with tls_mode), through
 * the same limits and hand-over.  Takes ownership of fd on PL_OK.
 */
int pl__listen_accept_fd(const char *protocol, int tls_mode, int fd);

#endif
