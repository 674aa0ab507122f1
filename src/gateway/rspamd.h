/*
 * rspamd.h - spam scoring through rspamd's HTTP protocol: the message
 * goes in a POST to the normal worker's /checkv2 (rspamd's "protocol"
 * documentation: the message as the body, the envelope in request
 * fields From, Rcpt, Helo, IP, Queue-Id), and rspamd answers with a
 * JSON object: "action" (no action, greylist, add header, rewrite
 * subject, soft reject, reject), "score", "required_score", "symbols",
 * "messages" (smtp_message), "subject" (rewrite subject's new subject),
 * "is_skipped".
 *
 *   struct pl_rspamd_request rq = {.url = "http://127.0.0.1:11333",
 *                                  .timeout_ms = 30000, .msg = raw,
 *                                  .len = n, .from = "a@b.example"};
 *   struct pl_rspamd_result r;
 *   char err[256];
 *   if (pl_rspamd_check(&rq, &r, err, sizeof(err)) == PL_OK) {
 *       ... r.action, r.score ...
 *       pl_rspamd_result_free(&r);
 *   }
 *
 * pl_rspamd_check blocks (libcurl): worker threads only (the gateway's
 * "check" work queue, check.c).  pl_rspamd_parse is the pure part, the
 * JSON answer to a struct (tests/unit/test_gw_check.c).
 *
 * Extending: another field of the answer is a field of struct
 * pl_rspamd_result and a line of pl_rspamd_parse.
 */
#ifndef PL_GW_RSPAMD_H
#define PL_GW_RSPAMD_H

#include <stddef.h>

/* rspamd's actions, from the mildest. */
enum pl_rspamd_action {
    PL_RSPAMD_NO_ACTION = 0,
    PL_RSPAMD_GREYLIST,
    PL_RSPAMD_ADD_HEADER,
    PL_RSPAMD_REWRITE_SUBJECT,
    PL_RSPAMD_SOFT_REJECT,
    PL_RSPAMD_REJECT
};

struct pl_rspamd_result {
    int action;        /* enum pl_rspamd_action */
    double score;      /* the message's score */
    double required;   /* required_score (the reject threshold), or 0 */
    int skipped;       /* is_skipped: a pre-result decided (GTUBE...) */
    char symbols[256]; /* the symbols that matched, comma-separated,
                          * highest score first (truncated) */
    char message[256]; /* messages.smtp_message, or "" */
    char *subject;     /* rewrite subject: the new subject, or NULL */
};

struct pl_rspamd_request {
    const char *url;  /* the normal worker, "http://127.0.0.1:11333" */
    long timeout_ms;  /* the whole request */
    const char *msg;  /* the message (RFC 5322), borrowed */
    size_t len;       /* its length */
    const char *from; /* envelope sender, or NULL */
    const char *rcpt; /* envelope recipient, or NULL */
    const char *helo; /* the client's HELO, or NULL */
    const char *ip;   /* the client's address, or NULL */
    const char *id;   /* our queue id (rspamd's log), or NULL */
};

/*
 * Parses rspamd's answer (len bytes of JSON) into *out (zeroed first).
 * PL_EINVAL when it is not JSON, not an object, or lacks "action" or a
 * numeric "score", or names an action not in enum pl_rspamd_action;
 * then nothing is allocated.
 */
int pl_rspamd_parse(const char *json, size_t len, struct pl_rspamd_result *out);
void pl_rspamd_result_free(struct pl_rspamd_result *r);
/* "no action", "greylist", ...; NULL for an unknown value. */
const char *pl_rspamd_action_name(int action);

/*
 * Asks rspamd about rq->msg (blocking).  PL_OK with *out filled (free it
 * with pl_rspamd_result_free); PL_EIO when rspamd cannot be reached,
 * times out or answers anything but 200 with an answer
 * pl_rspamd_parse accepts: err (errlen bytes) says what happened.
 */
int pl_rspamd_check(const struct pl_rspamd_request *rq,
                    struct pl_rspamd_result *out, char *err, size_t errlen);

#endif
