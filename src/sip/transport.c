/*
 * transport.c - the "sip" listener protocol (RFC 3261 §18): UDP datagrams,
 * TCP connections and TLS connections (tls = "direct" entries, the hosts'
 * certificates, SNI picking the host), each framed by frame.c and handed
 * to dispatch.c; sending over a flow; where responses go.  See sip_int.h.
 *
 * One protocol serves both transports: a `listeners` entry with
 * transport = "udp" and another with the (default) "tcp" on the same
 * port give UDP and TCP on 5060, as §18.2.1 wants; tls = "direct" (port
 * 5061 by default) gives TLS.  SIP has no STARTTLS: sip.c refuses
 * tls = "starttls" written in an entry, and an entry without tls is plain.
 *
 * Connections: the core accepts within the limits and watches the
 * deadlines (conn.h); a connection counts as established (no handshake
 * deadline any more) at its first well-framed message, and then lives
 * until the peer closes or the idle deadline (the limits group's
 * idle_timeout, or the entry's); RFC 5626 §3.5.1 keep-alives (a double
 * CRLF, answered with one CRLF) keep it active.  Each connection has an
 * id in a table so that flows (and transactions) hold ids, not pointers.
 * A framing error ends the connection after the 400, when one could be
 * addressed.
 *
 * Responses (§18.2.2, RFC 3581): over TCP/TLS on the connection the
 * request came on (if it closed meanwhile the response is lost: this
 * server does not open connections); over UDP to the source address of
 * the request, at the port rport asked for, else the sent-by port (5060
 * when none).  The top Via gets received= when its host is a name or
 * another address than the source (§18.2.1), and always when rport was
 * asked (RFC 3581 §4).  maddr is not followed: answers go to where the
 * request came from and nowhere else, so this server cannot be used to
 * send traffic to a third party.
 *
 * Extending: outgoing connections (to send a request to a contact with no
 * open flow) would be a struct sip_conn opened here with a client role.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "alloc.h"
#include "conn.h"
#include "error.h"
#include "host.h"
#include "listen.h"
#include "log.h"
#include "map.h"
#include "sip_int.h"
#include "stats.h"

/* One TCP or TLS connection. */
struct sip_conn {
    uint64_t id;              /* flows name it by this */
    struct pl_conn *conn;     /* NULL once closed */
    struct pl_listen *listen; /* accepted by */
    int transport;            /* SIP_TCP or SIP_TLS */
    struct sip_framer fr;     /* stream framing */
    unsigned established : 1; /* a message was framed */
};

static struct pl_map conns;     /* hex id -> struct sip_conn */
static unsigned long nconns[4]; /* open, by transport */
static uint64_t next_conn_id;
static unsigned long udp_datagrams;
static char **local_addrs; /* normalized addresses of this server */
static int nlocal_addrs;

static void id_key(uint64_t id, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)id);
}

static socklen_t addr_len(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                    : sizeof(struct sockaddr_in);
}

const char *pl__sip_transport_name(int transport)
{
    return transport == SIP_TLS ? "TLS" : transport == SIP_TCP ? "TCP" : "UDP";
}

void pl__sip_flow_peer(const struct sip_flow *f, char *ip, size_t iplen,
                       int *port)
{
    ip[0] = '\0';
    *port = 0;
    if (f->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&f->addr;
        inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)iplen);
        *port = ntohs(a->sin_port);
    } else if (f->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&f->addr;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)iplen);
        *port = ntohs(a->sin6_port);
    }
}

static struct sip_conn *conn_of(uint64_t id)
{
    char k[17];
    id_key(id, k);
    return pl_map_get(&conns, k);
}

int pl__sip_flow_alive(const struct sip_flow *f)
{
    if (f->transport == SIP_UDP)
        return f->listen && f->listen->udp.fd >= 0;
    struct sip_conn *sc = conn_of(f->conn);
    return sc && sc->conn && !sc->conn->closing;
}

int pl__sip_flow_send(const struct sip_flow *f, const void *p, size_t n)
{
    if (f->transport == SIP_UDP)
        return pl_listen_sendto(f->listen, p, n, &f->addr, f->addrlen);
    struct sip_conn *sc = conn_of(f->conn);
    if (!sc || !sc->conn || sc->conn->closing)
        return PL_ECLOSED;
    pl_conn_write(sc->conn, p, n);
    return PL_OK;
}

