/*
 * resources.h - the table of bound sessions: full JID -> session, bare
 * JID -> the account's sessions, and id -> session for completions that
 * must find out whether a session still exists (hold ids, not pointers).
 *
 * A struct pl_session is anything the router can deliver to, whatever
 * front end carries it (struct pl_session_ops is the seam).  It carries
 * the RFC 6121 state routing needs (priority, availability), the output
 * filter chain, and one slot per module (pl_session_ctx).
 */
#ifndef PL_RESOURCES_H
#define PL_RESOURCES_H

#include <stdint.h>

#include "jid.h"
#include "module.h"
#include "stanza.h"

struct pl_host;
struct pl_session;
struct pl_sm;

/*
 * The seam between the router and whatever carries a session: a c2s
 * stream, a stream-managed session waiting for its client, a WebSocket or
 * BOSH session, a SIP registration.  Routing, presence, rosters, offline
 * storage, carbons and archives use only these.
 */
struct pl_session_ops {
    /* Delivers st (borrowed: ref it to keep it) to the session's peer,
     * after the output filters. */
    void (*deliver)(struct pl_session *s, struct pl_stanza *st);
    /* Ends the session, saying why with a stream error condition
     * ("conflict", "policy-violation"...) the transport maps to its own
     * terms; text may be NULL. */
    void (*close)(struct pl_session *s, const char *condition,
                  const char *text);
    /* Delivers st, which has no 'to' attribute, as if it had to='to' (the
     * router's fan-out: one serialization for every recipient).  NULL:
     * the router sends a copy with 'to' set. */
    void (*deliver_to)(struct pl_session *s, struct pl_stanza *st,
                       const char *to);
    /* Whether the session wants presence and roster pushes (RFC 6121
     * §2.1.6 "interested resource").  NULL: the interested flag says. */
    int (*is_interested)(const struct pl_session *s);
    /* The peer's address ("127.0.0.1"), "" if none now. */
    const char *(*peer_ip)(const struct pl_session *s);
    /* Whether the peer's address is loopback. */
    int (*is_loopback)(const struct pl_session *s);
    /* Whether the transport is encrypted (or declared secure). */
    int (*is_secure)(const struct pl_session *s);
    /* The front end carrying it, for operators (metrics, the admin API):
     * "c2s" (XMPP over TCP), "websocket", "bosh", "sip". */
    const char *(*transport)(const struct pl_session *s);
    /* Whether the session's output is backed up: bytes queued to its
     * socket, or stanzas its client has not acknowledged (XEP-0198), past
     * half of what its limits allow.  A long output (an offline backlog)
     * waits while it is.  NULL: never. */
    int (*congested)(const struct pl_session *s);
};

/*
 * An output filter: every stanza delivered to a session passes its
 * filters, highest priority first, before ops->deliver.  A module joins
 * the chain of one session with pl_session_filter_add, embedding this
 * struct in its per-session state.  fn returns 1 if it took st (and refs
 * what it keeps; it may later pass it on with pl_session_send_after), 0 to
 * let it through.  Priorities in use: 100 CSI (XEP-0352), -1000 stream
 * management (XEP-0198: counts and keeps what finally goes out).
 */
struct pl_session_filter {
    int (*fn)(struct pl_session *s, struct pl_stanza *st,
              struct pl_session_filter *f);
    int priority;                   /* higher runs first */
    struct pl_session_filter *next; /* set by the core */
};

struct pl_session {
    uint64_t id;                       /* unique for the process lifetime */
    struct pl_jid *jid;                /* full JID once bound, else NULL */
    struct pl_host *host;              /* the account's host */
    const struct pl_session_ops *ops;  /* transport */
    int priority;                      /* from the last available presence */
    unsigned available : 1;            /* sent available presence */
    unsigned interested : 1;           /* requested the roster (RFC 6121) */
    unsigned registered : 1;           /* in the table */
    unsigned elsewhere : 1;            /* a copy of a session bound on
                                        * another cluster node (transport
                                        * "cluster", doc/cluster.md): what
                                        * it is sent goes through its node */
    struct pl_stanza *presence;        /* last broadcast presence, or NULL */
    struct pl_session *next_res;       /* next session of the same account */
    void *impl;                        /* transport's own state */
    struct pl_sm *sm;                  /* XEP-0198 state (sm.h), or NULL */
    struct pl_session_filter *filters; /* output filters, or NULL */
    void *ctx[PL_SESSION_SLOTS];       /* per-module state: pl_session_ctx */
};

/* The per-session slot of module name (an lvalue): pl_session_ctx(s, csi)
 * is the slot of pl_mod_csi, listed with PL_MODULE_SESSION in
 * modules.def. */
#define pl_session_ctx(s, name) ((s)->ctx[PL_SLOTIDX_##name])

/* Joins f to s's output filters (by priority); f must not be in it. */
void pl_session_filter_add(struct pl_session *s, struct pl_session_filter *f);
/* Leaves the chain (no-op if f is not in it). */
void pl_session_filter_remove(struct pl_session *s,
                              struct pl_session_filter *f);

/* The peer's address, whether it is loopback, whether the session's
 * transport is secure (through ops; "" / 0 when the transport has none). */
const char *pl_session_ip(const struct pl_session *s);
int pl_session_is_loopback(const struct pl_session *s);
int pl_session_is_secure(const struct pl_session *s);
/* Whether s wants presence and roster pushes (ops or the flag). */
static inline int pl_session_is_interested(const struct pl_session *s)
{
    return s->ops->is_interested ? s->ops->is_interested(s) : s->interested;
}

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
/* Calls fn for each bound session (in no order); fn must not register or
 * unregister sessions. */
void pl_session_each(void (*fn)(struct pl_session *s, void *ud), void *ud);
/* The session's transport name (ops->transport), "other" without one. */
const char *pl_session_transport(const struct pl_session *s);

/* Delivers st (borrowed) through the filters that come after `after`
 * (NULL: all of them), then to the transport. */
static inline void pl_session_send_after(struct pl_session *s,
                                         struct pl_stanza *st,
                                         struct pl_session_filter *after)
{
    for (struct pl_session_filter *f = after ? after->next : s->filters; f;
         f = f->next)
        if (f->fn(s, st, f))
            return;
    s->ops->deliver(s, st);
}

/* Delivers st (borrowed) through the session's output filters. */
static inline void pl_session_send(struct pl_session *s, struct pl_stanza *st)
{
    pl_session_send_after(s, st, NULL);
}

#endif
