/*
 * queue.h - the durable queues of parley-gateway: one SQLite file shared
 * by every instance (WAL mode), a queue per destination system, leases.
 *
 * Every function here blocks (SQL, fsync) and runs on a worker thread of
 * a work queue (work.h), never on the loop; one struct pl_gwq is one
 * SQLite connection, used by one thread at a time (the gateway gives its
 * database work queue a single thread, so statements never interleave).
 *
 * Leases: pl_gwq_claim() takes, in one BEGIN IMMEDIATE transaction, the
 * messages of a destination that are due (next_attempt <= now), not
 * final, waiting to be sent, and not leased (or whose lease has run out),
 * and writes the instance's name and a lease deadline on them.  SQLite's
 * write lock makes the transaction exclusive among every process on the
 * file, so two instances never take the same message; a killed instance's
 * messages become claimable again when their lease runs out.  In the same
 * transaction, due messages past their expiry become expired.
 *
 * Durability: pl_gwq_insert() commits (synchronous=FULL) before it
 * returns, and only then is the sender told the message was accepted.
 * Group commit: between pl_gwq_batch_begin() and pl_gwq_batch_commit()
 * every function's transaction is a savepoint of the batch's one, and
 * nothing is durable before the commit (one fsync for the batch): the
 * caller tells senders only after it (core.c does this for the database
 * work queue).
 *
 * Besides the messages: the history (history.c: every state change with
 * its time, instance and detail), the outbox (stanzas for IM senders and
 * recipients, sent by whichever instance holds the component link), the
 * links of XEP-0100 registration, and the last IM sender per phone number
 * (where an SMS reply goes).
 *
 * Extending: a new column goes in the schema (SCHEMA, with a version
 * bump in user_version) and in row_to_msg().
 */
#ifndef PL_GW_QUEUE_H
#define PL_GW_QUEUE_H

#include <stdint.h>

#include "gateway/gateway.h"

struct pl_gwq;

/* Opens (creating the schema unless readonly) the queue file. */
int pl_gwq_open(const char *path, int readonly, struct pl_gwq **out);
void pl_gwq_close(struct pl_gwq *q);
/* The last SQLite error message (for logs). */
const char *pl_gwq_error(struct pl_gwq *q);

/* Group commit: one BEGIN IMMEDIATE around several calls; PL_ESTORAGE
 * when it could not start (the calls then commit one by one). */
int pl_gwq_batch_begin(struct pl_gwq *q);
/* Commits the batch; PL_ESTORAGE when anything of it was lost (a call's
 * error rolled the whole transaction back, or COMMIT failed). */
int pl_gwq_batch_commit(struct pl_gwq *q);
/* Whether a batch's transaction is open. */
int pl_gwq_in_batch(struct pl_gwq *q);

/* Stores m as queued (history: accepted, queued) and commits.  An IM
 * message that is a copy of one stored within PL_GWQ_DUP_WINDOW_MS (same
 * sender full JID, stanza id, recipient and text: parleyd sent it again
 * after a link died, XEP-0198) is not stored again: PL_OK, with a
 * history row on the first copy saying so (its sender hears of the first
 * copy's fate). */
int pl_gwq_insert(struct pl_gwq *q, const struct pl_gw_msg *m,
                  const char *instance);
#define PL_GWQ_DUP_WINDOW_MS (3600 * 1000LL)

/*
 * Claims up to max due messages of dest for instance until now +
 * lease_ms (their state becomes sending, attempts + 1), and expires those
 * past their deadline.  *out gets a new array of n messages (each
 * pl_gw_msg_free, then pl_free the array): state PL_GW_SENDING for the
 * claimed, PL_GW_EXPIRED for the expired (to be reported).
 */
int pl_gwq_claim(struct pl_gwq *q, const char *dest, const char *instance,
                 int64_t now, int64_t lease_ms, int max,
                 struct pl_gw_msg ***out, int *n);
/* The transport took it, in parts pieces: sent, lease released.  The
 * delivery reports of every part may have come first (a fast SMSC reports
 * before this commits): then it is delivered at once.  *state gets
 * PL_GW_SENT or PL_GW_DELIVERED (to be reported). */
int pl_gwq_sent(struct pl_gwq *q, const char *id, const char *instance,
                int parts, const char *detail, int *state);
/*
 * A temporary failure: queued again for next_attempt, lease released, or
 * expired if next_attempt is past its expiry (*state gets which).
 */
int pl_gwq_retry(struct pl_gwq *q, const char *id, const char *instance,
                 int64_t next_attempt, const char *detail, int *state);
/* A final state (failed, delivered, ...) with its detail. */
int pl_gwq_finish(struct pl_gwq *q, const char *id, const char *instance,
                  int state, const char *detail);
/*
 * A delivery report for part (1-based) of message id: ok or not.  A
 * repeated report for the same part changes nothing.  When the message
 * becomes delivered (every part) or failed (any part), *changed gets the
 * message (new, pl_gw_msg_free) for reporting; otherwise NULL.
 * PL_ENOT_FOUND for an unknown id.
 */
int pl_gwq_report(struct pl_gwq *q, const char *id, int part, int ok,
                  const char *instance, const char *detail,
                  struct pl_gw_msg **changed);
