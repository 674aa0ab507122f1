/*
 * test_gw_smtp.c - the SMTP/LMTP engine (src/gateway/mail/smtp.c): the
 * RFC 5321 Appendix D and RFC 2033 §4.2 examples, pipelining (RFC 2920
 * §3.2), the limits, bad addresses, commands out of order, and verdicts
 * given later (pl_smtp_resume).
 *
 * Each case feeds a client script, whole and then byte by byte (the
 * result must not depend on how TCP cut it), and compares the engine's
 * replies with the expected text; events are recorded as lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/mail/smtp.h"
#include "unit.h"

struct rec {
    struct pl_buf ev; /* "MAIL <from>\n" ... */
    const char *deny; /* RCPT refused with 550 5.1.1 */
    int defer;        /* every event returns PL_EAGAIN */
};

static int on_event(void *data, struct pl_smtp *s,
                    const struct pl_smtp_event *ev,
                    struct pl_smtp_reply *replies)
{
    struct rec *r = data;
    switch (ev->type) {
    case PL_SMTP_EV_HELO: pl_buf_printf(&r->ev, "HELO %s\n", ev->helo); break;
    case PL_SMTP_EV_MAIL:
        pl_buf_printf(&r->ev, "MAIL <%s> size=%zu 8bit=%d utf8=%d\n", ev->from,
                      ev->size, ev->body_8bit, ev->smtputf8);
        break;
    case PL_SMTP_EV_RCPT:
        pl_buf_printf(&r->ev, "RCPT <%s>\n", ev->rcpt);
        if (r->deny && strcmp(ev->rcpt, r->deny) == 0)
            replies[0] = (struct pl_smtp_reply){550, "5.1.1", "No such user"};
        break;
    case PL_SMTP_EV_DATA:
        pl_buf_printf(&r->ev, "DATA %zu [", ev->nrcpts);
        pl_buf_append(&r->ev, ev->message.p, ev->message.len);
        pl_buf_append_str(&r->ev, "]\n");
        break;
    }
    return r->defer ? PL_EAGAIN : PL_OK;
}

static struct pl_smtp_config config(int proto)
{
    struct pl_smtp_config c;
    pl_smtp_config_default(&c);
    c.proto = proto;
    c.hostname = "mx.example.org";
    c.add_received = 0;
    c.max_rcpts = 3;
    c.max_size = 200;
    c.max_errors = 5;
    return c;
}

/* Runs script through a session (in pieces of step bytes, 0: whole);
 * out receives the replies, r the events. */
static void run(const struct pl_smtp_config *c, const char *script, size_t step,
                struct pl_buf *out, struct rec *r)
{
    struct pl_smtp *s = pl_smtp_new(c, on_event, r);
    size_t n = strlen(script), i = 0;
    do {
        size_t k = step && n - i > step ? step : n - i;
        pl_smtp_feed(s, script + i, k);
        i += k;
        struct pl_str o = pl_smtp_output(s);
        pl_buf_append(out, o.p, o.len);
        pl_smtp_output_sent(s, o.len);
    } while (i < n);
    pl_smtp_free(s);
}

struct scase {
    int proto;
    const char *deny;
    const char *in;
    const char *out;
    const char *events;
    size_t max_text_line; /* 0: the default */
};

static void check_case(const struct scase *t)
{
    struct pl_smtp_config c = config(t->proto);
    if (t->max_text_line)
        c.max_text_line = t->max_text_line;
    for (size_t step = 0; step <= 1; step++) {
        struct pl_buf out = {0};
        struct rec r = {.deny = t->deny};
        run(&c, t->in, step, &out, &r);
        CHECK_STR(pl_buf_cstr(&out), t->out);
        if (t->events)
            CHECK_STR(pl_buf_cstr(&r.ev), t->events);
        pl_buf_reset(&out);
        pl_buf_reset(&r.ev);
    }
}

#define GREET "220 mx.example.org ESMTP Parley\r\n"
#define EHLO_REPLY                                                             \
    "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 200\r\n"                 \
    "250-8BITMIME\r\n250-DSN\r\n"                                              \
    "250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"

