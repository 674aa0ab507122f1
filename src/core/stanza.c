/*
 * stanza.c - element trees in per-stanza arenas, reference counting and the
 * cached serializer.  See stanza.h for the API.
 *
 * Memory: one pl_malloc holds the struct pl_stanza and the first arena
 * chunk, sized from a hint (the parser passes about twice the stanza's
 * bytes, at least MIN_CHUNK); later chunks double up to MAX_GROW.  Nodes and
 * attributes are 8-byte aligned; strings are packed.  Nothing in the arena
 * is freed before the stanza, so removed nodes and replaced values stay
 * until the last unref.  Common namespace URIs are interned as static
 * strings, and a child in its parent's namespace shares the parent's
 * pointer, so a parsed stanza usually stores each namespace once.
 *
 * Cache: a mutation bumps st->gen; a cache entry is valid while its gen
 * matches.  jabber:client and jabber:server streams share one entry (the
 * rules below make their output identical); other stream namespaces (such
 * as jabber:component:accept) get entries of their own, so serializing for
 * one stream never invalidates a string handed out for another.
 *
 * Serializer rules (see also stanza.h): an element gets xmlns='ns' only
 * when its namespace differs from the default namespace in scope, where
 * jabber:client, jabber:server and the stream's namespace count as one
 * "content" namespace.  A content-namespace element under a foreign
 * parent (a <message/> inside XEP-0297 <forwarded/>) keeps its own
 * namespace, since XEP-0297 requires jabber:client there whatever the
 * stream.  The walk is iterative, so nesting depth cannot overflow the C
 * stack.
 *
 * Extending: keep every allocation in the arena (arena(), arena_strndup()),
 * and call touch() in anything that changes the tree.
 */
#include "stanza.h"

#include <stdatomic.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

#define MIN_CHUNK 512  /* smallest first chunk */
#define MAX_GROW 65536 /* later chunks double up to this (or the need) */
#define ALIGN 8        /* alignment of nodes and attributes */
#define NS_XMLNS "http://www.w3.org/2000/xmlns/"
#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */
#define MAX_DECL 16         /* attribute namespaces remembered per element */
#define XML_PREFIX UINT_MAX /* put_attr(): the xml: prefix */

struct chunk {
    struct chunk *prev; /* older chunk, NULL for the first */
    size_t size;        /* usable bytes following this header */
    size_t used;        /* bytes handed out */
};

struct cache {
    struct cache *next; /* entry for another stream namespace (rare) */
    char *key;          /* that namespace; NULL for client/server streams */
    unsigned long gen;  /* valid while equal to the stanza's gen */
    struct pl_buf buf;  /* the serialized bytes */
};

struct pl_stanza {
    atomic_uint refs;     /* references; freed when it drops to zero */
    unsigned long gen;    /* bumped by every mutation */
    struct pl_node *root; /* root element; NULL only while being built */
    struct chunk *cur;    /* newest chunk, where allocation happens */
    size_t arena_size;    /* sum of chunk sizes, for accounting */
    size_t wire_size;     /* size as received, 0 if built; sizes the cache */
    unsigned marks;       /* PL_STANZA_* facts, never serialized */
    struct cache cache;   /* serialization for client and server streams */
    struct chunk first;   /* first chunk; its bytes follow the struct */
};

_Static_assert(offsetof(struct pl_stanza, first) + sizeof(struct chunk) ==
                   sizeof(struct pl_stanza),
               "the first chunk's bytes must directly follow the stanza");

/* Interned namespaces: parsed and built elements point at these. */
static const struct {
    const char *s;
    size_t len;
} known_ns[] = {
#define NS(lit)                                                                \
    {                                                                          \
        lit, sizeof(lit) - 1                                                   \
    }
    NS(PL_NS_CLIENT), NS(PL_NS_SERVER),  NS(PL_NS_STREAMS),
    NS(PL_NS_XML),    NS(PL_NS_STANZAS), NS(PL_NS_STREAM_ERRORS),
    NS(NS_XMLNS),
#undef NS
};
#define NS_CLIENT (known_ns[0].s)
#define NS_SERVER (known_ns[1].s)
#define NS_XML (known_ns[3].s)

