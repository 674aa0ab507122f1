/*
 * test_gw_dsn.c - delivery status notifications (src/gateway/mail/dsn.c):
 * built reports parse back field for field, an RFC 3464 Appendix-style
 * report from another MTA parses, and bad input is refused.
 */
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/mail/dsn.h"
#include "unit.h"

void test_gw_dsn_roundtrip(void)
{
    struct pl_dsn_rcpt rc[] = {
        {"alice@example.org", "alice@example.org", PL_DSN_FAILED, "5.1.1",
         "dns; sms.example.org", "smtp; 550 5.1.1 No such user", 1700000000, 0},
        {"+15551234@sms.example.org", NULL, PL_DSN_DELIVERED, "2.0.0", NULL,
         NULL, 0, 0},
        {"bob@example.org", NULL, PL_DSN_DELAYED, "4.4.1", NULL,
         "x-gateway; SMS centre unreachable", 0, 1700086400},
    };
    const char *orig = "From: sender@example.net\r\nTo: alice@example.org\r\n"
                       "Subject: hello\r\nMessage-ID: <orig.1@example.net>\r\n"
                       "\r\nsecret body text\r\n";
    struct pl_dsn d = {
        .reporting_mta = "mail.example.org",
        .from = "MAILER-DAEMON@mail.example.org",
        .to = "sender@example.net",
        .envelope_id = "QQ314159",
        .arrival = 1699990000,
        .rcpts = rc,
        .nrcpts = 3,
        .original = pl_str_c(orig),
        .date = 1700000100,
    };
    struct pl_buf out = {0};
    char *id = NULL;
    CHECK_INT(pl_dsn_build(&d, &out, &id), PL_OK);
    const char *s = pl_buf_cstr(&out);
    CHECK(strstr(s, "Content-Type: multipart/report; "
                    "report-type=delivery-status;") ||
          strstr(s, "Content-Type: multipart/report; boundary"));
    CHECK(strstr(s, "report-type=delivery-status") != NULL);
    CHECK(strstr(s, "Content-Type: message/delivery-status") != NULL);
    CHECK(strstr(s, "Content-Type: text/rfc822-headers") != NULL);
    CHECK(strstr(s, "Auto-Submitted: auto-replied\r\n") != NULL);
    CHECK(strstr(s, "Subject: Delivery Status Notification (Failure)"));
    CHECK(strstr(s, "Action: failed\r\nStatus: 5.1.1\r\n") != NULL);
    CHECK(strstr(s, "secret body text") == NULL); /* headers only */
    CHECK(id != NULL);

    struct pl_dsn_report *r = NULL;
    CHECK_INT(pl_dsn_parse(pl_buf_str(&out), &r), PL_OK);
    if (r) {
        CHECK_STR(r->reporting_mta, "mail.example.org");
        CHECK_STR(r->envelope_id, "QQ314159");
        CHECK(r->arrival_date && strstr(r->arrival_date, "2023"));
        CHECK_STR(r->original_message_id, "orig.1@example.net");
        CHECK_INT(r->nrcpts, 3);
        if (r->nrcpts == 3) {
            CHECK_STR(r->rcpts[0].final_recipient, "alice@example.org");
            CHECK_STR(r->rcpts[0].original_recipient, "alice@example.org");
            CHECK_INT(r->rcpts[0].action, PL_DSN_FAILED);
            CHECK_STR(r->rcpts[0].status, "5.1.1");
            CHECK_STR(r->rcpts[0].remote_mta, "dns; sms.example.org");
            CHECK_STR(r->rcpts[0].diagnostic, "smtp; 550 5.1.1 No such user");
            CHECK_STR(r->rcpts[1].final_recipient, "+15551234@sms.example.org");
            CHECK_INT(r->rcpts[1].action, PL_DSN_DELIVERED);
            CHECK_STR(r->rcpts[1].status, "2.0.0");
            CHECK(r->rcpts[1].diagnostic == NULL);
            CHECK_INT(r->rcpts[2].action, PL_DSN_DELAYED);
            CHECK_STR(r->rcpts[2].status, "4.4.1");
        }
        pl_dsn_report_free(r);
    }
    pl_free(id);
    pl_buf_reset(&out);

    /* Bad values are refused, nothing written. */
    rc[0].status = "9.9.9";
    CHECK_INT(pl_dsn_build(&d, &out, NULL), PL_EINVAL);
    rc[0].status = "5.1.1";
    rc[0].action = 42;
    CHECK_INT(pl_dsn_build(&d, &out, NULL), PL_EINVAL);
    rc[0].action = PL_DSN_FAILED;
    rc[0].diagnostic = "smtp; 550\r\nAction: delivered";
    CHECK_INT(pl_dsn_build(&d, &out, NULL), PL_EINVAL);
    CHECK_INT(out.len, 0);
}

