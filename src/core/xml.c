/*
 * xml.c - the streaming XMPP parser on expat; see xml.h for the API.
 *
 * Expat runs namespace aware with "\xff" as separator and prefixes
 * reported ("uri\xfflocal\xffprefix"; 0xff never occurs in UTF-8).  The
 * element at depth 1 is the stream header; elements from depth 2 (depth 1
 * for pl_xml_parse_fragment) are built straight into the arena of a new
 * stanza, one node per event, and the stanza is handed over when its root
 * closes.
 *
 * Limits.  Input goes to expat in SLICE-byte pieces.  After each piece the
 * parser measures what is pending: the open stanza since its start tag,
 * or, between stanzas, the partial token expat is holding (a start tag not
 * yet closed, the stream header).  So a 100 MB attribute value is refused
 * after the first piece that crosses max_stanza_size rather than buffered.
 * Inside a piece the handlers check the running size too.  Whatever the
 * configuration, no single token may exceed MAX_TOKEN: expat rescans a
 * partial token from its start on every call (CVE-2023-52425), so this
 * caps the cost of a peer that dribbles a huge start tag a byte at a time.
 *
 * Restricted XML (RFC 6120 §11.1): handlers for DOCTYPE, the DTD
 * declarations, comments and processing instructions stop the parser with
 * restricted-xml; parameter entities are never parsed; references to
 * undeclared entities are expat errors (not-well-formed).
 *
 * Extending: a new refusal is a handler that calls fail(); set it in
 * setup(), which also runs after every reset.  Handlers must return at once
 * when dead(): expat may still deliver events of the current token after
 * XML_StopParser().
 */
#include "xml.h"

#include <expat.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "random.h"

#define SLICE 16384     /* bytes handed to expat per call */
#define MAX_TOKEN 65536 /* largest start tag (or any token) accepted */
#define MIN_HINT 512    /* smallest first arena chunk for a stanza */
#define MAX_HINT 262144 /* largest first arena chunk for a stanza */
#define NS_XMLNS "http://www.w3.org/2000/xmlns/"
#define NO_CALM (~0ULL) /* struct pl_xml_parser.calm: not between children */

/*
 * Expat 2.6 defers reparsing a partial token until twice as much data is
 * buffered.  On a stream that would hold back a complete stanza until the
 * peer happens to send more, so it is turned off; MAX_TOKEN bounds the
 * rescanning cost instead.
 * Distributions backport it without bumping XML_MINOR_VERSION (Debian 12
 * ships it in "2.5.0"), so look the function up at run time.
 */
XMLPARSEAPI(XML_Bool)
XML_SetReparseDeferralEnabled(XML_Parser parser, XML_Bool enabled)
    __attribute__((weak));

struct pl_xml_parser {
    XML_Parser xp;               /* expat, namespace aware */
    struct pl_xml_limits limits; /* as last configured */
    struct pl_xml_callbacks cb;  /* copied at creation */
    void *ud;                    /* passed to every callback */
    unsigned sdepth;             /* depth of stanzas: 2, 1 for fragments */
    unsigned depth;              /* open elements; 1 = stream element */
    struct pl_stanza *hdr;       /* header being collected, see on_ns() */
    struct pl_attr *decls;       /* the header's namespace declarations */
    struct pl_attr **decls_tail; /* where the next declaration goes */
    struct pl_stanza *st;        /* stanza being built, NULL between */
    struct pl_node *cur;         /* innermost open element of st */
    long long st_start;          /* byte index of st's start tag */
    size_t st_limit;             /* max_stanza_size when st began */
    unsigned st_max_depth;       /* max_depth when st began */
    unsigned long long fed;      /* bytes given to expat since reset */
    unsigned long long calm;     /* fed where the last event left the
                                   * parser between the stream's children
                                   * (see pl_xml_parser_nap), else NO_CALM */
    bool busy;                   /* inside feed: callbacks may run */
    bool in_parse;               /* inside XML_Parse, under busy */
    bool stopped;                /* pl_xml_parser_stop() was called */
    bool failed;                 /* the error callback fired */
    bool reset_pending;          /* reset requested from a callback */
    bool resuming;               /* replaying the header after a nap */
    bool in_cdata;               /* inside a CDATA section */
    char *hdr_raw;               /* the stream header's start tag, as
                                   * received, to resume after a nap */
    size_t hdr_raw_len;
    bool use_region;    /* expat's memory in our own pages */
    unsigned doc_bytes; /* bytes of this document seen, up to 2 */
    struct chunk *mem;  /* those pages, newest first */
};