static inline char *chunk_data(struct chunk *c)
{
    return (char *)(c + 1);
}

static inline void touch(struct pl_stanza *st)
{
    st->gen++;
}

static struct chunk *grow(struct pl_stanza *st, size_t need)
{
    pl_assert(need < SIZE_MAX / 4);
    size_t size = st->cur->size * 2;
    if (size > MAX_GROW)
        size = MAX_GROW;
    if (size < need)
        size = (need + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    struct chunk *c = pl_malloc(sizeof(*c) + size);
    c->prev = st->cur;
    c->size = size;
    c->used = 0;
    st->cur = c;
    st->arena_size += size;
    return c;
}

static void *arena(struct pl_stanza *st, size_t n, size_t align)
{
    struct chunk *c = st->cur;
    size_t off = (c->used + align - 1) & ~(align - 1);
    if (off > c->size || c->size - off < n) {
        c = grow(st, n);
        off = 0;
    }
    c->used = off + n;
    return chunk_data(c) + off;
}

/* Makes sure the current chunk has n free bytes (for growing text). */
static void arena_reserve(struct pl_stanza *st, size_t n)
{
    if (st->cur->size - st->cur->used < n)
        grow(st, n);
}

static char *arena_strndup(struct pl_stanza *st, const char *s, size_t n)
{
    char *p = arena(st, n + 1, 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static const char *intern_ns(const char *s, size_t n)
{
    if (n == 0)
        return "";
    for (size_t i = 0; i < sizeof(known_ns) / sizeof(known_ns[0]); i++)
        if (known_ns[i].len == n && memcmp(known_ns[i].s, s, n) == 0)
            return known_ns[i].s;
    return NULL;
}

static int span_eq(const char *cstr, const char *s, size_t n)
{
    return strncmp(cstr, s, n) == 0 && cstr[n] == '\0';
}

/* An element namespace: the parent's pointer, a static string or a copy. */
static const char *elem_ns(struct pl_stanza *st, const struct pl_node *parent,
                           const char *ns, size_t n)
{
    if (parent && (parent->ns == ns || span_eq(parent->ns, ns, n)))
        return parent->ns;
    const char *k = intern_ns(ns, n);
    return k ? k : arena_strndup(st, ns, n);
}

static inline int ns_eq(const char *a, const char *b)
{
    return a == b || strcmp(a, b) == 0;
}

/* ---- construction ---- */

struct pl_stanza *pl__stanza_new_sized(size_t hint)
{
    size_t size = hint < MIN_CHUNK ? MIN_CHUNK : hint;
    pl_assert(size < SIZE_MAX / 4);
    size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    struct pl_stanza *st = pl_malloc(sizeof(*st) + size);
    memset(st, 0, sizeof(*st));
    atomic_init(&st->refs, 1);
    st->gen = 1; /* the cache's gen 0 means "never made" */
    st->first.size = size;
    st->cur = &st->first;
    st->arena_size = size;
    return st;
}

void pl__stanza_set_wire_size(struct pl_stanza *st, size_t n)
{
    st->wire_size = n;
}

static void link_child(struct pl_node *parent, struct pl_node *n)
{
    n->parent = parent;
    n->next = NULL;
    if (parent->last)
        parent->last->next = n;
    else
        parent->children = n;
    parent->last = n;
}

static struct pl_node *node_alloc(struct pl_stanza *st, enum pl_node_type t)
{
    struct pl_node *n = arena(st, sizeof(*n), ALIGN);
    memset(n, 0, sizeof(*n));
    n->type = t;
    return n;
}

struct pl_node *pl__node_add_elem_n(struct pl_stanza *st,
                                    struct pl_node *parent, const char *name,
                                    size_t name_len, const char *ns,
                                    size_t ns_len)
{
    struct pl_node *n = node_alloc(st, PL_NODE_ELEMENT);
    n->name = arena_strndup(st, name, name_len);
    n->ns = elem_ns(st, parent, ns ? ns : "", ns ? ns_len : 0);
    if (parent) {
        pl_assert(parent->type == PL_NODE_ELEMENT);
        link_child(parent, n);
    } else {
        pl_assert(st->root == NULL);
        st->root = n;
    }
    touch(st);
    return n;
}

struct pl_node *pl__node_new_elem(struct pl_stanza *st, const char *name,
                                  const char *ns)
{
    pl_assert(name != NULL);
    struct pl_node *n = node_alloc(st, PL_NODE_ELEMENT);
    n->name = arena_strndup(st, name, strlen(name));
    n->ns = elem_ns(st, NULL, ns ? ns : "", ns ? strlen(ns) : 0);
    return n;
}

struct pl_attr *pl__attr_new(struct pl_stanza *st, const char *name,
                             size_t name_len, const char *ns, size_t ns_len,
                             const char *value, size_t value_len)
{
    struct pl_attr *a = arena(st, sizeof(*a), ALIGN);
    a->name = arena_strndup(st, name, name_len);
    if (!ns || ns_len == 0) {
        a->ns = NULL;
    } else {
        const char *k = intern_ns(ns, ns_len);
        a->ns = k ? k : arena_strndup(st, ns, ns_len);
    }
    a->value = arena_strndup(st, value, value_len);
    a->next = NULL;
    return a;
}

void *pl__stanza_alloc(struct pl_stanza *st, size_t n)
{
    return arena(st, n, ALIGN);
}

struct pl_stanza *pl_stanza_new(const char *name, const char *ns)
{
    pl_assert(name != NULL);
    struct pl_stanza *st = pl__stanza_new_sized(0);
    pl__node_add_elem_n(st, NULL, name, strlen(name), ns, ns ? strlen(ns) : 0);
    return st;
}

struct pl_stanza *pl_stanza_ref(struct pl_stanza *st)
{
    unsigned old = atomic_fetch_add_explicit(&st->refs, 1,
                                             memory_order_relaxed);
    pl_assert(old > 0);
    return st;
}

void pl_stanza_unref(struct pl_stanza *st)
{
    if (!st)
        return;
    unsigned old = atomic_fetch_sub_explicit(&st->refs, 1,
                                             memory_order_acq_rel);
    pl_assert(old > 0);
    if (old != 1)
        return;
    struct chunk *c = st->cur;
    while (c != &st->first) {
        struct chunk *prev = c->prev;
        pl_free(c);
        c = prev;
    }
    pl_buf_reset(&st->cache.buf);
    struct cache *e = st->cache.next;
    while (e) {
        struct cache *next = e->next;
        pl_buf_reset(&e->buf);
        pl_free(e->key);
        pl_free(e);
        e = next;
    }
    pl_free(st);
}

struct pl_node *pl_stanza_root(const struct pl_stanza *st)
{
    return st->root;
}

const char *pl_stanza_name(const struct pl_stanza *st)
{
    return st->root ? st->root->name : NULL;
}

const char *pl_stanza_attr(const struct pl_stanza *st, const char *name)
{
    return st->root ? pl_node_attr(st->root, name) : NULL;
}

void pl_stanza_set_attr(struct pl_stanza *st, const char *name,
                        const char *value)
{
    pl_node_set_attr(st, st->root, name, value);
}

/* ---- attributes and lookup ---- */

const char *pl_node_attr_ns(const struct pl_node *el, const char *ns,
                            const char *name)
{
    if (ns && !*ns)
        ns = NULL;
    for (const struct pl_attr *a = el->attrs; a; a = a->next) {
        if (strcmp(a->name, name) != 0)
            continue;
        if (ns ? a->ns && ns_eq(a->ns, ns) : !a->ns)
            return a->value;
    }
    return NULL;
}

const char *pl_node_attr(const struct pl_node *el, const char *name)
{
    for (const struct pl_attr *a = el->attrs; a; a = a->next)
        if (!a->ns && strcmp(a->name, name) == 0)
            return a->value;
    return NULL;
}

void pl_node_set_attr(struct pl_stanza *st, struct pl_node *el,
                      const char *name, const char *value)
{
    pl_assert(el && el->type == PL_NODE_ELEMENT && name);
    struct pl_attr **pp = &el->attrs;
    for (; *pp; pp = &(*pp)->next) {
        struct pl_attr *a = *pp;
        if (a->ns || strcmp(a->name, name) != 0)
            continue;
        if (value)
            a->value = arena_strndup(st, value, strlen(value));
        else
            *pp = a->next;
        touch(st);
        return;
    }
    if (!value)
        return; /* removing an absent attribute changes nothing */
    *pp = pl__attr_new(st, name, strlen(name), NULL, 0, value, strlen(value));
    touch(st);
}

struct pl_node *pl_node_child(const struct pl_node *el, const char *name,
                              const char *ns)
{
    for (struct pl_node *c = el->children; c; c = c->next) {
        if (c->type != PL_NODE_ELEMENT)
            continue;
        if (name && strcmp(c->name, name) != 0)
            continue;
        if (ns && !ns_eq(c->ns, ns))
            continue;
        return c;
    }
    return NULL;
}

struct pl_node *pl_node_first_elem(const struct pl_node *el)
{
    struct pl_node *c = el->children;
    while (c && c->type != PL_NODE_ELEMENT)
        c = c->next;
    return c;
}

struct pl_node *pl_node_next_elem(const struct pl_node *el)
{
    struct pl_node *c = el->next;
    while (c && c->type != PL_NODE_ELEMENT)
        c = c->next;
    return c;
}

size_t pl_node_count_elems(const struct pl_node *el)
{
    size_t n = 0;
    for (const struct pl_node *c = el->children; c; c = c->next)
        n += c->type == PL_NODE_ELEMENT;
    return n;
}

const char *pl_node_text(struct pl_stanza *st, const struct pl_node *el,
                         size_t *len)
{
    if (el->type == PL_NODE_TEXT) {
        if (len)
            *len = el->text_len;
        return el->text;
    }
    const struct pl_node *one = NULL;
    size_t total = 0, count = 0;
    for (const struct pl_node *c = el->children; c; c = c->next) {
        if (c->type != PL_NODE_TEXT)
            continue;
        one = c;
        total += c->text_len;
        count++;
    }
    if (len)
        *len = total;
    if (count == 0)
        return "";
    if (count == 1)
        return one->text;
    /* Mixed content: join the pieces (not a mutation of the tree). */
    char *s = arena(st, total + 1, 1), *p = s;
    for (const struct pl_node *c = el->children; c; c = c->next) {
        if (c->type != PL_NODE_TEXT)
            continue;
        memcpy(p, c->text, c->text_len);
        p += c->text_len;
    }
    *p = '\0';
    return s;
}

/* ---- builders ---- */

struct pl_node *pl_node_add_child(struct pl_stanza *st, struct pl_node *parent,
                                  const char *name, const char *ns)
{
    pl_assert(parent && name);
    return pl__node_add_elem_n(st, parent, name, strlen(name), ns,
                               ns ? strlen(ns) : 0);
}

/*
 * Appends to an existing text node.  The parser hands text over in pieces
 * that arrive back to back, so the node's bytes are normally the last thing
 * in the arena and grow in place; otherwise they move to a spot with room to
 * double, which keeps a long text built from many pieces linear.
 */
static void append_text(struct pl_stanza *st, struct pl_node *t,
                        const char *text, size_t len)
{
    struct chunk *c = st->cur;
    char *old = (char *)t->text;
    if (old + t->text_len + 1 == chunk_data(c) + c->used &&
        c->size - c->used >= len) {
        memcpy(old + t->text_len, text, len);
        t->text_len += len;
        old[t->text_len] = '\0';
        c->used += len;
        return;
    }
    size_t n = t->text_len + len;
    pl_assert(n < SIZE_MAX / 4);
    arena_reserve(st, 2 * (n + 1));
    char *s = arena(st, n + 1, 1);
    memcpy(s, old, t->text_len);
    memcpy(s + t->text_len, text, len);
    s[n] = '\0';
    t->text = s;
    t->text_len = n;
}

void pl_node_add_text(struct pl_stanza *st, struct pl_node *parent,
                      const char *text, size_t len)
{
    pl_assert(parent && parent->type == PL_NODE_ELEMENT);
    if (len == 0)
        return;
    touch(st);
    if (parent->last && parent->last->type == PL_NODE_TEXT) {
        append_text(st, parent->last, text, len);
        return;
    }
    struct pl_node *t = node_alloc(st, PL_NODE_TEXT);
    t->text = arena_strndup(st, text, len);
    t->text_len = len;
    link_child(parent, t);
}

/*
 * Copies one node (not its children).  parent, if any, lends its namespace
 * pointer; the copy is linked under it only when link is set.
 */
static struct pl_node *copy_one(struct pl_stanza *st, struct pl_node *parent,
                                const struct pl_node *src, int link)
{
    struct pl_node *n = node_alloc(st, src->type);
    if (src->type == PL_NODE_TEXT) {
        n->text = arena_strndup(st, src->text, src->text_len);
        n->text_len = src->text_len;
    } else {
        n->name = arena_strndup(st, src->name, strlen(src->name));
        n->ns = elem_ns(st, parent, src->ns, strlen(src->ns));
        struct pl_attr **tail = &n->attrs;
        for (const struct pl_attr *a = src->attrs; a; a = a->next) {
            *tail = pl__attr_new(st, a->name, strlen(a->name), a->ns,
                                 a->ns ? strlen(a->ns) : 0, a->value,
                                 strlen(a->value));
            tail = &(*tail)->next;
        }
    }
    if (link)
        link_child(parent, n);
    return n;
}

/*
 * Deep copy of src into st, not linked anywhere (parent only lends its
 * namespace).  Iterative over parent links, so depth costs no stack.
 */
static struct pl_node *copy_tree(struct pl_stanza *st, struct pl_node *parent,
                                 const struct pl_node *src)
{
    struct pl_node *top = copy_one(st, parent, src, 0);
    if (src->type != PL_NODE_ELEMENT)
        return top;
    const struct pl_node *s = src->children;
    struct pl_node *dp = top; /* the copy of s->parent */
    while (s) {
        struct pl_node *d = copy_one(st, dp, s, 1);
        if (s->type == PL_NODE_ELEMENT && s->children) {
            dp = d;
            s = s->children;
            continue;
        }
        while (!s->next) {
            s = s->parent;
            if (s == src)
                return top;
            dp = dp->parent;
        }
        s = s->next;
    }
    return top;
}

struct pl_node *pl_node_add_copy(struct pl_stanza *st, struct pl_node *parent,
                                 const struct pl_node *src)
{
    pl_assert(parent && parent->type == PL_NODE_ELEMENT && src);
    if (src->type == PL_NODE_TEXT) {
        pl_node_add_text(st, parent, src->text, src->text_len);
        return parent->last;
    }
    /* Copy detached first: src may be an ancestor of parent. */
    struct pl_node *n = copy_tree(st, parent, src);
    link_child(parent, n);
    touch(st);
    return n;
}

static size_t arena_used(const struct pl_stanza *st)
{
    size_t used = 0;
    for (const struct chunk *c = st->cur; c; c = c->prev)
        used += c->used;
    return used;
}

struct pl_stanza *pl_stanza_copy(const struct pl_stanza *src)
{
    size_t used = arena_used(src);
    struct pl_stanza *st = pl__stanza_new_sized(used + used / 16 + 64);
    if (src->root)
        st->root = copy_tree(st, NULL, src->root);
    st->wire_size = src->wire_size;
    st->marks = src->marks;
    return st;
}

unsigned pl_stanza_marks(const struct pl_stanza *st)
{
    return st->marks;
}

void pl_stanza_mark(struct pl_stanza *st, unsigned marks)
{
    st->marks |= marks;
}

void pl_node_remove(struct pl_stanza *st, struct pl_node *el)
{
    struct pl_node *parent = el->parent;
    pl_assert(parent != NULL);
    struct pl_node *prev = NULL, *c = parent->children;
    while (c && c != el) {
        prev = c;
        c = c->next;
    }
    pl_assert(c == el);
    if (prev)
        prev->next = el->next;
    else
        parent->children = el->next;
    if (parent->last == el)
        parent->last = prev;
    el->parent = NULL;
    el->next = NULL;
    touch(st);
}

const char *pl_stanza_strdup(struct pl_stanza *st, const char *s, size_t len)
{
    return arena_strndup(st, s, len);
}

/* ---- serialization ---- */

/*
 * Escapes for a single-quoted attribute (attr) or for text.  Beyond & < >
 * (and ' " in attributes) it writes \r, and in attributes \t \n, as
 * character references so they survive the peer's normalization, and
 * replaces the other C0 controls, which XML 1.0 cannot carry at all, with
 * U+FFFD: a stray control byte from a module or a gateway must not get the
 * whole stream killed as not-well-formed.  Strings must be valid UTF-8.
 */
static void escape(struct pl_buf *out, const char *s, size_t n, int attr)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep;
        if (c > '>') /* every special byte is at most '>' */
            continue;
        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\'': rep = attr ? "&apos;" : NULL; break;
        case '"': rep = attr ? "&quot;" : NULL; break;
        case '\t': rep = attr ? "&#9;" : NULL; break;
        case '\n': rep = attr ? "&#10;" : NULL; break;
        case '\r': rep = "&#13;"; break;
        default: rep = c < 0x20 ? REPLACEMENT : NULL; break;
        }
        if (!rep)
            continue;
        pl_buf_append(out, s + start, i - start);
        pl_buf_append_str(out, rep);
        start = i + 1;
    }
    pl_buf_append(out, s + start, n - start);
}

