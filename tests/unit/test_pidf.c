/*
 * test_pidf.c - PIDF/RPID <-> XMPP presence (src/sip/pidf.c): the
 * documents of RFC 3863 §4.2-4.3, RFC 4480 §3.2 and §4, RFC 8048 §6, the
 * shape baresip publishes, then hostile documents and round trips.
 */
#include <stdlib.h>

#include "../../src/core/alloc.h"
#include "../../src/core/error.h"
#include "../../src/core/jid.h"
#include "../../src/core/stanza.h"
#include "../../src/core/xml.h"
#include "../../src/sip/pidf.h"
#include "unit.h"

/* Parses doc and checks basic, show, note, priority. */
static void check_doc(const char *doc, enum pl_pidf_basic basic,
                      enum pl_show show, const char *note, int priority)
{
    struct pl_pidf p;
    int rc = pl_pidf_parse(pl_str_c(doc), NULL, &p);
    CHECK_INT(rc, PL_OK);
    if (rc != PL_OK)
        return;
    CHECK_INT(p.basic, basic);
    CHECK_INT(p.show, show);
    CHECK_STR(p.note, note);
    CHECK_INT(p.priority, priority);
    pl_pidf_clear(&p);
}

#define PIDF_HEAD                                                              \
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                             \
    "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n"                        \
    "    xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\"\n"                \
    "    xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\"\n"                    \
    "    entity=\"pres:someone@example.com\">\n"

