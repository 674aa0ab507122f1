/*
 * route.c - route sets: the proxies the server's own requests go through
 * when a UA is not its direct peer.  API: sip_int.h ("Route sets").
 *
 * Two sources, one use:
 *   - the Path header fields of a REGISTER (RFC 3327 §5.3): the registrar
 *     keeps them, in order, with each binding it makes or refreshes, and
 *     requests for that contact (MESSAGE, INFO) carry them as a preloaded
 *     Route (§5.4, the example of §5.5.2);
 *   - the Record-Route header fields of a dialog-forming request received
 *     as UAS (SUBSCRIBE): RFC 3261 §12.1.1, the route set is their URIs in
 *     order, URI parameters kept; requests in the dialog (NOTIFY) carry it.
 *
 * Building a request (§12.2.1.1): with an empty route set the
 * Request-URI is the remote target and there is no Route; when the first
 * route has the lr parameter (a loose router, §16.12.1.1) the
 * Request-URI is the remote target and the route set becomes the Route
 * header fields in order; otherwise (a strict router, RFC 2543) the
 * Request-URI is the first route's URI without the parameters a
 * Request-URI may not hold (method; and no headers, §19.1.1) and the Route
 * header fields are the rest of the set followed by the remote target.
 *
 * Where the request goes (§8.1.2, §12.2.1.1): to the first route's
 * address.  This server opens no connections: over TCP/TLS the request
 * takes the connection the route was learnt on (the proxy's, the first
 * hop); over UDP it goes to the first route's port when its host is an IP
 * address equal to the source of the request the route came from
 * (a proxy that sends from another port than it listens on), and
 * otherwise to that source itself.  So a Path or Record-Route never makes
 * the server send to another host than the one the authenticated request
 * came from (no third-party traffic), and no DNS lookup is needed.
 *
 * Pure functions over libosip2 messages, for the registrar, the presence
 * agent and the unit tests.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "sip_int.h"

/* At most this many routes are kept (a longer set is refused). */
#define MAX_ROUTES 16

void pl__sip_routes_free(struct sip_route_set *rs)
{
    for (int i = 0; i < rs->n; i++)
        pl_free(rs->v[i]);
    pl_free(rs->v);
    rs->v = NULL;
    rs->n = 0;
}

void pl__sip_routes_copy(struct sip_route_set *dst,
                         const struct sip_route_set *src)
{
    pl__sip_routes_free(dst);
    if (!src->n)
        return;
    dst->v = pl_calloc((size_t)src->n, sizeof(*dst->v));
    for (int i = 0; i < src->n; i++)
        dst->v[i] = pl_strdup(src->v[i]);
    dst->n = src->n;
}

/* Appends <uri> of a parsed name-addr; PL_EINVAL if it has no sip or sips
 * URI with a host, PL_ELIMIT past MAX_ROUTES. */
static int add_url(struct sip_route_set *rs, osip_uri_t *u)
{
    if (!u || !u->scheme || !u->host || !u->host[0] ||
        (strcasecmp(u->scheme, "sip") != 0 &&
         strcasecmp(u->scheme, "sips") != 0))
        return PL_EINVAL;
    if (rs->n >= MAX_ROUTES)
        return PL_EINVAL;
    char *s = NULL;
    if (osip_uri_to_str(u, &s) != 0 || !s)
        return PL_EINVAL;
    size_t n = strlen(s) + 3;
    char *v = pl_malloc(n);
    snprintf(v, n, "<%s>", s);
    osip_free(s);
    rs->v = pl_realloc(rs->v, (size_t)(rs->n + 1) * sizeof(*rs->v));
    rs->v[rs->n++] = v;
    return PL_OK;
}

/* Parses one name-addr and appends it. */
static int add_value(struct sip_route_set *rs, const char *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (!n || *p == '\0')
        return PL_EINVAL;
    char *s = pl_malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    osip_route_t *r = NULL;
    int rc = PL_EINVAL;
    /* The grammar wants name-addr (the URI in angle brackets). */
    if (strchr(s, '<') && osip_route_init(&r) == 0 &&
        osip_route_parse(r, s) == 0)
        rc = add_url(rs, r->url);
    osip_route_free(r);
    pl_free(s);
    return rc;
}

/* Splits a header value at the commas outside <...> and quotes. */
static int add_list(struct sip_route_set *rs, const char *v)
{
    int in_angle = 0, in_quote = 0;
    const char *start = v;
    for (const char *p = v;; p++) {
        if (*p == '\0' || (*p == ',' && !in_angle && !in_quote)) {
            int rc = add_value(rs, start, (size_t)(p - start));
            if (rc != PL_OK)
                return rc;
            if (*p == '\0')
                return PL_OK;
            start = p + 1;
        } else if (in_quote) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                in_quote = 0;
        } else if (*p == '"') {
            in_quote = 1;
        } else if (*p == '<') {
            in_angle = 1;
        } else if (*p == '>') {
            in_angle = 0;
        }
    }
}

int pl__sip_routes_from_path(const osip_message_t *req,
                             struct sip_route_set *out)
{
    memset(out, 0, sizeof(*out));
    const char *v;
    for (int i = 0; (v = pl__sip_header(req, "Path", i)); i++) {
        int rc = add_list(out, v);
        if (rc != PL_OK) {
            pl__sip_routes_free(out);
            return rc;
        }
    }
    return PL_OK;
}

