/*
 * test_gw_policy.c - the gateway's policy module (src/gateway/policy.c):
 * pattern matching, token buckets, the rules read from a configuration,
 * the refusal codes per channel, and the daily quota in the queue file
 * (counted in the insert's transaction, kept across a reopen, shared by
 * two processes on one file), linked routes.
 */
#include <libconfig.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/gateway/core.h"
#include "../../src/gateway/policy.h"
#include "unit.h"

void test_gw_policy_glob(void)
{
    CHECK(pl_gw_glob("*@localhost", "alice@localhost"));
    CHECK(pl_gw_glob("*@localhost", "Alice@LocalHost"));
    CHECK(!pl_gw_glob("*@localhost", "alice@localhost.evil"));
    CHECK(!pl_gw_glob("*@localhost", "alice@example.org"));
    CHECK(pl_gw_glob("+1555*", "+15551234567"));
    CHECK(!pl_gw_glob("+1555*", "+16551234567"));
    CHECK(!pl_gw_glob("+1555*", "+155"));
    CHECK(pl_gw_glob("+1900???????", "+19001234567"));
    CHECK(!pl_gw_glob("+1900???????", "+190012345678"));
    CHECK(pl_gw_glob("a*b*c", "axxbyyc"));
    CHECK(pl_gw_glob("a*b*c", "abcbc"));
    CHECK(!pl_gw_glob("a*b*c", "axxbyy"));
    CHECK(pl_gw_glob("*", ""));
    CHECK(pl_gw_glob("", ""));
    CHECK(!pl_gw_glob("", "x"));
    CHECK(pl_gw_glob("**x", "abx"));
    /* Channel prefixes. */
    CHECK(pl_gw_pattern_match("sms:+1900*", "sms", "+19005551234"));
    CHECK(!pl_gw_pattern_match("sms:+1900*", "mail", "+19005551234"));
    CHECK(pl_gw_pattern_match("+1900*", "mail", "+19005551234"));
    CHECK(pl_gw_pattern_match("mail:*@spam.test", "mail", "x@spam.test"));
    CHECK(!pl_gw_pattern_match("im:*@spam.test", "mail", "x@spam.test"));
    /* Not a channel name: the colon is part of the glob. */
    CHECK(pl_gw_pattern_match("x:*", "im", "x:y"));
}

void test_gw_policy_bucket(void)
{
    struct pl_gw_bucket b = {0};
    int64_t wait = -1;
    /* 60 a minute (one a second), burst 3: three at once, then one a
     * second. */
    CHECK_INT(pl_gw_bucket_take(&b, 60, 3, 5000, &wait), 1);
    CHECK_INT(pl_gw_bucket_take(&b, 60, 3, 5000, &wait), 1);
    CHECK_INT(pl_gw_bucket_take(&b, 60, 3, 5000, &wait), 1);
    CHECK_INT(pl_gw_bucket_take(&b, 60, 3, 5000, &wait), 0);
    CHECK_INT(wait, 1000);
    CHECK_INT(pl_gw_bucket_take(&b, 60, 3, 5400, &wait), 0);
    CHECK_INT(wait, 600);
    CHECK_INT(pl_gw_bucket_take(&b, 60, 3, 6000, &wait), 1);
    CHECK_INT(pl_gw_bucket_take(&b, 60, 3, 6000, &wait), 0);
    /* A long idle fills it to the burst, no more. */
    int n = 0;
    while (pl_gw_bucket_take(&b, 60, 3, 86400000, &wait))
        n++;
    CHECK_INT(n, 3);
    /* 1 a minute: the next in a minute. */
    struct pl_gw_bucket c = {0};
    CHECK_INT(pl_gw_bucket_take(&c, 1, 1, 100, &wait), 1);
    CHECK_INT(pl_gw_bucket_take(&c, 1, 1, 100, &wait), 0);
    CHECK_INT(wait, 60000);
    CHECK_INT(pl_gw_bucket_take(&c, 1, 1, 60099, &wait), 0);
    CHECK_INT(pl_gw_bucket_take(&c, 1, 1, 60100, &wait), 1);
    /* 600 a minute: fractions of a token add up (10 a second). */
    struct pl_gw_bucket f = {0};
    CHECK_INT(pl_gw_bucket_take(&f, 600, 1, 0, &wait), 1);
    CHECK_INT(pl_gw_bucket_take(&f, 600, 1, 50, &wait), 0);
    CHECK_INT(wait, 50);
    CHECK_INT(pl_gw_bucket_take(&f, 600, 1, 100, &wait), 1);
}

