/* test_mam.c - archive query parsing, XEP-0082 times, preferences. */
#include "../../src/modules/mam/mam.h"
#include "unit.h"

void test_mam_time(void)
{
    static const struct {
        const char *in;
        long long us; /* -1: invalid */
    } cases[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"2010-07-10T23:08:25Z", 1278803305000000LL},
        {"2010-07-10T23:08:25.5Z", 1278803305500000LL},
        {"2010-07-10T23:08:25.123456789Z", 1278803305123456LL},
        {"2010-07-11T01:08:25+02:00", 1278803305000000LL},
        {"2010-07-10T22:08:25-01:00", 1278803305000000LL},
        {"2010-07-10T23:08:25", -1},
        {"2010-07-10 23:08:25Z", -1},
        {"2010-13-10T23:08:25Z", -1},
        {"2010-07-10T23:08:25.Z", -1},
        {"2010-07-10T23:08:25Zx", -1},
        {"yesterday", -1},
        {"", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long long us = -1;
        int rc = pl_mam_time_parse(cases[i].in, &us);
        if (cases[i].us < 0) {
            CHECK_INT(rc, PL_EINVAL);
        } else {
            CHECK_INT(rc, PL_OK);
            CHECK_INT(us, cases[i].us);
        }
    }
    char buf[48];
    pl_mam_time_format(1278803305123456LL, buf, sizeof(buf));
    CHECK_STR(buf, "2010-07-10T23:08:25.123456Z");
    long long back;
    CHECK_INT(pl_mam_time_parse(buf, &back), PL_OK);
    CHECK_INT(back, 1278803305123456LL);
}

static int parse(const char *xml, struct pl_mam_query *q, const char **t)
{
    struct pl_stanza *st;
    if (pl_xml_parse_fragment(xml, strlen(xml), &st) != PL_OK)
        return 999;
    int rc = pl_mam_query_parse(st, pl_stanza_payload(st), q, t);
    pl_stanza_unref(st);
    return rc;
}

#define Q(body)                                                                \
    "<iq xmlns='jabber:client'><query xmlns='urn:xmpp:mam:2' "                 \
    "queryid='f1'>" body "</query></iq>"
#define F(fields)                                                              \
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"           \
    "<value>urn:xmpp:mam:2</value></field>" fields "</x>"

void test_mam_query_parse(void)
{
    struct pl_mam_query q;
    const char *t;
    CHECK_INT(
        parse(Q(F("<field var='with'><value>Juliet@Capulet.lit/Bal"
                  "</value></field><field var='start'><value>"
                  "2010-07-10T23:08:25Z</value></field><field "
                  "var='after-id'><value>a1</value></field><field "
                  "var='ids'><value>x</value><value>y</value>"
                  "</field>") "<set "
                              "xmlns='http://jabber.org/protocol/rsm'><max>10"
                              "</max><before/></set><flip-page/>"),
              &q, &t),
        PL_OK);
    CHECK_STR(q.queryid, "f1");
    CHECK_STR(q.with, "juliet@capulet.lit");
    CHECK_STR(q.with_res, "Bal");
    CHECK_INT(q.start, 1278803305000000LL);
    CHECK_INT(q.end, 0);
    CHECK_STR(q.after_id, "a1");
    CHECK_INT(q.nids, 2);
    CHECK_STR(q.ids[1], "y");
    CHECK_INT(q.max, 10);
    CHECK_STR(q.before, "");
    CHECK(q.after == NULL);
    CHECK_INT(q.flip, 1);
    pl_mam_query_free(&q);

    CHECK_INT(parse(Q(""), &q, &t), PL_OK);
    CHECK_INT(q.max, -1);
    CHECK(q.before == NULL && q.with == NULL && !q.flip);
    pl_mam_query_free(&q);

    static const struct {
        const char *xml;
        int rc;
    } bad[] = {
        {Q(F("<field var='start'><value>nope</value></field>")),
         PL_EBAD_REQUEST},
        {Q(F("<field var='with'><value>a@b@c</value></field>")),
         PL_EBAD_REQUEST},
        {Q(F("<field var='start'><value>2011-01-01T00:00:00Z</value>"
             "</field><field var='end'><value>2010-01-01T00:00:00Z</value>"
             "</field>")),
         PL_EBAD_REQUEST},
        {Q(F("<field var='full-text'><value>x</value></field>")),
         PL_EFEATURE_NOT_IMPLEMENTED},
        {Q("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
           "<value>urn:xmpp:mam:1</value></field></x>"),
         PL_EBAD_REQUEST},
        {Q("<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>"),
         PL_EBAD_REQUEST},
        {Q("<set xmlns='http://jabber.org/protocol/rsm'><max>1x</max></set>"),
         PL_EBAD_REQUEST},
        {Q("<set xmlns='http://jabber.org/protocol/rsm'><index>3</index>"
           "</set>"),
         PL_EFEATURE_NOT_IMPLEMENTED},
        {Q("<set xmlns='http://jabber.org/protocol/rsm'><after/></set>"),
         PL_EBAD_REQUEST},
        {Q(F("<field var='ids'/>")), PL_EBAD_REQUEST},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = NULL;
        CHECK_INT(parse(bad[i].xml, &q, &t), bad[i].rc);
        CHECK(t != NULL);
        CHECK(q.queryid == NULL && q.nids == 0);
    }
}

