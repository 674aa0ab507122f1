/*
 * comp_sm.h - stream management (XEP-0198) for one component link
 * (component.c): the counters and queues, with no I/O, so the state
 * machine can be tested alone (tests/unit/test_comp_sm.c).
 *
 * A component stream has no stream features (XEP-0114: no version), so
 * the component simply sends <enable/> after the handshake; the server
 * answers <enabled/> (no resumption: another link of the domain, or the
 * same component reconnecting, takes over instead) and from then on:
 *
 *   outbound: every stanza written is kept (pl_csm_sent) until the
 *   component's <a h/> covers it (pl_csm_ack); when the link dies, what is
 *   left (pl_csq_pop on sm->unacked) is sent again on another link.
 *
 *   inbound: each stanza the component sends gets a sequence number
 *   (pl_csm_in_begin) and counts as handled when every storage write it
 *   caused has committed (pl_csm_in_done, possibly out of order); h is the
 *   longest prefix of handled ones, so an <a h/> is a promise.
 *
 * Counters are unsigned 32-bit and wrap (XEP-0198 §4).
 *
 * struct pl_csq is also the component's "held" queue: stanzas of a dead
 * link waiting (until the item's time) for another link of the domain.
 */
#ifndef PL_COMP_SM_H
#define PL_COMP_SM_H

#include <stddef.h>
#include <stdint.h>

#include "stanza.h"

/* A FIFO of stanza references, each with a time (the caller's meaning). */
struct pl_csq_item {
    struct pl_stanza *st;
    uint64_t t;
};
struct pl_csq {
    struct pl_csq_item *v;
    size_t head, len, cap;
};

/* Appends st (adds a reference). */
void pl_csq_push(struct pl_csq *q, struct pl_stanza *st, uint64_t t);
/* The oldest item, or NULL. */
const struct pl_csq_item *pl_csq_front(const struct pl_csq *q);
/* Removes the oldest; the caller owns its reference (NULL when empty). */
struct pl_stanza *pl_csq_pop(struct pl_csq *q, uint64_t *t);
/* Drops every item and the storage. */
void pl_csq_clear(struct pl_csq *q);

struct pl_csm {
    int enabled;           /* <enable/> was answered with <enabled/> */
    uint32_t out_count;    /* stanzas sent since <enable/> */
    struct pl_csq unacked; /* sent, not yet acknowledged (oldest first) */
    uint32_t in_seen;      /* stanzas received since <enable/> */
    uint32_t in_handled;   /* the prefix of those that are handled */
    uint8_t *done;         /* ring: done[(seq) % dcap] for seen > handled */
    size_t dcap;
};

void pl_csm_enable(struct pl_csm *sm);
/* st (a reference is added) was written on the stream. */
void pl_csm_sent(struct pl_csm *sm, struct pl_stanza *st, uint64_t now);
/* The peer's h: drops what it covers.  PL_EINVAL when h acknowledges
 * more than was sent (nothing changes). */
int pl_csm_ack(struct pl_csm *sm, uint32_t h);
/* Stanzas written and not yet acknowledged. */
size_t pl_csm_unacked(const struct pl_csm *sm);
/* A stanza arrived: its sequence number. */
uint32_t pl_csm_in_begin(struct pl_csm *sm);
/* Stanza seq is handled; returns 1 when in_handled moved. */
int pl_csm_in_done(struct pl_csm *sm, uint32_t seq);
/* Frees the queues (unacknowledged stanzas are dropped: pop them first). */
void pl_csm_free(struct pl_csm *sm);

/* XEP-0198 §4: h is a decimal unsigned 32-bit integer.  PL_EINVAL if v
 * is not one. */
int pl_csm_parse_h(const char *v, uint32_t *h);

#endif