static int load(const char *text)
{
    config_t cf;
    config_init(&cf);
    if (!config_read_string(&cf, text)) {
        fprintf(stderr, "  config: line %d: %s\n", config_error_line(&cf),
                config_error_text(&cf));
        config_destroy(&cf);
        return PL_EINVAL;
    }
    int rc = pl_gw_policy_load(&cf, "test");
    config_destroy(&cf);
    return rc;
}

static int check(const char *sc, const char *sa, const char *dc, const char *da,
                 int64_t now, struct pl_gw_decision *d)
{
    struct pl_gw_policy_req r = {sc, sa, dc, da};
    return pl_gw_policy_check(&r, now, d);
}

void test_gw_policy_rules(void)
{
    struct pl_gw_decision d;
    const char *type, *cond, *enh;
    int code;
    /* Defaults: everything allowed, no rate limit, no quota. */
    CHECK_INT(load(""), PL_OK);
    for (int i = 0; i < 200; i++)
        CHECK_INT(check("im", "a@localhost", "sms", "+15551234567", 1000, &d),
                  PL_GW_ALLOW);
    CHECK_INT(d.daily, 0);
    CHECK_STR(d.key, "im:a@localhost");
    /* A sender rate of 120 a minute with a burst of 60. */
    CHECK_INT(load("policy = { sender_rate = { rate = 120; burst = 60; }; };"),
              PL_OK);
    for (int i = 0; i < 60; i++)
        CHECK_INT(check("im", "a@localhost", "sms", "+15551234567", 1000, &d),
                  PL_GW_ALLOW);
    CHECK_INT(check("im", "a@localhost", "sms", "+15551234567", 1000, &d),
              PL_GW_RATE);
    CHECK(strstr(d.reason, "120 messages a minute") != NULL);
    CHECK(strstr(d.reason, "try again in 1 s") != NULL);
    pl_gw_policy_im_error(&d, &type, &cond);
    CHECK_STR(type, "wait");
    CHECK_STR(cond, "policy-violation");
    pl_gw_policy_smtp(&d, &code, &enh);
    CHECK_INT(code, 451);
    CHECK_STR(enh, "4.7.1");
    /* Another sender has its own bucket. */
    CHECK_INT(check("im", "b@localhost", "sms", "+15551234567", 1000, &d),
              PL_GW_ALLOW);

    CHECK_INT(load(
                  "policy = {\n"
                  " routes = { sms_im = \"deny\"; im_mail = \"linked\"; };\n"
                  " senders = { deny = [ \"*@bad.test\", \"sms:+1666*\" ]; };\n"
                  " destinations = { deny = [ \"sms:+1900*\" ]; };\n"
                  " sender_rate = { rate = 60; burst = 2; };\n"
                  " destination_rate = { rate = 60; burst = 3; };\n"
                  " daily = 100;\n"
                  " users = (\n"
                  "  { match = \"kid@localhost\"; allow = [ \"+1555*\" ];\n"
                  "    daily = 5; },\n"
                  "  { match = \"boss@localhost\"; rate = 0; daily = 0;\n"
                  "    deny = [ \"*@competitor.test\" ]; }\n"
                  " );\n"
                  "};\n"),
              PL_OK);
    CHECK_INT(check("sms", "+15551234567", "im", NULL, 1, &d), PL_GW_DENY);
    CHECK(strstr(d.reason, "from sms to im") != NULL);
    pl_gw_policy_im_error(&d, &type, &cond);
    CHECK_STR(cond, "forbidden");
    CHECK_STR(type, "auth");
    pl_gw_policy_smtp(&d, &code, &enh);
    CHECK_INT(code, 550);
    CHECK_STR(enh, "5.7.1");
    CHECK_INT(check("im", "x@bad.test", "sms", "+15551234567", 1, &d),
              PL_GW_DENY);
    CHECK_INT(check("mail", "x@bad.test", "im", "a@gw.test", 1, &d),
              PL_GW_DENY);
    CHECK_INT(check("im", "a@localhost", "sms", "+19005550000", 1, &d),
              PL_GW_BLOCKED);
    CHECK(strstr(d.reason, "+19005550000") != NULL);
    pl_gw_policy_im_error(&d, &type, &cond);
    CHECK_STR(cond, "not-allowed");
    /* sms:+1900* does not block an e-mail address that looks alike. */
    CHECK_INT(check("im", "a@localhost", "mail", "+19005550000@x.test", 1, &d),
              PL_GW_ALLOW);
    /* A linked route: allowed here, the link is the database's part. */
    CHECK_INT(check("im", "c@localhost", "mail", "bob@example.org", 1, &d),
              PL_GW_ALLOW);
    CHECK_INT(d.need_link, 1);
    CHECK_INT(d.daily, 100);
    /* The user rules: kid only to +1555..., with its own quota. */
    CHECK_INT(check("im", "kid@localhost", "sms", "+15550001111", 1, &d),
              PL_GW_ALLOW);
    CHECK_INT(d.daily, 5);
    CHECK_INT(d.need_link, 0);
    CHECK_INT(check("im", "kid@localhost", "sms", "+4930123456", 1, &d),
              PL_GW_DENY);
    CHECK(strstr(d.reason, "may not send to +4930123456") != NULL);
    /* boss: no rate limit, no quota, but not to the competitor. */
    for (int i = 0; i < 2; i++)
        CHECK_INT(check("im", "boss@localhost", "sms", "+1555000200", 1, &d),
                  PL_GW_ALLOW);
    CHECK_INT(check("im", "boss@localhost", "sms", "+1555000201", 1, &d),
              PL_GW_ALLOW);
    CHECK_INT(d.daily, 0);
    CHECK_INT(check("im", "boss@localhost", "mail", "ceo@competitor.test", 1,
                    &d),
              PL_GW_DENY);
    /* The sender bucket (burst 2): the third at once is refused, and a
     * refusal takes nothing from the destination's bucket. */
    CHECK_INT(check("im", "e@localhost", "sms", "+15557770000", 10, &d),
              PL_GW_ALLOW);
    CHECK_INT(check("im", "e@localhost", "sms", "+15557770000", 10, &d),
              PL_GW_ALLOW);
    CHECK_INT(check("im", "e@localhost", "sms", "+15557770000", 10, &d),
              PL_GW_RATE);
    CHECK(strstr(d.reason, "from e@localhost") != NULL);
    CHECK_INT(d.record, 1);
    /* The next refusal within the second is answered, not recorded. */
    CHECK_INT(check("im", "e@localhost", "sms", "+15557770000", 20, &d),
              PL_GW_RATE);
    CHECK_INT(d.record, 0);
    CHECK_INT(check("im", "e@localhost", "sms", "+15557770000", 1100, &d),
              PL_GW_ALLOW);
    /* The destination bucket (burst 3): f takes two, h one, then h is
     * refused for the destination, and its own bucket is not charged. */
    const char *dst = "+15558880000";
    CHECK_INT(check("im", "f@localhost", "sms", dst, 5000, &d), PL_GW_ALLOW);
    CHECK_INT(check("im", "f@localhost", "sms", dst, 5000, &d), PL_GW_ALLOW);
    CHECK_INT(check("im", "h@localhost", "sms", dst, 5000, &d), PL_GW_ALLOW);
    CHECK_INT(check("im", "h@localhost", "sms", dst, 5000, &d), PL_GW_RATE);
    CHECK(strstr(d.reason, "to +15558880000") != NULL);
    CHECK(strstr(d.reason, "burst 3") != NULL);
    CHECK_INT(check("im", "h@localhost", "sms", "+15550000001", 5000, &d),
              PL_GW_ALLOW);
    CHECK_INT(check("im", "h@localhost", "sms", "+15550000002", 5000, &d),
              PL_GW_RATE);
    /* A second later the destination has a token again. */
    CHECK_INT(check("im", "k@localhost", "sms", dst, 6000, &d), PL_GW_ALLOW);
    /* Refusal SMS to a phone: once per sms_notice, never to a blocked
     * destination. */
    CHECK_INT(pl_gw_policy_sms_notice("+15551110000", 1000), 1);
    CHECK_INT(pl_gw_policy_sms_notice("+15551110000", 2000), 0);
    CHECK_INT(pl_gw_policy_sms_notice("+15551110000", 1000 + 3600000), 1);
    CHECK_INT(pl_gw_policy_sms_notice("+19005551234", 1000), 0);

    /* Configuration errors. */
    CHECK_INT(load("policy = { rate = 5; };"), PL_EINVAL);
    CHECK_INT(load("policy = { routes = { im_fax = \"allow\"; }; };"),
              PL_EINVAL);
    CHECK_INT(load("policy = { routes = { im_sms = \"maybe\"; }; };"),
              PL_EINVAL);
    CHECK_INT(load("policy = { senders = { deny = \"x\"; }; };"), PL_EINVAL);
    CHECK_INT(load("policy = { sender_rate = { rate = 5; burst = 0; }; };"),
              PL_EINVAL);
    CHECK_INT(load("policy = { users = ( { rate = 5; } ); };"), PL_EINVAL);
    CHECK_INT(load("policy = { daily = -1; };"), PL_EINVAL);
    pl_gw_policy_free();
}

