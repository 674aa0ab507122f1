/*
 * send.h - outbound SMTP to a relay through libcurl.
 *
 * pl_mail_send() blocks (DNS, connect, the SMTP dialogue): call it from a
 * worker thread (work.h), never on the loop.  One call is one transaction:
 * MAIL FROM, RCPT TO for each recipient (all must be accepted: libcurl
 * sends nothing otherwise; give one recipient per call to get
 * per-recipient results), DATA.  libcurl dot-stuffs the message; it must
 * have CRLF line ends (pl_mail_build and pl_dsn_build give that).
 *
 * The result says what the caller's retry logic needs (RFC 5321 §4.2.1):
 * the relay's last reply code and text, and whether it is final
 * (2xx), temporary (4xx, or no answer: connection refused, timeout, TLS
 * failure) or permanent (5xx).
 */
#ifndef PL_GW_SEND_H
#define PL_GW_SEND_H

#include <stddef.h>

#include "str.h"

/* STARTTLS policy (struct pl_mail_relay.tls). */
enum pl_mail_tls {
    PL_MAIL_TLS_NONE = 0, /* plain SMTP */
    PL_MAIL_TLS_TRY,      /* STARTTLS if the relay offers it */
    PL_MAIL_TLS_REQUIRE,  /* STARTTLS or fail (temporary) */
    PL_MAIL_TLS_DIRECT,   /* TLS from the start (port 465, RFC 8314) */
};

struct pl_mail_relay {
    const char *host;        /* name or address */
    int port;                /* 0: 25 (465 for DIRECT) */
    int tls;                 /* enum pl_mail_tls */
    int no_verify;           /* do not verify the relay's certificate */
    const char *ca_file;     /* CA bundle, or NULL for the system's */
    const char *user;        /* AUTH user, or NULL */
    const char *password;    /* its password */
    const char *helo;        /* our EHLO name, or NULL ("localhost") */
    long connect_timeout_ms; /* 0: 30 s */
    long timeout_ms;         /* whole transaction, 0: 300 s */
};

/* What happened (pl_mail_send's return says the same in short). */
struct pl_mail_send_result {
    int code;       /* last SMTP reply code, 0 if none came */
    char text[512]; /* its text (enhanced code included), or why */
    int temporary;  /* retry later */
    int permanent;  /* give up (bounce) */
};

/*
 * Sends message from `from` ("" for the null reverse-path of a DSN) to
 * the nto recipients in to.  Returns PL_OK (accepted), PL_EAGAIN
 * (temporary: retry), PL_EINVAL (permanent, or a bad argument); *res is
 * filled in every case.
 */
int pl_mail_send(const struct pl_mail_relay *relay, const char *from,
                 const char *const *to, size_t nto, struct pl_str message,
                 struct pl_mail_send_result *res);

#endif
