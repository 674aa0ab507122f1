/*
 * test_sip_route.c - route sets (src/sip/route.c): the Path of a REGISTER
 * (RFC 3327 §5.3, its §5.5 examples), the UAS route set of a SUBSCRIBE's
 * Record-Route (RFC 3261 §12.1.1), requests built along them with loose
 * and strict routers (§12.2.1.1, its example), and the first hop a UDP
 * request goes to (never another host than the route's source).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "sip/sip_int.h"
#include "sip_unit.h"
#include "unit.h"

/* A request with the given extra header lines. */
static osip_message_t *request(const char *method, const char *extra)
{
    char buf[2048];
    snprintf(buf, sizeof(buf),
             "%s sip:REGISTRAR.EXAMPLEHOME.COM SIP/2.0\r\n"
             "Via: SIP/2.0/UDP 19.31.97.3:5060;branch=z9hG4bKp3wer654363\r\n"
             "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7\r\n"
             "To: UA1 <sip:UA1@EXAMPLEHOME.COM>\r\n"
             "From: UA1 <sip:UA1@EXAMPLEHOME.COM>;tag=456248\r\n"
             "Call-ID: 843817637684230@998sdasdh09\r\n"
             "CSeq: 1826 %s\r\n"
             "Contact: <sip:UA1@192.0.2.4>\r\n"
             "%s"
             "Content-Length: 0\r\n\r\n",
             method, method, extra);
    osip_message_t *m = unit_sip_parse(buf);
    CHECK(m != NULL);
    return m;
}

/* The Request-URI of m as text (a new string) and its Route fields joined
 * with "|". */
static void route_of(osip_message_t *m, char *ruri, size_t rlen, char *routes,
                     size_t n)
{
    char *s = NULL;
    osip_uri_to_str(m->req_uri, &s);
    snprintf(ruri, rlen, "%s", s ? s : "");
    osip_free(s);
    size_t k = 0;
    routes[0] = '\0';
    for (int i = 0; i < osip_list_size(&m->routes); i++) {
        osip_route_t *r = osip_list_get(&m->routes, i);
        char *v = NULL;
        osip_route_to_str(r, &v);
        k += (size_t)snprintf(routes + k, n - k, "%s%s", i ? "|" : "",
                              v ? v : "?");
        osip_free(v);
    }
}

/* A new request of the server's own to target along rs. */
static void build(const struct sip_route_set *rs, const char *target,
                  char *ruri, size_t rlen, char *routes, size_t n)
{
    pl__sip_osip_init();
    osip_message_t *m = NULL;
    CHECK_INT(pl__sip_request_new("MESSAGE", target, "<sip:a@example.org>",
                                  "<sip:UA1@EXAMPLEHOME.COM>", &m),
              PL_OK);
    CHECK_INT(pl__sip_routes_apply(m, rs, target), PL_OK);
    route_of(m, ruri, rlen, routes, n);
    /* It serializes, and parses back with the same routes. */
    size_t len = 0;
    char *wire = pl__sip_serialize(m, &len);
    CHECK(wire != NULL);
    osip_message_t *back = wire ? unit_sip_parse(wire) : NULL;
    CHECK(back != NULL);
    if (back) {
        char r2[256], routes2[1024];
        route_of(back, r2, sizeof(r2), routes2, sizeof(routes2));
        CHECK_STR(r2, ruri);
        CHECK_STR(routes2, routes);
        osip_message_free(back);
    }
    pl_free(wire);
    osip_message_free(m);
}

