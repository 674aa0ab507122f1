/*
 * stanza.h - XML element trees and reference-counted stanzas.
 *
 * A struct pl_stanza owns one element tree whose nodes, names and strings
 * all live in the stanza's arena (a few large chunks, freed at once), so a
 * parsed stanza costs a handful of allocations however many elements it has.
 * Stanzas are reference counted: the router hands the same stanza to every
 * recipient, and the serialized form is cached, so a broadcast to N
 * sessions serializes once.  Any mutation (pl_stanza_set_attr, adding a
 * child, ...) drops the cache.
 *
 * Namespaces are resolved: every element carries its namespace URI; prefixes
 * are not kept.  The serializer writes an xmlns attribute only where an
 * element's namespace differs from its parent's.  Elements in the content
 * namespaces "jabber:client" and "jabber:server" are written in the
 * namespace of the stream they go to (the `stream_ns` argument), so the
 * same stanza can go to a client or a server stream unchanged.
 *
 * Ownership: pl_stanza_new/pl_stanza_copy return a new reference;
 * pl_stanza_ref adds one; pl_stanza_unref drops one and frees at zero.
 * Nodes are borrowed from their stanza and live as long as it does.
 * The reference count is atomic, so a reference may be dropped on another
 * thread; everything else (building, reading while another thread writes,
 * serializing) is single-threaded.  A stanza that others hold references
 * to is shared: copy it (pl_stanza_copy) before changing it.
 *
 * Serializer details.  jabber:client, jabber:server and stream_ns count as
 * one namespace, so a content-namespace element inside another one gets no
 * xmlns; but one under a foreign parent keeps its own (a XEP-0297
 * <forwarded/> message stays jabber:client on any stream).  Attributes in
 * other namespaces get generated prefixes declared on their element
 * (xmlns:ns1='uri' ns1:name='v'), those in PL_NS_XML are written xml:name,
 * and attributes that are namespace declarations (name "xmlns" without
 * namespace, or in "http://www.w3.org/2000/xmlns/", as the parser reports
 * them on stream headers) are not written.  Elements in PL_NS_XML keep the
 * xml: prefix; elements in PL_NS_STREAMS get a default namespace
 * declaration, not the stream: prefix.  Values are escaped for single
 * quotes; \r (and in attributes \t, \n) become character references so
 * they survive a round trip; other C0 control characters, which XML 1.0
 * cannot carry, become U+FFFD.  Strings must be valid UTF-8.
 *
 * Extending: add accessors here, keep every allocation in the arena.
 */
#ifndef PL_STANZA_H
#define PL_STANZA_H

#include <stddef.h>

#include "buf.h"
#include "str.h"

#define PL_NS_CLIENT "jabber:client"
#define PL_NS_SERVER "jabber:server"
#define PL_NS_STREAMS "http://etherx.jabber.org/streams"
#define PL_NS_XML "http://www.w3.org/XML/1998/namespace"
#define PL_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define PL_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"

struct pl_attr {
    const char *name;     /* local name, NUL-terminated */
    const char *ns;       /* namespace URI, NULL when none (the usual case) */
    const char *value;    /* NUL-terminated value */
    struct pl_attr *next; /* next attribute of the same element */
};

enum pl_node_type {
    PL_NODE_ELEMENT = 1,
    PL_NODE_TEXT = 2,
};

struct pl_node {
    enum pl_node_type type; /* element or text */
    struct pl_node *parent; /* NULL for the root */
    struct pl_node *next;   /* next sibling, NULL at the end */
    /* Elements only: */
    const char *name;         /* local name */
    const char *ns;           /* namespace URI, "" when none */
    struct pl_attr *attrs;    /* attribute list, in document order */
    struct pl_node *children; /* first child (element or text) */
    struct pl_node *last;     /* last child, for O(1) append */
    /* Text only: */
    const char *text; /* character data, NUL-terminated */
    size_t text_len;  /* length in bytes, without the NUL */
};

struct pl_stanza; /* opaque: refcount, arena, root, serialization cache */

/* New stanza whose root element is name in namespace ns. */
struct pl_stanza *pl_stanza_new(const char *name, const char *ns);
/* Deep copy with a fresh arena and refcount 1. */
struct pl_stanza *pl_stanza_copy(const struct pl_stanza *st);

/* Marks: facts the server keeps with a stanza (copied with it, never
 * serialized). */
#define PL_STANZA_ACCEPTED                                                     \
    1u /* accepted for delivery before: routed again
                               * (an unacknowledged message of a session
                               * that ended or of a server that stopped),
                               * so no admission limit refuses it again */
unsigned pl_stanza_marks(const struct pl_stanza *st);
void pl_stanza_mark(struct pl_stanza *st, unsigned marks);
struct pl_stanza *pl_stanza_ref(struct pl_stanza *st); /* returns st */
void pl_stanza_unref(struct pl_stanza *st);            /* NULL is fine */
struct pl_node *pl_stanza_root(const struct pl_stanza *st);

