/*
 * test_wsframe.c - the RFC 6455 frame reader of src/http/wsframe.c:
 * messages, fragments and control frames whole and cut at every byte,
 * each close code of a client's mistake, the memory it keeps between
 * frames, and its UTF-8 check against libunistring's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistr.h>

#include "../../src/core/buf.h"
#include "../../src/http/wsframe.h"
#include "unit.h"

#define MAX 1000 /* the largest message in these tests */

/* A client frame: masked (unless mask is 0), opcode, fin, payload. */
static void frame(struct pl_buf *b, unsigned b0, int mask, const char *pl,
                  size_t n)
{
    unsigned char h[14];
    size_t hl = 2;
    h[0] = (unsigned char)b0;
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (mask) {
        h[1] |= 0x80;
        memcpy(h + hl, key, 4);
        hl += 4;
    }
    pl_buf_append(b, h, hl);
    for (size_t i = 0; i < n; i++) {
        char c = (char)(pl[i] ^ (mask ? key[i & 3] : 0));
        pl_buf_append(b, &c, 1);
    }
}

static void text(struct pl_buf *b, const char *s)
{
    frame(b, 0x81, 1, s, strlen(s));
}

/* What the reader told, as a log: "T(msg)" "P(ping)" "C(code)". */
struct seen {
    struct pl_buf log;
    int stop_after; /* text callbacks before asking to stop; 0: never */
    int texts;
};

static int on_text(void *ud, const char *p, size_t n)
{
    struct seen *s = ud;
    pl_buf_append_str(&s->log, "T(");
    pl_buf_append(&s->log, p, n);
    pl_buf_append_str(&s->log, ")");
    return s->stop_after && ++s->texts >= s->stop_after;
}

static void on_ping(void *ud, const char *p, size_t n)
{
    struct seen *s = ud;
    pl_buf_append_str(&s->log, "P(");
    pl_buf_append(&s->log, p, n);
    pl_buf_append_str(&s->log, ")");
}

static void on_close(void *ud, unsigned code)
{
    struct seen *s = ud;
    pl_buf_printf(&s->log, "C(%u)", code);
}

static const struct pl_ws_in_ops ops = {on_text, on_ping, on_close};

/* Feeds in[0..n) cut at the given offsets (cuts ascending, ncuts of
 * them); appends "E(code)" to the log on a failure.  Returns the code. */
static int feed_cut(struct pl_ws_in *r, struct seen *s, struct pl_str in,
                    const size_t *cuts, int ncuts)
{
    size_t at = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : in.len;
        int rc = pl_ws_in_feed(r, in.p + at, end - at, MAX, &ops, s);
        at = end;
        if (rc) {
            pl_buf_printf(&s->log, "E(%d)", rc);
            return rc;
        }
    }
    return 0;
}

/* The log of in fed whole; checks that it is the same cut anywhere in
 * one place, and cut at every byte, and that the reader keeps no memory
 * once done. */
static void expect(struct pl_str in, const char *want, int line)
{
    struct seen s = {0};
    struct pl_ws_in r = {0};
    feed_cut(&r, &s, in, NULL, 0);
    if (strcmp(pl_buf_cstr(&s.log), want) != 0) {
        fprintf(stderr, "  line %d: whole: %s, expected %s\n", line,
                pl_buf_cstr(&s.log), want);
        unit_failures++;
    }
    CHECK(r.part == NULL && r.plen == 0);
    pl_ws_in_free(&r);
    pl_buf_reset(&s.log);
    for (size_t c = 1; c < in.len; c++) {
        feed_cut(&r, &s, in, &c, 1);
        if (strcmp(pl_buf_cstr(&s.log), want) != 0) {
            fprintf(stderr, "  line %d: cut at %zu: %s, expected %s\n", line, c,
                    pl_buf_cstr(&s.log), want);
            unit_failures++;
            c = in.len;
        }
        pl_ws_in_free(&r);
        pl_buf_reset(&s.log);
    }
    size_t *cuts = malloc(in.len * sizeof(*cuts));
    for (size_t i = 0; i + 1 < in.len; i++)
        cuts[i] = i + 1;
    feed_cut(&r, &s, in, cuts, in.len > 1 ? (int)in.len - 1 : 0);
    if (strcmp(pl_buf_cstr(&s.log), want) != 0) {
        fprintf(stderr, "  line %d: byte by byte: %s, expected %s\n", line,
                pl_buf_cstr(&s.log), want);
        unit_failures++;
    }
    free(cuts);
    pl_ws_in_free(&r);
    pl_buf_reset(&s.log);
}

