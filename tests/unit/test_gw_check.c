/*
 * test_gw_check.c - the content checks' pure parts: rspamd's /checkv2
 * answers (the GTUBE and clean answers below are what rspamd 3.4 sent
 * to tests/interop/test_gateway_checks.py) parsed by pl_rspamd_parse,
 * and the spam policy (pl_gw_spam_decide, pl_gw_check_subject).
 */
#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/gateway/check.h"
#include "../../src/gateway/core.h"
#include "unit.h"

static const char gtube[] =
    "{\"is_skipped\":true,\"score\":0.0,\"required_score\":15.0,"
    "\"action\":\"reject\",\"symbols\":{\"GTUBE\":{\"name\":\"GTUBE\","
    "\"score\":0.0,\"metric_score\":0.0}},\"messages\":{\"smtp_message\":"
    "\"Gtube pattern\"},\"message-id\":\"undef\",\"time_real\":0.525643}";
static const char clean[] =
    "{\"is_skipped\":false,\"score\":0.0,\"required_score\":null,"
    "\"action\":\"no action\",\"symbols\":{},\"messages\":{},"
    "\"message-id\":\"undef\",\"time_real\":0.010735}";
static const char rewrite[] =
    "{\"is_skipped\":true,\"score\":0.0,\"required_score\":null,"
    "\"action\":\"rewrite subject\",\"subject\":\"*** SPAM *** hi\","
    "\"symbols\":{\"GTUBE\":{\"name\":\"GTUBE\",\"score\":0.0}},"
    "\"messages\":{\"smtp_message\":\"Gtube pattern\"}}";
static const char scored[] =
    "{\"score\":7.5,\"required_score\":15,\"action\":\"add header\","
    "\"symbols\":{\"R_SPF_NA\":{\"score\":0.0},\"MISSING_DATE\":{\"score\":1}"
    ",\"FAKE_REPLY\":{\"score\":1.5},\"BAYES_SPAM\":{\"score\":5.0},"
    "\"ODD\":7}}";

void test_gw_rspamd_parse(void)
{
    struct pl_rspamd_result r;
    CHECK_INT(pl_rspamd_parse(gtube, sizeof(gtube) - 1, &r), PL_OK);
    CHECK_INT(r.action, PL_RSPAMD_REJECT);
    CHECK(r.score == 0.0 && r.required == 15.0 && r.skipped);
    CHECK_STR(r.symbols, "GTUBE");
    CHECK_STR(r.message, "Gtube pattern");
    CHECK(r.subject == NULL);
    pl_rspamd_result_free(&r);

    CHECK_INT(pl_rspamd_parse(clean, sizeof(clean) - 1, &r), PL_OK);
    CHECK_INT(r.action, PL_RSPAMD_NO_ACTION);
    CHECK(r.required == 0.0 && !r.skipped);
    CHECK_STR(r.symbols, "");
    CHECK_STR(r.message, "");

    CHECK_INT(pl_rspamd_parse(rewrite, sizeof(rewrite) - 1, &r), PL_OK);
    CHECK_INT(r.action, PL_RSPAMD_REWRITE_SUBJECT);
    CHECK_STR(r.subject, "*** SPAM *** hi");
    pl_rspamd_result_free(&r);
    CHECK(r.subject == NULL);

    /* Symbols highest score first; one that is not an object counts 0. */
    CHECK_INT(pl_rspamd_parse(scored, sizeof(scored) - 1, &r), PL_OK);
    CHECK_INT(r.action, PL_RSPAMD_ADD_HEADER);
    CHECK(r.score == 7.5);
    CHECK_STR(r.symbols, "BAYES_SPAM,FAKE_REPLY,MISSING_DATE,ODD,R_SPF_NA");
    pl_rspamd_result_free(&r);

    /* Refused: not JSON, not an object, no action, an unknown action, a
     * score that is not a number, duplicate keys, a truncated answer. */
    static const char *const bad[] = {
        "",
        "<html>502</html>",
        "[\"reject\"]",
        "{\"score\":1}",
        "{\"action\":\"discard\",\"score\":1}",
        "{\"action\":\"reject\",\"score\":\"20\"}",
        "{\"action\":\"reject\"}",
        "{\"action\":\"no action\",\"action\":\"reject\",\"score\":1}",
        "{\"action\":\"reject\",\"score\":1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r.subject = (char *)"x";
        CHECK_INT(pl_rspamd_parse(bad[i], strlen(bad[i]), &r), PL_EINVAL);
        CHECK(r.subject == NULL);
    }
    /* Every action by name, and back. */
    for (int a = PL_RSPAMD_NO_ACTION; a <= PL_RSPAMD_REJECT; a++) {
        char j[128];
        snprintf(j, sizeof(j), "{\"action\":\"%s\",\"score\":2.5}",
                 pl_rspamd_action_name(a));
        CHECK_INT(pl_rspamd_parse(j, strlen(j), &r), PL_OK);
        CHECK_INT(r.action, a);
    }
    CHECK(pl_rspamd_action_name(6) == NULL);
    CHECK(pl_rspamd_action_name(-1) == NULL);
}