/*
 * Expat's memory.  A stream parser's allocations come from pages of its
 * own (mmap), handed out in order and given back whole when the parser is
 * freed: a napping stream (pl_xml_parser_nap) then holds no parser memory
 * at all, where with malloc the freed pieces would stay in the heap between
 * live sessions' objects.  Expat keeps its own free lists, so little is
 * freed while a parser lives; frees of the newest block are taken back.
 * Other parsers (fragments) use the C library.  Expat turns NULL into
 * XML_ERROR_NO_MEMORY, reported as policy-violation.
 *
 * Expat's allocation hooks get no context, so the owner is set around
 * every expat call that may allocate (mem_enter/mem_leave).
 */
struct chunk {
    struct chunk *next; /* older chunk */
    size_t size;        /* bytes mapped, header included */
    size_t used;        /* bytes handed out, header included */
    size_t pad;         /* keeps blocks 16-byte aligned */
};

struct block {
    size_t size; /* bytes asked for */
    size_t kind; /* BLOCK_LIBC or BLOCK_REGION */
};

#define BLOCK_LIBC 0x4c494243u
#define BLOCK_REGION 0x52454749u
#define CHUNK_SIZE 16384

static __thread struct pl_xml_parser *mem_owner;

/* Under AddressSanitizer expat keeps the C library's heap, which ASan
 * watches; our pages would hide overreads from it. */
#if defined(__SANITIZE_ADDRESS__)
#define USE_REGIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USE_REGIONS 0
#endif
#endif
#ifndef USE_REGIONS
#define USE_REGIONS 1
#endif

static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/*
 * Chunks of CHUNK_SIZE given back are kept for the next parser: every
 * login restarts its stream (a new parser) and mapping then unmapping 16
 * KiB each time cost a TLB shootdown across the process's threads (50 us
 * a login here).  A parser freed by a close or a restart may keep up to
 * SPARE_MAX per thread (16 MiB: a login storm's hundreds of parsers in
 * flight reuse each other's pages; with 16 only, 10 % of a login's CPU
 * went to munmap); one that naps (an idle session) keeps at most
 * SPARE_KEEP, and pl_xml_spares_trim (at naps and from c2s's timer) gives
 * back what is beyond SPARE_KEEP once no spare was taken since its last
 * call: the storm is over.
 */
#define SPARE_KEEP 16
#define SPARE_MAX 1024
static __thread struct chunk *spare;
static __thread unsigned nspare;
static __thread unsigned long reused; /* spares taken since the last trim */

static struct chunk *chunk_map(size_t size)
{
    if (size == CHUNK_SIZE && spare) {
        struct chunk *c = spare;
        spare = c->next;
        nspare--;
        reused++;
        return c;
    }
    struct chunk *c = mmap(NULL, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return c == MAP_FAILED ? NULL : c;
}

static void chunk_unmap(struct chunk *c, unsigned keep)
{
    if (c->size == CHUNK_SIZE && nspare < keep) {
        c->next = spare;
        spare = c;
        nspare++;
        return;
    }
    munmap(c, c->size);
}

static void *xml_malloc(size_t n)
{
    struct pl_xml_parser *p = mem_owner;
    size_t need = round16(sizeof(struct block) + (n ? n : 1));
    struct block *b;
    if (!p) {
        b = pl_try_malloc(need);
        if (!b)
            return NULL;
        b->kind = BLOCK_LIBC;
    } else {
        struct chunk *c = p->mem;
        if (!c || c->used + need > c->size) {
            size_t size = need + sizeof(struct chunk) > CHUNK_SIZE
                              ? round16(need + sizeof(struct chunk) + 4095) &
                                    ~(size_t)4095
                              : CHUNK_SIZE;
            c = chunk_map(size);
            if (!c)
                return NULL;
            c->size = size;
            c->used = sizeof(struct chunk);
            c->next = p->mem;
            p->mem = c;
        }
        b = (struct block *)((char *)c + c->used);
        c->used += need;
        b->kind = BLOCK_REGION;
    }
    b->size = n;
    return b + 1;
}

static void xml_free(void *ptr)
{
    if (!ptr)
        return;
    struct block *b = (struct block *)ptr - 1;
    if (b->kind == BLOCK_LIBC) {
        pl_free(b);
        return;
    }
    pl_assert(b->kind == BLOCK_REGION);
    struct pl_xml_parser *p = mem_owner;
    struct chunk *c = p ? p->mem : NULL;
    size_t need = round16(sizeof(struct block) + (b->size ? b->size : 1));
    if (c && (char *)b + need == (char *)c + c->used)
        c->used -= need; /* the newest block: take it back */
}

static void *xml_realloc(void *ptr, size_t n)
{
    if (!ptr)
        return xml_malloc(n);
    struct block *b = (struct block *)ptr - 1;
    if (b->kind == BLOCK_REGION && n <= b->size)
        return ptr;
    if (b->kind == BLOCK_LIBC) {
        struct block *nb = realloc(b, round16(sizeof(*b) + (n ? n : 1)));
        if (!nb)
            return NULL;
        nb->size = n;
        return nb + 1;
    }
    void *q = xml_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, ptr, b->size);
    xml_free(ptr);
    return q;
}

