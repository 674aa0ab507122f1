/*
 * test_caps.c - XEP-0115 verification strings and hashes
 * (src/modules/pep/caps.c) against the examples of §5.2 and §5.3, and
 * the §5.4 rejections.
 */
#include <string.h>

#include "../../src/core/xml.h"
#include "../../src/modules/pep/caps.h"
#include "unit.h"

static struct pl_stanza *parse(const char *xml)
{
    struct pl_stanza *st = NULL;
    CHECK(pl_xml_parse_fragment(xml, strlen(xml), &st) == PL_OK);
    return st;
}

/* XEP-0115 §5.2 simple example. */
static const char simple[] =
    "<query xmlns='http://jabber.org/protocol/disco#info'>"
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "</query>";

/* XEP-0115 §5.3 complex example. */
static const char complex_[] =
    "<query xmlns='http://jabber.org/protocol/disco#info'>"
    "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
    "<identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "<x xmlns='jabber:x:data' type='result'>"
    "<field var='FORM_TYPE' type='hidden'>"
    "<value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
    "<field var='os'><value>Mac</value></field>"
    "<field var='os_version'><value>10.5.1</value></field>"
    "<field var='software'><value>Psi</value></field>"
    "<field var='software_version'><value>0.11</value></field>"
    "</x></query>";

void test_caps_ver(void)
{
    struct pl_stanza *st = parse(simple);
    struct pl_buf s = {0}, h = {0};
    CHECK(pl__pep_caps_ver_string(st, pl_stanza_root(st), &s) == PL_OK);
    CHECK_STR(pl_buf_cstr(&s),
              "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
              "http://jabber.org/protocol/disco#info<"
              "http://jabber.org/protocol/disco#items<"
              "http://jabber.org/protocol/muc<");
    CHECK(pl__pep_caps_hash("sha-1", pl_buf_str(&s), &h) == PL_OK);
    CHECK_STR(pl_buf_cstr(&h), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    CHECK(pl__pep_caps_verify(st, pl_stanza_root(st), "sha-1",
                              "QgayPKawpkPSDYmwT/WM94uAlu0="));
    CHECK(!pl__pep_caps_verify(st, pl_stanza_root(st), "sha-1",
                               "QgayPKawpkPSDYmwT/WM94uAlu1="));
    CHECK(!pl__pep_caps_verify(st, pl_stanza_root(st), "md5",
                               "QgayPKawpkPSDYmwT/WM94uAlu0="));
    pl_stanza_unref(st);
    pl_buf_reset(&s);
    pl_buf_reset(&h);

    st = parse(complex_);
    CHECK(pl__pep_caps_ver_string(st, pl_stanza_root(st), &s) == PL_OK);
    CHECK_STR(pl_buf_cstr(&s),
              "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<"
              "http://jabber.org/protocol/caps<"
              "http://jabber.org/protocol/disco#info<"
              "http://jabber.org/protocol/disco#items<"
              "http://jabber.org/protocol/muc<"
              "urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<"
              "os_version<10.5.1<software<Psi<software_version<0.11<");
    CHECK(pl__pep_caps_verify(st, pl_stanza_root(st), "sha-1",
                              "q07IKJEyjvHSyhy//CH0CxmKi8w="));
    pl_stanza_unref(st);
    pl_buf_reset(&s);
}

void test_caps_reject(void)
{
    /* §5.4: duplicate features, identities or FORM_TYPEs. */
    static const char *const bad[] = {
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<feature var='a'/><feature var='a'/></query>",
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<identity category='client' type='pc'/>"
        "<identity category='client' type='pc'/></query>",
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' "
        "type='hidden'><value>f</value></field></x>"
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' "
        "type='hidden'><value>f</value></field></x></query>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pl_stanza *st = parse(bad[i]);
        struct pl_buf s = {0};
        CHECK(pl__pep_caps_ver_string(st, pl_stanza_root(st), &s) == PL_EINVAL);
        pl_buf_reset(&s);
        pl_stanza_unref(st);
    }
}