/* ---- the quota in the queue file ---- */

static char db_path[64];

static void open_db(void)
{
    CHECK_INT(pl_gwq_open(db_path, 0, &pl_gw.db), PL_OK);
}

static void cleanup(void)
{
    char p[80];
    unlink(db_path);
    snprintf(p, sizeof(p), "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", db_path);
    unlink(p);
}

/* Commits one message from sender under d (copied) in mode; the id of
 * the stored message into id when given. */
static int commit(const char *sender, const struct pl_gw_decision *dd, int mode,
                  int *verdict, char *id)
{
    struct pl_gw_decision d = *dd;
    struct pl_gw_msg m = {0};
    pl_gw_new_id(m.id);
    m.dest = (char *)"sms";
    m.src_channel = (char *)"im";
    m.src_addr = (char *)sender;
    m.dst_channel = (char *)"sms";
    m.dst_addr = (char *)"+15551234567";
    m.text = (char *)"hi";
    m.created = m.next_attempt = pl_gw_now();
    m.expires = m.created + 60000;
    int rc = pl__gw_policy_commit_db(&m, &d, mode);
    if (verdict)
        *verdict = d.verdict;
    if (id)
        memcpy(id, m.id, sizeof(m.id));
    return rc;
}

static int nrefused;
static char last_detail[500];

