/*
 * resources.h - the table of bound sessions: full JID -> session, bare
 * JID -> the account's sessions, and id -> session for completions that
 * must find out whether a session still exists (hold ids, not pointers).
 *
 * A struct pl_session is anything the router can deliver to: today a c2s
 * stream; later a stream-management zombie, a BOSH or websocket session.
 * It carries the RFC 6121 state routing needs (priority, availability).
 */
#ifndef PL_RESOURCES_H
#define PL_RESOURCES_H

#include <stdint.h>

#include "jid.h"
#include "stanza.h"

struct pl_host;
struct pl_session;
struct pl_sm;

struct pl_session_ops {
    /* Delivers st (borrowed: ref it to keep it) to the session's peer. */
    void (*send)(struct pl_session *s, struct pl_stanza *st);
    /* Ends the session with a stream error condition (e.g. "conflict"). */
    void (*kick)(struct pl_session *s, const char *condition,
                 const char *text);
    /* Delivers st, which has no 'to' attribute, as if it had to='to' (the
     * router's fan-out: one serialization for every recipient).  NULL:
     * the router sends a copy with 'to' set. */
    void (*send_to)(struct pl_session *s, struct pl_stanza *st,
                    const char *to);
};

struct pl_session {
    uint64_t id;                   /* unique for the process lifetime */
    struct pl_jid *jid;            /* full JID once bound, else NULL */
    struct pl_host *host;          /* the account's host */
    const struct pl_session_ops *ops; /* transport */
    int priority;                  /* from the last available presence */
    unsigned available : 1;        /* sent available presence */
    unsigned interested : 1;       /* requested the roster (RFC 6121) */
    unsigned registered : 1;       /* in the table */
    struct pl_stanza *presence;    /* last broadcast presence, or NULL */
    struct pl_session *next_res;   /* next session of the same account */
    void *impl;                    /* transport's own state */
    struct pl_sm *sm;              /* XEP-0198 state (sm.h), or NULL */
    /* Output filter (XEP-0352 client state, mod_csi), or NULL: returns 1
     * if it took st (and refs what it keeps), 0 to let it through. */
    int (*filter)(struct pl_session *s, struct pl_stanza *st);
    void *mod[8];                  /* per-session slots for modules,
                                    * indexed by PL_SLOT_* below */
};

/* Owners of struct pl_session.mod[] (one per module that needs one). */
enum {
    PL_SLOT_PRESENCE = 0, /* mod_presence: directed presence, flags */
    PL_SLOT_OFFLINE = 1,  /* mod_offline: delivered for this session */
    PL_SLOT_CARBONS = 2,  /* mod_carbons: enabled (XEP-0280) */
    PL_SLOT_CSI = 3,      /* mod_csi: inactive queue (XEP-0352) */
    PL_SLOT_PUSH = 4,     /* mod_push: enabled app server (XEP-0357) */
    PL_SLOT_CAPS = 5,     /* mod_pep: entity caps / +notify (XEP-0115) */
    PL_SLOT_MAM = 6,      /* mod_mam: per-session query state */
    PL_SLOT_SPARE = 7,    /* free */
};

/* Gives s a fresh id (before it is used anywhere). */
void pl_session_init(struct pl_session *s);
/* Enters a bound session; PL_ECONFLICT if its full JID is taken,
 * PL_ERESOURCE_CONSTRAINT past max resources. */
int pl_session_register(struct pl_session *s, int max_resources);
void pl_session_unregister(struct pl_session *s);
struct pl_session *pl_session_by_full(const char *full);
/* First session of an account; continue with s->next_res. */
struct pl_session *pl_session_first(const char *bare);
struct pl_session *pl_session_by_id(uint64_t id);
unsigned long pl_session_count(void);

/* Delivers st (borrowed) through the session's filter, if any. */
static inline void pl_session_send(struct pl_session *s, struct pl_stanza *st)
{
    if (s->filter && s->filter(s, st))
        return;
    s->ops->send(s, st);
}

#endif
