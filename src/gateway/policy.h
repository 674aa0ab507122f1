/*
 * policy.h - the gateway's authentication module (issue 16, item 3): who
 * may send where, decided before a message is queued.
 *
 * Every inbound path asks the same two questions (doc/gateway.md,
 * "Policy"):
 *
 *   1. pl_gw_policy_check(), on the loop thread, in memory and without
 *      SQL: the route (may channel A send to channel B at all), the
 *      sender's allow/deny lists, the destination's allow/deny lists, the
 *      sender's own rule (policy.users: its destinations, its limits), and
 *      the token buckets (messages per minute with a burst) of the sender
 *      and of the destination.  The buckets live in this instance's
 *      memory: with several instances each one applies the limit by
 *      itself.
 *   2. pl__gw_policy_commit_db(), on the database thread, in the job that
 *      stores the message anyway (no extra SQL round trip): a route in
 *      "linked" mode needs a verified link (queue.c links), and the daily
 *      quota is counted in the queue file's policy_quota table in the
 *      same BEGIN IMMEDIATE transaction as the insert, so it survives
 *      restarts and every instance on the queue file shares it.
 *
 * A refusal (enum pl_gw_policy_verdict) is stored as a message in state
 * "refused" with its reason (parleyctl gateway trace shows it), and the
 * sender is told in its channel: pl_gw_policy_im_error() (RFC 6120
 * conditions) and pl_gw_policy_smtp() (RFC 5321 / RFC 3463 codes).
 *
 * Matching: a pattern is a glob with * (any run) and ? (one character),
 * compared without regard to ASCII case, optionally prefixed with a
 * channel ("sms:+1900*", "im:*@example.org", "mail:*@spam.test"); without
 * a prefix it applies to every channel.  IM addresses are bare JIDs,
 * phone numbers +E.164, e-mail addresses as in the envelope.
 *
 * Extending: a new rule is a field of struct policy in policy.c, a row of
 * its configuration reader, and a step in pl_gw_policy_check (memory) or
 * in pl__gw_policy_commit_db (SQL).
 */
#ifndef PL_GW_POLICY_H
#define PL_GW_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/gateway.h"

struct config_t;

enum pl_gw_policy_verdict {
    PL_GW_ALLOW = 0, /* go on */
    PL_GW_DENY,      /* the sender may not (lists, route, no link) */
    PL_GW_BLOCKED,   /* nobody may send to this destination */
    PL_GW_RATE,      /* a rate limit: try again later */
    PL_GW_QUOTA,     /* the daily quota is used up: try again tomorrow */
    PL_GW_NVERDICTS
};

/* What a message is: channels "im", "sms", "mail"; addresses as above.
 * dst_addr may be NULL when the recipient is not known yet (an SMS
 * before its IM user is looked up): destination rules are then skipped. */
struct pl_gw_policy_req {
    const char *src_channel;
    const char *src_addr;
    const char *dst_channel;
    const char *dst_addr;
};

#define PL_GW_POLICY_KEY 1100 /* channel:address of a sender, truncated */

/* A decision, carried from the loop to the database job by value. */
struct pl_gw_decision {
    int verdict;         /* enum pl_gw_policy_verdict */
    int need_link;       /* the route is in "linked" mode */
    int record;          /* store the refusal (rate: 1 a second) */
    long daily;          /* the sender's daily quota, 0: none */
    char src_channel[8]; /* for the link check */
    char dst_channel[8];
    char key[PL_GW_POLICY_KEY]; /* the sender: "im:alice@example.org" */
    char reason[400];           /* for the sender and the history */
};

/* Modes of pl__gw_policy_commit_db. */
enum pl_gw_commit {
    PL_GW_COMMIT_INSERT, /* check link and quota, count, store m */
    PL_GW_COMMIT_PEEK,   /* check link and quota; store m only if refused */
    PL_GW_COMMIT_COUNT,  /* count m in the quota without refusing, store */
    PL_GW_COMMIT_TALLY   /* count m in the quota without refusing; stored
                          * by the caller (e-mail with attachments) */
};

/*
 * Reads the policy group of cf (path for messages); a missing group
 * gives the defaults.  Unknown keys, bad modes and out-of-range numbers
 * are errors (PL_EINVAL, printed on stderr).  Replaces any earlier load.
 */
int pl_gw_policy_load(struct config_t *cf, const char *path);
/* Frees the rules and the buckets. */
void pl_gw_policy_free(void);
/* One line describing the policy in force (for --check-config). */
void pl_gw_policy_describe(char *out, size_t len);

/*
 * The in-memory part of the decision for r at now (monotonic ms; 0: the
 * clock).  Takes a token from the sender's and the destination's buckets
 * only when the message is allowed.  Fills *d (for the database step) and
 * returns d->verdict.  Loop thread.
 */
int pl_gw_policy_check(const struct pl_gw_policy_req *r, int64_t now,
                       struct pl_gw_decision *d);
/* Only the sender's key and daily quota into *d (verdict ALLOW), with no
 * effect on buckets: for counting what an earlier check allowed. */
void pl_gw_policy_quota_of(const struct pl_gw_policy_req *r,
                           struct pl_gw_decision *d);

/*
 * The database part, on the database thread (pl_gw.db).  A decision
 * already refused on the loop is stored refused (when d->record) and
 * returned.  Otherwise per mode (enum pl_gw_commit).  Returns PL_OK when
 * the message was allowed (and stored, unless PEEK),
 * PL_EPOLICY_VIOLATION when it was refused (d->verdict and d->reason
 * say why; stored as refused), or a storage error (nothing stored).
 */
int pl__gw_policy_commit_db(const struct pl_gw_msg *m, struct pl_gw_decision *d,
                            int mode);

/* Today's count of key (UTC day) from the queue file; database thread.
 * For tests and operators. */
long pl__gw_policy_count_db(const char *key, int64_t day);

/* The stanza error for a refusal (RFC 6120 §8.3.3): forbidden (auth) for
 * a denied sender, not-allowed (cancel) for a blocked destination,
 * policy-violation (wait) for a rate limit or the quota. */
void pl_gw_policy_im_error(const struct pl_gw_decision *d, const char **type,
                           const char **cond);
/* The SMTP reply for a refusal: 550 5.7.1 for deny and blocked, 451 4.7.1
 * for a rate limit or the quota (temporary: the client tries later). */
void pl_gw_policy_smtp(const struct pl_gw_decision *d, int *code,
                       const char **enh);

/* Whether an SMS telling number about a refusal may go now (at most one
 * per number per policy.sms_notice; never to a blocked destination).
 * Loop thread. */
int pl_gw_policy_sms_notice(const char *number, int64_t now);

/* ---- the pieces, for the unit tests ---- */

/* Glob match of s against pat (* and ?, ASCII case ignored). */
int pl_gw_glob(const char *pat, const char *s);
/* Whether pattern pat ("chan:glob" or "glob") matches addr in chan. */
int pl_gw_pattern_match(const char *pat, const char *chan, const char *addr);

/* A token bucket: rate tokens a minute, at most burst, full when new. */
struct pl_gw_bucket {
    int64_t units; /* tokens * 60000 */
    int64_t at;    /* last refill (ms) */
    int used;      /* 0: never touched (full) */
};
/* Takes one token at now: 1, or 0 and *wait_ms until one is there. */
int pl_gw_bucket_take(struct pl_gw_bucket *b, long rate, long burst,
                      int64_t now, int64_t *wait_ms);

#endif
