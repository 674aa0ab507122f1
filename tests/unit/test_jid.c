/*
 * test_jid.c - JID parsing and normalization (RFC 7622, RFC 8264/8265).
 *
 * Tables of valid and invalid addresses, starting with the examples of
 * RFC 7622 §3.5; then lengths, construction, copies, part-wise
 * preparation, and a seeded random pass checking that every accepted JID
 * parses back to itself.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/core/jid.h"
#include "unit.h"

/* Parses in[0..len) and checks the parts; NULL parts are absent. */
static void check_valid(const char *in, size_t len, const char *local,
                        const char *domain, const char *resource,
                        const char *full)
{
    struct pl_jid *j = NULL;
    int rc = pl_jid_parse((struct pl_str){in, len}, &j);
    if (rc != PL_OK) {
        fprintf(stderr, "  rejected \"%s\"\n", in);
        CHECK_INT(rc, PL_OK);
        return;
    }
    CHECK_STR(j->local, local);
    CHECK_STR(j->domain, domain);
    CHECK_STR(j->resource, resource);
    CHECK_STR(j->full, full);
    pl_jid_free(j);
}

static void check_invalid(const char *in, size_t len)
{
    struct pl_jid *j = (struct pl_jid *)&j; /* must stay untouched */
    int rc = pl_jid_parse((struct pl_str){in, len}, &j);
    if (rc != PL_EJID_MALFORMED)
        fprintf(stderr, "  accepted \"%s\"\n", in);
    CHECK_INT(rc, PL_EJID_MALFORMED);
    CHECK(j == (struct pl_jid *)&j);
}