static inline void put(struct pl_buf *out, const char *lit, size_t n)
{
    pl_buf_append(out, lit, n);
}
#define PUT(out, lit) put(out, lit, sizeof(lit) - 1)

static int is_content_ns(const char *ns, const char *sns)
{
    return ns == NS_CLIENT || ns == NS_SERVER || ns_eq(ns, sns) ||
           strcmp(ns, PL_NS_CLIENT) == 0 || strcmp(ns, PL_NS_SERVER) == 0;
}

static void put_attr(struct pl_buf *out, unsigned prefix, const char *name,
                     const char *value)
{
    if (prefix == XML_PREFIX)
        PUT(out, " xml:");
    else if (prefix)
        pl_buf_printf(out, " ns%u:", prefix);
    else
        PUT(out, " ");
    pl_buf_append_str(out, name);
    PUT(out, "='");
    escape(out, value, strlen(value), 1);
    PUT(out, "'");
}

/*
 * Writes "<name", the namespace declaration if needed, and the attributes.
 * scope is the default namespace in scope; returns the one for children.
 */
static const char *open_tag(const struct pl_node *el, const char *scope,
                            const char *sns, struct pl_buf *out)
{
    const char *inner = scope;
    if (ns_eq(el->ns, NS_XML)) {
        /* Never a default namespace; its prefix needs no declaration. */
        PUT(out, "<xml:");
        pl_buf_append_str(out, el->name);
    } else {
        PUT(out, "<");
        pl_buf_append_str(out, el->name);
    }
    if (ns_eq(el->ns, NS_XML) ||
        (is_content_ns(el->ns, sns) && is_content_ns(scope, sns))) {
        /* jabber:client and jabber:server are the stream's namespace. */
    } else if (!ns_eq(el->ns, scope)) {
        PUT(out, " xmlns='");
        escape(out, el->ns, strlen(el->ns), 1);
        PUT(out, "'");
        inner = el->ns;
    }
    /* Attributes in other namespaces get prefixes ns1, ns2, ... declared
     * here; past MAX_DECL distinct namespaces each attribute simply gets
     * a fresh prefix (two prefixes for one URI are fine). */
    const char *declared[MAX_DECL];
    unsigned ndecl = 0, nprefix = 0;
    for (const struct pl_attr *a = el->attrs; a; a = a->next) {
        if (!a->ns) {
            /* Namespace declarations are the serializer's business. */
            if (strcmp(a->name, "xmlns") != 0)
                put_attr(out, 0, a->name, a->value);
            continue;
        }
        if (ns_eq(a->ns, NS_XML)) {
            put_attr(out, XML_PREFIX, a->name, a->value);
            continue;
        }
        if (strcmp(a->ns, NS_XMLNS) == 0)
            continue;
        unsigned num = 0;
        for (unsigned i = 0; i < ndecl && !num; i++)
            if (ns_eq(declared[i], a->ns))
                num = i + 1;
        if (!num) {
            num = ++nprefix;
            if (ndecl < MAX_DECL)
                declared[ndecl++] = a->ns;
            pl_buf_printf(out, " xmlns:ns%u='", num);
            escape(out, a->ns, strlen(a->ns), 1);
            PUT(out, "'");
        }
        put_attr(out, num, a->name, a->value);
    }
    return inner;
}

