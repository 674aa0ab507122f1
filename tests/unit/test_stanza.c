/*
 * test_stanza.c - element trees, arenas, reference counting, copies and the
 * serializer with its cache.
 */
#include <stdint.h>
#include <stdio.h>

#include "../../src/core/alloc.h"
#include "../../src/core/buf.h"
#include "../../src/core/error.h"
#include "../../src/core/stanza.h"
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

/* Serialization for stream_ns as a NUL-terminated string (static buffer). */
static const char *ser(struct pl_stanza *st, const char *stream_ns)
{
    static char out[4096];
    struct pl_str s = pl_stanza_serialize(st, stream_ns);
    size_t n = s.len < sizeof(out) - 1 ? s.len : sizeof(out) - 1;
    memcpy(out, s.p, n);
    out[n] = '\0';
    return out;
}

static struct pl_stanza *parse(const char *xml)
{
    struct pl_stanza *st = NULL;
    CHECK_INT(pl_xml_parse_fragment(xml, strlen(xml), &st), PL_OK);
    return st;
}

void test_stanza_build(void)
{
    struct pl_stanza *st = pl_stanza_new("message", PL_NS_CLIENT);
    CHECK_STR(pl_stanza_name(st), "message");
    pl_stanza_set_attr(st, "to", "juliet@example.com");
    pl_stanza_set_attr(st, "type", "chat");
    pl_stanza_set_attr(st, "id", "1");
    pl_stanza_set_attr(st, "to", "romeo@example.net"); /* replaced in place */
    pl_stanza_set_attr(st, "id", NULL);                /* removed */
    pl_stanza_set_attr(st, "absent", NULL);            /* no-op */
    CHECK_STR(pl_stanza_attr(st, "to"), "romeo@example.net");
    CHECK(pl_stanza_attr(st, "id") == NULL);
    struct pl_node *root = pl_stanza_root(st);
    struct pl_node *body = pl_node_add_child(st, root, "body", PL_NS_CLIENT);
    pl_node_add_text(st, body, "Art thou ", 9);
    pl_node_add_text(st, body, "not <Romeo>?", 12); /* coalesced */
    CHECK(body->children == body->last);
    pl_node_add_text(st, body, "", 0); /* nothing */
    struct pl_node *x = pl_node_add_child(st, root, "x", "jabber:x:oob");
    pl_node_set_attr(st, x, "a", "1&2");
    pl_node_add_child(st, x, "url", "jabber:x:oob");
    pl_node_add_child(st, root, "y", NULL); /* no namespace */
    CHECK_STR(ser(st, PL_NS_CLIENT),
              "<message to='romeo@example.net' type='chat'><body>Art thou "
              "not &lt;Romeo&gt;?</body><x xmlns='jabber:x:oob' a='1&amp;2'>"
              "<url/></x><y xmlns=''/></message>");
    /* The same stanza to a server stream: no xmlns either. */
    CHECK_STR(ser(st, PL_NS_SERVER),
              "<message to='romeo@example.net' type='chat'><body>Art thou "
              "not &lt;Romeo&gt;?</body><x xmlns='jabber:x:oob' a='1&amp;2'>"
              "<url/></x><y xmlns=''/></message>");
    pl_stanza_unref(st);

    /* A stanza in jabber:server sent to a client stream. */
    st = pl_stanza_new("presence", PL_NS_SERVER);
    pl_node_add_child(st, pl_stanza_root(st), "show", PL_NS_SERVER);
    CHECK_STR(ser(st, PL_NS_CLIENT), "<presence><show/></presence>");
    /* A component stream: content namespaces still need no xmlns. */
    CHECK_STR(ser(st, "jabber:component:accept"),
              "<presence><show/></presence>");
    pl_stanza_unref(st);
    LEAK_CHECK();
}

