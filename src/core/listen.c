/*
 * listen.c - listeners: opens every `listeners` entry, accepts within the
 * limits, starts direct TLS, receives datagrams, and hands each
 * connection or datagram to the protocol's provider; see listen.h.  The
 * deadlines of accepted connections are watched by conn.c, with the
 * values this file says (pl__listen_deadlines).
 *
 * Accounting: each protocol has a count of open connections and a map
 * address -> count; a connection leaves both when it is freed (conn.c
 * calls pl__listen_release), however it ended.
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "host.h"
#include "log.h"
#include "map.h"
#include "module.h"
#include "server.h"
#include "stats.h"

/* Per protocol: open connections, in all and by address. */
struct proto_count {
    const struct pl_protocol *proto; /* counted protocol */
    unsigned long open;              /* open connections */
    struct pl_map per_ip;            /* ip -> count (uintptr_t) */
};

static struct pl_listen *listens; /* open entries */
static int nlistens;
static int held;                   /* entries made, sockets not opened */
static struct proto_count *counts; /* one per protocol seen */
static int ncounts;
static const struct pl_settings *S; /* limits in force */
/* For pl__listen_accept_fd without an open listener: made on demand,
 * one per protocol and TLS mode, kept for the process. */
struct test_listen {
    struct pl_listener_conf conf; /* a stand-in entry */
    struct pl_listen l;           /* its listener */
};
static struct test_listen test_listens[8];
static int ntest;

static struct proto_count *count_of(const struct pl_protocol *p)
{
    for (int i = 0; i < ncounts; i++)
        if (counts[i].proto == p)
            return &counts[i];
    counts = pl_realloc(counts, (size_t)(ncounts + 1) * sizeof(*counts));
    struct proto_count *pc = &counts[ncounts++];
    memset(pc, 0, sizeof(*pc));
    pc->proto = p;
    return pc;
}

unsigned long pl_listen_conns(const char *protocol)
{
    for (int i = 0; i < ncounts; i++)
        if (strcmp(counts[i].proto->name, protocol) == 0)
            return counts[i].open;
    return 0;
}

void pl__listen_release(struct pl_conn *c)
{
    struct pl_listen *l = c->listen;
    if (!l)
        return;
    c->listen = NULL;
    struct proto_count *pc = count_of(l->proto);
    pc->open--;
    pl_stat_dec(connections_open);
    uintptr_t n = (uintptr_t)pl_map_get(&pc->per_ip, c->ip);
    if (n <= 1)
        pl_map_del(&pc->per_ip, c->ip);
    else
        pl_map_put(&pc->per_ip, c->ip, (void *)(n - 1));
}

/* The core's handlers of a connection being refused: nothing to read. */
static void refused_data(struct pl_conn *c, const char *p, size_t n)
{
    (void)p;
    (void)n;
    pl_conn_close(c);
}

/* A refused connection is closed at once: no deadline reaches it. */
static const struct pl_conn_ops refused_ops = {.data = refused_data};

static long limit_of(long entry, long global)
{
    return entry >= 0 ? entry : global;
}

void pl__listen_deadlines(const struct pl_conn *c, uint64_t *handshake_ms,
                          uint64_t *idle_ms)
{
    const struct pl_listener_conf *lc = c->listen->conf;
    if (!S)
        return;
    *handshake_ms = (uint64_t)limit_of(lc->handshake_timeout,
                                       S->handshake_timeout) *
                    1000;
    /* The entry's own, else the protocol's own, else the limits group's. */
    if (lc->idle_timeout >= 0)
        *idle_ms = (uint64_t)lc->idle_timeout * 1000;
    else if (!c->idle_set)
        *idle_ms = (uint64_t)S->idle_timeout * 1000;
}

