/*
 * fuzz_xml.c - libFuzzer target for the streaming XML parser (xml.c) and
 * the serializer (stanza.c).
 *
 * Input: two control bytes, then the bytes of a client's stream.
 *   byte 0   where the stream is split in two feeds (a fraction of its
 *            length); the second part is also where a restarted stream
 *            begins (see below)
 *   byte 1   options: bits 0-1 pick the limits, bit 2 feeds the first part
 *            one byte at a time, bits 3-4 the stream namespace used to
 *            serialize, bit 5 restarts the stream after <starttls/>,
 *            <auth/> or <response/> as parleyd does after TLS or SASL
 *            success (stop from the callback, reset, feed the second part
 *            as the new stream), bit 6 changes the limits from the
 *            stream header callback, bit 7 resets from inside the
 *            stream_close callback.
 *
 * Invariants checked (abort() on violation, so libFuzzer reports them):
 * - the error callback fires at most once per parser lifetime between
 *   resets, and feed returns PL_EINVAL after it;
 * - every stanza and stream header serializes to XML that
 *   pl_xml_parse_fragment() accepts, and whose serialization is the same
 *   bytes again (the self-contained form, where the root declares its
 *   namespace);
 * - the wire form (pl_stanza_serialize() for the stream namespace), placed
 *   in a stream with that default namespace, parses back to a stanza
 *   whose wire form is the same bytes;
 * - pl_stanza_copy() serializes like the original; the cache answers the
 *   same bytes twice.
 *
 * Extending: a new invariant is a check in check_stanza(); a new way of
 * driving the parser takes a free bit of byte 1 (none left: use byte 0's
 * high bit and halve the split resolution).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "log.h"
#include "stanza.h"
#include "xml.h"

#define STREAMS_NS "http://etherx.jabber.org/streams"

static const char *const stream_nss[] = {
    PL_NS_CLIENT,
    PL_NS_SERVER,
    "jabber:component:accept",
    PL_NS_CLIENT,
};

static const struct pl_xml_limits limit_sets[] = {
    {1024, 4},
    {4096, 16},
    {256, 2},
    {0, 0},
};

struct run {
    struct pl_xml_parser *p; /* the parser under test */
    const char *sns;         /* stream namespace for serialization */
    unsigned opts;           /* byte 1 */
    int errors;              /* error callbacks since the last reset */
    int want_restart;        /* a stanza asked for a stream restart */
    int stanzas;             /* stanzas delivered */
};

static void die(const char *what, struct pl_str a, struct pl_str b)
{
    fprintf(stderr, "fuzz_xml: invariant violated: %s\n", what);
    fprintf(stderr, "  first:  %.*s\n", (int)a.len, a.p ? a.p : "");
    fprintf(stderr, "  second: %.*s\n", (int)b.len, b.p ? b.p : "");
    abort();
}

static int same(struct pl_str a, struct pl_str b)
{
    return pl_str_eq(a, b);
}

/* Self-contained form: the root declares its namespace. */
static void self_contained(struct pl_stanza *st, const char *sns,
                           struct pl_buf *out)
{
    pl_node_serialize(pl_stanza_root(st), "", sns, out);
}

static void check_fragment(struct pl_stanza *st, const char *sns)
{
    struct pl_buf a = {0}, b = {0};
    struct pl_stanza *again = NULL;
    self_contained(st, sns, &a);
    struct pl_str sa = pl_buf_str(&a);
    if (pl_xml_parse_fragment(sa.p, sa.len, &again) != PL_OK)
        die("serialization does not parse as a fragment", sa, sa);
    self_contained(again, sns, &b);
    if (!same(sa, pl_buf_str(&b)))
        die("fragment round trip changed the serialization", sa,
            pl_buf_str(&b));
    pl_stanza_unref(again);
    pl_buf_reset(&a);
    pl_buf_reset(&b);
}

/* The wire form inside a stream whose default namespace is sns. */
struct wire {
    struct pl_stanza *st; /* the one stanza read back */
    int count;            /* stanzas seen */
    int failed;           /* error callback fired */
};

static void wire_stanza(void *ud, struct pl_stanza *st)
{
    struct wire *w = ud;
    if (w->count++ == 0)
        w->st = st;
    else
        pl_stanza_unref(st);
}

static void wire_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct wire *w = ud;
    w->failed = 1;
}