static const XML_Memory_Handling_Suite memsuite = {
    xml_malloc,
    xml_realloc,
    xml_free,
};

static struct pl_xml_parser *mem_enter(struct pl_xml_parser *p)
{
    struct pl_xml_parser *saved = mem_owner;
    mem_owner = p->use_region ? p : NULL;
    return saved;
}

static void mem_leave(struct pl_xml_parser *saved)
{
    mem_owner = saved;
}

/* Frees the expat parser and, for stream parsers, its pages (keep: how
 * many spare chunks the thread may hold after). */
static void expat_free(struct pl_xml_parser *p, unsigned keep)
{
    if (p->xp) {
        struct pl_xml_parser *saved = mem_enter(p);
        XML_ParserFree(p->xp);
        mem_leave(saved);
        p->xp = NULL;
    }
    while (p->mem) {
        struct chunk *c = p->mem;
        p->mem = c->next;
        chunk_unmap(c, keep);
    }
}

void pl_xml_spares_trim(void)
{
    if (reused) {
        reused = 0; /* a storm goes on: keep them */
        return;
    }
    while (nspare > SPARE_KEEP) {
        struct chunk *c = spare;
        spare = c->next;
        nspare--;
        munmap(c, c->size);
    }
}

static void expat_new(struct pl_xml_parser *p)
{
    struct pl_xml_parser *saved = mem_enter(p);
    p->xp = XML_ParserCreate_MM("UTF-8", &memsuite, "\xff");
    mem_leave(saved);
    if (!p->xp) {
        pl_log_error("xml", "out of memory creating an XML parser");
        abort();
    }
}

const char *pl_xml_error_condition(enum pl_xml_error err)
{
    switch (err) {
    case PL_XML_NOT_WELL_FORMED: return "not-well-formed";
    case PL_XML_RESTRICTED_XML: return "restricted-xml";
    case PL_XML_POLICY_VIOLATION: return "policy-violation";
    case PL_XML_UNSUPPORTED_ENCODING: return "unsupported-encoding";
    case PL_XML_BAD_FORMAT: return "bad-format";
    }
    return "undefined-condition";
}

static bool dead(const struct pl_xml_parser *p)
{
    return p->failed || p->stopped || p->reset_pending;
}

static void drop_partial(struct pl_xml_parser *p)
{
    pl_stanza_unref(p->st);
    p->st = NULL;
    p->cur = NULL;
    pl_stanza_unref(p->hdr);
    p->hdr = NULL;
    p->decls = NULL;
    p->decls_tail = &p->decls;
}

/* Reports err once and stops; the parser is dead until reset. */
static void fail(struct pl_xml_parser *p, enum pl_xml_error err,
                 const char *text)
{
    if (p->failed)
        return;
    p->failed = true;
    if (p->in_parse)
        XML_StopParser(p->xp, XML_FALSE);
    drop_partial(p);
    if (p->cb.error)
        p->cb.error(p->ud, err, text);
}

static void restricted(struct pl_xml_parser *p, const char *what)
{
    if (!dead(p))
        fail(p, PL_XML_RESTRICTED_XML, what);
}

/* ---- names ---- */

struct qname {
    const char *uri;   /* namespace URI, "" when none */
    size_t uri_len;    /* its length */
    const char *local; /* local name */
    size_t local_len;  /* its length */
};

static void split(const char *s, struct qname *q)
{
    const char *a = strchr(s, '\xff');
    if (!a) {
        q->uri = "";
        q->uri_len = 0;
        q->local = s;
        q->local_len = strlen(s);
        return;
    }
    q->uri = s;
    q->uri_len = (size_t)(a - s);
    q->local = a + 1;
    const char *b = strchr(a + 1, '\xff'); /* the prefix follows, if any */
    q->local_len = b ? (size_t)(b - q->local) : strlen(q->local);
}