/* Shortcuts on the root element. */
const char *pl_stanza_name(const struct pl_stanza *st);
const char *pl_stanza_attr(const struct pl_stanza *st, const char *name);
/* Sets (or with value NULL removes) an attribute of the root. */
void pl_stanza_set_attr(struct pl_stanza *st, const char *name,
                        const char *value);

/* Attribute of any element (no namespace); NULL if absent. */
const char *pl_node_attr(const struct pl_node *el, const char *name);
/* Attribute in namespace ns (for example PL_NS_XML, "lang"). */
const char *pl_node_attr_ns(const struct pl_node *el, const char *ns,
                            const char *name);
void pl_node_set_attr(struct pl_stanza *st, struct pl_node *el,
                      const char *name, const char *value);
/* First child element matching name and ns; either may be NULL for any. */
struct pl_node *pl_node_child(const struct pl_node *el, const char *name,
                              const char *ns);
/* Iteration over child elements only (text skipped). */
struct pl_node *pl_node_first_elem(const struct pl_node *el);
struct pl_node *pl_node_next_elem(const struct pl_node *el);
/* Number of child elements. */
size_t pl_node_count_elems(const struct pl_node *el);
/*
 * Concatenated text content of el's direct text children.  Returns a
 * pointer into the arena (allocating there only if there are several text
 * nodes, that is mixed content, on every call); "" if none.  *len may be
 * NULL.  For a text node, its own text.  Not a mutation.
 */
const char *pl_node_text(struct pl_stanza *st, const struct pl_node *el,
                         size_t *len);

/*
 * Builders.  The new node is appended as the last child of parent.  ns NULL
 * means no namespace (""); a child in its parent's namespace shares the
 * parent's string.  pl_node_add_text appends to parent's last child when
 * that is text, so adjacent text is always one node; len 0 adds nothing.
 */
struct pl_node *pl_node_add_child(struct pl_stanza *st, struct pl_node *parent,
                                  const char *name, const char *ns);
void pl_node_add_text(struct pl_stanza *st, struct pl_node *parent,
                      const char *text, size_t len);
/* Deep-copies src (from any stanza, even an ancestor of parent) under
 * parent in st.  Returns the new node (for text: the text node it ended
 * up in). */
struct pl_node *pl_node_add_copy(struct pl_stanza *st, struct pl_node *parent,
                                 const struct pl_node *src);
/* Unlinks el from its parent (memory stays in the arena until freed). */
void pl_node_remove(struct pl_stanza *st, struct pl_node *el);
/* Copies a string into st's arena. */
const char *pl_stanza_strdup(struct pl_stanza *st, const char *s, size_t len);

/*
 * Serialized form for a stream whose default namespace is stream_ns
 * (PL_NS_CLIENT or PL_NS_SERVER; see the file comment; NULL means
 * PL_NS_CLIENT).  The result is cached in the stanza and valid until the
 * next mutation or unref.  Client and server streams share one cached copy
 * (their output is identical); another stream_ns (a component's) gets its
 * own, so serializing for one stream never invalidates bytes already
 * handed out for another.  Reading and pl_node_text are not mutations.
 */
struct pl_str pl_stanza_serialize(struct pl_stanza *st, const char *stream_ns);
/*
 * Appends el's serialization (same rules) to out, parent namespace pns:
 * the default namespace in scope where el is written.  pns NULL or ""
 * means none, which gives standalone XML (what storage wants: it parses
 * back with pl_xml_parse_fragment).  Not cached.
 */
void pl_node_serialize(const struct pl_node *el, const char *pns,
                       const char *stream_ns, struct pl_buf *out);

/* Approximate bytes held by the stanza (arena + cache), for accounting. */
size_t pl_stanza_memory(const struct pl_stanza *st);

/*
 * Internal, for the parser (xml.c) and tests; modules must not use these.
 */
/* n bytes from the arena, 8-byte aligned, uninitialized. */
void *pl__stanza_alloc(struct pl_stanza *st, size_t n);
/* A stanza without a root whose first arena chunk holds about hint bytes
 * (at least 512); the parser passes about twice the stanza's size. */
struct pl_stanza *pl__stanza_new_sized(size_t hint);
/* A new element in st's arena, linked nowhere. */
struct pl_node *pl__node_new_elem(struct pl_stanza *st, const char *name,
                                  const char *ns);
/* Counted-string pl_node_add_child; parent NULL makes it st's root (st must
 * have none).  ns NULL or empty means no namespace. */
struct pl_node *pl__node_add_elem_n(struct pl_stanza *st,
                                    struct pl_node *parent, const char *name,
                                    size_t name_len, const char *ns,
                                    size_t ns_len);
/* A new unlinked attribute; ns NULL or empty means none.  The caller links
 * it (parsed attributes are appended in document order). */
struct pl_attr *pl__attr_new(struct pl_stanza *st, const char *name,
                             size_t name_len, const char *ns, size_t ns_len,
                             const char *value, size_t value_len);
/* Records the stanza's size on the wire, used to size the cache buffer. */
void pl__stanza_set_wire_size(struct pl_stanza *st, size_t n);

#endif