void pl_node_serialize(const struct pl_node *top, const char *pns,
                       const char *stream_ns, struct pl_buf *out)
{
    const char *small[32];
    const char **scopes = small; /* scopes[d]: default ns where depth d is */
    size_t cap = sizeof(small) / sizeof(small[0]), d = 0;
    const struct pl_node *n = top;
    if (!stream_ns)
        stream_ns = PL_NS_CLIENT;
    scopes[0] = pns ? pns : "";
    for (;;) {
        if (n->type == PL_NODE_TEXT) {
            escape(out, n->text, n->text_len, 0);
        } else {
            const char *inner = open_tag(n, scopes[d], stream_ns, out);
            if (n->children) {
                PUT(out, ">");
                if (d + 1 == cap) {
                    const char **bigger = pl_malloc(2 * cap * sizeof(*bigger));
                    memcpy(bigger, scopes, cap * sizeof(*scopes));
                    if (scopes != small)
                        pl_free(scopes);
                    scopes = bigger;
                    cap *= 2;
                }
                scopes[++d] = inner;
                n = n->children;
                continue;
            }
            PUT(out, "/>");
        }
        /* n is complete: go to its next sibling or close its ancestors. */
        for (;;) {
            if (n == top)
                goto done;
            if (n->next) {
                n = n->next;
                break;
            }
            n = n->parent;
            d--;
            if (ns_eq(n->ns, NS_XML))
                PUT(out, "</xml:");
            else
                PUT(out, "</");
            pl_buf_append_str(out, n->name);
            PUT(out, ">");
        }
    }
done:
    if (scopes != small)
        pl_free(scopes);
}

