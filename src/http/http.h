/*
 * http.h - the HTTP front end (`pl_mod_http`, listener protocol "http"):
 * what other parts of Parley use to serve HTTP.  The server itself is
 * server.c; the request parser is parse.h.
 *
 * Routes.  A part of Parley that answers HTTP (WebSocket, BOSH, upload,
 * metrics, the admin API, the web client's files) registers routes, each
 * with a path (exact, or a prefix when it ends with '/'), the service it
 * belongs to, the methods it allows and its callbacks.  The longest
 * matching path wins.  A listeners entry serves the services its
 * `services` list names; without one, every public service, plus the
 * operator services ("metrics", "admin") when it is bound to loopback.
 *
 *   listeners = ( { protocol = "http"; address = "0.0.0.0"; port = 5280;
 *                   services = ["websocket", "bosh", "upload", "web"]; },
 *                 { protocol = "http"; address = "0.0.0.0";
 *                   tls = "direct"; },                         # 5281
 *                 { protocol = "http"; address = "127.0.0.1";
 *                   port = 5290; services = ["metrics", "admin"]; } );
 *
 * A request's life: the head is parsed (limits of the `http` group: 414,
 * 431, 400, 501, 505 before any route sees it); the route is found (404),
 * the method checked (405 with Allow; HEAD is allowed wherever GET is),
 * the body's announced size checked against the route's max_body (413);
 * on_head may refuse or take over; the body is buffered in r->body, or
 * handed to on_body as it arrives for routes with stream_body; then
 * on_request.  The handler answers at once or later (from a completion),
 * with exactly one of pl_http_respond, pl_http_error, pl_http_file,
 * pl_http_begin...pl_http_end, or pl_http_upgrade.  Until it has, the
 * connection reads no further request (no pipelining: bytes of a next
 * request wait in the kernel).  If the connection goes first, on_abort
 * fires and r must no longer be used.
 *
 * Extending: a new service is a route table in its own file of
 * src/http/ (websocket.c, bosh.c, upload.c, metrics.c, ...) registered
 * from the front end's start; a new response helper goes here.
 */
#ifndef PL_HTTP_H
#define PL_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "buf.h"
#include "conn.h"
#include "host.h"
#include "parse.h"
#include "str.h"

struct pl_http_req;

struct pl_http_route {
    const char *path;    /* "/xmpp-websocket", or a prefix "/upload/" */
    const char *service; /* "websocket", "bosh", "upload", "web",
                          * "hostmeta", "metrics", "admin"... */
    const char *methods; /* allowed, space-separated: "GET POST" */
    uint64_t max_body;   /* body bytes allowed; 0: http.max_body */
    int stream_body;     /* body goes to on_body as it arrives */
    int cors;            /* answers CORS preflights (OPTIONS) and adds
                          * Access-Control-Allow-Origin for the host's
                          * allowed origins (http.cors_origins) */
    /*
     * Optional, after the head: PL_OK to go on, or a status (401, 403,
     * 413, ...) the server answers with (pl_http_error) and closes.  It
     * may instead answer itself (or upgrade) and return PL_HANDLED
     * (hook.h): the body, if any, is then not read.
     */
    int (*on_head)(struct pl_http_req *r);
    /* stream_body routes: decoded body bytes, borrowed for the call.
     * PL_OK, or a status to answer with and close (e.g. 413, 507). */
    int (*on_body)(struct pl_http_req *r, const char *p, size_t n);
    /* Optional, stream_body routes with a Content-Length body: where the
     * next body bytes may be received in place (*room free bytes there),
     * or NULL.  on_body then gets p inside that buffer: bytes the route
     * keeps anyway are not copied on their way (conn.h, rbuf). */
    char *(*body_buf)(struct pl_http_req *r, size_t *room);
    /* The request is complete: answer now or later. */
    void (*on_request)(struct pl_http_req *r);
    /* Optional: the connection went before the answer was complete, or
     * the server ended a request whose body failed after on_head (413,
     * 408, a malformed chunk; not when on_body refused it). */
    void (*on_abort)(struct pl_http_req *r);
    void *arg; /* the route owner's */
};

/* One request being served.  Fields are read-only for handlers, but for
 * data. */
struct pl_http_req {
    const struct pl_http_request *head; /* method, target, fields */
    const struct pl_http_route *route;  /* the route that matched */
    struct pl_str path;   /* target's path, percent-decoded, with no
                              * NUL, no "." or ".." segment, starting
                              * with '/' (else 400 before any route) */
    struct pl_str query;  /* after '?', raw; empty if none */
    struct pl_str origin; /* the Origin field, empty if none */
    struct pl_host *host; /* the host named by Host (port ignored), or
                              * NULL when it is not one of ours */
    struct pl_conn *conn; /* its connection (ip, is_loopback...) */
    int secure;           /* TLS, or the listener is declared secure */
    int is_head;          /* a HEAD request: no body is sent */
    struct pl_buf body;   /* the body, unless the route streams it */
    uint64_t body_len;    /* body bytes received so far */
    void *data;           /* the handler's */
};

