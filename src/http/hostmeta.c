/*
 * hostmeta.c - XEP-0156 discovery over HTTP: GET /.well-known/host-meta
 * (an XRD document, RFC 6415) and /.well-known/host-meta.json (its JRD
 * form) name the server's alternative connection methods as a client
 * reaches them: the WebSocket endpoint (RFC 7395, rel
 * urn:xmpp:alt-connections:websocket, path /xmpp-websocket) and the BOSH
 * one (XEP-0206, rel urn:xmpp:alt-connections:xbosh, path /http-bind).
 * Each link is listed when a route serves its path on the listener the
 * request came through, with the request's Host and scheme (wss:// and
 * https:// when secure).  Service "hostmeta"; CORS allowed (XEP-0156 §3:
 * web clients of other origins read it).
 *
 * Extending: a new connection method is a row of links[].
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http/http_int.h"

static const struct {
    const char *rel;    /* XEP-0156 §3.1 link relation */
    const char *scheme; /* without TLS */
    const char *path;   /* the route's */
} links[] = {
    {"urn:xmpp:alt-connections:websocket", "ws", "/xmpp-websocket"},
    {"urn:xmpp:alt-connections:xbosh", "http", "/http-bind"},
};

#define NLINKS (sizeof(links) / sizeof(links[0]))

static void on_xrd(struct pl_http_req *r)
{
    struct pl_buf b = {0};
    pl_buf_append_str(&b, "<?xml version='1.0' encoding='utf-8'?>\n"
                          "<XRD xmlns='http://docs.oasis-open.org/ns/xri/"
                          "xrd-1.0'>\n");
    for (size_t i = 0; i < NLINKS; i++) {
        if (!pl__http_route_served(r, links[i].path))
            continue;
        struct pl_buf url = {0};
        pl_http_base_url(r, links[i].scheme, &url);
        pl_buf_append_str(&url, links[i].path);
        struct pl_str u = pl_buf_str(&url);
        pl_buf_printf(&b, "  <Link rel='%s' href='", links[i].rel);
        pl_buf_append_escaped(&b, u.p, u.len, 1);
        pl_buf_append_str(&b, "'/>\n");
        pl_buf_reset(&url);
    }
    pl_buf_append_str(&b, "</XRD>\n");
    struct pl_str s = pl_buf_str(&b);
    pl_http_respond(r, 200, "application/xrd+xml; charset=utf-8", s.p, s.len);
    pl_buf_reset(&b);
}

static void on_jrd(struct pl_http_req *r)
{
    json_t *a = json_array();
    for (size_t i = 0; i < NLINKS; i++) {
        if (!pl__http_route_served(r, links[i].path))
            continue;
        struct pl_buf url = {0};
        pl_http_base_url(r, links[i].scheme, &url);
        pl_buf_append_str(&url, links[i].path);
        json_array_append_new(a, json_pack("{s:s, s:s}", "rel", links[i].rel,
                                           "href", pl_buf_cstr(&url)));
        pl_buf_reset(&url);
    }
    json_t *doc = json_pack("{s:o}", "links", a);
    char *s = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    pl_http_respond(r, 200, "application/json", s, s ? strlen(s) : 0);
    free(s);
}

static const struct pl_http_route xrd_route = {
    .path = "/.well-known/host-meta",
    .service = "hostmeta",
    .methods = "GET",
    .cors = 1,
    .on_request = on_xrd,
};

static const struct pl_http_route jrd_route = {
    .path = "/.well-known/host-meta.json",
    .service = "hostmeta",
    .methods = "GET",
    .cors = 1,
    .on_request = on_jrd,
};

int pl__http_hostmeta_start(void)
{
    int rc = pl_http_route_add(&xrd_route);
    if (rc == PL_OK) {
        rc = pl_http_route_add(&jrd_route);
        if (rc != PL_OK)
            pl_http_route_remove(&xrd_route);
    }
    return rc;
}

void pl__http_hostmeta_stop(void)
{
    pl_http_route_remove(&xrd_route);
    pl_http_route_remove(&jrd_route);
}