#define EXPECT(b, want) expect(pl_buf_str(b), want, __LINE__)

void test_wsframe_messages(void)
{
    struct pl_buf b = {0};
    text(&b, "<presence/>");
    text(&b, "");
    text(&b, "<message><body>h\xc3\xa9</body></message>");
    EXPECT(&b, "T(<presence/>)T()T(<message><body>h\xc3\xa9</body></message>)");
    pl_buf_reset(&b);

    /* Fragments, control frames between them (RFC 6455 §5.4), a UTF-8
     * character cut between two fragments, empty fragments. */
    frame(&b, 0x01, 1, "<message><body>\xc3", 16);
    frame(&b, 0x89, 1, "nap", 3);
    frame(&b, 0x00, 1, "", 0);
    frame(&b, 0x8a, 1, "pong", 4);
    frame(&b, 0x00, 1, "\xa9", 1);
    frame(&b, 0x89, 1, "", 0);
    frame(&b, 0x80, 1, "</body></message>", 17);
    text(&b, "<r/>");
    EXPECT(&b, "P(nap)P()T(<message><body>\xc3\xa9</body></message>)T(<r/>)");
    pl_buf_reset(&b);

    frame(&b, 0x01, 1, "", 0);
    frame(&b, 0x80, 1, "<a/>", 4);
    frame(&b, 0x01, 1, "<b/>", 4);
    frame(&b, 0x80, 1, "", 0);
    EXPECT(&b, "T(<a/>)T(<b/>)");
    pl_buf_reset(&b);

    /* The 16-bit length; then the 64-bit one, a payload longer than the
     * stack buffer (kept in part, though whole in one read). */
    char big[900];
    memset(big, 'x', sizeof(big));
    big[0] = '<';
    frame(&b, 0x81, 1, big, sizeof(big));
    struct seen s = {0};
    struct pl_ws_in r = {0};
    CHECK_INT(pl_ws_in_feed(&r, pl_buf_str(&b).p, b.len, MAX, &ops, &s), 0);
    CHECK_INT(s.log.len, 2 + sizeof(big) + 1);
    CHECK(memcmp(pl_buf_cstr(&s.log) + 2, big, sizeof(big)) == 0);
    pl_buf_reset(&s.log);
    pl_buf_reset(&b);
    size_t n = 70000;
    char *huge = malloc(n);
    for (size_t i = 0; i < n; i++)
        huge[i] = (char)('a' + i % 26);
    frame(&b, 0x81, 1, huge, n);
    CHECK_INT(pl_ws_in_feed(&r, pl_buf_str(&b).p, b.len, n, &ops, &s), 0);
    CHECK_INT(s.log.len, n + 3);
    CHECK(memcmp(pl_buf_cstr(&s.log) + 2, huge, n) == 0);
    CHECK(r.part == NULL);
    /* Cut in three: kept in part meanwhile, freed once whole. */
    pl_buf_reset(&s.log);
    struct pl_str in = pl_buf_str(&b);
    CHECK_INT(pl_ws_in_feed(&r, in.p, 5, n, &ops, &s), 0);
    CHECK(r.part == NULL); /* the header only */
    CHECK_INT(pl_ws_in_feed(&r, in.p + 5, 30000, n, &ops, &s), 0);
    CHECK(r.part != NULL && r.pcap == n && s.log.len == 0);
    CHECK_INT(pl_ws_in_feed(&r, in.p + 30005, in.len - 30005, n, &ops, &s), 0);
    CHECK(r.part == NULL && s.log.len == n + 3);
    CHECK(memcmp(pl_buf_cstr(&s.log) + 2, huge, n) == 0);
    free(huge);
    pl_buf_reset(&s.log);
    pl_buf_reset(&b);
    pl_ws_in_free(&r);

    /* A ping cut in the middle of a fragmented message: the message's
     * bytes stay, the ping's leave. */
    frame(&b, 0x01, 1, "<a>", 3);
    frame(&b, 0x89, 1, "12345678", 8);
    in = pl_buf_str(&b);
    CHECK_INT(pl_ws_in_feed(&r, in.p, in.len - 3, MAX, &ops, &s), 0);
    CHECK(r.plen == 3 + 5 && r.mlen == 3);
    CHECK_INT(pl_ws_in_feed(&r, in.p + in.len - 3, 3, MAX, &ops, &s), 0);
    CHECK(r.plen == 3 && r.mlen == 3);
    CHECK_STR(pl_buf_cstr(&s.log), "P(12345678)");
    pl_buf_reset(&b);
    frame(&b, 0x80, 1, "</a>", 4);
    CHECK_INT(pl_ws_in_feed(&r, pl_buf_str(&b).p, b.len, MAX, &ops, &s), 0);
    CHECK_STR(pl_buf_cstr(&s.log), "P(12345678)T(<a></a>)");
    CHECK(r.part == NULL);
    pl_buf_reset(&s.log);
    pl_buf_reset(&b);
    pl_ws_in_free(&r);

    /* The callback asks to stop: nothing more is read. */
    text(&b, "<a/>");
    text(&b, "<b/>");
    s.stop_after = 1;
    CHECK_INT(pl_ws_in_feed(&r, pl_buf_str(&b).p, b.len, MAX, &ops, &s), 0);
    CHECK_STR(pl_buf_cstr(&s.log), "T(<a/>)");
    CHECK(r.done);
    pl_buf_reset(&s.log);
    pl_buf_reset(&b);
    pl_ws_in_free(&r);
}