/* Registers rt (kept by pointer: static storage).  PL_ECONFLICT if the
 * path is taken.  Routes may be added before or after the front end starts. */
int pl_http_route_add(const struct pl_http_route *rt);
void pl_http_route_remove(const struct pl_http_route *rt);

/* The value of the request's first field named name, empty if none. */
struct pl_str pl_http_field(const struct pl_http_req *r, const char *name);

/* Adds a response field ("Name", "value") before the answer starts;
 * name and value are copied.  CR or LF in either is refused (PL_EINVAL). */
int pl_http_add_header(struct pl_http_req *r, const char *name,
                       const char *value);

/* The whole answer: status, Content-Type (NULL: none), body (copied;
 * left out for HEAD, Content-Length kept). */
void pl_http_respond(struct pl_http_req *r, int status,
                     const char *content_type, const void *body, size_t n);

/* A short text/plain answer with the status's reason, or text if given. */
void pl_http_error(struct pl_http_req *r, int status, const char *text);

/*
 * A file (fd is taken over and closed): answers GET and HEAD with
 * Last-Modified and a strong ETag from st (size, mtime), 304 for a
 * matching If-None-Match (or If-Modified-Since), 206 for one satisfiable
 * Range (bytes=a-b, a-, -n), 416 with Content-Range for an
 * unsatisfiable one, 200 otherwise.  The bytes go with sendfile on plain
 * connections, in pieces as the socket drains under TLS: never the whole
 * file in memory.
 */
void pl_http_file(struct pl_http_req *r, int fd, const struct stat *st,
                  const char *content_type);
/* The body of the next pl_http_file goes at pace p's rate (conn.h). */
void pl_http_set_pace(struct pl_http_req *r, struct pl_pace *p);

/*
 * A streamed answer: begin with the length (-1: chunked), write bytes
 * (copied), end.  pl_http_writable() is the bytes the connection can
 * take before the producer should wait for on_drain (set it first).
 */
void pl_http_begin(struct pl_http_req *r, int status, const char *content_type,
                   int64_t length);
void pl_http_write(struct pl_http_req *r, const void *p, size_t n);
void pl_http_end(struct pl_http_req *r);
size_t pl_http_writable(const struct pl_http_req *r);
void pl_http_on_drain(struct pl_http_req *r, void (*fn)(struct pl_http_req *));

/* stream_body routes: stop and restart reading the body (a consumer that
 * cannot keep up, such as a disk write in progress off the loop). */
void pl_http_pause(struct pl_http_req *r);
void pl_http_resume(struct pl_http_req *r);

/*
 * Hands the connection over to another protocol (WebSocket): writes
 * "HTTP/1.1 101 Switching Protocols", the fields added with
 * pl_http_add_header, and the blank line; installs ops and data on the
 * connection (pl_conn_set_handlers); any bytes that followed the request
 * go to ops->data on the next loop turn.  r is freed; the connection is
 * the caller's from now on (its limits and deadlines stay).  Returns it.
 */
struct pl_conn *pl_http_upgrade(struct pl_http_req *r,
                                const struct pl_conn_ops *ops, void *data);

/* The base URL of the service on this server as a client reaches it,
 * for documents that name it (XEP-0156 host-meta): from the request's
 * Host and scheme: "wss" for "ws" (and "https" for "http") when the
 * client came over TLS, to us or, on a listener declared secure, to a
 * proxy that says so with X-Forwarded-Proto: https.  Appended to b. */
void pl_http_base_url(const struct pl_http_req *r, const char *scheme,
                      struct pl_buf *b);

/*
 * Whether the request's Origin may use the service (WebSocket, CORS): no
 * Origin (not a browser), the request's own origin (scheme://Host), or
 * one of its host's http.cors_origins ("*": any).
 */
int pl_http_origin_allowed(const struct pl_http_req *r);

/*
 * Serves the files under the directory root at prefix ("/files/": starts
 * and ends with '/') for service (NULL: "static"), GET and HEAD, with
 * pl_http_file: index.html for a directory, MIME types by extension, 404
 * for what is missing; no path can leave root (no "..", no symbolic
 * link is followed, no file but regular ones).  root and prefix are
 * copied.  PL_ECONFLICT if prefix is taken, PL_EIO if root cannot be
 * opened as a directory.
 */
int pl_http_static_add(const char *prefix, const char *root,
                       const char *service);

/* Adds the response field name: value to every answer (files, 304,
 * 404, redirects) of the directory served at prefix; both are copied.
 * PL_EINVAL if no directory is served there, or for CR, LF or ':' in
 * name (CR or LF in value). */
int pl_http_static_header(const char *prefix, const char *name,
                          const char *value);

/* The reason phrase of a status ("Not Found"), "" if unknown. */
const char *pl_http_reason(int status);

#endif
