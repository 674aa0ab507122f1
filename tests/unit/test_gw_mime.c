/*
 * test_gw_mime.c - e-mail parsing and building (src/gateway/mail/mime.c):
 * RFC 2047 words, charsets, multipart/alternative, HTML to text,
 * attachments and their limits, malformed MIME (missing boundaries, bad
 * charsets, deep nesting, huge headers), and a build/parse round trip.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "gateway/mail/mime.h"
#include <glib.h>
#include "unit.h"

static struct pl_mail_msg *parse(const char *raw,
                                 const struct pl_mail_limits *l)
{
    struct pl_mail_msg *m = NULL;
    int rc = pl_mail_parse(pl_str_c(raw), l, &m);
    CHECK_INT(rc, PL_OK);
    return m;
}

void test_gw_mime_plain(void)
{
    struct pl_mail_msg *m = parse(
        "From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>\r\n"
        "To: bob@example.net, \"Carol\" <carol@example.net>\r\n"
        "Cc: dave@example.net\r\n"
        "Subject: =?UTF-8?B?Q2Fmw6kgw6AgMTBo?= =?ISO-8859-1?Q?_ce_soir?=\r\n"
        "Message-ID: <abc.123@example.org>\r\n"
        "In-Reply-To: <prev@example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Voil=E0 le caf=E9.\r\n",
        NULL);
    if (!m)
        return;
    CHECK_STR(m->from, "andre@example.org");
    CHECK_STR(m->from_name, "Andr\xc3\xa9");
    CHECK_INT(m->nto, 3);
    if (m->nto == 3) {
        CHECK_STR(m->to[0], "bob@example.net");
        CHECK_STR(m->to[1], "carol@example.net");
        CHECK_STR(m->to[2], "dave@example.net");
    }
    CHECK_STR(m->subject, "Caf\xc3\xa9 \xc3\xa0 10h ce soir");
    CHECK_STR(m->message_id, "abc.123@example.org");
    CHECK_STR(m->in_reply_to, "prev@example.net");
    CHECK_STR(m->text, "Voil\xc3\xa0 le caf\xc3\xa9.\r\n");
    CHECK_INT(m->natt, 0);
    CHECK_INT(m->bad_charset, 0);
    pl_mail_msg_free(m);
}

void test_gw_mime_alternative(void)
{
    const char *alt =
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: alt\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
        "--outer\r\n"
        "Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
        "--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<p>HTML <b>version</b></p>\r\n"
        "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Plain version\r\n"
        "--inner--\r\n"
        "--outer\r\n"
        "Content-Type: image/png; name=\"dot.png\"\r\n"
        "Content-Disposition: attachment; filename=\"dot.png\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        "iVBORw0KGgo=\r\n"
        "--outer\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment;\r\n"
        " filename*=UTF-8''r%C3%A9sum%C3%A9.bin\r\n\r\n"
        "raw bytes\r\n"
        "--outer--\r\n";
    struct pl_mail_msg *m = parse(alt, NULL);
    if (!m)
        return;
    CHECK_STR(m->text, "Plain version");
    CHECK_INT(m->text_from_html, 0);
    CHECK_INT(m->natt, 2);
    if (m->natt == 2) {
        CHECK_STR(m->att[0].name, "dot.png");
        CHECK_STR(m->att[0].type, "image/png");
        CHECK_INT(m->att[0].len, 8);
        CHECK(memcmp(m->att[0].data, "\x89PNG\r\n\x1a\n", 8) == 0);
        CHECK_STR(m->att[1].name, "r\xc3\xa9sum\xc3\xa9.bin");
        CHECK_INT(m->att[1].len, 9);
    }
    pl_mail_msg_free(m);

    /* Limits: one attachment kept, the other dropped. */
    struct pl_mail_limits l;
    pl_mail_limits_default(&l);
    l.max_attachments = 1;
    m = parse(alt, &l);
    if (m) {
        CHECK_INT(m->natt, 1);
        CHECK_INT(m->dropped, 1);
        pl_mail_msg_free(m);
    }
    l.max_attachments = 10;
    l.max_attachment_bytes = 8;
    m = parse(alt, &l);
    if (m) {
        CHECK_INT(m->natt, 1);
        CHECK_INT(m->dropped, 1);
        pl_mail_msg_free(m);
    }
    /* Depth 1: the alternative's texts are too deep. */
    l.max_depth = 1;
    m = parse(alt, &l);
    if (m) {
        CHECK_STR(m->text, "");
        CHECK(m->dropped >= 2);
        pl_mail_msg_free(m);
    }
}

