/*
 * hook.h - named events and their handlers, per virtual host.
 *
 * Events are named like paths: "iq-get/host/urn:xmpp:ping:ping",
 * "message/bare", "stream-features", "user/deleted" (doc/events.md lists
 * them all).  Handlers run in priority order, highest first, and return:
 *   PL_PASS     let the next handler run
 *   PL_HANDLED  stop; the event is dealt with
 *   PL_PENDING  stop; the handler keeps references and finishes later
 *   < 0         a PL_E* error the core turns into the matching XMPP error
 */
#ifndef PL_HOOK_H
#define PL_HOOK_H

#include "jid.h"
#include "stanza.h"

#define PL_PASS 0
#define PL_HANDLED 1
#define PL_PENDING 2

struct pl_host;
struct pl_session;

struct pl_event {
    const char *name;           /* event being fired */
    struct pl_host *host;       /* host the event belongs to */
    struct pl_session *session; /* originating session, or NULL */
    struct pl_stanza *stanza;   /* borrowed; ref it to keep it */
    const struct pl_jid *from;  /* stanza's (stamped) sender, or NULL */
    const struct pl_jid *to;    /* stanza's addressee, or NULL */
    void *data;                 /* event-specific, see doc/events.md */
};

typedef int pl_hook_fn(struct pl_event *ev, void *state);

/*
 * ev->data of "user/data-changed" (a module changed an account's data
 * that other cluster nodes may hold in a cache: fired after the write
 * committed) and of "user/data-changed-elsewhere" (another node's module
 * did; fired by the cluster, doc/cluster.md).  The payload is the
 * module's own text, saying what changed so a cache can follow without
 * reading the store again.
 */
struct pl_data_change {
    const char *module;  /* the module's name: who reads the payload */
    const char *bare;    /* the account, or a host's domain (server-wide) */
    const char *payload; /* what changed, in the module's words */
    size_t len;
};

/*
 * Whether the stanza of ev comes from the account it is addressed to: a
 * user's request to their own bare JID (or with no 'to', which the router
 * fills with the sender's bare JID, RFC 6120 §10.3.3).  The test private
 * storage, vCards, PEP and push registrations share for "own data".
 */
int pl_event_is_self(const struct pl_event *ev);

struct pl_hook_def {
    const char *event; /* event name */
    pl_hook_fn *fn;    /* handler */
    int priority;      /* higher runs first; default 0 */
};

/* Adds a handler with its state pointer. */
void pl_hook_add(struct pl_host *h, const char *event, pl_hook_fn *fn,
                 int priority, void *state);
/* Fires ev->name on ev->host; returns the first non-PASS result or PASS. */
int pl_hook_fire(struct pl_event *ev);
/* Whether any handler is registered for event on h. */
int pl_hook_has(struct pl_host *h, const char *event);
/* Frees every handler list of h. */
void pl__hook_clear(struct pl_host *h);

#endif