static struct cache *cache_for(struct pl_stanza *st, const char *sns)
{
    if (strcmp(sns, PL_NS_CLIENT) == 0 || strcmp(sns, PL_NS_SERVER) == 0)
        return &st->cache;
    struct cache **pp = &st->cache.next;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->key, sns) == 0)
            return *pp;
    struct cache *e = pl_calloc(1, sizeof(*e));
    e->key = pl_strdup(sns);
    *pp = e;
    return e;
}

struct pl_str pl_stanza_serialize(struct pl_stanza *st, const char *stream_ns)
{
    pl_assert(st->root != NULL);
    if (!stream_ns)
        stream_ns = PL_NS_CLIENT;
    struct cache *c = cache_for(st, stream_ns);
    if (c->gen == st->gen)
        return pl_buf_str(&c->buf);
    c->buf.len = 0;
    c->buf.off = 0;
    if (!c->buf.data && st->wire_size) {
        /* Parsed stanzas come out about as long as they went in: one
         * allocation instead of a series of doublings. */
        size_t cap = st->wire_size + st->wire_size / 8 + 64;
        c->buf.data = pl_malloc(cap);
        c->buf.cap = cap;
    }
    pl_node_serialize(st->root, stream_ns, stream_ns, &c->buf);
    c->gen = st->gen;
    return pl_buf_str(&c->buf);
}

size_t pl_stanza_memory(const struct pl_stanza *st)
{
    size_t n = sizeof(*st) + st->arena_size + st->cache.buf.cap;
    for (const struct chunk *c = st->cur; c != &st->first; c = c->prev)
        n += sizeof(*c);
    for (const struct cache *e = st->cache.next; e; e = e->next)
        n += sizeof(*e) + e->buf.cap;
    return n;
}