void test_gw_mime_html(void)
{
    struct pl_mail_msg *m =
        parse("From: a@example.org\r\nTo: b@example.org\r\n"
              "Content-Type: text/html; charset=windows-1252\r\n\r\n"
              "<html><head><title>T</title><style>p{}</style></head><body>"
              "<h1>News</h1><p>Caf\xe9 &amp; th\xe9 &#8364;5 &euro;</p>"
              "<ul><li>one</li><li>two</li></ul>"
              "<p>See <a href=\"https://example.org/x?a=1&amp;b=2\">this</a>."
              "<br>Bye<script>alert(1)</script></p></body></html>\r\n",
              NULL);
    if (!m)
        return;
    CHECK_INT(m->text_from_html, 1);
    CHECK_STR(m->text, "News\n\nCaf\xc3\xa9 & th\xc3\xa9 \xe2\x82\xac"
                       "5 "
                       "\xe2\x82\xac\n\n- one\n- two\n\nSee this "
                       "<https://example.org/x?a=1&b=2>.\nBye");
    pl_mail_msg_free(m);

    static const struct {
        const char *in, *out;
    } t[] = {
        {"", ""},
        {"plain   text\n here", "plain text here"},
        {"<pre>a  b\n c</pre>x", "a  b\n c\nx"},
        {"a<br/>b<br />c", "a\nb\nc"},
        {"&lt;tag&gt; &#x41;&#66; &bogus; &", "<tag> AB &bogus; &"},
        {"<!-- hidden -->shown<!-- unterminated", "shown"},
        {"<img src=x alt=\"logo\">text", "[logo]text"},
        {"<table><tr><td>a</td><td>b</td></tr></table>", "a b"},
        {"unclosed <b", "unclosed"},
        {"&#0; &#xD800; &#99999999;", "\xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pl_buf b = {0};
        pl_mail_html_to_text(pl_str_c(t[i].in), &b);
        CHECK_STR(pl_buf_cstr(&b), t[i].out);
        pl_buf_reset(&b);
    }
}

/* Malformed MIME: whatever can be recovered, never a crash. */
void test_gw_mime_malformed(void)
{
    /* No closing boundary, a boundary that never appears. */
    struct pl_mail_msg *m =
        parse("From: a@example.org\r\nTo: b@example.org\r\n"
              "Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
              "--zz\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n",
              NULL);
    if (m) {
        CHECK(strstr(m->text, "first part") != NULL);
        pl_mail_msg_free(m);
    }
    m = parse("From: a@example.org\r\n"
              "Content-Type: multipart/mixed; boundary=never\r\n\r\n"
              "just text\r\n",
              NULL);
    if (m) {
        CHECK_INT(m->natt, 0);
        pl_mail_msg_free(m);
    }
    /* A charset nobody knows, and bytes that are not that charset. */
    m = parse("From: a@example.org\r\n"
              "Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
              "ok \xff\xfe text\r\n",
              NULL);
    if (m) {
        CHECK_INT(m->bad_charset, 1);
        CHECK_STR(m->text, "ok \xef\xbf\xbd\xef\xbf\xbd text\r\n");
        pl_mail_msg_free(m);
    }
    m = parse("From: a@example.org\r\n"
              "Content-Type: text/plain; charset=utf-8\r\n\r\n"
              "bad \xc3\x28 utf8\r\n",
              NULL);
    if (m) {
        CHECK_INT(m->bad_charset, 1);
        CHECK(g_utf8_validate(m->text, -1, NULL));
        pl_mail_msg_free(m);
    }
    /* No charset and not UTF-8: Windows-1252. */
    m = parse("From: a@example.org\r\n\r\nna\xefve\r\n", NULL);
    if (m) {
        CHECK_STR(m->text, "na\xc3\xafve\r\n");
        pl_mail_msg_free(m);
    }
    /* A huge header line (200 KB) and a bad encoded word. */
    struct pl_buf raw = {0};
    pl_buf_append_str(&raw, "From: a@example.org\r\nSubject: ");
    for (int i = 0; i < 20000; i++)
        pl_buf_append_str(&raw, "0123456789");
    pl_buf_append_str(&raw, "\r\nX-Bad: =?bogus?Q?x?=\r\n\r\nbody\r\n");
    m = parse(pl_buf_cstr(&raw), NULL);
    if (m) {
        CHECK_INT(strlen(m->subject), 200000);
        CHECK_STR(m->text, "body\r\n");
        pl_mail_msg_free(m);
    }
    pl_buf_reset(&raw);
    /* Deep nesting: refused before GMime recurses. */
    for (int i = 0; i < 5000; i++)
        pl_buf_printf(&raw,
                      "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                      "--b%d\r\n",
                      i, i);
    pl_buf_append_str(&raw, "Content-Type: text/plain\r\n\r\ndeep\r\n");
    m = NULL;
    CHECK_INT(pl_mail_parse(pl_buf_str(&raw), NULL, &m), PL_ELIMIT);
    CHECK(m == NULL);
    pl_buf_reset(&raw);
    /* Nesting under the refusal bound but past max_depth: dropped. */
    for (int i = 0; i < 40; i++)
        pl_buf_printf(&raw,
                      "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                      "--b%d\r\n",
                      i, i);
    pl_buf_append_str(&raw, "Content-Type: text/plain\r\n\r\ndeep\r\n");
    m = parse(pl_buf_cstr(&raw), NULL);
    if (m) {
        CHECK_STR(m->text, "");
        CHECK(m->dropped >= 1);
        pl_mail_msg_free(m);
    }
    pl_buf_reset(&raw);
    /* Empty input and garbage: a message with no headers. */
    m = NULL;
    int rc = pl_mail_parse(pl_str_c(""), NULL, &m);
    CHECK(rc == PL_OK || rc == PL_EINVAL);
    pl_mail_msg_free(m);
}

void test_gw_mime_build(void)
{
    const char *to[] = {"bob@example.net"};
    struct pl_mail_link links[] = {
        {"https://upload.example.org/abc/photo.jpg", "photo.jpg", "image/jpeg",
         123456},
    };
    struct pl_mail_out o = {
        .from = "alice@mail.example.org",
        .from_name = "Alice L\xc3\xa9vy",
        .to = to,
        .nto = 1,
        .subject = "R\xc3\xa9union demain",
        .text = "Bonjour, \xc3\xa7"
                "a va ?\nLine two.",
        .links = links,
        .nlinks = 1,
        .in_reply_to = "orig@example.net",
        .id_domain = "mail.example.org",
        .date = 1700000000,
    };
    struct pl_buf out = {0};
    char *id = NULL;
    CHECK_INT(pl_mail_build(&o, &out, &id), PL_OK);
    const char *s = pl_buf_cstr(&out);
    CHECK(strstr(s, "MIME-Version: 1.0\r\n") != NULL);
    CHECK(strstr(s, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n") != NULL);
    CHECK(strstr(s, "In-Reply-To: <orig@example.net>\r\n") != NULL);
    CHECK(strstr(s, "Subject: =?") != NULL);
    CHECK(strstr(s, "Content-Transfer-Encoding: quoted-printable") ||
          strstr(s, "Content-Transfer-Encoding: base64"));
    CHECK(id && strstr(id, "@mail.example.org"));
    /* CRLF only, and every byte 7-bit. */
    for (size_t i = 0; i < out.len; i++) {
        unsigned char c = (unsigned char)s[i];
        CHECK(c < 0x80);
        if (c == '\n' && !(i > 0 && s[i - 1] == '\r')) {
            CHECK(!"bare LF");
            break;
        }
    }
    struct pl_mail_msg *m = parse(s, NULL);
    if (m) {
        CHECK_STR(m->from, "alice@mail.example.org");
        CHECK_STR(m->from_name, "Alice L\xc3\xa9vy");
        CHECK_STR(m->subject, "R\xc3\xa9union demain");
        CHECK_STR(m->message_id, id);
        CHECK_STR(m->in_reply_to, "orig@example.net");
        CHECK(strstr(m->text, "Bonjour, \xc3\xa7"
                              "a va ?") != NULL);
        CHECK(strstr(m->text, "- photo.jpg (image/jpeg, 120.6 KB)") != NULL);
        CHECK(strstr(m->text, "https://upload.example.org/abc/photo.jpg"));
        pl_mail_msg_free(m);
    }
    pl_free(id);
    pl_buf_reset(&out);

    /* Bad addresses are refused, nothing written. */
    const char *bad[] = {"not an address"};
    o.to = bad;
    CHECK_INT(pl_mail_build(&o, &out, NULL), PL_EINVAL);
    CHECK_INT(out.len, 0);
}

/* Files attached by the gateway (media.c): multipart/mixed, base64,
 * every byte back as it went in, names and types kept. */
void test_gw_mime_build_files(void)
{
    const char *to[] = {"bob@example.net"};
    unsigned char bin[3000];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (unsigned char)(i * 7 + i / 256);
    char txt[] = "line one\r\nline two\n";
    struct pl_mail_attachment att[] = {
        {(char *)"r\xc3\xa9sum\xc3\xa9.pdf", (char *)"application/pdf", bin,
         sizeof(bin)},
        {(char *)"notes.txt", (char *)"text/plain", (unsigned char *)txt,
         sizeof(txt) - 1},
    };
    struct pl_mail_out o = {
        .from = "alice@mail.example.org",
        .to = to,
        .nto = 1,
        .text = "two files",
        .att = att,
        .natt = 2,
        .id_domain = "mail.example.org",
    };
    struct pl_buf out = {0};
    CHECK_INT(pl_mail_build(&o, &out, NULL), PL_OK);
    const char *s = pl_buf_cstr(&out);
    CHECK(strstr(s, "multipart/mixed") != NULL);
    for (size_t i = 0; i < out.len; i++)
        if ((unsigned char)s[i] >= 0x80) {
            CHECK(!"8-bit byte");
            break;
        }
    struct pl_mail_msg *m = parse(s, NULL);
    CHECK(m != NULL);
    if (m) {
        CHECK(strstr(m->text, "two files") != NULL);
        CHECK_INT(m->natt, 2);
        if (m->natt == 2) {
            CHECK_STR(m->att[0].name, "r\xc3\xa9sum\xc3\xa9.pdf");
            CHECK_STR(m->att[0].type, "application/pdf");
            CHECK_INT(m->att[0].len, sizeof(bin));
            CHECK(memcmp(m->att[0].data, bin, sizeof(bin)) == 0);
            CHECK_STR(m->att[1].name, "notes.txt");
            CHECK_INT(m->att[1].len, sizeof(txt) - 1);
            CHECK(memcmp(m->att[1].data, txt, sizeof(txt) - 1) == 0);
        }
        pl_mail_msg_free(m);
    }
    pl_buf_reset(&out);
}