/* RFC 5321 Appendix D.1, a typical transaction (one recipient refused). */
void test_gw_smtp_rfc5321(void)
{
    static const struct scase t =
        {PL_SMTP_SMTP,
         "Green@foo.com",
         "EHLO bar.com\r\n"
         "MAIL FROM:<Smith@bar.com>\r\n"
         "RCPT TO:<Jones@foo.com>\r\n"
         "RCPT TO:<Green@foo.com>\r\n"
         "RCPT TO:<Brown@foo.com>\r\n"
         "DATA\r\n"
         "Blah blah blah...\r\n"
         "..etc. etc. etc.\r\n"
         ".\r\n"
         "QUIT\r\n",
         GREET EHLO_REPLY "250 2.1.0 Sender <Smith@bar.com> OK\r\n"
                          "250 2.1.5 Recipient <Jones@foo.com> OK\r\n"
                          "550 5.1.1 No such user\r\n"
                          "250 2.1.5 Recipient <Brown@foo.com> OK\r\n"
                          "354 End data with <CR><LF>.<CR><LF>\r\n"
                          "250 2.0.0 Message accepted\r\n"
                          "221 2.0.0 Bye\r\n",
         "HELO bar.com\nMAIL <Smith@bar.com> size=0 8bit=0 utf8=0\n"
         "RCPT <Jones@foo.com>\nRCPT <Green@foo.com>\nRCPT <Brown@foo.com>\n"
         "DATA 2 [Blah blah blah...\r\n.etc. etc. etc.\r\n]\n",
         0};
    check_case(&t);
}

/* RFC 2033 §4.2: LMTP, one reply per recipient after DATA. */
void test_gw_smtp_lmtp(void)
{
    static const struct scase t =
        {PL_SMTP_LMTP,
         "green@foo.edu",
         "LHLO foo.edu\r\n"
         "MAIL FROM:<chris@bar.com>\r\n"
         "RCPT TO:<pat@foo.edu>\r\n"
         "RCPT TO:<jones@foo.edu>\r\n"
         "RCPT TO:<green@foo.edu>\r\n"
         "DATA\r\n"
         "Subject: x\r\n\r\nhi\r\n"
         ".\r\n"
         "EHLO foo.edu\r\n"
         "QUIT\r\n",
         "220 mx.example.org LMTP Parley\r\n"
         "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 200\r\n"
         "250-8BITMIME\r\n250-DSN\r\n"
         "250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
         "250 2.1.0 Sender <chris@bar.com> OK\r\n"
         "250 2.1.5 Recipient <pat@foo.edu> OK\r\n"
         "250 2.1.5 Recipient <jones@foo.edu> OK\r\n"
         "550 5.1.1 No such user\r\n"
         "354 End data with <CR><LF>.<CR><LF>\r\n"
         "250 2.1.5 <pat@foo.edu> delivered\r\n"
         "250 2.1.5 <jones@foo.edu> delivered\r\n"
         "500 5.5.1 This is LMTP: use LHLO\r\n"
         "221 2.0.0 Bye\r\n",
         NULL,
         0};
    check_case(&t);
}