void test_stanza_lookup(void)
{
    struct pl_stanza *st = parse(
        "<message xmlns='jabber:client' xml:lang='en'>"
        "<body>one</body><body xml:lang='de'>zwei</body>"
        "<x xmlns='urn:x'/>text<y/>more<thread>t</thread></message>");
    struct pl_node *root = pl_stanza_root(st);
    CHECK_INT(pl_node_count_elems(root), 5);
    struct pl_node *b = pl_node_child(root, "body", NULL);
    CHECK_STR(pl_node_text(st, b, NULL), "one");
    CHECK(pl_node_child(root, NULL, "urn:x") != NULL);
    CHECK_STR(pl_node_child(root, NULL, "urn:x")->name, "x");
    CHECK(pl_node_child(root, "x", PL_NS_CLIENT) == NULL);
    CHECK(pl_node_child(root, "nothing", NULL) == NULL);
    CHECK_STR(pl_node_attr_ns(root, PL_NS_XML, "lang"), "en");
    CHECK(pl_node_attr(root, "lang") == NULL); /* not in no namespace */
    struct pl_node *b2 = pl_node_next_elem(b);
    CHECK_STR(pl_node_attr_ns(b2, PL_NS_XML, "lang"), "de");
    CHECK_STR(pl_node_text(st, b2, NULL), "zwei");
    const char *names[] = {"body", "body", "x", "y", "thread"};
    size_t i = 0;
    for (struct pl_node *c = pl_node_first_elem(root); c;
         c = pl_node_next_elem(c), i++)
        CHECK_STR(c->name, i < 5 ? names[i] : "(too many)");
    CHECK_INT(i, 5);
    size_t len = 99;
    CHECK_STR(pl_node_text(st, root, &len), "textmore"); /* joins pieces */
    CHECK_INT(len, 8);
    CHECK_STR(pl_node_text(st, pl_node_child(root, "y", NULL), &len), "");
    CHECK_INT(len, 0);
    pl_stanza_unref(st);
    LEAK_CHECK();
}

void test_stanza_refcount(void)
{
    struct pl_stanza *st = pl_stanza_new("iq", PL_NS_CLIENT);
    CHECK(pl_stanza_ref(st) == st);
    CHECK(pl_stanza_ref(st) == st);
    pl_stanza_unref(st);
    pl_stanza_unref(st);
    CHECK_STR(pl_stanza_name(st), "iq"); /* one reference left */
    pl_stanza_unref(st);
    pl_stanza_unref(NULL);
    LEAK_CHECK();
}

void test_stanza_copy(void)
{
    struct pl_stanza *a = parse(
        "<message xmlns='jabber:client' to='a@b'><body>hi &amp; bye</body>"
        "<x xmlns='urn:x' xmlns:p='urn:p' p:q='1'><y>t</y></x></message>");
    const char *want = "<message to='a@b'><body>hi &amp; bye</body>"
                       "<x xmlns='urn:x' xmlns:ns1='urn:p' ns1:q='1'>"
                       "<y>t</y></x></message>";
    struct pl_stanza *b = pl_stanza_copy(a);
    CHECK(b != a);
    CHECK_STR(ser(b, PL_NS_CLIENT), want);
    pl_stanza_set_attr(b, "to", "c@d");
    pl_node_add_text(b, pl_node_child(pl_stanza_root(b), "body", NULL), "!", 1);
    CHECK_STR(ser(a, PL_NS_CLIENT), want); /* the original is untouched */
    CHECK_STR(ser(b, PL_NS_CLIENT),
              "<message to='c@d'><body>hi &amp; bye!</body>"
              "<x xmlns='urn:x' xmlns:ns1='urn:p' ns1:q='1'>"
              "<y>t</y></x></message>");
    pl_stanza_unref(a); /* b must not depend on a's arena */
    CHECK_STR(ser(b, PL_NS_CLIENT),
              "<message to='c@d'><body>hi &amp; bye!</body>"
              "<x xmlns='urn:x' xmlns:ns1='urn:p' ns1:q='1'>"
              "<y>t</y></x></message>");

    /* pl_node_add_copy from another stanza, then of an ancestor into its
     * own descendant. */
    struct pl_stanza *c = pl_stanza_new("message", PL_NS_CLIENT);
    struct pl_node *fwd = pl_node_add_child(c, pl_stanza_root(c), "forwarded",
                                            "urn:xmpp:forward:0");
    pl_node_add_copy(c, fwd, pl_stanza_root(b));
    pl_stanza_unref(b);
    CHECK_STR(ser(c, PL_NS_SERVER),
              "<message><forwarded xmlns='urn:xmpp:forward:0'>"
              "<message xmlns='jabber:client' to='c@d'><body>hi &amp; bye!"
              "</body><x xmlns='urn:x' xmlns:ns1='urn:p' ns1:q='1'><y>t</y>"
              "</x></message></forwarded></message>");
    struct pl_node *root = pl_stanza_root(c);
    pl_node_add_copy(c, fwd, root);
    CHECK_INT(pl_node_count_elems(fwd), 2);
    struct pl_node *inner = pl_node_next_elem(pl_node_first_elem(fwd));
    CHECK_STR(inner->name, "message");
    CHECK_INT(pl_node_count_elems(pl_node_first_elem(inner)), 1);
    /* Copying a text node merges with preceding text. */
    struct pl_node *body = pl_node_add_child(c, root, "body", NULL);
    pl_node_add_text(c, body, "a", 1);
    struct pl_stanza *t = parse("<t>b</t>");
    pl_node_add_copy(c, body, pl_stanza_root(t)->children);
    pl_stanza_unref(t);
    CHECK(body->children == body->last);
    CHECK_STR(pl_node_text(c, body, NULL), "ab");
    pl_stanza_unref(c);
    LEAK_CHECK();
}

