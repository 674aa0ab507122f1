/*
 * fuzz_xml.c - libFuzzer target for the streaming XML parser (xml.c) and
 * the serializer (stanza.c).
 *
 * Input: three control bytes, then the bytes of a peer's stream.
 *   byte 0   where the stream is split in two parts (a fraction of its
 *            length); the second part is also where a restarted stream
 *            begins (see bit 5 below)
 *   byte 1   bits 0-1 pick the limits, bit 2 feeds the first part one
 *            byte at a time, bits 3-4 the stream namespace used to
 *            serialize, bit 5 restarts the stream after <starttls/>,
 *            <auth/> or <response/> as parleyd does after TLS or SASL
 *            success (stop from the callback, reset, feed the second part
 *            as the new stream), bit 6 changes the limits from the
 *            stream header callback, bit 7 resets from inside the
 *            stream_close callback
 *   byte 2   bits 0-1 feed the second part in pieces of 1, 7 or 61 bytes
 *            (or whole), bit 2 tries pl_xml_parser_nap() between feeds,
 *            bit 3 also between the bytes of a bytewise first part, bit 4
 *            tries it from inside callbacks (where it must refuse)
 *
 * Invariants checked (abort() on violation, so libFuzzer reports them):
 * - the error callback fires at most once between resets, feed returns
 *   PL_EINVAL exactly when it has fired, and nothing is accepted after;
 * - every stanza and stream header serializes to XML that
 *   pl_xml_parse_fragment() accepts, and whose serialization is the same
 *   bytes again (the self-contained form, where the root declares its
 *   namespace);
 * - the wire form (pl_stanza_serialize() for the stream namespace), placed
 *   in a stream with that default namespace, parses back to a stanza
 *   whose wire form is the same bytes;
 * - pl_stanza_copy() serializes like the original; the cache answers the
 *   same bytes twice;
 * - input with a NUL byte (never XML) ends in an error;
 * - how the bytes are cut into feeds, and napping between feeds, changes
 *   nothing: without limits, restarts or resets from callbacks, the
 *   events (headers, stanzas, close, error) equal those of one
 *   feed of everything.
 *
 * Extending: a new invariant is a check in check_stanza(); a new way of
 * driving the parser takes a free bit of byte 2.
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
#define NO_LIMITS 3

static const size_t piece_sizes[] = {0, 1, 7, 61}; /* 0: whole */

struct run {
    struct pl_xml_parser *p; /* the parser under test */
    const char *sns;         /* stream namespace for serialization */
    unsigned opts;           /* byte 1 */
    unsigned opts2;          /* byte 2 */
    int check;               /* run the per-stanza round trips */
    int errors;              /* error callbacks since the last reset */
    int want_restart;        /* a stanza asked for a stream restart */
    struct pl_buf log;       /* transcript of the events */
};

static void die(const char *what, struct pl_str a, struct pl_str b)
{
    fprintf(stderr, "fuzz_xml: invariant violated: %s\n", what);
    fprintf(stderr, "  first:  %.*s\n", (int)a.len, a.p ? a.p : "");
    fprintf(stderr, "  second: %.*s\n", (int)b.len, b.p ? b.p : "");
    abort();
}

static const struct pl_str none = {"", 0};

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
        die("serialization does not parse as a fragment", sa, none);
    self_contained(again, sns, &b);
    if (!pl_str_eq(sa, pl_buf_str(&b)))
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
                  "<stream:stream xmlns='%s' xmlns:stream='" STREAMS_NS "'>",
                  sns);
    pl_buf_append(&doc, s1.p, s1.len);
    struct wire w = {NULL, 0, 0};
    struct pl_xml_callbacks cb = {.stanza = wire_stanza, .error = wire_error};
    struct pl_xml_parser *p = pl_xml_parser_new(NULL, &cb, &w);
    int rc = pl_xml_parser_feed(p, doc.data + doc.off, doc.len);
    if (rc != PL_OK || w.failed || w.count != 1)
        die("wire form does not parse back as one stanza", s1, none);
    struct pl_str s2 = pl_stanza_serialize(w.st, sns);
    s1 = pl_stanza_serialize(st, sns); /* cached: still the same bytes */
    if (!pl_str_eq(s1, s2))
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
    if (!pl_str_eq(s1, s1b))
        die("cached serialization differs", s1, s1b);
    struct pl_stanza *copy = pl_stanza_copy(st);
    struct pl_str sc = pl_stanza_serialize(copy, sns);
    if (!pl_str_eq(s1, sc))
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

static void nap_in_callback(struct run *r)
{
    if ((r->opts2 & 0x10) && pl_xml_parser_nap(r->p))
        die("pl_xml_parser_nap napped inside a callback", none, none);
}

static void on_open(void *ud, struct pl_stanza *header)
{
    struct run *r = ud;
    nap_in_callback(r);
    struct pl_buf s = {0};
    self_contained(header, r->sns, &s);
    pl_buf_append(&r->log, "O", 1);
    pl_buf_append(&r->log, s.data + s.off, s.len);
    pl_buf_append(&r->log, "\n", 1);
    pl_buf_reset(&s);
    /* The header is borrowed; its xmlns declarations are attributes the
     * serializer leaves out, so it must still round-trip. */
    if (r->check)
        check_fragment(header, r->sns);
    if (r->opts & 0x40) {
        struct pl_xml_limits l = limit_sets[(r->opts + 1) & 3];
        pl_xml_parser_set_limits(r->p, &l);
    }
}