int pl__sip_routes_from_rr(const osip_message_t *req, struct sip_route_set *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < osip_list_size(&req->record_routes); i++) {
        osip_record_route_t *rr = osip_list_get(&req->record_routes, i);
        int rc = add_url(out, rr ? rr->url : NULL);
        if (rc != PL_OK) {
            pl__sip_routes_free(out);
            return rc;
        }
    }
    return PL_OK;
}

char *pl__sip_routes_join(const struct sip_route_set *rs)
{
    size_t n = 1;
    for (int i = 0; i < rs->n; i++)
        n += strlen(rs->v[i]) + 2;
    char *s = pl_malloc(n), *p = s;
    *p = '\0';
    for (int i = 0; i < rs->n; i++)
        p += snprintf(p, n - (size_t)(p - s), "%s%s", i ? ", " : "", rs->v[i]);
    return s;
}

/* The URI of a stored route ("<uri>"), parsed: new, or NULL. */
static osip_uri_t *route_uri(const char *v)
{
    osip_route_t *r = NULL;
    osip_uri_t *u = NULL;
    if (osip_route_init(&r) == 0 && osip_route_parse(r, v) == 0 && r->url)
        osip_uri_clone(r->url, &u);
    osip_route_free(r);
    return u;
}

int pl__sip_route_is_loose(const char *route)
{
    osip_uri_t *u = route_uri(route);
    osip_uri_param_t *p = NULL;
    int loose = u && osip_uri_uparam_get_byname(u, "lr", &p) == 0 && p;
    osip_uri_free(u);
    return loose;
}

static int set_request_uri(osip_message_t *req, osip_uri_t *u)
{
    if (req->req_uri)
        osip_uri_free(req->req_uri);
    req->req_uri = NULL;
    osip_message_set_uri(req, u);
    return PL_OK;
}

int pl__sip_routes_apply(osip_message_t *req, const struct sip_route_set *rs,
                         const char *target)
{
    osip_uri_t *u = NULL;
    while (osip_list_size(&req->routes) > 0) {
        osip_route_t *r = osip_list_get(&req->routes, 0);
        osip_list_remove(&req->routes, 0);
        osip_route_free(r);
    }
    if (rs->n == 0 || pl__sip_route_is_loose(rs->v[0])) {
        /* §12.2.1.1: no route set, or a loose router first. */
        if (osip_uri_init(&u) != 0 || osip_uri_parse(u, target) != 0) {
            osip_uri_free(u);
            return PL_EINVAL;
        }
        set_request_uri(req, u);
        for (int i = 0; i < rs->n; i++)
            if (osip_message_set_route(req, rs->v[i]) != 0)
                return PL_EINVAL;
        return PL_OK;
    }
    /* A strict router: its URI is the Request-URI (without the method
     * parameter and headers, which a Request-URI may not hold, §19.1.1),
     * the remote target goes last in Route. */
    u = route_uri(rs->v[0]);
    if (!u)
        return PL_EINVAL;
    osip_uri_param_t *mp = NULL;
    for (int i = 0; i < osip_list_size(&u->url_params); i++) {
        mp = osip_list_get(&u->url_params, i);
        if (mp->gname && strcasecmp(mp->gname, "method") == 0) {
            osip_list_remove(&u->url_params, i);
            osip_uri_param_free(mp);
            i--;
        }
    }
    osip_uri_header_freelist(&u->url_headers);
    set_request_uri(req, u);
    for (int i = 1; i < rs->n; i++)
        if (osip_message_set_route(req, rs->v[i]) != 0)
            return PL_EINVAL;
    size_t n = strlen(target) + 3;
    char *t = pl_malloc(n);
    snprintf(t, n, "<%s>", target);
    int rc = osip_message_set_route(req, t) == 0 ? PL_OK : PL_EINVAL;
    pl_free(t);
    return rc;
}

/* Whether host (a URI's, maybe [v6]) is the IP address of sa. */
static int same_ip(const char *host, const struct sockaddr_storage *sa)
{
    char h[64];
    size_t n = strlen(host);
    if (n >= sizeof(h))
        return 0;
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
    } else {
        memcpy(h, host, n + 1);
    }
    if (sa->ss_family == AF_INET) {
        struct in_addr a;
        return inet_pton(AF_INET, h, &a) == 1 &&
               memcmp(&a, &((const struct sockaddr_in *)sa)->sin_addr,
                      sizeof(a)) == 0;
    }
    if (sa->ss_family == AF_INET6) {
        struct in6_addr a;
        return inet_pton(AF_INET6, h, &a) == 1 &&
               memcmp(&a, &((const struct sockaddr_in6 *)sa)->sin6_addr,
                      sizeof(a)) == 0;
    }
    return 0;
}

int pl__sip_route_flow(const struct sip_flow *base,
                       const struct sip_route_set *rs, struct sip_flow *out)
{
    *out = *base;
    if (!rs->n || pl__sip_flow_reliable(base) || !base->addrlen)
        return 0;
    osip_uri_t *u = route_uri(rs->v[0]);
    if (!u)
        return 0;
    int done = 0;
    osip_uri_param_t *tp = NULL;
    osip_uri_uparam_get_byname(u, "transport", &tp);
    long port = u->port && u->port[0] ? strtol(u->port, NULL, 10) : 5060;
    if ((!tp || !tp->gvalue || strcasecmp(tp->gvalue, "udp") == 0) &&
        strcasecmp(u->scheme, "sip") == 0 && port > 0 && port <= 65535 &&
        same_ip(u->host, &base->addr)) {
        pl__sip_flow_set_port(out, (int)port);
        done = 1;
    }
    osip_uri_free(u);
    return done;
}
