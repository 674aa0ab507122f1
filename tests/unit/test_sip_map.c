/*
 * test_sip_map.c - SIP URI <-> JID and SIP status <-> XMPP error mapping
 * (src/sip/map_addr.c), with the examples of RFC 7247 §6.4 and §6.5 and
 * its Tables 2 and 3, then hostile URIs.
 */
#include <stdlib.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/core/jid.h"
#include "../../src/core/stanza.h"
#include "../../src/core/xml.h"
#include "../../src/sip/map_addr.h"
#include "unit.h"

/* uri -> JID full form (NULL: expect refusal with rc). */
static void check_to_jid(const char *uri, unsigned flags, const char *want,
                         int rc_want)
{
    struct pl_jid *j = (struct pl_jid *)&j;
    enum pl_sip_scheme sch = 0;
    int rc = pl_sip_uri_to_jid(pl_str_c(uri), flags, &j, &sch);
    if (rc != rc_want)
        fprintf(stderr, "  uri \"%s\": rc %d (%s)\n", uri, rc, pl_strerror(rc));
    CHECK_INT(rc, rc_want);
    if (rc == PL_OK) {
        CHECK_STR(j->full, want);
        CHECK(sch != 0);
        pl_jid_free(j);
    } else {
        CHECK(j == (struct pl_jid *)&j); /* untouched */
    }
}

static void check_to_uri(const char *jid, enum pl_sip_scheme sch,
                         unsigned flags, const char *want)
{
    struct pl_jid *j = NULL;
    CHECK_INT(pl_jid_parse(pl_str_c(jid), &j), PL_OK);
    if (!j)
        return;
    char *uri = NULL;
    CHECK_INT(pl_sip_jid_to_uri(j, sch, flags, &uri), PL_OK);
    CHECK_STR(uri, want);
    pl_free(uri);
    pl_jid_free(j);
}

