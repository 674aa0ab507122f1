/*
 * test_sip_reg.c - the registrar's rules (src/sip/binding.c): RFC 3261
 * §10.3 steps 6 to 8 as pure functions: expiry from the Contact parameter,
 * the Expires header or the default, the minimum (423) and the maximum,
 * "*" (400 unless alone with Expires 0), the Call-ID/CSeq order (500), the
 * per-AOR limit (403), matching by key; delta-seconds parsing; Contact
 * keys (instance first, URI with scheme and host folded) and resources.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "sip/sip_int.h"
#include "unit.h"

static const struct sip_reg_limits LIM = {3600, 60, 7200, 3};

void test_sip_reg_expiry(void)
{
    static const struct {
        long param, header; /* -1: absent */
        int code;
        long granted;
    } rows[] = {
        {-1, -1, 200, 3600},  /* the default */
        {-1, 120, 200, 120},  /* the header */
        {300, 120, 200, 300}, /* the parameter wins (§10.2.1.1) */
        {-1, 0, 200, 0},      /* removal of a binding it does not have */
        {59, -1, 423, 0},     /* below the minimum */
        {-1, 1, 423, 0},       {60, -1, 200, 60}, /* exactly the minimum */
        {9000, -1, 200, 7200},                    /* cut to the maximum */
        {0, 3000, 200, 0}, /* the parameter 0 wins over the header */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct sip_reg_want w = {"u:sip:a@h", rows[i].param};
        struct sip_reg_op op = {0, -1};
        int code = pl__sip_reg_plan(NULL, 0, &w, 1, 0, rows[i].header, "c", 1,
                                    &LIM, &op);
        CHECK_INT(code, rows[i].code);
        if (code == 200) {
            CHECK_INT(op.expires, rows[i].granted);
            CHECK_INT(op.have, -1);
        }
    }
}

void test_sip_reg_bindings(void)
{
    struct sip_reg_have have[] = {
        {"u:sip:a@h:1", "call-1", 5},
        {"u:sip:a@h:2", "call-2", 7},
    };
    struct sip_reg_op ops[4];
    /* A refresh with the same Call-ID and a higher CSeq, and a new one. */
    struct sip_reg_want w1[] = {{"u:sip:a@h:1", -1}, {"u:sip:a@h:3", 100}};
    CHECK_INT(pl__sip_reg_plan(have, 2, w1, 2, 0, -1, "call-1", 6, &LIM, ops),
              200);
    CHECK_INT(ops[0].have, 0);
    CHECK_INT(ops[0].expires, 3600);
    CHECK_INT(ops[1].have, -1);
    CHECK_INT(ops[1].expires, 100);
    /* Same Call-ID, CSeq not higher: 500, for equal and lower. */
    CHECK_INT(pl__sip_reg_plan(have, 2, w1, 1, 0, -1, "call-1", 5, &LIM, ops),
              500);
    CHECK_INT(pl__sip_reg_plan(have, 2, w1, 1, 0, -1, "call-1", 4, &LIM, ops),
              500);
    /* Another Call-ID: any CSeq (a UA that restarted). */
    CHECK_INT(pl__sip_reg_plan(have, 2, w1, 1, 0, -1, "call-9", 1, &LIM, ops),
              200);
    /* Two new ones make 4 > 3: 403; one of them removing another: 200. */
    struct sip_reg_want w2[] = {{"u:sip:a@h:3", -1}, {"u:sip:a@h:4", -1}};
    CHECK_INT(pl__sip_reg_plan(have, 2, w2, 2, 0, -1, "x", 1, &LIM, ops), 403);
    struct sip_reg_want w3[] = {{"u:sip:a@h:3", -1},
                                {"u:sip:a@h:4", -1},
                                {"u:sip:a@h:2", 0}};
    CHECK_INT(pl__sip_reg_plan(have, 2, w3, 3, 0, -1, "x", 1, &LIM, ops), 200);
    CHECK_INT(ops[2].have, 1);
    CHECK_INT(ops[2].expires, 0);
    /* The same contact twice in one request: the second is ignored. */
    struct sip_reg_want w4[] = {{"u:sip:a@h:3", -1}, {"u:sip:a@h:3", 60}};
    CHECK_INT(pl__sip_reg_plan(have, 2, w4, 2, 0, -1, "x", 1, &LIM, ops), 200);
    CHECK_INT(ops[0].have, -1);
    CHECK_INT(ops[1].have, -2);
    /* A query: no contacts. */
    CHECK_INT(pl__sip_reg_plan(have, 2, NULL, 0, 0, -1, "x", 1, &LIM, ops),
              200);
}