/* A report as another MTA writes it (RFC 3464 Appendix C style: folded
 * fields, comments after the action, message/rfc822 returned). */
void test_gw_dsn_foreign(void)
{
    const char *raw =
        "From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example>\r\n"
        "To: <gw@mail.example.org>\r\n"
        "Subject: Returned mail\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=\"Delivery-Status\";\r\n"
        "\tboundary=\"RAA14128.773615765/relay.example\"\r\n\r\n"
        "--RAA14128.773615765/relay.example\r\n\r\n"
        "The original message was received ...\r\n\r\n"
        "--RAA14128.773615765/relay.example\r\n"
        "content-type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example\r\n"
        "Arrival-Date: Mon, 29 Jul 1996 02:12:50 -0700\r\n\r\n"
        "Final-Recipient: RFC822; ned@innosoft.example\r\n"
        "Action: failed (bad destination mailbox address)\r\n"
        "Status: 5.1.1 (user unknown)\r\n"
        "Diagnostic-Code: smtp;\r\n"
        " 550 No such user\r\n\r\n"
        "Final-Recipient: rfc822; carol@x.example\r\n"
        "Action: delayed\r\n"
        "Status: 4.0.0\r\n\r\n"
        "--RAA14128.773615765/relay.example\r\n"
        "Content-Type: message/rfc822\r\n\r\n"
        "Message-ID: <out.7@mail.example.org>\r\nSubject: hi\r\n\r\nbody\r\n"
        "--RAA14128.773615765/relay.example--\r\n";
    struct pl_dsn_report *r = NULL;
    CHECK_INT(pl_dsn_parse(pl_str_c(raw), &r), PL_OK);
    if (!r)
        return;
    CHECK_STR(r->reporting_mta, "relay.example");
    CHECK_STR(r->original_message_id, "out.7@mail.example.org");
    CHECK_INT(r->nrcpts, 2);
    if (r->nrcpts == 2) {
        CHECK_STR(r->rcpts[0].final_recipient, "ned@innosoft.example");
        CHECK_INT(r->rcpts[0].action, PL_DSN_FAILED);
        CHECK_STR(r->rcpts[0].status, "5.1.1");
        CHECK_STR(r->rcpts[0].diagnostic, "smtp; 550 No such user");
        CHECK_INT(r->rcpts[1].action, PL_DSN_DELAYED);
    }
    pl_dsn_report_free(r);

    /* Not a report, or a report without recipients. */
    r = NULL;
    CHECK_INT(pl_dsn_parse(pl_str_c("From: a@b\r\n\r\nhello\r\n"), &r),
              PL_EINVAL);
    CHECK_INT(
        pl_dsn_parse(pl_str_c("Content-Type: multipart/report; "
                              "report-type=delivery-status; boundary=b\r\n\r\n"
                              "--b\r\nContent-Type: message/delivery-status\r\n"
                              "\r\nReporting-MTA: dns; x\r\n--b--\r\n"),
                     &r),
        PL_EINVAL);
    CHECK(r == NULL);
}
