/*
 * check.h - the content checks of parley-gateway: virus scanning through
 * clamd (src/core/clamd.c) and spam scoring through rspamd (rspamd.c),
 * each optional (check.clamd, check.rspamd), run on a work queue of
 * their own ("check", check.workers threads), never on the loop.
 *
 * Where: between a message's parsing and its queueing, in every
 * direction: e-mail from SMTP/LMTP (the whole message), IM messages to
 * SMS or e-mail and SMS from Kannel (the text; rspamd gets it wrapped in
 * a small RFC 5322 message).  A channel embeds a struct pl_gw_check in
 * its job, fills the input and calls pl_gw_check_submit(c, next): the
 * checks run, then next goes to the database thread, where the channel
 * reads c->v and stores the message with pl__gw_check_insert_db():
 *
 *   PL_GW_CHECK_PASS      queued as usual; the history says what the
 *                         checkers said
 *   PL_GW_CHECK_TAG       queued, its subject tagged (check.spam.tag, or
 *                         rspamd's rewritten subject)
 *   PL_GW_CHECK_REFUSE    stored as refused, the reason in its history;
 *                         the channel tells the sender at once (SMTP 550
 *                         / 554 5.7.1, a stanza error)
 *   PL_GW_CHECK_TEMPFAIL  not stored; the sender is told to try again
 *                         (SMTP 451 4.7.1, a stanza error of type wait)
 *
 * A checker that cannot be reached, times out (check.timeout) or answers
 * nonsense: check.fail "closed" (the default) makes that a TEMPFAIL,
 * "open" lets the message pass with "not checked" in its history.
 *
 * Spam policy (pl_gw_spam_decide, a pure function): rspamd's action
 * "reject" refuses (or only tags with check.spam.on_reject = "tag");
 * "add header" and "rewrite subject" tag; "soft reject" is a TEMPFAIL;
 * "greylist" and "no action" pass.  check.spam.reject_score and
 * check.spam.tag_score (whole points, 0: off) refuse and tag by score
 * as well, whatever rspamd's own thresholds are.
 *
 * Extending: another checker is another step of pl__gw_check_run (a
 * blocking client, a verdict, a line of the note).
 */
#ifndef PL_GW_CHECK_H
#define PL_GW_CHECK_H

#include <stddef.h>

#include "gateway/gateway.h"
#include "gateway/rspamd.h"
#include "work.h"

enum pl_gw_check_verdict {
    PL_GW_CHECK_PASS = 0, /* clean, or not checked (no checker, fail open) */
    PL_GW_CHECK_TAG,      /* spam, delivered marked */
    PL_GW_CHECK_REFUSE,   /* a virus, or spam to refuse */
    PL_GW_CHECK_TEMPFAIL  /* not decided now: the sender tries again */
};

struct pl_gw_verdict {
    int verdict;      /* enum pl_gw_check_verdict */
    int virus;        /* REFUSE: a virus (else spam) */
    char reason[400]; /* REFUSE, TEMPFAIL: for the sender and history */
    char note[400];   /* what the checkers said (history), or "" */
    char *subject;    /* TAG: rspamd's rewritten subject, or NULL */
};

struct pl_gw_check {
    struct pl_work w;     /* the check stage (internal) */
    struct pl_work *next; /* then this, on the database thread */
    /* Input, borrowed until next's done runs: */
    const char *raw;        /* an e-mail: the whole message, or NULL */
    size_t rawlen;          /* its length */
    struct pl_gw_msg *m;    /* otherwise the message (its text, subject,
                          * addresses); its subject is tagged in place */
    const char *text;       /* or just a text (SMS from Kannel) */
    const char *from;       /* the sender (e-mail envelope, JID, number) */
    const char *rcpt;       /* the recipient, or NULL */
    const char *helo;       /* e-mail: the client's HELO, or NULL */
    struct pl_gw_verdict v; /* the outcome, for next (zeroed by the caller) */
};

/* Creates the "check" work queue; loop thread, at start. */
int pl_gw_check_start(void);
void pl_gw_check_stop(void);
/* Whether any checker is configured. */
int pl_gw_check_enabled(void);

/*
 * Runs the checks on c's input off the loop (when a checker is
 * configured), then submits next to the database thread (pl_gw_db_submit);
 * next's work reads c->v.  Loop thread.
 */
void pl_gw_check_submit(struct pl_gw_check *c, struct pl_work *next);
/* The checks themselves, blocking: fills c->v.  Worker thread. */
void pl__gw_check_run(struct pl_gw_check *c);

/*
 * Stores m as v says (database thread): PL_OK queued (with the note in
 * its history), PL_EFORBIDDEN stored as refused, PL_EAGAIN not stored
 * (TEMPFAIL), or the queue's error.  The caller tells the sender.
 */
int pl__gw_check_insert_db(const struct pl_gw_msg *m,
                           const struct pl_gw_verdict *v);
/* The subject a TAG verdict gives a message whose subject is orig (NULL
 * for none): a new string, or NULL when it stays as it is. */
char *pl_gw_check_subject(const struct pl_gw_verdict *v, const char *orig);
/* Frees what v holds (the rewritten subject). */
void pl_gw_verdict_free(struct pl_gw_verdict *v);

struct pl_stanza;
/* im.c: tells an IM sender that its message st was refused (result
 * PL_EFORBIDDEN: not-acceptable) or could not be checked (PL_EAGAIN:
 * an error of type wait), with v->reason as the text.  Loop thread. */
void pl__gw_check_refusal(struct pl_stanza *st, int result,
                          const struct pl_gw_verdict *v);

/* The spam policy (check.spam.*) as numbers. */
struct pl_gw_spam_policy {
    long reject_score; /* refuse at or above (whole points), 0: off */
    long tag_score;    /* tag at or above, 0: off */
    int reject_tags;   /* 1: rspamd's reject only tags */
};
/* What rspamd's answer r means under p (enum pl_gw_check_verdict). */
int pl_gw_spam_decide(const struct pl_rspamd_result *r,
                      const struct pl_gw_spam_policy *p);

#endif
