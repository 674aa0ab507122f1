/*
 * test_http_parse.c - the HTTP/1.1 request parser (src/http/parse.c):
 * the request line (RFC 9112 §3), field lines (§5), line ends (§2.2),
 * Host (§3.2), framing (§6), chunked (§7.1), keep-alive (§9.3), the
 * caller's limits and pipelining.  Every row is fed whole, one byte at a
 * time and split in two at every offset; all must give its transcript.
 *
 * A transcript lists the events: "H<method> <target> <version> f<form>
 * b<framing>:<length> k<keep-alive> <fields as {name=value}>|" for the
 * head, "B<bytes>|" for the body (pieces joined), "D<bytes of the
 * message>|" when complete, "E<status>@<offset>|" on an error.
 *
 * Extending: a case is a row of a table.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parse.h"
#include "unit.h"

static const struct pl_http_limits lim_default = {
    .max_line = 64,
    .max_header_bytes = 128,
    .max_headers = 6,
    .max_body = 32,
};

struct out {
    char s[4096]; /* transcript */
    size_t n;     /* its length */
    int in_body;  /* a "B" is open */
};

static void add(struct out *o, const char *p, size_t n)
{
    if (o->n + n >= sizeof(o->s))
        n = sizeof(o->s) - 1 - o->n;
    memcpy(o->s + o->n, p, n);
    o->n += n;
    o->s[o->n] = 0;
}