static void on_trace(void *ud, int64_t at, const char *state,
                     const char *instance, const char *detail)
{
    (void)ud;
    (void)at;
    (void)instance;
    if (strcmp(state, "refused") == 0) {
        nrefused++;
        snprintf(last_detail, sizeof(last_detail), "%s", detail);
    }
}

void test_gw_policy_quota(void)
{
    snprintf(db_path, sizeof(db_path), "/tmp/test_gw_policy.%d.db",
             (int)getpid());
    cleanup();
    pl_gw.c.instance = (char *)"t1";
    CHECK_INT(load("policy = { daily = 3; };"), PL_OK);
    open_db();
    struct pl_gw_decision d;
    struct pl_gw_policy_req r = {"im", "q@localhost", "sms", "+15551234567"};
    CHECK_INT(pl_gw_policy_check(&r, 1, &d), PL_GW_ALLOW);
    CHECK_INT(d.daily, 3);
    int v = -1;
    char id[PL_GW_ID_LEN + 1];
    int64_t day = pl_gw_now() / 86400000;
    /* PEEK looks and counts nothing. */
    CHECK_INT(commit("q@localhost", &d, PL_GW_COMMIT_PEEK, &v, NULL), PL_OK);
    CHECK_INT(pl__gw_policy_count_db("im:q@localhost", day), 0);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(commit("q@localhost", &d, PL_GW_COMMIT_INSERT, &v, id),
                  PL_OK);
        CHECK_INT(v, PL_GW_ALLOW);
    }
    struct pl_gw_msg *m = NULL;
    CHECK_INT(pl_gwq_get(pl_gw.db, id, &m), PL_OK);
    CHECK_INT(m ? m->state : -1, PL_GW_QUEUED);
    pl_gw_msg_free(m);
    CHECK_INT(pl__gw_policy_count_db("im:q@localhost", day), 3);
    /* The fourth is refused, and stored refused with the reason. */
    CHECK_INT(commit("q@localhost", &d, PL_GW_COMMIT_INSERT, &v, id),
              PL_EPOLICY_VIOLATION);
    CHECK_INT(v, PL_GW_QUOTA);
    m = NULL;
    CHECK_INT(pl_gwq_get(pl_gw.db, id, &m), PL_OK);
    CHECK_INT(m ? m->state : -1, PL_GW_REFUSED);
    pl_gw_msg_free(m);
    nrefused = 0;
    CHECK_INT(pl_gwq_trace(pl_gw.db, id, on_trace, NULL), PL_OK);
    CHECK_INT(nrefused, 1);
    CHECK(strstr(last_detail, "daily quota: 3 messages a day") != NULL);
    CHECK_INT(pl__gw_policy_count_db("im:q@localhost", day), 3);
    /* PEEK refuses too (e-mail at RCPT) and records it. */
    CHECK_INT(commit("q@localhost", &d, PL_GW_COMMIT_PEEK, &v, NULL),
              PL_EPOLICY_VIOLATION);
    /* COUNT (e-mail at DATA, allowed at RCPT) counts past it. */
    CHECK_INT(commit("q@localhost", &d, PL_GW_COMMIT_COUNT, &v, NULL), PL_OK);
    CHECK_INT(pl__gw_policy_count_db("im:q@localhost", day), 4);
    /* Another sender has its own count. */
    struct pl_gw_decision d2;
    struct pl_gw_policy_req r2 = {"im", "p@localhost", "sms", "+15551234567"};
    pl_gw_policy_check(&r2, 1, &d2);
    CHECK_INT(commit("p@localhost", &d2, PL_GW_COMMIT_INSERT, &v, NULL), PL_OK);
    /* The count survives closing the file (a restart). */
    pl_gwq_close(pl_gw.db);
    open_db();
    CHECK_INT(pl__gw_policy_count_db("im:q@localhost", day), 4);
    CHECK_INT(commit("q@localhost", &d, PL_GW_COMMIT_INSERT, &v, NULL),
              PL_EPOLICY_VIOLATION);
    /* A loop-side refusal is stored as given, without counting. */
    struct pl_gw_decision dr = d;
    dr.verdict = PL_GW_RATE;
    dr.record = 1;
    snprintf(dr.reason, sizeof(dr.reason), "rate limit: test");
    CHECK_INT(commit("r@localhost", &dr, PL_GW_COMMIT_INSERT, &v, id),
              PL_EPOLICY_VIOLATION);
    nrefused = 0;
    CHECK_INT(pl_gwq_trace(pl_gw.db, id, on_trace, NULL), PL_OK);
    CHECK_INT(nrefused, 1);
    CHECK_STR(last_detail, "rate limit: test");
    dr.record = 0; /* not recorded: nothing stored */
    CHECK_INT(commit("r@localhost", &dr, PL_GW_COMMIT_INSERT, &v, id),
              PL_EPOLICY_VIOLATION);
    CHECK_INT(pl_gwq_get(pl_gw.db, id, &m), PL_ENOT_FOUND);
    pl_gwq_close(pl_gw.db);
    pl_gw.db = NULL;
    cleanup();
    pl_gw_policy_free();
}

