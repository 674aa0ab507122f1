/*
 * fuzz_http.c - libFuzzer target for the HTTP/1.1 request parser
 * (src/http/parse.c).
 *
 * Input: bytes a client sends on one connection, fed three ways: all at
 * once, one byte at a time, and in pieces of 1 to 13 bytes whose sizes
 * follow from the input's length.  Every piece is a heap copy of exactly
 * its bytes, so that AddressSanitizer catches a read past the input.
 * The corpus (tests/fuzz/corpus/http/) holds requests of the unit tests'
 * kinds: plain, pipelined, Content-Length and chunked bodies with
 * extensions and trailers.  The limits are small, so that every limit is
 * reached.
 *
 * Invariants checked (abort() on violation):
 * - the three feedings give the same transcript: the same heads, the
 *   same body bytes, the same completions with the same byte counts, the
 *   same error status at the same offset;
 * - a call uses at most the bytes given, and all of them when it asks
 *   for more; body spans lie inside the bytes given;
 * - bytes used in all never exceed bytes fed;
 * - a head has a method, a version 10 or 11, at most max_headers fields
 *   and its Host when the version is 11; a body never exceeds max_body,
 *   and a Content-Length body is exactly its length at completion; an
 *   error has a status among 400, 413, 414, 431, 501, 505.
 *
 *
 * The server's own parsers of what a head holds (src/http/server.c) run
 * on every head of the all-at-once feeding, each on a heap copy of
 * exactly its bytes: the path decoding of the target, the Range field
 * against sizes 0, 1, 100 and 2^64-1, and If-Modified-Since as an
 * HTTP-date.  Invariants: a decoded path starts with '/', is no longer
 * than the target, holds no NUL and no "." or ".." segment; a
 * satisfiable range lies inside the representation; a parsed date
 * printed and parsed again is the same time.
 *
 * Extending: a new invariant goes in feed(); a new parser of a field's
 * value in check_fields().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http/http_int.h"
#include "http/parse.h"

static const struct pl_http_limits lim = {
    .max_line = 256,
    .max_header_bytes = 1024,
    .max_headers = 16,
    .max_body = 4096,
};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_http: invariant violated: %s\n", what);
    abort();
}

struct out {
    char *s;     /* transcript */
    size_t n, a; /* used, allocated */
    int in_body; /* a body run is open */
};

static void add(struct out *o, const void *p, size_t n)
{
    if (o->n + n + 1 > o->a) {
        o->a = (o->n + n + 1) * 2;
        o->s = realloc(o->s, o->a);
        if (!o->s)
            die("out of memory");
    }
    memcpy(o->s + o->n, p, n);
    o->n += n;
}

static void add_num(struct out *o, char tag, unsigned long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%c%llu|", tag, v);
    add(o, tmp, (size_t)n);
}

static void add_str(struct out *o, struct pl_str s)
{
    add_num(o, 'L', s.len);
    add(o, s.p, s.len);
}

static char *copy(struct pl_str v)
{
    char *c = malloc(v.len ? v.len : 1);
    if (!c)
        die("out of memory");
    if (v.len)
        memcpy(c, v.p, v.len);
    return c;
}

/* The server's parsers of the head's parts (see the file comment). */
static void check_fields(const struct pl_http_request *r)
{
    char *t = copy(r->target);
    char *out = malloc(r->target.len + 1);
    size_t n = 0;
    if (!out)
        die("out of memory");
    if (pl__http_path_decode(t, r->target.len, out, r->target.len + 1, &n) ==
        PL_OK) {
        if (n == 0 || n > r->target.len || out[0] != '/' || memchr(out, 0, n))
            die("a decoded path out of bounds");
        for (size_t i = 0; i < n;) {
            size_t j = i + 1;
            while (j < n && out[j] != '/')
                j++;
            size_t len = j - i - 1;
            if ((len == 1 && out[i + 1] == '.') ||
                (len == 2 && out[i + 1] == '.' && out[i + 2] == '.'))
                die("a dot segment in a decoded path");
            i = j;
        }
    }
    free(out);
    free(t);
    struct pl_str v;
    if (pl_http_header_get(r, "range", &v)) {
        static const uint64_t sizes[] = {0, 1, 100, UINT64_MAX};
        char *c = copy(v);
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            uint64_t a = 0, b = 0;
            int rc = pl__http_parse_range((struct pl_str){c, v.len}, sizes[i],
                                          &a, &b);
            if (rc < -1 || rc > 1 || (rc == 1 && (a > b || b >= sizes[i])))
                die("a range outside the representation");
        }
        free(c);
    }
    if (pl_http_header_get(r, "if-modified-since", &v)) {
        char *c = copy(v);
        time_t t1, t2;
        char buf[64];
        if (pl__http_parse_date((struct pl_str){c, v.len}, &t1) == PL_OK) {
            pl__http_format_date(t1, buf, sizeof(buf));
            if (pl__http_parse_date(pl_str_c(buf), &t2) != PL_OK || t1 != t2)
                die("a date that does not survive printing");
        }
        free(c);
    }
}