__attribute__((format(printf, 2, 3))) static void addf(struct out *o,
                                                       const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        add(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void close_body(struct out *o)
{
    if (o->in_body)
        add(o, "|", 1);
    o->in_body = 0;
}

/* Feeds in[0..n) in pieces of at most step bytes (0: whole), the first
 * piece cut at first (0: none), writing the transcript to *o. */
static void run(const struct pl_http_limits *lim, const char *in, size_t n,
                size_t step, size_t first, struct out *o)
{
    struct pl_http_parser p;
    pl_http_parser_init(&p, lim);
    memset(o, 0, sizeof(*o));
    size_t off = 0, total = 0;
    int dead = 0;
    while (off < n && !dead) {
        size_t k = n - off;
        if (first && off == 0)
            k = first;
        else if (step && k > step)
            k = step;
        /* A copy of exactly the piece, so that reading past it is
         * caught by the sanitizers. */
        char *piece = malloc(k ? k : 1);
        memcpy(piece, in + off, k);
        const char *d = piece;
        size_t left = k;
        for (;;) {
            size_t used;
            struct pl_str body;
            enum pl_http_event ev = pl_http_parse(&p, d, left, &used, &body);
            CHECK(used <= left);
            d += used;
            left -= used;
            total += used;
            if (ev == PL_HTTP_BODY) {
                CHECK(body.p >= piece && body.p + body.len <= piece + k);
                if (!o->in_body)
                    add(o, "B", 1);
                o->in_body = 1;
                add(o, body.p, body.len);
                continue;
            }
            if (ev == PL_HTTP_MORE) {
                CHECK_INT(left, 0);
                break;
            }
            close_body(o);
            if (ev == PL_HTTP_ERROR) {
                addf(o, "E%d@%zu|", p.status, total);
                dead = 1;
                break;
            }
            if (ev == PL_HTTP_DONE) {
                addf(o, "D%llu|", (unsigned long long)p.consumed);
                continue;
            }
            const struct pl_http_request *r = &p.req;
            addf(o, "H%.*s %.*s %d f%d b%d:%llu k%d ", (int)r->method.len,
                 r->method.p, (int)r->target.len, r->target.p, r->version,
                 (int)r->form, (int)r->framing,
                 (unsigned long long)r->content_length, r->keep_alive);
            for (unsigned i = 0; i < r->nheaders; i++)
                addf(o, "{%.*s=%.*s}", (int)r->headers[i].name.len,
                     r->headers[i].name.p, (int)r->headers[i].value.len,
                     r->headers[i].value.p);
            add(o, "|", 1);
        }
        free(piece);
        off += k;
    }
    CHECK(total <= n);
    pl_http_parser_free(&p);
}

struct row {
    const char *in;   /* bytes */
    const char *want; /* transcript */
};

/* Runs each row whole, byte by byte and split at every offset. */
static void check_rows(const struct pl_http_limits *lim, const struct row *rows,
                       size_t nrows)
{
    for (size_t i = 0; i < nrows; i++) {
        size_t n = strlen(rows[i].in);
        struct out o;
        run(lim, rows[i].in, n, 0, 0, &o);
        if (strcmp(o.s, rows[i].want) != 0) {
            fprintf(stderr, "  row %zu whole:\n    got  %s\n    want %s\n", i,
                    o.s, rows[i].want);
            unit_failures++;
            continue;
        }
        run(lim, rows[i].in, n, 1, 0, &o);
        if (strcmp(o.s, rows[i].want) != 0) {
            fprintf(stderr, "  row %zu bytewise: %s\n", i, o.s);
            unit_failures++;
        }
        for (size_t cut = 1; cut < n; cut++) {
            run(lim, rows[i].in, n, 0, cut, &o);
            if (strcmp(o.s, rows[i].want) != 0) {
                fprintf(stderr, "  row %zu cut at %zu: %s\n", i, cut, o.s);
                unit_failures++;
                break;
            }
        }
    }
}

#define ROWS(lim, r) check_rows(lim, r, sizeof(r) / sizeof(r[0]))
static const struct row request_line_rows[] = {
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HGET / 11 f0 b0:0 k1 {Host=a}|D27|"},
    {"GET /where?q=now HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
     "HGET /where?q=now 11 f0 b0:0 k1 {Host=www.example.org}|D52|"},
    {"GET http://www.example.org/pub/WWW/TheProject.html HTTP/1.1\r\nHost: "
     "www.example.org\r\n\r\n",
     "HGET http://www.example.org/pub/WWW/TheProject.html 11 f1 b0:0 k1 "
     "{Host=www.example.org}|D86|"},
    {"CONNECT www.example.com:80 HTTP/1.1\r\nHost: www.example.com:80\r\n\r\n",
     "HCONNECT www.example.com:80 11 f2 b0:0 k1 "
     "{Host=www.example.com:80}|D65|"},
    {"OPTIONS * HTTP/1.1\r\nHost: www.example.org:8001\r\n\r\n",
     "HOPTIONS * 11 f3 b0:0 k1 {Host=www.example.org:8001}|D50|"},
    {"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "E400@15|"},
    {"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", "E400@20|"},
    {"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", "E400@19|"},
    {"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
     "HCONNECT [::1]:443 11 f2 b0:0 k1 {Host=[::1]:443}|D47|"},
    {"GET www.example.org HTTP/1.1\r\nHost: a\r\n\r\n", "E400@29|"},
    {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "E505@15|"},
    {"GET / HTTP/0.9\r\nHost: a\r\n\r\n", "E505@15|"},
    {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", "HGET / 11 f0 b0:0 k1 {Host=a}|D27|"},
    {"GET / http/1.1\r\n", "E400@6|"},
    {"GET / HTTP/1.10\r\n", "E400@14|"},
    {"GET / HTTP/1\r\n", "E400@12|"},
    {"GET  / HTTP/1.1\r\n", "E400@4|"},
    {"GET / HTTP/1.1 \r\n", "E400@14|"},
    {"GET /a b HTTP/1.1\r\n", "E400@7|"},
    {" GET / HTTP/1.1\r\n", "E400@0|"},
    {"G(T / HTTP/1.1\r\n", "E400@1|"},
    {"GET /a#f HTTP/1.1\r\n", "E400@6|"},
    {"GET /a\x80 HTTP/1.1\r\n", "E400@6|"},
    {"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", "E400@18|"},
    {"GET /%4 HTTP/1.1\r\nHost: a\r\n\r\n", "E400@17|"},
    {"GET /%41?a=b&c=%2F HTTP/1.1\r\nHost: a\r\n\r\n",
     "HGET /%41?a=b&c=%2F 11 f0 b0:0 k1 {Host=a}|D40|"},
    {"GET /\r\n", "E400@5|"},
    {"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=a}|D30|"},
    {"GET / HTTP/1.1\nHost: a\n\n", "HGET / 11 f0 b0:0 k1 {Host=a}|D24|"},
    {"GET / HTTP/1.1\r\nHost: a\n\r\n", "HGET / 11 f0 b0:0 k1 {Host=a}|D26|"},
    {"GET / HTTP/1.1\rHost: a\r\n\r\n", "E400@15|"},
    {"\rGET / HTTP/1.1\r\n", "E400@1|"},
    {"GET / HTTP/1.1\r\nHost: a\r\r\n", "E400@24|"},
    {"GET / HTTP/1.1\r\nHost: a\r\n\rX", "E400@26|"},
    {"GET / HTTP/1.0\r\n\r\n", "HGET / 10 f0 b0:0 k0 |D18|"},
    {"GET / HTTP/1.1\r\n\r\n", "E400@17|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "E400@35|"},
    {"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", "E400@35|"},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "E400@28|"},
    {"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", "E400@28|"},
    {"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", "E400@28|"},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", "HGET / 11 f0 b0:0 k1 {Host=}|D25|"},
    {"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=[::1]:8080}|D36|"},
    {"GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=192.0.2.1:80}|D38|"},
};

static const struct row field_rows[] = {
    {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "E400@20|"},
    {"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", "E400@20|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", "E400@31|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", "E400@31|"},
    {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", "E400@16|"},
    {"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", "E400@23|"},
    {"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", "E400@23|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", "E400@30|"},
    {"GET / HTTP/1.1\r\n:a\r\n\r\n", "E400@16|"},
    {"GET / HTTP/1.1\r\nHost\r\n\r\n", "E400@20|"},
    {"GET / HTTP/1.1\r\nX(: a\r\n\r\n", "E400@17|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=a}{X=caf\xc3\xa9}|D37|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: \t a \t b \t\r\nY:\r\nZ:  \r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=a}{X=a \t b}{Y=}{Z=}|D51|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX-Y_z~1: \"a, b\"; q=1\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=a}{X-Y_z~1=\"a, b\"; q=1}|D49|"},
};

static const struct row limit_rows[] = {
    {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
     "HTTP/1.1\r\nHost: a\r\n\r\n",
     "HGET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 11 f0 b0:0 k1 "
     "{Host=a}|D77|"},
    {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
     "HTTP/1.1\r\nHost: a\r\n\r\n",
     "E414@64|"},
    {"GET "
     "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "E414@64|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: "
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 "
     "{Host=a}{X="
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb}|D146|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: "
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
     "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n",
     "E431@144|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=a}{A=1}{B=2}{C=3}{D=4}{E=5}|D52|"},
    {"GET / HTTP/1.1\r\nHost: "
     "a\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\nF:6\r\n\r\n",
     "E431@50|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
     "32\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
     "HPOST / 11 f0 b1:32 k1 "
     "{Host=a}{Content-Length=32}|Bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx|D80|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
     "33\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
     "E413@47|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
     "99999999999999999999999\r\n\r\n",
     "E413@68|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n10\r\nyyyyyyyyyyyyyyyy\r\n10\r\nzzzzzzzzzzzzzzzz\r\n0\r\n"
     "\r\n",
     "HPOST / 11 f0 b2:0 k1 "
     "{Host=a}{Transfer-Encoding=chunked}|Byyyyyyyyyyyyyyyyzzzzzzzzzzzzzzzz|"
     "D105|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n10\r\nyyyyyyyyyyyyyyyy\r\n11\r\n",
     "HPOST / 11 f0 b2:0 k1 "
     "{Host=a}{Transfer-Encoding=chunked}|Byyyyyyyyyyyyyyyy|E413@79|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
     "HPOST / 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E413@57|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\n\r\n",
     "HPOST / 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|D81|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\n\r\n",
     "HPOST / 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E431@79|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: "
     "ttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
     "tttttttttttttttttttttt\r\n\r\n",
     "HPOST / 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E431@150|"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n1;"
     "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\r"
     "\n",
     "HPOST / 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@120|"},
};

static const struct row framing_rows[] = {
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
     "HPOST /u 11 f0 b1:5 k1 {Host=a}{Content-Length=5}|Bhello|D53|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
     "HPOST /u 11 f0 b1:0 k1 {Host=a}{Content-Length=0}|D48|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
     "HPOST /u 11 f0 b1:5 k1 {Host=a}{Content-Length=5, 5}|Bhello|D56|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: "
     "005\r\n\r\nhello",
     "HPOST /u 11 f0 b1:5 k1 "
     "{Host=a}{Content-Length=5}{Content-Length=005}|Bhello|D74|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello",
     "E400@50|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: "
     "6\r\n\r\nhello",
     "E400@66|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
     "E400@48|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
     "E400@49|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", "E400@45|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\nhello",
     "E400@48|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: ,5\r\n\r\nhello",
     "E400@48|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nhello",
     "E400@49|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\nContent-Length: 5\r\n\r\n",
     "E400@75|"},
    {"POST /u HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "E400@47|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     "E501@62|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
     "E501@81|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
     "E400@53|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
     "E400@62|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, "
     "chunked\r\n\r\n",
     "E400@65|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", "E400@48|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
     "E400@60|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x y\r\n\r\n",
     "E400@52|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , "
     "CHUNKED\r\n\r\n0\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=, CHUNKED}|D64|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\n\r\nhello\r\n",
     "HPOST /u 11 f0 b0:0 k1 {Host=a}|D29|E400@34|"},
};

static const struct row chunked_rows[] = {
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n4\r\nWiki\r\n5;ext=1;x=\"q\\\"s\"\r\npedia\r\nE ; a ; b = "
     "c\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: Sat, 27 Mar 2004 21:12:00 "
     "GMT\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|BWikipedia "
     "in\r\n\r\nchunks.|D167|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\nA\r\n0123456789\r\n000\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 "
     "{Host=a}{Transfer-Encoding=chunked}|B0123456789|D79|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\na;\tx=\"\tq\"\r\n0123456789\r\n0\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 "
     "{Host=a}{Transfer-Encoding=chunked}|B0123456789|D85|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n4\r\nWikiX",
     "HPOST /u 11 f0 b2:0 k1 "
     "{Host=a}{Transfer-Encoding=chunked}|BWiki|E400@64|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n4\r\nWiki\n0\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 "
     "{Host=a}{Transfer-Encoding=chunked}|BWiki|E400@64|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n4\nWiki\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@58|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@57|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@57|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@57|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4 \r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@59|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@59|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n4;a=\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@61|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n4;a=\"x\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@63|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b "
     "c\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@63|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n4;a=\"\x01\"\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@62|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@59|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: "
     "1\r\n Y\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@66|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX "
     ": 1\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@61|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: "
     "\x01\r\n\r\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@63|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\nX: "
     "1\n\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|E400@58|"},
    {"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: "
     "1\n\n",
     "HPOST /u 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|D66|"},
};

static const struct row keep_alive_rows[] = {
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
     "HGET / 11 f0 b0:0 k0 {Host=a}{Connection=close}|D46|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Keep-Alive\r\n\r\n",
     "HGET / 11 f0 b0:0 k1 {Host=a}{Connection=foo, Keep-Alive}|D56|"},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: "
     "CLOSE\r\n\r\n",
     "HGET / 11 f0 b0:0 k0 "
     "{Host=a}{Connection=keep-alive}{Connection=CLOSE}|D70|"},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     "HGET / 10 f0 b0:0 k1 {Connection=keep-alive}|D42|"},
    {"GET / HTTP/1.0\r\nConnection: closed\r\n\r\n",
     "HGET / 10 f0 b0:0 k0 {Connection=closed}|D38|"},
};

