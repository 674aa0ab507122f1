/*
 * sm.h - stream management (XEP-0198) for one session, independent of
 * the transport: counters, the queue of unacknowledged stanzas, durable
 * copies of the messages in it, and what happens to them when the session
 * finally ends.  c2s.c drives it (enable, <r/>, <a/>, resumption);
 * another transport (websocket, BOSH) would drive it the same way.
 *
 * Inbound: each stanza the client sends is wrapped in a durability
 * barrier (storage.h); h counts a stanza as handled only once every
 * storage write its handling caused has committed, so an <a h/> the
 * server sends is a promise that survives a crash.
 *
 * Outbound: every stanza sent is kept (a reference) until the client
 * acknowledges it.  With durable on, chat and normal messages are also
 * written to the account's "sm" store in the sender's barrier; the client's
 * ack deletes them.  When the session ends unacknowledged messages are
 * routed again to the bare JID (another resource or offline storage) and
 * IQ requests get <service-unavailable/>; after a crash pl_sm_recover does
 * the same from the "sm" store.
 *
 * Extending: a new counter or flag goes in struct pl_sm (sm.c).
 */
#ifndef PL_SM_H
#define PL_SM_H

#include <stddef.h>
#include <stdint.h>

#include "resources.h"
#include "stanza.h"

#define PL_NS_SM "urn:xmpp:sm:3"

struct pl_barrier;

/* How the transport writes bytes; connected() says whether it can now. */
struct pl_sm_io {
    void (*write)(struct pl_session *s, const char *p, size_t n);
    int (*connected)(struct pl_session *s);
    /* Too many unacknowledged stanzas: the transport ends the stream. */
    void (*overflow)(struct pl_session *s);
};

/*
 * Enables stream management on the bound session s (s->sm set).  resume
 * asks for resumption; max is the client's wish in seconds (0: none).
 * Writes <enabled/>.
 */
void pl_sm_enable(struct pl_session *s, const struct pl_sm_io *io, int resume,
                  long max);
/* The resumption id, or NULL if the session cannot be resumed. */
const char *pl_sm_id(const struct pl_sm *sm);
/* Seconds the session may wait for resumption. */
long pl_sm_max(const struct pl_sm *sm);
/* Whether half the unacknowledged stanzas allowed are out. */
int pl_sm_congested(const struct pl_sm *sm);

/* Around the handling of one inbound stanza (see the file comment). */
struct pl_barrier *pl_sm_in_begin(struct pl_session *s);
void pl_sm_in_end(struct pl_barrier *b);
/* The client's <r/>: writes <a h/>. */
void pl_sm_request(struct pl_session *s);
/* The count of handled inbound stanzas (for <a/> and <resumed/>). */
uint32_t pl_sm_handled(const struct pl_sm *sm);
/* Inbound stanzas whose writes have not all committed yet. */
size_t pl_sm_pending(const struct pl_sm *sm);

/* Sends st (borrowed) through the queue; writes it if connected. */
void pl_sm_send(struct pl_session *s, struct pl_stanza *st);
/*
 * The client acknowledged h stanzas.  PL_EINVAL if h is more than was
 * sent (the caller ends the stream with <handled-count-too-high/>; sent
 * gets the count); otherwise acked stanzas are dropped and, if some remain,
 * a new <r/> is written.
 */
int pl_sm_ack(struct pl_session *s, uint32_t h, uint32_t *sent);
/* After resumption: writes every unacknowledged stanza again, then <r/>. */
void pl_sm_resend(struct pl_session *s);

/*
 * The session ended for good (after session/closed): unacknowledged
 * messages are routed again, IQ requests bounced, the rest dropped; frees
 * s->sm and sets it NULL.
 */
void pl_sm_end(struct pl_session *s);

/* Server start: routes the messages that a crash left in "sm" stores. */
void pl_sm_recover(void);

#endif