/* One message (new), or PL_ENOT_FOUND. */
int pl_gwq_get(struct pl_gwq *q, const char *id, struct pl_gw_msg **out);

/* ---- outbox: stanzas to send on the component link ---- */
int pl_gwq_outbox_add(struct pl_gwq *q, const char *xml);
struct pl_gwq_out {
    int64_t seq; /* row */
    char *xml;   /* serialized stanza, owned */
};
/* Claims up to max rows for instance (lease as for messages). */
int pl_gwq_outbox_claim(struct pl_gwq *q, const char *instance, int64_t now,
                        int64_t lease_ms, int max, struct pl_gwq_out **out,
                        int *n);
int pl_gwq_outbox_done(struct pl_gwq *q, int64_t seq);
/* Gives up instance's lease on row seq (its link died before parleyd
 * acknowledged it): claimable again at once. */
int pl_gwq_outbox_release(struct pl_gwq *q, int64_t seq, const char *instance);

/* ---- XEP-0100 links: a user's own address in a channel ---- */
struct pl_gwq_link {
    char *jid;       /* bare JID of the user */
    char *address;   /* +E.164 or e-mail */
    char *code;      /* verification code, NULL once verified */
    int verified;    /* 1 when the code was confirmed */
    int64_t expires; /* the code's deadline (ms since the epoch) */
};
void pl_gwq_link_free(struct pl_gwq_link *l);
/* Sets (replaces) jid's link in channel. */
int pl_gwq_link_set(struct pl_gwq *q, const char *channel,
                    const struct pl_gwq_link *l);
int pl_gwq_link_get(struct pl_gwq *q, const char *channel, const char *jid,
                    struct pl_gwq_link **out);
int pl_gwq_link_remove(struct pl_gwq *q, const char *channel, const char *jid);
/* The user whose verified address in channel is address (new string). */
int pl_gwq_link_owner(struct pl_gwq *q, const char *channel,
                      const char *address, char **jid);

/* ---- replies: who last wrote to an address (a phone number) ---- */
/* The IM user jid (bare) wrote to address last. */
int pl_gwq_peer_set(struct pl_gwq *q, const char *address, const char *jid,
                    int64_t now);
/* The IM user who wrote last, PL_ENOT_FOUND if none or if the last
 * correspondent was of another channel. */
int pl_gwq_peer_get(struct pl_gwq *q, const char *address, char **jid);
/* The same for any channel: peer ("im": a bare JID, "mail": an e-mail
 * address) of channel wrote to address last. */
int pl_gwq_peer_set_in(struct pl_gwq *q, const char *address,
                       const char *channel, const char *peer, int64_t now);
/* The last correspondent of address and its channel (new strings). */
int pl_gwq_peer_get_in(struct pl_gwq *q, const char *address, char **channel,
                       char **peer);
/* The Message-ID of the last e-mail from address delivered to jid (bare),
 * for In-Reply-To (new string), or PL_ENOT_FOUND. */
int pl_gwq_thread_get(struct pl_gwq *q, const char *address, const char *jid,
                      char **msgid);

/* ---- history (history.c) ---- */
/* Appends a history row (inside the caller's transaction, if any). */
int pl_gwq_history_add(struct pl_gwq *q, const char *id, int state,
                       const char *instance, const char *detail);
/* Appends a history row in the message's current state (a note such as
 * an intermediate delivery report); PL_ENOT_FOUND if there is no such
 * message. */
int pl_gwq_history_note(struct pl_gwq *q, const char *id, const char *instance,
                        const char *detail);
typedef void pl_gwq_trace_fn(void *ud, int64_t at, const char *state,
                             const char *instance, const char *detail);
/* Calls fn for each history row of id, oldest first; PL_ENOT_FOUND if
 * there is none. */
int pl_gwq_trace(struct pl_gwq *q, const char *id, pl_gwq_trace_fn *fn,
                 void *ud);
typedef void pl_gwq_depth_fn(void *ud, const char *dest, const char *state,
                             long count, int64_t oldest);
/* Non-final messages per destination and state, with the oldest
 * creation time. */
int pl_gwq_depth(struct pl_gwq *q, pl_gwq_depth_fn *fn, void *ud);

/* Internal (history.c): the connection. */
struct sqlite3 *pl__gwq_db(struct pl_gwq *q);
/* Internal (policy.c): BEGIN IMMEDIATE; COMMIT when rc is PL_OK, else
 * ROLLBACK (returns the outcome). */
int pl__gwq_begin(struct pl_gwq *q);
int pl__gwq_end(struct pl_gwq *q, int rc);
/* Internal (policy.c): pl_gwq_insert inside the caller's transaction
 * (resent copies dropped alike);
 * with refused non-NULL the message is stored refused (final) with that
 * reason instead of queued. */
int pl__gwq_insert_tx(struct pl_gwq *q, const struct pl_gw_msg *m,
                      const char *instance, const char *refused);
/* Internal: sql prepared once per connection (sql must be a string that
 * lives as long as q: the cache is keyed by its address); give it back
 * with pl__gwq_release(), which resets it. */
struct sqlite3_stmt *pl__gwq_stmt(struct pl_gwq *q, const char *sql);
void pl__gwq_release(struct pl_gwq *q, struct sqlite3_stmt *st);

#endif
