/*
 * dns.c - c-ares on the event loop; see dns.h.
 *
 * c-ares tells which sockets it wants watched through its socket-state
 * callback; each gets a struct pl_io that calls ares_process_fd when
 * ready.  One timer, re-armed after every call into c-ares from
 * ares_timeout(), drives retransmissions and timeouts.
 */
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "loop.h"

struct watch {
    struct pl_io io;    /* the c-ares socket */
    struct watch *next; /* all watched sockets */
};

static ares_channel channel;
static struct pl_loop *dns_loop;
static struct watch *watches;
static struct pl_timer timer;
static int ready;

static void arm_timer(void)
{
    if (!ready)
        return;
    struct timeval tv, *t = ares_timeout(channel, NULL, &tv);
    if (!t) {
        pl_timer_stop(&timer);
        return;
    }
    uint64_t ms = (uint64_t)t->tv_sec * 1000 + (uint64_t)t->tv_usec / 1000;
    pl_timer_start(dns_loop, &timer, ms ? ms : 1);
}

static void on_io(struct pl_io *io, unsigned events)
{
    ares_socket_t fd = io->fd;
    ares_process_fd(channel, (events & PL_IO_READ) ? fd : ARES_SOCKET_BAD,
                    (events & PL_IO_WRITE) ? fd : ARES_SOCKET_BAD);
    arm_timer();
}

static void on_timer(struct pl_timer *t)
{
    ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer();
}

static void on_sock_state(void *data, ares_socket_t fd, int readable,
                          int writable)
{
    struct watch **pp = &watches, *w;
    while ((w = *pp) && w->io.fd != fd)
        pp = &w->next;
    if (!readable && !writable) {
        if (w) {
            pl_io_stop(&w->io);
            *pp = w->next;
            pl_free(w);
        }
        return;
    }
    if (!w) {
        w = pl_calloc(1, sizeof(*w));
        pl_io_init(&w->io, fd, on_io, NULL);
        w->next = watches;
        watches = w;
    }
    pl_io_set(dns_loop, &w->io,
              (readable ? PL_IO_READ : 0) | (writable ? PL_IO_WRITE : 0));
}

/* "1.2.3.4:53", "[::1]:53" or "1.2.3.4" into c-ares' CSV form. */
static int server_csv(const char *server, char *out, size_t len)
{
    const char *p = server;
    char host[INET6_ADDRSTRLEN + 1];
    long port = 53;
    unsigned char tmp[16];
    if (*p == '[') {
        const char *e = strchr(p, ']');
        if (!e || (size_t)(e - p - 1) >= sizeof(host))
            return PL_EINVAL;
        memcpy(host, p + 1, (size_t)(e - p - 1));
        host[e - p - 1] = '\0';
        if (inet_pton(AF_INET6, host, tmp) != 1)
            return PL_EINVAL;
        p = e + 1;
    } else {
        const char *c = strchr(p, ':');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n >= sizeof(host))
            return PL_EINVAL;
        memcpy(host, p, n);
        host[n] = '\0';
        if (inet_pton(AF_INET, host, tmp) != 1)
            return PL_EINVAL;
        p += n;
    }
    if (*p == ':') {
        char *end;
        port = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || port < 1 || port > 65535)
            return PL_EINVAL;
    } else if (*p) {
        return PL_EINVAL;
    }
    if (strchr(host, ':'))
        snprintf(out, len, "[%s]:%ld", host, port);
    else
        snprintf(out, len, "%s:%ld", host, port);
    return PL_OK;
}

int pl_dns_check_server(const char *server)
{
    char csv[128];
    if (!server || !*server)
        return PL_OK;
    return server_csv(server, csv, sizeof(csv));
}

int pl_dns_init(struct pl_loop *loop, const char *server)
{
    char csv[128];
    if (ready)
        return PL_OK;
    if (server && *server && server_csv(server, csv, sizeof(csv)) != PL_OK)
        return PL_EINVAL;
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        return PL_EIO;
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = on_sock_state;
    o.timeout = 2000; /* ms per try */
    o.tries = 3;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    if (server && *server) {
        /* A configured server replaces resolv.conf; no search domains. */
        o.ndomains = 0;
        o.domains = NULL;
        mask |= ARES_OPT_DOMAINS;
        o.lookups = (char *)"b"; /* DNS only, not /etc/hosts */
        mask |= ARES_OPT_LOOKUPS;
    }
    int rc = ares_init_options(&channel, &o, mask);
    if (rc != ARES_SUCCESS) {
        pl_log_error("dns", "cannot start the resolver: %s", ares_strerror(rc));
        ares_library_cleanup();
        return PL_EIO;
    }
    if (server && *server) {
        rc = ares_set_servers_ports_csv(channel, csv);
        if (rc != ARES_SUCCESS) {
            pl_log_error("dns", "resolver %s: %s", server, ares_strerror(rc));
            ares_destroy(channel);
            ares_library_cleanup();
            return PL_EINVAL;
        }
    }
    dns_loop = loop;
    pl_timer_init(&timer, on_timer, NULL);
    ready = 1;
    return PL_OK;
}