void test_sip_uri_to_jid(void)
{
    static const struct {
        const char *uri, *jid;
        unsigned flags;
    } cases[] = {
        /* RFC 7247 §6.4, the table of examples. */
        {"sip:f%C3%BC@sip.example", "f\xc3\xbc@sip.example", 0},
        {"sip:o'malley@sip.example", "o\\27malley@sip.example", 0},
        {"sip:foo@sip.example;gr=bar", "foo@sip.example/bar", 0},
        /* RFC 7572 and RFC 8048 addresses. */
        {"sip:juliet@example.com", "juliet@example.com", 0},
        {"sip:romeo@example.net;gr=dr4hcr0st3lup4c",
         "romeo@example.net/dr4hcr0st3lup4c", 0},
        {"im:romeo@example.net", "romeo@example.net", 0},
        {"pres:juliet@example.com", "juliet@example.com", 0},
        /* Scheme and host are case-insensitive, the localpart is folded
         * by PRECIS. */
        {"SIP:Alice@Example.COM", "alice@example.com", 0},
        /* & ' / are SIP user characters, XEP-0106 escapes in XMPP. */
        {"sip:m&m@xmpp.example", "m\\26m@xmpp.example", 0},
        {"sip:a/b@example.com", "a\\2fb@example.com", 0},
        /* Percent-decoded characters a localpart cannot hold. */
        {"sip:a%20b@example.com", "a\\20b@example.com", 0},
        {"sip:a%40b@example.com", "a\\40b@example.com", 0},
        {"sip:a%3Ab%22c%3Cd%3E@example.com", "a\\3ab\\22c\\3cd\\3e@example.com",
         0},
        /* A backslash is escaped only before an escape code. */
        {"sip:a%5C27b@example.com", "a\\5c27b@example.com", 0},
        {"sip:a%5Cxb@example.com", "a\\xb@example.com", 0},
        /* Port, other parameters and headers say nothing of the address. */
        {"sip:alice@example.com:5060;transport=tcp;lr?Subject=hi",
         "alice@example.com", 0},
        {"sip:alice@192.0.2.4:5070", "alice@192.0.2.4", 0},
        {"sip:alice@[2001:db8::1]", "alice@[2001:db8::1]", 0},
        /* User characters ; ? = + $ , stay in the localpart. */
        {"sip:a;b?c=d+e$f,g@example.com;gr=x", "a;b?c=d+e$f,g@example.com/x",
         0},
        /* No user part: the domain. */
        {"sip:example.com", "example.com", 0},
        /* A temporary GRUU (no value) is not a resource; NO_GRUU. */
        {"sip:a@example.com;gr", "a@example.com", 0},
        {"sip:a@example.com;GR=x%20y", "a@example.com/x y", 0},
        {"sip:a@example.com;gr=x", "a@example.com", PL_SIP_MAP_NO_GRUU},
        /* An A-label host becomes the U-label domain. */
        {"sip:user@xn--bcher-kva.example",
         "user@b\xc3\xbc"
         "cher.example",
         0},
        {"sips:alice@example.com", "alice@example.com", PL_SIP_MAP_SIPS},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_to_jid(cases[i].uri, cases[i].flags, cases[i].jid, PL_OK);
}

void test_sip_uri_refused(void)
{
    static const struct {
        const char *uri;
        int rc;
    } cases[] = {
        {"tel:+1-201-555-0123", PL_EFEATURE_NOT_IMPLEMENTED},
        {"http://example.com/", PL_EFEATURE_NOT_IMPLEMENTED},
        {"xmpp:juliet@example.com", PL_EFEATURE_NOT_IMPLEMENTED},
        {"sips:alice@example.com", PL_EFORBIDDEN}, /* RFC 7247 §8 */
        {"", PL_EJID_MALFORMED},
        {"sip:", PL_EJID_MALFORMED},
        {":alice@example.com", PL_EJID_MALFORMED},
        {"1sip:alice@example.com", PL_EJID_MALFORMED},
        {"sip:@example.com", PL_EJID_MALFORMED},
        {"sip:alice:secret@example.com", PL_EJID_MALFORMED},
        {"sip:al ice@example.com", PL_EJID_MALFORMED},
        {"sip:alice@exa mple.com", PL_EJID_MALFORMED},
        {"sip:alice@example.com\r\nVia: x", PL_EJID_MALFORMED},
        {"sip:al\"ice@example.com", PL_EJID_MALFORMED},
        {"sip:a<b@example.com", PL_EJID_MALFORMED},
        {"sip:alice@b@example.com", PL_EJID_MALFORMED},
        {"sip:%zz@example.com", PL_EJID_MALFORMED},
        {"sip:a%2@example.com", PL_EJID_MALFORMED},
        {"sip:a%00b@example.com", PL_EJID_MALFORMED},
        {"sip:%FF%FE@example.com", PL_EJID_MALFORMED},    /* not UTF-8 */
        {"sip:%ED%A0%80@example.com", PL_EJID_MALFORMED}, /* surrogate */
        {"sip:%20alice@example.com", PL_EJID_MALFORMED},  /* XEP-0106 */
        {"sip:alice%20@example.com", PL_EJID_MALFORMED},
        {"sip:a%01b@example.com", PL_EJID_MALFORMED}, /* PRECIS */
        {"sip:a@example.com;gr=x;gr=y", PL_EJID_MALFORMED},
        {"sip:a@example.com;gr=%C3", PL_EJID_MALFORMED},
        {"sip:a@example.com;gr=a%00b", PL_EJID_MALFORMED},
        {"sip:a@example.com;=x", PL_EJID_MALFORMED},
        {"sip:a@example.com:99999", PL_EJID_MALFORMED},
        {"sip:a@example.com:", PL_EJID_MALFORMED},
        {"sip:a@example.com:50x", PL_EJID_MALFORMED},
        {"sip:a@[2001:db8::1", PL_EJID_MALFORMED},
        {"sip:a@[]", PL_EJID_MALFORMED},
        {"sip:a@", PL_EJID_MALFORMED},
        {"sip:a@-.", PL_EJID_MALFORMED},
        {"im:example.com", PL_EJID_MALFORMED},
        {"im:a@example.com;gr=x", PL_EJID_MALFORMED},
        {"pres:a(b)@example.com", PL_EJID_MALFORMED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_to_jid(cases[i].uri, 0, NULL, cases[i].rc);

    /* A NUL inside the span, and a localpart over 1023 bytes. */
    struct pl_jid *j = NULL;
    CHECK_INT(pl_sip_uri_to_jid((struct pl_str){"sip:a\0b@x.example", 16}, 0,
                                &j, NULL),
              PL_EJID_MALFORMED);
    char big[2100];
    memcpy(big, "sip:", 4);
    memset(big + 4, 'a', 2000);
    memcpy(big + 2004, "@example.com", 13);
    CHECK_INT(pl_sip_uri_to_jid(pl_str_c(big), 0, &j, NULL), PL_EJID_MALFORMED);
    /* %-encoding of a 1023-byte localpart is fine. */
    memset(big + 4, 'a', 1023);
    memcpy(big + 4 + 1023, "@example.com", 13);
    CHECK_INT(pl_sip_uri_to_jid(pl_str_c(big), 0, &j, NULL), PL_OK);
    pl_jid_free(j);
}

void test_sip_jid_to_uri(void)
{
    /* RFC 7247 §6.5, the table of examples. */
    check_to_uri("m\\26m@xmpp.example", PL_SIP_SCHEME_SIP, 0,
                 "sip:m&m@xmpp.example");
    check_to_uri("tsch\xc3\xbcss@xmpp.example", PL_SIP_SCHEME_SIP, 0,
                 "sip:tsch%C3%BCss@xmpp.example");
    check_to_uri("baz@xmpp.example/qux", PL_SIP_SCHEME_SIP, PL_SIP_MAP_GRUU,
                 "sip:baz@xmpp.example;gr=qux");
    /* RFC 7572 Example 2: the sender with its resource as GRUU. */
    check_to_uri("juliet@example.com/yn0cl4bnw0yr3vym", PL_SIP_SCHEME_SIP,
                 PL_SIP_MAP_GRUU, "sip:juliet@example.com;gr=yn0cl4bnw0yr3vym");
    /* Without the flag the resource is dropped. */
    check_to_uri("baz@xmpp.example/qux", PL_SIP_SCHEME_SIP, 0,
                 "sip:baz@xmpp.example");
    check_to_uri("o\\27malley@sip.example", PL_SIP_SCHEME_SIPS, 0,
                 "sips:o'malley@sip.example");
    /* Step 5: # % [ \ ] ^ ` { | } are percent-encoded for sip. */
    check_to_uri("a#b%c[d]e^f`g{h|i}j@example.com", PL_SIP_SCHEME_SIP, 0,
                 "sip:a%23b%25c%5Bd%5De%5Ef%60g%7Bh%7Ci%7Dj@example.com");
    /* Unescaped space and @ are not SIP user characters either. */
    check_to_uri("a\\20b\\40c@example.com", PL_SIP_SCHEME_SIP, 0,
                 "sip:a%20b%40c@example.com");
    /* A backslash that is no escape stays, percent-encoded. */
    check_to_uri("a\\xb@example.com", PL_SIP_SCHEME_SIP, 0,
                 "sip:a%5Cxb@example.com");
    check_to_uri("a\\5c27b@example.com", PL_SIP_SCHEME_SIP, 0,
                 "sip:a%5C27b@example.com");
    /* pres/im (RFC 7247 step 5): ( ) , . ; [ \ ] and non-ASCII encoded. */
    check_to_uri("juliet@example.com", PL_SIP_SCHEME_PRES, 0,
                 "pres:juliet@example.com");
    check_to_uri("j.c;x(y)@example.com/r", PL_SIP_SCHEME_IM, PL_SIP_MAP_GRUU,
                 "im:j%2Ec%3Bx%28y%29@example.com");
    /* A domain JID, an IDN, an IP literal, a resource to encode. */
    check_to_uri("example.com", PL_SIP_SCHEME_SIP, 0, "sip:example.com");
    check_to_uri("user@b\xc3\xbc"
                 "cher.example",
                 PL_SIP_SCHEME_SIP, 0, "sip:user@xn--bcher-kva.example");
    check_to_uri("a@[2001:db8::1]", PL_SIP_SCHEME_SIP, 0,
                 "sip:a@[2001:db8::1]");
    check_to_uri("a@example.com/b\xc3\xa4r x;y=z", PL_SIP_SCHEME_SIP,
                 PL_SIP_MAP_GRUU, "sip:a@example.com;gr=b%C3%A4r%20x%3By%3Dz");
}

/* Every URI that maps to a JID maps back to an equivalent URI. */
void test_sip_addr_round_trip(void)
{
    static const char *const uris[] = {
        "sip:f%C3%BC@sip.example",
        "sip:o'malley@sip.example",
        "sip:foo@sip.example;gr=bar",
        "sip:m&m@xmpp.example",
        "sip:a%20b%40c%3A@example.com",
        "sip:a%5C27b@example.com",
        "sip:a%5Cxb@example.com",
        "sip:a;b?c=d+e$f,g@example.com",
        "sip:x@example.com;gr=b%C3%A4r%20x%3By",
        "sip:example.com",
    };
    for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
        struct pl_jid *j = NULL, *k = NULL;
        char *back = NULL;
        CHECK_INT(pl_sip_uri_to_jid(pl_str_c(uris[i]), 0, &j, NULL), PL_OK);
        if (!j)
            continue;
        CHECK_INT(pl_sip_jid_to_uri(j, PL_SIP_SCHEME_SIP, PL_SIP_MAP_GRUU,
                                    &back),
                  PL_OK);
        CHECK_STR(back, uris[i]);
        CHECK_INT(pl_sip_uri_to_jid(pl_str_c(back), 0, &k, NULL), PL_OK);
        if (k)
            CHECK_STR(k->full, j->full);
        pl_free(back);
        pl_jid_free(j);
        pl_jid_free(k);
    }
}

void test_sip_pct_decode(void)
{
    char *out = NULL;
    size_t n = 0;
    CHECK_INT(pl_sip_pct_decode(PL_STR("a%41%62c%00d"), &out, &n), PL_OK);
    CHECK_INT(n, 6);
    CHECK(out && memcmp(out, "aAbc\0d", 6) == 0);
    pl_free(out);
    out = (char *)&out;
    CHECK_INT(pl_sip_pct_decode(PL_STR("a%4"), &out, &n), PL_EINVAL);
    CHECK_INT(pl_sip_pct_decode(PL_STR("%"), &out, &n), PL_EINVAL);
    CHECK_INT(pl_sip_pct_decode(PL_STR("%g0"), &out, &n), PL_EINVAL);
    CHECK(out == (char *)&out);
}

/* RFC 7247 §7.1, Table 2, with the notes' choices. */
void test_sip_status_for_condition(void)
{
    static const struct {
        const char *cond;
        unsigned flags;
        int status;
    } cases[] = {
        {"bad-request", 0, 400},
        {"conflict", 0, 400},
        {"feature-not-implemented", 0, 405},
        {"feature-not-implemented", PL_SIP_ERR_BARE, 501},
        {"forbidden", 0, 403},
        {"forbidden", PL_SIP_ERR_BARE, 603},
        {"gone", 0, 410},
        {"gone", PL_SIP_ERR_NEW_ADDRESS, 301},
        {"internal-server-error", 0, 500},
        {"item-not-found", 0, 404},
        {"item-not-found", PL_SIP_ERR_BARE, 604},
        {"jid-malformed", 0, 400},
        {"not-acceptable", 0, 406},
        {"not-acceptable", PL_SIP_ERR_BARE, 606},
        {"not-allowed", 0, 403},
        {"not-authorized", 0, 401},
        {"policy-violation", 0, 403},
        {"recipient-unavailable", 0, 480},
        {"recipient-unavailable", PL_SIP_ERR_BARE, 600},
        {"redirect", 0, 302},
        {"registration-required", 0, 407},
        {"remote-server-not-found", 0, 404},
        {"remote-server-timeout", 0, 408},
        {"resource-constraint", 0, 500},
        {"service-unavailable", 0, 403},
        {"service-unavailable", PL_SIP_ERR_BARE, 403},
        {"subscription-required", 0, 400},
        {"undefined-condition", 0, 400},
        {"unexpected-request", 0, 491},
        {"no-such-condition", 0, 400},
        {NULL, 0, 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int s = pl_sip_status_for_condition(cases[i].cond, cases[i].flags);
        if (s != cases[i].status)
            fprintf(stderr, "  %s\n", cases[i].cond ? cases[i].cond : "NULL");
        CHECK_INT(s, cases[i].status);
    }
}

static struct pl_stanza *parse(const char *xml)
{
    struct pl_stanza *st = NULL;
    CHECK_INT(pl_xml_parse_fragment(xml, strlen(xml), &st), PL_OK);
    return st;
}

void test_sip_error_from_stanza(void)
{
    struct pl_sip_error e;
    /* A bounce from a bare JID, with a <text/> over two lines. */
    struct pl_stanza *st = parse(
        "<message xmlns='jabber:client' from='juliet@example.com' "
        "to='romeo@example.net' type='error'><body>hi</body>"
        "<error type='cancel'><item-not-found "
        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text "
        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>No such\r\n  "
        "user</text></error></message>");
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_OK);
    CHECK_INT(e.status, 604);
    CHECK_STR(e.reason, "No such user");
    CHECK_STR(e.contact, NULL);
    pl_sip_error_clear(&e);
    pl_stanza_unref(st);

    /* From a full JID: the 4xx code; an unknown foreign child ignored. */
    st = parse("<message xmlns='jabber:client' from='juliet@example.com/b' "
               "type='error'><error type='cancel'><x xmlns='urn:x'/>"
               "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
               "</error></message>");
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_OK);
    CHECK_INT(e.status, 404);
    CHECK_STR(e.reason, NULL);
    pl_sip_error_clear(&e);
    pl_stanza_unref(st);

    /* <gone/> with a new address (RFC 6120 §8.3.3.5): 301 and Contact. */
    st = parse("<message xmlns='jabber:client' from='juliet@example.com' "
               "type='error'><error type='cancel'><gone "
               "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>"
               "xmpp:juliet@afterwards.example</gone></error></message>");
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_OK);
    CHECK_INT(e.status, 301);
    CHECK_STR(e.contact, "sip:juliet@afterwards.example");
    pl_sip_error_clear(&e);
    pl_stanza_unref(st);

    /* <gone/> with no usable address: 410. */
    st = parse("<message xmlns='jabber:client' from='juliet@example.com/x' "
               "type='error'><error type='cancel'><gone "
               "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>xmpp://a b"
               "</gone></error></message>");
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_OK);
    CHECK_INT(e.status, 410);
    CHECK_STR(e.contact, NULL);
    pl_sip_error_clear(&e);
    pl_stanza_unref(st);

    /* <redirect/> to a sip: URI stays that URI. */
    st = parse("<message xmlns='jabber:client' from='a@example.com/x' "
               "type='error'><error type='modify'><redirect "
               "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>"
               "sip:b@example.com</redirect></error></message>");
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_OK);
    CHECK_INT(e.status, 302);
    CHECK_STR(e.contact, "sip:b@example.com");
    pl_sip_error_clear(&e);
    pl_stanza_unref(st);

    /* service-unavailable never becomes 503 (note 5). */
    st = parse("<message xmlns='jabber:client' from='a@example.com' "
               "type='error'><error type='cancel'><service-unavailable "
               "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
               "</message>");
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_OK);
    CHECK_INT(e.status, 403);
    pl_sip_error_clear(&e);
    pl_stanza_unref(st);

    /* No <error/>: PL_EINVAL, 500 to answer with anyway; a long text is
     * cut at a character boundary. */
    st = parse("<message xmlns='jabber:client' type='error'/>");
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_EINVAL);
    CHECK_INT(e.status, 500);
    pl_stanza_unref(st);
    char xml[1024];
    char text[400];
    for (size_t i = 0; i < 100; i++)
        memcpy(text + 3 * i, "\xe2\x82\xac", 3); /* U+20AC */
    text[300] = '\0';
    snprintf(xml, sizeof(xml),
             "<message xmlns='jabber:client' type='error'><error><bad-request "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>%s</text></error>"
             "</message>",
             text);
    st = parse(xml);
    CHECK_INT(pl_sip_error_from_stanza(st, &e), PL_OK);
    CHECK_INT(e.status, 400);
    CHECK(e.reason && strlen(e.reason) == 126);
    pl_sip_error_clear(&e);
    pl_stanza_unref(st);
}