void test_pidf_rfc3863(void)
{
    /* §4.2.2, with a prefix and with the default namespace; the only
     * tuple reaches a phone, so it counts for want of another. */
    static const char prefixed[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<impp:presence xmlns:impp=\"urn:ietf:params:xml:ns:pidf\"\n"
        "    entity=\"pres:someone@example.com\">\n"
        "  <impp:tuple id=\"sg89ae\">\n"
        "    <impp:status>\n"
        "      <impp:basic>open</impp:basic>\n"
        "    </impp:status>\n"
        "    <impp:contact priority=\"0.8\">tel:+09012345678</impp:contact>\n"
        "  </impp:tuple>\n"
        "</impp:presence>\n";
    check_doc(prefixed, PL_PIDF_OPEN, PL_SHOW_NONE, NULL, 102);
    struct pl_pidf p;
    CHECK_INT(pl_pidf_parse(pl_str_c(prefixed), NULL, &p), PL_OK);
    CHECK_STR(p.entity, "pres:someone@example.com");
    pl_pidf_clear(&p);
    check_doc("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n"
              "    entity=\"pres:someone@example.com\">\n"
              "  <tuple id=\"sg89ae\">\n"
              "    <status>\n"
              "      <basic>open</basic>\n"
              "    </status>\n"
              "    <contact priority=\"0.8\">tel:+09012345678</contact>\n"
              "  </tuple>\n"
              "</presence>\n",
              PL_PIDF_OPEN, PL_SHOW_NONE, NULL, 102);

    /* §4.2.4: a status extension of another namespace is ignored. */
    check_doc("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n"
              "    xmlns:local=\"urn:example-com:pidf-status-type\"\n"
              "    entity=\"pres:someone@example.com\">\n"
              "  <tuple id=\"ub93s3\">\n"
              "    <status>\n"
              "      <basic>open</basic>\n"
              "      <local:location>home</local:location>\n"
              "    </status>\n"
              "    <contact>im:someone@example.com</contact>\n"
              "  </tuple>\n"
              "</presence>\n",
              PL_PIDF_OPEN, PL_SHOW_NONE, NULL, -1);

    /* §4.3.1: the mailto: tuple does not count; the IM one gives its
     * first note (en) and priority. */
    check_doc("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n"
              "     xmlns:im=\"urn:ietf:params:xml:ns:pidf:im\"\n"
              "     xmlns:myex=\"http://id.example.com/presence/\"\n"
              "     entity=\"pres:someone@example.com\">\n"
              "  <tuple id=\"bs35r9\">\n"
              "    <status>\n"
              "      <basic>open</basic>\n"
              "      <im:im>busy</im:im>\n"
              "      <myex:location>home</myex:location>\n"
              "    </status>\n"
              "    <contact priority=\"0.8\">im:someone@mobilecarrier.net"
              "</contact>\n"
              "    <note xml:lang=\"en\">Don't Disturb Please!</note>\n"
              "    <note xml:lang=\"fr\">Ne derangez pas, s'il vous plait"
              "</note>\n"
              "    <timestamp>2001-10-27T16:49:29Z</timestamp>\n"
              "  </tuple>\n"
              "  <tuple id=\"eg92n8\">\n"
              "    <status>\n"
              "      <basic>open</basic>\n"
              "    </status>\n"
              "    <contact priority=\"1.0\">mailto:someone@example.com"
              "</contact>\n"
              "  </tuple>\n"
              "  <note>I'll be in Tokyo next week</note>\n"
              "</presence>\n",
              PL_PIDF_OPEN, PL_SHOW_NONE, "Don't Disturb Please!", 102);

    /* §4.3.2: the tel: tuple does not count, the im: one has no note:
     * the document's extension <myex:mytag/> is no note either. */
    check_doc("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<impp:presence xmlns:impp=\"urn:ietf:params:xml:ns:pidf\"\n"
              "     xmlns:myex=\"http://id.example.com/presence/\"\n"
              "     entity=\"pres:someone@example.com\">\n"
              "  <impp:tuple id=\"ck38g9\">\n"
              "    <impp:status>\n"
              "      <impp:basic>open</impp:basic>\n"
              "    </impp:status>\n"
              "    <myex:mytupletag>Extended value in tuple</myex:mytupletag>\n"
              "    <impp:contact priority=\"0.65\">tel:+09012345678"
              "</impp:contact>\n"
              "  </impp:tuple>\n"
              "  <impp:tuple id=\"md66je\">\n"
              "    <impp:status>\n"
              "      <impp:basic>open</impp:basic>\n"
              "    </impp:status>\n"
              "    <impp:contact priority=\"1.0\">\n"
              "       im:someone@mobilecarrier.net</impp:contact>\n"
              "  </impp:tuple>\n"
              "  <myex:mytag>My extended presentity information</myex:mytag>\n"
              "</impp:presence>\n",
              PL_PIDF_OPEN, PL_SHOW_NONE, NULL, 127);

    /* §4.3.3: an unknown extension with mustUnderstand is ignored whole;
     * basic status stands. */
    check_doc("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<impp:presence xmlns:impp=\"urn:ietf:params:xml:ns:pidf\"\n"
              "     xmlns:myex=\"http://id.mycompany.com/presence/\"\n"
              "     entity=\"pres:someone@example.com\">\n"
              "  <impp:tuple id=\"tj25ds\">\n"
              "    <impp:status>\n"
              "      <impp:basic>open</impp:basic>\n"
              "    </impp:status>\n"
              "    <myex:complexExtension>\n"
              "      <myex:ex1 impp:mustUnderstand=\"1\">val1</myex:ex1>\n"
              "      <myex:ex2>val2</myex:ex2>\n"
              "    </myex:complexExtension>\n"
              "    <impp:contact priority=\"0.725\">tel:+09012345678"
              "</impp:contact>\n"
              "  </impp:tuple>\n"
              "  <myex:mytag>My extended presentity information</myex:mytag>\n"
              "</impp:presence>\n",
              PL_PIDF_OPEN, PL_SHOW_NONE, NULL, 92);
}

/* RFC 4480 §4: the assistant's and the mail tuples do not count; the
 * person is away; the IM tuple's note wins over the person's. */
void test_pidf_rfc4480(void)
{
    static const char doc[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "  <presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n"
        "    xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\"\n"
        "    xmlns:lt=\"urn:ietf:params:xml:ns:location-type\"\n"
        "    xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\"\n"
        "    entity=\"pres:someone@example.com\">\n"
        " <tuple id=\"bs35r9\">\n"
        "   <status>\n"
        "     <basic>open</basic>\n"
        "   </status>\n"
        "   <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>\n"
        "   <rpid:relationship><rpid:self/></rpid:relationship>\n"
        "   <rpid:service-class><rpid:electronic/></rpid:service-class>\n"
        "   <contact priority=\"0.8\">im:someone@mobile.example.net</contact>\n"
        "   <note xml:lang=\"en\">Don't Disturb Please!</note>\n"
        "   <note xml:lang=\"fr\">Ne derangez pas, s'il vous plait</note>\n"
        "   <timestamp>2005-10-27T16:49:29Z</timestamp>\n"
        " </tuple>\n"
        " <tuple id=\"ty4658\">\n"
        "   <status>\n"
        "     <basic>open</basic>\n"
        "   </status>\n"
        "   <rpid:relationship><rpid:assistant/></rpid:relationship>\n"
        "   <contact priority=\"1.0\">mailto:secretary@example.com</contact>\n"
        " </tuple>\n"
        " <tuple id=\"eg92n8\">\n"
        "   <status>\n"
        "     <basic>open</basic>\n"
        "   </status>\n"
        "   <dm:deviceID>urn:x-mac:0003ba4811e3</dm:deviceID>\n"
        "   <rpid:class>email</rpid:class>\n"
        "   <rpid:service-class><rpid:electronic/></rpid:service-class>\n"
        "   <rpid:status-icon>http://example.com/mail.png</rpid:status-icon>\n"
        "   <contact priority=\"1.0\">mailto:someone@example.com</contact>\n"
        " </tuple>\n"
        " <note>I'll be in Tokyo next week</note>\n"
        " <dm:device id=\"pc147\">\n"
        "   <rpid:user-input idle-threshold=\"600\"\n"
        "     last-input=\"2004-10-21T13:20:00-05:00\">idle</rpid:user-input>\n"
        "   <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>\n"
        "   <dm:note>PC</dm:note>\n"
        " </dm:device>\n"
        " <dm:person id=\"p1\">\n"
        "   <rpid:activities from=\"2005-05-30T12:00:00+05:00\"\n"
        "      until=\"2005-05-30T17:00:00+05:00\">\n"
        "      <rpid:note>Far away</rpid:note>\n"
        "      <rpid:away/>\n"
        "   </rpid:activities>\n"
        "   <rpid:class>calendar</rpid:class>\n"
        "   <rpid:mood>\n"
        "     <rpid:angry/>\n"
        "     <rpid:other>brooding</rpid:other>\n"
        "   </rpid:mood>\n"
        "   <rpid:place-is>\n"
        "      <rpid:audio>\n"
        "         <rpid:noisy/>\n"
        "      </rpid:audio>\n"
        "   </rpid:place-is>\n"
        "   <rpid:place-type><lt:residence/></rpid:place-type>\n"
        "   <rpid:privacy><rpid:unknown/></rpid:privacy>\n"
        "   <rpid:sphere>bowling league</rpid:sphere>\n"
        "   <rpid:status-icon>http://example.com/play.gif</rpid:status-icon>\n"
        "   <rpid:time-offset>-240</rpid:time-offset>\n"
        "   <dm:note>Scoring 120</dm:note>\n"
        "   <dm:timestamp>2005-05-30T16:09:44+05:00</dm:timestamp>\n"
        " </dm:person>\n"
        "</presence>\n";
    struct pl_pidf p;
    CHECK_INT(pl_pidf_parse(pl_str_c(doc), NULL, &p), PL_OK);
    CHECK_INT(p.basic, PL_PIDF_OPEN);
    CHECK_INT(p.show, PL_SHOW_AWAY);
    CHECK_STR(p.note, "Don't Disturb Please!");
    CHECK_STR(p.note_lang, "en");
    CHECK_INT(p.priority, 102);
    pl_pidf_clear(&p);

    /* §3.2's activities example: vacation + breakfast is xa, the note is
     * the activities' when nothing else has one. */
    check_doc(PIDF_HEAD "<tuple id=\"t\"><status><basic>open</basic></status>"
                        "</tuple><dm:person id=\"p\"><rpid:activities>\n"
                        "  <rpid:note>Enjoying the morning paper</rpid:note>\n"
                        "  <rpid:vacation/>\n  <rpid:breakfast/>\n"
                        "  <rpid:other>reading</rpid:other>\n"
                        "</rpid:activities></dm:person></presence>",
              PL_PIDF_OPEN, PL_SHOW_XA, "Enjoying the morning paper", -1);
}

/* RFC 8048 §6.2 Example 19 and §6.3 Examples 20 and 21. */
void test_pidf_rfc8048(void)
{
    static const char ex19[] = "<?xml version='1.0' encoding='UTF-8'?>\n"
                               "<presence xmlns='urn:ietf:params:xml:ns:pidf'\n"
                               "          entity='pres:juliet@example.com'>\n"
                               "  <tuple id='ID-yn0cl4bnw0yr3vym'>\n"
                               "    <status>\n"
                               "      <basic>open</basic>\n"
                               "      <show xmlns='jabber:client'>away</show>\n"
                               "    </status>\n"
                               "  </tuple>\n"
                               "</presence>";
    check_doc(ex19, PL_PIDF_OPEN, PL_SHOW_AWAY, NULL, -1);

    static const char ex20[] = "<?xml version='1.0' encoding='UTF-8'?>\n"
                               "<presence xmlns='urn:ietf:params:xml:ns:pidf'\n"
                               "          entity='pres:romeo@example.net'>\n"
                               "  <tuple id='ID-dr4hcr0st3lup4c'>\n"
                               "    <status>\n"
                               "      <basic>closed</basic>\n"
                               "    </status>\n"
                               "  </tuple>\n"
                               "</presence>";
    struct pl_pidf p;
    CHECK_INT(pl_pidf_parse(pl_str_c(ex20), NULL, &p), PL_OK);
    CHECK_INT(p.basic, PL_PIDF_CLOSED);
    struct pl_stanza *st =
        pl_pidf_to_presence(&p, "romeo@example.net",
                            "juliet@example.com/yn0cl4bnw0yr3vym");
    CHECK(st != NULL);
    if (st) {
        struct pl_str s = pl_stanza_serialize(st, PL_NS_CLIENT);
        char *got = pl_strndup(s.p, s.len);
        CHECK_STR(got, "<presence from='romeo@example.net' "
                       "to='juliet@example.com/yn0cl4bnw0yr3vym' "
                       "type='unavailable'/>");
        pl_free(got);
    }
    pl_stanza_unref(st);
    pl_pidf_clear(&p);
}

/* What baresip and other SIP clients publish: person before tuple, RPID
 * activities, prefixes of their own. */
void test_pidf_clients(void)
{
    static const struct {
        const char *activity, *basic;
        enum pl_pidf_basic want_basic;
        enum pl_show want;
    } cases[] = {
        {"", "open", PL_PIDF_OPEN, PL_SHOW_NONE},
        {"<rpid:away/>", "open", PL_PIDF_OPEN, PL_SHOW_AWAY},
        {"<rpid:busy/>", "open", PL_PIDF_OPEN, PL_SHOW_DND},
        {"<rpid:on-the-phone/>", "open", PL_PIDF_OPEN, PL_SHOW_DND},
        {"<rpid:meeting/>", "open", PL_PIDF_OPEN, PL_SHOW_DND},
        {"<rpid:lunch/>", "open", PL_PIDF_OPEN, PL_SHOW_AWAY},
        {"<rpid:sleeping/>", "open", PL_PIDF_OPEN, PL_SHOW_XA},
        {"<rpid:working/>", "open", PL_PIDF_OPEN, PL_SHOW_NONE},
        {"<rpid:unknown/>", "open", PL_PIDF_OPEN, PL_SHOW_NONE},
        {"<rpid:lunch/><rpid:busy/><rpid:travel/>", "open", PL_PIDF_OPEN,
         PL_SHOW_DND},
        {"<rpid:away/>", "closed", PL_PIDF_CLOSED, PL_SHOW_NONE},
        {"<rpid:busy/>", "Open", PL_PIDF_OPEN, PL_SHOW_DND},
        /* Not RPID's: ignored. */
        {"<x:busy xmlns:x='urn:x'/>", "open", PL_PIDF_OPEN, PL_SHOW_NONE},
        {"<rpid:dancing/>", "open", PL_PIDF_OPEN, PL_SHOW_NONE},
        /* A foreign element marked mustUnderstand voids the activities. */
        {"<rpid:busy/><x:y xmlns:x='urn:x' mustUnderstand='true'/>", "open",
         PL_PIDF_OPEN, PL_SHOW_NONE},
        {"<rpid:busy/><x:y xmlns:x='urn:x' mustUnderstand='0'/>", "open",
         PL_PIDF_OPEN, PL_SHOW_DND},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char doc[1024];
        snprintf(doc, sizeof(doc),
                 PIDF_HEAD "  <dm:person id=\"p4159\"><rpid:activities>%s"
                           "</rpid:activities></dm:person>\n"
                           "  <tuple id=\"t4109\"><status><basic>%s</basic>"
                           "</status><contact>sip:a@example.com</contact>"
                           "</tuple>\n</presence>\n",
                 cases[i].activity, cases[i].basic);
        struct pl_pidf p;
        CHECK_INT(pl_pidf_parse(pl_str_c(doc), NULL, &p), PL_OK);
        if (p.basic != cases[i].want_basic || p.show != cases[i].want)
            fprintf(stderr, "  case %zu\n", i);
        CHECK_INT(p.basic, cases[i].want_basic);
        CHECK_INT(p.show, cases[i].want);
        pl_pidf_clear(&p);
    }
    /* An idle person with nothing else to say is away. */
    check_doc(PIDF_HEAD "<tuple id='t'><status><basic>open</basic></status>"
                        "</tuple><dm:person id='p'><rpid:user-input>idle"
                        "</rpid:user-input><dm:note>Coffee</dm:note>"
                        "</dm:person></presence>",
              PL_PIDF_OPEN, PL_SHOW_AWAY, "Coffee", -1);
    /* Activities in a tuple (some clients) are read too, the XMPP <show/>
     * outside <status/> as well; the XMPP <show/> wins over RPID. */
    check_doc(PIDF_HEAD "<tuple id='t'><status><basic>open</basic>"
                        "<rpid:activities><rpid:busy/></rpid:activities>"
                        "</status></tuple></presence>",
              PL_PIDF_OPEN, PL_SHOW_DND, NULL, -1);
    check_doc(PIDF_HEAD "<tuple id='t'><status><basic>open</basic></status>"
                        "<show xmlns='jabber:client'> chat </show></tuple>"
                        "<dm:person id='p'><rpid:activities><rpid:busy/>"
                        "</rpid:activities></dm:person></presence>",
              PL_PIDF_OPEN, PL_SHOW_CHAT, NULL, -1);
    /* A <show/> of another namespace, or an unknown value, is nothing. */
    check_doc(PIDF_HEAD "<tuple id='t'><status><basic>open</basic>"
                        "<show>dnd</show><show xmlns='jabber:client'>busy"
                        "</show></status></tuple></presence>",
              PL_PIDF_OPEN, PL_SHOW_NONE, NULL, -1);
}

/* Several tuples: the most available open one wins (RFC 8048 §6.2). */
void test_pidf_tuples(void)
{
    /* Open beats closed, whatever the order. */
    check_doc(PIDF_HEAD "<tuple id='a'><status><basic>closed</basic></status>"
                        "<note>phone off</note></tuple>"
                        "<tuple id='b'><status><basic>open</basic></status>"
                        "<show xmlns='jabber:client'>dnd</show>"
                        "<note>in a call</note></tuple></presence>",
              PL_PIDF_OPEN, PL_SHOW_DND, "in a call", -1);
    /* Among open ones: most available show, then priority. */
    check_doc(PIDF_HEAD
              "<tuple id='a'><status><basic>open</basic></status>"
              "<show xmlns='jabber:client'>xa</show>"
              "<contact priority='1'>sip:a@example.com</contact></tuple>"
              "<tuple id='b'><status><basic>open</basic></status>"
              "<contact priority='0.5'>sip:a@example.com</contact>"
              "<note>b</note></tuple>"
              "<tuple id='c'><status><basic>open</basic></status>"
              "<contact priority='0.9'>sip:a@example.com</contact>"
              "<note>c</note></tuple></presence>",
              PL_PIDF_OPEN, PL_SHOW_NONE, "c", 114);
    /* All closed: unavailable, first note; no tuple at all or no basic:
     * none, the document's note. */
    check_doc(PIDF_HEAD "<tuple id='a'><status><basic>closed</basic></status>"
                        "<note>gone</note></tuple><tuple id='b'><status>"
                        "<basic>closed</basic></status></tuple></presence>",
              PL_PIDF_CLOSED, PL_SHOW_NONE, "gone", -1);
    check_doc(PIDF_HEAD "<note>  Tokyo  </note></presence>", PL_PIDF_NONE,
              PL_SHOW_NONE, "Tokyo", -1);
    check_doc(PIDF_HEAD "<tuple id='a'><status><x:y xmlns:x='urn:x'/></status>"
                        "</tuple></presence>",
              PL_PIDF_NONE, PL_SHOW_NONE, NULL, -1);
    /* Wrong namespaces do not count: a tuple, a basic, a note. */
    check_doc(PIDF_HEAD "<x:tuple xmlns:x='urn:x' id='a'><x:status><x:basic>"
                        "open</x:basic></x:status></x:tuple>"
                        "<tuple id='b'><status><basic xmlns='urn:x'>open"
                        "</basic><basic>closed</basic></status></tuple>"
                        "<x:note xmlns:x='urn:x'>no</x:note></presence>",
              PL_PIDF_CLOSED, PL_SHOW_NONE, NULL, -1);
    /* A priority out of range, or badly written, is no priority. */
    static const char *const bad[] = {"1.5", "2", "0.1234", "-0",  "0,5",
                                      ".5",  "",  "1.001",  "0.5x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char doc[512];
        snprintf(doc, sizeof(doc),
                 PIDF_HEAD "<tuple id='a'><status><basic>open</basic>"
                           "</status><contact priority='%s'>sip:a@b</contact>"
                           "</tuple></presence>",
                 bad[i]);
        check_doc(doc, PL_PIDF_OPEN, PL_SHOW_NONE, NULL, -1);
    }
}

void test_pidf_hostile(void)
{
    static const struct {
        const char *doc;
        int rc;
    } cases[] = {
        {"", PL_EINVAL},
        {"not xml", PL_EINVAL},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'>", PL_EINVAL},
        /* Another root, or the right name in another namespace. */
        {"<presence entity='pres:a@b'/>", PL_EINVAL},
        {"<presence xmlns='urn:ietf:params:xml:ns:cpim-pidf'/>", PL_EINVAL},
        {"<presence xmlns='jabber:client'/>", PL_EINVAL},
        {"<x:presence xmlns:x='urn:x' xmlns='urn:ietf:params:xml:ns:pidf'/>",
         PL_EINVAL},
        {"<tuple xmlns='urn:ietf:params:xml:ns:pidf'/>", PL_EINVAL},
        /* Two roots, trailing text, unbound prefix. */
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'/><presence/>",
         PL_EINVAL},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>junk", PL_EINVAL},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'><p:x/></presence>",
         PL_EINVAL},
        /* Restricted XML: DTD and entities, comments, PIs. */
        {"<?xml version='1.0'?><!DOCTYPE presence [<!ENTITY a 'aaaa'>"
         "<!ENTITY b '&a;&a;&a;&a;'>]><presence "
         "xmlns='urn:ietf:params:xml:ns:pidf'><note>&b;</note></presence>",
         PL_EINVAL},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'><!-- c --></presence>",
         PL_EINVAL},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'><?pi x?></presence>",
         PL_EINVAL},
        /* Encodings other than UTF-8, and bytes that are not UTF-8. */
        {"<?xml version='1.0' encoding='ISO-8859-1'?><presence "
         "xmlns='urn:ietf:params:xml:ns:pidf'/>",
         PL_EINVAL},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'><note>\xff</note>"
         "</presence>",
         PL_EINVAL},
        {"<?xml version='1.1'?><presence "
         "xmlns='urn:ietf:params:xml:ns:pidf'/>",
         PL_EINVAL},
        /* Fine: a UTF-8 BOM and a minimal document. */
        {"\xef\xbb\xbf<presence xmlns='urn:ietf:params:xml:ns:pidf' "
         "entity='pres:a@b'/>",
         PL_OK},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>\n", PL_OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_pidf p = {PL_PIDF_OPEN, PL_SHOW_DND, NULL, NULL, 7, NULL};
        int rc = pl_pidf_parse(pl_str_c(cases[i].doc), NULL, &p);
        if (rc != cases[i].rc)
            fprintf(stderr, "  case %zu: %d\n", i, rc);
        CHECK_INT(rc, cases[i].rc);
        if (rc == PL_OK) {
            CHECK_INT(p.basic, PL_PIDF_NONE);
            pl_pidf_clear(&p);
        } else {
            CHECK_INT(p.priority, 7); /* untouched */
        }
    }

    /* Size and depth limits. */
    struct pl_pidf p;
    struct pl_buf b = {0};
    pl_buf_append_str(&b, PIDF_HEAD);
    for (int i = 0; i < 40; i++)
        pl_buf_append_str(&b, "<x:a xmlns:x='urn:x'>");
    for (int i = 0; i < 40; i++)
        pl_buf_append_str(&b, "</x:a>");
    pl_buf_append_str(&b, "</presence>");
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &p), PL_ELIMIT);
    struct pl_pidf_limits deep = {0, 64, 0};
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), &deep, &p), PL_OK);
    pl_pidf_clear(&p);
    struct pl_pidf_limits small = {200, 0, 0};
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), &small, &p), PL_ELIMIT);
    pl_buf_reset(&b);

    /* Many tuples within the size limit; a huge note is cut at a
     * character boundary. */
    pl_buf_append_str(&b, PIDF_HEAD);
    for (int i = 0; i < 600; i++)
        pl_buf_printf(&b,
                      "<tuple id='t%d'><status><basic>closed</basic>"
                      "</status></tuple>",
                      i);
    pl_buf_append_str(&b, "<tuple id='last'><status><basic>open</basic>"
                          "</status><note>");
    for (int i = 0; i < 1000; i++)
        pl_buf_append_str(&b, "\xe2\x82\xac"); /* 3 bytes each */
    pl_buf_append_str(&b, "</note></tuple></presence>");
    CHECK(b.len < PL_PIDF_MAX_SIZE);
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &p), PL_OK);
    CHECK_INT(p.basic, PL_PIDF_OPEN);
    CHECK(p.note && strlen(p.note) == 1023);
    pl_pidf_clear(&p);
    pl_buf_reset(&b);
    pl_buf_append_str(&b, PIDF_HEAD "<note>");
    while (b.len <= PL_PIDF_MAX_SIZE)
        pl_buf_append_str(&b, "0123456789");
    pl_buf_append_str(&b, "</note></presence>");
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &p), PL_ELIMIT);
    pl_buf_reset(&b);
}