void test_wsframe_close(void)
{
    struct pl_buf b = {0};
    /* Close frames: the code is told, nothing after is read. */
    frame(&b, 0x88, 1, "\003\350bye", 5); /* 1000, "bye" */
    text(&b, "<a/>");
    EXPECT(&b, "C(1000)");
    pl_buf_reset(&b);
    frame(&b, 0x88, 1, "", 0);
    text(&b, "<a/>");
    EXPECT(&b, "C(0)");
    pl_buf_reset(&b);
    frame(&b, 0x88, 1, "\x0f\xa0", 2); /* 4000: private use */
    EXPECT(&b, "C(4000)");
    pl_buf_reset(&b);
    /* Inside a fragmented message: the message is dropped. */
    frame(&b, 0x01, 1, "<a>", 3);
    frame(&b, 0x88, 1, "\x03\xe9", 2);
    EXPECT(&b, "C(1001)");
    pl_buf_reset(&b);
    /* Bad close frames (RFC 6455 §5.5.1, §7.4). */
    static const struct {
        const char *payload;
        size_t n;
        const char *want;
    } bad[] = {
        {"\x03", 1, "E(1002)"},         /* one byte */
        {"\x03\xed", 2, "E(1002)"},     /* 1005 */
        {"\x03\xee", 2, "E(1002)"},     /* 1006 */
        {"\x03\xec", 2, "E(1002)"},     /* 1004 */
        {"\x03\xf4", 2, "E(1002)"},     /* 1012 */
        {"\x03\xe7", 2, "E(1002)"},     /* 999 */
        {"\x13\x88", 2, "E(1002)"},     /* 5000 */
        {"\x03\xe8\xff", 3, "E(1007)"}, /* reason not UTF-8 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        frame(&b, 0x88, 1, bad[i].payload, bad[i].n);
        EXPECT(&b, bad[i].want);
        pl_buf_reset(&b);
    }
}

void test_wsframe_errors(void)
{
    struct pl_buf b = {0};
    static const struct {
        unsigned b0;
        int mask;
        const char *payload;
        const char *want;
    } rows[] = {
        {0x81, 0, "<a/>", "E(1002)"},        /* unmasked (§5.1) */
        {0xc1, 1, "<a/>", "E(1002)"},        /* RSV1 */
        {0xa1, 1, "<a/>", "E(1002)"},        /* RSV2 */
        {0x91, 1, "<a/>", "E(1002)"},        /* RSV3 */
        {0x83, 1, "<a/>", "E(1002)"},        /* reserved data opcode */
        {0x8b, 1, "", "E(1002)"},            /* reserved control opcode */
        {0x82, 1, "<a/>", "E(1003)"},        /* binary */
        {0x02, 1, "<a/>", "E(1003)"},        /* binary, fragmented */
        {0x80, 1, "<a/>", "E(1002)"},        /* continuation of nothing */
        {0x09, 1, "", "E(1002)"},            /* fragmented ping */
        {0x81, 1, "\xff", "E(1007)"},        /* not UTF-8 */
        {0x81, 1, "<a>\xc3</a>", "E(1007)"}, /* cut character */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        frame(&b, rows[i].b0, rows[i].mask, rows[i].payload,
              strlen(rows[i].payload));
        text(&b, "<after/>");
        EXPECT(&b, rows[i].want);
        pl_buf_reset(&b);
    }
    /* Messages told apart: a new one before the last is over. */
    frame(&b, 0x01, 1, "<a>", 3);
    text(&b, "<b/>");
    EXPECT(&b, "E(1002)");
    pl_buf_reset(&b);
    /* A fragmented message that does not end in UTF-8. */
    frame(&b, 0x01, 1, "<a>", 3);
    frame(&b, 0x80, 1, "\xe2\x82", 2);
    EXPECT(&b, "E(1007)");
    pl_buf_reset(&b);
    /* A control frame over 125 bytes. */
    char pad[200];
    memset(pad, 'p', sizeof(pad));
    frame(&b, 0x89, 1, pad, 126);
    EXPECT(&b, "E(1002)");
    pl_buf_reset(&b);
    frame(&b, 0x89, 1, pad, 125);
    char want[135] = "P(";
    memcpy(want + 2, pad, 125);
    strcpy(want + 127, ")");
    EXPECT(&b, want);
    pl_buf_reset(&b);
    /* Lengths not in their shortest form, and the 64-bit MSB (§5.2). */
    static const unsigned char nonmin16[] = {0x81, 0xfe, 0, 125, 1, 2, 3, 4};
    static const unsigned char nonmin64[] = {0x81, 0xff, 0,    0, 0, 0, 0,
                                             0,    0xff, 0xff, 1, 2, 3, 4};
    static const unsigned char msb[] = {0x81, 0xff, 0x80, 0, 0, 0, 0,
                                        0,    0,    1,    1, 2, 3, 4};
    pl_buf_append(&b, nonmin16, sizeof(nonmin16));
    EXPECT(&b, "E(1002)");
    pl_buf_reset(&b);
    pl_buf_append(&b, nonmin64, sizeof(nonmin64));
    EXPECT(&b, "E(1002)");
    pl_buf_reset(&b);
    pl_buf_append(&b, msb, sizeof(msb));
    EXPECT(&b, "E(1002)");
    pl_buf_reset(&b);
    /* Too big: told by the header, before the payload arrives. */
    static const unsigned char big[] = {0x81, 0xfe, 0x03, 0xe9, 1, 2, 3, 4};
    pl_buf_append(&b, big, sizeof(big));
    EXPECT(&b, "E(1009)");
    pl_buf_reset(&b);
    char *full = malloc(MAX);
    memset(full, 'x', MAX);
    frame(&b, 0x81, 1, full, MAX); /* exactly the limit: fine */
    struct seen s = {0};
    struct pl_ws_in r = {0};
    CHECK_INT(pl_ws_in_feed(&r, pl_buf_str(&b).p, b.len, MAX, &ops, &s), 0);
    CHECK_INT(s.log.len, MAX + 3);
    pl_buf_reset(&s.log);
    pl_buf_reset(&b);
    frame(&b, 0x01, 1, full, 600);
    frame(&b, 0x89, 1, "x", 1);
    frame(&b, 0x80, 1, full, 401);
    CHECK_INT(pl_ws_in_feed(&r, pl_buf_str(&b).p, b.len, MAX, &ops, &s), 1009);
    CHECK_STR(pl_buf_cstr(&s.log), "P(x)");
    CHECK(r.part == NULL && r.done);
    /* Nothing more is read after a failure. */
    pl_buf_reset(&b);
    text(&b, "<a/>");
    CHECK_INT(pl_ws_in_feed(&r, pl_buf_str(&b).p, b.len, MAX, &ops, &s), 0);
    CHECK_STR(pl_buf_cstr(&s.log), "P(x)");
    free(full);
    pl_buf_reset(&s.log);
    pl_buf_reset(&b);
    pl_ws_in_free(&r);
}