static const struct row pipeline_rows[] = {
    {"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: "
     "a\r\nContent-Length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\nHost: "
     "a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\nGET /a "
     "HTTP/1.1\r\nHost: a\r\n\r\n",
     "HGET /a 11 f0 b0:0 k1 {Host=a}|D28|HPOST /b 11 f0 b1:3 k1 "
     "{Host=a}{Content-Length=3}|Babc|D51|HPOST /c 11 f0 b2:0 k1 "
     "{Host=a}{Transfer-Encoding=chunked}|Bxyz|D70|HGET /a 11 f0 b0:0 k1 "
     "{Host=a}|D28|"},
    {"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / "
     "HTTP/1.1\r\nHost: a\r\n\r",
     "HPOST /b 11 f0 b1:3 k1 {Host=a}{Content-Length=3}|Babc|D51|"},
    {"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
     "chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n\r\nGET /a HTTP/1.1\r\nHost: "
     "a\r\n\r\n",
     "HPOST /c 11 f0 b2:0 k1 {Host=a}{Transfer-Encoding=chunked}|Bxyz|D70|HGET "
     "/a 11 f0 b0:0 k1 {Host=a}|D30|"},
};

void test_http_request_line(void)
{
    ROWS(&lim_default, request_line_rows);
}

void test_http_fields(void)
{
    ROWS(&lim_default, field_rows);
}