/* Commands out of order, unknown and unoffered commands, error limit. */
void test_gw_smtp_sequence(void)
{
    static const struct scase t =
        {PL_SMTP_SMTP,
         NULL,
         "MAIL FROM:<a@b.c>\r\n"
         "HELO x\r\n"
         "RCPT TO:<a@b.c>\r\n"
         "DATA\r\n"
         "MAIL FROM:<a@b.c>\r\n"
         "DATA\r\n"
         "MAIL FROM:<a@b.c>\r\n"
         "BDAT 10 LAST\r\n"
         "XYZZY\r\n"
         "NOOP\r\n"
         "STARTTLS\r\n"
         "NOOP\r\n",
         GREET "503 5.5.1 Send HELO/EHLO first\r\n"
               "250 mx.example.org\r\n"
               "503 5.5.1 Need MAIL command\r\n"
               "503 5.5.1 Need MAIL command\r\n"
               "250 2.1.0 Sender <a@b.c> OK\r\n"
               "503 5.5.1 Need RCPT command\r\n"
               "503 5.5.1 Sender already specified\r\n"
               "421 4.7.0 Too many errors, closing connection\r\n",
         NULL,
         0};
    check_case(&t);
    static const struct scase u =
        {PL_SMTP_SMTP,
         NULL,
         "EHLO x\r\nBDAT 10 LAST\r\nXYZZY\r\nnoop\r\nRSET x\r\nRSET\r\n"
         "VRFY a\r\nQUIT\r\nNOOP\r\n",
         GREET EHLO_REPLY "502 5.5.1 Command not implemented\r\n"
                          "500 5.5.1 Command unrecognized\r\n"
                          "250 2.0.0 OK\r\n501 5.5.4 Syntax: RSET\r\n"
                          "250 2.0.0 OK\r\n"
                          "252 2.5.0 Cannot VRFY user, but will accept "
                          "message\r\n221 2.0.0 Bye\r\n",
         NULL,
         0};
    check_case(&u);
}

/* Address syntax: RFC 5321 §4.1.2, with the limits of §4.5.3.1. */
void test_gw_smtp_addresses(void)
{
    static const struct {
        const char *in;
        int null_ok, utf8, rc;
        const char *out;
    } t[] = {
        {"<a@b.c>", 0, 0, PL_OK, "a@b.c"},
        {"<>", 1, 0, PL_OK, ""},
        {"<>", 0, 0, PL_EINVAL, NULL},
        {"<\"john q\\\"doe\"@example.org>", 0, 0, PL_OK,
         "\"john q\\\"doe\"@example.org"},
        {"<@hosta.int,@jkl.org:userc@d.bar.org>", 0, 0, PL_OK,
         "userc@d.bar.org"},
        {"<Postmaster>", 0, 0, PL_OK, "Postmaster"},
        {"<postmaster>", 1, 0, PL_EINVAL, NULL},
        {"<user@[192.0.2.1]>", 0, 0, PL_OK, "user@[192.0.2.1]"},
        {"<user@[IPv6:2001:db8::1]>", 0, 0, PL_OK, "user@[IPv6:2001:db8::1]"},
        {"<user@[300.1.1.1]>", 0, 0, PL_EINVAL, NULL},
        {"<user@[IPv6:zz]>", 0, 0, PL_EINVAL, NULL},
        {"<a..b@c.d>", 0, 0, PL_EINVAL, NULL},
        {"<.a@c.d>", 0, 0, PL_EINVAL, NULL},
        {"<a@-c.d>", 0, 0, PL_EINVAL, NULL},
        {"<a@c-.d>", 0, 0, PL_EINVAL, NULL},
        {"<a@c..d>", 0, 0, PL_EINVAL, NULL},
        {"<a b@c.d>", 0, 0, PL_EINVAL, NULL},
        {"<a@c.d", 0, 0, PL_EINVAL, NULL},
        {"a@c.d", 0, 0, PL_EINVAL, NULL},
        {"<\"unterminated@c.d>", 0, 0, PL_EINVAL, NULL},
        {"<\"a\x01\"@c.d>", 0, 0, PL_EINVAL, NULL},
        {"<j\xc3\xb6rg@b\xc3\xbc"
         "cher.example>",
         0, 1, PL_OK,
         "j\xc3\xb6rg@b\xc3\xbc"
         "cher.example"},
        {"<j\xc3\xb6rg@example.org>", 0, 0, PL_EINVAL, NULL},
        {"<j\xc3@example.org>", 0, 1, PL_EINVAL, NULL},
        {"<\xed\xa0\x80@example.org>", 0, 1, PL_EINVAL, NULL},
        {"<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@"
         "b.c>",
         0, 0, PL_ELIMIT, NULL},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char out[300];
        size_t used = 0;
        int rc = pl_smtp_parse_path(pl_str_c(t[i].in), t[i].utf8, t[i].null_ok,
                                    out, sizeof(out), &used);
        if (rc != t[i].rc)
            fprintf(stderr, "  case %zu: %s\n", i, t[i].in);
        CHECK_INT(rc, t[i].rc);
        if (rc == PL_OK && t[i].out) {
            CHECK_STR(out, t[i].out);
            CHECK_INT(used, strlen(t[i].in));
        }
    }
}