void test_pidf_content_type(void)
{
    CHECK_INT(pl_pidf_check_type(PL_STR("application/pidf+xml")), PL_OK);
    CHECK_INT(pl_pidf_check_type(PL_STR("Application/PIDF+XML")), PL_OK);
    CHECK_INT(pl_pidf_check_type(
                  PL_STR("application/pidf+xml;charset=\"UTF-8\"")),
              PL_OK);
    CHECK_INT(pl_pidf_check_type(PL_STR("application/pidf+xml;charset=latin1")),
              PL_ENOT_ACCEPTABLE);
    CHECK_INT(pl_pidf_check_type(PL_STR("application/xpidf+xml")),
              PL_ENOT_ACCEPTABLE);
    CHECK_INT(pl_pidf_check_type(PL_STR("application/cpim-pidf+xml")),
              PL_ENOT_ACCEPTABLE);
    CHECK_INT(pl_pidf_check_type(PL_STR("text/plain")), PL_ENOT_ACCEPTABLE);
    CHECK_INT(pl_pidf_check_type(PL_STR("")), PL_ENOT_ACCEPTABLE);
}

static char *serialized(struct pl_stanza *st)
{
    struct pl_str s = pl_stanza_serialize(st, PL_NS_CLIENT);
    return pl_strndup(s.p, s.len);
}