void test_sip_route_path(void)
{
    /* RFC 3327 §5.5.1 F4: P3 put itself above P1. */
    osip_message_t *m = request("REGISTER",
                                "Supported: path\r\n"
                                "Path: <sip:P3.EXAMPLEHOME.COM;lr>,"
                                "<sip:P1.EXAMPLEVISITED.COM;lr>\r\n");
    struct sip_route_set rs = {0};
    CHECK_INT(pl__sip_routes_from_path(m, &rs), PL_OK);
    CHECK_INT(rs.n, 2);
    if (rs.n == 2) {
        CHECK_STR(rs.v[0], "<sip:P3.EXAMPLEHOME.COM;lr>");
        CHECK_STR(rs.v[1], "<sip:P1.EXAMPLEVISITED.COM;lr>");
    }
    CHECK(pl__sip_has_option(m, "Supported", "path"));
    CHECK(!pl__sip_has_option(m, "Require", "path"));
    /* F6: the 200 has the same value. */
    char *j = pl__sip_routes_join(&rs);
    CHECK_STR(j, "<sip:P3.EXAMPLEHOME.COM;lr>, <sip:P1.EXAMPLEVISITED.COM;lr>");
    pl_free(j);
    /* §5.5.2 F3: Request-URI the contact, the path vector as Route. */
    char ruri[256], routes[1024];
    build(&rs, "sip:UA1@192.0.2.4", ruri, sizeof(ruri), routes, sizeof(routes));
    CHECK_STR(ruri, "sip:UA1@192.0.2.4");
    CHECK_STR(routes,
              "<sip:P3.EXAMPLEHOME.COM;lr>|<sip:P1.EXAMPLEVISITED.COM;lr>");
    osip_message_free(m);

    /* The same path in two fields, a display name, a header parameter:
     * the same route set, URI parameters kept. */
    m = request("REGISTER", "Supported: gruu, outbound, path\r\n"
                            "Path: \"edge\" <sip:P3.EXAMPLEHOME.COM;lr>;x=1\r\n"
                            "Path: <sip:P1.EXAMPLEVISITED.COM:5070;lr;"
                            "transport=udp>\r\n");
    struct sip_route_set rs2 = {0};
    CHECK_INT(pl__sip_routes_from_path(m, &rs2), PL_OK);
    CHECK_INT(rs2.n, 2);
    if (rs2.n == 2) {
        CHECK_STR(rs2.v[0], "<sip:P3.EXAMPLEHOME.COM;lr>");
        CHECK_STR(rs2.v[1], "<sip:P1.EXAMPLEVISITED.COM:5070;lr;"
                            "transport=udp>");
    }
    CHECK(pl__sip_has_option(m, "Supported", "path"));
    osip_message_free(m);
    pl__sip_routes_free(&rs2);

    /* None: an empty set, Request-URI the contact, no Route. */
    m = request("REGISTER", "");
    CHECK_INT(pl__sip_routes_from_path(m, &rs2), PL_OK);
    CHECK_INT(rs2.n, 0);
    CHECK(!pl__sip_has_option(m, "Supported", "path"));
    build(&rs2, "sip:UA1@192.0.2.4", ruri, sizeof(ruri), routes,
          sizeof(routes));
    CHECK_STR(ruri, "sip:UA1@192.0.2.4");
    CHECK_STR(routes, "");
    osip_message_free(m);

    /* Not name-addr, another scheme, junk after a route: refused whole
     * (libosip2 splits the list and skips an empty element itself). */
    static const char *const bad[] = {
        "Path: sip:P3.EXAMPLEHOME.COM;lr\r\n",
        "Path: <tel:+15551234>\r\n",
        "Path: <sip:P3.EXAMPLEHOME.COM;lr>, junk\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m = request("REGISTER", bad[i]);
        if (!m)
            continue;
        CHECK_INT(pl__sip_routes_from_path(m, &rs2), PL_EINVAL);
        CHECK_INT(rs2.n, 0);
        osip_message_free(m);
    }
    pl__sip_routes_free(&rs);
}

void test_sip_route_record_route(void)
{
    /* RFC 3327 §5.5.2 F5 as a UAS sees it: P1 on top, then P3.  §12.1.1:
     * the route set is the Record-Route URIs in order, parameters kept. */
    osip_message_t *m =
        request("SUBSCRIBE", "Record-Route: <sip:P1.EXAMPLEVISITED.COM;lr>\r\n"
                             "Record-Route: <sip:P3.EXAMPLEHOME.COM;lr;"
                             "ftag=456248>\r\n");
    struct sip_route_set rs = {0};
    CHECK_INT(pl__sip_routes_from_rr(m, &rs), PL_OK);
    CHECK_INT(rs.n, 2);
    if (rs.n == 2) {
        CHECK_STR(rs.v[0], "<sip:P1.EXAMPLEVISITED.COM;lr>");
        CHECK_STR(rs.v[1], "<sip:P3.EXAMPLEHOME.COM;lr;ftag=456248>");
    }
    char ruri[256], routes[1024];
    build(&rs, "sip:UA1@192.0.2.4", ruri, sizeof(ruri), routes, sizeof(routes));
    CHECK_STR(ruri, "sip:UA1@192.0.2.4");
    CHECK_STR(routes, "<sip:P1.EXAMPLEVISITED.COM;lr>|"
                      "<sip:P3.EXAMPLEHOME.COM;lr;ftag=456248>");
    /* A copy is independent. */
    struct sip_route_set cp = {0};
    pl__sip_routes_copy(&cp, &rs);
    pl__sip_routes_free(&rs);
    CHECK_INT(cp.n, 2);
    if (cp.n == 2)
        CHECK_STR(cp.v[0], "<sip:P1.EXAMPLEVISITED.COM;lr>");
    pl__sip_routes_free(&cp);
    osip_message_free(m);

    /* One field with a comma list. */
    m = request("SUBSCRIBE", "Record-Route: <sip:a.example;lr>, "
                             "<sip:b.example;lr>\r\n");
    CHECK_INT(pl__sip_routes_from_rr(m, &rs), PL_OK);
    CHECK_INT(rs.n, 2);
    if (rs.n == 2)
        CHECK_STR(rs.v[1], "<sip:b.example;lr>");
    pl__sip_routes_free(&rs);
    osip_message_free(m);

    m = request("SUBSCRIBE", "");
    CHECK_INT(pl__sip_routes_from_rr(m, &rs), PL_OK);
    CHECK_INT(rs.n, 0);
    osip_message_free(m);
}

