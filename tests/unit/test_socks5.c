/*
 * test_socks5.c - the SOCKS5 handshake parser of the XEP-0065 proxy
 * (src/socks5/parse.c): method selection (RFC 1928 §3), requests (§4)
 * and their verdicts, replies (§6, echoing the address as XEP-0065
 * §6.3.2 asks), and the hash of XEP-0065 §5.3.2 against a value computed
 * by hand.  Every row is parsed whole and on each of its prefixes (which
 * must ask for more, or give the same verdict).
 *
 * Extending: a case is a row of a table.
 */
#include <stdio.h>
#include <string.h>

#include "socks5/parse.h"
#include "unit.h"

#define H40 "0123456789abcdef0123456789abcdef01234567"

struct row {
    const char *name; /* for failures */
    const char *in;   /* bytes */
    size_t n;         /* their count */
    int verdict;      /* expected */
    size_t used;      /* expected length of the message (0: unknown) */
};

#define ROW(name, lit, v, used)                                                \
    {                                                                          \
        name, lit, sizeof(lit) - 1, v, used                                    \
    }

static const struct row greetings[] = {
    ROW("no auth only", "\x05\x01\x00", PL_SOCKS5_OK, 3),
    ROW("no auth among others", "\x05\x03\x02\x01\x00", PL_SOCKS5_OK, 5),
    ROW("gssapi and password only", "\x05\x02\x01\x02", PL_SOCKS5_NO_METHOD, 4),
    ROW("no method at all", "\x05\x00", PL_SOCKS5_NO_METHOD, 2),
    ROW("socks4", "\x04\x01\x00\x50", PL_SOCKS5_BAD_VERSION, 0),
    ROW("http", "GET / HTTP/1.1\r\n", PL_SOCKS5_BAD_VERSION, 0),
    ROW("trailing request", "\x05\x01\x00\x05\x01", PL_SOCKS5_OK, 3),
};

static const struct row requests[] = {
    ROW("connect hash", "\x05\x01\x00\x03\x28" H40 "\x00\x00", PL_SOCKS5_OK,
        47),
    ROW("upper case hash",
        "\x05\x01\x00\x03\x28"
        "0123456789ABCDEF0123456789ABCDEF01234567"
        "\x1e\x61",
        PL_SOCKS5_OK, 47),
    ROW("bind", "\x05\x02\x00\x03\x28" H40 "\x00\x00", PL_SOCKS5_BAD_COMMAND,
        0),
    ROW("udp associate", "\x05\x03\x00\x03\x28" H40 "\x00\x00",
        PL_SOCKS5_BAD_COMMAND, 0),
    ROW("ipv4", "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50", PL_SOCKS5_BAD_ATYP,
        0),
    ROW("reserved byte", "\x05\x01\x01\x03\x28" H40 "\x00\x00",
        PL_SOCKS5_BAD_REQUEST, 0),
    ROW("short name", "\x05\x01\x00\x03\x05hello\x00\x00",
        PL_SOCKS5_BAD_ADDRESS, 12),
    ROW("not hex",
        "\x05\x01\x00\x03\x28"
        "0123456789abcdef0123456789abcdef0123456g\x00\x00",
        PL_SOCKS5_BAD_ADDRESS, 47),
    ROW("version 4", "\x04\x01\x00\x03", PL_SOCKS5_BAD_VERSION, 0),
};

static void run(const struct row *rows, size_t nrows, int request)
{
    for (size_t i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        for (size_t k = 0; k <= r->n; k++) {
            struct pl_socks5_request req;
            size_t used = 99;
            const uint8_t *p = (const uint8_t *)r->in;
            int v = request ? pl_socks5_request(p, k, &req, &used)
                            : pl_socks5_greeting(p, k, &used);
            if (v == PL_SOCKS5_MORE) {
                if (k == r->n)
                    fprintf(stderr, "  %s: still wants more\n", r->name);
                CHECK(k < r->n);
                CHECK_INT(used, 0);
                continue;
            }
            if (v != r->verdict || (r->used && used != r->used))
                fprintf(stderr, "  %s (prefix %zu): verdict %d used %zu\n",
                        r->name, k, v, used);
            CHECK_INT(v, r->verdict);
            if (r->used)
                CHECK_INT(used, r->used);
        }
    }
}

void test_socks5_greeting(void)
{
    run(greetings, sizeof(greetings) / sizeof(greetings[0]), 0);
}

void test_socks5_request(void)
{
    run(requests, sizeof(requests) / sizeof(requests[0]), 1);
    struct pl_socks5_request req;
    size_t used;
    const char up[] = "\x05\x01\x00\x03\x28"
                      "0123456789ABCDEF0123456789ABCDEF01234567\x1e\x61";
    CHECK_INT(pl_socks5_request((const uint8_t *)up, sizeof(up) - 1, &req,
                                &used),
              PL_SOCKS5_OK);
    CHECK_STR(req.addr, H40);
    CHECK_INT(req.port, 7777);
}

void test_socks5_reply(void)
{
    uint8_t out[PL_SOCKS5_MAX_REPLY];
    struct pl_socks5_request req;
    size_t used;
    const char in[] = "\x05\x01\x00\x03\x28" H40 "\x00\x00";
    CHECK_INT(pl_socks5_request((const uint8_t *)in, sizeof(in) - 1, &req,
                                &used),
              PL_SOCKS5_OK);
    /* XEP-0065 §6.3.2: BND.ADDR and BND.PORT are the request's. */
    size_t n = pl_socks5_reply(out, PL_SOCKS5_REP_OK, &req);
    CHECK_INT(n, sizeof(in) - 1);
    CHECK(memcmp(out, "\x05\x00\x00\x03\x28" H40 "\x00\x00", n) == 0);
    n = pl_socks5_reply(out, PL_SOCKS5_REP_COMMAND, NULL);
    CHECK_INT(n, 10);
    CHECK(memcmp(out, "\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00", n) == 0);
    CHECK_INT(pl_socks5_verdict_rep(PL_SOCKS5_BAD_ATYP), 0x08);
    CHECK_INT(pl_socks5_verdict_rep(PL_SOCKS5_BAD_ADDRESS), 0x04);
    CHECK_INT(pl_socks5_verdict_rep(PL_SOCKS5_BAD_REQUEST), 0x01);
}

void test_socks5_hash(void)
{
    /* sha1("sid" "a@x/r" "b@y/s"), computed with sha1sum. */
    char out[PL_SOCKS5_HASH_LEN + 1];
    pl_socks5_hash("sid", "a@x/r", "b@y/s", out);
    CHECK_STR(out, "2822cf55f1c581427b8cb499cdad5f66e16bddfd");
    /* No input: the SHA-1 of the empty string (RFC 3174). */
    pl_socks5_hash("", "", "", out);
    CHECK_STR(out, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}