void test_gw_policy_shared_quota(void)
{
    /* Two processes on one file, 40 messages each against a quota of 50:
     * exactly 50 pass, whoever gets them. */
    snprintf(db_path, sizeof(db_path), "/tmp/test_gw_policy2.%d.db",
             (int)getpid());
    cleanup();
    pl_gw.c.instance = (char *)"t";
    CHECK_INT(load("policy = { daily = 50; sender_rate = { rate = 0; }; };"),
              PL_OK);
    open_db();
    pl_gwq_close(pl_gw.db);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            if (pl_gwq_open(db_path, 0, &pl_gw.db) != PL_OK)
                _exit(255);
            struct pl_gw_decision d;
            struct pl_gw_policy_req r = {"im", "s@localhost", "sms",
                                         "+15551234567"};
            int ok = 0;
            for (int i = 0; i < 40; i++) {
                pl_gw_policy_check(&r, 1 + i, &d);
                int v;
                if (commit("s@localhost", &d, PL_GW_COMMIT_INSERT, &v, NULL) ==
                    PL_OK)
                    ok++;
            }
            pl_gwq_close(pl_gw.db);
            _exit(ok);
        }
    }
    int total = 0;
    for (int k = 0; k < 2; k++) {
        int st = 0;
        waitpid(kids[k], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 255);
        total += WEXITSTATUS(st);
    }
    CHECK_INT(total, 50);
    open_db();
    CHECK_INT(pl__gw_policy_count_db("im:s@localhost", pl_gw_now() / 86400000),
              50);
    pl_gwq_close(pl_gw.db);
    pl_gw.db = NULL;
    cleanup();
    pl_gw_policy_free();
}

