/*
 * test_http_server.c - the HTTP server (src/http/server.c) driven
 * in-process: a server built as src/parleyd.c does, with no listener
 * (tests/support/inproc.h); one end of a socketpair goes to
 * pl__http_accept_fd() as an accepted connection, the other is the
 * client, watched by the same loop.  Test routes registered here record
 * what the server hands them.
 *
 * Covered: keep-alive and two requests in one write (answered in order,
 * the second not parsed before the first is answered), chunked bodies,
 * 413 by a route's max_body, 405 with Allow, 404, 400 for bad paths,
 * 501, 505, 431, 414, 417, Expect: 100-continue, HEAD, CORS preflights,
 * upgrade with the bytes that followed the request, on_abort when the
 * client goes, files with ETag, 304 and Range, static directories, and
 * the pure helpers (path decoding, Range, dates).
 *
 * Extending: a new case opens a client with cl_open(), sends with
 * cl_send() and reads answers with cl_response().
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../src/core/alloc.h"
#include "../../src/core/buf.h"
#include "../../src/core/config.h"
#include "../../src/core/error.h"
#include "../../src/core/hook.h"
#include "../../src/core/host.h"
#include "../../src/core/log.h"
#include "../../src/core/loop.h"
#include "../../src/core/module.h"
#include "../../src/core/server.h"
#include "../../src/core/storage.h"
#include "../../src/core/work.h"
#include "../../src/http/http_int.h"
#include "../support/inproc.h"
#include "unit.h"

#define WAIT_MS 3000 /* bound of every wait (never reached when it works) */

static struct inproc E; /* the server */

/* What the test routes saw. */
static struct {
    int requests;                /* on_request calls */
    int aborts;                  /* on_abort calls */
    struct pl_http_req *pending; /* a request left unanswered */
    char last_path[256];         /* the last request's decoded path */
    char last_body[1024];        /* and its body */
    char upgraded[64];           /* bytes the upgraded protocol got */
    int up_closed;               /* its connection closed */
} R;

static void env_start(const char *http_extra)
{
    inproc_mkdir(&E, "parley-test-http");
    inproc_start(&E, PL_LOG_ERROR,
                 "hosts = ( { domain = \"localhost\"; http = { cors_origins = "
                 "[\"https://app.example\"]; }; } );\n"
                 "modules = [ \"ping\" ];\n"
                 "http: { max_line = 300; max_headers = 10; %s };\n",
                 http_extra ? http_extra : "");
    memset(&R, 0, sizeof(R));
}

static void env_stop(void)
{
    CHECK_INT(inproc_stop_frontends(&E), 0);
    inproc_free(&E);
}

/* ---- the client end ---- */

struct client {
    struct pl_io io;  /* our end of the socketpair */
    struct pl_buf in; /* received, not taken yet */
    int eof;          /* the server closed */
};

static void on_client_io(struct pl_io *io, unsigned events)
{
    struct client *c = io->data;
    inproc_read(io, &c->in, &c->eof);
    pl_loop_stop(E.loop);
}

static void cl_open(struct client *c)
{
    memset(c, 0, sizeof(*c));
    inproc_connect(&E, pl__http_accept_fd, &c->io, on_client_io, c);
}

static void cl_close(struct client *c)
{
    pl_io_stop(&c->io);
    close(c->io.fd);
    pl_buf_reset(&c->in);
}

static void cl_send_n(struct client *c, const char *p, size_t len)
{
    CHECK_INT(inproc_write(&E, &c->io, p, len, NULL, WAIT_MS), PL_OK);
}

static void cl_send(struct client *c, const char *s)
{
    cl_send_n(c, s, strlen(s));
}

/* Length of the first complete response in s (0: not complete yet). */
static size_t response_len(struct pl_str s, int is_head, int eof)
{
    const char *end = s.len ? memmem(s.p, s.len, "\r\n\r\n", 4) : NULL;
    if (!end)
        return 0;
    size_t head = (size_t)(end - s.p) + 4;
    int status = s.len > 12 ? atoi(s.p + 9) : 0;
    if (is_head || status < 200 || status == 204 || status == 304)
        return head;
    const char *cl = memmem(s.p, head, "Content-Length: ", 16);
    if (cl) {
        size_t n = (size_t)strtoull(cl + 16, NULL, 10);
        return s.len >= head + n ? head + n : 0;
    }
    if (memmem(s.p, head, "chunked", 7)) {
        const char *z = memmem(s.p + head, s.len - head, "0\r\n\r\n", 5);
        return z ? (size_t)(z - s.p) + 5 : 0;
    }
    return eof ? s.len : 0;
}