void test_pidf_to_presence(void)
{
    struct pl_pidf p = {PL_PIDF_OPEN, PL_SHOW_DND, "On a <call> & busy",
                        "en",         5,           NULL};
    struct pl_stanza *st = pl_pidf_to_presence(&p, "romeo@example.net/dr4",
                                               "juliet@example.com");
    char *s = st ? serialized(st) : NULL;
    CHECK_STR(s, "<presence from='romeo@example.net/dr4' "
                 "to='juliet@example.com'><show>dnd</show><status "
                 "xml:lang='en'>On a &lt;call&gt; &amp; busy</status>"
                 "<priority>5</priority></presence>");
    pl_free(s);
    pl_stanza_unref(st);
    /* Closed: unavailable, the note stays, no show; no 'to' is fine;
     * a language that is no tag is dropped. */
    p.basic = PL_PIDF_CLOSED;
    p.note_lang = "e'n";
    p.priority = -1;
    st = pl_pidf_to_presence(&p, "romeo@example.net/dr4", NULL);
    s = st ? serialized(st) : NULL;
    CHECK_STR(s, "<presence from='romeo@example.net/dr4' type='unavailable'>"
                 "<status>On a &lt;call&gt; &amp; busy</status></presence>");
    pl_free(s);
    pl_stanza_unref(st);
    /* None counts as unavailable (RFC 8048 §5.2.1). */
    struct pl_pidf none = {PL_PIDF_NONE, PL_SHOW_NONE, NULL, NULL, -1, NULL};
    st = pl_pidf_to_presence(&none, "a@example.com/r", NULL);
    s = st ? serialized(st) : NULL;
    CHECK_STR(s, "<presence from='a@example.com/r' type='unavailable'/>");
    pl_free(s);
    pl_stanza_unref(st);
    /* Control characters cannot be XML. */
    struct pl_pidf bad = {PL_PIDF_OPEN, PL_SHOW_NONE, "a\x01", NULL, -1, NULL};
    CHECK(pl_pidf_to_presence(&bad, "a@example.com/r", NULL) == NULL);
}