static struct pl_node *add_elem(struct pl_stanza *st, struct pl_node *parent,
                                const XML_Char *name, const XML_Char **atts)
{
    struct qname q;
    split(name, &q);
    struct pl_node *el = pl__node_add_elem_n(st, parent, q.local, q.local_len,
                                             q.uri, q.uri_len);
    struct pl_attr **tail = &el->attrs;
    for (size_t i = 0; atts[i]; i += 2) {
        split(atts[i], &q);
        *tail = pl__attr_new(st, q.local, q.local_len, q.uri, q.uri_len,
                             atts[i + 1], strlen(atts[i + 1]));
        tail = &(*tail)->next;
    }
    return el;
}

/* ---- limits ---- */

static long long event_end(const struct pl_xml_parser *p)
{
    return (long long)XML_GetCurrentByteIndex(p->xp) +
           XML_GetCurrentByteCount(p->xp);
}

/* Inside a handler: is the open stanza over its limit? */
static bool too_big(struct pl_xml_parser *p)
{
    if (!p->st_limit || event_end(p) - p->st_start <= (long long)p->st_limit)
        return false;
    fail(p, PL_XML_POLICY_VIOLATION, "stanza too large");
    return true;
}

/* Between slices: bound the open stanza and any partial token. */
static int check_pending(struct pl_xml_parser *p)
{
    long long idx = (long long)XML_GetCurrentByteIndex(p->xp);
    unsigned long long pending = p->fed;
    if (idx >= 0 && (unsigned long long)idx <= p->fed)
        pending = p->fed - (unsigned long long)idx;
    size_t limit = p->limits.max_stanza_size;
    const char *why = NULL;
    if (p->st && p->st_limit &&
        p->fed - (unsigned long long)p->st_start > p->st_limit)
        why = "stanza too large";
    else if (!p->st && limit && pending > limit)
        why = p->depth ? "stanza too large" : "stream header too large";
    else if (pending > MAX_TOKEN)
        why = "XML tag too large";
    if (!why)
        return PL_OK;
    /* The error callback may reset the parser: report the error anyway. */
    fail(p, PL_XML_POLICY_VIOLATION, why);
    return PL_EINVAL;
}

static size_t count_byte(const char *s, size_t n, char c)
{
    size_t k = 0;
    const char *end = s + n;
    while ((s = memchr(s, c, (size_t)(end - s)))) {
        k++;
        s++;
    }
    return k;
}

/*
 * First-chunk size for a stanza whose start tag is the current event,
 * from the bytes expat holds: up to the stanza's end tag if it is there,
 * else all of them.  A node costs 80 bytes and an attribute 32 whatever
 * their text, so the estimate counts tags ('<') and attributes ('=') on
 * top of the bytes; most stanzas then fit one chunk.  Only a hint: a wrong
 * guess costs an extra chunk or some slack.
 */
static size_t size_hint(struct pl_xml_parser *p)
{
    int off = 0, size = 0;
    const char *ctx = XML_GetInputContext(p->xp, &off, &size);
    int count = XML_GetCurrentByteCount(p->xp);
    if (!ctx || off < 0 || size <= off || count < 2 || count > size - off)
        return MIN_HINT;
    const char *s = ctx + off;
    size_t avail = (size_t)(size - off), tag = (size_t)count, end = avail;
    size_t nlen = 1, tags = 1;
    while (nlen < tag && !strchr(" \t\r\n/>", s[nlen]))
        nlen++;
    nlen--; /* the qualified name is s[1 .. nlen] */
    if (s[tag - 2] == '/') {
        end = tag; /* <x .../> */
    } else {
        /* Up to "</name" followed by '>' or space. */
        const char *at = s + tag, *lim = s + avail;
        while ((at = memchr(at, '<', (size_t)(lim - at)))) {
            tags++;
            if ((size_t)(lim - at) >= nlen + 3 && at[1] == '/' &&
                memcmp(at + 2, s + 1, nlen) == 0 && at[2 + nlen] &&
                strchr(" \t\r\n>", at[2 + nlen])) {
                end = (size_t)(at - s) + nlen + 3;
                break;
            }
            at++;
        }
    }
    if (end >= MAX_HINT / 2)
        return MAX_HINT;
    size_t hint = end + 80 * tags + 36 * count_byte(s, end, '=') + 48;
    if (hint > MAX_HINT)
        hint = MAX_HINT;
    if (p->st_limit && hint > 2 * p->st_limit + 1024)
        hint = 2 * p->st_limit + 1024;
    return hint < MIN_HINT ? MIN_HINT : hint;
}

/* ---- handlers ---- */

