/*
 * dns.h - asynchronous DNS on the event loop (c-ares): SRV records and
 * host addresses, for server-to-server connections (RFC 6120 §3.2).
 *
 * c-ares runs inside the loop: its sockets are watched with struct pl_io
 * and its timeouts with a timer, so a lookup never blocks the loop and
 * needs no thread.  Callbacks fire on the loop thread, from inside the
 * loop's event processing, exactly once per lookup (also at shutdown, with
 * PL_ECLOSED), possibly before the call that started the lookup returns
 * (an IP literal, a cached answer).  Callers hold ids, not pointers, in
 * their callback data:
 * the object that asked may be gone when the answer arrives.
 *
 * The server asked is the system's (/etc/resolv.conf) unless
 * pl_dns_init() is given "address:port" (s2s.resolver; tests run their
 * own DNS server on a loopback port).
 */
#ifndef PL_DNS_H
#define PL_DNS_H

#include <sys/socket.h>

struct pl_loop;

struct pl_dns_srv {
    char *target; /* host name to connect to (owned by the result) */
    int port;     /* TCP port */
    int priority; /* lower first */
    int weight;   /* among equal priorities, higher first */
};

/*
 * rc: PL_OK (n >= 0 records), PL_ENOT_FOUND (the name or record type does
 * not exist), PL_EIO (no answer: timeout, server failure), PL_ECLOSED
 * (shutdown).  why is a short reason for logs (never NULL).  v is
 * borrowed for the duration of the call.
 */
typedef void pl_dns_srv_fn(int rc, const char *why, const struct pl_dns_srv *v,
                           int n, void *data);
typedef void pl_dns_addr_fn(int rc, const char *why,
                            const struct sockaddr_storage *v, int n,
                            void *data);

/*
 * Starts the resolver on loop; server is "" (system configuration) or
 * "ip:port" / "[ipv6]:port".  PL_EINVAL if server does not parse, PL_EIO
 * if c-ares cannot start.
 */
int pl_dns_init(struct pl_loop *loop, const char *server);
/* Ends every lookup (callbacks get PL_ECLOSED) and frees the resolver. */
void pl_dns_shutdown(void);
/* Looks up SRV records of name ("_xmpp-server._tcp.example.org"). */
void pl_dns_srv(const char *name, pl_dns_srv_fn *fn, void *data);
/* Looks up the IPv4 and IPv6 addresses of host; each result carries
 * port.  An IP literal answers at once (still through the callback). */
void pl_dns_addr(const char *host, int port, pl_dns_addr_fn *fn, void *data);
/* Checks a resolver setting without starting anything (--check-config). */
int pl_dns_check_server(const char *server);

#endif