static void check_wire(struct pl_stanza *st, const char *sns)
{
    struct pl_str s1 = pl_stanza_serialize(st, sns);
    struct pl_buf doc = {0};
    pl_buf_printf(&doc,
                  "<stream:stream xmlns='%s' xmlns:stream='" STREAMS_NS
                  "'>",
                  sns);
    pl_buf_append(&doc, s1.p, s1.len);
    struct wire w = {NULL, 0, 0};
    struct pl_xml_callbacks cb = {.stanza = wire_stanza, .error = wire_error};
    struct pl_xml_parser *p = pl_xml_parser_new(NULL, &cb, &w);
    int rc = pl_xml_parser_feed(p, doc.data + doc.off, doc.len);
    if (rc != PL_OK || w.failed || w.count != 1)
        die("wire form does not parse back as one stanza", s1, s1);
    struct pl_str s2 = pl_stanza_serialize(w.st, sns);
    s1 = pl_stanza_serialize(st, sns); /* cached: still the same bytes */
    if (!same(s1, s2))
        die("wire round trip changed the serialization", s1, s2);
    pl_stanza_unref(w.st);
    pl_xml_parser_free(p);
    pl_buf_reset(&doc);
}

static void check_stanza(struct pl_stanza *st, const char *sns)
{
    struct pl_node *root = pl_stanza_root(st);
    if (!root || root->type != PL_NODE_ELEMENT || !root->name || !root->ns)
        abort();
    struct pl_str s1 = pl_stanza_serialize(st, sns);
    struct pl_str s1b = pl_stanza_serialize(st, sns);
    if (!same(s1, s1b))
        die("cached serialization differs", s1, s1b);
    struct pl_stanza *copy = pl_stanza_copy(st);
    struct pl_str sc = pl_stanza_serialize(copy, sns);
    if (!same(s1, sc))
        die("copy serializes differently", s1, sc);
    pl_stanza_unref(copy);
    /* Accessors the modules use, for coverage and for ASan. */
    size_t len = 0;
    (void)pl_node_text(st, root, &len);
    (void)pl_node_count_elems(root);
    (void)pl_stanza_attr(st, "id");
    (void)pl_node_attr_ns(root, PL_NS_XML, "lang");
    (void)pl_stanza_memory(st);
    check_fragment(st, sns);
    check_wire(st, sns);
}

static void on_open(void *ud, struct pl_stanza *header)
{
    struct run *r = ud;
    /* The header is borrowed; its xmlns declarations are attributes the
     * serializer leaves out, so it must still round-trip. */
    check_fragment(header, r->sns);
    if (r->opts & 0x40) {
        struct pl_xml_limits l = limit_sets[(r->opts + 1) & 3];
        pl_xml_parser_set_limits(r->p, &l);
    }
}

static void on_stanza(void *ud, struct pl_stanza *st)
{
    struct run *r = ud;
    r->stanzas++;
    check_stanza(st, r->sns);
    const char *name = pl_stanza_name(st);
    if ((r->opts & 0x20) && !r->want_restart &&
        (strcmp(name, "starttls") == 0 || strcmp(name, "auth") == 0 ||
         strcmp(name, "response") == 0)) {
        r->want_restart = 1;
        pl_xml_parser_stop(r->p);
    }
    pl_stanza_unref(st);
}

static void on_close(void *ud)
{
    struct run *r = ud;
    if (r->opts & 0x80) {
        pl_xml_parser_reset(r->p);
        r->errors = 0;
    }
}

static void on_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct run *r = ud;
    if (++r->errors > 1)
        die("error callback fired twice", pl_str_c(text), pl_str_c(text));
    if (!pl_xml_error_condition(err) || !text)
        abort();
}

static void feed(struct run *r, const char *data, size_t len, int bytewise)
{
    int failed_before = r->errors > 0;
    int rc = PL_OK;
    if (bytewise) {
        for (size_t i = 0; i < len && rc == PL_OK; i++)
            rc = pl_xml_parser_feed(r->p, data + i, 1);
    } else {
        rc = pl_xml_parser_feed(r->p, data, len);
    }
    if (rc != PL_OK && rc != PL_EINVAL)
        abort();
    if (rc == PL_EINVAL && r->errors == 0)
        die("feed failed without an error callback", pl_str_c(""),
            pl_str_c(""));
    if (failed_before && rc != PL_EINVAL)
        die("feed accepted input after an error", pl_str_c(""),
            pl_str_c(""));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_log_set_level(PL_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned split_at = data[0], opts = data[1];
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    size_t split = n * split_at / 255;

    struct run r = {0};
    r.opts = opts;
    r.sns = stream_nss[(opts >> 3) & 3];
    struct pl_xml_callbacks cb = {
        .stream_open = on_open,
        .stanza = on_stanza,
        .stream_close = on_close,
        .error = on_error,
    };
    r.p = pl_xml_parser_new(&limit_sets[opts & 3], &cb, &r);

    feed(&r, s, split, (opts & 0x04) && split <= 4096);
    if (r.want_restart) {
        /* The peer must wait for our answer: what it pipelined is gone. */
        pl_xml_parser_reset(r.p);
        r.errors = 0;
        r.want_restart = 2;
    }
    feed(&r, s + split, n - split, 0);
    pl_xml_parser_free(r.p);
    return 0;
}