/* Bad addresses and parameters in a session: 501/553/555 replies. */
void test_gw_smtp_bad_addresses(void)
{
    static const struct scase t =
        {PL_SMTP_SMTP,
         NULL,
         "EHLO x\r\n"
         "MAIL FROM:a@b.c\r\n"
         "MAIL FROM:<a@@b.c>\r\n"
         "MAIL FROM:<j\xc3\xb6rg@b.c>\r\n"
         "MAIL FROM:<a@b.c> FOO=1\r\n"
         "MAIL FROM:<a@b.c> BODY=9BIT\r\n"
         "NOOP\r\n"
         "MAIL FROM: <a@b.c> SIZE=1000\r\n"
         "MAIL FROM: <a@b.c> SIZE=100 BODY=8BITMIME\r\n"
         "RCPT TO:<>\r\n"
         "RCPT TO:<j\xc3\xb6rg@b.c>\r\n"
         "RCPT TO:<x@y.z> XNOTIFY=NEVER\r\n"
         "QUIT\r\n",
         GREET EHLO_REPLY "501 5.5.2 Syntax: MAIL FROM:<address>\r\n"
                          "501 5.1.7 Bad sender address syntax\r\n"
                          "553 5.6.7 Non-ASCII address without SMTPUTF8 "
                          "(RFC 6531)\r\n"
                          "555 5.5.4 MAIL FROM parameters not recognized or "
                          "not implemented\r\n"
                          "501 5.5.4 Invalid MAIL FROM parameter value\r\n"
                          "421 4.7.0 Too many errors, closing connection\r\n",
         NULL,
         0};
    check_case(&t);
    struct pl_smtp_config c = config(PL_SMTP_SMTP);
    c.max_errors = 50;
    struct pl_buf out = {0};
    struct rec r = {0};
    run(&c, t.in, 0, &out, &r);
    CHECK_STR(pl_buf_cstr(&out),
              GREET EHLO_REPLY "501 5.5.2 Syntax: MAIL FROM:<address>\r\n"
                               "501 5.1.7 Bad sender address syntax\r\n"
                               "553 5.6.7 Non-ASCII address without "
                               "SMTPUTF8 (RFC 6531)\r\n"
                               "555 5.5.4 MAIL FROM parameters not "
                               "recognized or not implemented\r\n"
                               "501 5.5.4 Invalid MAIL FROM parameter "
                               "value\r\n"
                               "250 2.0.0 OK\r\n"
                               "552 5.3.4 Message size exceeds fixed "
                               "maximum message size\r\n"
                               "250 2.1.0 Sender <a@b.c> OK\r\n"
                               "501 5.1.3 Bad destination mailbox address "
                               "syntax\r\n"
                               "553 5.6.7 Non-ASCII address without "
                               "SMTPUTF8 (RFC 6531)\r\n"
                               "555 5.5.4 RCPT TO parameters not recognized "
                               "or not implemented\r\n"
                               "221 2.0.0 Bye\r\n");
    CHECK_STR(pl_buf_cstr(&r.ev), "HELO x\nMAIL <a@b.c> size=100 8bit=1 "
                                  "utf8=0\n");
    pl_buf_reset(&out);
    pl_buf_reset(&r.ev);
}