static void hand_over(struct pl_listen *l, int fd,
                      const struct sockaddr_storage *addr)
{
    struct pl_conn_limits lim = {(size_t)S->max_outbuf, (size_t)S->read_rate,
                                 (size_t)S->read_burst};
    /* addr: NULL for a socket adopted in tests. */
    struct pl_conn *c = addr ? pl_conn_accepted(pl_server_loop(), fd, addr,
                                                &refused_ops, NULL, &lim)
                             : pl_conn_new(pl_server_loop(), fd, &refused_ops,
                                           NULL, &lim);
    struct proto_count *pc = count_of(l->proto);
    uintptr_t n = (uintptr_t)pl_map_get(&pc->per_ip, c->ip) + 1;
    pl_map_put(&pc->per_ip, c->ip, (void *)n);
    pc->open++;
    c->listen = l;
    pl_stat_inc(connections_open);
    long per_ip = limit_of(l->conf->max_per_ip, S->max_connections_per_ip);
    long total = limit_of(l->conf->max_total, S->max_connections);
    int over_ip = (long)n > per_ip;
    if (over_ip || (long)pc->open > total) {
        l->refused++;
        pl_stat_inc(connections_refused);
        /* Logged when the limit is first crossed, not per connection. */
        if ((long)n == per_ip + 1 || (long)pc->open == total + 1)
            pl_log_warn(l->proto->name,
                        "%s: refusing connections (%s "
                        "limit)",
                        c->ip, over_ip ? "per-address" : "total");
        if (l->conf->tls != PL_TLS_DIRECT && l->proto->refuse) {
            pl_conn_start(c, NULL);
            l->proto->refuse(l, c, over_ip ? PL_REFUSE_PER_IP : PL_REFUSE_FULL);
        }
        /* No TLS work for a refused peer. */
        pl_conn_close(c);
        return;
    }
    SSL_CTX *ctx = NULL;
    if (l->conf->tls == PL_TLS_DIRECT) {
        struct pl_host *h = pl_host_at(0);
        if (!h || !h->tls) {
            pl_conn_close(c);
            return;
        }
        ctx = h->tls->ctx; /* SNI switches to the named host's context */
    }
    if (l->proto->accept(l, c) != PL_OK || c->ops == &refused_ops) {
        pl_conn_close(c);
        return;
    }
    l->accepted++;
    pl_stat_inc(connections_accepted);
    pl_conn_start(c, ctx);
}

static void on_accept(struct pl_listener *tl, int fd,
                      const struct sockaddr_storage *addr, void *data)
{
    (void)tl;
    hand_over(data, fd, addr);
}

static void on_datagram(struct pl_io *io, unsigned events)
{
    struct pl_listen *l = io->data;
    static char buf[65536];
    /* A bounded batch per wake-up: other sockets get their turn. */
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(io->fd, buf, sizeof(buf), MSG_TRUNC,
                             (struct sockaddr *)&from, &fl);
        if (n < 0)
            return;
        if ((size_t)n > sizeof(buf))
            continue; /* truncated: no protocol of ours sends that much */
        l->datagrams++;
        l->proto->datagram(l, buf, (size_t)n, &from, fl);
    }
}

int pl_listen_sendto(struct pl_listen *l, const void *p, size_t n,
                     const struct sockaddr_storage *to, socklen_t tolen)
{
    if (!l || l->udp.fd < 0)
        return PL_EINVAL;
    ssize_t w = sendto(l->udp.fd, p, n, MSG_DONTWAIT,
                       (const struct sockaddr *)to, tolen);
    if (w == (ssize_t)n)
        return PL_OK;
    l->send_drops++;
    return (w < 0 &&
            (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS))
               ? PL_EAGAIN
               : PL_EIO;
}

/* Several processes of this server (server.processes > 1) share each
 * port: SO_REUSEPORT, the kernel spreads connections (and UDP flows, by
 * address and port) among them.  Only then: a second, unrelated parleyd
 * on the same port must fail with "address in use", not share it. */
static int shared(void)
{
    const struct pl_config *c = pl_server_config();
    return c && c->s.processes > 1;
}

static int open_udp(struct pl_listen *l)
{
    const struct pl_listener_conf *lc = l->conf;
    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, lc->address, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)lc->port);
        sslen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, lc->address, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)lc->port);
        sslen = sizeof(*a6);
    } else {
        pl_log_error("listen", "address '%s' is not an IP address",
                     lc->address);
        return PL_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PL_EIO;
    int one = 1;
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (lc->udp_buffer > 0) {
        /* Room for a burst while the loop is busy: a datagram the kernel
         * drops costs a retransmission (SIP: T1 later).  Beyond
         * net.core.[rw]mem_max only a privileged process gets it. */
        int want = (int)lc->udp_buffer;
        int opts[][2] = {{SO_RCVBUF, SO_RCVBUFFORCE},
                         {SO_SNDBUF, SO_SNDBUFFORCE}};
        for (int k = 0; k < 2; k++)
            if (setsockopt(fd, SOL_SOCKET, opts[k][1], &want, sizeof(want)))
                setsockopt(fd, SOL_SOCKET, opts[k][0], &want, sizeof(want));
    }
    if (shared())
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
        pl_log_error("listen", "cannot listen on %s udp port %d: %s",
                     lc->address, lc->port, strerror(errno));
        close(fd);
        return PL_EIO;
    }
    pl_io_init(&l->udp, fd, on_datagram, l);
    pl_io_set(pl_server_loop(), &l->udp, PL_IO_READ);
    return PL_OK;
}

