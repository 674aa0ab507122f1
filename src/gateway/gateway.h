/*
 * gateway.h - the message model every channel of parley-gateway shares.
 *
 * parley-gateway (doc/gateway.md) is its own process: an XEP-0114
 * component of parleyd (component.c) for the IM side, transports for the
 * other systems (sms/kannel.c; mail/ for e-mail), and between them a
 * durable queue per destination system (queue.c) in SQLite, whose every
 * state change is also a row of the message's history.  A message is
 * written to the queue before its sender is told it was accepted; from
 * then on each state change is reported back to the sender in its own
 * channel (for IM: a XEP-0184 receipt or a stanza error).
 *
 * A message's life: accepted -> queued -> sending -> sent -> delivered,
 * with sending -> queued again on a temporary failure (exponential
 * backoff with jitter), and failed, expired (its deadline passed before
 * it was sent) or refused (the policy or the addressing said no) as the
 * other ends.
 *
 * Extending: a new channel is a new value of the channel strings ("im",
 * "sms", "mail"), a transport that claims the queue named for it, and a
 * reporter for its senders.
 */
#ifndef PL_GW_GATEWAY_H
#define PL_GW_GATEWAY_H

#include <stdint.h>

enum pl_gw_state {
    PL_GW_ACCEPTED = 0, /* validated, being stored */
    PL_GW_QUEUED,       /* stored, waiting for its next attempt */
    PL_GW_SENDING,      /* leased by an instance, being handed over */
    PL_GW_SENT,         /* the destination system took it */
    PL_GW_DELIVERED,    /* the destination reported delivery (final) */
    PL_GW_FAILED,       /* permanent failure (final) */
    PL_GW_EXPIRED,      /* not sent before its expiry (final) */
    PL_GW_REFUSED,      /* refused before queueing (final) */
    PL_GW_NSTATES
};

/* "accepted", "queued", ...; NULL for an unknown value. */
const char *pl_gw_state_name(int state);
/* The state named s, or -1. */
int pl_gw_state_parse(const char *s);
/* Whether no further change can happen. */
int pl_gw_state_is_final(int state);

#define PL_GW_ID_LEN 32 /* hex characters of a message id */

struct pl_gw_msg {
    char id[PL_GW_ID_LEN + 1]; /* unique: time + 80 random bits, hex */
    char *dest;                /* destination system's queue ("sms") */
    char *src_channel;         /* "im", "sms", "mail", "system" */
    char *src_addr;            /* sender: full JID, +E.164, e-mail */
    char *dst_channel;         /* where it goes */
    char *dst_addr;            /* recipient in that channel's form */
    char *sender_msgid;        /* the sender's own id (receipts), or NULL */
    int want_receipt;          /* the sender asked for a receipt */
    char *text;                /* body, UTF-8 */
    char *subject;             /* or NULL */
    char *links;               /* attachment URLs, one per line, or NULL */
    int64_t created;           /* ms since the epoch */
    int64_t expires;           /* ms since the epoch: give up after */
    int64_t next_attempt;      /* ms since the epoch */
    int attempts;              /* hand-overs tried so far */
    int state;                 /* enum pl_gw_state */
    int parts;                 /* pieces the transport sent (SMS parts) */
    int parts_done;            /* pieces reported delivered */
    char *return_path;         /* e-mail senders: reverse-path for DSNs
                                * ("" for <>: none is sent), or NULL */
    char *orig_headers;        /* e-mail senders: the header section (DSN) */
    char *orig_rcpt;           /* e-mail senders: the RCPT TO address */
};

/* A new id into id: 48 bits of time in ms, then 80 random bits
 * (RAND_bytes), in hex. */
void pl_gw_new_id(char id[PL_GW_ID_LEN + 1]);
/* Frees a message's strings and the message (NULL is fine). */
void pl_gw_msg_free(struct pl_gw_msg *m);
/* Milliseconds since the epoch (CLOCK_REALTIME: stored, shared by
 * instances on several hosts). */
int64_t pl_gw_now(void);

#endif