/* SMTPUTF8 (RFC 6531) transactions, and too many recipients. */
void test_gw_smtp_utf8_rcpts(void)
{
    static const struct scase t =
        {PL_SMTP_SMTP,
         NULL,
         "EHLO x\r\n"
         "MAIL FROM:<j\xc3\xb6rg@b.c> SMTPUTF8\r\n"
         "RCPT TO:<\xc3\xa9@b.c>\r\n"
         "RCPT TO:<b@b.c>\r\n"
         "RCPT TO:<c@b.c>\r\n"
         "RCPT TO:<d@b.c>\r\n"
         "DATA\r\n"
         "\r\n"
         ".\r\n",
         GREET EHLO_REPLY "250 2.1.0 Sender <j\xc3\xb6rg@b.c> OK\r\n"
                          "250 2.1.5 Recipient <\xc3\xa9@b.c> OK\r\n"
                          "250 2.1.5 Recipient <b@b.c> OK\r\n"
                          "250 2.1.5 Recipient <c@b.c> OK\r\n"
                          "452 4.5.3 Too many recipients\r\n"
                          "354 End data with <CR><LF>.<CR><LF>\r\n"
                          "250 2.0.0 Message accepted\r\n",
         "HELO x\nMAIL <j\xc3\xb6rg@b.c> size=0 8bit=0 utf8=1\n"
         "RCPT <\xc3\xa9@b.c>\nRCPT <b@b.c>\nRCPT <c@b.c>\n"
         "DATA 3 [\r\n]\n",
         0};
    check_case(&t);
}

/* Limits: command line length, text line length, size, bare LF, and
 * DATA with all recipients refused (RFC 2920 §3.1). */
void test_gw_smtp_limits(void)
{
    char longcmd[700], longtext[150], big[400];
    memset(longcmd, 'A', sizeof(longcmd));
    memcpy(longcmd, "NOOP ", 5);
    longcmd[sizeof(longcmd) - 1] = '\0';
    memset(longtext, 'x', sizeof(longtext));
    longtext[sizeof(longtext) - 1] = '\0';
    memset(big, 'y', sizeof(big));
    big[sizeof(big) - 1] = '\0';
    struct pl_buf in = {0};
    pl_buf_printf(&in, "EHLO x\r\n%s\r\nNOOP\r\n", longcmd);
    pl_buf_printf(&in,
                  "MAIL FROM:<a@b.c>\r\nRCPT TO:<b@b.c>\r\nDATA\r\n"
                  "%s\r\n.\r\n",
                  longtext);
    pl_buf_printf(&in,
                  "MAIL FROM:<a@b.c>\r\nRCPT TO:<b@b.c>\r\nDATA\r\n"
                  "%s\r\n.\r\n",
                  big);
    pl_buf_printf(&in, "MAIL FROM:<a@b.c>\r\nRCPT TO:<b@b.c>\r\nDATA\r\n"
                       "a\n.\r\nb\r\n.\r\n");
    pl_buf_printf(&in, "MAIL FROM:<a@b.c>\r\nRCPT TO:<nobody@b.c>\r\nDATA\r\n"
                       "QUIT\r\n");
    struct scase t = {PL_SMTP_SMTP,
                      "nobody@b.c",
                      pl_buf_cstr(&in),
                      GREET EHLO_REPLY
                      "500 5.5.2 Line too long\r\n"
                      "250 2.0.0 OK\r\n"
                      "250 2.1.0 Sender <a@b.c> OK\r\n"
                      "250 2.1.5 Recipient <b@b.c> OK\r\n"
                      "354 End data with <CR><LF>.<CR><LF>\r\n"
                      "554 5.6.0 Message has a line longer than allowed "
                      "(RFC 5321 4.5.3.1.6)\r\n"
                      "250 2.1.0 Sender <a@b.c> OK\r\n"
                      "250 2.1.5 Recipient <b@b.c> OK\r\n"
                      "354 End data with <CR><LF>.<CR><LF>\r\n"
                      "552 5.3.4 Message size exceeds fixed limit\r\n"
                      "250 2.1.0 Sender <a@b.c> OK\r\n"
                      "250 2.1.5 Recipient <b@b.c> OK\r\n"
                      "354 End data with <CR><LF>.<CR><LF>\r\n"
                      "554 5.6.0 Message has a bare LF (RFC 5321 "
                      "2.3.8)\r\n"
                      "250 2.1.0 Sender <a@b.c> OK\r\n"
                      "550 5.1.1 No such user\r\n"
                      "554 5.5.1 No valid recipients\r\n"
                      "221 2.0.0 Bye\r\n",
                      NULL,
                      100};
    check_case(&t);
    pl_buf_reset(&in);
}

