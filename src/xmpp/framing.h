/*
 * framing.h - the XML stream framing that every XMPP stream shares
 * (RFC 6120 §4): the stream header, stream ids, which top-level elements
 * are stanzas, and the stream error that ends a stream.
 *
 * A stream kind is told apart by its content namespace (§4.8.2):
 * jabber:client (c2s.c), jabber:server (s2s_out.c, s2s_in.c), and
 * jabber:component:accept for an XEP-0114 component stream, which answers
 * with pl_stream_header(b, PL_NS_COMPONENT, domain, NULL, id, 0) (no
 * version attribute: XEP-0114 streams predate XMPP 1.0) and takes
 * pl_stream_is_stanza(root, PL_NS_COMPONENT) for its stanzas.
 *
 * Extending: a new header attribute or namespace declaration is a flag of
 * enum pl_stream_flags, written in a fixed place so that existing headers
 * keep their bytes; negotiation (features, TLS, SASL) stays with each
 * stream kind.
 */
#ifndef PL_FRAMING_H
#define PL_FRAMING_H

#include <stddef.h>

#include "buf.h"
#include "str.h"
#include "stanza.h"

/* XEP-0114: the content namespace of a component's stream. */
#define PL_NS_COMPONENT "jabber:component:accept"

enum pl_stream_flags {
    PL_STREAM_V1 = 1 << 0,       /* version='1.0' (RFC 6120 §4.7.5) */
    PL_STREAM_LANG = 1 << 1,     /* xml:lang='en' (§4.7.4) */
    PL_STREAM_DIALBACK = 1 << 2, /* xmlns:db='jabber:server:dialback'
                                  * (XEP-0220) */
};

/*
 * Appends an XML declaration and a stream header to b:
 *   <?xml version='1.0'?><stream:stream xmlns='content_ns'
 *   xmlns:stream='http://etherx.jabber.org/streams' [xmlns:db='...']
 *   [version='1.0'] [xml:lang='en'] [id='id'] [from='from'] [to='to']>
 * in that order, the optional parts as flags (enum pl_stream_flags) and
 * non-NULL arguments ask.  from, to and id are escaped.
 */
void pl_stream_header(struct pl_buf *b, const char *content_ns,
                      const char *from, const char *to, const char *id,
                      unsigned flags);

/*
 * Writes a fresh stream id to out (RFC 6120 §4.7.3: unique and hard to
 * guess): (n - 1) / 2 random bytes, at most 16, as lowercase hex, then a
 * NUL.  n must be at least 1.
 */
void pl_stream_id(char *out, size_t n);

/*
 * Whether root, a top-level element received on a stream, is a stanza of
 * that stream: <message/>, <presence/> or <iq/> qualified by the stream's
 * content namespace (RFC 6120 §8).  The same names in another namespace
 * (a jabber:server <message/> on a client stream) are not; the caller
 * decides between <invalid-namespace/> and <unsupported-stanza-type/>
 * (§4.9.3).
 */
int pl_stream_is_stanza(const struct pl_node *root, const char *content_ns);

/*
 * Appends the end of a stream with an RFC 6120 §4.9.3 error:
 * <stream:error><cond/>[<text>text</text>]</stream:error></stream:stream>
 * (every stream kind alike).  text may be NULL.
 */
void pl_stream_error_xml(struct pl_buf *b, const char *cond, const char *text);
/* The same without the stream's end: the <stream:error/> element alone. */
void pl_stream_error_elem(struct pl_buf *b, const char *cond, const char *text);

/*
 * An element the stream writes in pieces v[0..n) (v[0] starts with '<'
 * and its name), to be sent as a standalone document (RFC 7395 §3.3.3,
 * XEP-0206 §5): returns the namespace declaration to insert after the
 * name, at byte *k of v[0], or "": xmlns='jabber:client' for a stanza
 * without an xmlns, xmlns:stream='...' for stream:* without one.
 */
const char *pl_stream_standalone_ns(const struct pl_str *v, int n, size_t *k);

struct pl_conn;

/*
 * Refuses a connection over a limit (struct pl_protocol.refuse, listen.h):
 * writes a stream header for content_ns from `from` (flags as for
 * pl_stream_header) and the stream error RFC 6120 names for why:
 * <policy-violation/> for PL_REFUSE_PER_IP (§4.9.3.14), otherwise
 * <resource-constraint/> (§4.9.3.18).  The core closes the connection once
 * the bytes are out.
 */
void pl_stream_refuse(struct pl_conn *conn, const char *content_ns,
                      const char *from, unsigned flags, int why);

#endif
