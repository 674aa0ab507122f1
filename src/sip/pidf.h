/*
 * pidf.h - presence documents: PIDF (RFC 3863) with RPID (RFC 4480) and the
 * data model (RFC 4479) <-> XMPP presence (RFC 6121 §4), mapped as RFC 8048
 * (which obsoletes RFC 7248) says.  Pure functions: a body in, a struct or
 * a stanza out, and the reverse into a buffer.
 *
 * The neutral form is struct pl_pidf: basic status, <show/>, status text,
 * priority.  SIP -> XMPP: pl_pidf_parse() reads a PUBLISH or NOTIFY body,
 * pl_pidf_to_presence() makes the <presence/>.  XMPP -> SIP:
 * pl_pidf_from_presence() reads a <presence/>, pl_pidf_write() writes the
 * document (one tuple per resource) for a NOTIFY.
 *
 * Reading (RFC 3863 §4): the root must be <presence/> in
 * urn:ietf:params:xml:ns:pidf; elements of unknown names or namespaces are
 * ignored with all their content (§4.2.3), and so is a known extension
 * (RPID <activities/>, XMPP <show/>) holding an unknown element marked
 * mustUnderstand.  Tuples are combined as RFC 8048 §6.2 describes a
 * watcher doing it, "most available" wins: a tuple counts unless it is
 * someone else's (RPID <relationship/> other than <self/>) or reaches a
 * non-IM service (a <contact/> of a scheme other than sip, sips, im, pres
 * or xmpp; when no tuple is left, all count).  The basic status is open if
 * a counted tuple is open, else closed if one is closed, else none (RFC
 * 8048 §5.2.1: no information reads as unavailable).  The most available
 * open tuple (by <show/>, then priority) gives <show/>, priority and the
 * note.  <show/> comes from that tuple's XMPP <show xmlns='jabber:client'/>
 * (RFC 8048 §6.2 note 7) if it has one, else from RPID <activities/> of
 * the <dm:person/> (or, tolerated, of a tuple), else <user-input>idle</>
 * gives away:
 *   dnd   busy, on-the-phone, meeting, appointment, performance,
 *         presentation, worship, steering
 *   xa    vacation, holiday, travel, sleeping, permanent-absence
 *   away  away, breakfast, lunch, dinner, meal, shopping, in-transit,
 *         playing, spectator, tv
 *   (none) working, looking-for-work, unknown, other
 * With several activities the least available wins (dnd > xa > away).
 * The note is, first found: that tuple's <note/>, the document's <note/>,
 * the person's <dm:note/>, the <rpid:note/> or <rpid:other/> of the
 * activities.  Contact priority 0..1 maps to XMPP priority 0..127.
 *
 * Writing: <status><basic/></status> stays alone in <status/> and the
 * XMPP <show/> follows it in the tuple (COMPAT baresip matches
 * "<status>[^<]*<basic>...</basic>[^<]*</status>" and "<note>" literally),
 * the person carries <rpid:away/> (away, xa) or <rpid:busy/> (dnd) with
 * the "rpid" prefix baresip looks for.  Tuple ids are "ID-" and the
 * resource with bytes outside [A-Za-z0-9.-] written _hh (xs:ID, RFC 8048
 * §6.2 note 2); the contact is the resource's sip: URI with ";gr=";
 * priority n >= 0 is floor(n * 1000 / 127) / 1000 (note 6), a negative one
 * is left out; the entity is the pres: URI of the bare JID.
 *
 * Ownership: struct pl_pidf strings are the struct's (pl_pidf_clear);
 * stanzas returned are new references.  On failure nothing is allocated.
 *
 * Extending: another activity is a row in the activity table of pidf.c;
 * another extension a case in read_tuple() or read_person().
 */
#ifndef PL_SIP_PIDF_H
#define PL_SIP_PIDF_H

#include <stddef.h>

#include "buf.h"
#include "jid.h"
#include "stanza.h"
#include "str.h"

#define PL_NS_PIDF "urn:ietf:params:xml:ns:pidf"
#define PL_NS_PIDF_DM "urn:ietf:params:xml:ns:pidf:data-model"
#define PL_NS_RPID "urn:ietf:params:xml:ns:pidf:rpid"
/* The Content-Type of a PIDF body, also the Accept of a 415 (RFC 3856
 * §6.6; COMPAT baresip compares the whole value, so no parameters). */
#define PL_PIDF_CONTENT_TYPE "application/pidf+xml"