void test_jid_valid(void)
{
    static const struct {
        const char *in, *local, *domain, *resource, *full;
    } cases[] = {
        /* RFC 7622 §3.5, Table 1. */
        {"juliet@example.com", "juliet", "example.com", NULL,
         "juliet@example.com"},
        {"juliet@example.com/foo", "juliet", "example.com", "foo",
         "juliet@example.com/foo"},
        {"juliet@example.com/foo bar", "juliet", "example.com", "foo bar",
         "juliet@example.com/foo bar"},
        {"juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar",
         "juliet@example.com/foo@bar"},
        {"foo\\20bar@example.com", "foo\\20bar", "example.com", NULL,
         "foo\\20bar@example.com"},
        {"fussball@example.com", "fussball", "example.com", NULL,
         "fussball@example.com"},
        {"fu\u00dfball@example.com", "fu\u00dfball", "example.com", NULL,
         "fu\u00dfball@example.com"},
        {"\u03c0@example.com", "\u03c0", "example.com", NULL,
         "\u03c0@example.com"},
        {"\u03a3@example.com/foo", "\u03c3", "example.com", "foo",
         "\u03c3@example.com/foo"},
        {"\u03c3@example.com/foo", "\u03c3", "example.com", "foo",
         "\u03c3@example.com/foo"},
        {"\u03c2@example.com/foo", "\u03c2", "example.com", "foo",
         "\u03c2@example.com/foo"},
        {"king@example.com/\u265a", "king", "example.com", "\u265a",
         "king@example.com/\u265a"},
        {"example.com", NULL, "example.com", NULL, "example.com"},
        {"example.com/foobar", NULL, "example.com", "foobar",
         "example.com/foobar"},
        {"a.example.com/b@example.net", NULL, "a.example.com", "b@example.net",
         "a.example.com/b@example.net"},
        /* Table 2 lists this as invalid, wrongly: RFC 7622 Errata 4560;
         * OpaqueString allows a leading space. */
        {"juliet@example.com/ foo", "juliet", "example.com", " foo",
         "juliet@example.com/ foo"},
        /* Case, width and trailing dot. */
        {"JULIET@Example.COM/Balcony", "juliet", "example.com", "Balcony",
         "juliet@example.com/Balcony"},
        {"\u03a3@example.com", "\u03c3", "example.com", NULL,
         "\u03c3@example.com"},
        {"King@example.com/\u265a", "king", "example.com", "\u265a",
         "king@example.com/\u265a"},
        {"juliet@example.com.", "juliet", "example.com", NULL,
         "juliet@example.com"},
        {"example.com./r", NULL, "example.com", "r", "example.com/r"},
        {"juliet@example.com\u3002", "juliet", "example.com", NULL,
         "juliet@example.com"},
        {"\uff2a\uff35\uff2c\uff29\uff25\uff34@example.com", "juliet",
         "example.com", NULL, "juliet@example.com"},
        {"\uff76@example.com", "\u30ab", "example.com", NULL,
         "\u30ab@example.com"},
        {"juliet@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "juliet",
         "example.com", NULL, "juliet@example.com"},
        {"a@example.com/HOME", "a", "example.com", "HOME",
         "a@example.com/HOME"},
        /* Internationalized domains are stored as lowercase U-labels. */
        {"FUSSBALL@FU\u00dfBALL.example", "fussball", "fu\u00dfball.example",
         NULL, "fussball@fu\u00dfball.example"},
        {"xn--fuball-cta.example", NULL, "fu\u00dfball.example", NULL,
         "fu\u00dfball.example"},
        {"XN--FUBALL-CTA.example", NULL, "fu\u00dfball.example", NULL,
         "fu\u00dfball.example"},
        {"\u03a3.example", NULL, "\u03c3.example", NULL, "\u03c3.example"},
        {"a-b.example", NULL, "a-b.example", NULL, "a-b.example"},
        {"localhost", NULL, "localhost", NULL, "localhost"},
        /* IP literals, stored in inet_ntop() form. */
        {"user@192.0.2.1", "user", "192.0.2.1", NULL, "user@192.0.2.1"},
        {"192.0.2.1./r", NULL, "192.0.2.1", "r", "192.0.2.1/r"},
        {"user@[::1]/r", "user", "[::1]", "r", "user@[::1]/r"},
        {"user@[2001:DB8:0:0:0:0:0:1]", "user", "[2001:db8::1]", NULL,
         "user@[2001:db8::1]"},
        {"[::ffff:192.0.2.1]", NULL, "[::ffff:192.0.2.1]", NULL,
         "[::ffff:192.0.2.1]"},
        /* Resourceparts: spaces, NFC, anything after the first slash. */
        {"a@example.com/x\u00a0y\u3000z", "a", "example.com", "x y z",
         "a@example.com/x y z"},
        {"a@example.com/e\u0301", "a", "example.com", "\u00e9",
         "a@example.com/\u00e9"},
        {"a@example.com/d/e@f", "a", "example.com", "d/e@f",
         "a@example.com/d/e@f"},
        {"a@example.com/\u20ac \u00bd \u2163", "a", "example.com",
         "\u20ac \u00bd \u2163", "a@example.com/\u20ac \u00bd \u2163"},
        {"a@example.com/@", "a", "example.com", "@", "a@example.com/@"},
        /* Localparts: ASCII punctuation, scripts, contextual rules. */
        {"a!#$%*+-.=?^_`{|}~b@example.com", "a!#$%*+-.=?^_`{|}~b",
         "example.com", NULL, "a!#$%*+-.=?^_`{|}~b@example.com"},
        {"\u00c9LODIE@example.com", "\u00e9lodie", "example.com", NULL,
         "\u00e9lodie@example.com"},
        {"E\u0301lodie@example.com", "\u00e9lodie", "example.com", NULL,
         "\u00e9lodie@example.com"},
        {"col\u00b7legi@example.com", "col\u00b7legi", "example.com", NULL,
         "col\u00b7legi@example.com"},
        {"\u0627\u0644\u0639\u0631\u0628\u064a\u0629@example.com",
         "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "example.com", NULL,
         "\u0627\u0644\u0639\u0631\u0628\u064a\u0629@example.com"},
        {"\u05d0\u05f3@example.com", "\u05d0\u05f3", "example.com", NULL,
         "\u05d0\u05f3@example.com"},
        {"\u0915\u094d\u200d\u0937@example.com", "\u0915\u094d\u200d\u0937",
         "example.com", NULL, "\u0915\u094d\u200d\u0937@example.com"},
        {"\u30a2\u30fb\u30a4@example.com", "\u30a2\u30fb\u30a4", "example.com",
         NULL, "\u30a2\u30fb\u30a4@example.com"},
        {"\u4e2d\u6587@example.com", "\u4e2d\u6587", "example.com", NULL,
         "\u4e2d\u6587@example.com"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_valid(cases[i].in, strlen(cases[i].in), cases[i].local,
                    cases[i].domain, cases[i].resource, cases[i].full);
}

void test_jid_invalid(void)
{
    static const char *const cases[] = {
        /* RFC 7622 §3.5, Table 2 (less the leading space, see above). */
        "\"juliet\"@example.com",
        "foo bar@example.com",
        "@example.com/",
        "henry\u2163@example.com", /* ROMAN NUMERAL FOUR: HasCompat */
        "\u265a@example.com",      /* BLACK CHESS KING: a symbol */
        "juliet@",
        "/foobar",
        /* Empty parts. */
        "",
        "@",
        "/",
        "@/",
        "@example.com",
        "example.com/",
        "juliet@example.com/",
        "juliet@/foo",
        ".",
        "juliet@.",
        /* Localparts: RFC 7622 §3.3.1 exclusions, IdentifierClass. */
        "a:b@example.com",
        "a<b@example.com",
        "a>b@example.com",
        "a&b@example.com",
        "a'b@example.com",
        "a\uff20b@example.com", /* FULLWIDTH COMMERCIAL AT maps to "@" */
        "a\uff0fb@example.com", /* FULLWIDTH SOLIDUS maps to "/" */
        "a\u20acb@example.com", /* symbol */
        "a\u00a0b@example.com", /* NO-BREAK SPACE */
        "a\u3000b@example.com", /* IDEOGRAPHIC SPACE */
        "jul\x01iet@example.com",
        "a\tb@example.com",
        "a\x7f@example.com",
        "\u00bd@example.com",   /* VULGAR FRACTION ONE HALF: HasCompat */
        "\u1100@example.com",   /* a lone old Hangul jamo */
        "a\u00adb@example.com", /* SOFT HYPHEN: default ignorable */
        "a\u200bb@example.com", /* ZERO WIDTH SPACE */
        "a\u200db@example.com", /* ZWJ without a virama before it */
        "a\u200cb@example.com", /* ZWNJ without a joining context */
        "a\u00b7b@example.com", /* MIDDLE DOT outside "l·l" */
        "\u00b7l@example.com",
        "\u30fb@example.com",       /* KATAKANA MIDDLE DOT alone */
        "\u0660\u06f0@example.com", /* mixed Arabic-Indic digit sets */
        "\u05f3@example.com",       /* GERESH without a Hebrew letter */
        "a\u05d0@example.com",      /* Bidi Rule: LTR and RTL mixed */
        "\u05d0a@example.com",
        "\u0628\u06611@example.com", /* Bidi Rule 4: AN and EN */
        "\ue000@example.com",        /* private use */
        "\u0378@example.com",        /* unassigned */
        "\ufdd0@example.com",        /* noncharacter */
        "\u2028@example.com",        /* LINE SEPARATOR */
        /* Domainparts. */
        "juliet@exa mple.com",
        "juliet@-example.com",
        "juliet@example-.com",
        "juliet@example..com",
        "juliet@.example.com",
        "juliet@example.com..",
        "juliet@a_b.com",
        "juliet@a\uff3fb.com", /* FULLWIDTH LOW LINE maps to "_" */
        "juliet@exa\uff0e\uff0emple.com",
        "a@b@c",
        "juliet@example.com:5222",
        "juliet@\u2603.com",
        "juliet@xn--zz.example",
        "juliet@ab--cd.example",
        "juliet@1.2.3.999",
        "juliet@256.1.1.1",
        "juliet@01.2.3.4",
        "juliet@1.2.3",
        "juliet@123",
        "juliet@::1",
        "juliet@[::1",
        "juliet@[]",
        "juliet@[1.2.3.4]",
        "juliet@[fe80::1%eth0]",
        "juliet@[::1]x",
        "juliet@[::g]",
        "juliet@a.[::1]",
        "juliet@\u0660\u0661.com",
        /* Resourceparts: FreeformClass. */
        "juliet@example.com/a\x07",
        "juliet@example.com/a\tb",
        "juliet@example.com/a\nb",
        "juliet@example.com/\u0378",
        "juliet@example.com/\ue000",
        "juliet@example.com/\uffff",
        "juliet@example.com/a\u200bb",
        "juliet@example.com/a\u2029b",
        /* Not UTF-8. */
        "\xff@example.com",
        "juliet@example.com/\xc0\xaf",
        "juliet@example.com/\xed\xa0\x80",
        "juliet@example.com/\xf4\x90\x80\x80",
        "juliet@example.com/\xe2\x82",
        "juliet@exam\x80ple.com",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_invalid(cases[i], strlen(cases[i]));

    /* Embedded NUL bytes, in each part. */
    check_invalid("juliet\0x@example.com", 20);
    check_invalid("juliet@example.com\0", 19);
    check_invalid("juliet@example.com/a\0b", 22);
    check_invalid("\0", 1);
    /* A NULL pointer with or without a length. */
    check_invalid(NULL, 0);
}

/* Parses local@domain/resource built from repeated units. */
static int parse_sized(const char *unit, size_t count, int where)
{
    size_t ul = strlen(unit);
    size_t n = ul * count + 64;
    char *s = malloc(n);
    size_t off = 0;
    if (where == 1) {
        memcpy(s, "a@", 2);
        off = 2;
    }
    if (where == 2) {
        memcpy(s, "a@example.com/", 14);
        off = 14;
    }
    for (size_t i = 0; i < count; i++, off += ul)
        memcpy(s + off, unit, ul);
    if (where == 0) {
        memcpy(s + off, "@example.com", 12);
        off += 12;
    }
    struct pl_jid *j = NULL;
    int rc = pl_jid_parse((struct pl_str){s, off}, &j);
    pl_jid_free(j);
    free(s);
    return rc;
}

void test_jid_lengths(void)
{
    enum {
        LOCAL,
        DOMAIN,
        RESOURCE
    };
    /* Each part is 1..1023 bytes after preparation (RFC 7622 §3.1). */
    CHECK_INT(parse_sized("a", 1023, LOCAL), PL_OK);
    CHECK_INT(parse_sized("a", 1024, LOCAL), PL_EJID_MALFORMED);
    CHECK_INT(parse_sized("a", 1023, RESOURCE), PL_OK);
    CHECK_INT(parse_sized("a", 1024, RESOURCE), PL_EJID_MALFORMED);
    CHECK_INT(parse_sized("\u265a", 341, RESOURCE), PL_OK);
    CHECK_INT(parse_sized("\u265a", 342, RESOURCE), PL_EJID_MALFORMED);
    /* Counted after width mapping: 3069 input bytes, 1023 prepared. */
    CHECK_INT(parse_sized("\uff41", 1023, LOCAL), PL_OK);
    CHECK_INT(parse_sized("\uff41", 1024, LOCAL), PL_EJID_MALFORMED);
    CHECK_INT(parse_sized("a.", 512, DOMAIN), PL_EJID_MALFORMED);
    CHECK_INT(parse_sized("a", 100000, RESOURCE), PL_EJID_MALFORMED);
    CHECK_INT(parse_sized("a", 64, DOMAIN), PL_EJID_MALFORMED);
    CHECK_INT(parse_sized("a", 63, DOMAIN), PL_OK);

    /* DNS bounds the A-label form to 253 bytes. */
    char name[300];
    memset(name, 'a', sizeof(name));
    for (size_t i = 63; i < sizeof(name); i += 64)
        name[i] = '.';
    struct pl_jid *j = NULL;
    CHECK_INT(pl_jid_parse((struct pl_str){name, 253}, &j), PL_OK);
    CHECK(j && strlen(j->domain) == 253);
    pl_jid_free(j);
    CHECK_INT(pl_jid_parse((struct pl_str){name, 254}, &j), PL_EJID_MALFORMED);
}

void test_jid_make(void)
{
    struct pl_jid *j = NULL;
    CHECK_INT(pl_jid_make("JULIET", "Example.COM.", "Balcony", &j), PL_OK);
    CHECK_STR(j->local, "juliet");
    CHECK_STR(j->domain, "example.com");
    CHECK_STR(j->resource, "Balcony");
    CHECK_STR(j->bare, "juliet@example.com");
    CHECK_STR(j->full, "juliet@example.com/Balcony");
    pl_jid_free(j);

    CHECK_INT(pl_jid_make(NULL, "example.com", NULL, &j), PL_OK);
    CHECK(j->local == NULL && j->resource == NULL);
    CHECK_STR(j->bare, "example.com");
    CHECK_STR(j->full, "example.com");
    pl_jid_free(j);

    /* A resourcepart may hold "/" and "@"; a localpart may not. */
    CHECK_INT(pl_jid_make(NULL, "example.com", "a/b@c", &j), PL_OK);
    CHECK_STR(j->full, "example.com/a/b@c");
    pl_jid_free(j);

    static const struct {
        const char *local, *domain, *resource;
    } bad[] = {
        {"", "example.com", NULL},
        {"a", "example.com", ""},
        {"a", "", NULL},
        {"a@b", "example.com", NULL},
        {"a/b", "example.com", NULL},
        {"a", "example.com/r", NULL},
        {"a", "b@example.com", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = (struct pl_jid *)&j;
        CHECK_INT(pl_jid_make(bad[i].local, bad[i].domain, bad[i].resource, &j),
                  PL_EJID_MALFORMED);
        CHECK(j == (struct pl_jid *)&j);
    }
}

void test_jid_bare_dup(void)
{
    struct pl_jid *j = NULL;
    CHECK_INT(pl_jid_parse(PL_STR("Romeo@Example.net/Orchard"), &j), PL_OK);
    struct pl_jid *b = pl_jid_bare(j);
    CHECK(b != j);
    CHECK_STR(b->local, "romeo");
    CHECK_STR(b->domain, "example.net");
    CHECK(b->resource == NULL);
    CHECK_STR(b->bare, "romeo@example.net");
    CHECK_STR(b->full, "romeo@example.net");

    struct pl_jid *d = pl_jid_dup(j);
    CHECK(d != j && d->full != j->full);
    CHECK_STR(d->local, j->local);
    CHECK_STR(d->domain, j->domain);
    CHECK_STR(d->resource, j->resource);
    CHECK_STR(d->bare, j->bare);
    CHECK_STR(d->full, j->full);
    pl_jid_free(j);
    CHECK_STR(d->full, "romeo@example.net/Orchard");

    struct pl_jid *bb = pl_jid_bare(b);
    CHECK_STR(bb->full, "romeo@example.net");
    pl_jid_free(bb);
    pl_jid_free(b);
    pl_jid_free(d);

    CHECK_INT(pl_jid_parse(PL_STR("example.net/x"), &j), PL_OK);
    b = pl_jid_bare(j);
    CHECK(b->local == NULL && b->resource == NULL);
    CHECK_STR(b->full, "example.net");
    d = pl_jid_dup(b);
    CHECK_STR(d->bare, "example.net");
    pl_jid_free(d);
    pl_jid_free(b);
    pl_jid_free(j);
    pl_jid_free(NULL);
}

void test_jid_prep(void)
{
    static const struct {
        int part;             /* 0 local, 1 domain, 2 resource */
        const char *in, *out; /* out NULL: PL_EJID_MALFORMED */
    } cases[] = {
        {0, "\uff2a\uff35\uff2c\uff29\uff25\uff34", "juliet"},
        {0, "Juliet", "juliet"},
        {0, "\u212bngstr\u00f6m", "\u00e5ngstr\u00f6m"},
        {0, "\u0130", "i\u0307"},
        {0, "", NULL},
        {0, "a b", NULL},
        {0, "a@b", NULL},
        {1, "EXAMPLE.com.", "example.com"},
        {1, "\u00e9xample.com", "\u00e9xample.com"},
        {1, "xn--xample-9ua.com", "\u00e9xample.com"},
        {1, "[0:0::1]", "[::1]"},
        {1, "", NULL},
        {1, "a/b", NULL},
        {2, "\u2003x", " x"},
        {2, "Cafe\u0301", "Caf\u00e9"},
        {2, "\uff2a", "\uff2a"}, /* OpaqueString does no width mapping */
        {2, "", NULL},
        {2, "\x01", NULL},
    };
    int (*const fns[])(struct pl_str, char **) = {pl_jid_prep_local,
                                                  pl_jid_prep_domain,
                                                  pl_jid_prep_resource};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = (char *)&out;
        int rc = fns[cases[i].part](pl_str_c(cases[i].in), &out);
        if (!cases[i].out) {
            CHECK_INT(rc, PL_EJID_MALFORMED);
            CHECK(out == (char *)&out);
            continue;
        }
        CHECK_INT(rc, PL_OK);
        if (rc != PL_OK)
            continue;
        CHECK_STR(out, cases[i].out);
        /* Preparing a prepared string changes nothing. */
        char *again = NULL;
        CHECK_INT(fns[cases[i].part](pl_str_c(out), &again), PL_OK);
        CHECK_STR(again, out);
        pl_free(again);
        pl_free(out);
    }
    char *out = NULL;
    CHECK_INT(pl_jid_prep_local((struct pl_str){NULL, 0}, &out),
              PL_EJID_MALFORMED);
    CHECK_INT(pl_jid_prep_resource((struct pl_str){"a\0b", 3}, &out),
              PL_EJID_MALFORMED);
    CHECK(out == NULL);
}

/* A small deterministic generator (an LCG), so failures reproduce. */
static uint32_t next(uint32_t *seed, uint32_t n)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) % n;
}

#define COUNT(a) ((uint32_t)(sizeof(a) / sizeof((a)[0])))

/* Pieces a part is usually made of, and pieces that usually break it. */
/* clang-format off */
static const char *const good[] = {
    "a", "Z", "0", "l", "-", ".", "\\20", "\uff21", "\u00df", "\u03a3",
    "\u03c2", "\u00e9", "E\u0301", "\u0627", "\u05d0", "\u30a2",
    "\u4e2d", "\u212a", "\u0130", "\uff76\uff9e", "\u0915\u094d",
    "l\u00b7l",
};
static const char *const bad[] = {
    " ", "_", ":", "@", "/", "\u200c", "\u200d", "\u05f3", "\u0661",
    "\u06f1", "\u00b7", "\u30fb", "\u3000", "\u00a0", "\u0301",
    "\u2163", "\u265a", "\ufb01", "\u1100", "\xff", "\xc3", "", "\x01",
    "\ufffd", "\U0001f600", "\u00ad",
};
static const char *const domains[] = {
    "example.com", "EXAMPLE.com.", "[::1]", "[::FFFF:1.2.3.4]", "192.0.2.1",
    "xn--fuball-cta.example", "\u00df.de", "\uff25.com", "\u00e9.fr",
    "\u0627\u0644.eg", "localhost", "a..b", "\u3002", ".", "xn--", "-a",
    "a-", "1", "[", "]", "\u2603", "a_b", "\u0661", "@", "/",
};
/* clang-format on */

/* Appends up to max pieces, one in eight of them from bad, to buf. */
static size_t append(char *buf, size_t len, size_t cap, uint32_t *seed,
                     uint32_t min, uint32_t max)
{
    uint32_t count = min + next(seed, max - min + 1);
    for (uint32_t k = 0; k < count; k++) {
        const char *p = next(seed, 8) ? good[next(seed, COUNT(good))]
                                      : bad[next(seed, COUNT(bad))];
        size_t pl = p[0] ? strlen(p) : 1; /* "" stands for a NUL byte */
        if (len + pl > cap)
            break;
        memcpy(buf + len, p, pl);
        len += pl;
    }
    return len;
}

/*
 * Random addresses from pieces chosen to hit the separators, mappings and
 * refusals: whatever comes back must be consistent, and an accepted JID
 * must parse back to itself (preparation is idempotent).
 */
void test_jid_random(void)
{
    uint32_t seed = 12345;
    char buf[160];
    int accepted = 0, with_local = 0, with_resource = 0;
    for (int iter = 0; iter < 30000; iter++) {
        size_t len = 0;
        uint32_t shape = next(&seed, 8);
        if (shape == 0) { /* anything at all */
            len = append(buf, 0, sizeof(buf), &seed, 0, 16);
        } else {
            if (shape & 1) {
                len = append(buf, len, 40, &seed, 1, 4);
                buf[len++] = '@';
            }
            /* Mostly one domain, sometimes a broken pair. */
            for (uint32_t k = next(&seed, 6) ? 1 : 2; k > 0; k--) {
                const char *d = domains[next(&seed, COUNT(domains))];
                memcpy(buf + len, d, strlen(d));
                len += strlen(d);
            }
            if (shape & 2) {
                buf[len++] = '/';
                len = append(buf, len, sizeof(buf), &seed, 1, 6);
            }
        }
        struct pl_jid *j = NULL;
        int rc = pl_jid_parse((struct pl_str){buf, len}, &j);
        if (rc != PL_OK) {
            CHECK_INT(rc, PL_EJID_MALFORMED);
            CHECK(j == NULL);
            continue;
        }
        accepted++;
        with_local += j->local != NULL;
        with_resource += j->resource != NULL;
        CHECK(j->domain && *j->domain);
        CHECK(strncmp(j->full, j->bare, strlen(j->bare)) == 0);
        CHECK(!j->local || !strpbrk(j->local, "@/"));
        struct pl_jid *again = NULL;
        CHECK_INT(pl_jid_parse(pl_str_c(j->full), &again), PL_OK);
        if (again) {
            CHECK_STR(again->full, j->full);
            CHECK_STR(again->local, j->local);
            CHECK_STR(again->resource, j->resource);
        }
        pl_jid_free(again);
        pl_jid_free(j);
    }
    /* The generator must keep reaching every part. */
    CHECK(accepted > 5000);
    CHECK(with_local > 2000);
    CHECK(with_resource > 2000);
}
