/*
 * test_xml.c - the streaming XMPP parser: events, namespaces, splitting,
 * restricted XML, limits, stop and reset.
 *
 * Every table case is parsed whole, a byte at a time and split in two at
 * every offset; all must give the same event log.
 */
#include <stdlib.h>

#include "../../src/core/alloc.h"
#include "../../src/core/buf.h"
#include "../../src/core/error.h"
#include "../../src/core/xml.h"
#include "unit.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() CHECK(__lsan_do_recoverable_leak_check() == 0)
#else
#define LEAK_CHECK() ((void)0)
#endif

#define HDR                                                                    \
    "<stream:stream xmlns='jabber:client' "                                    \
    "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' "        \
    "version='1.0'>"
#define HDR_LOG                                                                \
    "open({http://etherx.jabber.org/streams}stream to=example.com "            \
    "version=1.0 xmlns=jabber:client "                                         \
    "{http://www.w3.org/2000/xmlns/}stream="                                   \
    "http://etherx.jabber.org/streams)\n"

struct rec {
    struct pl_buf log;       /* events, one per line */
    struct pl_xml_parser *p; /* the parser under test */
    int stop_after;          /* pl_xml_parser_stop after n stanzas */
    int reset_after;         /* pl_xml_parser_reset after n stanzas */
    int reset_on_error;      /* pl_xml_parser_reset from the error cb */
    int stanzas;             /* stanzas seen */
    int errors;              /* error callbacks seen */
};

static void log_attrs(struct pl_buf *b, const struct pl_node *el)
{
    for (const struct pl_attr *a = el->attrs; a; a = a->next) {
        if (a->ns)
            pl_buf_printf(b, " {%s}%s=%s", a->ns, a->name, a->value);
        else
            pl_buf_printf(b, " %s=%s", a->name, a->value);
    }
}

static void r_open(void *ud, struct pl_stanza *h)
{
    struct rec *r = ud;
    struct pl_node *root = pl_stanza_root(h);
    pl_buf_printf(&r->log, "open({%s}%s", root->ns, root->name);
    log_attrs(&r->log, root);
    pl_buf_append_str(&r->log, ")\n");
}

static void r_stanza(void *ud, struct pl_stanza *st)
{
    struct rec *r = ud;
    struct pl_str s = pl_stanza_serialize(st, PL_NS_CLIENT);
    pl_buf_append_str(&r->log, "stanza(");
    pl_buf_append(&r->log, s.p, s.len);
    pl_buf_append_str(&r->log, ")\n");
    pl_stanza_unref(st);
    r->stanzas++;
    if (r->stanzas == r->stop_after)
        pl_xml_parser_stop(r->p);
    if (r->stanzas == r->reset_after)
        pl_xml_parser_reset(r->p);
}

static void r_close(void *ud)
{
    struct rec *r = ud;
    pl_buf_append_str(&r->log, "close\n");
}

static void r_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct rec *r = ud;
    CHECK(text != NULL && *text);
    pl_buf_printf(&r->log, "error(%s)\n", pl_xml_error_condition(err));
    r->errors++;
    if (r->reset_on_error)
        pl_xml_parser_reset(r->p);
}

static const struct pl_xml_callbacks rec_cb = {
    .stream_open = r_open,
    .stanza = r_stanza,
    .stream_close = r_close,
    .error = r_error,
};

static void rec_init(struct rec *r, size_t max_size, unsigned max_depth)
{
    struct pl_xml_limits lim = {max_size, max_depth};
    memset(r, 0, sizeof(*r));
    r->p = pl_xml_parser_new(&lim, &rec_cb, r);
}

static void rec_done(struct rec *r)
{
    pl_xml_parser_free(r->p);
    pl_buf_reset(&r->log);
}

/* Feeds in in pieces of step bytes (0: whole), or split once at split. */
static void feed_pieces(struct rec *r, const char *in, size_t len, size_t step,
                        size_t split)
{
    if (step) {
        for (size_t i = 0; i < len; i += step)
            pl_xml_parser_feed(r->p, in + i, len - i < step ? len - i : step);
    } else {
        pl_xml_parser_feed(r->p, in, split);
        pl_xml_parser_feed(r->p, in + split, len - split);
    }
}

struct xcase {
    const char *name; /* what the case shows */
    size_t max_size;  /* limits */
    unsigned max_depth;
    int stop_after;     /* stop from the n-th stanza callback */
    const char *in;     /* input */
    const char *expect; /* event log */
};

