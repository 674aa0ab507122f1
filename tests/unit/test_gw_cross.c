/*
 * test_gw_cross.c - the cross-channel rules of parley-gateway
 * (src/gateway/cross.c): fitting texts into SMS parts, the SMS made from
 * an e-mail, the address at the start of an SMS, report templates, the
 * RFC 3461 NOTIFY decision; the SMTP engine's DSN parameters (RFC 3461
 * §4) and the queue's per-channel reply peers.
 */
#include <stdlib.h>
#include <unistd.h>

#include "../../src/core/alloc.h"
#include "../../src/core/buf.h"
#include "../../src/core/error.h"
#include "../../src/gateway/cross.h"
#include "../../src/gateway/mail/smtp.h"
#include "../../src/gateway/queue.h"
#include "../../src/gateway/sms/gsm.h"
#include "unit.h"

/* Parts text needs (0: invalid). */
static unsigned parts_of(const char *t)
{
    struct pl_gsm_plan p;
    if (pl_gsm_plan(t, strlen(t), 255, &p) != PL_OK)
        return 0;
    unsigned n = p.nparts;
    pl_gsm_plan_free(&p);
    return n;
}

static char *repeat(const char *s, int n)
{
    struct pl_buf b = {0};
    for (int i = 0; i < n; i++)
        pl_buf_append_str(&b, s);
    char *r = pl_strndup(b.data + b.off, b.len);
    pl_buf_reset(&b);
    return r;
}

void test_gw_cross_fit(void)
{
    size_t fit = 0;
    CHECK_INT(pl_gw_sms_fit("hello", 5, 1, &fit), PL_OK);
    CHECK_INT(fit, 5);
    char *t = repeat("a", 400);
    /* 160 septets in one part; 153 per part when concatenated. */
    CHECK_INT(pl_gw_sms_fit(t, 400, 1, &fit), PL_ELIMIT);
    CHECK_INT(fit, 160);
    CHECK_INT(pl_gw_sms_fit(t, 400, 2, &fit), PL_ELIMIT);
    CHECK_INT(fit, 306);
    CHECK_INT(pl_gw_sms_fit(t, 400, 3, &fit), PL_OK);
    CHECK_INT(fit, 400);
    pl_free(t);
    /* UCS-2 (a Cyrillic letter is 2 bytes): 70 characters, never half
     * of one. */
    t = repeat("\xd0\x96", 100);
    CHECK_INT(pl_gw_sms_fit(t, 200, 1, &fit), PL_ELIMIT);
    CHECK_INT(fit, 140);
    pl_free(t);
    /* Extension characters take two septets: 80 euro signs fill one. */
    t = repeat("\xe2\x82\xac", 100);
    CHECK_INT(pl_gw_sms_fit(t, 300, 1, &fit), PL_ELIMIT);
    CHECK_INT(fit, 240);
    pl_free(t);
    CHECK_INT(pl_gw_sms_fit("\xff\xfe", 2, 1, &fit), PL_EINVAL);
}