/* Pipelining (RFC 2920 §3.2): a whole transaction in one write gets its
 * replies in one piece, in order; a client that never reads stops being
 * served once max_out bytes wait, and one that floods past max_in while
 * blocked is dropped. */
void test_gw_smtp_pipelining(void)
{
    struct pl_smtp_config c = config(PL_SMTP_SMTP);
    c.max_errors = 1000000;
    c.max_out = 1024;
    c.max_in = 1;
    struct rec r = {0};
    struct pl_smtp *s = pl_smtp_new(&c, on_event, &r);
    struct pl_buf flood = {0};
    for (int i = 0; i < 20000; i++)
        pl_buf_append_str(&flood, "NOOP\r\n");
    int rc = pl_smtp_feed(s, flood.data, 6000);
    CHECK_INT(rc, PL_OK);
    CHECK(!pl_smtp_wants_input(s));
    struct pl_str o = pl_smtp_output(s);
    CHECK(o.len >= 1024 && o.len < 1024 + 64);
    /* Reading the replies lets it go on. */
    pl_smtp_output_sent(s, o.len);
    o = pl_smtp_output(s);
    CHECK(o.len >= 1024);
    /* Still not reading: the rest of the flood overflows max_in. */
    rc = pl_smtp_feed(s, flood.data, flood.len);
    CHECK_INT(rc, PL_ECLOSED);
    o = pl_smtp_output(s);
    const char *tail = "421 4.7.0 Too much pipelined input, closing\r\n";
    CHECK(o.len > strlen(tail) &&
          memcmp(o.p + o.len - strlen(tail), tail, strlen(tail)) == 0);
    CHECK(pl_smtp_is_done(s));
    pl_smtp_free(s);
    pl_buf_reset(&flood);
    pl_buf_reset(&r.ev);
}

/* Verdicts given later: input waits, then goes on in order. */
void test_gw_smtp_resume(void)
{
    struct pl_smtp_config c = config(PL_SMTP_LMTP);
    struct rec r = {.defer = 1};
    struct pl_smtp *s = pl_smtp_new(&c, on_event, &r);
    const char *in = "LHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.z>\r\n"
                     "RCPT TO:<w@y.z>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n";
    pl_smtp_feed(s, in, strlen(in));
    CHECK(pl_smtp_is_pending(s));
    CHECK(!pl_smtp_wants_input(s));
    CHECK_STR(pl_buf_cstr(&r.ev), "HELO a\n");
    CHECK_INT(pl_smtp_resume(s, NULL, 0), PL_OK); /* LHLO */
    CHECK_INT(pl_smtp_resume(s, NULL, 0), PL_OK); /* MAIL */
    struct pl_smtp_reply no = {450, "4.2.1", "Mailbox busy"};
    CHECK_INT(pl_smtp_resume(s, &no, 1), PL_OK);  /* RCPT x */
    CHECK_INT(pl_smtp_resume(s, NULL, 0), PL_OK); /* RCPT w */
    CHECK(pl_smtp_is_pending(s));                 /* DATA */
    struct pl_smtp_reply ok[1] = {{0, NULL, NULL}};
    CHECK_INT(pl_smtp_resume(s, ok, 1), PL_OK);
    CHECK(!pl_smtp_is_pending(s));
    CHECK_INT(pl_smtp_resume(s, ok, 1), PL_EINVAL);
    CHECK(pl_smtp_is_done(s));
    struct pl_str o = pl_smtp_output(s);
    struct pl_buf got = {0};
    pl_buf_append(&got, o.p, o.len);
    CHECK_STR(pl_buf_cstr(&got),
              "220 mx.example.org LMTP Parley\r\n"
              "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 200\r\n"
              "250-8BITMIME\r\n250-DSN\r\n"
              "250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
              "250 2.1.0 Sender <> OK\r\n"
              "450 4.2.1 Mailbox busy\r\n"
              "250 2.1.5 Recipient <w@y.z> OK\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.1.5 <w@y.z> delivered\r\n"
              "221 2.0.0 Bye\r\n");
    CHECK_STR(pl_buf_cstr(&r.ev), "HELO a\nMAIL <> size=0 8bit=0 utf8=0\n"
                                  "RCPT <x@y.z>\nRCPT <w@y.z>\n"
                                  "DATA 1 [hello\r\n]\n");
    pl_buf_reset(&got);
    pl_buf_reset(&r.ev);
    pl_smtp_free(s);

    /* A timeout while pending ends with 421 4.4.2; Received: is added. */
    c = config(PL_SMTP_SMTP);
    c.add_received = 1;
    c.peer = "192.0.2.7";
    r = (struct rec){0};
    s = pl_smtp_new(&c, on_event, &r);
    in = "EHLO a.example\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.z>\r\nDATA\r\n"
         "hi\r\n.\r\n";
    pl_smtp_feed(s, in, strlen(in));
    CHECK(strstr(pl_buf_cstr(&r.ev),
                 "DATA 1 [Received: from a.example (192.0.2.7)\r\n\tby "
                 "mx.example.org with ESMTP; ") != NULL);
    pl_smtp_timeout(s);
    o = pl_smtp_output(s);
    pl_buf_append(&got, o.p, o.len);
    CHECK(strstr(pl_buf_cstr(&got), "421 4.4.2 Timeout") != NULL);
    CHECK_INT(pl_smtp_feed(s, "NOOP\r\n", 6), PL_ECLOSED);
    pl_buf_reset(&got);
    pl_buf_reset(&r.ev);
    pl_smtp_free(s);
}