/* Parses in whole, bytewise and split at every offset; compares logs. */
static void check_case(const struct xcase *c, const char *in, size_t len)
{
    int bad = 0;
    for (size_t mode = 0; mode <= len + 1 && !bad; mode++) {
        struct rec r;
        rec_init(&r, c->max_size, c->max_depth);
        r.stop_after = c->stop_after;
        if (mode == len + 1)
            feed_pieces(&r, in, len, 1, 0);
        else
            feed_pieces(&r, in, len, 0, mode);
        const char *got = pl_buf_cstr(&r.log);
        if (strcmp(got, c->expect) != 0) {
            fprintf(stderr, "  case %s, %s %zu:\n  got:    %s\n  wanted: %s\n",
                    c->name, mode == len + 1 ? "bytewise" : "split at", mode,
                    got, c->expect);
            unit_failures++;
            bad = 1;
        }
        CHECK(r.errors <= 1);
        rec_done(&r);
    }
}

static const struct xcase basic_cases[] = {
    {"stream with stanzas and keepalives", 0, 0, 0,
     "<?xml version='1.0' encoding='UTF-8'?>\n"
     "<stream:stream xmlns='jabber:client' "
     "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' "
     "version='1.0' xml:lang='en'>  \n"
     "<message to='a@b' type='chat'><body>Hi &amp; bye</body></message>"
     " \t\r\n <presence/>\n \n</stream:stream>\n",
     "open({http://etherx.jabber.org/streams}stream to=example.com "
     "version=1.0 {http://www.w3.org/XML/1998/namespace}lang=en "
     "xmlns=jabber:client "
     "{http://www.w3.org/2000/xmlns/}stream="
     "http://etherx.jabber.org/streams)\n"
     "stanza(<message to='a@b' type='chat'><body>Hi &amp; bye</body>"
     "</message>)\n"
     "stanza(<presence/>)\n"
     "close\n"},
    {"server stream with dialback prefix", 0, 0, 0,
     "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
     "xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
     "from='a.example' to='b.example' version='1.0'>"
     "<db:result from='a.example' to='b.example'>KEY</db:result>",
     "open({http://etherx.jabber.org/streams}stream from=a.example "
     "to=b.example version=1.0 "
     "{http://www.w3.org/2000/xmlns/}stream="
     "http://etherx.jabber.org/streams xmlns=jabber:server "
     "{http://www.w3.org/2000/xmlns/}db=jabber:server:dialback)\n"
     "stanza(<result xmlns='jabber:server:dialback' from='a.example' "
     "to='b.example'>KEY</result>)\n"},
    {"prefixed stream:features", 0, 0, 0,
     HDR "<stream:features><starttls "
         "xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
         "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
         "<mechanism>PLAIN</mechanism></mechanisms></stream:features>",
     HDR_LOG
     "stanza(<features xmlns='http://etherx.jabber.org/streams'><starttls "
     "xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
     "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
     "<mechanism>PLAIN</mechanism></mechanisms></features>)\n"},
    {"nested namespaces, xmlns='', prefixed attributes, xml:lang", 0, 0, 0,
     HDR "<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver=''>"
         "<item jid='a@b' xmlns=''/>"
         "<x:y xmlns:x='urn:x' x:a='1' b='2' xml:lang='de'/>"
         "<z xmlns:q='urn:q' q:a='1' q:b='2' xmlns:r='urn:r' r:c='3'/>"
         "</query></iq>",
     HDR_LOG
     "stanza(<iq type='get' id='r1'><query xmlns='jabber:iq:roster' "
     "ver=''><item xmlns='' jid='a@b'/><y xmlns='urn:x' xmlns:ns1='urn:x' "
     "ns1:a='1' b='2' xml:lang='de'/><z xmlns:ns1='urn:q' ns1:a='1' "
     "ns1:b='2' xmlns:ns2='urn:r' ns2:c='3'/></query></iq>)\n"},
    {"escaping round trip", 0, 0, 0,
     HDR "<message id=\"&apos;&quot;&lt;&gt;&amp;\" to='x&#10;y&#9;z' "
         "from='a\"b'><body>1 &lt; 2 &amp;&amp; 3 &gt; 0 'q' \"d\" "
         "&#x263A;&#13;<![CDATA[<raw>&]]></body></message>",
     HDR_LOG "stanza(<message id='&apos;&quot;&lt;&gt;&amp;' to='x&#10;y&#9;z' "
             "from='a&quot;b'><body>1 &lt; 2 &amp;&amp; 3 &gt; 0 'q' \"d\" "
             "\xe2\x98\xba&#13;&lt;raw&gt;&amp;</body></message>)\n"},
    {"mixed content keeps order", 0, 0, 0,
     HDR "<message><body>a\nb<x/>c&amp;d</body></message>",
     HDR_LOG "stanza(<message><body>a\nb<x/>c&amp;d</body></message>)\n"},
    {"encoding declared in lower case", 0, 0, 0,
     "<?xml version='1.0' encoding='utf-8'?>" HDR "<a/>",
     HDR_LOG "stanza(<a/>)\n"},
    {"text between stanzas", 0, 0, 0, HDR "<a/>hello<b/>",
     HDR_LOG "stanza(<a/>)\nerror(bad-format)\n"},
    {"stop after the first stanza", 0, 0, 1, HDR "<a/><b/><c/></stream:stream>",
     HDR_LOG "stanza(<a/>)\n"},
    {"stop from the first stanza discards garbage", 0, 0, 1,
     HDR "<a/>\xff\xfe<<<<", HDR_LOG "stanza(<a/>)\n"},
};