void test_gw_cross_mail_text(void)
{
    char *out = NULL;
    int cut = -1;
    CHECK_INT(pl_gw_mail_sms_text("bob@example.org", "Lunch",
                                  "At noon?\r\n\r\n\r\n-- \r\nBob\r\n", 3, &out,
                                  &cut),
              PL_OK);
    CHECK_STR(out, "bob@example.org: Lunch\nAt noon?\n\n--\nBob");
    CHECK_INT(cut, 0);
    pl_free(out);
    CHECK_INT(pl_gw_mail_sms_text("bob@example.org", NULL, "  hi  \n", 3, &out,
                                  &cut),
              PL_OK);
    CHECK_STR(out, "bob@example.org:   hi");
    pl_free(out);
    CHECK_INT(pl_gw_mail_sms_text("bob@example.org", "Multi\nline", "", 3, &out,
                                  &cut),
              PL_OK);
    CHECK_STR(out, "bob@example.org: Multi line");
    pl_free(out);
    CHECK_INT(pl_gw_mail_sms_text("bob@example.org", " ", "\r\n\r\n", 3, &out,
                                  &cut),
              PL_EINVAL);
    /* Too long: cut with "..." and it fits the parts allowed. */
    char *t = repeat("word ", 200);
    CHECK_INT(pl_gw_mail_sms_text("bob@example.org", "S", t, 2, &out, &cut),
              PL_OK);
    CHECK_INT(cut, 1);
    CHECK_INT(parts_of(out), 2);
    size_t n = strlen(out);
    CHECK(n > 250 && strcmp(out + n - 3, "...") == 0 && out[n - 4] != ' ');
    CHECK(strncmp(out, "bob@example.org: S\nword word", 28) == 0);
    pl_free(out);
    pl_free(t);
    /* One UCS-2 character makes the whole text UCS-2: 2 x 67 units. */
    t = repeat("\xd0\x96", 300);
    CHECK_INT(pl_gw_mail_sms_text("b@x.org", NULL, t, 2, &out, &cut), PL_OK);
    CHECK_INT(parts_of(out), 2);
    CHECK_INT(cut, 1);
    pl_free(out);
    pl_free(t);
}

void test_gw_cross_sms_split(void)
{
    static const struct {
        const char *in, *addr, *body;
        int rc;
    } t[] = {
        {"bob@example.org hello there", "bob@example.org", "hello there",
         PL_OK},
        {"  bob@example.org:  hi\n", "bob@example.org", "hi", PL_OK},
        {"bob@example.org, line 1\nline 2", "bob@example.org", "line 1\nline 2",
         PL_OK},
        {"bob@example.org", NULL, NULL, PL_EINVAL},
        {"bob@example.org:   ", NULL, NULL, PL_EINVAL},
        {"hello bob@example.org", NULL, NULL, PL_ENOT_FOUND},
        {"me@home is fine", NULL, NULL, PL_ENOT_FOUND},
        {"a..b@example.org hi", NULL, NULL, PL_ENOT_FOUND},
        {"@example.org hi", NULL, NULL, PL_ENOT_FOUND},
        {"bob@[127.0.0.1] hi", NULL, NULL, PL_ENOT_FOUND},
        {"", NULL, NULL, PL_ENOT_FOUND},
        {"just text", NULL, NULL, PL_ENOT_FOUND},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *a = NULL, *b = NULL;
        int rc = pl_gw_sms_mail_split(t[i].in, &a, &b);
        if (rc != t[i].rc)
            fprintf(stderr, "  case %zu: \"%s\"\n", i, t[i].in);
        CHECK_INT(rc, t[i].rc);
        CHECK_STR(a, t[i].addr);
        CHECK_STR(b, t[i].body);
        pl_free(a);
        pl_free(b);
    }
}

void test_gw_cross_report(void)
{
    char *s = pl_gw_report_text("Not delivered to %a: %r (%i) 100%% %x%",
                                "bob@example.org", "550 no", "abc");
    CHECK_STR(s, "Not delivered to bob@example.org: 550 no (abc) 100% %x%");
    pl_free(s);
    s = pl_gw_report_text("", "a", "b", "c");
    CHECK_STR(s, "");
    pl_free(s);
    /* A long reason: cut to one SMS with "...". */
    char *why = repeat("x", 300);
    s = pl_gw_report_text("Failed: %r", "a", why, "c");
    CHECK_INT(strlen(s), 160);
    CHECK(strncmp(s, "Failed: xxx", 11) == 0);
    CHECK_STR(s + 157, "...");
    CHECK_INT(parts_of(s), 1);
    pl_free(s);
    pl_free(why);
}