void test_gw_policy_linked(void)
{
    snprintf(db_path, sizeof(db_path), "/tmp/test_gw_policy3.%d.db",
             (int)getpid());
    cleanup();
    pl_gw.c.instance = (char *)"t";
    CHECK_INT(load("policy = { routes = { im_sms = \"linked\";"
                   " sms_im = \"linked\"; }; };"),
              PL_OK);
    open_db();
    struct pl_gw_decision d;
    struct pl_gw_policy_req r = {"im", "l@localhost", "sms", "+15551234567"};
    CHECK_INT(pl_gw_policy_check(&r, 1, &d), PL_GW_ALLOW);
    int v;
    CHECK_INT(commit("l@localhost", &d, PL_GW_COMMIT_INSERT, &v, NULL),
              PL_EPOLICY_VIOLATION);
    CHECK_INT(v, PL_GW_DENY);
    /* An unverified link is not enough; a verified one is. */
    struct pl_gwq_link l = {(char *)"l@localhost", (char *)"+15550009999",
                            (char *)"123456", 0, pl_gw_now() + 60000};
    CHECK_INT(pl_gwq_link_set(pl_gw.db, "sms", &l), PL_OK);
    CHECK_INT(commit("l@localhost", &d, PL_GW_COMMIT_INSERT, &v, NULL),
              PL_EPOLICY_VIOLATION);
    l.code = NULL;
    l.verified = 1;
    CHECK_INT(pl_gwq_link_set(pl_gw.db, "sms", &l), PL_OK);
    CHECK_INT(commit("l@localhost", &d, PL_GW_COMMIT_INSERT, &v, NULL), PL_OK);
    /* SMS senders: only a number someone verified. */
    struct pl_gw_policy_req s1 = {"sms", "+15550009999", "im", NULL};
    CHECK_INT(pl_gw_policy_check(&s1, 1, &d), PL_GW_ALLOW);
    CHECK_INT(commit("+15550009999", &d, PL_GW_COMMIT_INSERT, &v, NULL), PL_OK);
    struct pl_gw_policy_req s2 = {"sms", "+15550008888", "im", NULL};
    CHECK_INT(pl_gw_policy_check(&s2, 1, &d), PL_GW_ALLOW);
    CHECK_INT(commit("+15550008888", &d, PL_GW_COMMIT_INSERT, &v, NULL),
              PL_EPOLICY_VIOLATION);
    CHECK_INT(v, PL_GW_DENY);
    pl_gwq_close(pl_gw.db);
    pl_gw.db = NULL;
    cleanup();
    pl_gw_policy_free();
}