void test_xml_split_feed(void)
{
    for (size_t i = 0; i < sizeof(basic_cases) / sizeof(basic_cases[0]); i++)
        check_case(&basic_cases[i], basic_cases[i].in,
                   strlen(basic_cases[i].in));
    LEAK_CHECK();
}

static const struct xcase hostile_cases[] = {
    {"DOCTYPE", 0, 0, 0, "<?xml version='1.0'?><!DOCTYPE stream>" HDR,
     "error(restricted-xml)\n"},
    {"billion laughs", 0, 0, 0,
     "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
     "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
     "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
     "<lolz>&lol3;</lolz>",
     "error(restricted-xml)\n"},
    {"DOCTYPE inside the stream", 0, 0, 0, HDR "<!DOCTYPE x>",
     HDR_LOG "error(not-well-formed)\n"},
    {"comment before the stream", 0, 0, 0, "<!-- hi -->" HDR,
     "error(restricted-xml)\n"},
    {"comment between stanzas", 0, 0, 0, HDR "<a/><!-- hi --><b/>",
     HDR_LOG "stanza(<a/>)\nerror(restricted-xml)\n"},
    {"comment inside a stanza", 0, 0, 0, HDR "<message><!-- x --></message>",
     HDR_LOG "error(restricted-xml)\n"},
    {"processing instruction", 0, 0, 0, HDR "<message><?php x?></message>",
     HDR_LOG "error(restricted-xml)\n"},
    {"processing instruction before the stream", 0, 0, 0,
     "<?xml-stylesheet href='x'?>" HDR, "error(restricted-xml)\n"},
    {"ISO-8859-1", 0, 0, 0, "<?xml version='1.0' encoding='ISO-8859-1'?>" HDR,
     "error(unsupported-encoding)\n"},
    {"UTF-16 declared", 0, 0, 0, "<?xml version='1.0' encoding='UTF-16'?>",
     "error(unsupported-encoding)\n"},
    {"XML 1.1", 0, 0, 0, "<?xml version='1.1'?>" HDR, "error(bad-format)\n"},
    {"undeclared entity", 0, 0, 0, HDR "<a>&foo;</a>",
     HDR_LOG "error(not-well-formed)\n"},
    {"byte 0xff", 0, 0, 0, HDR "<a>\xff</a>",
     HDR_LOG "error(not-well-formed)\n"},
    {"overlong /", 0, 0, 0, HDR "<a>\xc0\xaf</a>",
     HDR_LOG "error(not-well-formed)\n"},
    {"surrogate", 0, 0, 0, HDR "<a>\xed\xa0\x80</a>",
     HDR_LOG "error(not-well-formed)\n"},
    {"invalid UTF-8 in an attribute", 0, 0, 0, HDR "<a b='\xc3'/>",
     HDR_LOG "error(not-well-formed)\n"},
    {"U+FFFF", 0, 0, 0, HDR "<a>\xef\xbf\xbf</a>",
     HDR_LOG "error(not-well-formed)\n"},
    {"control character", 0, 0, 0, HDR "<a>\x01</a>",
     HDR_LOG "error(not-well-formed)\n"},
    {"control character reference", 0, 0, 0, HDR "<a>&#1;</a>",
     HDR_LOG "error(not-well-formed)\n"},
    {"mismatched tags", 0, 0, 0, HDR "<message><body></message>",
     HDR_LOG "error(not-well-formed)\n"},
    {"unbound prefix", 0, 0, 0, HDR "<foo:bar/>",
     HDR_LOG "error(not-well-formed)\n"},
    {"duplicate attribute", 0, 0, 0, HDR "<a b='1' b='2'/>",
     HDR_LOG "error(not-well-formed)\n"},
    {"second root after close", 0, 0, 0, HDR "</stream:stream><a/>",
     HDR_LOG "close\nerror(not-well-formed)\n"},
    {"CDATA text between stanzas", 0, 0, 0, HDR "<![CDATA[x]]>",
     HDR_LOG "error(bad-format)\n"},
    {"entity text between stanzas", 0, 0, 0, HDR "&amp;",
     HDR_LOG "error(bad-format)\n"},
};

void test_xml_hostile(void)
{
    for (size_t i = 0; i < sizeof(hostile_cases) / sizeof(hostile_cases[0]);
         i++)
        check_case(&hostile_cases[i], hostile_cases[i].in,
                   strlen(hostile_cases[i].in));
    LEAK_CHECK();
}