void test_wsframe_header(void)
{
    unsigned char h[10];
    CHECK_INT(pl_ws_header(h, PL_WS_TEXT, 0), 2);
    CHECK(h[0] == 0x81 && h[1] == 0);
    CHECK_INT(pl_ws_header(h, PL_WS_PONG, 125), 2);
    CHECK(h[0] == 0x8a && h[1] == 125);
    CHECK_INT(pl_ws_header(h, PL_WS_TEXT, 126), 4);
    CHECK(h[1] == 126 && h[2] == 0 && h[3] == 126);
    CHECK_INT(pl_ws_header(h, PL_WS_TEXT, 0xffff), 4);
    CHECK(h[2] == 0xff && h[3] == 0xff);
    CHECK_INT(pl_ws_header(h, PL_WS_CLOSE, 0x10000), 10);
    CHECK(h[0] == 0x88 && h[1] == 127 && h[7] == 1 && h[8] == 0 && h[9] == 0 &&
          h[2] == 0);
}

void test_wsframe_utf8(void)
{
    static const struct {
        const char *s;
        int ok;
    } rows[] = {
        {"", 1},
        {"plain ASCII, longer than eight bytes", 1},
        {"\xc2\x80 \xdf\xbf \xe0\xa0\x80 \xef\xbf\xbf", 1},
        {"\xed\x9f\xbf \xee\x80\x80", 1},         /* around surrogates */
        {"\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf", 1}, /* U+10000, U+10FFFF */
        {"\xc0\x80", 0},                          /* overlong NUL */
        {"\xc1\xbf", 0},
        {"\xe0\x9f\xbf", 0},     /* overlong */
        {"\xf0\x8f\xbf\xbf", 0}, /* overlong */
        {"\xed\xa0\x80", 0},     /* U+D800 */
        {"\xed\xbf\xbf", 0},     /* U+DFFF */
        {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0},
        {"\xff", 0},
        {"\x80", 0},             /* continuation alone */
        {"abcdefg\xc3", 0},      /* cut */
        {"abcdefgh\xe2\x82", 0}, /* cut */
        {"\xe2\x82\x28", 0},     /* not a continuation */
        {"\xf0\x9f\x98\x80 smile", 1},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int ok = pl_ws_utf8_valid(rows[i].s, strlen(rows[i].s));
        if (ok != rows[i].ok) {
            fprintf(stderr, "  row %zu: %d, expected %d\n", i, ok, rows[i].ok);
            unit_failures++;
        }
    }
    /* Against libunistring, on strings mostly valid with a few bytes
     * changed (all lengths and places, ASCII runs between). */
    unsigned seed = 12345;
    static const char *pieces[] = {"a",
                                   "abcdefgh",
                                   "\xc3\xa9",
                                   "\xe2\x82\xac",
                                   "\xf0\x9f\x98\x80",
                                   "\xed\x9f\xbf",
                                   "\xf4\x8f\xbf\xbf"};
    int differ = 0;
    for (int t = 0; t < 20000; t++) {
        unsigned char s[64];
        size_t n = 0;
        while (n < 40) {
            seed = seed * 1103515245u + 12345u;
            const char *p = pieces[(seed >> 16) % 7];
            size_t l = strlen(p);
            memcpy(s + n, p, l);
            n += l;
        }
        seed = seed * 1103515245u + 12345u;
        if ((seed >> 16) % 4) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 16) % n;
            seed = seed * 1103515245u + 12345u;
            s[at] = (unsigned char)(seed >> 16);
        }
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % (n + 1);
        int mine = pl_ws_utf8_valid((const char *)s, len);
        int theirs = u8_check(s, len) == NULL;
        if (mine != theirs)
            differ++;
    }
    CHECK_INT(differ, 0);
}