static int is_wildcard(const char *a)
{
    return strcmp(a, "0.0.0.0") == 0 || strcmp(a, "::") == 0;
}

void pl__sip_flow_sent_by(const struct sip_flow *f, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN + 2] = "";
    const char *addr = f->listen && f->listen->conf ? f->listen->conf->address
                                                    : "127.0.0.1";
    int port = f->listen ? pl_listen_port(f->listen) : -1;
    if (!is_wildcard(addr)) {
        snprintf(host, sizeof(host), strchr(addr, ':') ? "[%s]" : "%s", addr);
    } else {
        /* The address the peer reached, when a connection says it. */
        struct sip_conn *sc = f->transport != SIP_UDP ? conn_of(f->conn) : NULL;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char ip[INET6_ADDRSTRLEN] = "";
        if (sc && sc->conn &&
            getsockname(sc->conn->io.fd, (struct sockaddr *)&ss, &sl) == 0) {
            if (ss.ss_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip,
                          sizeof(ip));
            else if (ss.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
                          ip, sizeof(ip));
        }
        if (ip[0])
            snprintf(host, sizeof(host), strchr(ip, ':') ? "[%s]" : "%s", ip);
        else if (pl_host_at(0))
            snprintf(host, sizeof(host), "%.*s", (int)sizeof(host) - 1,
                     pl_host_at(0)->domain);
        else
            snprintf(host, sizeof(host), "localhost");
    }
    if (port > 0)
        snprintf(buf, len, "%s:%d", host, port);
    else
        snprintf(buf, len, "%s", host);
}

/* ---- where responses go ---- */

/* inet_pton of a Via or URI host (brackets allowed for IPv6). */
static int parse_ip(const char *host, struct sockaddr_storage *out)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (n >= sizeof(buf))
        return 0;
    memcpy(buf, host, n + 1);
    char *h = buf;
    if (h[0] == '[' && n > 2 && h[n - 1] == ']') {
        h[n - 1] = '\0';
        h++;
    }
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, h, &((struct sockaddr_in *)out)->sin_addr) == 1) {
        out->ss_family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, h, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
        out->ss_family = AF_INET6;
        return 1;
    }
    return 0;
}