static const char *tls_name(int tls)
{
    return tls == PL_TLS_DIRECT     ? "direct TLS"
           : tls == PL_TLS_STARTTLS ? "STARTTLS"
                                    : "plain";
}

int pl__listen_open(struct pl_listen *l)
{
    const struct pl_listener_conf *lc = l->conf;
    l->transport = lc->transport;
    l->udp.fd = -1;
    l->tcp = NULL;
    if (lc->transport == PL_TRANSPORT_UDP)
        return open_udp(l);
    return pl_listener_open_shared(pl_server_loop(), lc->address, lc->port,
                                   shared(), on_accept, l, &l->tcp);
}

void pl__listen_close(struct pl_listen *l)
{
    if (l->tcp)
        pl_listener_close(l->tcp);
    l->tcp = NULL;
    if (l->udp.fd >= 0) {
        pl_io_stop(&l->udp);
        close(l->udp.fd);
        l->udp.fd = -1;
    }
}

struct pl_listen *pl_listen_at(int i)
{
    return i >= 0 && i < nlistens ? &listens[i] : NULL;
}

int pl_listen_port(const struct pl_listen *l)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = l->udp.fd >= 0 ? l->udp.fd : l->tcp ? pl__listener_fd(l->tcp) : -1;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

static int open_logged(struct pl_listen *l)
{
    const struct pl_listener_conf *lc = l->conf;
    int rc = pl__listen_open(l);
    if (rc != PL_OK)
        return rc;
    pl_log_info(lc->protocol, "listening on %s %s port %d%s%s", lc->address,
                lc->transport == PL_TRANSPORT_UDP ? "udp" : "tcp", lc->port,
                lc->transport == PL_TRANSPORT_UDP ? "" : " ",
                lc->transport == PL_TRANSPORT_UDP ? "" : tls_name(lc->tls));
    return PL_OK;
}

int pl__listen_start(struct pl_config *c)
{
    S = &c->s;
    /* Started again in one process (tests): the last start's entries go
     * once no connection points at them any more. */
    unsigned long open = 0;
    for (int i = 0; i < ncounts; i++)
        open += counts[i].open;
    if (!open)
        pl_free(listens);
    listens = pl_calloc((size_t)c->nlisteners + 1, sizeof(*listens));
    for (int i = 0; i < c->nlisteners; i++) {
        const struct pl_listener_conf *lc = &c->listeners[i];
        struct pl_listen *l = &listens[nlistens];
        l->proto = pl_module_protocol(lc->protocol, &l->owner);
        if (!l->proto)
            return PL_EINVAL; /* pl__listen_check said why */
        l->conf = lc;
        l->transport = lc->transport;
        l->udp.fd = -1;
        if (!held) {
            int rc = open_logged(l);
            if (rc != PL_OK)
                return rc;
        }
        nlistens++;
    }
    return PL_OK;
}

void pl_listen_hold(void)
{
    held = 1;
}

int pl_listen_held(void)
{
    return held;
}

int pl_listen_release(void)
{
    if (!held)
        return PL_OK;
    held = 0;
    for (int i = 0; i < nlistens; i++) {
        int rc = open_logged(&listens[i]);
        if (rc != PL_OK)
            return rc;
    }
    return PL_OK;
}

void pl_listen_close_all(void)
{
    for (int i = 0; i < nlistens; i++)
        pl__listen_close(&listens[i]);
    if (nlistens)
        pl_log_info("listen", "%d listeners closed: no new connections",
                    nlistens);
}

void pl__listen_stop(void)
{
    for (int i = 0; i < nlistens; i++)
        pl__listen_close(&listens[i]);
    /* Connections still open keep pointing at their entry until they are
     * freed: the array stays until the process ends. */
    nlistens = 0;
}