void pl_dns_shutdown(void)
{
    if (!ready)
        return;
    /* Pending callbacks fire with ARES_EDESTRUCTION (PL_ECLOSED). */
    ready = 0;
    pl_timer_stop(&timer);
    ares_destroy(channel);
    while (watches) {
        struct watch *w = watches;
        watches = w->next;
        pl_io_stop(&w->io);
        pl_free(w);
    }
    ares_library_cleanup();
}

static int map_status(int status)
{
    switch (status) {
    case ARES_SUCCESS: return PL_OK;
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
    case ARES_ENONAME: return PL_ENOT_FOUND;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED: return PL_ECLOSED;
    default: return PL_EIO;
    }
}

/* ---- SRV ---- */

struct srv_req {
    pl_dns_srv_fn *fn; /* caller's callback */
    void *data;        /* caller's data */
};

static int srv_cmp(const void *a, const void *b)
{
    const struct pl_dns_srv *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority - y->priority;
    return y->weight - x->weight;
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf,
                   int alen)
{
    struct srv_req *r = arg;
    struct ares_srv_reply *reply = NULL;
    int rc = map_status(status);
    const char *why = ares_strerror(status);
    struct pl_dns_srv *v = NULL;
    int n = 0;
    if (rc == PL_OK) {
        int prc = ares_parse_srv_reply(abuf, alen, &reply);
        if (prc != ARES_SUCCESS) {
            rc = map_status(prc);
            why = ares_strerror(prc);
        }
    }
    if (rc == PL_OK) {
        for (struct ares_srv_reply *p = reply; p; p = p->next)
            n++;
        v = pl_calloc((size_t)n + 1, sizeof(*v));
        n = 0;
        for (struct ares_srv_reply *p = reply; p; p = p->next) {
            v[n].target = pl_strdup(p->host);
            v[n].port = p->port;
            v[n].priority = p->priority;
            v[n].weight = p->weight;
            n++;
        }
        qsort(v, (size_t)n, sizeof(*v), srv_cmp);
        why = "ok";
    }
    if (reply)
        ares_free_data(reply);
    r->fn(rc, why, v, n, r->data);
    for (int i = 0; i < n; i++)
        pl_free(v[i].target);
    pl_free(v);
    pl_free(r);
}

void pl_dns_srv(const char *name, pl_dns_srv_fn *fn, void *data)
{
    if (!ready) {
        fn(PL_ECLOSED, "resolver not running", NULL, 0, data);
        return;
    }
    struct srv_req *r = pl_calloc(1, sizeof(*r));
    r->fn = fn;
    r->data = data;
    ares_query(channel, name, 1 /* C_IN */, 33 /* T_SRV */, on_srv, r);
    arm_timer();
}

/* ---- addresses ---- */

struct addr_req {
    pl_dns_addr_fn *fn; /* caller's callback */
    void *data;         /* caller's data */
    int port;           /* put into each result */
};

static void on_addrinfo(void *arg, int status, int timeouts,
                        struct ares_addrinfo *res)
{
    struct addr_req *r = arg;
    int rc = map_status(status);
    struct sockaddr_storage *v = NULL;
    int n = 0;
    if (rc == PL_OK && res) {
        for (struct ares_addrinfo_node *p = res->nodes; p; p = p->ai_next)
            n++;
        v = pl_calloc((size_t)n + 1, sizeof(*v));
        n = 0;
        for (struct ares_addrinfo_node *p = res->nodes; p; p = p->ai_next) {
            if (p->ai_family == AF_INET &&
                p->ai_addrlen >= sizeof(struct sockaddr_in)) {
                struct sockaddr_in *a = (struct sockaddr_in *)&v[n];
                memcpy(a, p->ai_addr, sizeof(*a));
                a->sin_port = htons((uint16_t)r->port);
                n++;
            } else if (p->ai_family == AF_INET6 &&
                       p->ai_addrlen >= sizeof(struct sockaddr_in6)) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&v[n];
                memcpy(a, p->ai_addr, sizeof(*a));
                a->sin6_port = htons((uint16_t)r->port);
                n++;
            }
        }
        if (n == 0)
            rc = PL_ENOT_FOUND;
    }
    if (res)
        ares_freeaddrinfo(res);
    r->fn(rc,
          rc == PL_OK                        ? "ok"
          : n == 0 && status == ARES_SUCCESS ? "no addresses"
                                             : ares_strerror(status),
          v, n, r->data);
    pl_free(v);
    pl_free(r);
}

void pl_dns_addr(const char *host, int port, pl_dns_addr_fn *fn, void *data)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        fn(PL_OK, "ok", &ss, 1, data);
        return;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        fn(PL_OK, "ok", &ss, 1, data);
        return;
    }
    if (!ready) {
        fn(PL_ECLOSED, "resolver not running", NULL, 0, data);
        return;
    }
    struct addr_req *r = pl_calloc(1, sizeof(*r));
    r->fn = fn;
    r->data = data;
    r->port = port;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    ares_getaddrinfo(channel, host, NULL, &hints, on_addrinfo, r);
    arm_timer();
}