static int same_ip(const struct sockaddr_storage *a,
                   const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

static void set_port(struct sockaddr_storage *a, int port)
{
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
    else if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
}

void pl__sip_flow_set_port(struct sip_flow *f, int port)
{
    set_port(&f->addr, port);
}

void pl__sip_response_flow(osip_message_t *req, const struct sip_flow *flow,
                           struct sip_flow *out)
{
    *out = *flow;
    osip_via_t *v = osip_list_get(&req->vias, 0);
    if (!v || !v->host)
        return;
    char ip[INET6_ADDRSTRLEN];
    int src_port;
    pl__sip_flow_peer(flow, ip, sizeof(ip), &src_port);
    if (!ip[0])
        return;
    osip_generic_param_t *rport = NULL, *received = NULL;
    osip_via_param_get_byname(v, "rport", &rport);
    osip_via_param_get_byname(v, "received", &received);
    struct sockaddr_storage sent;
    int differs = !parse_ip(v->host, &sent) || !same_ip(&sent, &flow->addr);
    if (differs || rport) {
        if (received) {
            osip_free(received->gvalue);
            received->gvalue = osip_strdup(ip);
        } else {
            osip_via_set_received(v, osip_strdup(ip));
        }
    }
    if (rport) {
        char p[8];
        snprintf(p, sizeof(p), "%d", src_port);
        osip_free(rport->gvalue);
        rport->gvalue = osip_strdup(p);
    }
    if (flow->transport != SIP_UDP)
        return; /* the same connection */
    int port = 5060;
    if (rport) {
        port = src_port;
    } else if (v->port) {
        char *end = NULL;
        long n = strtol(v->port, &end, 10);
        if (end && !*end && n > 0 && n < 65536)
            port = (int)n;
    }
    set_port(&out->addr, port);
}

int pl__sip_udp_flow(const char *ip, int port, struct sip_flow *out)
{
    memset(out, 0, sizeof(*out));
    if (port <= 0 || port > 65535 || !parse_ip(ip, &out->addr))
        return PL_EINVAL;
    set_port(&out->addr, port);
    out->addrlen = addr_len(&out->addr);
    out->transport = SIP_UDP;
    for (int i = 0; pl_listen_at(i); i++) {
        struct pl_listen *l = pl_listen_at(i);
        if (l->proto != &pl__sip_protocol || l->transport != PL_TRANSPORT_UDP ||
            l->udp.fd < 0)
            continue;
        /* A socket of the same family as the destination. */
        struct sockaddr_storage la;
        if (parse_ip(l->conf->address, &la) &&
            la.ss_family != out->addr.ss_family)
            continue;
        out->listen = l;
        return PL_OK;
    }
    return PL_EINVAL;
}

/* ---- our addresses ---- */

static void add_local(const struct sockaddr_storage *a)
{
    char ip[INET6_ADDRSTRLEN];
    if (a->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, ip,
                  sizeof(ip));
    else if (a->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, ip,
                  sizeof(ip));
    else
        return;
    for (int i = 0; i < nlocal_addrs; i++)
        if (strcmp(local_addrs[i], ip) == 0)
            return;
    local_addrs = pl_realloc(local_addrs,
                             (size_t)(nlocal_addrs + 1) * sizeof(char *));
    local_addrs[nlocal_addrs++] = pl_strdup(ip);
}

void pl__sip_addresses_load(const struct pl_config *c)
{
    pl__sip_addresses_free();
    int wildcard = 0;
    for (int i = 0; i < c->nlisteners; i++) {
        const struct pl_listener_conf *lc = &c->listeners[i];
        struct sockaddr_storage a;
        if (!lc->protocol || strcmp(lc->protocol, "sip") != 0)
            continue;
        if (is_wildcard(lc->address))
            wildcard = 1;
        else if (parse_ip(lc->address, &a))
            add_local(&a);
    }
    struct ifaddrs *ifs = NULL;
    if (wildcard && getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
            struct sockaddr_storage a;
            if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET &&
                                 i->ifa_addr->sa_family != AF_INET6))
                continue;
            memset(&a, 0, sizeof(a));
            memcpy(&a, i->ifa_addr,
                   i->ifa_addr->sa_family == AF_INET
                       ? sizeof(struct sockaddr_in)
                       : sizeof(struct sockaddr_in6));
            add_local(&a);
        }
        freeifaddrs(ifs);
    }
}

void pl__sip_addresses_free(void)
{
    for (int i = 0; i < nlocal_addrs; i++)
        pl_free(local_addrs[i]);
    pl_free(local_addrs);
    local_addrs = NULL;
    nlocal_addrs = 0;
}

int pl__sip_is_local_address(const char *host)
{
    struct sockaddr_storage a;
    if (!parse_ip(host, &a))
        return 0;
    char ip[INET6_ADDRSTRLEN];
    if (a.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&a)->sin_addr, ip,
                  sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a)->sin6_addr, ip,
                  sizeof(ip));
    for (int i = 0; i < nlocal_addrs; i++)
        if (strcmp(local_addrs[i], ip) == 0)
            return 1;
    return 0;
}

/* ---- connections ---- */

static void conn_flow(const struct sip_conn *sc, struct sip_flow *f)
{
    memset(f, 0, sizeof(*f));
    f->transport = sc->transport;
    f->listen = sc->listen;
    f->conn = sc->id;
    f->addr = sc->conn->addr;
    f->addrlen = addr_len(&sc->conn->addr);
}