static struct pl_stanza *parse(const char *xml)
{
    struct pl_stanza *st = NULL;
    CHECK_INT(pl_xml_parse_fragment(xml, strlen(xml), &st), PL_OK);
    return st;
}

void test_pidf_from_presence(void)
{
    struct pl_pidf p;
    struct pl_stanza *st = parse(
        "<presence xmlns='jabber:client' from='juliet@example.com/b' "
        "xml:lang='en'><show>xa</show><status xml:lang='fr'>Parti</status>"
        "<status>Gone</status><priority>-5</priority></presence>");
    CHECK_INT(pl_pidf_from_presence(st, &p), PL_OK);
    CHECK_INT(p.basic, PL_PIDF_OPEN);
    CHECK_INT(p.show, PL_SHOW_XA);
    CHECK_STR(p.note, "Gone");
    CHECK_STR(p.note_lang, "en");
    CHECK_INT(p.priority, -1); /* negative: not mapped (note 6) */
    pl_pidf_clear(&p);
    pl_stanza_unref(st);

    st = parse("<presence xmlns='jabber:client' type='unavailable'>"
               "<show>away</show><priority>127</priority></presence>");
    CHECK_INT(pl_pidf_from_presence(st, &p), PL_OK);
    CHECK_INT(p.basic, PL_PIDF_CLOSED);
    CHECK_INT(p.show, PL_SHOW_NONE);
    CHECK_INT(p.priority, 127);
    CHECK_STR(p.note, NULL);
    pl_pidf_clear(&p);
    pl_stanza_unref(st);

    static const char *const not_notifications[] = {
        "<presence xmlns='jabber:client' type='subscribe'/>",
        "<presence xmlns='jabber:client' type='probe'/>",
        "<presence xmlns='jabber:client' type='error'/>",
        "<message xmlns='jabber:client'/>",
    };
    for (size_t i = 0; i < 4; i++) {
        st = parse(not_notifications[i]);
        CHECK_INT(pl_pidf_from_presence(st, &p), PL_EINVAL);
        pl_stanza_unref(st);
    }
}

