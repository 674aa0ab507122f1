/*
 * fuzz_wsframe.c - libFuzzer target for the RFC 6455 frame reader
 * (src/http/wsframe.c), alone: fuzz_web.c reaches it through the HTTP
 * server and the client stream, this one reads far more frames a second
 * and compares ways of cutting them.
 *
 * Input: byte 0 sets the largest message (max = byte * 16, so 0..4080;
 * some inputs reach the stack buffer's size, some not), byte 1 seeds how
 * the rest is cut into reads; the rest is what a client sends (frames:
 * a masking key of four zero bytes leaves the payload as it is).
 *
 * The rest is read three times by fresh readers: whole, cut into reads
 * of pseudo-random lengths, and byte by byte.  Invariants checked (abort()
 * on violation):
 * - the three give the same events (text messages, pings, close) in the
 *   same order with the same bytes, and end the same way (the same close
 *   code, or none);
 * - every text message is UTF-8 (libunistring's u8_check) of at most
 *   max bytes; every ping payload at most 125 bytes; a close code is one
 *   a client may send;
 * - nothing follows a close frame or a failure, and after either the
 *   reader holds no memory;
 * - between reads, a reader at a frame boundary outside a fragmented
 *   message holds no memory (part is NULL);
 * - LeakSanitizer (on in the fuzz build) checks the heap at exit.
 *
 * Extending: a new invariant on an event goes in ev_*(); on the reader's
 * state between reads, in check_state().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistr.h>

#include "buf.h"
#include "http/wsframe.h"

struct run {
    struct pl_buf log; /* the events, serialized */
    uint64_t max;      /* the largest message */
    int after_end;     /* an event came after close or failure */
    int ended;         /* close frame seen */
};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_wsframe: invariant violated: %s\n", what);
    abort();
}

static void event(struct run *r, char kind, const char *p, size_t n)
{
    if (r->ended)
        die("an event after the close frame");
    char h[1 + sizeof(size_t)];
    h[0] = kind;
    memcpy(h + 1, &n, sizeof(n));
    pl_buf_append(&r->log, h, sizeof(h));
    pl_buf_append(&r->log, p, n);
}

static int ev_text(void *ud, const char *p, size_t n)
{
    struct run *r = ud;
    if (n > r->max)
        die("a message over max");
    if (u8_check((const uint8_t *)p, n))
        die("a message that is not UTF-8");
    event(r, 'T', p, n);
    return 0;
}

static void ev_ping(void *ud, const char *p, size_t n)
{
    struct run *r = ud;
    if (n > 125)
        die("a ping over 125 bytes");
    event(r, 'P', p, n);
}

static void ev_close(void *ud, unsigned code)
{
    struct run *r = ud;
    if (code && (code < 1000 || code >= 5000 || code == 1004 || code == 1005 ||
                 code == 1006 || (code > 1011 && code < 3000)))
        die("a close code a client may not send");
    char c[2] = {(char)(code >> 8), (char)code};
    event(r, 'C', c, 2);
    r->ended = 1;
}

static const struct pl_ws_in_ops ops = {ev_text, ev_ping, ev_close};

static void check_state(const struct pl_ws_in *in)
{
    if (in->done && in->part)
        die("memory kept after the end");
    if (!in->left && !in->hlen && !in->frag && in->part)
        die("memory kept at a frame boundary");
    if (in->plen > in->pcap || in->mlen > in->plen)
        die("part's lengths inconsistent");
}

/* Reads p[0..n) in pieces of the lengths next() gives; logs the end. */
static void read_all(struct run *r, const char *p, size_t n,
                     size_t (*next)(uint32_t *), uint32_t seed)
{
    struct pl_ws_in in = {0};
    size_t at = 0;
    int code = 0;
    while (at < n) {
        size_t k = next(&seed);
        if (k > n - at)
            k = n - at;
        int done_before = in.done;
        code = pl_ws_in_feed(&in, p + at, k, r->max, &ops, r);
        at += k;
        if (done_before && code)
            die("a failure after the end");
        check_state(&in);
        if (code)
            break;
    }
    /* Nothing more once over. */
    if (in.done && at < n) {
        size_t before = r->log.len;
        if (pl_ws_in_feed(&in, p + at, n - at, r->max, &ops, r) != 0 ||
            r->log.len != before)
            die("read after the end");
    }
    if (in.done && in.part)
        die("memory kept after the end");
    char end[3] = {'E', (char)(code >> 8), (char)code};
    pl_buf_append(&r->log, end, 3);
    pl_ws_in_free(&in);
}

static size_t whole(uint32_t *s)
{
    (void)s;
    return SIZE_MAX;
}

static size_t random_cut(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    uint32_t v = *s >> 16;
    return v % 4 == 0 ? 1 + v % 3 : 1 + v % 97;
}

static size_t byte(uint32_t *s)
{
    (void)s;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint64_t max = (uint64_t)data[0] * 16;
    uint32_t seed = data[1];
    const char *p = (const char *)data + 2;
    size_t n = size - 2;
    struct run a = {.max = max}, b = {.max = max}, c = {.max = max};
    read_all(&a, p, n, whole, 0);
    read_all(&b, p, n, random_cut, seed);
    read_all(&c, p, n, byte, 0);
    struct pl_str la = pl_buf_str(&a.log), lb = pl_buf_str(&b.log),
                  lc = pl_buf_str(&c.log);
    if (la.len != lb.len || memcmp(la.p, lb.p, la.len))
        die("cut at random, the reader told something else");
    if (la.len != lc.len || memcmp(la.p, lc.p, la.len))
        die("byte by byte, the reader told something else");
    pl_buf_reset(&a.log);
    pl_buf_reset(&b.log);
    pl_buf_reset(&c.log);
    return 0;
}