void test_sip_reg_star(void)
{
    struct sip_reg_have have[] = {
        {"u:sip:a@h:1", "call-1", 5},
        {"u:sip:a@h:2", "call-2", 7},
    };
    struct sip_reg_op ops[2];
    struct sip_reg_want w = {"u:sip:a@h:1", -1};
    /* "*" with another contact, without Expires, with Expires 60: 400. */
    CHECK_INT(pl__sip_reg_plan(have, 2, &w, 1, 1, 0, "z", 1, &LIM, ops), 400);
    CHECK_INT(pl__sip_reg_plan(have, 2, NULL, 0, 1, -1, "z", 1, &LIM, ops),
              400);
    CHECK_INT(pl__sip_reg_plan(have, 2, NULL, 0, 1, 60, "z", 1, &LIM, ops),
              400);
    /* Alone with Expires 0: every binding goes. */
    CHECK_INT(pl__sip_reg_plan(have, 2, NULL, 0, 1, 0, "z", 1, &LIM, ops), 200);
    CHECK_INT(ops[0].have, 0);
    CHECK_INT(ops[1].have, 1);
    CHECK_INT(ops[0].expires + ops[1].expires, 0);
    /* One binding's Call-ID with a CSeq not above its own: 500. */
    CHECK_INT(pl__sip_reg_plan(have, 2, NULL, 0, 1, 0, "call-2", 7, &LIM, ops),
              500);
    CHECK_INT(pl__sip_reg_plan(have, 2, NULL, 0, 1, 0, "call-2", 8, &LIM, ops),
              200);
}

void test_sip_reg_values(void)
{
    CHECK_INT(pl__sip_delta_seconds("3600"), 3600);
    CHECK_INT(pl__sip_delta_seconds(" 0 "), 0);
    CHECK_INT(pl__sip_delta_seconds("\"60\""), 60);
    CHECK_INT(pl__sip_delta_seconds("99999999999"), -1); /* 11 digits */
    CHECK_INT(pl__sip_delta_seconds("4294967296"), 4294967295L);
    CHECK_INT(pl__sip_delta_seconds("-1"), -1);
    CHECK_INT(pl__sip_delta_seconds("12a"), -1);
    CHECK_INT(pl__sip_delta_seconds(""), -1);
    CHECK_INT(pl__sip_delta_seconds(NULL), -1);

    pl__sip_osip_init();
    static const struct {
        const char *contact, *key;
    } rows[] = {
        {"<SIP:Alice@Example.COM:5060;transport=TCP;ob>;expires=60",
         "u:sip:Alice@example.com:5060;transport=tcp"},
        {"<sip:alice@example.com>", "u:sip:alice@example.com"},
        {"<sip:alice@192.0.2.1:5070>;+sip.instance="
         "\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"",
         "i:\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\""},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        osip_contact_t *c = NULL;
        osip_contact_init(&c);
        CHECK_INT(osip_contact_parse(c, rows[i].contact), 0);
        char *k = pl__sip_contact_key(c);
        CHECK_STR(k, rows[i].key);
        pl_free(k);
        osip_contact_free(c);
    }
    char a[13], b[13], c[13];
    pl__sip_reg_resource("u:sip:alice@example.com", a);
    pl__sip_reg_resource("u:sip:alice@example.com", b);
    pl__sip_reg_resource("u:sip:alice@example.org", c);
    CHECK_STR(a, b);
    CHECK(strcmp(a, c) != 0);
    CHECK(strncmp(a, "sip-", 4) == 0 && strlen(a) == 12);
}
