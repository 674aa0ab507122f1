/*
 * test_gw_media.c - the parts of parley-gateway's media.c that decide
 * without I/O: which linked URLs may be fetched (media.fetch_from, the
 * SSRF guard), links added to SMS text, oob URLs read from a message.
 */
#include <string.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/core/stanza.h"
#include "../../src/core/xml.h"
#include "../../src/gateway/core.h"
#include "unit.h"

void test_gw_media_fetch_allowed(void)
{
    char *saved = pl_gw.c.media_fetch_from;
    pl_gw.c.media_fetch_from = (char *)"http://127.0.0.1:5280/upload/, "
                                       "https://chat.example.org";
    static const struct {
        const char *url;
        int ok;
    } cases[] = {
        {"http://127.0.0.1:5280/upload/abc/photo.png", 1},
        {"https://chat.example.org/upload/abc/x.pdf", 1},
        {"https://chat.example.org", 0}, /* no path: nothing to fetch */
        {"http://127.0.0.1:5280/admin", 0},
        {"http://127.0.0.1:52801/upload/abc/x", 0},
        {"http://127.0.0.1:5280@evil.example/upload/x", 0},
        {"https://chat.example.org.evil.example/upload/x", 0},
        {"https://chat.example.org@evil.example/upload/x", 0},
        {"https://chat.example.org:444/upload/x", 0},
        {"http://127.0.0.1:5280/upload/../admin/x", 0},
        {"http://127.0.0.1:5280/upload/%2e%2e/admin", 0},
        {"http://127.0.0.1:5280/uploadx/abc", 0},
        {"ftp://127.0.0.1:5280/upload/abc", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (pl__gw_media_fetch_allowed(cases[i].url) != cases[i].ok) {
            CHECK_STR(cases[i].url, cases[i].ok ? "allowed" : "refused");
        }
    }
    pl_gw.c.media_fetch_from = (char *)"";
    CHECK_INT(pl__gw_media_fetch_allowed(
                  "http://127.0.0.1:5280/upload/abc/photo.png"),
              0);
    pl_gw.c.media_fetch_from = saved;
}

void test_gw_media_text(void)
{
    const char *t = "look at this";
    char *s = pl_gw_media_text(t, strlen(t),
                               "https://u.example/a/1.png\n"
                               "https://u.example/b/2.png");
    CHECK_STR(s, "look at this https://u.example/a/1.png "
                 "https://u.example/b/2.png");
    pl_free(s);
    /* Conversations: the body is the URL already. */
    t = "https://u.example/a/1.png";
    s = pl_gw_media_text(t, strlen(t), "https://u.example/a/1.png");
    CHECK_STR(s, "https://u.example/a/1.png");
    pl_free(s);
}

void test_gw_media_oob(void)
{
    long saved = pl_gw.c.media_max_count;
    pl_gw.c.media_max_count = 2;
    static const char x[] =
        "<message xmlns='jabber:client' to='a@b'><body>hi</body>"
        "<x xmlns='jabber:x:oob'><url>https://u.example/a/1.png</url></x>"
        "<x xmlns='jabber:x:oob'><url>javascript:alert(1)</url></x>"
        "<x xmlns='urn:other'><url>https://u.example/not</url></x>"
        "<x xmlns='jabber:x:oob'><url>https://u.example/b/2 x.png</url></x>"
        "<x xmlns='jabber:x:oob'><url>https://u.example/c/3.png</url></x>"
        "<x xmlns='jabber:x:oob'><url>https://u.example/d/4.png</url></x>"
        "</message>";
    struct pl_stanza *st = NULL;
    CHECK_INT(pl_xml_parse_fragment(x, sizeof(x) - 1, &st), PL_OK);
    if (st) {
        char *l = pl_gw_media_oob(st);
        CHECK_STR(l, "https://u.example/a/1.png\nhttps://u.example/c/3.png");
        pl_free(l);
        pl_stanza_unref(st);
    }
    pl_gw.c.media_max_count = saved;
}