static struct pl_jid *jid(const char *s)
{
    struct pl_jid *j = NULL;
    CHECK_INT(pl_jid_parse(pl_str_c(s), &j), PL_OK);
    return j;
}

/* The document Parley writes, read back by itself and by the patterns
 * baresip's subscriber matches. */
void test_pidf_write(void)
{
    struct pl_jid *e = jid("juliet@example.com");
    struct pl_jid *r = jid("juliet@example.com/yn0cl4bnw0yr3vym");
    struct pl_pidf away = {PL_PIDF_OPEN, PL_SHOW_AWAY, "At <the> ball & co",
                           NULL,         64,           NULL};
    struct pl_pidf_tuple t = {r, &away};
    struct pl_buf b = {0};
    CHECK_INT(pl_pidf_write(e, &t, 1, &b), PL_OK);
    CHECK_STR(pl_buf_cstr(&b),
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n"
              " xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\"\n"
              " xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\"\n"
              " entity=\"pres:juliet@example.com\">\n"
              "<tuple id=\"ID-yn0cl4bnw0yr3vym\">\n"
              "<status><basic>open</basic></status>\n"
              "<show xmlns=\"jabber:client\">away</show>\n"
              "<contact priority=\"0.503\">"
              "sip:juliet@example.com;gr=yn0cl4bnw0yr3vym</contact>\n"
              "<note>At &lt;the&gt; ball &amp; co</note>\n"
              "</tuple>\n"
              "<dm:person id=\"p\"><rpid:activities><rpid:away/>"
              "</rpid:activities></dm:person>\n"
              "</presence>\n");
    struct pl_pidf back;
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &back), PL_OK);
    CHECK_INT(back.basic, PL_PIDF_OPEN);
    CHECK_INT(back.show, PL_SHOW_AWAY);
    CHECK_STR(back.note, "At <the> ball & co");
    CHECK_INT(back.priority, 64);
    CHECK_STR(back.entity, "pres:juliet@example.com");
    pl_pidf_clear(&back);
    pl_buf_reset(&b);

    /* Two resources: one tuple each; the person follows the most
     * available (away beats dnd); a resource that is no xs:ID. */
    struct pl_jid *r2 = jid("juliet@example.com/1 phone_x");
    struct pl_pidf dnd = {PL_PIDF_OPEN, PL_SHOW_DND, NULL, NULL, -1, NULL};
    struct pl_pidf_tuple two[] = {{r2, &dnd}, {r, &away}};
    CHECK_INT(pl_pidf_write(e, two, 2, &b), PL_OK);
    const char *doc = pl_buf_cstr(&b);
    CHECK(strstr(doc, "<tuple id=\"ID-1_20phone_5fx\">") != NULL);
    CHECK(strstr(doc, "<show xmlns=\"jabber:client\">dnd</show>") != NULL);
    CHECK(strstr(doc, "<rpid:away/>") != NULL);
    CHECK(strstr(doc, "<rpid:busy/>") == NULL);
    CHECK(strstr(doc, "<contact>sip:juliet@example.com;gr=1%20phone_x"
                      "</contact>") != NULL);
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &back), PL_OK);
    CHECK_INT(back.show, PL_SHOW_AWAY);
    pl_pidf_clear(&back);
    pl_buf_reset(&b);

    /* dnd alone: <rpid:busy/>, which baresip shows as busy. */
    CHECK_INT(pl_pidf_write(e, two, 1, &b), PL_OK);
    CHECK(strstr(pl_buf_cstr(&b), "<dm:person id=\"p\"><rpid:activities>"
                                  "<rpid:busy/></rpid:activities>") != NULL);
    pl_buf_reset(&b);

    /* Nobody online: one closed tuple, no person. */
    CHECK_INT(pl_pidf_write(e, NULL, 0, &b), PL_OK);
    CHECK(strstr(pl_buf_cstr(&b),
                 "<tuple id=\"offline\">\n<status><basic>closed</basic>"
                 "</status>\n<contact>sip:juliet@example.com</contact>\n"
                 "</tuple>\n</presence>\n") != NULL);
    CHECK(strstr(pl_buf_cstr(&b), "dm:person") == NULL);
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &back), PL_OK);
    CHECK_INT(back.basic, PL_PIDF_CLOSED);
    pl_pidf_clear(&back);
    pl_buf_reset(&b);

    /* Unavailable resource: closed, no show even if one is set. */
    struct pl_pidf gone = {PL_PIDF_CLOSED, PL_SHOW_DND, "bye", NULL, -1, NULL};
    struct pl_pidf_tuple g = {r, &gone};
    CHECK_INT(pl_pidf_write(e, &g, 1, &b), PL_OK);
    CHECK(strstr(pl_buf_cstr(&b), "<show") == NULL);
    CHECK(strstr(pl_buf_cstr(&b), "<basic>closed</basic>") != NULL);
    CHECK(strstr(pl_buf_cstr(&b), "<note>bye</note>") != NULL);
    pl_buf_reset(&b);

    pl_jid_free(e);
    pl_jid_free(r);
    pl_jid_free(r2);
}

