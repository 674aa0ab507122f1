/*
 * dsn.h - delivery status notifications (RFC 3464) for e-mail senders.
 *
 * pl_dsn_build makes the notification the gateway mails back when a
 * message it accepted from e-mail was delivered to IM or SMS, is delayed,
 * or failed: a multipart/report; report-type=delivery-status (RFC 6522)
 * with a human-readable text/plain part, the machine-readable
 * message/delivery-status part (per-message fields, then one group of
 * per-recipient fields each: Final-Recipient, Action, Status, ...), and
 * the original's header section as text/rfc822-headers.  Addresses or
 * text outside ASCII make it message/global-delivery-status (RFC 6533).
 * The message is marked Auto-Submitted: auto-replied (RFC 3834) and goes
 * out with a null reverse-path (RFC 5321 §4.5.5: the caller sends it
 * with MAIL FROM:<>).
 *
 * pl_dsn_parse reads such a notification back (ours or a relay's), for
 * the tests and for bounces of the gateway's own outgoing mail.
 */
#ifndef PL_GW_DSN_H
#define PL_GW_DSN_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "str.h"

/* Action field values (RFC 3464 §2.3.3). */
enum pl_dsn_action {
    PL_DSN_FAILED = 1,
    PL_DSN_DELAYED,
    PL_DSN_DELIVERED,
    PL_DSN_RELAYED,
    PL_DSN_EXPANDED,
};

/* "failed", "delayed"...; NULL for a bad value. */
const char *pl_dsn_action_name(int action);
/* The action named s (case-insensitive), 0 if none. */
int pl_dsn_action_parse(const char *s);

struct pl_dsn_rcpt {
    const char *final_recipient;    /* address (rfc822 type) */
    const char *original_recipient; /* as the sender gave it, or NULL */
    int action;                     /* enum pl_dsn_action */
    const char *status;             /* RFC 3463 code "5.1.1" */
    const char *remote_mta;         /* "dns; relay.example", or NULL */
    const char *diagnostic;         /* "smtp; 550 ..." or other, or NULL */
    time_t last_attempt;            /* 0: not given */
    time_t will_retry_until;        /* for delayed, 0: not given */
};

struct pl_dsn {
    const char *reporting_mta;       /* our host name (dns type) */
    const char *from;                /* the report's From (MAILER-DAEMON@...) */
    const char *to;                  /* the original sender */
    const char *envelope_id;         /* ENVID, or NULL */
    time_t arrival;                  /* when the original arrived, 0: unknown */
    const char *text;                /* human text, or NULL for a default */
    const struct pl_dsn_rcpt *rcpts; /* at least one */
    size_t nrcpts;
    struct pl_str original; /* the original message (its header
                                 * section is included), may be empty */
    const char *id_domain;  /* for the Message-ID */
    time_t date;            /* 0: now */
};

/*
 * Appends the notification to out (CRLF line ends).  *message_id, if
 * not NULL, receives its Message-ID (pl_free).  PL_EINVAL without a
 * recipient, a bad action or status, or no from/to.
 */
int pl_dsn_build(const struct pl_dsn *d, struct pl_buf *out, char **message_id);

/* A notification read back. */
struct pl_dsn_report_rcpt {
    char *final_recipient;    /* address without its "rfc822;" type */
    char *original_recipient; /* same, or NULL */
    int action;               /* enum pl_dsn_action, 0 if unknown */
    char *status;             /* "5.1.1" */
    char *remote_mta;         /* as written, or NULL */
    char *diagnostic;         /* as written, or NULL */
};

struct pl_dsn_report {
    char *reporting_mta;       /* without "dns;" */
    char *envelope_id;         /* or NULL */
    char *arrival_date;        /* as written, or NULL */
    char *original_message_id; /* from the returned headers, or NULL */
    struct pl_dsn_report_rcpt *rcpts;
    size_t nrcpts;
};

/*
 * Parses raw: PL_OK with *out (pl_dsn_report_free), PL_EINVAL if it is
 * not a delivery-status report or has no recipient group.
 */
int pl_dsn_parse(struct pl_str raw, struct pl_dsn_report **out);
void pl_dsn_report_free(struct pl_dsn_report *r);

#endif