void test_http_limits(void)
{
    ROWS(&lim_default, limit_rows);
}

void test_http_framing(void)
{
    ROWS(&lim_default, framing_rows);
}

void test_http_chunked(void)
{
    ROWS(&lim_default, chunked_rows);
}

void test_http_keep_alive(void)
{
    ROWS(&lim_default, keep_alive_rows);
}

void test_http_pipeline(void)
{
    ROWS(&lim_default, pipeline_rows);
}

/* The API around the events: pl_http_header_get, bytes left for the
 * caller after DONE, DONE needing no bytes, a sticky error. */
void test_http_api(void)
{
    static const char in[] = "GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n"
                             "x-a: 2\r\n\r\nGET /y HTTP/1.1\r\n";
    struct pl_http_parser p;
    size_t used;
    struct pl_str body, v;
    pl_http_parser_init(&p, &lim_default);
    CHECK_INT(pl_http_parse(&p, in, sizeof(in) - 1, &used, &body),
              PL_HTTP_HEAD);
    CHECK_INT(used, 44);
    CHECK_INT(pl_http_header_get(&p.req, "x-a", &v), 2);
    CHECK(pl_str_eq_c(v, "1"));
    CHECK_INT(pl_http_header_get(&p.req, "HOST", &v), 1);
    CHECK(pl_str_eq_c(p.req.host, "h"));
    CHECK_INT(pl_http_header_get(&p.req, "y", &v), 0);
    CHECK_INT(v.len, 0);
    CHECK_INT(pl_http_parse(&p, in + 44, 0, &used, &body), PL_HTTP_DONE);
    CHECK_INT(used, 0);
    CHECK_INT(p.consumed, 44);
    CHECK_INT(pl_http_parse(&p, in + 44, sizeof(in) - 45, &used, &body),
              PL_HTTP_MORE);
    CHECK_INT(used, sizeof(in) - 45);
    CHECK_INT(pl_http_parse(&p, "\r\nX", 3, &used, &body), PL_HTTP_ERROR);
    CHECK_INT(p.status, 400); /* HTTP/1.1 without Host */
    CHECK_INT(used, 1);
    CHECK_INT(pl_http_parse(&p, "\r\n", 2, &used, &body), PL_HTTP_ERROR);
    CHECK_INT(used, 0);
    pl_http_parser_free(&p);
}
