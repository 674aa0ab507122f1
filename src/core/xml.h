/*
 * xml.h - the streaming XML parser for XMPP streams (expat underneath).
 *
 * It reads the restricted XML of RFC 6120 §11: the stream header (depth 1)
 * is reported on its own, each depth-2 element is delivered as a complete
 * struct pl_stanza, and the closing stream tag is reported.  Refused with a
 * stream error: DTDs and DOCTYPE, entity declarations, processing
 * instructions, comments (restricted-xml), any encoding other than UTF-8
 * (unsupported-encoding), an XML declaration of a version other than 1.0
 * (bad-format), malformed XML, unbound prefixes and invalid UTF-8
 * (not-well-formed), and stanzas over the configured size or nesting depth
 * (policy-violation).  Whitespace between stanzas (keepalives) is ignored;
 * other text at depth 1, and any CDATA section there (even an empty one),
 * is bad-format (RFC 6120 §11.7 allows only whitespace between them).
 *
 * Callbacks run inside pl_xml_parser_feed().  A callback may call
 * pl_xml_parser_stop(): feed then returns after that event and the rest of
 * the bytes given to feed are discarded (required after STARTTLS and SASL
 * success, when the peer must wait; pipelined bytes are an attack).  After an
 * error callback, feed returns the error and the parser accepts no more
 * input until reset.
 *
 * After stop, feed discards everything (returning PL_OK) until reset.
 * pl_xml_parser_reset may also be called from a callback: it takes effect
 * when the callback returns, and the rest of that feed's bytes are dropped
 * (so stop-then-reset and reset alone behave the same).  Callbacks must not
 * call pl_xml_parser_feed or pl_xml_parser_free (asserted).
 *
 * Ownership: stanza callbacks receive a new reference they must unref (or
 * keep).  The stream header passed to stream_open is borrowed for the
 * duration of the call, as is the error text.
 *
 * What a stanza looks like: elements carry their namespace as received
 * ("" when none; stanzas on a c2s stream are in jabber:client, on s2s in
 * jabber:server); adjacent character data is one text node.  The stream
 * header also carries its namespace declarations as attributes: xmlns='x'
 * as attribute "xmlns" with no namespace (pl_node_attr(root, "xmlns") is
 * the content namespace), xmlns:p='x' as attribute p in namespace
 * "http://www.w3.org/2000/xmlns/" (xmlns:db for XEP-0220).  The serializer
 * skips such attributes.
 *
 * Limits: max_stanza_size counts a depth-2 element's bytes from its start
 * tag through its end tag; it also bounds the stream header and any tag
 * still open between stanzas, and is checked at least every 16 KiB of
 * input, so a huge unterminated tag is refused without being buffered.
 * Whatever the limits, a single tag over 64 KiB is a policy-violation (it
 * caps expat's rescanning of partial tokens).  A max_depth of n allows the
 * stanza element plus n - 1 levels below it.  New limits apply from the
 * next stanza.
 */
#ifndef PL_XML_H
#define PL_XML_H

#include <stddef.h>

#include "stanza.h"

enum pl_xml_error {
    PL_XML_NOT_WELL_FORMED = 1,  /* <not-well-formed/> */
    PL_XML_RESTRICTED_XML,       /* <restricted-xml/> */
    PL_XML_POLICY_VIOLATION,     /* <policy-violation/>: size or depth */
    PL_XML_UNSUPPORTED_ENCODING, /* <unsupported-encoding/> */
    PL_XML_BAD_FORMAT,           /* <bad-format/> */
};

/* The RFC 6120 §4.9.3 condition element name for err. */
const char *pl_xml_error_condition(enum pl_xml_error err);

struct pl_xml_limits {
    size_t max_stanza_size; /* bytes of one depth-2 element, 0 = no limit */
    unsigned max_depth;     /* nesting below the stream element, 0 = none */
};