static void on_data(struct pl_conn *c, const char *p, size_t n)
{
    struct sip_conn *sc = c->data;
    size_t max = (size_t)pl__sip_settings()->max_message_size;
    pl__sip_framer_feed(&sc->fr, p, n);
    for (;;) {
        if (!sc->conn || sc->conn->closing)
            return;
        struct sip_frame_out out;
        int kind = pl__sip_framer_next(&sc->fr, max, &out);
        if (kind == SIP_FRAME_MORE)
            return;
        if (kind == SIP_FRAME_PING) {
            /* RFC 5626 §3.5.1: the pong. */
            pl_stat_inc(sip_keepalives);
            pl_conn_write(c, "\r\n", 2);
            continue;
        }
        if (kind == SIP_FRAME_MSG && !sc->established) {
            sc->established = 1;
            pl_conn_established(c);
        }
        struct sip_flow f;
        conn_flow(sc, &f);
        pl__sip_receive(&f, kind, out.p, out.n, &out.scan);
        if (kind == SIP_FRAME_BAD) {
            /* Framing is lost (§18.3): the answer, if any, then the end. */
            pl_log_info("sip", "%s:%d: closing %s connection: framing lost",
                        c->ip, c->port, pl__sip_transport_name(sc->transport));
            pl_conn_close(c);
            return;
        }
    }
}

static void on_closed(struct pl_conn *c)
{
    struct sip_conn *sc = c->data;
    char k[17];
    id_key(sc->id, k);
    pl_map_del(&conns, k);
    nconns[sc->transport]--;
    /* The registrations that used it go (their requests had no way). */
    for (int i = 0; pl__sip_parts[i]; i++)
        if (pl__sip_parts[i]->flow_closed)
            pl__sip_parts[i]->flow_closed(sc->id);
    pl__sip_framer_free(&sc->fr);
    pl_free(sc);
}

static const struct pl_conn_ops conn_ops = {
    .data = on_data, .closed = on_closed,
    /* No timeout handler: on a deadline the core closes (SIP has no
     * message to say why). */
};

static int sip_accept(struct pl_listen *l, struct pl_conn *c)
{
    struct sip_conn *sc = pl_calloc(1, sizeof(*sc));
    sc->id = ++next_conn_id;
    sc->conn = c;
    sc->listen = l;
    sc->transport = l->conf->tls == PL_TLS_DIRECT ? SIP_TLS : SIP_TCP;
    char k[17];
    id_key(sc->id, k);
    pl_map_put(&conns, k, sc);
    nconns[sc->transport]++;
    pl_conn_set_handlers(c, &conn_ops, sc);
    return PL_OK;
}

static void sip_datagram(struct pl_listen *l, char *p, size_t n,
                         const struct sockaddr_storage *from, socklen_t fromlen)
{
    udp_datagrams++;
    struct sip_frame_out out;
    int kind =
        pl__sip_frame_datagram(p, n,
                               (size_t)pl__sip_settings()->max_message_size,
                               &out);
    if (kind == SIP_FRAME_PING) {
        pl_stat_inc(sip_keepalives); /* no answer over UDP */
        return;
    }
    struct sip_flow f;
    memset(&f, 0, sizeof(f));
    f.transport = SIP_UDP;
    f.listen = l;
    memcpy(&f.addr, from, fromlen < sizeof(f.addr) ? fromlen : sizeof(f.addr));
    f.addrlen = fromlen;
    pl__sip_receive(&f, kind, out.p, out.n, &out.scan);
}

unsigned long pl__sip_conn_count(int transport)
{
    return transport >= 0 && transport < 4 ? nconns[transport] : 0;
}

unsigned long pl__sip_udp_datagrams(void)
{
    return udp_datagrams;
}

static void collect(const char *key, void *value, void *ud)
{
    (void)key;
    pl_buf_append(ud, &value, sizeof(value));
}

void pl__sip_conns_close(void)
{
    struct pl_buf b = {0};
    pl_map_each(&conns, collect, &b);
    struct pl_str s = pl_buf_str(&b);
    for (size_t i = 0; i + sizeof(void *) <= s.len; i += sizeof(void *)) {
        struct sip_conn *sc;
        memcpy(&sc, s.p + i, sizeof(sc));
        if (sc->conn)
            pl_conn_close(sc->conn);
    }
    pl_buf_reset(&b);
}

const struct pl_protocol pl__sip_protocol = {
    .name = "sip",
    .summary = "SIP (RFC 3261) over UDP, TCP and TLS",
    .transports = PL_TRANSPORT_TCP | PL_TRANSPORT_UDP,
    .default_port = 5060,
    .default_tls_port = 5061,
    .accept = sip_accept,
    .datagram = sip_datagram,
};