static void open_stream(struct pl_xml_parser *p, const XML_Char *name,
                        const XML_Char **atts)
{
    size_t limit = p->limits.max_stanza_size;
    if (limit && (size_t)XML_GetCurrentByteCount(p->xp) > limit) {
        fail(p, PL_XML_POLICY_VIOLATION, "stream header too large");
        return;
    }
    p->calm = (unsigned long long)event_end(p);
    if (p->resuming) {
        /* Replayed header after pl_xml_parser_nap(): context only. */
        drop_partial(p);
        return;
    }
    pl_free(p->hdr_raw);
    p->hdr_raw = NULL;
    p->hdr_raw_len = 0;
    int off = 0, size = 0;
    const char *buf = XML_GetInputContext(p->xp, &off, &size);
    int cnt = XML_GetCurrentByteCount(p->xp);
    if (buf && off >= 0 && cnt > 0 && off + cnt <= size) {
        p->hdr_raw = pl_strndup(buf + off, (size_t)cnt);
        p->hdr_raw_len = (size_t)cnt;
    }
    struct pl_stanza *h = p->hdr ? p->hdr : pl__stanza_new_sized(0);
    struct pl_attr *decls = p->decls;
    p->hdr = NULL;
    p->decls = NULL;
    p->decls_tail = &p->decls;
    struct pl_node *root = add_elem(h, NULL, name, atts);
    struct pl_attr **tail = &root->attrs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = decls;
    if (p->cb.stream_open)
        p->cb.stream_open(p->ud, h);
    pl_stanza_unref(h);
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct pl_xml_parser *p = ud;
    if (dead(p))
        return;
    p->depth++;
    if (p->depth < p->sdepth) {
        open_stream(p, name, atts);
        return;
    }
    if (p->depth == p->sdepth) {
        p->st_start = (long long)XML_GetCurrentByteIndex(p->xp);
        p->st_limit = p->limits.max_stanza_size;
        p->st_max_depth = p->limits.max_depth;
        if (too_big(p))
            return;
        p->st = pl__stanza_new_sized(size_hint(p));
        p->cur = add_elem(p->st, NULL, name, atts);
        return;
    }
    if (p->st_max_depth && p->depth - p->sdepth + 1 > p->st_max_depth) {
        fail(p, PL_XML_POLICY_VIOLATION, "stanza nested too deeply");
        return;
    }
    if (too_big(p))
        return;
    p->cur = add_elem(p->st, p->cur, name, atts);
}

static void on_end(void *ud, const XML_Char *name)
{
    struct pl_xml_parser *p = ud;
    if (dead(p))
        return;
    unsigned d = p->depth--;
    if (d < p->sdepth) {
        if (p->cb.stream_close)
            p->cb.stream_close(p->ud);
        return;
    }
    if (too_big(p))
        return;
    if (d > p->sdepth) {
        p->cur = p->cur->parent;
        return;
    }
    struct pl_stanza *st = p->st;
    p->st = NULL;
    p->cur = NULL;
    p->calm = (unsigned long long)event_end(p);
    pl__stanza_set_wire_size(st, (size_t)(event_end(p) - p->st_start));
    if (p->cb.stanza)
        p->cb.stanza(p->ud, st);
    else
        pl_stanza_unref(st);
}

static void on_text(void *ud, const XML_Char *s, int len)
{
    struct pl_xml_parser *p = ud;
    if (dead(p) || len <= 0)
        return;
    if (p->depth >= p->sdepth) {
        if (!too_big(p))
            pl_node_add_text(p->st, p->cur, s, (size_t)len);
        return;
    }
    /* Between stanzas only whitespace (keepalives) may appear. */
    for (int i = 0; i < len; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') {
            fail(p, PL_XML_BAD_FORMAT, "text between stanzas");
            return;
        }
    }
    if (!p->in_cdata)
        p->calm = (unsigned long long)event_end(p);
}

/*
 * RFC 6120 §11.7: whitespace, and nothing else, may separate the stream's
 * children.  A CDATA section there is refused as it opens, whatever it
 * holds: inside one, expat has consumed every byte yet is not between
 * children (the text "<message/>" is not a stanza).  Inside a stanza its
 * text arrives through on_text().  in_cdata keeps whitespace in a CDATA
 * section from counting as a calm point (see pl_xml_parser_nap).
 */
static void on_cdata_start(void *ud)
{
    struct pl_xml_parser *p = ud;
    p->in_cdata = true;
    if (!dead(p) && p->depth < p->sdepth)
        fail(p, PL_XML_BAD_FORMAT, "CDATA section between stanzas");
}