void test_gw_cross_dsn_wanted(void)
{
    enum {
        N = PL_SMTP_NOTIFY_NEVER,
        S = PL_SMTP_NOTIFY_SUCCESS,
        F = PL_SMTP_NOTIFY_FAILURE,
        D = PL_SMTP_NOTIFY_DELAY
    };
    /* No NOTIFY: failures only (RFC 3461 §4.1 default). */
    CHECK_INT(pl_gw_dsn_wanted(0, PL_GW_DELIVERED), 0);
    CHECK_INT(pl_gw_dsn_wanted(0, PL_GW_FAILED), 1);
    CHECK_INT(pl_gw_dsn_wanted(0, PL_GW_EXPIRED), 1);
    CHECK_INT(pl_gw_dsn_wanted(0, PL_GW_REFUSED), 1);
    CHECK_INT(pl_gw_dsn_wanted(0, PL_GW_SENT), 0);
    CHECK_INT(pl_gw_dsn_wanted(S, PL_GW_DELIVERED), 1);
    CHECK_INT(pl_gw_dsn_wanted(S, PL_GW_FAILED), 0);
    CHECK_INT(pl_gw_dsn_wanted(S | F, PL_GW_FAILED), 1);
    CHECK_INT(pl_gw_dsn_wanted(S | F, PL_GW_DELIVERED), 1);
    CHECK_INT(pl_gw_dsn_wanted(F | D, PL_GW_DELIVERED), 0);
    CHECK_INT(pl_gw_dsn_wanted(N, PL_GW_FAILED), 0);
    CHECK_INT(pl_gw_dsn_wanted(N, PL_GW_DELIVERED), 0);
    CHECK_INT(pl_gw_dsn_wanted(D, PL_GW_EXPIRED), 0);
}

/* ---- the SMTP engine's DSN parameters ---- */

struct dsnrec {
    struct pl_buf ev;
};

static int dsn_event(void *data, struct pl_smtp *s,
                     const struct pl_smtp_event *ev,
                     struct pl_smtp_reply *replies)
{
    (void)s;
    (void)replies;
    struct dsnrec *r = data;
    if (ev->type == PL_SMTP_EV_MAIL)
        pl_buf_printf(&r->ev, "MAIL ret=%d envid=%s\n", ev->ret,
                      ev->envid ? ev->envid : "-");
    if (ev->type == PL_SMTP_EV_RCPT)
        pl_buf_printf(&r->ev, "RCPT %s notify=%u orcpt=%s\n", ev->rcpt,
                      ev->notify, ev->orcpt ? ev->orcpt : "-");
    if (ev->type == PL_SMTP_EV_DATA)
        for (size_t i = 0; i < ev->nrcpts; i++)
            pl_buf_printf(&r->ev, "DATA %s notify=%u orcpt=%s envid=%s\n",
                          ev->rcpts[i], ev->notifies[i],
                          ev->orcpts[i] ? ev->orcpts[i] : "-",
                          ev->envid ? ev->envid : "-");
    return PL_OK;
}

static void dsn_run(const char *script, struct pl_buf *out, struct dsnrec *r)
{
    struct pl_smtp_config c;
    pl_smtp_config_default(&c);
    c.hostname = "mx.example.org";
    c.add_received = 0;
    struct pl_smtp *s = pl_smtp_new(&c, dsn_event, r);
    pl_smtp_feed(s, script, strlen(script));
    struct pl_str o = pl_smtp_output(s);
    pl_buf_append(out, o.p, o.len);
    pl_smtp_output_sent(s, o.len);
    pl_smtp_free(s);
}

