/*
 * test_framing.c - the XML stream framing shared by every stream kind
 * (src/xmpp/framing.c): what a standalone element (RFC 7395 §3.3.3,
 * XEP-0206 §5) must declare.
 */
#include <string.h>

#include "../../src/xmpp/framing.h"
#include "unit.h"

static const char *extra_of(const char *a, const char *b, size_t *k)
{
    struct pl_str v[2] = {pl_str_c(a), pl_str_c(b ? b : "")};
    return pl_stream_standalone_ns(v, b ? 2 : 1, k);
}

void test_framing_standalone_ns(void)
{
    size_t k = 0;
    /* A stanza serialized for a client stream has no xmlns of its own. */
    CHECK_STR(extra_of("<message to='a@b'><body>x</body></message>", NULL, &k),
              " xmlns='jabber:client'");
    CHECK_INT(k, 8);
    CHECK_STR(extra_of("<iq/>", NULL, &k), " xmlns='jabber:client'");
    CHECK_INT(k, 3);
    CHECK_STR(extra_of("<presence>", "</presence>", &k),
              " xmlns='jabber:client'");
    /* One that has (another namespace) keeps it. */
    CHECK_STR(extra_of("<message xmlns='jabber:server'/>", NULL, &k), "");
    CHECK_STR(extra_of("<message", " to='x' xmlns='jabber:client'/>", &k), "");
    /* xmlns inside an attribute value, or as a prefix, is not one. */
    CHECK_STR(extra_of("<message id=' xmlns=1'/>", NULL, &k),
              " xmlns='jabber:client'");
    CHECK_STR(extra_of("<message xmlns:a='x'/>", NULL, &k),
              " xmlns='jabber:client'");
    CHECK_STR(extra_of("<message><body xmlns='jabber:client'/></message>", NULL,
                       &k),
              " xmlns='jabber:client'");
    /* stream:* elements need the prefix bound. */
    CHECK_STR(extra_of("<stream:features><bind/></stream:features>", NULL, &k),
              " xmlns:stream='http://etherx.jabber.org/streams'");
    CHECK_INT(k, 16);
    CHECK_STR(extra_of("<stream:error xmlns:stream='x'/>", NULL, &k), "");
    /* Anything else carries its own namespace. */
    CHECK_STR(extra_of("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                       NULL, &k),
              "");
    CHECK_STR(extra_of("<r xmlns='urn:xmpp:sm:3'/>", NULL, &k), "");
}