void test_stanza_remove(void)
{
    struct pl_stanza *st = parse("<r><a/><b/><c/></r>");
    struct pl_node *root = pl_stanza_root(st);
    pl_node_remove(st, pl_node_child(root, "b", NULL));
    CHECK_STR(ser(st, PL_NS_CLIENT), "<r xmlns=''><a/><c/></r>");
    pl_node_remove(st, pl_node_child(root, "c", NULL));
    pl_node_add_child(st, root, "d", "");
    CHECK_STR(ser(st, PL_NS_CLIENT), "<r xmlns=''><a/><d/></r>");
    pl_node_remove(st, pl_node_child(root, "a", NULL));
    pl_node_remove(st, pl_node_child(root, "d", NULL));
    CHECK(root->children == NULL && root->last == NULL);
    CHECK_STR(ser(st, PL_NS_CLIENT), "<r xmlns=''/>");
    pl_node_add_child(st, root, "e", "");
    CHECK_STR(ser(st, PL_NS_CLIENT), "<r xmlns=''><e/></r>");
    pl_stanza_unref(st);
    LEAK_CHECK();
}

void test_stanza_cache(void)
{
    struct pl_stanza *st = parse("<message xmlns='jabber:client' to='a'>"
                                 "<body>x</body></message>");
    struct pl_str s1 = pl_stanza_serialize(st, PL_NS_CLIENT);
    struct pl_str s2 = pl_stanza_serialize(st, PL_NS_CLIENT);
    CHECK(s1.p == s2.p && s1.len == s2.len);
    /* Client and server streams share one serialization. */
    struct pl_str s3 = pl_stanza_serialize(st, PL_NS_SERVER);
    CHECK(s3.p == s1.p);
    /* Another stream namespace gets its own, leaving s1 valid. */
    struct pl_str s4 = pl_stanza_serialize(st, "jabber:component:accept");
    CHECK(s4.p != s1.p);
    CHECK(s1.len == strlen("<message to='a'><body>x</body></message>"));
    CHECK(memcmp(s1.p, "<message to='a'><body>x</body></message>", s1.len) ==
          0);
    CHECK(pl_stanza_serialize(st, "jabber:component:accept").p == s4.p);
    /* Reading does not invalidate; mutating does. */
    pl_node_text(st, pl_stanza_root(st), NULL);
    CHECK(pl_stanza_serialize(st, PL_NS_CLIENT).p == s1.p);
    pl_stanza_set_attr(st, "to", "b");
    CHECK_STR(ser(st, PL_NS_CLIENT),
              "<message to='b'><body>x</body></message>");
    pl_node_add_child(st, pl_stanza_root(st), "z", "urn:z");
    CHECK_STR(ser(st, PL_NS_CLIENT),
              "<message to='b'><body>x</body><z xmlns='urn:z'/></message>");
    CHECK_STR(ser(st, "jabber:component:accept"),
              "<message to='b'><body>x</body><z xmlns='urn:z'/></message>");
    CHECK(pl_stanza_memory(st) > 0);
    pl_stanza_unref(st);
    LEAK_CHECK();
}