static void on_cdata_end(void *ud)
{
    ((struct pl_xml_parser *)ud)->in_cdata = false;
}

/*
 * Namespace declarations are not attributes to expat; those of the stream
 * header are recorded so the stream can check its default namespace and
 * xmlns:db (XEP-0220).  They fire before the element's start handler.
 */
static void on_ns(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
    struct pl_xml_parser *p = ud;
    if (dead(p) || p->depth != 0 || p->sdepth < 2)
        return;
    if (!p->hdr)
        p->hdr = pl__stanza_new_sized(0);
    const char *v = uri ? uri : "";
    struct pl_attr *a = prefix ? pl__attr_new(p->hdr, prefix, strlen(prefix),
                                              NS_XMLNS, sizeof(NS_XMLNS) - 1, v,
                                              strlen(v))
                               : pl__attr_new(p->hdr, "xmlns", 5, NULL, 0, v,
                                              strlen(v));
    *p->decls_tail = a;
    p->decls_tail = &a->next;
}

static void on_xml_decl(void *ud, const XML_Char *version,
                        const XML_Char *encoding, int standalone)
{
    struct pl_xml_parser *p = ud;
    if (dead(p))
        return;
    if (version && strcmp(version, "1.0") != 0)
        fail(p, PL_XML_BAD_FORMAT, "XML version other than 1.0");
    else if (encoding && strcasecmp(encoding, "UTF-8") != 0)
        fail(p, PL_XML_UNSUPPORTED_ENCODING, "encoding other than UTF-8");
}

static void on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                       const XML_Char *pubid, int has_internal_subset)
{
    restricted(ud, "DOCTYPE not allowed");
}

static void on_entity_decl(void *ud, const XML_Char *name, int is_param,
                           const XML_Char *value, int value_len,
                           const XML_Char *base, const XML_Char *sysid,
                           const XML_Char *pubid, const XML_Char *notation)
{
    restricted(ud, "entity declaration not allowed");
}

static void on_unparsed_entity(void *ud, const XML_Char *name,
                               const XML_Char *base, const XML_Char *sysid,
                               const XML_Char *pubid, const XML_Char *notation)
{
    restricted(ud, "entity declaration not allowed");
}

static void on_notation(void *ud, const XML_Char *name, const XML_Char *base,
                        const XML_Char *sysid, const XML_Char *pubid)
{
    restricted(ud, "notation declaration not allowed");
}

static void on_element_decl(void *ud, const XML_Char *name, XML_Content *model)
{
    struct pl_xml_parser *p = ud;
    XML_FreeContentModel(p->xp, model); /* the handler owns it */
    restricted(p, "element declaration not allowed");
}

static void on_attlist(void *ud, const XML_Char *el, const XML_Char *att,
                       const XML_Char *type, const XML_Char *dflt, int required)
{
    restricted(ud, "attribute list declaration not allowed");
}

static void on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
    restricted(ud, "processing instruction not allowed");
}

static void on_comment(void *ud, const XML_Char *data)
{
    restricted(ud, "comment not allowed");
}

/* Registers everything; XML_ParserReset() clears it, so reset calls this. */
static void setup(struct pl_xml_parser *p)
{
    XML_Parser xp = p->xp;
    XML_SetUserData(xp, p);
    /* Expat salts its hash tables against collision floods; left to
     * itself it asks the kernel for the salt at each parser's first
     * byte, a system call per stream and per restart. */
    unsigned long salt;
    pl_random(&salt, sizeof(salt));
    XML_SetHashSalt(xp, salt);
    XML_SetReturnNSTriplet(xp, 1);
    XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
    if (XML_SetReparseDeferralEnabled)
        XML_SetReparseDeferralEnabled(xp, XML_FALSE);
    XML_SetElementHandler(xp, on_start, on_end);
    XML_SetCharacterDataHandler(xp, on_text);
    XML_SetCdataSectionHandler(xp, on_cdata_start, on_cdata_end);
    XML_SetNamespaceDeclHandler(xp, on_ns, NULL);
    XML_SetXmlDeclHandler(xp, on_xml_decl);
    XML_SetStartDoctypeDeclHandler(xp, on_doctype);
    XML_SetEntityDeclHandler(xp, on_entity_decl);
    XML_SetUnparsedEntityDeclHandler(xp, on_unparsed_entity);
    XML_SetNotationDeclHandler(xp, on_notation);
    XML_SetElementDeclHandler(xp, on_element_decl);
    XML_SetAttlistDeclHandler(xp, on_attlist);
    XML_SetProcessingInstructionHandler(xp, on_pi);
    XML_SetCommentHandler(xp, on_comment);
}