/* Feeds in and returns the output so far (appended to got). */
static const char *feed(struct pl_smtp *s, const char *in, struct pl_buf *got)
{
    pl_smtp_feed(s, in, strlen(in));
    struct pl_str o = pl_smtp_output(s);
    pl_buf_append(got, o.p, o.len);
    pl_smtp_output_sent(s, o.len);
    return pl_buf_cstr(got);
}

/* STARTTLS (RFC 3207): offered only before TLS, the session starts over
 * after it, what was pipelined after it in plaintext is dropped
 * (CVE-2011-0411), and "required" refuses mail without it. */
void test_gw_smtp_starttls(void)
{
    /* Not configured: not offered, 502 as before. */
    struct pl_smtp_config c = config(PL_SMTP_SMTP);
    struct rec r = {0};
    struct pl_buf got = {0};
    struct pl_smtp *s = pl_smtp_new(&c, on_event, &r);
    CHECK_STR(feed(s, "EHLO a\r\nSTARTTLS\r\n", &got),
              GREET EHLO_REPLY "502 5.5.1 Command not implemented\r\n");
    CHECK(!pl_smtp_tls_wanted(s));
    pl_buf_reset(&got);
    pl_buf_reset(&r.ev);
    pl_smtp_free(s);

    /* Offered; the pipelined MAIL and RCPT after STARTTLS never run. */
    c.tls = PL_SMTP_TLS_OFFER;
    c.add_received = 1;
    r = (struct rec){0};
    s = pl_smtp_new(&c, on_event, &r);
    const char *in = "EHLO a\r\nSTARTTLS\r\nMAIL FROM:<evil@x.y>\r\n"
                     "RCPT TO:<v@y.z>\r\n";
    CHECK_STR(feed(s, in, &got),
              GREET "250-mx.example.org\r\n250-PIPELINING\r\n"
                    "250-SIZE 200\r\n250-8BITMIME\r\n250-DSN\r\n"
                    "250-STARTTLS\r\n250-SMTPUTF8\r\n"
                    "250 ENHANCEDSTATUSCODES\r\n"
                    "220 2.0.0 Ready to start TLS\r\n");
    CHECK(pl_smtp_tls_wanted(s));
    CHECK(!pl_smtp_wants_input(s));
    CHECK_INT((long)pl_smtp_tls_discarded(s), 39);
    /* More plaintext before the handshake: dropped too. */
    CHECK_INT(pl_smtp_feed(s, "DATA\r\n", 6), PL_OK);
    CHECK_INT((long)pl_smtp_output(s).len, 0);
    CHECK_INT((long)pl_smtp_tls_discarded(s), 45);
    CHECK_STR(pl_buf_cstr(&r.ev), "HELO a\n");
    pl_smtp_tls_started(s);
    CHECK(pl_smtp_tls_active(s));
    CHECK(pl_smtp_wants_input(s));
    pl_buf_reset(&got);
    /* HELO was forgotten; EHLO no longer offers STARTTLS. */
    CHECK_STR(feed(s, "MAIL FROM:<a@b.c>\r\nEHLO b\r\nSTARTTLS\r\n", &got),
              "503 5.5.1 Send HELO/EHLO first\r\n" EHLO_REPLY
              "503 5.5.1 TLS already active\r\n");
    pl_buf_reset(&got);
    CHECK_STR(feed(s,
                   "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
                   "hi\r\n.\r\n",
                   &got),
              "250 2.1.0 Sender <a@b.c> OK\r\n"
              "250 2.1.5 Recipient <d@e.f> OK\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.0.0 Message accepted\r\n");
    CHECK(strstr(pl_buf_cstr(&r.ev), "by mx.example.org with ESMTPS; "));
    CHECK(!strstr(pl_buf_cstr(&r.ev), "evil"));
    pl_buf_reset(&got);
    pl_buf_reset(&r.ev);
    pl_smtp_free(s);

    /* Not with parameters, not inside a transaction. */
    r = (struct rec){0};
    s = pl_smtp_new(&c, on_event, &r);
    CHECK(strstr(feed(s,
                      "EHLO a\r\nSTARTTLS now\r\nMAIL FROM:<>\r\n"
                      "STARTTLS\r\nRSET\r\nSTARTTLS\r\n",
                      &got),
                 "501 5.5.4 Syntax: STARTTLS (no parameters)\r\n"
                 "250 2.1.0 Sender <> OK\r\n"
                 "503 5.5.1 STARTTLS not allowed in a mail transaction\r\n"
                 "250 2.0.0 OK\r\n"
                 "220 2.0.0 Ready to start TLS\r\n"));
    CHECK(pl_smtp_tls_wanted(s));
    CHECK_INT((long)pl_smtp_tls_discarded(s), 0);
    pl_buf_reset(&got);
    pl_buf_reset(&r.ev);
    pl_smtp_free(s);

    /* Required: 530 to mail commands before TLS, mail after it. */
    c.tls = PL_SMTP_TLS_REQUIRE;
    r = (struct rec){0};
    s = pl_smtp_new(&c, on_event, &r);
    CHECK(strstr(feed(s,
                      "EHLO a\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
                      "DATA\r\nVRFY x\r\nNOOP\r\nSTARTTLS\r\n",
                      &got),
                 "250 ENHANCEDSTATUSCODES\r\n"
                 "530 5.7.0 Must issue a STARTTLS command first\r\n"
                 "530 5.7.0 Must issue a STARTTLS command first\r\n"
                 "530 5.7.0 Must issue a STARTTLS command first\r\n"
                 "530 5.7.0 Must issue a STARTTLS command first\r\n"
                 "250 2.0.0 OK\r\n"
                 "220 2.0.0 Ready to start TLS\r\n"));
    CHECK(strstr(pl_buf_cstr(&got), "250-STARTTLS\r\n"));
    CHECK_STR(pl_buf_cstr(&r.ev), "HELO a\n");
    pl_smtp_tls_started(s);
    pl_buf_reset(&got);
    CHECK_STR(feed(s, "EHLO a\r\nMAIL FROM:<a@b.c>\r\n", &got),
              EHLO_REPLY "250 2.1.0 Sender <a@b.c> OK\r\n");
    pl_buf_reset(&got);
    pl_buf_reset(&r.ev);
    pl_smtp_free(s);
}