void test_stanza_serialize_rules(void)
{
    /* A component stanza to a client stream keeps its namespace. */
    struct pl_stanza *st = pl_stanza_new("message", "jabber:component:accept");
    CHECK_STR(ser(st, "jabber:component:accept"), "<message/>");
    CHECK_STR(ser(st, PL_NS_CLIENT),
              "<message xmlns='jabber:component:accept'/>");
    pl_stanza_unref(st);

    /* Attributes: xml:lang, generated prefixes, declarations skipped,
     * control characters, newlines and tabs in values. */
    st = pl_stanza_new("iq", PL_NS_CLIENT);
    struct pl_node *root = pl_stanza_root(st);
    root->attrs = pl__attr_new(st, "lang", 4, PL_NS_XML, strlen(PL_NS_XML),
                               "en", 2);
    struct pl_attr *a = root->attrs;
    a->next = pl__attr_new(st, "a", 1, "urn:a", 5, "1", 1);
    a = a->next;
    a->next = pl__attr_new(st, "xmlns", 5, NULL, 0, "jabber:client", 13);
    a = a->next;
    a->next = pl__attr_new(st, "b", 1, "urn:b", 5, "2", 1);
    a = a->next;
    a->next = pl__attr_new(st, "c", 1, "urn:a", 5, "3", 1);
    a = a->next;
    a->next = pl__attr_new(st, "db", 2, "http://www.w3.org/2000/xmlns/", 29,
                           "jabber:server:dialback", 22);
    a = a->next;
    a->next = pl__attr_new(st, "v", 1, NULL, 0, "l1\nl2\tx\r\x01'\"<>&", 14);
    struct pl_node *q = pl_node_add_child(st, root, "q", "urn:q");
    const char *ctl = "ctl\x01\x1f\x7f tab\t nl\n cr\r";
    pl_node_add_text(st, q, ctl, strlen(ctl));
    CHECK_STR(ser(st, PL_NS_CLIENT),
              "<iq xml:lang='en' xmlns:ns1='urn:a' ns1:a='1' "
              "xmlns:ns2='urn:b' ns2:b='2' ns1:c='3' "
              "v='l1&#10;l2&#9;x&#13;\xef\xbf\xbd&apos;&quot;&lt;&gt;&amp;'>"
              "<q xmlns='urn:q'>ctl\xef\xbf\xbd\xef\xbf\xbd\x7f tab\t nl\n "
              "cr&#13;</q></iq>");

    /* pl_node_serialize: a node alone, with no namespace in scope. */
    struct pl_buf b = {0};
    pl_node_serialize(q, NULL, PL_NS_CLIENT, &b);
    pl_buf_append_str(&b, "|");
    pl_node_serialize(root, NULL, PL_NS_CLIENT, &b);
    pl_buf_append_str(&b, "|");
    pl_node_serialize(root, PL_NS_CLIENT, PL_NS_SERVER, &b);
    CHECK(strncmp(pl_buf_cstr(&b), "<q xmlns='urn:q'>ctl", 20) == 0);
    CHECK(strstr(pl_buf_cstr(&b), "|<iq xmlns='jabber:client' xml:lang") !=
          NULL);
    CHECK(strstr(pl_buf_cstr(&b), "|<iq xml:lang") != NULL);
    pl_buf_reset(&b);
    pl_stanza_unref(st);

    /* XEP-0297: the forwarded message stays in jabber:client, whatever
     * the stream; its children inherit it. */
    st = parse("<message xmlns='jabber:client' to='a@b'><result "
               "xmlns='urn:xmpp:mam:2'><forwarded xmlns='urn:xmpp:forward:0'>"
               "<message xmlns='jabber:client' from='c@d'><body>hi</body>"
               "</message></forwarded></result></message>");
    const char *want = "<message to='a@b'><result xmlns='urn:xmpp:mam:2'>"
                       "<forwarded xmlns='urn:xmpp:forward:0'>"
                       "<message xmlns='jabber:client' from='c@d'>"
                       "<body>hi</body></message></forwarded></result>"
                       "</message>";
    CHECK_STR(ser(st, PL_NS_SERVER), want);
    CHECK_STR(ser(st, PL_NS_CLIENT), want);
    pl_stanza_unref(st);

    /* Round trips of parsed input, exactly. */
    static const char *const same[] = {
        "<a xmlns='urn:a'><b/><c xmlns='urn:c'><d/></c><e/></a>",
        "<a xmlns='urn:a'><b xmlns=''><c/></b></a>",
        "<stream xmlns='http://etherx.jabber.org/streams'/>",
        "<a xmlns='urn:a' x='&apos;&quot;&lt;&gt;&amp;'>&lt;&gt;&amp;'\"</a>",
        "<a xmlns='urn:a'><xml:b><c/></xml:b><xml:d/></a>",
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        st = parse(same[i]);
        CHECK_STR(ser(st, PL_NS_CLIENT), same[i]);
        pl_stanza_unref(st);
    }
    LEAK_CHECK();
}

