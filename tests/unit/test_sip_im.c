/*
 * test_sip_im.c - page-mode MESSAGE <-> <message/> (src/sip/map_im.c),
 * with the examples of RFC 7572 §4, §5 and §8 and RFC 3428 §10, then
 * content types, charsets, sizes and hostile bodies.
 */
#include <stdlib.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/core/stanza.h"
#include "../../src/core/xml.h"
#include "../../src/sip/map_im.h"
#include "unit.h"

static char *serialized(struct pl_stanza *st)
{
    struct pl_str s = pl_stanza_serialize(st, PL_NS_CLIENT);
    return pl_strndup(s.p, s.len);
}

static struct pl_stanza *parse(const char *xml)
{
    struct pl_stanza *st = NULL;
    CHECK_INT(pl_xml_parse_fragment(xml, strlen(xml), &st), PL_OK);
    return st;
}

/* A MESSAGE of RFC 7572 Example 4 with the given type and body. */
static struct pl_sip_im_in example4(const char *ctype, const char *body)
{
    struct pl_sip_im_in in = {
        .request_uri = PL_STR("sip:juliet@example.com"),
        .from_uri = PL_STR("sip:romeo@example.net"),
        .content_type = pl_str_c(ctype),
        .body = pl_str_c(body),
    };
    return in;
}

/* Maps in and checks the result: status want, and the serialized
 * stanza when want is 200. */
static void check_in(const struct pl_sip_im_in *in,
                     const struct pl_sip_im_opts *opts, int want,
                     const char *xml)
{
    struct pl_stanza *st = (struct pl_stanza *)&st;
    int status = 0;
    int rc = pl_sip_im_to_xmpp(in, opts, &st, &status);
    CHECK_INT(status, want);
    if (want == 200) {
        CHECK_INT(rc, PL_OK);
        if (rc != PL_OK)
            return;
        char *s = serialized(st);
        CHECK_STR(s, xml);
        pl_free(s);
        pl_stanza_unref(st);
    } else {
        CHECK(rc < 0);
        CHECK(st == (struct pl_stanza *)&st);
    }
}

/* RFC 7572 Examples 4 and 5, Examples 6 and 7, RFC 3428 F1. */
void test_sip_im_rfc7572_to_xmpp(void)
{
    struct pl_sip_im_in in =
        example4("text/plain", "Neither, fair saint, if either thee dislike.");
    in.from_resource = "dr4hcr0st3lup4c";
    struct pl_sip_im_opts normal = {.type_normal = 1};
    check_in(&in, &normal, 200,
             "<message from='romeo@example.net/dr4hcr0st3lup4c' "
             "to='juliet@example.com' type='normal'><body>Neither, fair "
             "saint, if either thee dislike.</body></message>");
    /* Parley's default type is chat; Call-ID -> <thread/>, id kept. */
    in.call_id = PL_STR("9E97FB43-85F4-4A00-8751-1124FD4C7B2E");
    in.id = PL_STR("z9hG4bKeskdgs677");
    in.from_resource = NULL;
    check_in(&in, NULL, 200,
             "<message from='romeo@example.net' to='juliet@example.com' "
             "type='chat' id='z9hG4bKeskdgs677'><body>Neither, fair "
             "saint, if either thee dislike.</body><thread>"
             "9E97FB43-85F4-4A00-8751-1124FD4C7B2E</thread></message>");

    /* Example 6: Content-Language: cs -> xml:lang (§8). */
    in = example4("text/plain",
                  "Nic z ob\xc3\xa9ho, m\xc3\xa1 d\xc4\x9bvo spanil\xc3\xa1,"
                  "\r\nnenavid\xc3\xad\xc5\xa1-li jedno nebo druh\xc3\xa9.");
    in.language = PL_STR("cs");
    check_in(&in, &normal, 200,
             "<message from='romeo@example.net' to='juliet@example.com' "
             "type='normal' xml:lang='cs'><body>Nic z ob\xc3\xa9ho, m\xc3\xa1 "
             "d\xc4\x9bvo spanil\xc3\xa1,\nnenavid\xc3\xad\xc5\xa1-li jedno "
             "nebo druh\xc3\xa9.</body></message>");

    /* RFC 3428 §10, F1, with a From tag-less URI and a GRUU. */
    struct pl_sip_im_in f1 = {
        .request_uri = PL_STR("sip:user2@domain.com"),
        .from_uri = PL_STR("sip:user1@domain.com;gr=pc"),
        .content_type = PL_STR("text/plain"),
        .body = PL_STR("Watson, come here."),
        .call_id = PL_STR("asd88asd77a@1.2.3.4"),
        .subject = PL_STR("Urgent\r\n  matters"),
    };
    check_in(&f1, NULL, 200,
             "<message from='user1@domain.com/pc' to='user2@domain.com' "
             "type='chat'><subject>Urgent    matters</subject><body>Watson, "
             "come here.</body><thread>asd88asd77a@1.2.3.4</thread>"
             "</message>");
}