void test_gw_spam_decide(void)
{
    struct pl_rspamd_result r = {0};
    struct pl_gw_spam_policy rspamd = {0, 0, 0}, tagonly = {0, 0, 1},
                             scores = {10, 5, 0};
    r.action = PL_RSPAMD_REJECT;
    CHECK_INT(pl_gw_spam_decide(&r, &rspamd), PL_GW_CHECK_REFUSE);
    CHECK_INT(pl_gw_spam_decide(&r, &tagonly), PL_GW_CHECK_TAG);
    r.action = PL_RSPAMD_SOFT_REJECT;
    CHECK_INT(pl_gw_spam_decide(&r, &rspamd), PL_GW_CHECK_TEMPFAIL);
    r.action = PL_RSPAMD_REWRITE_SUBJECT;
    CHECK_INT(pl_gw_spam_decide(&r, &rspamd), PL_GW_CHECK_TAG);
    r.action = PL_RSPAMD_ADD_HEADER;
    CHECK_INT(pl_gw_spam_decide(&r, &rspamd), PL_GW_CHECK_TAG);
    r.action = PL_RSPAMD_GREYLIST;
    CHECK_INT(pl_gw_spam_decide(&r, &rspamd), PL_GW_CHECK_PASS);
    r.action = PL_RSPAMD_NO_ACTION;
    CHECK_INT(pl_gw_spam_decide(&r, &rspamd), PL_GW_CHECK_PASS);
    /* Our own thresholds, whatever rspamd's action. */
    r.score = 4.99;
    CHECK_INT(pl_gw_spam_decide(&r, &scores), PL_GW_CHECK_PASS);
    r.score = 5.0;
    CHECK_INT(pl_gw_spam_decide(&r, &scores), PL_GW_CHECK_TAG);
    r.score = 10.0;
    CHECK_INT(pl_gw_spam_decide(&r, &scores), PL_GW_CHECK_REFUSE);
    r.score = 99;
    CHECK_INT(pl_gw_spam_decide(&r, &rspamd), PL_GW_CHECK_PASS);
}

void test_gw_check_subject(void)
{
    pl_gw.c.spam_tag = (char *)"[SPAM] ";
    struct pl_gw_verdict v = {0};
    CHECK(pl_gw_check_subject(&v, "hello") == NULL); /* passed: as is */
    v.verdict = PL_GW_CHECK_TAG;
    char *s = pl_gw_check_subject(&v, "hello");
    CHECK_STR(s, "[SPAM] hello");
    pl_free(s);
    s = pl_gw_check_subject(&v, NULL);
    CHECK_STR(s, "[SPAM] ");
    pl_free(s);
    v.subject = pl_strdup("*** SPAM *** hello"); /* rspamd's rewrite wins */
    s = pl_gw_check_subject(&v, "hello");
    CHECK_STR(s, "*** SPAM *** hello");
    pl_free(s);
    pl_gw_verdict_free(&v);
    CHECK(v.subject == NULL);
    pl_gw.c.spam_tag = (char *)"";
    CHECK(pl_gw_check_subject(&v, "hello") == NULL);
    pl_gw.c.spam_tag = NULL;
}