void test_sip_route_strict(void)
{
    /* RFC 3261 §12.2.1.1's example: remote target sip:user@remoteua,
     * route set <sip:proxy1>, <sip:proxy2>, <sip:proxy3;lr>, <sip:proxy4>
     * gives "METHOD sip:proxy1" and Route: <sip:proxy2>, <sip:proxy3;lr>,
     * <sip:proxy4>, <sip:user@remoteua>. */
    char *v[] = {"<sip:proxy1>", "<sip:proxy2>", "<sip:proxy3;lr>",
                 "<sip:proxy4>"};
    struct sip_route_set rs = {4, v};
    CHECK(!pl__sip_route_is_loose(v[0]));
    CHECK(pl__sip_route_is_loose(v[2]));
    char ruri[256], routes[1024];
    build(&rs, "sip:user@remoteua", ruri, sizeof(ruri), routes, sizeof(routes));
    CHECK_STR(ruri, "sip:proxy1");
    CHECK_STR(routes,
              "<sip:proxy2>|<sip:proxy3;lr>|<sip:proxy4>|<sip:user@remoteua>");
    /* A parameter a Request-URI may not hold goes (§19.1.1); others stay. */
    char *w[] = {"<sip:proxy1;method=NOTIFY;transport=udp>"};
    struct sip_route_set one = {1, w};
    build(&one, "sip:user@remoteua", ruri, sizeof(ruri), routes,
          sizeof(routes));
    CHECK_STR(ruri, "sip:proxy1;transport=udp");
    CHECK_STR(routes, "<sip:user@remoteua>");
    /* A loose router first: the target stays the Request-URI even when a
     * strict one follows. */
    char *x[] = {"<sip:proxy3;lr>", "<sip:proxy4>"};
    struct sip_route_set two = {2, x};
    build(&two, "sip:user@remoteua", ruri, sizeof(ruri), routes,
          sizeof(routes));
    CHECK_STR(ruri, "sip:user@remoteua");
    CHECK_STR(routes, "<sip:proxy3;lr>|<sip:proxy4>");
}

void test_sip_route_first_hop(void)
{
    static const struct {
        const char *src; /* the REGISTER's source address */
        int src_port;
        const char *route; /* the first route */
        int moved;         /* 1: to the route's port */
        int port;          /* where the request goes */
    } rows[] = {
        {"127.0.0.1", 40000, "<sip:127.0.0.1:5070;lr>", 1, 5070},
        {"127.0.0.1", 40000, "<sip:127.0.0.1;lr>", 1, 5060},
        {"127.0.0.1", 40000, "<sip:127.0.0.1:5070;lr;transport=udp>", 1, 5070},
        {"127.0.0.1", 40000, "<sip:127.0.0.1:5070;lr;transport=tcp>", 0, 40000},
        {"127.0.0.1", 40000, "<sips:127.0.0.1:5071;lr>", 0, 40000},
        /* Another host than the source: never (no third party). */
        {"127.0.0.1", 40000, "<sip:10.0.0.1:5070;lr>", 0, 40000},
        {"127.0.0.1", 40000, "<sip:127.0.0.2:5070;lr>", 0, 40000},
        /* A name: no DNS here, the source it is. */
        {"127.0.0.1", 40000, "<sip:proxy.example.com:5070;lr>", 0, 40000},
        {"::1", 40000, "<sip:[::1]:5070;lr>", 1, 5070},
        {"::1", 40000, "<sip:127.0.0.1:5070;lr>", 0, 40000},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct sip_flow base, out;
        unit_sip_udp_flow(&base, rows[i].src, rows[i].src_port);
        char *v[] = {(char *)rows[i].route};
        struct sip_route_set rs = {1, v};
        CHECK_INT(pl__sip_route_flow(&base, &rs, &out), rows[i].moved);
        char ip[64];
        int port = 0;
        pl__sip_flow_peer(&out, ip, sizeof(ip), &port);
        if (port != rows[i].port)
            fprintf(stderr, "  row %zu\n", i);
        CHECK_INT(port, rows[i].port);
        CHECK_STR(ip, rows[i].src);
        CHECK_INT(out.transport, SIP_UDP);
    }
    /* No route set, or a stream (the proxy's own connection): base. */
    struct sip_flow base, out;
    unit_sip_udp_flow(&base, "127.0.0.1", 40000);
    struct sip_route_set none = {0};
    CHECK_INT(pl__sip_route_flow(&base, &none, &out), 0);
    CHECK(memcmp(&base, &out, sizeof(base)) == 0);
    base.transport = SIP_TCP;
    base.conn = 42;
    char *v[] = {"<sip:127.0.0.1:5070;lr>"};
    struct sip_route_set rs = {1, v};
    CHECK_INT(pl__sip_route_flow(&base, &rs, &out), 0);
    CHECK(memcmp(&base, &out, sizeof(base)) == 0);
}