/* The next response (malloc'd, "" if none came in time). */
static char *cl_response(struct client *c, int is_head)
{
    uint64_t deadline = inproc_now_ms() + WAIT_MS;
    size_t n;
    while (!(n = response_len(pl_buf_str(&c->in), is_head, c->eof)) &&
           !c->eof && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    struct pl_str s = pl_buf_str(&c->in);
    if (!n)
        n = c->eof ? s.len : 0;
    char *out = pl_malloc(n + 1);
    if (n)
        memcpy(out, s.p, n);
    out[n] = '\0';
    pl_buf_consume(&c->in, n);
    return out;
}

/* Runs the loop until the server closed the client's connection. */
static int cl_wait_eof(struct client *c)
{
    uint64_t deadline = inproc_now_ms() + WAIT_MS;
    while (!c->eof && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    return c->eof;
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- test routes ---- */

static void note(struct pl_http_req *r)
{
    R.requests++;
    snprintf(R.last_path, sizeof(R.last_path), "%.*s", (int)r->path.len,
             r->path.p);
    struct pl_str b = pl_buf_str(&r->body);
    snprintf(R.last_body, sizeof(R.last_body), "%.*s", (int)b.len,
             b.p ? b.p : "");
}

/* Echoes the path and the body. */
static void on_echo(struct pl_http_req *r)
{
    note(r);
    char out[1400];
    int n = snprintf(out, sizeof(out), "%s|%s", R.last_path, R.last_body);
    pl_http_respond(r, 200, "text/plain", out, (size_t)n);
}

/* Keeps the request for the test to answer. */
static void on_hold(struct pl_http_req *r)
{
    note(r);
    R.pending = r;
}

static void on_abort(struct pl_http_req *r)
{
    (void)r;
    R.aborts++;
    R.pending = NULL;
}

static void up_data(struct pl_conn *c, const char *p, size_t n)
{
    size_t have = strlen(R.upgraded);
    snprintf(R.upgraded + have, sizeof(R.upgraded) - have, "%.*s", (int)n, p);
    pl_conn_write(c, "echo:", 5);
    pl_conn_write(c, p, n);
}

static void up_closed(struct pl_conn *c)
{
    (void)c;
    R.up_closed++;
}

static const struct pl_conn_ops up_ops = {.data = up_data, .closed = up_closed};

static void on_upgrade(struct pl_http_req *r)
{
    note(r);
    pl_http_add_header(r, "Upgrade", "test");
    pl_http_add_header(r, "Connection", "Upgrade");
    pl_http_upgrade(r, &up_ops, NULL);
}

static const struct pl_http_route echo_route = {
    .path = "/echo/",
    .service = "web",
    .methods = "GET POST",
    .max_body = 64,
    .cors = 1,
    .on_request = on_echo,
};
static const struct pl_http_route hold_route = {
    .path = "/hold",
    .service = "web",
    .methods = "GET",
    .on_request = on_hold,
    .on_abort = on_abort,
};
static const struct pl_http_route up_route = {
    .path = "/up",
    .service = "websocket",
    .methods = "GET",
    .on_request = on_upgrade,
};
static const struct pl_http_route admin_route = {
    .path = "/admin",
    .service = "admin",
    .methods = "GET",
    .on_request = on_echo,
};

static void routes_add(void)
{
    CHECK_INT(pl_http_route_add(&echo_route), PL_OK);
    CHECK_INT(pl_http_route_add(&hold_route), PL_OK);
    CHECK_INT(pl_http_route_add(&up_route), PL_OK);
    CHECK_INT(pl_http_route_add(&admin_route), PL_OK);
    CHECK_INT(pl_http_route_add(&echo_route), PL_ECONFLICT);
}

static void routes_remove(void)
{
    pl_http_route_remove(&echo_route);
    pl_http_route_remove(&hold_route);
    pl_http_route_remove(&up_route);
    pl_http_route_remove(&admin_route);
}

/* ---- tests ---- */

void test_http_keepalive_order(void)
{
    env_start(NULL);
    routes_add();
    struct client c;
    cl_open(&c);
    /* Two requests in one write: the first held by its handler. */
    cl_send(&c, "GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n"
                "GET /echo/two HTTP/1.1\r\nHost: localhost\r\n\r\n");
    uint64_t deadline = inproc_now_ms() + WAIT_MS;
    while (!R.pending && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    CHECK(R.pending != NULL);
    /* The loop runs on: the second is not parsed while the first waits. */
    for (int i = 0; i < 5; i++)
        inproc_pump(&E, 10);
    CHECK_INT(R.requests, 1);
    CHECK_INT(c.in.len, 0);
    CHECK_STR(R.last_path, "/hold");
    if (R.pending)
        pl_http_respond(R.pending, 200, "text/plain", "first", 5);
    R.pending = NULL;
    char *a = cl_response(&c, 0);
    char *b = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 OK\r\n"));
    CHECK(strstr(a, "\r\n\r\nfirst") != NULL);
    CHECK(strstr(a, "Date: ") != NULL);
    CHECK(strstr(a, "Server: Parley\r\n") != NULL);
    CHECK(starts(b, "HTTP/1.1 200 OK\r\n"));
    CHECK(strstr(b, "\r\n\r\n/echo/two|") != NULL);
    CHECK_INT(R.requests, 2);
    pl_free(a);
    pl_free(b);
    /* The same connection serves a third; Connection: close ends it. */
    cl_send(&c, "GET /echo/3 HTTP/1.1\r\nHost: localhost\r\n"
                "Connection: close\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(strstr(a, "Connection: close\r\n") != NULL);
    CHECK(strstr(a, "/echo/3|") != NULL);
    CHECK(cl_wait_eof(&c));
    pl_free(a);
    cl_close(&c);
    routes_remove();
    env_stop();
}

void test_http_bodies(void)
{
    env_start(NULL);
    routes_add();
    struct client c;
    cl_open(&c);
    cl_send(&c, "POST /echo/c HTTP/1.1\r\nHost: localhost\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(strstr(a, "\r\n\r\n/echo/c|hello world") != NULL);
    pl_free(a);
    cl_send(&c, "POST /echo/l HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 3\r\n\r\nabc");
    a = cl_response(&c, 0);
    CHECK(strstr(a, "\r\n\r\n/echo/l|abc") != NULL);
    pl_free(a);
    /* Over the route's max_body (64): announced, then chunked. */
    cl_send(&c, "POST /echo/big HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 65\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 413 Content Too Large\r\n"));
    CHECK(cl_wait_eof(&c));
    pl_free(a);
    cl_close(&c);
    cl_open(&c);
    cl_send(&c, "POST /echo/big HTTP/1.1\r\nHost: localhost\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
                "40\r\n0123456789012345678901234567890123456789"
                "012345678901234567890123\r\n"
                "1\r\nx\r\n0\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 413 "));
    CHECK(cl_wait_eof(&c));
    pl_free(a);
    cl_close(&c);
    CHECK_INT(R.requests, 2);
    routes_remove();
    env_stop();
}

/* Requests answered by the server itself, and whether it closes. */
static const struct {
    const char *req;    /* sent */
    const char *status; /* expected start of the answer */
    int closes;         /* the connection ends after it */
} refusals[] = {
    {"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 404 ", 0},
    {"DELETE /echo/x HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 405 ", 0},
    {"GET /echo/../x HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 400 ", 1},
    {"GET /echo/%2e%2e/x HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 400 ",
     1},
    {"GET /echo/./x HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 400 ", 1},
    {"GET /echo/a%00b HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 400 ", 1},
    {"GET /echo/a%2Fb HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 400 ", 1},
    {"GET /echo/a%zz HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 400 ", 1},
    {"FOO /echo/x HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 501 ", 1},
    {"GET /echo/x HTTP/2.0\r\nHost: localhost\r\n\r\n", "HTTP/1.1 505 ", 1},
    {"GET /echo/x HTTP/1.1\r\nHost: localhost\r\nExpect: magic\r\n\r\n",
     "HTTP/1.1 417 ", 1},
    {"GET /echo/x HTTP/1.1\r\n\r\n", "HTTP/1.1 400 ", 1},
    {"GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 200 ", 0},
    {"GET http://localhost/echo/abs HTTP/1.1\r\nHost: other\r\n\r\n",
     "HTTP/1.1 200 ", 0},
    {"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 204 ", 0},
};

void test_http_refusals(void)
{
    env_start(NULL);
    routes_add();
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        struct client c;
        cl_open(&c);
        cl_send(&c, refusals[i].req);
        char *a = cl_response(&c, 0);
        if (!starts(a, refusals[i].status))
            fprintf(stderr, "  case %zu: got \"%.40s\"\n", i, a);
        CHECK(starts(a, refusals[i].status));
        if (refusals[i].closes) {
            CHECK(strstr(a, "Connection: close\r\n") != NULL);
            CHECK(cl_wait_eof(&c));
        } else {
            /* Still open: a next request is answered. */
            cl_send(&c, "GET /echo/next HTTP/1.1\r\nHost: localhost\r\n\r\n");
            char *b = cl_response(&c, 0);
            CHECK(strstr(b, "/echo/next|") != NULL);
            pl_free(b);
        }
        if (starts(refusals[i].status, "HTTP/1.1 405"))
            CHECK(strstr(a, "Allow: GET, POST, HEAD, OPTIONS\r\n") != NULL);
        pl_free(a);
        cl_close(&c);
    }
    CHECK_STR(R.last_path, "/echo/next");
    routes_remove();
    env_stop();
}

/* HTTP/1.0 needs no Host: the request is served (no host matched), and
 * the empty authority is not scanned (fuzz_web found a memchr on its
 * NULL pointer, caught by UBSan in the san pass). */
void test_http_no_host(void)
{
    env_start(NULL);
    routes_add();
    struct client c;
    cl_open(&c);
    cl_send(&c, "GET /echo/ten HTTP/1.0\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 OK\r\n"));
    CHECK(strstr(a, "/echo/ten|") != NULL);
    CHECK(cl_wait_eof(&c));
    pl_free(a);
    cl_close(&c);
    routes_remove();
    env_stop();
}

/* The admin API refuses a request without a token with 401, and logs
 * the call from its own copies: the request is freed once answered
 * (fuzz_web found the log reading it after pl_http_respond, a
 * use-after-free AddressSanitizer reports in the san pass). */
void test_http_admin_unauthorized(void)
{
    env_start(NULL);
    struct client c;
    cl_open(&c);
    cl_send(&c, "GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n");
    char *a = cl_response(&c, 0);
    if (!starts(a, "HTTP/1.1 401 "))
        fprintf(stderr, "  got \"%.60s\"\n", a);
    CHECK(starts(a, "HTTP/1.1 401 "));
    CHECK(strstr(a, "WWW-Authenticate: Bearer") != NULL);
    CHECK(strstr(a, "not-authorized") != NULL);
    pl_free(a);
    cl_close(&c);
    env_stop();
}

void test_http_server_limits(void)
{
    env_start(NULL);
    routes_add();
    struct client c;
    /* max_line = 300: 414. */
    cl_open(&c);
    char line[400];
    memset(line, 'a', sizeof(line));
    memcpy(line, "GET /", 5);
    line[sizeof(line) - 1] = '\0';
    cl_send(&c, line);
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 414 "));
    CHECK(cl_wait_eof(&c));
    pl_free(a);
    cl_close(&c);
    /* max_headers = 10: 431. */
    cl_open(&c);
    cl_send(&c, "GET /echo/x HTTP/1.1\r\nHost: localhost\r\n");
    for (int i = 0; i < 12; i++)
        cl_send(&c, "X-A: b\r\n");
    cl_send(&c, "\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 431 "));
    CHECK(cl_wait_eof(&c));
    pl_free(a);
    cl_close(&c);
    CHECK_INT(R.requests, 0);
    routes_remove();
    env_stop();
}

void test_http_continue_head(void)
{
    env_start(NULL);
    routes_add();
    struct client c;
    cl_open(&c);
    cl_send(&c, "POST /echo/e HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK_STR(a, "HTTP/1.1 100 Continue\r\n\r\n");
    pl_free(a);
    cl_send(&c, "body");
    a = cl_response(&c, 0);
    CHECK(strstr(a, "\r\n\r\n/echo/e|body") != NULL);
    pl_free(a);
    /* Refused before the body: no 100, the answer, and the end. */
    cl_send(&c, "POST /echo/e HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 400\r\nExpect: 100-continue\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 413 "));
    pl_free(a);
    CHECK(cl_wait_eof(&c));
    cl_close(&c);
    /* HEAD: the length of GET's answer, no body. */
    cl_open(&c);
    cl_send(&c, "HEAD /echo/h HTTP/1.1\r\nHost: localhost\r\n\r\n");
    a = cl_response(&c, 1);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(strstr(a, "Content-Length: 8\r\n") != NULL); /* "/echo/h|" */
    pl_free(a);
    cl_send(&c, "GET /echo/g HTTP/1.1\r\nHost: localhost\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(strstr(a, "\r\n\r\n/echo/g|") != NULL); /* nothing before it */
    CHECK(starts(a, "HTTP/1.1 200 "));
    pl_free(a);
    cl_close(&c);
    routes_remove();
    env_stop();
}

void test_http_cors(void)
{
    env_start(NULL);
    routes_add();
    struct client c;
    cl_open(&c);
    cl_send(&c, "OPTIONS /echo/x HTTP/1.1\r\nHost: localhost\r\n"
                "Origin: https://app.example\r\n"
                "Access-Control-Request-Method: POST\r\n"
                "Access-Control-Request-Headers: content-type\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 204 "));
    CHECK(strstr(a, "Access-Control-Allow-Origin: https://app.example\r\n"));
    CHECK(strstr(a, "Access-Control-Allow-Methods: GET, POST, HEAD, "
                    "OPTIONS\r\n"));
    CHECK(strstr(a, "Access-Control-Allow-Headers: content-type\r\n"));
    CHECK(strstr(a, "Access-Control-Max-Age: "));
    pl_free(a);
    cl_send(&c, "OPTIONS /echo/x HTTP/1.1\r\nHost: localhost\r\n"
                "Origin: https://evil.example\r\n"
                "Access-Control-Request-Method: POST\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 403 "));
    pl_free(a);
    cl_send(&c, "GET /echo/x HTTP/1.1\r\nHost: localhost\r\n"
                "Origin: https://app.example\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(strstr(a, "Access-Control-Allow-Origin: https://app.example\r\n"));
    pl_free(a);
    cl_send(&c, "GET /echo/x HTTP/1.1\r\nHost: localhost\r\n"
                "Origin: https://evil.example\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(!strstr(a, "Access-Control-Allow-Origin"));
    pl_free(a);
    cl_close(&c);
    routes_remove();
    env_stop();
}

void test_http_upgrade_abort(void)
{
    env_start(NULL);
    routes_add();
    struct client c;
    cl_open(&c);
    /* The bytes after the request go to the new protocol. */
    cl_send(&c, "GET /up HTTP/1.1\r\nHost: localhost\r\n\r\nhello");
    char *a = cl_response(&c, 1);
    CHECK(starts(a, "HTTP/1.1 101 Switching Protocols\r\n"));
    CHECK(strstr(a, "Upgrade: test\r\n") != NULL);
    pl_free(a);
    uint64_t deadline = inproc_now_ms() + WAIT_MS;
    while (c.in.len < 10 && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    CHECK(c.in.len == 10 &&
          memcmp(c.in.data + c.in.off, "echo:hello", 10) == 0);
    pl_buf_consume(&c.in, c.in.len);
    cl_send(&c, "more");
    deadline = inproc_now_ms() + WAIT_MS;
    while (c.in.len < 9 && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    CHECK_STR(R.upgraded, "hellomore");
    cl_close(&c);
    deadline = inproc_now_ms() + WAIT_MS;
    while (!R.up_closed && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    CHECK_INT(R.up_closed, 1);
    /* A client that goes before the answer: on_abort. */
    cl_open(&c);
    cl_send(&c, "GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n");
    deadline = inproc_now_ms() + WAIT_MS;
    while (!R.pending && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    CHECK(R.pending != NULL);
    cl_close(&c);
    deadline = inproc_now_ms() + WAIT_MS;
    while (!R.aborts && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    CHECK_INT(R.aborts, 1);
    CHECK(R.pending == NULL);
    routes_remove();
    env_stop();
}

void test_http_files(void)
{
    env_start(NULL);
    char root[128], path[160];
    snprintf(root, sizeof(root), "%s/www", E.dir);
    inproc_need(&E, mkdir(root, 0700) == 0, "mkdir www");
    snprintf(path, sizeof(path), "%s/sub", root);
    inproc_need(&E, mkdir(path, 0700) == 0, "mkdir sub");
    snprintf(path, sizeof(path), "%s/a.txt", root);
    FILE *f = fopen(path, "w");
    inproc_need(&E, f != NULL, "a.txt");
    /* Larger than a socketpair's buffer: sent as the socket drains. */
    for (int i = 0; i < 100000; i++)
        fputc('a' + i % 26, f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/sub/index.html", root);
    f = fopen(path, "w");
    inproc_need(&E, f != NULL, "index.html");
    fputs("<p>hi</p>", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/link.txt", root);
    inproc_need(&E, symlink("a.txt", path) == 0, "symlink");
    CHECK_INT(pl_http_static_add("/s/", root, NULL), PL_OK);
    CHECK_INT(pl_http_static_add("/s/", root, NULL), PL_ECONFLICT);
    struct client c;
    cl_open(&c);
    cl_send(&c, "GET /s/a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(strstr(a, "Content-Length: 100000\r\n") != NULL);
    CHECK(strstr(a, "Content-Type: text/plain; charset=utf-8\r\n") != NULL);
    char *body = strstr(a, "\r\n\r\n");
    CHECK(body && strlen(body + 4) == 100000 && body[4] == 'a' &&
          body[4 + 99999] == 'a' + 99999 % 26);
    char etag[100] = "";
    char *e = strstr(a, "ETag: ");
    if (e)
        sscanf(e + 6, "%99[^\r]", etag);
    CHECK(etag[0] == '"');
    pl_free(a);
    char req[400];
    snprintf(req, sizeof(req),
             "GET /s/a.txt HTTP/1.1\r\nHost: localhost\r\n"
             "If-None-Match: %s\r\n\r\n",
             etag);
    cl_send(&c, req);
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 304 "));
    pl_free(a);
    cl_send(&c, "GET /s/a.txt HTTP/1.1\r\nHost: localhost\r\n"
                "Range: bytes=2-4\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 206 "));
    CHECK(strstr(a, "Content-Range: bytes 2-4/100000\r\n") != NULL);
    CHECK(strstr(a, "\r\n\r\ncde") != NULL);
    pl_free(a);
    cl_send(&c, "GET /s/a.txt HTTP/1.1\r\nHost: localhost\r\n"
                "Range: bytes=100000-\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 416 "));
    CHECK(strstr(a, "Content-Range: bytes */100000\r\n") != NULL);
    pl_free(a);
    cl_send(&c, "HEAD /s/a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    a = cl_response(&c, 1);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(strstr(a, "Content-Length: 100000\r\n") != NULL);
    pl_free(a);
    cl_send(&c, "GET /s/sub/ HTTP/1.1\r\nHost: localhost\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(strstr(a, "text/html") && strstr(a, "\r\n\r\n<p>hi</p>"));
    pl_free(a);
    cl_send(&c, "GET /s/sub HTTP/1.1\r\nHost: localhost\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 301 "));
    CHECK(strstr(a, "Location: /s/sub/\r\n") != NULL);
    pl_free(a);
    const char *missing[] = {"/s/link.txt", "/s/nope", "/s/a.txt/x",
                             "/s/.hidden", "/s//a.txt"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n",
                 missing[i]);
        cl_send(&c, req);
        a = cl_response(&c, 0);
        CHECK(starts(a, "HTTP/1.1 404 "));
        pl_free(a);
    }
    cl_close(&c);
    env_stop();
}

void test_http_helpers(void)
{
    char out[64];
    size_t n;
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } paths[] = {
        {"/a/b?x=1", "/a/b"}, {"/a%20b", "/a b"}, {"/", "/"},
        {"/a/..", NULL},      {"/a/.", NULL},     {"/%2e%2E/", NULL},
        {"/%2E/", NULL},      {"/a%2fb", NULL},   {"/a%00", NULL},
        {"/a%0", NULL},       {"a", NULL},        {"/..a/.b", "/..a/.b"},
        {"/a/...", "/a/..."}, {"/a//b", "/a//b"}, {"/x/..?q", NULL},
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        int rc = pl__http_path_decode(paths[i].in, strlen(paths[i].in), out,
                                      sizeof(out), &n);
        if (!paths[i].out) {
            CHECK_INT(rc, PL_EINVAL);
            continue;
        }
        CHECK_INT(rc, PL_OK);
        out[rc == PL_OK ? n : 0] = '\0';
        CHECK_STR(out, paths[i].out);
    }
    static const struct {
        const char *v;
        uint64_t size;
        int rc;
        uint64_t first, last;
    } ranges[] = {
        {"bytes=0-0", 10, 1, 0, 0},   {"bytes=2-", 10, 1, 2, 9},
        {"bytes=-3", 10, 1, 7, 9},    {"bytes=-30", 10, 1, 0, 9},
        {"bytes=5-100", 10, 1, 5, 9}, {"bytes=10-", 10, -1, 0, 0},
        {"bytes=-0", 10, -1, 0, 0},   {"bytes=0-1,3-4", 10, 0, 0, 0},
        {"items=0-1", 10, 0, 0, 0},   {"bytes=3-1", 10, 0, 0, 0},
        {"bytes=a-", 10, 0, 0, 0},    {"bytes=-", 10, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        uint64_t a = 0, b = 0;
        int rc = pl__http_parse_range(pl_str_c(ranges[i].v), ranges[i].size, &a,
                                      &b);
        CHECK_INT(rc, ranges[i].rc);
        if (rc == 1) {
            CHECK_INT(a, ranges[i].first);
            CHECK_INT(b, ranges[i].last);
        }
    }
    char d[40];
    time_t t;
    pl__http_format_date(784111777, d, sizeof(d));
    CHECK_STR(d, "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK_INT(pl__http_parse_date(pl_str_c(d), &t), PL_OK);
    CHECK_INT(t, 784111777);
    CHECK_INT(pl__http_parse_date(PL_STR("Sunday, 06-Nov-94 08:49:37 GMT"), &t),
              PL_EINVAL);
    CHECK_STR(pl__http_mime_type("x.wasm"), "application/wasm");
    CHECK_STR(pl__http_mime_type("x.MJS"), "text/javascript; charset=utf-8");
    CHECK_STR(pl__http_mime_type("x"), "application/octet-stream");
    CHECK_STR(pl_http_reason(431), "Request Header Fields Too Large");
}

/* XEP-0156: a method is announced when a route serves it, with the
 * request's Host. */
void test_http_hostmeta(void)
{
    env_start(NULL);
    struct client c;
    cl_open(&c);
    /* The front end serves WebSocket and BOSH: both are listed. */
    cl_send(&c, "GET /.well-known/host-meta HTTP/1.1\r\n"
                "Host: localhost:5280\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(strstr(a, "Content-Type: application/xrd+xml") != NULL);
    CHECK(strstr(a, "<Link rel='urn:xmpp:alt-connections:websocket' "
                    "href='ws://localhost:5280/xmpp-websocket'/>") != NULL);
    CHECK(strstr(a, "<Link rel='urn:xmpp:alt-connections:xbosh' "
                    "href='http://localhost:5280/http-bind'/>") != NULL);
    pl_free(a);
    cl_send(&c, "GET /.well-known/host-meta.json HTTP/1.1\r\n"
                "Host: localhost\r\nOrigin: https://app.example\r\n\r\n");
    a = cl_response(&c, 0);
    CHECK(strstr(a, "Content-Type: application/json") != NULL);
    CHECK(strstr(a, "Access-Control-Allow-Origin: https://app.example") !=
          NULL);
    CHECK(strstr(a, "\"href\": \"ws://localhost/xmpp-websocket\"") != NULL);
    CHECK(strstr(a, "\"rel\": \"urn:xmpp:alt-connections:websocket\"") != NULL);
    pl_free(a);
    cl_close(&c);
    env_stop();
}

static struct pl_http_req *paused_req;

static int on_stream_body(struct pl_http_req *r, const char *p, size_t n)
{
    size_t have = strlen(R.last_body);
    snprintf(R.last_body + have, sizeof(R.last_body) - have, "%.*s", (int)n, p);
    if (!paused_req) {
        paused_req = r;
        pl_http_pause(r);
    }
    return PL_OK;
}

static void on_stream_done(struct pl_http_req *r)
{
    R.requests++;
    pl_http_begin(r, 200, "text/plain", -1);
    pl_http_write(r, R.last_body, strlen(R.last_body));
    pl_http_end(r);
}

/* A streamed body paused by its consumer is not read until resumed; a
 * streamed answer of unknown length is chunked. */
void test_http_pause_stream(void)
{
    env_start(NULL);
    static const struct pl_http_route st = {
        .path = "/stream",
        .service = "upload",
        .methods = "PUT",
        .stream_body = 1,
        .on_body = on_stream_body,
        .on_request = on_stream_done,
    };
    CHECK_INT(pl_http_route_add(&st), PL_OK);
    paused_req = NULL;
    struct client c;
    cl_open(&c);
    cl_send(&c, "PUT /stream HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 6\r\n\r\nabc");
    uint64_t deadline = inproc_now_ms() + WAIT_MS;
    while (!paused_req && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    CHECK(paused_req != NULL);
    cl_send(&c, "def");
    for (int i = 0; i < 5; i++)
        inproc_pump(&E, 10);
    CHECK_STR(R.last_body, "abc");
    CHECK_INT(R.requests, 0);
    if (paused_req)
        pl_http_resume(paused_req);
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(strstr(a, "Transfer-Encoding: chunked\r\n") != NULL);
    CHECK(strstr(a, "\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n") != NULL);
    CHECK_STR(R.last_body, "abcdef");
    pl_free(a);
    cl_close(&c);
    pl_http_route_remove(&st);
    env_stop();
}

static int on_sink_body(struct pl_http_req *r, const char *p, size_t n)
{
    (void)r;
    (void)p;
    (void)n;
    return PL_OK;
}

/* A streamed body that fails after the route saw its head: on_abort. */
void test_http_body_abort(void)
{
    env_start(NULL);
    static const struct pl_http_route sink = {
        .path = "/sink",
        .service = "upload",
        .methods = "POST",
        .max_body = 4,
        .stream_body = 1,
        .on_body = on_sink_body,
        .on_request = on_echo,
        .on_abort = on_abort,
    };
    CHECK_INT(pl_http_route_add(&sink), PL_OK);
    struct client c;
    cl_open(&c);
    cl_send(&c, "POST /sink HTTP/1.1\r\nHost: localhost\r\n"
                "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    cl_send(&c, "3\r\ndef\r\n0\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 413 "));
    CHECK(cl_wait_eof(&c));
    CHECK_INT(R.aborts, 1);
    CHECK_INT(R.requests, 0);
    pl_free(a);
    cl_close(&c);
    pl_http_route_remove(&sink);
    env_stop();
}

/* A route receiving its body in place (body_buf): a small buffer. */
static struct {
    char buf[8];   /* where the body goes */
    size_t len;    /* bytes in it */
    char body[64]; /* the whole body, as handed over */
    int in_place;  /* on_body calls with bytes already in buf */
    int copied;    /* on_body calls with bytes elsewhere */
} IP;

static char *on_place_buf(struct pl_http_req *r, size_t *room)
{
    (void)r;
    if (IP.len == sizeof(IP.buf))
        IP.len = 0; /* "written": the buffer is free again */
    *room = sizeof(IP.buf) - IP.len;
    return IP.buf + IP.len;
}

static int on_place_body(struct pl_http_req *r, const char *p, size_t n)
{
    (void)r;
    if (p == IP.buf + IP.len) {
        IP.in_place++;
    } else {
        IP.copied++;
        if (IP.len == sizeof(IP.buf))
            IP.len = 0;
        if (n > sizeof(IP.buf) - IP.len)
            return 500;
        memcpy(IP.buf + IP.len, p, n);
    }
    size_t have = strlen(IP.body);
    snprintf(IP.body + have, sizeof(IP.body) - have, "%.*s", (int)n, p);
    IP.len += n;
    return PL_OK;
}

static void on_place_done(struct pl_http_req *r)
{
    R.requests++;
    pl_http_respond(r, 200, "text/plain", IP.body, strlen(IP.body));
}

/* body_buf: a Content-Length body is received straight into the route's
 * buffer, never more than the body (the next request, in the same
 * write, is not read into it), and bytes read with the head still come
 * (copied). */
void test_http_body_in_place(void)
{
    env_start(NULL);
    routes_add();
    static const struct pl_http_route place = {
        .path = "/place",
        .service = "upload",
        .methods = "PUT",
        .stream_body = 1,
        .on_body = on_place_body,
        .body_buf = on_place_buf,
        .on_request = on_place_done,
    };
    CHECK_INT(pl_http_route_add(&place), PL_OK);
    memset(&IP, 0, sizeof(IP));
    struct client c;
    cl_open(&c);
    cl_send(&c, "PUT /place HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Length: 21\r\n\r\nabc");
    uint64_t deadline = inproc_now_ms() + WAIT_MS;
    while (!IP.body[0] && inproc_now_ms() < deadline)
        inproc_pump(&E, 20);
    cl_send(&c, "defghijklmnopqrstu"
                "GET /echo/next HTTP/1.1\r\nHost: localhost\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(strstr(a, "\r\n\r\nabcdefghijklmnopqrstu") != NULL);
    pl_free(a);
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 200 "));
    CHECK(strstr(a, "/echo/next|") != NULL);
    pl_free(a);
    CHECK_STR(IP.body, "abcdefghijklmnopqrstu");
    CHECK(IP.copied >= 1);   /* "abc", read with the head */
    CHECK(IP.in_place >= 3); /* 18 bytes through an 8-byte buffer */
    cl_close(&c);
    pl_http_route_remove(&place);
    routes_remove();
    env_stop();
}

/* keepalive_timeout closes an idle connection without an answer;
 * request_timeout answers a head that does not complete with 408. */
void test_http_timeouts(void)
{
    env_start("keepalive_timeout = 1; request_timeout = 1;");
    routes_add();
    struct client c;
    cl_open(&c);
    cl_send(&c, "GET /echo/k HTTP/1.1\r\nHost: localhost\r\n\r\n");
    char *a = cl_response(&c, 0);
    CHECK(strstr(a, "/echo/k|") != NULL);
    pl_free(a);
    CHECK(cl_wait_eof(&c));
    CHECK_INT(c.in.len, 0); /* closed without a word */
    cl_close(&c);
    cl_open(&c);
    cl_send(&c, "GET /echo/k HTTP/1.1\r\nHost: loc");
    a = cl_response(&c, 0);
    CHECK(starts(a, "HTTP/1.1 408 "));
    CHECK(cl_wait_eof(&c));
    pl_free(a);
    cl_close(&c);
    routes_remove();
    env_stop();
}