/* Feeds data in pieces: whole when mode is 0, one byte when 1, else
 * pseudo-random sizes of 1 to 13. */
static void feed(const uint8_t *data, size_t size, int mode, struct out *o)
{
    struct pl_http_parser p;
    pl_http_parser_init(&p, &lim);
    size_t off = 0, total = 0;
    uint32_t seed = (uint32_t)size * 2654435761u + 1;
    uint64_t body = 0;
    int dead = 0;
    while (off < size && !dead) {
        size_t k = size - off;
        if (mode == 1) {
            k = 1;
        } else if (mode == 2) {
            seed = seed * 1103515245u + 12345u;
            size_t want = 1 + (seed >> 16) % 13;
            if (k > want)
                k = want;
        }
        char *piece = malloc(k);
        if (!piece)
            die("out of memory");
        memcpy(piece, data + off, k);
        const char *d = piece;
        size_t left = k;
        for (;;) {
            size_t used;
            struct pl_str b;
            enum pl_http_event ev = pl_http_parse(&p, d, left, &used, &b);
            if (used > left)
                die("used more than given");
            d += used;
            left -= used;
            total += used;
            if (ev == PL_HTTP_BODY) {
                if (!b.len || b.p < piece || b.p + b.len > piece + k)
                    die("a body span outside the input");
                body += b.len;
                if (body > lim.max_body)
                    die("a body over max_body");
                if (!o->in_body)
                    add(o, "B", 1);
                o->in_body = 1;
                add(o, b.p, b.len);
                continue;
            }
            if (ev == PL_HTTP_MORE) {
                if (left)
                    die("more asked with bytes left");
                break;
            }
            if (o->in_body)
                add(o, "|", 1);
            o->in_body = 0;
            if (ev == PL_HTTP_ERROR) {
                int st = p.status;
                if (st != 400 && st != 413 && st != 414 && st != 431 &&
                    st != 501 && st != 505)
                    die("an error without a known status");
                add_num(o, 'E', (unsigned long long)st);
                add_num(o, '@', total);
                dead = 1;
                break;
            }
            if (ev == PL_HTTP_DONE) {
                if (p.req.framing == PL_HTTP_LENGTH &&
                    body != p.req.content_length)
                    die("a Content-Length body of another length");
                add_num(o, 'D', p.consumed);
                body = 0;
                continue;
            }
            /* PL_HTTP_HEAD */
            const struct pl_http_request *r = &p.req;
            if (!r->method.len || !r->target.len ||
                (r->version != 10 && r->version != 11) ||
                r->nheaders > lim.max_headers)
                die("a head out of bounds");
            struct pl_str host;
            unsigned hosts = pl_http_header_get(r, "host", &host);
            if (hosts > 1 || (r->version == 11 && hosts != 1))
                die("a head without its one Host");
            if (mode == 0)
                check_fields(r);
            add_num(o, 'H', (unsigned long long)r->version);
            add_str(o, r->method);
            add_str(o, r->target);
            add_num(o, 'F', (unsigned long long)r->form);
            add_num(o, 'b', (unsigned long long)r->framing);
            add_num(o, 'l', r->content_length);
            add_num(o, 'k', (unsigned long long)r->keep_alive);
            for (unsigned i = 0; i < r->nheaders; i++) {
                add_str(o, r->headers[i].name);
                add_str(o, r->headers[i].value);
            }
            body = 0;
        }
        free(piece);
        off += k;
    }
    if (total > size)
        die("used more than fed");
    pl_http_parser_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct out o[3];
    memset(o, 0, sizeof(o));
    for (int mode = 0; mode < 3; mode++)
        feed(data, size, mode, &o[mode]);
    for (int mode = 1; mode < 3; mode++)
        if (o[mode].n != o[0].n ||
            (o[0].n && memcmp(o[mode].s, o[0].s, o[0].n) != 0))
            die(mode == 1 ? "byte at a time differs from all at once"
                          : "pieces differ from all at once");
    for (int mode = 0; mode < 3; mode++)
        free(o[mode].s);
    return 0;
}