enum pl_pidf_basic {
    PL_PIDF_NONE = 0, /* no <basic/> in any counted tuple */
    PL_PIDF_OPEN,     /* available: <presence/> without 'type' */
    PL_PIDF_CLOSED,   /* type='unavailable' */
};

/* XMPP <show/> values (RFC 6121 §4.7.2.1), from most to least available;
 * PL_SHOW_NONE is "available" without a <show/>. */
enum pl_show {
    PL_SHOW_CHAT = 1,
    PL_SHOW_NONE = 0,
    PL_SHOW_AWAY = -1,
    PL_SHOW_XA = -2,
    PL_SHOW_DND = -3,
};

struct pl_pidf {
    enum pl_pidf_basic basic; /* availability */
    enum pl_show show;        /* detail; PL_SHOW_NONE unless basic is open */
    char *note;               /* status text (UTF-8) or NULL */
    char *note_lang;          /* its xml:lang or NULL */
    int priority;             /* 0..127, or -1: none given */
    char *entity;             /* PIDF 'entity' (read only) or NULL */
};

struct pl_pidf_limits {
    size_t max_size;    /* bytes of document; 0: PL_PIDF_MAX_SIZE */
    unsigned max_depth; /* element nesting, root = 1; 0: PL_PIDF_MAX_DEPTH */
    size_t max_note;    /* note bytes kept (cut at a character);
                           0: PL_PIDF_MAX_NOTE */
};
#define PL_PIDF_MAX_SIZE 65536
#define PL_PIDF_MAX_DEPTH 32
#define PL_PIDF_MAX_NOTE 1024

/* The <show/> element text of s ("away"...), NULL for PL_SHOW_NONE. */
const char *pl_show_name(enum pl_show s);
/* The reverse; unknown text is PL_SHOW_NONE. */
enum pl_show pl_show_parse(const char *s);

/*
 * Checks a PUBLISH/NOTIFY Content-Type: PL_OK for application/pidf+xml
 * without a charset or with UTF-8, else PL_ENOT_ACCEPTABLE (answer 415
 * with Accept: PL_PIDF_CONTENT_TYPE).
 */
int pl_pidf_check_type(struct pl_str content_type);

/*
 * Reads the PIDF document doc into *out (see the file comment).  limits
 * may be NULL.  Returns PL_OK; PL_ELIMIT over the size or depth limit
 * (answer 413 or 400); PL_EINVAL if doc is not well-formed restricted XML
 * in UTF-8 (no DTD, comment or processing instruction, as xml.h) or its
 * root is not a PIDF <presence/> (400).
 */
int pl_pidf_parse(struct pl_str doc, const struct pl_pidf_limits *limits,
                  struct pl_pidf *out);
void pl_pidf_clear(struct pl_pidf *p);

/*
 * The <presence/> (jabber:client) for p, from 'from' (the SIP user's full
 * JID), to 'to' (NULL: none, for a broadcast): no 'type' when open,
 * type='unavailable' otherwise; <show/>, <status/> with its xml:lang,
 * <priority/> when p has them (PL_PIDF_NONE counts as closed: RFC 8048
 * §5.2.1).  Returns a new reference, or NULL if from, to or the note hold
 * control characters or bytes that are not UTF-8 (never for JIDs and
 * notes from pl_pidf_parse).
 */
struct pl_stanza *pl_pidf_to_presence(const struct pl_pidf *p, const char *from,
                                      const char *to);

/*
 * Reads an XMPP presence notification into *out: no 'type' is open,
 * 'unavailable' closed (RFC 8048 §6.2 notes 1 and 4), with <show/>, the
 * <status/> in the stanza's language (else the first) and <priority/> (a
 * negative one is not mapped: -1).  PL_EINVAL for any other type
 * (subscriptions and probes are not notifications).
 */
int pl_pidf_from_presence(struct pl_stanza *presence, struct pl_pidf *out);

/* One resource of a presentity, for pl_pidf_write(). */
struct pl_pidf_tuple {
    const struct pl_jid *jid;    /* the resource's full JID */
    const struct pl_pidf *state; /* its presence */
};

/*
 * Appends to out the PIDF document of entity (a bare JID) made of n
 * tuples, in the order given; n == 0 writes one closed tuple (id
 * "offline"), the presentity is unavailable.  The person's activities come
 * from the most available open tuple.  Returns PL_OK, or
 * PL_EJID_MALFORMED if a JID has no SIP form (out is then unchanged).
 */
int pl_pidf_write(const struct pl_jid *entity, const struct pl_pidf_tuple *t,
                  size_t n, struct pl_buf *out);

#endif