/* "<message><body>" + n x 'a' + "</body></message>", n >= 0. */
static char *message_of(size_t total)
{
    const char *head = "<message><body>", *tail = "</body></message>";
    size_t hl = strlen(head), tl = strlen(tail);
    char *s = pl_malloc(total + 1);
    memcpy(s, head, hl);
    memset(s + hl, 'a', total - hl - tl);
    memcpy(s + total - tl, tail, tl);
    s[total] = '\0';
    return s;
}

static char *concat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = pl_malloc(la + lb + lc + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

void test_xml_limits(void)
{
    /* Exactly at the limit passes; one byte over fails; 2000 fails. */
    char *ok = message_of(1000), *over = message_of(1001);
    char *big = message_of(2000);
    char *in = concat3(HDR, ok, "<a/>");
    char *expect = concat3(HDR_LOG "stanza(", ok, ")\nstanza(<a/>)\n");
    struct xcase c = {"stanza at the limit", 1000, 0, 0, in, expect};
    check_case(&c, in, strlen(in));
    pl_free(in);
    pl_free(expect);

    in = concat3(HDR "<a/>", over, "<b/>");
    c = (struct xcase){"stanza one byte over",
                       1000,
                       0,
                       0,
                       in,
                       HDR_LOG "stanza(<a/>)\nerror(policy-violation)\n"};
    check_case(&c, in, strlen(in));
    pl_free(in);

    in = concat3(HDR, big, "");
    c = (struct xcase){"stanza of 2000 bytes",
                       1000,
                       0,
                       0,
                       in,
                       HDR_LOG "error(policy-violation)\n"};
    check_case(&c, in, strlen(in));
    pl_free(in);

    /* Nesting: 10 levels pass, 11 and 20 do not. */
    struct pl_buf b = {0}, e = {0};
    for (int levels = 10; levels <= 20; levels += 10) {
        pl_buf_reset(&b);
        pl_buf_reset(&e);
        pl_buf_append_str(&b, HDR);
        for (int i = 0; i < levels; i++)
            pl_buf_append_str(&b, "<x>");
        for (int i = 0; i < levels; i++)
            pl_buf_append_str(&b, "</x>");
        pl_buf_append_str(&e, HDR_LOG);
        if (levels == 10) {
            pl_buf_append_str(&e, "stanza(");
            for (int i = 0; i < levels - 1; i++)
                pl_buf_append_str(&e, "<x>");
            pl_buf_append_str(&e, "<x/>");
            for (int i = 0; i < levels - 1; i++)
                pl_buf_append_str(&e, "</x>");
            pl_buf_append_str(&e, ")\n");
        } else {
            pl_buf_append_str(&e, "error(policy-violation)\n");
        }
        c = (struct xcase){"nesting",      0, 10, 0, pl_buf_cstr(&b),
                           pl_buf_cstr(&e)};
        check_case(&c, b.data, b.len);
    }
    pl_buf_reset(&b);
    pl_buf_append_str(&b, HDR);
    for (int i = 0; i < 11; i++)
        pl_buf_append_str(&b, "<x>");
    c = (struct xcase){"nesting 11",
                       0,
                       10,
                       0,
                       pl_buf_cstr(&b),
                       HDR_LOG "error(policy-violation)\n"};
    check_case(&c, b.data, b.len);

    /* An oversized stream header and an unterminated start tag. */
    pl_buf_reset(&b);
    pl_buf_append_str(&b, "<stream:stream to='");
    for (int i = 0; i < 1200; i++)
        pl_buf_append_str(&b, "x");
    c = (struct xcase){"stream header",
                       1000,
                       0,
                       0,
                       pl_buf_cstr(&b),
                       "error(policy-violation)\n"};
    check_case(&c, b.data, b.len);
    pl_buf_reset(&b);
    pl_buf_append_str(&b, HDR "<message to='");
    for (int i = 0; i < 1200; i++)
        pl_buf_append_str(&b, "x");
    c = (struct xcase){"open start tag",
                       1000,
                       0,
                       0,
                       pl_buf_cstr(&b),
                       HDR_LOG "error(policy-violation)\n"};
    check_case(&c, b.data, b.len);

    /* A limit change applies from the next stanza. */
    struct rec r;
    rec_init(&r, 0, 0);
    CHECK_INT(pl_xml_parser_feed(r.p, HDR "<message><body>",
                                 strlen(HDR "<message><body>")),
              PL_OK);
    struct pl_xml_limits lim = {100, 0};
    pl_xml_parser_set_limits(r.p, &lim);
    CHECK_INT(pl_xml_parser_feed(r.p, big + 15, strlen(big + 15)), PL_OK);
    CHECK_INT(pl_xml_parser_feed(r.p, big, strlen(big)), PL_EINVAL);
    CHECK_INT(r.stanzas, 1);
    CHECK_INT(r.errors, 1);
    rec_done(&r);

    pl_buf_reset(&b);
    pl_buf_reset(&e);
    pl_free(ok);
    pl_free(over);
    pl_free(big);
    LEAK_CHECK();
}

void test_xml_huge_token(void)
{
    /* A 1 MB attribute value in one chunk is refused after one slice. */
    size_t n = 1 << 20;
    char *in = pl_malloc(n);
    const char *head = HDR "<message to='";
    memcpy(in, head, strlen(head));
    memset(in + strlen(head), 'x', n - strlen(head));
    struct rec r;
    rec_init(&r, 1000, 0);
    CHECK_INT(pl_xml_parser_feed(r.p, in, n), PL_EINVAL);
    CHECK_STR(pl_buf_cstr(&r.log), HDR_LOG "error(policy-violation)\n");
    CHECK(pl__xml_parser_bytes(r.p) <= 32768);
    CHECK_INT(pl_xml_parser_feed(r.p, "<a/>", 4), PL_EINVAL);
    CHECK_INT(r.errors, 1);
    rec_done(&r);

    /* Without a size limit a single tag is still bounded. */
    rec_init(&r, 0, 0);
    CHECK_INT(pl_xml_parser_feed(r.p, in, n), PL_EINVAL);
    CHECK_STR(pl_buf_cstr(&r.log), HDR_LOG "error(policy-violation)\n");
    CHECK(pl__xml_parser_bytes(r.p) <= 65536 + 16384);
    rec_done(&r);

    /* But a big text node streams through when no limit is set. */
    memcpy(in, "<message><body>", 15);
    memset(in + 15, 'y', n - 15);
    rec_init(&r, 0, 0);
    CHECK_INT(pl_xml_parser_feed(r.p, HDR, strlen(HDR)), PL_OK);
    CHECK_INT(pl_xml_parser_feed(r.p, in, n), PL_OK);
    CHECK_INT(pl_xml_parser_feed(r.p, "</body></message>", 17), PL_OK);
    CHECK_INT(r.stanzas, 1);
    CHECK_INT(r.errors, 0);
    CHECK_INT(r.log.len, strlen(HDR_LOG) + strlen("stanza()\n") + n + 17);
    rec_done(&r);
    pl_free(in);
    LEAK_CHECK();
}

static struct pl_stanza *kept;

static void keep_stanza(void *ud, struct pl_stanza *st)
{
    pl_stanza_unref(kept);
    kept = st;
}

void test_xml_text_coalesced(void)
{
    /* Text arrives in many pieces (newlines, references, feeds): the
     * stanza gets one text node. */
    struct pl_xml_callbacks cb = {.stanza = keep_stanza};
    struct pl_xml_parser *p = pl_xml_parser_new(NULL, &cb, NULL);
    const char *in = HDR "<message><body>line1\nline2&amp;&#x41;\r\nz"
                         "<![CDATA[c]]>end</body></message>";
    for (size_t i = 0; in[i]; i++)
        CHECK_INT(pl_xml_parser_feed(p, in + i, 1), PL_OK);
    CHECK(kept != NULL);
    if (kept) {
        struct pl_node *body = pl_node_child(pl_stanza_root(kept), "body",
                                             PL_NS_CLIENT);
        CHECK(body != NULL && body->children == body->last);
        CHECK_INT(body->children->type, PL_NODE_TEXT);
        size_t len;
        CHECK_STR(pl_node_text(kept, body, &len), "line1\nline2&A\nzcend");
        CHECK_INT(len, 19);
        CHECK_STR(body->ns, PL_NS_CLIENT);
        CHECK(body->ns == pl_stanza_root(kept)->ns); /* shared, not copied */
        /* A small stanza fits the first arena chunk. */
        CHECK(pl_stanza_memory(kept) < 1024);
    }
    pl_stanza_unref(kept);
    kept = NULL;
    pl_xml_parser_free(p);
    LEAK_CHECK();
}

void test_xml_stop(void)
{
    struct rec r;
    rec_init(&r, 0, 0);
    r.stop_after = 1;
    const char *in = HDR "<a/><b/>";
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_OK);
    CHECK_INT(pl_xml_parser_feed(r.p, "<c/>", 4), PL_OK); /* discarded */
    CHECK_STR(pl_buf_cstr(&r.log), HDR_LOG "stanza(<a/>)\n");
    pl_xml_parser_reset(r.p);
    r.stop_after = 0;
    in = "<?xml version='1.0'?>" HDR "<d/>";
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_OK);
    CHECK_STR(pl_buf_cstr(&r.log),
              HDR_LOG "stanza(<a/>)\n" HDR_LOG "stanza(<d/>)\n");
    CHECK_INT(r.errors, 0);
    rec_done(&r);
    LEAK_CHECK();
}