void test_gw_smtp_dsn_params(void)
{
    struct pl_buf out = {0};
    struct dsnrec r = {{0}};
    dsn_run("EHLO c\r\n"
            "MAIL FROM:<a@example.org> RET=HDRS ENVID=q+2B1+3Dx\r\n"
            "RCPT TO:<b@example.org> NOTIFY=SUCCESS,failure "
            "ORCPT=rfc822;B+40example.org\r\n"
            "RCPT TO:<c@example.org> NOTIFY=NEVER\r\n"
            "RCPT TO:<d@example.org>\r\n"
            "RCPT TO:<e@example.org> NOTIFY=NEVER,SUCCESS\r\n"
            "RCPT TO:<e@example.org> NOTIFY=SUCCESS,\r\n"
            "RCPT TO:<e@example.org> NOTIFY=SOMETIMES\r\n"
            "RCPT TO:<e@example.org> ORCPT=rfc822;bad+4\r\n"
            "RCPT TO:<e@example.org> FOO=1\r\n"
            "DATA\r\nhi\r\n.\r\n"
            "MAIL FROM:<a@example.org> RET=MAYBE\r\n"
            "MAIL FROM:<a@example.org> ENVID=a=b\r\n"
            "QUIT\r\n",
            &out, &r);
    const char *o = pl_buf_cstr(&out);
    CHECK(strstr(o, "250-DSN\r\n") != NULL);
    CHECK_STR(pl_buf_cstr(&r.ev),
              "MAIL ret=2 envid=q+1=x\n"
              "RCPT b@example.org notify=6 orcpt=rfc822;B@example.org\n"
              "RCPT c@example.org notify=1 orcpt=-\n"
              "RCPT d@example.org notify=0 orcpt=-\n"
              "DATA b@example.org notify=6 orcpt=rfc822;B@example.org "
              "envid=q+1=x\n"
              "DATA c@example.org notify=1 orcpt=- envid=q+1=x\n"
              "DATA d@example.org notify=0 orcpt=- envid=q+1=x\n");
    /* Four bad values (501) and an unknown parameter (555). */
    int n501 = 0;
    for (const char *p = o; (p = strstr(p, "501 5.5.4 Invalid RCPT")); p++)
        n501++;
    CHECK_INT(n501, 4);
    CHECK(strstr(o, "555 5.5.4 RCPT TO parameters") != NULL);
    CHECK(strstr(o, "501 5.5.4 Invalid MAIL FROM parameter value") != NULL);
    pl_buf_reset(&out);
    pl_buf_reset(&r.ev);
}

/* ---- reply peers per channel ---- */

void test_gw_queue_peer_channel(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/test_gw_cross.%d.db", (int)getpid());
    unlink(path);
    struct pl_gwq *q = NULL;
    CHECK_INT(pl_gwq_open(path, 0, &q), PL_OK);
    if (!q)
        return;
    char *ch = NULL, *peer = NULL, *jid = NULL;
    CHECK_INT(pl_gwq_peer_get_in(q, "+15551234567", &ch, &peer), PL_ENOT_FOUND);
    CHECK_INT(pl_gwq_peer_set(q, "+15551234567", "alice@localhost", 1), PL_OK);
    CHECK_INT(pl_gwq_peer_get(q, "+15551234567", &jid), PL_OK);
    CHECK_STR(jid, "alice@localhost");
    pl_free(jid);
    jid = NULL;
    /* An e-mail sender wrote last: no IM peer any more. */
    CHECK_INT(pl_gwq_peer_set_in(q, "+15551234567", "mail", "bob@example.org",
                                 2),
              PL_OK);
    CHECK_INT(pl_gwq_peer_get(q, "+15551234567", &jid), PL_ENOT_FOUND);
    CHECK_INT(pl_gwq_peer_get_in(q, "+15551234567", &ch, &peer), PL_OK);
    CHECK_STR(ch, "mail");
    CHECK_STR(peer, "bob@example.org");
    pl_free(ch);
    pl_free(peer);
    /* And back to the IM user. */
    CHECK_INT(pl_gwq_peer_set(q, "+15551234567", "alice@localhost", 3), PL_OK);
    CHECK_INT(pl_gwq_peer_get_in(q, "+15551234567", &ch, &peer), PL_OK);
    CHECK_STR(ch, "im");
    CHECK_STR(peer, "alice@localhost");
    pl_free(ch);
    pl_free(peer);
    pl_gwq_close(q);
    char p2[80];
    unlink(path);
    snprintf(p2, sizeof(p2), "%s-wal", path);
    unlink(p2);
    snprintf(p2, sizeof(p2), "%s-shm", path);
    unlink(p2);
}