void test_mam_prefs(void)
{
    const char *xml =
        "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>"
        "Romeo@Montague.lit</jid><jid>capulet.lit</jid></always><never>"
        "<jid>nurse@capulet.lit</jid><jid>tybalt@capulet.lit/x</jid>"
        "</never></prefs>";
    struct pl_stanza *st;
    CHECK_INT(pl_xml_parse_fragment(xml, strlen(xml), &st), PL_OK);
    struct pl_mam_prefs p;
    CHECK_INT(pl_mam_prefs_parse(st, pl_stanza_root(st), 10, &p), PL_OK);
    CHECK_INT(p.def, PL_MAM_ROSTER);
    CHECK_INT(p.nalways, 2);
    CHECK_STR(p.always[0], "romeo@montague.lit");
    static const struct {
        const char *peer;
        int want;
    } cases[] = {
        {"romeo@montague.lit", 1},
        {"romeo@montague.lit/orchard", 1},
        {"juliet@capulet.lit/balcony", 1}, /* domain entry */
        {"capulet.lit", 1},
        {"nurse@capulet.lit/a", 0}, /* never wins */
        {"tybalt@capulet.lit/x", 0},
        {"tybalt@capulet.lit/y", 1},   /* full entry, other resource */
        {"benvolio@montague.lit", -1}, /* roster decides */
        {"romeo@montague.lite", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_INT(pl_mam_prefs_decide(&p, cases[i].peer), cases[i].want);
    /* Round trip through the builder. */
    struct pl_stanza *out = pl_stanza_new("iq", PL_NS_CLIENT);
    pl_mam_prefs_build(&p, out, pl_stanza_root(out));
    struct pl_mam_prefs p2;
    CHECK_INT(pl_mam_prefs_parse(out, pl_stanza_payload(out), 10, &p2), PL_OK);
    CHECK_INT(p2.def, PL_MAM_ROSTER);
    CHECK_INT(p2.nnever, 2);
    CHECK_STR(p2.never[1], "tybalt@capulet.lit/x");
    pl_mam_prefs_free(&p2);
    CHECK_INT(pl_mam_prefs_parse(out, pl_stanza_payload(out), 1, &p2),
              PL_EBAD_REQUEST); /* over max_jids */
    pl_stanza_unref(out);
    pl_mam_prefs_free(&p);
    pl_stanza_unref(st);

    const char *badxml = "<prefs xmlns='urn:xmpp:mam:2' default='maybe'/>";
    CHECK_INT(pl_xml_parse_fragment(badxml, strlen(badxml), &st), PL_OK);
    CHECK_INT(pl_mam_prefs_parse(st, pl_stanza_root(st), 10, &p),
              PL_EBAD_REQUEST);
    pl_stanza_unref(st);
    CHECK_INT(pl_mam_default_parse("never"), PL_MAM_NEVER);
    CHECK_STR(pl_mam_default_name(PL_MAM_ALWAYS), "always");
}