void test_xml_reset(void)
{
    /* Reset mid-stanza (STARTTLS, SASL): the partial stanza is dropped. */
    struct rec r;
    rec_init(&r, 0, 0);
    const char *in = HDR "<a/><message><body>half";
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_OK);
    pl_xml_parser_reset(r.p);
    CHECK_INT(pl__xml_parser_bytes(r.p), 0);
    in = HDR "<b/></stream:stream>";
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_OK);
    CHECK_STR(pl_buf_cstr(&r.log),
              HDR_LOG "stanza(<a/>)\n" HDR_LOG "stanza(<b/>)\nclose\n");

    /* Reset after an error makes the parser usable again. */
    CHECK_INT(pl_xml_parser_feed(r.p, "<x", 2), PL_EINVAL);
    CHECK_INT(pl_xml_parser_feed(r.p, HDR, strlen(HDR)), PL_EINVAL);
    CHECK_INT(r.errors, 1);
    pl_xml_parser_reset(r.p);
    pl_buf_reset(&r.log);
    CHECK_INT(pl_xml_parser_feed(r.p, HDR "<c/>", strlen(HDR "<c/>")), PL_OK);
    CHECK_STR(pl_buf_cstr(&r.log), HDR_LOG "stanza(<c/>)\n");

    /* Reset from inside a callback: the rest of that input goes too. */
    pl_xml_parser_reset(r.p);
    pl_buf_reset(&r.log);
    r.stanzas = 0;
    r.reset_after = 1;
    in = HDR "<auth/><garbage";
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_OK);
    CHECK_INT(pl__xml_parser_bytes(r.p), 0);
    in = HDR "<e/>";
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_OK);
    CHECK_STR(pl_buf_cstr(&r.log),
              HDR_LOG "stanza(<auth/>)\n" HDR_LOG "stanza(<e/>)\n");
    rec_done(&r);

    /* Reset from the error callback, for an expat error and for a limit
     * found between slices: feed still reports the error, drops the rest,
     * and the next feed starts a new stream. */
    static const char *const bad[] = {HDR "<a>\xff</a><b/>", NULL};
    char *huge = pl_malloc(100000);
    memset(huge, 'x', 100000);
    memcpy(huge, HDR "<a b='", strlen(HDR "<a b='"));
    for (int i = 0; i < 2; i++) {
        rec_init(&r, 1000, 0);
        r.reset_on_error = 1;
        const char *data = bad[i] ? bad[i] : huge;
        size_t len = bad[i] ? strlen(bad[i]) : 100000;
        CHECK_INT(pl_xml_parser_feed(r.p, data, len), PL_EINVAL);
        CHECK_INT(r.errors, 1);
        CHECK(pl__xml_parser_bytes(r.p) == 0);
        CHECK_INT(pl_xml_parser_feed(r.p, HDR "<c/>", strlen(HDR "<c/>")),
                  PL_OK);
        CHECK_INT(r.errors, 1);
        CHECK(strstr(pl_buf_cstr(&r.log), "stanza(<c/>)") != NULL);
        CHECK(strstr(pl_buf_cstr(&r.log), "<b/>") == NULL);
        rec_done(&r);
    }
    pl_free(huge);
    LEAK_CHECK();
}