static void on_stanza(void *ud, struct pl_stanza *st)
{
    struct run *r = ud;
    nap_in_callback(r);
    struct pl_str s = pl_stanza_serialize(st, r->sns);
    pl_buf_append(&r->log, "S", 1);
    pl_buf_append(&r->log, s.p, s.len);
    pl_buf_append(&r->log, "\n", 1);
    if (r->check)
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
    nap_in_callback(r);
    pl_buf_append(&r->log, "C\n", 2);
    if (r->opts & 0x80) {
        pl_xml_parser_reset(r->p);
        r->errors = 0;
    }
}

static void on_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct run *r = ud;
    nap_in_callback(r);
    if (++r->errors > 1)
        die("error callback fired twice", pl_str_c(text), none);
    if (!text)
        abort();
    /* Only that an error happened: with two faults in one token ("="
     * then "]]>" at depth 1), expat reports the one it meets first, and
     * that depends on where reads end (bad-format vs not-well-formed). */
    if (!pl_xml_error_condition(err))
        abort();
    pl_buf_append(&r->log, "E\n", 2);
}

static void nap(struct run *r)
{
    (void)pl_xml_parser_nap(r->p);
}

/* One feed call, with the return code checked against the callbacks. */
static void feed1(struct run *r, const char *data, size_t len)
{
    int failed_before = r->errors > 0;
    int rc = pl_xml_parser_feed(r->p, data, len);
    if (rc != PL_OK && rc != PL_EINVAL)
        abort();
    if (rc == PL_EINVAL && r->errors == 0)
        die("feed failed without an error callback", none, none);
    if (rc == PL_OK && r->errors > 0)
        die("feed succeeded after the error callback", none, none);
    if (failed_before && rc != PL_EINVAL)
        die("feed accepted input after an error", none, none);
}

/* Feeds len bytes in pieces of piece bytes (0: at once), napping between
 * pieces if asked. */
static void feed(struct run *r, const char *data, size_t len, size_t piece,
                 int naps)
{
    if (!piece)
        piece = len ? len : 1;
    size_t off = 0;
    do {
        size_t n = len - off < piece ? len - off : piece;
        feed1(r, data + off, n);
        off += n;
        if (naps)
            nap(r);
    } while (off < len);
}

static void run_stream(struct run *r, const uint8_t *data, size_t size,
                       int reference)
{
    unsigned split_at = data[0];
    const char *s = (const char *)data + 3;
    size_t n = size - 3;
    size_t split = n * split_at / 255;
    struct pl_xml_callbacks cb = {
        .stream_open = on_open,
        .stanza = on_stanza,
        .stream_close = on_close,
        .error = on_error,
    };
    r->sns = stream_nss[(r->opts >> 3) & 3];
    r->p = pl_xml_parser_new(&limit_sets[r->opts & 3], &cb, r);
    if (reference) {
        feed1(r, s, n);
        pl_xml_parser_free(r->p);
        return;
    }
    int bytewise = (r->opts & 0x04) && split <= 4096;
    feed(r, s, split, bytewise ? 1 : 0, bytewise && (r->opts2 & 0x08));
    if (r->want_restart) {
        /* The peer must wait for our answer: what it pipelined is gone. */
        pl_xml_parser_reset(r->p);
        r->errors = 0;
        r->want_restart = 2;
    }
    if (r->opts2 & 0x04)
        nap(r);
    feed(r, s + split, n - split, piece_sizes[r->opts2 & 3], r->opts2 & 0x04);
    pl_xml_parser_free(r->p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pl_log_set_level(PL_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    struct run r = {0};
    r.opts = data[1];
    r.opts2 = data[2];
    r.check = 1;
    run_stream(&r, data, size, 0);

    /* NUL is never XML: a stream holding one must end in an error, unless
     * a stop or reset threw the bytes away unread, or the NUL is in the
     * last 5 bytes, where expat may hold it unread until more comes: in an
     * unfinished multibyte character (up to 3 bytes after the lead byte),
     * or after "<![" (expat waits for six characters before it compares
     * them with "CDATA[").  (Catches a parser that has switched to UTF-16
     * or UCS-4, where NUL bytes are ordinary.) */
    if (!(r.opts & 0xa0) && size > 8 && memchr(data + 3, '\0', size - 8) &&
        !r.errors)
        die("a stream with a NUL byte was accepted", pl_buf_str(&r.log), none);

    /* Cutting and napping must not matter where nothing else does. */
    if ((r.opts & 3) == NO_LIMITS && !(r.opts & 0xe0)) {
        struct run ref = {0};
        ref.opts = r.opts;
        ref.opts2 = r.opts2;
        run_stream(&ref, data, size, 1);
        if (!pl_str_eq(pl_buf_str(&r.log), pl_buf_str(&ref.log)))
            die("events depend on how the input was cut", pl_buf_str(&r.log),
                pl_buf_str(&ref.log));
        pl_buf_reset(&ref.log);
    }
    pl_buf_reset(&r.log);
    return 0;
}