void pl__listen_free(void)
{
    pl__listen_stop();
    pl_free(listens);
    listens = NULL;
    held = 0;
    for (int i = 0; i < ncounts; i++)
        pl_map_clear(&counts[i].per_ip);
    pl_free(counts);
    counts = NULL;
    ncounts = 0;
}

void pl__listen_reload(struct pl_config *c)
{
    S = &c->s;
}

/* The protocol of an entry that names none: the first one that listens
 * by default (c2s). */
static const struct pl_protocol *default_protocol(void)
{
    for (int i = 0; pl_module_at(i); i++) {
        const struct pl_frontend *fe = pl_module_at(i)->frontend;
        for (int k = 0; fe && fe->protocols && fe->protocols[k]; k++)
            if (fe->protocols[k]->listen_by_default)
                return fe->protocols[k];
    }
    return NULL;
}

int pl__listen_check(struct pl_config *c, char *err, size_t errlen)
{
    for (int i = 0; i < c->nlisteners; i++) {
        struct pl_listener_conf *lc = &c->listeners[i];
        const char *file = lc->group ? config_setting_source_file(lc->group)
                                     : NULL;
        int line = lc->group ? (int)config_setting_source_line(lc->group) : 0;
        char at[300] = "";
        if (file)
            snprintf(at, sizeof(at), "%s:%d: ", file, line);
        if (!lc->protocol) {
            const struct pl_protocol *d = default_protocol();
            if (!d) {
                snprintf(err, errlen, "%slistener: protocol needed", at);
                return PL_EINVAL;
            }
            lc->protocol = pl_strdup(d->name);
        }
        const struct pl_protocol *p = pl_module_protocol(lc->protocol, NULL);
        if (!p) {
            char names[256];
            pl_module_protocol_names(names, sizeof(names));
            snprintf(err, errlen,
                     "%sunknown listener protocol '%s' (available: %s)", at,
                     lc->protocol, names);
            return PL_EINVAL;
        }
        if (!(p->transports & lc->transport)) {
            snprintf(err, errlen, "%sprotocol %s is not served over %s", at,
                     lc->protocol,
                     lc->transport == PL_TRANSPORT_UDP ? "udp" : "tcp");
            return PL_EINVAL;
        }
        if (lc->transport == PL_TRANSPORT_UDP && lc->tls == PL_TLS_DIRECT) {
            snprintf(err, errlen, "%sa udp listener cannot use TLS", at);
            return PL_EINVAL;
        }
        if (lc->port < 0) {
            if (!p->default_port) {
                snprintf(err, errlen, "%slistener %s needs a port", at,
                         lc->protocol);
                return PL_EINVAL;
            }
            lc->port = lc->tls == PL_TLS_DIRECT && p->default_tls_port
                           ? p->default_tls_port
                           : p->default_port;
        }
    }
    return PL_OK;
}

int pl__listen_accept_fd(const char *protocol, int tls_mode, int fd)
{
    if (!S || !pl_server_loop() || fd < 0 || tls_mode < 0 || tls_mode > 2)
        return PL_EINVAL;
    struct pl_listen *l = NULL;
    for (int i = 0; i < nlistens && !l; i++)
        if (strcmp(listens[i].conf->protocol, protocol) == 0 &&
            listens[i].conf->tls == tls_mode)
            l = &listens[i];
    for (int i = 0; i < ntest && !l; i++)
        if (strcmp(test_listens[i].conf.protocol, protocol) == 0 &&
            test_listens[i].conf.tls == tls_mode)
            l = &test_listens[i].l;
    if (!l) {
        const struct pl_module *owner;
        const struct pl_protocol *p = pl_module_protocol(protocol, &owner);
        if (!p ||
            ntest == (int)(sizeof(test_listens) / sizeof(test_listens[0])))
            return PL_EINVAL;
        struct test_listen *t = &test_listens[ntest++];
        t->conf.protocol = (char *)p->name;
        t->conf.address = (char *)"127.0.0.1";
        t->conf.tls = tls_mode;
        t->conf.transport = PL_TRANSPORT_TCP;
        t->conf.max_per_ip = -1;
        t->conf.max_total = -1;
        t->conf.handshake_timeout = -1;
        t->conf.idle_timeout = -1;
        l = &t->l;
        l->proto = p;
        l->owner = owner;
        l->conf = &t->conf;
        l->transport = PL_TRANSPORT_TCP;
        l->udp.fd = -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return PL_EIO;
    hand_over(l, fd, NULL);
    return PL_OK;
}