void test_xml_fragment(void)
{
    static const struct {
        const char *in;
        const char *out; /* NULL: must fail */
    } cases[] = {
        {"<iq type='get'><query xmlns='jabber:iq:version'/></iq>",
         "<iq xmlns='' type='get'><query xmlns='jabber:iq:version'/></iq>"},
        {"<?xml version='1.0'?>\n<message xmlns='jabber:client'><body>x"
         "</body></message>\n",
         "<message><body>x</body></message>"},
        {"<a/>", "<a xmlns=''/>"},
        {"", NULL},
        {"<a>", NULL},
        {"<a/><b/>", NULL},
        {"text", NULL},
        {"<a/>junk", NULL},
        {"<!DOCTYPE a><a/>", NULL},
        {"<a><!-- c --></a>", NULL},
        {"<a>\xff</a>", NULL},
        {"<?xml version='1.0' encoding='latin1'?><a/>", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_stanza *st = (struct pl_stanza *)&cases; /* sentinel */
        int rc = pl_xml_parse_fragment(cases[i].in, strlen(cases[i].in), &st);
        if (!cases[i].out) {
            CHECK_INT(rc, PL_EINVAL);
            CHECK(st == (struct pl_stanza *)&cases);
            continue;
        }
        CHECK_INT(rc, PL_OK);
        if (rc != PL_OK)
            continue;
        struct pl_str s = pl_stanza_serialize(st, PL_NS_CLIENT);
        char *got = pl_strndup(s.p, s.len);
        CHECK_STR(got, cases[i].out);
        pl_free(got);
        pl_stanza_unref(st);
    }
    /* Fragments have no size limit. */
    char *big = message_of(100000);
    struct pl_stanza *st = NULL;
    CHECK_INT(pl_xml_parse_fragment(big, strlen(big), &st), PL_OK);
    pl_stanza_unref(st);
    pl_free(big);
    LEAK_CHECK();
}

void test_xml_error_once(void)
{
    struct rec r;
    rec_init(&r, 0, 0);
    const char *in = HDR "<a>\xff</a><b>\xff</b>";
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_EINVAL);
    CHECK_INT(pl_xml_parser_feed(r.p, in, strlen(in)), PL_EINVAL);
    CHECK_INT(pl_xml_parser_feed(r.p, "", 0), PL_EINVAL);
    CHECK_INT(r.errors, 1);
    rec_done(&r);
    CHECK_STR(pl_xml_error_condition(PL_XML_POLICY_VIOLATION),
              "policy-violation");
    CHECK_STR(pl_xml_error_condition(PL_XML_UNSUPPORTED_ENCODING),
              "unsupported-encoding");
    CHECK_STR(pl_xml_error_condition(PL_XML_RESTRICTED_XML), "restricted-xml");
    CHECK_STR(pl_xml_error_condition(PL_XML_BAD_FORMAT), "bad-format");
    CHECK_STR(pl_xml_error_condition(PL_XML_NOT_WELL_FORMED),
              "not-well-formed");
    LEAK_CHECK();
}