static void do_reset(struct pl_xml_parser *p)
{
    drop_partial(p);
    pl_free(p->hdr_raw);
    p->hdr_raw = NULL;
    p->hdr_raw_len = 0;
    /* A fresh parser (and fresh pages) rather than XML_ParserReset, which
     * would leave the old allocations behind in a stream parser's pages. */
    expat_free(p, SPARE_MAX);
    p->use_region = USE_REGIONS && p->sdepth == 2;
    expat_new(p);
    setup(p);
    p->depth = 0;
    p->fed = 0;
    p->calm = NO_CALM;
    p->in_cdata = false;
    p->doc_bytes = 0;
    p->stopped = p->failed = p->reset_pending = false;
}

static struct pl_xml_parser *create(const struct pl_xml_limits *limits,
                                    const struct pl_xml_callbacks *cb, void *ud,
                                    unsigned sdepth)
{
    struct pl_xml_parser *p = pl_calloc(1, sizeof(*p));
    if (limits)
        p->limits = *limits;
    if (cb)
        p->cb = *cb;
    p->ud = ud;
    p->sdepth = sdepth;
    p->decls_tail = &p->decls;
    p->calm = NO_CALM;
    /* A stream's first document (before TLS and SASL restarts) is
     * short-lived: the C heap serves it; pages of its own start with the
     * first restart (see do_reset), when the stream is about to last. */
    p->use_region = false;
    expat_new(p);
    setup(p);
    return p;
}

struct pl_xml_parser *pl_xml_parser_new(const struct pl_xml_limits *limits,
                                        const struct pl_xml_callbacks *cb,
                                        void *ud)
{
    return create(limits, cb, ud, 2);
}

void *pl_xml_parser_ud(const struct pl_xml_parser *p)
{
    return p->ud;
}

void pl_xml_parser_set_ud(struct pl_xml_parser *p, void *ud)
{
    p->ud = ud;
}

void pl_xml_parser_free(struct pl_xml_parser *p)
{
    if (!p)
        return;
    pl_assert(!p->busy); /* not from a callback */
    drop_partial(p);
    expat_free(p, SPARE_MAX);
    pl_free(p->hdr_raw);
    pl_free(p);
}

void pl_xml_parser_set_limits(struct pl_xml_parser *p,
                              const struct pl_xml_limits *limits)
{
    p->limits = *limits;
}

#define STOPPED 1 /* parse(): quietly done with this input */

/* Hands n bytes to expat and settles what the handlers asked for. */
static int parse(struct pl_xml_parser *p, const char *data, size_t n, int final)
{
    p->in_parse = true;
    struct pl_xml_parser *saved = mem_enter(p);
    enum XML_Status s = XML_Parse(p->xp, data, (int)n, final);
    mem_leave(saved);
    p->in_parse = false;
    p->fed += n;
    if (p->reset_pending) {
        int rc = p->failed ? PL_EINVAL : STOPPED;
        do_reset(p);
        return rc;
    }
    if (p->failed)
        return PL_EINVAL;
    if (p->stopped)
        return STOPPED;
    if (s != XML_STATUS_OK) {
        enum XML_Error code = XML_GetErrorCode(p->xp);
        if (code == XML_ERROR_NO_MEMORY) {
            fail(p, PL_XML_POLICY_VIOLATION, "out of memory parsing XML");
        } else {
            /* On the stack: the error callback only borrows it (every
             * parser of every session would otherwise carry it). */
            char text[192];
            snprintf(text, sizeof(text), "%s at line %llu, column %llu",
                     XML_ErrorString(code),
                     (unsigned long long)XML_GetCurrentLineNumber(p->xp),
                     (unsigned long long)XML_GetCurrentColumnNumber(p->xp));
            fail(p, PL_XML_NOT_WELL_FORMED, text);
        }
        return PL_EINVAL;
    }
    return check_pending(p);
}

/*
 * After a nap: a fresh expat, put back inside the stream by replaying the
 * header's start tag (its namespace declarations), without callbacks.
 */
static int wake(struct pl_xml_parser *p)
{
    expat_new(p);
    setup(p);
    p->depth = 0;
    p->fed = 0;
    p->calm = NO_CALM;
    p->in_cdata = false;
    p->resuming = true;
    int rc = parse(p, p->hdr_raw, p->hdr_raw_len, XML_FALSE);
    p->resuming = false;
    return rc;
}