void test_stanza_arena(void)
{
    struct pl_stanza *st = pl_stanza_new("query", "jabber:iq:roster");
    struct pl_node *root = pl_stanza_root(st);
    size_t before = pl_stanza_memory(st);
    char jid[32];
    for (int i = 0; i < 10000; i++) {
        struct pl_node *item = pl_node_add_child(st, root, "item",
                                                 "jabber:iq:roster");
        snprintf(jid, sizeof(jid), "user%d@example.com", i);
        pl_node_set_attr(st, item, "jid", jid);
        CHECK(item->ns == root->ns); /* shared with the parent */
    }
    CHECK(pl_stanza_memory(st) > before);
    CHECK_INT(pl_node_count_elems(root), 10000);
    struct pl_node *last = root->last;
    CHECK_STR(pl_node_attr(last, "jid"), "user9999@example.com");

    /* A long text built from one-byte pieces ends up in one node. */
    struct pl_node *t = pl_node_add_child(st, root, "t", NULL);
    for (int i = 0; i < 100000; i++)
        pl_node_add_text(st, t, &"0123456789"[i % 10], 1);
    size_t len;
    const char *text = pl_node_text(st, t, &len);
    CHECK_INT(len, 100000);
    int ok = 1;
    for (size_t i = 0; i < len; i++)
        ok &= text[i] == "0123456789"[i % 10];
    CHECK(ok && text[len] == '\0');
    /* Interleaved with other allocations it still coalesces. */
    struct pl_node *u = pl_node_add_child(st, root, "u", NULL);
    for (int i = 0; i < 1000; i++) {
        pl_node_add_text(st, u, "ab", 2);
        pl_stanza_strdup(st, "filler", 6);
    }
    CHECK_INT(strlen(pl_node_text(st, u, NULL)), 2000);
    CHECK(u->children == u->last);
    CHECK(pl_stanza_memory(st) < 8 * 1024 * 1024);

    const char *dup = pl_stanza_strdup(st, "abc\0def", 7);
    CHECK(memcmp(dup, "abc\0def", 8) == 0);
    void *p8 = pl__stanza_alloc(st, 3);
    void *q8 = pl__stanza_alloc(st, 5);
    CHECK(((uintptr_t)p8 & 7) == 0 && ((uintptr_t)q8 & 7) == 0);
    struct pl_node *lone = pl__node_new_elem(st, "lone", "urn:l");
    CHECK(lone->parent == NULL && !strcmp(lone->ns, "urn:l"));

    /* A big copy takes one chunk. */
    struct pl_stanza *c = pl_stanza_copy(st);
    CHECK_INT(pl_node_count_elems(pl_stanza_root(c)), 10002);
    pl_stanza_unref(c);
    pl_stanza_unref(st);
    LEAK_CHECK();
}

void test_stanza_deep(void)
{
    /* Deep trees must not recurse on the C stack. */
    enum {
        DEPTH = 200000
    };
    struct pl_stanza *st = pl_stanza_new("d", "urn:d");
    struct pl_node *n = pl_stanza_root(st);
    for (int i = 0; i < DEPTH; i++)
        n = pl_node_add_child(st, n, "d", i % 2 ? "urn:d" : "urn:e");
    pl_node_add_text(st, n, "x", 1);
    struct pl_stanza *c = pl_stanza_copy(st);
    struct pl_str s = pl_stanza_serialize(c, PL_NS_CLIENT);
    struct pl_str s0 = pl_stanza_serialize(st, PL_NS_CLIENT);
    CHECK(s.len == s0.len && memcmp(s.p, s0.p, s.len) == 0);
    CHECK(s.len > (size_t)DEPTH * 7);
    CHECK(memcmp(s.p + s.len - 8, "</d></d>", 8) == 0);
    /* And the parser agrees with the serializer. */
    struct pl_stanza *back = NULL;
    CHECK_INT(pl_xml_parse_fragment(s.p, s.len, &back), PL_OK);
    if (back) {
        struct pl_str s2 = pl_stanza_serialize(back, PL_NS_CLIENT);
        CHECK(s2.len == s.len && memcmp(s2.p, s.p, s.len) == 0);
        pl_stanza_unref(back);
    }
    pl_stanza_unref(c);
    pl_stanza_unref(st);
    LEAK_CHECK();
}