struct pl_xml_callbacks {
    /* The stream header; header's root carries its name, ns and attrs. */
    void (*stream_open)(void *ud, struct pl_stanza *header);
    /* A complete depth-2 element; takes ownership of st. */
    void (*stanza)(void *ud, struct pl_stanza *st);
    /* </stream:stream> was read. */
    void (*stream_close)(void *ud);
    /* Fatal error; text is a short diagnostic for logs. */
    void (*error)(void *ud, enum pl_xml_error err, const char *text);
};

struct pl_xml_parser;

/* limits and cb are copied; ud is passed to every callback. */
struct pl_xml_parser *pl_xml_parser_new(const struct pl_xml_limits *limits,
                                        const struct pl_xml_callbacks *cb,
                                        void *ud);
void pl_xml_parser_free(struct pl_xml_parser *p);
/* Changes the ud passed to callbacks (a stream handed to another owner,
 * as in XEP-0198 resumption); allowed from a callback. */
void pl_xml_parser_set_ud(struct pl_xml_parser *p, void *ud);
/* The ud callbacks get now (after a callback may have changed it). */
void *pl_xml_parser_ud(const struct pl_xml_parser *p);
/* Updates limits (takes effect for the next stanza). */
void pl_xml_parser_set_limits(struct pl_xml_parser *p,
                              const struct pl_xml_limits *limits);
/*
 * Parses len bytes.  Returns PL_OK, or PL_EINVAL after the error callback
 * fired (now or earlier).
 */
int pl_xml_parser_feed(struct pl_xml_parser *p, const char *data, size_t len);
/* From a callback: stop after this event, discarding the rest of the input. */
void pl_xml_parser_stop(struct pl_xml_parser *p);
/* Forgets all state; the next byte starts a new document (stream restart). */
void pl_xml_parser_reset(struct pl_xml_parser *p);
/*
 * Memory diet for idle streams: between stanzas, frees the expat parser
 * (about 10 KiB) and keeps only the stream header's start tag; the next
 * feed builds a fresh parser and replays that tag silently, so namespace
 * context is unchanged.  Naps only when the parser is exactly between two
 * children of the stream element with nothing pending: the last thing read
 * was the stream header, a stanza's end or whitespace, and it ended the
 * input so far.  Returns 1 if it napped, 0 if it could not (inside a
 * stanza, a token or construct unfinished, after an error or stop, inside
 * a callback, or outside the stream element).
 */
int pl_xml_parser_nap(struct pl_xml_parser *p);
/* Gives back the parser pages this thread keeps for new parsers beyond a
 * few (a login storm's) when none was reused since the last call: the
 * storm is over (naps call it; so does c2s's 10 s timer). */
void pl_xml_spares_trim(void);
/* Whether the parser is where it could nap: exactly between two children
 * of the stream element, nothing pending (framed transports check that a
 * message held whole elements only). */
int pl_xml_parser_between(const struct pl_xml_parser *p);

/*
 * Parses one complete XML element (tests, config snippets) into a new
 * stanza (*out gets a new reference), with the same restrictions and no size
 * or depth limit.  PL_EINVAL on any error, *out untouched.
 */
int pl_xml_parse_fragment(const char *data, size_t len, struct pl_stanza **out);
/*
 * The same for documents from the network (a SIP PIDF body): limits bound
 * the element's bytes (max_stanza_size, counted from its start tag) and its
 * nesting (max_depth counts the root as 1); 0 means no limit, and a single
 * tag over 64 KiB is refused whatever they say.  PL_EINVAL on any error or
 * limit, *out untouched.
 */
int pl_xml_parse_fragment_limited(const char *data, size_t len,
                                  const struct pl_xml_limits *limits,
                                  struct pl_stanza **out);

/* Internal, for tests: bytes handed to expat since creation or reset. */
unsigned long long pl__xml_parser_bytes(const struct pl_xml_parser *p);

#endif