/* RFC 7247 §7.2, Table 3, and the class defaults. */
void test_sip_condition_for_status(void)
{
    static const struct {
        int status;
        const char *cond, *type;
        int code;
    } cases[] = {
        {300, "redirect", "modify", PL_ERECIPIENT_UNAVAILABLE},
        {301, "gone", "cancel", PL_EITEM_NOT_FOUND},
        {302, "redirect", "modify", PL_ERECIPIENT_UNAVAILABLE},
        {305, "redirect", "modify", PL_ERECIPIENT_UNAVAILABLE},
        {380, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {399, "redirect", "modify", PL_ERECIPIENT_UNAVAILABLE},
        {400, "bad-request", "modify", PL_EBAD_REQUEST},
        {401, "not-authorized", "auth", PL_ENOT_AUTHORIZED},
        {402, "bad-request", "modify", PL_EBAD_REQUEST},
        {403, "forbidden", "auth", PL_EFORBIDDEN},
        {404, "item-not-found", "cancel", PL_EITEM_NOT_FOUND},
        {405, "feature-not-implemented", "cancel", PL_EFEATURE_NOT_IMPLEMENTED},
        {406, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {407, "registration-required", "auth", PL_ENOT_AUTHORIZED},
        {408, "remote-server-timeout", "wait", PL_EREMOTE_SERVER_TIMEOUT},
        {410, "gone", "cancel", PL_EITEM_NOT_FOUND},
        {413, "policy-violation", "modify", PL_EPOLICY_VIOLATION},
        {414, "policy-violation", "modify", PL_EPOLICY_VIOLATION},
        {415, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {416, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {420, "feature-not-implemented", "cancel", PL_EFEATURE_NOT_IMPLEMENTED},
        {421, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {423, "resource-constraint", "wait", PL_ERESOURCE_CONSTRAINT},
        {430, "recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
        {439, "feature-not-implemented", "cancel", PL_EFEATURE_NOT_IMPLEMENTED},
        {440, "policy-violation", "modify", PL_EPOLICY_VIOLATION},
        {480, "recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
        {481, "item-not-found", "cancel", PL_EITEM_NOT_FOUND},
        {482, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {483, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {484, "item-not-found", "cancel", PL_EITEM_NOT_FOUND},
        {485, "item-not-found", "cancel", PL_EITEM_NOT_FOUND},
        {486, "recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
        {487, "recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
        {488, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {489, "policy-violation", "modify", PL_EPOLICY_VIOLATION},
        {491, "unexpected-request", "wait", PL_EUNEXPECTED_REQUEST},
        {493, "bad-request", "modify", PL_EBAD_REQUEST},
        {499, "bad-request", "modify", PL_EBAD_REQUEST},
        {500, "internal-server-error", "cancel", PL_EINTERNAL_SERVER_ERROR},
        {501, "feature-not-implemented", "cancel", PL_EFEATURE_NOT_IMPLEMENTED},
        {502, "remote-server-not-found", "cancel", PL_EREMOTE_SERVER_NOT_FOUND},
        {503, "internal-server-error", "cancel", PL_EINTERNAL_SERVER_ERROR},
        {504, "remote-server-timeout", "wait", PL_EREMOTE_SERVER_TIMEOUT},
        {505, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {513, "policy-violation", "modify", PL_EPOLICY_VIOLATION},
        {599, "internal-server-error", "cancel", PL_EINTERNAL_SERVER_ERROR},
        {600, "recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
        {603, "recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
        {604, "item-not-found", "cancel", PL_EITEM_NOT_FOUND},
        {606, "not-acceptable", "modify", PL_ENOT_ACCEPTABLE},
        {699, "recipient-unavailable", "wait", PL_ERECIPIENT_UNAVAILABLE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *cond = NULL, *type = NULL;
        int code = pl_sip_condition_for_status(cases[i].status, &cond, &type);
        if (!cond || strcmp(cond, cases[i].cond) != 0)
            fprintf(stderr, "  status %d\n", cases[i].status);
        CHECK_STR(cond, cases[i].cond);
        CHECK_STR(type, cases[i].type);
        CHECK_INT(code, cases[i].code);
    }
    static const int fine[] = {100, 180, 200, 202, 299, 0, -1, 700, 1000};
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
        const char *cond = "x", *type = "y";
        CHECK_INT(pl_sip_condition_for_status(fine[i], &cond, &type), PL_OK);
        CHECK_STR(cond, NULL);
        CHECK_STR(type, NULL);
    }
}

static void check_serialized(struct pl_stanza *st, const char *want)
{
    struct pl_str s = pl_stanza_serialize(st, PL_NS_CLIENT);
    char *got = pl_strndup(s.p, s.len);
    CHECK_STR(got, want);
    pl_free(got);
}

void test_sip_error_reply(void)
{
    struct pl_stanza *m = parse(
        "<message xmlns='jabber:client' from='juliet@example.com/balcony' "
        "to='romeo@example.net' id='m1'><body>Wherefore?</body></message>");
    /* 480 with its Reason-Phrase as <text/>. */
    struct pl_stanza *r = pl_sip_error_reply(m, 480,
                                             PL_STR("Temporarily Unavailable"),
                                             (struct pl_str){NULL, 0});
    CHECK(r != NULL);
    if (r)
        check_serialized(
            r, "<message from='romeo@example.net' "
               "to='juliet@example.com/balcony' id='m1' type='error'>"
               "<body>Wherefore?</body><error type='wait'>"
               "<recipient-unavailable "
               "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text "
               "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Temporarily "
               "Unavailable</text></error></message>");
    pl_stanza_unref(r);
    /* 301 with a Contact: <gone/> carries the new address (note 1). */
    r = pl_sip_error_reply(m, 301, (struct pl_str){NULL, 0},
                           PL_STR("sip:romeo@afterwards.example"));
    CHECK(r != NULL);
    if (r)
        check_serialized(r, "<message from='romeo@example.net' "
                            "to='juliet@example.com/balcony' id='m1' "
                            "type='error'><body>Wherefore?</body><error "
                            "type='cancel'><gone "
                            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>"
                            "xmpp:romeo@afterwards.example</gone></error>"
                            "</message>");
    pl_stanza_unref(r);
    /* A Timer F timeout is a 408 (RFC 3261 §8.1.3.1). */
    r = pl_sip_error_reply(m, 408, (struct pl_str){NULL, 0},
                           (struct pl_str){NULL, 0});
    CHECK(r != NULL);
    if (r) {
        struct pl_node *e = pl_node_child(pl_stanza_root(r), "error",
                                          PL_NS_CLIENT);
        CHECK(e && pl_node_child(e, "remote-server-timeout", PL_NS_STANZAS));
        CHECK(e && strcmp(pl_node_attr(e, "type"), "wait") == 0);
        CHECK(e && pl_node_count_elems(e) == 1);
    }
    pl_stanza_unref(r);
    /* Not a failure, or an error stanza: no reply. */
    CHECK(pl_sip_error_reply(m, 200, (struct pl_str){NULL, 0},
                             (struct pl_str){NULL, 0}) == NULL);
    struct pl_stanza *err = parse(
        "<message xmlns='jabber:client' type='error' from='a@b'/>");
    CHECK(pl_sip_error_reply(err, 404, (struct pl_str){NULL, 0},
                             (struct pl_str){NULL, 0}) == NULL);
    pl_stanza_unref(err);
    pl_stanza_unref(m);

    CHECK_STR(pl_sip_reason(200), "OK");
    CHECK_STR(pl_sip_reason(415), "Unsupported Media Type");
    CHECK_STR(pl_sip_reason(513), "Message Too Large");
    CHECK_STR(pl_sip_reason(299), "Success");
    CHECK_STR(pl_sip_reason(499), "Failure");
}