void test_sip_im_content_types(void)
{
    static const struct {
        const char *ctype;
        int status;
    } cases[] = {
        {"text/plain", 200},
        {"TEXT/Plain", 200},
        {"text/plain;charset=UTF-8", 200},
        {"text/plain ; charset = \"utf-8\"", 200},
        {"text/plain;format=flowed;charset=us-ascii", 200},
        {"text/plain;charset=ISO-8859-1", 415},
        {"text/plain;charset=utf-16", 415},
        {"text/html", 415},
        {"message/cpim", 415},
        {"application/im-iscomposing+xml", 415},
        {"text/plain;charset=utf-8;charset=utf-8", 400},
        {"text", 400},
        {"text/", 400},
        {"/plain", 400},
        {"text/plain;charset", 400},
        {"text/plain;charset=\"utf-8", 400},
        {"text/plain,text/html", 400},
        {"", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_sip_im_in in = example4(cases[i].ctype, "hi");
        struct pl_stanza *st = NULL;
        int status = 0;
        int rc = pl_sip_im_to_xmpp(&in, NULL, &st, &status);
        if (status != cases[i].status)
            fprintf(stderr, "  Content-Type: %s\n", cases[i].ctype);
        CHECK_INT(status, cases[i].status);
        CHECK_INT(rc, status == 200   ? PL_OK
                      : status == 415 ? PL_ENOT_ACCEPTABLE
                                      : PL_EBAD_REQUEST);
        pl_stanza_unref(st);
    }
    struct pl_sip_media_type mt;
    CHECK_INT(pl_sip_media_type_parse(
                  PL_STR("application/pidf+xml ;charset=\"UTF-8\""), &mt),
              PL_OK);
    CHECK(pl_sip_media_type_is(&mt, "application", "pidf+xml"));
    CHECK(mt.charset.len == 5 && memcmp(mt.charset.p, "UTF-8", 5) == 0);
}

void test_sip_im_bodies(void)
{
    /* Empty body, not UTF-8, 8-bit in US-ASCII: 400. */
    struct pl_sip_im_in in = example4("text/plain", "");
    check_in(&in, NULL, 400, NULL);
    in = example4("text/plain", "caf\xe9");
    check_in(&in, NULL, 400, NULL);
    in = example4("text/plain;charset=us-ascii", "caf\xc3\xa9");
    check_in(&in, NULL, 400, NULL);
    in = example4("text/plain", "\xed\xa0\x80"); /* a surrogate */
    check_in(&in, NULL, 400, NULL);
    in = example4("text/plain", "\xf4\x90\x80\x80"); /* over U+10FFFF */
    check_in(&in, NULL, 400, NULL);
    /* A Subject that is not UTF-8. */
    in = example4("text/plain", "hi");
    in.subject = PL_STR("\xff");
    check_in(&in, NULL, 400, NULL);

    /* What XML cannot carry: NUL, other C0, U+FFFE; CR LF and CR are LF;
     * markup characters are escaped and come back as text. */
    static const char body[] = "a\0b\x01\tc\r\nd\re\xef\xbf\xbe<&>]]>'\"";
    in = example4("text/plain", "");
    in.body = (struct pl_str){body, sizeof(body) - 1};
    struct pl_stanza *st = NULL;
    int status = 0;
    CHECK_INT(pl_sip_im_to_xmpp(&in, NULL, &st, &status), PL_OK);
    if (st) {
        struct pl_node *b = pl_node_child(pl_stanza_root(st), "body",
                                          PL_NS_CLIENT);
        const char *t = b ? pl_node_text(st, b, NULL) : "";
        CHECK_STR(t, "a\xef\xbf\xbd"
                     "b\xef\xbf\xbd\tc\nd\ne\xef\xbf\xbd<&>]]>'\"");
        char *s = serialized(st);
        CHECK(strstr(s, "<body>a\xef\xbf\xbd"
                        "b\xef\xbf\xbd\tc\nd\ne\xef\xbf"
                        "\xbd&lt;&amp;&gt;]]&gt;'\"</body>") != NULL);
        pl_free(s);
        pl_stanza_unref(st);
    }

    /* Size: the option, and the default of PL_SIP_IM_MAX_BODY. */
    struct pl_sip_im_opts small = {.max_body = 10};
    in = example4("text/plain", "0123456789");
    check_in(&in, &small, 200,
             "<message from='romeo@example.net' to='juliet@example.com' "
             "type='chat'><body>0123456789</body></message>");
    in = example4("text/plain", "0123456789A");
    check_in(&in, &small, 413, NULL);
    char *big = pl_malloc(PL_SIP_IM_MAX_BODY + 2);
    memset(big, 'x', PL_SIP_IM_MAX_BODY + 1);
    big[PL_SIP_IM_MAX_BODY + 1] = '\0';
    in = example4("text/plain", big);
    check_in(&in, NULL, 413, NULL);
    big[PL_SIP_IM_MAX_BODY] = '\0';
    in = example4("text/plain", big);
    CHECK_INT(pl_sip_im_to_xmpp(&in, NULL, &st, &status), PL_OK);
    pl_stanza_unref(st);
    pl_free(big);

    /* Headers that cannot be mapped are left out, not refused. */
    in = example4("text/plain", "hi");
    in.call_id = PL_STR("has space");
    in.language = PL_STR("1cs");
    in.id = PL_STR("\xff");
    check_in(&in, NULL, 200,
             "<message from='romeo@example.net' to='juliet@example.com' "
             "type='chat'><body>hi</body></message>");
    in.language = PL_STR("en-GB, fr");
    in.id = PL_STR("a'b<c");
    check_in(&in, NULL, 200,
             "<message from='romeo@example.net' to='juliet@example.com' "
             "type='chat' id='a&apos;b&lt;c' xml:lang='en-GB'><body>hi</body>"
             "</message>");
}

void test_sip_im_addresses(void)
{
    static const struct {
        const char *to, *from;
        unsigned flags;
        int status;
    } cases[] = {
        {"tel:+12015550123", "sip:romeo@example.net", 0, 416},
        {"sips:juliet@example.com", "sip:romeo@example.net", 0, 403},
        {"sips:juliet@example.com", "sips:romeo@example.net", PL_SIP_MAP_SIPS,
         200},
        {"sip:@example.com", "sip:romeo@example.net", 0, 404},
        {"sip:a%00b@example.com", "sip:romeo@example.net", 0, 404},
        {"sip:juliet@example.com", "sip:ro meo@example.net", 0, 400},
        {"sip:juliet@example.com", "tel:+12015550123", 0, 400},
        {"sip:juliet@example.com", "", 0, 400},
        {"", "sip:romeo@example.net", 0, 404},
        /* Only the recipient's sips: matters (RFC 7247 §8). */
        {"sip:juliet@example.com", "sips:romeo@example.net", 0, 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_sip_im_in in = example4("text/plain", "hi");
        in.request_uri = pl_str_c(cases[i].to);
        in.from_uri = pl_str_c(cases[i].from);
        struct pl_sip_im_opts o = {.addr_flags = cases[i].flags};
        struct pl_stanza *st = NULL;
        int status = 0;
        pl_sip_im_to_xmpp(&in, &o, &st, &status);
        if (status != cases[i].status)
            fprintf(stderr, "  to %s from %s\n", cases[i].to, cases[i].from);
        CHECK_INT(status, cases[i].status);
        pl_stanza_unref(st);
    }
    /* A GRUU in the Request-URI addresses one resource; NO_GRUU drops it;
     * the front end's resource for the sender wins over its ";gr". */
    struct pl_sip_im_in in = example4("text/plain", "hi");
    in.request_uri = PL_STR("sip:juliet@example.com;gr=balcony");
    in.from_uri = PL_STR("sip:romeo@example.net;gr=old");
    in.from_resource = "orchard";
    check_in(&in, NULL, 200,
             "<message from='romeo@example.net/orchard' "
             "to='juliet@example.com/balcony' type='chat'><body>hi</body>"
             "</message>");
    struct pl_sip_im_opts bare = {.addr_flags = PL_SIP_MAP_NO_GRUU};
    check_in(&in, &bare, 200,
             "<message from='romeo@example.net/orchard' "
             "to='juliet@example.com' type='chat'><body>hi</body>"
             "</message>");
    in.from_resource = "";
    check_in(&in, NULL, 400, NULL);
}

/* RFC 7572 Examples 1 and 2. */
void test_sip_im_rfc7572_to_sip(void)
{
    struct pl_stanza *st = parse(
        "<message xmlns='jabber:client' "
        "from='juliet@example.com/yn0cl4bnw0yr3vym' "
        "to='romeo@example.net'><body>Art thou not Romeo, and a "
        "Montague?</body></message>");
    struct pl_sip_im_out o;
    CHECK_INT(pl_sip_im_from_xmpp(st, NULL, &o), PL_OK);
    CHECK_STR(o.request_uri, "sip:romeo@example.net");
    CHECK_STR(o.from_uri, "sip:juliet@example.com;gr=yn0cl4bnw0yr3vym");
    CHECK_STR(o.content_type, "text/plain;charset=UTF-8");
    CHECK_STR(o.body, "Art thou not Romeo, and a Montague?");
    CHECK_INT(o.body_len, 35); /* Content-Length: 35 in Example 2 */
    CHECK_STR(o.subject, NULL);
    CHECK_STR(o.call_id, NULL);
    CHECK_STR(o.language, NULL);
    pl_sip_im_out_clear(&o);
    pl_stanza_unref(st);

    /* Subject, thread, language (RFC 7572 Table 1); the body in the
     * stanza's language is the one sent (RFC 6121 §5.2.3). */
    st = parse("<message xmlns='jabber:client' xml:lang='fr' type='chat' "
               "from='juliet@example.com/b' to='romeo@example.net/orchard'>"
               "<subject>Le\nbal</subject>"
               "<body xml:lang='en'>Hello</body><body>Bonjour</body>"
               "<thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread>"
               "</message>");
    struct pl_sip_im_opts gruu = {.addr_flags = PL_SIP_MAP_GRUU};
    CHECK_INT(pl_sip_im_from_xmpp(st, &gruu, &o), PL_OK);
    CHECK_STR(o.request_uri, "sip:romeo@example.net;gr=orchard");
    CHECK_STR(o.body, "Bonjour");
    CHECK_STR(o.subject, "Le bal");
    CHECK_STR(o.call_id, "e0ffe42b28561960c6b12b944a092794b9683a38");
    CHECK_STR(o.language, "fr");
    pl_sip_im_out_clear(&o);
    pl_stanza_unref(st);

    /* No body in the stanza's language: the first; a thread that is no
     * Call-ID is not used. */
    st = parse("<message xmlns='jabber:client' from='a@example.com/b' "
               "to='c@example.net'><body xml:lang='de'>Hallo</body>"
               "<body xml:lang='en'>Hello</body><thread>a b</thread>"
               "</message>");
    CHECK_INT(pl_sip_im_from_xmpp(st, NULL, &o), PL_OK);
    CHECK_STR(o.body, "Hallo");
    CHECK_STR(o.language, "de");
    CHECK_STR(o.call_id, NULL);
    pl_sip_im_out_clear(&o);
    pl_stanza_unref(st);
}

void test_sip_im_not_for_sip(void)
{
    static const struct {
        const char *xml;
        int rc;   /* what pl_sip_im_from_xmpp returns */
        int body; /* whether there is something to send */
    } cases[] = {
        /* XEP-0085 chat state, XEP-0184 receipt, XEP-0333 marker. */
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example' type='chat'><composing "
         "xmlns='http://jabber.org/protocol/chatstates'/></message>",
         PL_OK, 0},
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example'><received xmlns='urn:xmpp:receipts' id='1'/>"
         "</message>",
         PL_OK, 0},
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example'><displayed xmlns='urn:xmpp:chat-markers:0' "
         "id='1'/></message>",
         PL_OK, 0},
        /* A body in another namespace is not a body. */
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example'><body xmlns='urn:x'>hi</body></message>",
         PL_OK, 0},
        /* Errors are never bounced, even with a body. */
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example' type='error'><body>hi</body></message>",
         PL_OK, 0},
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example' type='groupchat'><body>hi</body></message>",
         PL_ESERVICE_UNAVAILABLE, 0},
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "type='chat'><body>hi</body></message>",
         PL_EJID_MALFORMED, 0},
        {"<message xmlns='jabber:client' to='b@y.example' "
         "type='chat'><body>hi</body></message>",
         PL_EJID_MALFORMED, 0},
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@@y.example'><body>hi</body></message>",
         PL_EJID_MALFORMED, 0},
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example' type='headline'><body>hi</body></message>",
         PL_OK, 1},
        {"<message xmlns='jabber:client' from='a@x.example/r' "
         "to='b@y.example'><body/></message>",
         PL_OK, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_stanza *st = parse(cases[i].xml);
        struct pl_sip_im_out o;
        int rc = pl_sip_im_from_xmpp(st, NULL, &o);
        if (rc != cases[i].rc)
            fprintf(stderr, "  case %zu\n", i);
        CHECK_INT(rc, cases[i].rc);
        if (rc == PL_OK) {
            CHECK_INT(o.body != NULL, cases[i].body);
            pl_sip_im_out_clear(&o);
        }
        pl_stanza_unref(st);
    }

    /* RFC 7572 §6: too large a body is a <policy-violation/>. */
    struct pl_stanza *st = parse(
        "<message xmlns='jabber:client' from='a@x.example/r' "
        "to='b@y.example'><body>0123456789A</body></message>");
    struct pl_sip_im_opts small = {.max_body = 10};
    struct pl_sip_im_out o;
    CHECK_INT(pl_sip_im_from_xmpp(st, &small, &o), PL_EPOLICY_VIOLATION);
    small.max_body = 11;
    CHECK_INT(pl_sip_im_from_xmpp(st, &small, &o), PL_OK);
    CHECK_INT(o.body_len, 11);
    pl_sip_im_out_clear(&o);
    pl_stanza_unref(st);
}