/* RFC 8048 §6.2 note 6 and its examples; every priority survives a
 * round trip, and so does every show. */
void test_pidf_priority_and_show_round_trip(void)
{
    struct pl_jid *e = jid("a@example.com");
    struct pl_jid *r = jid("a@example.com/r");
    static const struct {
        int prio;
        const char *q;
    } ex[] = {{0, "\"0\""},
              {1, "\"0.007\""},
              {2, "\"0.015\""},
              {126, "\"0.992\""},
              {127, "\"1\""}};
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        struct pl_pidf s = {PL_PIDF_OPEN, PL_SHOW_NONE, NULL,
                            NULL,         ex[i].prio,   NULL};
        struct pl_pidf_tuple t = {r, &s};
        struct pl_buf b = {0};
        char want[64];
        snprintf(want, sizeof(want), "<contact priority=%s>", ex[i].q);
        CHECK_INT(pl_pidf_write(e, &t, 1, &b), PL_OK);
        CHECK(strstr(pl_buf_cstr(&b), want) != NULL);
        pl_buf_reset(&b);
    }
    static const enum pl_show shows[] = {PL_SHOW_CHAT, PL_SHOW_NONE,
                                         PL_SHOW_AWAY, PL_SHOW_XA, PL_SHOW_DND};
    for (int prio = -1; prio <= 127; prio++) {
        struct pl_pidf s = {PL_PIDF_OPEN, shows[(prio + 1) % 5],
                            NULL,         NULL,
                            prio,         NULL};
        struct pl_pidf_tuple t = {r, &s};
        struct pl_buf b = {0};
        struct pl_pidf back;
        CHECK_INT(pl_pidf_write(e, &t, 1, &b), PL_OK);
        CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &back), PL_OK);
        CHECK_INT(back.priority, prio);
        CHECK_INT(back.show, s.show);
        pl_pidf_clear(&back);
        pl_buf_reset(&b);
    }
    /* A presence stanza through PIDF and back. */
    struct pl_stanza *st = parse(
        "<presence xmlns='jabber:client' from='a@example.com/r'>"
        "<show>chat</show><status xml:lang='de'>Hier</status>"
        "<priority>9</priority></presence>");
    struct pl_pidf p, q;
    CHECK_INT(pl_pidf_from_presence(st, &p), PL_OK);
    struct pl_pidf_tuple t = {r, &p};
    struct pl_buf b = {0};
    CHECK_INT(pl_pidf_write(e, &t, 1, &b), PL_OK);
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &q), PL_OK);
    struct pl_stanza *again = pl_pidf_to_presence(&q, "a@example.com/r", NULL);
    char *s = again ? serialized(again) : NULL;
    CHECK_STR(s, "<presence from='a@example.com/r'><show>chat</show>"
                 "<status>Hier</status><priority>9</priority></presence>");
    pl_free(s);
    pl_stanza_unref(again);
    pl_pidf_clear(&p);
    pl_pidf_clear(&q);
    pl_buf_reset(&b);
    pl_stanza_unref(st);
    pl_jid_free(e);
    pl_jid_free(r);
}

