/*
 * mam.h - the pure parts of the message archive (XEP-0313): the query
 * (data form filter of §4.1 and the XEP-0059 <set/>), XEP-0082 times,
 * and the archiving preferences (<prefs/>, XEP-0441 in urn:xmpp:mam:2)
 * with the decision whether a message with a peer is archived.  No I/O:
 * mod_mam.c does the routing and storage; tests/unit/test_mam.c tests
 * these on their own.  Two helpers serve both archives (users' in
 * mod_mam.c, rooms' in muc/archive.c): pl_mam_result builds one <result/>
 * message, pl_mam_query_keys turns a query's ids into archive keys on the
 * storage thread.
 */
#ifndef PL_MAM_H
#define PL_MAM_H

#include "core/modapi.h"

#define PL_NS_MAM "urn:xmpp:mam:2"
#define PL_NS_MAM_EXT "urn:xmpp:mam:2#extended"
#define PL_NS_RSM "http://jabber.org/protocol/rsm"
#define PL_NS_XDATA "jabber:x:data"

/* A parsed archive query.  Strings are owned (pl_mam_query_free). */
struct pl_mam_query {
    char *queryid;        /* echoed in each <result/>, or NULL */
    char *with;           /* bare JID (normalized), or NULL */
    char *with_res;       /* resource when 'with' was a full JID */
    long long start, end; /* µs since the epoch, 0 if absent */
    char *after_id;       /* form 'after-id', or NULL */
    char *before_id;      /* form 'before-id', or NULL */
    char **ids;           /* form 'ids' values */
    int nids;
    long max;     /* RSM <max/>, -1 if absent */
    char *after;  /* RSM <after/>, or NULL */
    char *before; /* RSM <before/> text ("" = last page), or NULL */
    int flip;     /* <flip-page/> (extended) */
};

/*
 * Reads the <query/> element q of st into out.  Returns PL_OK, or
 * PL_EBAD_REQUEST (a malformed value: a bad JID or time, a FORM_TYPE other
 * than urn:xmpp:mam:2, a non-numeric <max/>) or PL_EFEATURE_NOT_IMPLEMENTED
 * (a field or RSM element not supported: XEP-0313 §4.1.5, XEP-0059 <index/>)
 * with *text naming the problem; out is then empty.
 */
int pl_mam_query_parse(struct pl_stanza *st, const struct pl_node *q,
                       struct pl_mam_query *out, const char **text);
void pl_mam_query_free(struct pl_mam_query *q);

/*
 * The <message to from?><result queryid? id><forwarded><delay/>item
 * </forwarded></result></message> of XEP-0313 §4.2 for archived item it
 * (from may be NULL: the server's own).  Returns a new reference, or NULL
 * if the stored XML does not parse.
 */
struct pl_stanza *pl_mam_result(const char *to, const char *from,
                                const char *queryid,
                                const struct pl_archive_item *it);
/*
 * Storage thread: fills aq's bounds (after-id, before-id, RSM after and
 * before) from q's stanza-ids in archive (host, owner, kind), and checks
 * that every id of q->ids exists.  PL_EITEM_NOT_FOUND for an unknown id
 * (XEP-0313 §4.1.3), another error from the driver, or PL_OK.
 */
int pl_mam_query_keys(const struct pl_storage_driver *d, void *db,
                      const char *host, const char *owner, int kind,
                      const struct pl_mam_query *q,
                      struct pl_archive_query *aq);

/* One page of results (XEP-0313 §4.3), built on the storage thread. */
struct pl_mam_page {
    struct pl_stanza **msgs; /* <result/> messages, in page order */
    char **sids;             /* their stanza-ids */
    long n;                  /* results */
    int complete;            /* the page reaches the end of the set */
    long count;              /* RSM <count/>, -1 when too costly */
};

/*
 * Storage thread: the page of query q (at most max results) of archive
 * (host, owner, kind), counting up to count_cap for <count/>; results are
 * addressed to `to` from `from` (pl_mam_result).  PL_OK, or an error of
 * pl_mam_query_keys or of the driver (page then empty).
 */
int pl_mam_page_run(const struct pl_storage_driver *d, void *db,
                    const char *host, const char *owner, int kind,
                    const struct pl_mam_query *q, long max, long count_cap,
                    const char *to, const char *from, struct pl_mam_page *page);
void pl_mam_page_free(struct pl_mam_page *page);
/* The answer to a query form request (XEP-0313 §4.1.5): the fields both
 * archives understand.  Returns a new reference. */
struct pl_stanza *pl_mam_form(struct pl_stanza *iq);
/* The IQ result ending a query: <fin complete?><set first last count/>. */
struct pl_stanza *pl_mam_fin(struct pl_stanza *iq, const struct pl_mam_query *q,
                             const struct pl_mam_page *page);

/* XEP-0082 DateTime ("2010-07-10T23:08:25.123Z", "...+02:00") to µs since
 * the epoch; PL_EINVAL if malformed. */
int pl_mam_time_parse(const char *s, long long *us);
/* µs since the epoch as XEP-0082 DateTime in UTC with microseconds. */
void pl_mam_time_format(long long us, char *buf, size_t n);

enum pl_mam_default {
    PL_MAM_ALWAYS = 0, /* archive every message */
    PL_MAM_NEVER,      /* archive none */
    PL_MAM_ROSTER,     /* only with contacts in the roster */
};

/* Archiving preferences.  JIDs are normalized, owned. */
struct pl_mam_prefs {
    int def;       /* enum pl_mam_default */
    char **always; /* always archived with these */
    int nalways;
    char **never; /* never archived with these */
    int nnever;
};

/* Reads a <prefs/> element; PL_EBAD_REQUEST if its default or a <jid/>
 * is not valid, or a list is longer than max_jids. */
int pl_mam_prefs_parse(struct pl_stanza *st, const struct pl_node *el,
                       long max_jids, struct pl_mam_prefs *out);
/* Adds <prefs xmlns='urn:xmpp:mam:2' .../> under parent. */
void pl_mam_prefs_build(const struct pl_mam_prefs *p, struct pl_stanza *st,
                        struct pl_node *parent);
void pl_mam_prefs_free(struct pl_mam_prefs *p);
/* Name of a default ("always", "never", "roster"); -1 if unknown. */
const char *pl_mam_default_name(int def);
int pl_mam_default_parse(const char *s);

/*
 * Whether a message with peer (full or bare JID, normalized) is archived:
 * 1 yes, 0 no, -1 only if the peer is in the roster (the caller decides).
 * A <jid/> in a list matches the peer's bare JID, its full JID, or, for a
 * domain-only entry, any JID of that domain.  A peer in both lists is
 * not archived: the safer reading for privacy.
 */
int pl_mam_prefs_decide(const struct pl_mam_prefs *p, const char *peer);

#endif