/*
 * A byte index alone does not tell whether expat may be dropped: inside a
 * CDATA section expat has consumed every byte it was given, yet a fresh
 * parser would read what follows as markup.  So the nap needs the last
 * event expat reported (the stream header, a stanza's end tag, or
 * whitespace at depth 1) to end exactly where the input ends: then no
 * token is partial and no construct (CDATA section, comment, processing
 * instruction, reference, tag) is open.  Any other event, or input consumed
 * without one, leaves calm behind fed and the parser awake.
 */
int pl_xml_parser_between(const struct pl_xml_parser *p)
{
    if (!p->xp)
        return !dead(p) && p->hdr_raw; /* napping: between by definition */
    if (p->busy || dead(p) || p->st || !p->hdr_raw ||
        p->depth + 1 != p->sdepth || p->calm != p->fed)
        return 0;
    long long idx = (long long)XML_GetCurrentByteIndex(p->xp);
    return idx >= 0 && (unsigned long long)idx == p->fed; /* no partial
                                                            * token */
}

int pl_xml_parser_nap(struct pl_xml_parser *p)
{
    if (!p->xp || !pl_xml_parser_between(p))
        return 0;
    expat_free(p, SPARE_KEEP);
    pl_xml_spares_trim(); /* idle again: the storm's pages may go */
    return 1;
}

int pl_xml_parser_feed(struct pl_xml_parser *p, const char *data, size_t len)
{
    pl_assert(!p->busy); /* not from a callback */
    if (p->failed)
        return PL_EINVAL;
    if (p->stopped)
        return PL_OK;
    /* RFC 6120 §11.6: UTF-8 only.  Expat, though told UTF-8, still
     * switches to UTF-16 on a BOM or a NUL in the first two bytes. */
    for (size_t i = 0; p->doc_bytes < 2 && i < len; i++, p->doc_bytes++) {
        unsigned char b = (unsigned char)data[i];
        if (b == 0x00 || b == 0xfe || b == 0xff) {
            fail(p, PL_XML_UNSUPPORTED_ENCODING, "not UTF-8");
            return PL_EINVAL;
        }
    }
    int rc = PL_OK;
    p->busy = true;
    if (!p->xp && len > 0)
        rc = wake(p);
    while (len > 0 && rc == PL_OK) {
        size_t n = len < SLICE ? len : SLICE;
        rc = parse(p, data, n, XML_FALSE);
        data += n;
        len -= n;
    }
    p->busy = false;
    return rc < 0 ? rc : PL_OK;
}

void pl_xml_parser_stop(struct pl_xml_parser *p)
{
    if (p->stopped || p->failed)
        return;
    p->stopped = true;
    if (p->in_parse)
        XML_StopParser(p->xp, XML_FALSE);
    drop_partial(p);
}

void pl_xml_parser_reset(struct pl_xml_parser *p)
{
    if (p->in_parse) {
        /* XML_ParserReset() must not run inside expat: finish in parse(). */
        if (!dead(p))
            XML_StopParser(p->xp, XML_FALSE);
        p->reset_pending = true;
        return;
    }
    do_reset(p);
}

unsigned long long pl__xml_parser_bytes(const struct pl_xml_parser *p)
{
    return p->fed;
}

/* ---- fragments ---- */

struct fragment {
    struct pl_stanza *st; /* the element, once complete */
    bool failed;          /* the error callback fired */
};

static void frag_stanza(void *ud, struct pl_stanza *st)
{
    struct fragment *f = ud;
    pl_stanza_unref(f->st); /* cannot happen: XML has one root */
    f->st = st;
}

static void frag_error(void *ud, enum pl_xml_error err, const char *text)
{
    struct fragment *f = ud;
    f->failed = true;
}

int pl_xml_parse_fragment(const char *data, size_t len, struct pl_stanza **out)
{
    return pl_xml_parse_fragment_limited(data, len, NULL, out);
}

int pl_xml_parse_fragment_limited(const char *data, size_t len,
                                  const struct pl_xml_limits *limits,
                                  struct pl_stanza **out)
{
    struct fragment f = {NULL, false};
    struct pl_xml_callbacks cb = {
        .stanza = frag_stanza,
        .error = frag_error,
    };
    struct pl_xml_parser *p = create(limits, &cb, &f, 1);
    int rc = pl_xml_parser_feed(p, data, len);
    if (rc == PL_OK && parse(p, "", 0, XML_TRUE) < 0)
        rc = PL_EINVAL;
    pl_xml_parser_free(p);
    if (rc != PL_OK || f.failed || !f.st) {
        pl_stanza_unref(f.st);
        return PL_EINVAL;
    }
    *out = f.st;
    return PL_OK;
}
