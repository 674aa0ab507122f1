/*
 * c2s_int.h - what the files of the c2s stream share; internal to
 * src/xmpp/, not for modules (they see c2s.h).
 *
 * The c2s stream is one object, struct c2s, handled by three files:
 *   c2s.c      stream state machine, features, STARTTLS, resource binding,
 *              timers, accept, lifecycle and the registries of streams
 *   sasl.c     SASL: PLAIN and SCRAM(-PLUS), channel binding, per-address
 *              failure accounting, the storage and worker jobs of logins
 *   c2s_sm.c   the XEP-0198 elements (sm.c keeps the per-session state)
 * Functions shared between them are pl__c2s_*; everything else is static.
 *
 * Extending: a field of struct c2s goes here with a trailing comment; a
 * new concern of the c2s stream gets a file of its own that includes this
 * header, and c2s.c calls it from on_stanza or send_features.
 */
#ifndef PL_C2S_INT_H
#define PL_C2S_INT_H

#include <stdint.h>

#include "buf.h"
#include "c2s.h"
#include "loop.h"
#include "stanza.h"

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"

struct pl_settings;

enum state {
    ST_HEADER = 0, /* waiting for the (re)started stream header */
    ST_FEATURES,   /* header answered; negotiating */
    ST_BOUND,      /* resource bound; routing stanzas */
};

enum mech {
    M_NONE = 0,
    M_PLAIN,
    M_SCRAM_SHA1,
    M_SCRAM_SHA256,
    M_SCRAM_SHA1_PLUS,
    M_SCRAM_SHA256_PLUS,
};

struct c2s {
    struct pl_session sess; /* the routable part; sess.impl == this */
    struct pl_conn *conn;   /* NULL once closed */
    const struct pl_c2s_transport *tr; /* NULL: TCP (c2s.h) */
    void *tdata;                       /* tr's, per stream */
    struct pl_xml_parser *xml;         /* stream parser */
    struct pl_host *host;              /* host named by the stream's 'to' */
    int state;                         /* enum state */
    int tls_mode;                      /* listener's enum pl_tls_mode */
    unsigned secure : 1;               /* TLS is up */
    unsigned proxied : 1;              /* the listener is declared secure (TLS
                                   * ends at a proxy in front, or
                                   * loopback): encrypted for policy, but
                                   * no channel binding */
    unsigned authed : 1;               /* SASL succeeded */
    unsigned header_sent : 1;          /* our stream header is out */
    unsigned closing : 1;              /* stream error or close sent */
    unsigned plus_offered : 1;         /* -PLUS mechanisms were offered */
    unsigned sasl_busy : 1;            /* waiting on storage or a worker */
    unsigned no_resume : 1;            /* ended on purpose: no hibernation */
    unsigned hibernated : 1;           /* XEP-0198: connection gone, session
                                   * kept for resumption */
    unsigned need_root : 1;            /* tr: the parser waits for the
                                   * stream root fed before input */
    unsigned nelems;                   /* tr: elements of the current input */
    unsigned sasl_gen;                 /* SASL exchanges started or aborted */
    int mech;                          /* enum mech in progress */
    int auth_failures;                 /* SASL failures so far */
    struct pl_scram_server *scram;     /* SCRAM exchange in progress */
    char *user;              /* authenticated (or claimed) localpart */
    char cbtype[24];         /* channel binding type of this exchange */
    char id[24];             /* stream id */
    struct pl_timer timer;   /* bound: keepalives, parser naps;
                                   * hibernated: the resumption deadline */
    struct pl_timer rtimer;  /* XEP-0198: a <resume/> waiting */
    char *resume_previd;     /* that <resume/>'s previd */
    uint32_t resume_h;       /* and its h */
    int resume_tries;        /* polls so far */
    uint64_t keepalive_ms;   /* loop time of the last keepalive */
    struct c2s *prev, *next; /* all open streams */
};

/* ---- c2s.c ---- */

/* The settings in force (the front end's start and reload). */
const struct pl_settings *pl__c2s_settings(void);
/* Writes one whole element, s or b's bytes, on c's connection if it has
 * one (through its transport, c2s.h). */
void pl__c2s_out(struct c2s *c, const char *s);
void pl__c2s_out_buf(struct c2s *c, struct pl_buf *b);
void pl__c2s_out_n(struct c2s *c, const char *p, size_t n);
/* Ends the stream (</stream:stream> or the transport's close) and closes
 * the connection; a stream error element, if any, is already written. */
void pl__c2s_end(struct c2s *c);
/* Ends the stream with an RFC 6120 §4.9.3 condition (text may be NULL),
 * preceded by our stream header if it was not sent yet. */
void pl__c2s_stream_error(struct c2s *c, const char *cond, const char *text);
/* Closes the stream (</stream:stream>); the session ends with it. */
void pl__c2s_close_stream(struct c2s *c);
/* Waits for a new stream header (after STARTTLS or SASL success). */
void pl__c2s_restart(struct c2s *c);
/* XEP-0198: the stream whose session has resumption id id, or NULL. */
struct c2s *pl__c2s_resumable_find(const char *id);
/* XEP-0198: registers c under its session's resumption id. */
void pl__c2s_resumable_add(struct c2s *c);
/*
 * XEP-0198 resumption: o, a hibernated session that has just taken c's
 * connection (the two swapped their transports), takes c's place among the
 * open streams and wakes up; c, authenticated but unbound, is freed.
 */
void pl__c2s_take_place(struct c2s *o, struct c2s *c);

/* ---- sasl.c ---- */

/* Appends the <mechanisms/> offered to c (and with -PLUS, the XEP-0440
 * channel-binding types) to b; sets c->plus_offered. */
void pl__c2s_sasl_features(struct c2s *c, struct pl_buf *b);
/* An element in the SASL namespace (<auth/>, <response/>, <abort/>). */
void pl__c2s_on_sasl(struct c2s *c, struct pl_stanza *st);
/* Server stop: forgets the per-address failure counts. */
void pl__c2s_sasl_stop(void);

/* ---- c2s_sm.c ---- */

/* An element in the XEP-0198 namespace on an authenticated stream.  May
 * free c (resumption). */
void pl__c2s_on_sm(struct c2s *c, struct pl_stanza *st);
/*
 * <resume/> on the authenticated, unbound stream c: c's connection moves
 * into the old session o, and c is freed (or, if o's old connection was
 * still open, c takes that one over and closes it with <conflict/>).
 * Tries again later (c->rtimer) while o has writes in flight.
 */
void pl__c2s_resume_try(struct c2s *c, const char *previd, uint32_t h);

/* Whether the stream counts as encrypted for require_encryption and
 * PLAIN: TLS up, or a listener declared secure. */
static inline int pl__c2s_encrypted(const struct c2s *c)
{
    return c->secure || c->proxied;
}

#endif
