/*
 * test_comp_sm.c - the XEP-0198 state of a component link
 * (src/xmpp/comp_sm.c): the stanza FIFO, acknowledgements (with the
 * 32-bit wrap and a count too high), and inbound completions out of order.
 */
#include <string.h>

#include "../../src/xmpp/comp_sm.h"
#include "error.h"
#include "unit.h"

static struct pl_stanza *msg(const char *id)
{
    struct pl_stanza *st = pl_stanza_new("message", "jabber:client");
    pl_stanza_set_attr(st, "id", id);
    return st;
}

void test_comp_sm_fifo(void)
{
    struct pl_csq q = {0};
    char id[16];
    CHECK(pl_csq_front(&q) == NULL);
    CHECK(pl_csq_pop(&q, NULL) == NULL);
    /* Pushes and pops interleaved so the ring wraps and then grows. */
    int next_in = 0, next_out = 0;
    for (int round = 0; round < 50; round++) {
        for (int k = 0; k < 7; k++) {
            snprintf(id, sizeof(id), "m%d", next_in);
            struct pl_stanza *st = msg(id);
            pl_csq_push(&q, st, (uint64_t)next_in);
            pl_stanza_unref(st);
            next_in++;
        }
        for (int k = 0; k < 5; k++) {
            uint64_t t = 0;
            struct pl_stanza *st = pl_csq_pop(&q, &t);
            snprintf(id, sizeof(id), "m%d", next_out);
            CHECK_STR(pl_stanza_attr(st, "id"), id);
            CHECK_INT(t, next_out);
            pl_stanza_unref(st);
            next_out++;
        }
    }
    CHECK_INT(q.len, 100);
    CHECK_INT(pl_csq_front(&q)->t, next_out);
    pl_csq_clear(&q);
    CHECK_INT(q.len, 0);
    CHECK(pl_csq_front(&q) == NULL);
}

void test_comp_sm_ack(void)
{
    struct pl_csm sm = {0};
    pl_csm_enable(&sm);
    char id[16];
    for (int i = 1; i <= 5; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        struct pl_stanza *st = msg(id);
        pl_csm_sent(&sm, st, 0);
        pl_stanza_unref(st);
    }
    CHECK_INT(pl_csm_unacked(&sm), 5);
    CHECK_INT(pl_csm_ack(&sm, 0), PL_OK); /* nothing new */
    CHECK_INT(pl_csm_unacked(&sm), 5);
    CHECK_INT(pl_csm_ack(&sm, 3), PL_OK);
    CHECK_INT(pl_csm_unacked(&sm), 2);
    CHECK_STR(pl_stanza_attr(pl_csq_front(&sm.unacked)->st, "id"), "s4");
    CHECK_INT(pl_csm_ack(&sm, 3), PL_OK); /* repeated */
    CHECK_INT(pl_csm_unacked(&sm), 2);
    CHECK_INT(pl_csm_ack(&sm, 6), PL_EINVAL); /* more than was sent */
    CHECK_INT(pl_csm_unacked(&sm), 2);
    CHECK_INT(pl_csm_ack(&sm, 2), PL_EINVAL); /* backwards */
    CHECK_INT(pl_csm_ack(&sm, 5), PL_OK);
    CHECK_INT(pl_csm_unacked(&sm), 0);
    pl_csm_free(&sm);

    /* The counter wraps at 2^32: h goes 4294967295 -> 0 -> 1. */
    struct pl_csm w = {0};
    pl_csm_enable(&w);
    w.out_count = UINT32_MAX - 1;
    for (int i = 0; i < 3; i++) {
        struct pl_stanza *st = msg("w");
        pl_csm_sent(&w, st, 0);
        pl_stanza_unref(st);
    }
    CHECK_INT(w.out_count, 1);
    CHECK_INT(pl_csm_ack(&w, UINT32_MAX), PL_OK);
    CHECK_INT(pl_csm_unacked(&w), 2);
    CHECK_INT(pl_csm_ack(&w, 2), PL_EINVAL);
    CHECK_INT(pl_csm_ack(&w, 1), PL_OK);
    CHECK_INT(pl_csm_unacked(&w), 0);
    pl_csm_free(&w);
}

void test_comp_sm_inbound(void)
{
    struct pl_csm sm = {0};
    pl_csm_enable(&sm);
    uint32_t s[200];
    for (int i = 0; i < 200; i++)
        s[i] = pl_csm_in_begin(&sm);
    CHECK_INT(s[0], 1);
    CHECK_INT(s[199], 200);
    CHECK_INT(sm.in_handled, 0);
    /* Out of order: 2 and 3 first, h stays 0 until 1 is done. */
    CHECK_INT(pl_csm_in_done(&sm, s[2]), 0);
    CHECK_INT(pl_csm_in_done(&sm, s[1]), 0);
    CHECK_INT(sm.in_handled, 0);
    CHECK_INT(pl_csm_in_done(&sm, s[0]), 1);
    CHECK_INT(sm.in_handled, 3);
    /* A number already counted, or never given, changes nothing. */
    CHECK_INT(pl_csm_in_done(&sm, s[0]), 0);
    CHECK_INT(pl_csm_in_done(&sm, 999), 0);
    CHECK_INT(sm.in_handled, 3);
    /* The rest backwards: nothing moves until number 4. */
    for (int i = 199; i >= 4; i--)
        CHECK_INT(pl_csm_in_done(&sm, s[i]), 0);
    CHECK_INT(pl_csm_in_done(&sm, s[3]), 1);
    CHECK_INT(sm.in_handled, 200);
    pl_csm_free(&sm);

    /* Across the 32-bit wrap, with the ring growing on the way. */
    struct pl_csm w = {0};
    pl_csm_enable(&w);
    w.in_seen = w.in_handled = UINT32_MAX - 50;
    uint32_t first = 0, last = 0;
    for (int i = 0; i < 100; i++) {
        last = pl_csm_in_begin(&w);
        if (i == 0)
            first = last;
    }
    CHECK_INT(last, 49);
    for (uint32_t q = first + 1; q != last + 1; q++)
        pl_csm_in_done(&w, q);
    CHECK_INT(w.in_handled, UINT32_MAX - 50);
    CHECK_INT(pl_csm_in_done(&w, first), 1);
    CHECK_INT(w.in_handled, 49);
    pl_csm_free(&w);
}

void test_comp_sm_parse_h(void)
{
    uint32_t h = 7;
    CHECK_INT(pl_csm_parse_h("0", &h), PL_OK);
    CHECK_INT(h, 0);
    CHECK_INT(pl_csm_parse_h("4294967295", &h), PL_OK);
    CHECK_INT(h, UINT32_MAX);
    CHECK_INT(pl_csm_parse_h("4294967296", &h), PL_EINVAL);
    CHECK_INT(pl_csm_parse_h("", &h), PL_EINVAL);
    CHECK_INT(pl_csm_parse_h(NULL, &h), PL_EINVAL);
    CHECK_INT(pl_csm_parse_h("-1", &h), PL_EINVAL);
    CHECK_INT(pl_csm_parse_h("12a", &h), PL_EINVAL);
    CHECK_INT(pl_csm_parse_h("00000000001", &h), PL_EINVAL);
}