/* The limits of pl_xml_parse_fragment_limited itself. */
void test_xml_fragment_limits(void)
{
    static const char doc[] = "<a><b><c>text</c></b></a>";
    struct pl_stanza *st = NULL;
    struct pl_xml_limits l = {0, 3};
    CHECK_INT(pl_xml_parse_fragment_limited(doc, strlen(doc), &l, &st), PL_OK);
    pl_stanza_unref(st);
    st = NULL;
    l.max_depth = 2;
    CHECK_INT(pl_xml_parse_fragment_limited(doc, strlen(doc), &l, &st),
              PL_EINVAL);
    CHECK(st == NULL);
    struct pl_xml_limits sz = {strlen(doc), 0};
    CHECK_INT(pl_xml_parse_fragment_limited(doc, strlen(doc), &sz, &st), PL_OK);
    pl_stanza_unref(st);
    st = NULL;
    sz.max_stanza_size = strlen(doc) - 1;
    CHECK_INT(pl_xml_parse_fragment_limited(doc, strlen(doc), &sz, &st),
              PL_EINVAL);
    CHECK(st == NULL);
}

/* Notes that once did not survive writing and reading back: a CR (from a
 * character reference), and a note cut at the limit just after a space. */
void test_pidf_note_edges(void)
{
    struct pl_pidf p, q;
    CHECK_INT(pl_pidf_parse(PL_STR(PIDF_HEAD "<note>a&#13;b</note></presence>"),
                            NULL, &p),
              PL_OK);
    CHECK_STR(p.note, "a\rb");
    struct pl_jid *e = NULL;
    CHECK_INT(pl_jid_parse(PL_STR("a@example.com/r"), &e), PL_OK);
    struct pl_pidf_tuple t = {e, &p};
    struct pl_buf b = {0};
    CHECK_INT(pl_pidf_write(e, &t, 1, &b), PL_OK);
    CHECK(strstr(pl_buf_cstr(&b), "<note>a&#13;b</note>") != NULL);
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), NULL, &q), PL_OK);
    CHECK_STR(q.note, "a\rb");
    struct pl_stanza *st = pl_pidf_to_presence(&p, e->full, NULL);
    struct pl_node *s = st ? pl_node_child(pl_stanza_root(st), "status", NULL)
                           : NULL;
    CHECK_STR(s ? pl_node_text(st, s, NULL) : NULL, "a\rb");
    pl_stanza_unref(st);
    pl_pidf_clear(&p);
    pl_pidf_clear(&q);
    pl_buf_reset(&b);

    pl_buf_append_str(&b, PIDF_HEAD "<note>");
    for (int i = 0; i < 9; i++)
        pl_buf_append_str(&b, "x");
    pl_buf_append_str(&b, " yyyy</note></presence>");
    struct pl_pidf_limits ten = {0, 0, 10};
    CHECK_INT(pl_pidf_parse(pl_buf_str(&b), &ten, &p), PL_OK);
    CHECK_STR(p.note, "xxxxxxxxx");
    pl_pidf_clear(&p);
    pl_buf_reset(&b);
    pl_jid_free(e);
}