/* Deterministic junk: the parser must neither crash nor leak. */
void test_xml_garbage(void)
{
    static const char alphabet[] = "<>/='\"&;:ax \n\xff\xc3\xa9!?-[]#x";
    unsigned seed = 12345;
    char buf[512];
    for (int round = 0; round < 2000; round++) {
        size_t len = 0;
        memcpy(buf, HDR, strlen(HDR));
        len = round % 2 ? strlen(HDR) : 0;
        size_t n = 1 + (seed % 300);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[len++] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        struct rec r;
        rec_init(&r, 200, 4);
        size_t step = 1 + round % 7;
        feed_pieces(&r, buf, len, step, 0);
        CHECK(r.errors <= 1);
        rec_done(&r);
        seed += (unsigned)round;
    }
    LEAK_CHECK();
}

void test_xml_no_deferral(void)
{
    /* Expat 2.6 (and backports) would hold a stanza whose big start tag
     * is finished by a small tail until more data came: XMPP needs it now. */
    struct rec r;
    rec_init(&r, 0, 0);
    size_t n = 8000;
    char *big = pl_malloc(n + 16);
    memcpy(big, "<message to='", 13);
    memset(big + 13, 'a', n);
    CHECK_INT(pl_xml_parser_feed(r.p, HDR, strlen(HDR)), PL_OK);
    CHECK_INT(pl_xml_parser_feed(r.p, big, n + 13), PL_OK);
    CHECK_INT(r.stanzas, 0);
    CHECK_INT(pl_xml_parser_feed(r.p, "'/>", 3), PL_OK);
    CHECK_INT(r.stanzas, 1);
    pl_free(big);
    rec_done(&r);
    LEAK_CHECK();
}

/* Napping between stanzas frees expat and resumes with the same context. */
void test_xml_nap(void)
{
    static const char hdr[] =
        "<?xml version='1.0'?><s:stream xmlns='jabber:client' "
        "xmlns:s='http://etherx.jabber.org/streams' xmlns:x='urn:x' "
        "to='localhost' version='1.0'>";
    struct rec r;
    rec_init(&r, 4096, 16);
    CHECK_INT(pl_xml_parser_nap(r.p), 0); /* before the header */
    pl_xml_parser_feed(r.p, hdr, sizeof(hdr) - 1);
    CHECK_INT(pl_xml_parser_nap(r.p), 1);
    CHECK_INT(pl_xml_parser_nap(r.p), 0); /* already napping */
    static const char m1[] = "<message to='a@b'><x:y/><body>1</body></message>";
    pl_xml_parser_feed(r.p, m1, sizeof(m1) - 1);
    /* A partial stanza is kept: no nap until it completes. */
    static const char m2a[] = " <message><bo", m2b[] = "dy>2</body></message>";
    pl_xml_parser_feed(r.p, m2a, sizeof(m2a) - 1);
    CHECK_INT(pl_xml_parser_nap(r.p), 0);
    pl_xml_parser_feed(r.p, m2b, sizeof(m2b) - 1);
    CHECK_INT(pl_xml_parser_nap(r.p), 1);
    pl_xml_parser_feed(r.p, "</s:stream>", 11);
    CHECK_INT(r.errors, 0);
    CHECK_INT(r.stanzas, 2);
    const char *log = pl_buf_cstr(&r.log);
    CHECK(strstr(log, "stanza(<message to='a@b'><y xmlns='urn:x'/><body>1"
                      "</body></message>)") != NULL);
    CHECK(strstr(log, "stanza(<message><body>2</body></message>)") != NULL);
    CHECK(strstr(log, "close") != NULL);
    /* Exactly one open event: the replayed header is silent. */
    int opens = 0;
    for (const char *q = log; (q = strstr(q, "open(")); q++)
        opens++;
    CHECK_INT(opens, 1);
    /* Errors after a nap are still reported. */
    CHECK_INT(pl_xml_parser_nap(r.p), 0); /* stream closed: depth 0 */
    rec_done(&r);

    rec_init(&r, 4096, 16);
    pl_xml_parser_feed(r.p, hdr, sizeof(hdr) - 1);
    CHECK_INT(pl_xml_parser_nap(r.p), 1);
    pl_xml_parser_feed(r.p, "<message><unbound:x/></message>", 31);
    CHECK_INT(r.errors, 1);
    rec_done(&r);
}