/* SIP -> XMPP -> SIP keeps the text, the addresses and the thread. */
void test_sip_im_round_trip(void)
{
    struct pl_sip_im_in in = {
        .request_uri = PL_STR("sip:o'malley@sip.example"),
        .from_uri = PL_STR("sip:f%C3%BC@sip.example;gr=desk"),
        .content_type = PL_STR("text/plain;charset=utf-8"),
        .body = PL_STR("line 1\nline <2> & \xe2\x82\xac"),
        .call_id = PL_STR("abc@host"),
        .language = PL_STR("de"),
    };
    struct pl_stanza *st = NULL;
    int status = 0;
    CHECK_INT(pl_sip_im_to_xmpp(&in, NULL, &st, &status), PL_OK);
    if (!st)
        return;
    struct pl_sip_im_out o;
    CHECK_INT(pl_sip_im_from_xmpp(st, NULL, &o), PL_OK);
    CHECK_STR(o.request_uri, "sip:o'malley@sip.example");
    CHECK_STR(o.from_uri, "sip:f%C3%BC@sip.example;gr=desk");
    CHECK_STR(o.body, "line 1\nline <2> & \xe2\x82\xac");
    CHECK_STR(o.call_id, "abc@host");
    CHECK_STR(o.language, "de");
    pl_sip_im_out_clear(&o);
    pl_stanza_unref(st);
}
