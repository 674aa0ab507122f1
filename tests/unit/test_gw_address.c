/*
 * test_gw_address.c - XEP-0106 escaping with the XEP's own examples
 * (§5.1, the table of transformations), the refusals of §3.2, and E.164
 * normalization.
 */
#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/gateway/address.h"
#include "unit.h"

/* XEP-0106 §5.1: unescaped localpart, escaped localpart. */
static const struct {
    const char *raw, *escaped;
} xep[] = {
    {"space cadet", "space\\20cadet"},
    {"call me \"ishmael\"", "call\\20me\\20\\22ishmael\\22"},
    {"at&t guy", "at\\26t\\20guy"},
    {"d'artagnan", "d\\27artagnan"},
    {"/.fanboy", "\\2f.fanboy"},
    {"::foo::", "\\3a\\3afoo\\3a\\3a"},
    {"<foo>", "\\3cfoo\\3e"},
    {"user@host", "user\\40host"},
    {"c:\\net", "c\\3a\\net"},
    {"c:\\\\net", "c\\3a\\\\net"},
    {"c:\\cool stuff", "c\\3a\\cool\\20stuff"},
    {"c:\\5commas", "c\\3a\\5c5commas"},
    {"alice@example.org", "alice\\40example.org"},
};

void test_gw_escape(void)
{
    for (size_t i = 0; i < sizeof(xep) / sizeof(xep[0]); i++) {
        char *e = NULL, *u = NULL;
        CHECK_INT(pl_gw_escape(xep[i].raw, &e), PL_OK);
        CHECK_STR(e, xep[i].escaped);
        CHECK_INT(pl_gw_unescape(xep[i].escaped, &u), PL_OK);
        CHECK_STR(u, xep[i].raw);
        pl_free(e);
        pl_free(u);
    }
    /* §3.2: no leading or trailing space; nothing empty. */
    char *r = (char *)"untouched";
    CHECK_INT(pl_gw_escape(" lead", &r), PL_EINVAL);
    CHECK_INT(pl_gw_escape("trail ", &r), PL_EINVAL);
    CHECK_INT(pl_gw_escape("", &r), PL_EINVAL);
    CHECK_STR(r, "untouched");
    /* §3.3: only the ten sequences are unescaped. */
    CHECK_INT(pl_gw_unescape("a\\5zb\\", &r), PL_OK);
    CHECK_STR(r, "a\\5zb\\");
    pl_free(r);
    CHECK_INT(pl_gw_unescape("\\5c\\40", &r), PL_OK);
    CHECK_STR(r, "\\@");
    pl_free(r);
}

void test_gw_e164(void)
{
    static const struct {
        const char *in, *cc, *out; /* out NULL: refused */
    } t[] = {
        {"+15551234567", NULL, "+15551234567"},
        {"+1 (555) 123-4567", NULL, "+15551234567"},
        {"0015551234567", NULL, "+15551234567"},
        {"0612345678", "33", "+33612345678"},
        {"06.12.34.56.78", "33", "+33612345678"},
        {"5551234567", "1", "+15551234567"},
        {"0612345678", NULL, NULL},        /* national, no default */
        {"+1555abc", NULL, NULL},          /* letters */
        {"+", NULL, NULL},                 /* nothing */
        {"+ 1555123456", NULL, NULL},      /* separator after '+' */
        {"+0123456789", NULL, NULL},       /* no country code starts with 0 */
        {"+1234567890123456", NULL, NULL}, /* 16 digits */
        {"+12345", NULL, NULL},            /* too short */
        {"12345678", "4x", NULL},          /* bad default */
        {"+1555;123456", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *r = NULL;
        int rc = pl_gw_e164(t[i].in, t[i].cc, &r);
        if (t[i].out) {
            CHECK_INT(rc, PL_OK);
            CHECK_STR(r, t[i].out);
        } else {
            if (rc != PL_EINVAL)
                fprintf(stderr, "  accepted \"%s\"\n", t[i].in);
            CHECK_INT(rc, PL_EINVAL);
            CHECK(r == NULL);
        }
        pl_free(r);
    }
}