/*
 * A nap must change nothing, wherever the input is cut: it may only happen
 * between two children of the stream element with nothing pending.  Each
 * input is parsed whole for reference, then cut at every offset with a nap
 * attempt at the cut, then a byte at a time with a nap attempt after every
 * byte.  The inputs hold states a byte index does not show: a CDATA
 * section (at depth 1 and inside a stanza), comments, processing
 * instructions, a DOCTYPE, character and entity references, attribute
 * values holding markup, CR LF, multibyte characters, deep nesting.
 */
static const char *const nap_inputs[] = {
    HDR "<![CDATA[<message/>]]><message/>",
    HDR "<![CDATA[]]><message/>",
    HDR "<![CDATA[ \n]]><message/>",
    HDR "<message><body><![CDATA[</body></message><iq/>]]></body>"
        "</message> <iq/>",
    HDR " \r\n <message a='x&gt;/>' b=\"&#x3c;iq/&#62;\">&#x263A;&amp;"
        "&lt;presence/></message>\t\r<presence/>\r\n",
    HDR "<message/><!-- <message/> --><iq/>",
    HDR "<message/><?pi <message/> ?><iq/>",
    HDR "<!DOCTYPE x [<!ENTITY e '<message/>'>]><message/>",
    HDR "&#x20;&#10;<message/>&#x3c;iq/>",
    HDR "<a><b><c>t<d/></c></b></a> <e xmlns='urn:x' xml:lang='en'/>"
        "</stream:stream>",
    HDR "\xc3\xa9<message/>",
    HDR "<message>\xe2\x98\xba</message>]]><message/>",
    "<?xml version='1.0'?>\n" HDR "\n<message/>",
};

static void nap_feed(struct rec *r, const char *in, size_t len, int *naps)
{
    pl_xml_parser_feed(r->p, in, len);
    *naps += pl_xml_parser_nap(r->p);
}

void test_xml_nap_anywhere(void)
{
    int naps = 0;
    for (size_t k = 0; k < sizeof(nap_inputs) / sizeof(nap_inputs[0]); k++) {
        const char *in = nap_inputs[k];
        size_t len = strlen(in);
        struct rec ref;
        rec_init(&ref, 0, 0);
        pl_xml_parser_feed(ref.p, in, len);
        const char *want = pl_buf_cstr(&ref.log);
        int bad = 0;
        for (size_t mode = 0; mode <= len + 1 && !bad; mode++) {
            struct rec r;
            rec_init(&r, 0, 0);
            if (mode <= len) {
                nap_feed(&r, in, mode, &naps);
                nap_feed(&r, in + mode, len - mode, &naps);
            } else {
                for (size_t i = 0; i < len; i++)
                    nap_feed(&r, in + i, 1, &naps);
            }
            const char *got = pl_buf_cstr(&r.log);
            if (strcmp(got, want) != 0) {
                fprintf(stderr,
                        "  input %zu, %s %zu:\n  got:    %s\n"
                        "  wanted: %s\n",
                        k, mode > len ? "bytewise" : "nap at", mode, got, want);
                unit_failures++;
                bad = 1;
            }
            rec_done(&r);
        }
        rec_done(&ref);
    }
    CHECK(naps > 100); /* the naps did happen */
    LEAK_CHECK();
}

/* RFC 6120 §11.7: only whitespace may separate the stream's children; a
 * CDATA section there is refused as it starts, whatever it holds. */
void test_xml_cdata_at_stream_level(void)
{
    static const char *const tails[] = {
        "<![CDATA[<message/>]]>", "<![CDATA[]]>", "<![CDATA[ ]]>",
        "<![CDATA[<message/>",    "<![CDATA[",
    };
    for (size_t k = 0; k < sizeof(tails) / sizeof(tails[0]); k++) {
        struct rec r;
        rec_init(&r, 0, 0);
        CHECK_INT(pl_xml_parser_feed(r.p, HDR "<iq/>", strlen(HDR) + 5), PL_OK);
        pl_xml_parser_feed(r.p, tails[k], strlen(tails[k]));
        CHECK_INT(pl_xml_parser_nap(r.p), 0);
        pl_xml_parser_feed(r.p, "<message/>", 10);
        CHECK_STR(pl_buf_cstr(&r.log),
                  HDR_LOG "stanza(<iq/>)\nerror(bad-format)\n");
        rec_done(&r);
    }
    LEAK_CHECK();
}
