/*
 * smtp.h - the SMTP (RFC 5321) and LMTP (RFC 2033) server protocol engine,
 * transport-neutral: bytes in, reply bytes and events out.
 *
 * The engine owns no socket and no timer.  A transport (smtp_listen.c on a
 * core pl_conn, a test, the fuzz target) does this:
 *   s = pl_smtp_new(&cfg, event_fn, data);     // queues the 220 greeting
 *   loop: pl_smtp_feed(s, bytes, n);          // whatever arrived
 *         out = pl_smtp_output(s); send it; pl_smtp_output_sent(s, len);
 *         stop reading while !pl_smtp_wants_input(s);
 *         close once pl_smtp_is_done(s) and the output is sent.
 * Command timeouts (RFC 5321 §4.5.3.2) are the transport's: when one
 * passes it calls pl_smtp_timeout(), which queues a 421 and ends.
 *
 * Extensions offered in the EHLO/LHLO reply: PIPELINING (RFC 2920),
 * 8BITMIME (RFC 6152), SIZE (RFC 1870), ENHANCEDSTATUSCODES (RFC 2034: an
 * RFC 3463 code on every 2xx, 4xx and 5xx reply but the greeting and the
 * EHLO/HELO/LHLO answer), SMTPUTF8 (RFC 6531: UTF-8 addresses, accepted
 * only in a transaction whose MAIL FROM carried SMTPUTF8), DSN (RFC 3461),
 * and STARTTLS (RFC 3207) when cfg.tls asks for it and TLS is not up yet.
 * Not offered: CHUNKING/BDAT, AUTH (502 if used).
 *
 * STARTTLS: the engine only speaks the protocol; the transport does the
 * TLS.  An accepted STARTTLS queues "220 2.0.0", discards every byte
 * that came after the command in plaintext (RFC 3207 §4.2 and the
 * command injection of CVE-2011-0411: pipelined commands must not be
 * carried into the TLS session) and stops taking input.  The transport
 * sees pl_smtp_tls_wanted(), sends the 220, runs the handshake and calls
 * pl_smtp_tls_started(), which forgets HELO/EHLO and the transaction
 * (the client must EHLO again).  With PL_SMTP_TLS_REQUIRE, MAIL, RCPT,
 * DATA and VRFY get 530 5.7.0 until TLS is up (RFC 3207 §4).
 *
 * Events (struct pl_smtp_event) go to one callback, which fills a verdict
 * (struct pl_smtp_reply; code 0 keeps the engine's default, a success)
 * and returns PL_OK, or returns PL_EAGAIN to answer later through
 * pl_smtp_resume() (e.g. after a queue insert on a worker thread).  While
 * a verdict is pending the engine processes no more input: pipelined
 * commands wait in its input buffer, and pl_smtp_wants_input() says 0.
 *
 * Bounds: a command line longer than max_line (RFC 5321 §4.5.3.1.4: 512
 * with the CRLF) is answered 500 and skipped; a text line longer than
 * max_text_line (§4.5.3.1.6: 1000) or a message over max_size makes the
 * DATA fail (554 5.6.0 / 552 5.3.4) after it is read to its end, without
 * storing more than max_size bytes; more than max_rcpts recipients get
 * 452 4.5.3; after max_errors error replies caused by the client the
 * engine answers 421 4.7.0 and ends.  Output is produced only while less
 * than max_out bytes wait (a pipelining client that does not read stops
 * being served), and input beyond max_in while the engine is blocked
 * ends the session (421 4.7.0): a transport that honours
 * pl_smtp_wants_input() never gets there.
 *
 * Extending: a new command is a row of the command table in smtp.c; a new
 * extension is a line of the EHLO reply and its parameter in mail_param().
 */
#ifndef PL_GW_SMTP_H
#define PL_GW_SMTP_H

#include <stddef.h>

#include "str.h"

struct pl_smtp;

/* Which protocol the engine speaks. */
enum pl_smtp_proto {
    PL_SMTP_SMTP = 0, /* RFC 5321: HELO/EHLO, one reply after DATA */
    PL_SMTP_LMTP = 1, /* RFC 2033: LHLO, one reply per recipient */
};

/* Settings; pl_smtp_config_default() gives the documented defaults. */
struct pl_smtp_config {
    int proto;            /* enum pl_smtp_proto */
    const char *hostname; /* our name in the greeting (copied) */
    size_t max_line;      /* command line with CRLF (512) */
    size_t max_text_line; /* DATA line with CRLF (1000) */
    size_t max_size;      /* message bytes, advertised as SIZE (10 MiB) */
    unsigned max_rcpts;   /* recipients per transaction (100) */
    unsigned max_errors;  /* client errors before 421 (10) */
    size_t max_out;       /* reply bytes waiting before input waits (64 KiB) */
    size_t max_in;        /* unprocessed input bytes (256 KiB) */
    int smtputf8;         /* offer SMTPUTF8 (1) */
    const char *peer;     /* client address for Received:, or NULL */
    int add_received;     /* prepend a Received: field (1; RFC 5321 §4.4) */
    int tls;              /* enum pl_smtp_tls (PL_SMTP_TLS_NONE) */
};

/* STARTTLS policy (struct pl_smtp_config.tls). */
enum pl_smtp_tls {
    PL_SMTP_TLS_NONE = 0,    /* not offered: STARTTLS gets 502 */
    PL_SMTP_TLS_OFFER = 1,   /* offered, plaintext mail accepted */
    PL_SMTP_TLS_REQUIRE = 2, /* offered, mail only after it (530) */
};

void pl_smtp_config_default(struct pl_smtp_config *cfg);

/* What happened (struct pl_smtp_event.type). */
enum pl_smtp_event_type {
    PL_SMTP_EV_HELO = 1, /* HELO/EHLO/LHLO: helo */
    PL_SMTP_EV_MAIL,     /* MAIL FROM: from, size, body_8bit, smtputf8 */
    PL_SMTP_EV_RCPT,     /* RCPT TO: rcpt (syntax already checked) */
    PL_SMTP_EV_DATA,     /* message complete: rcpts, message */
};

/*
 * One event.  Every pointer is borrowed: valid during the callback and,
 * when the callback returns PL_EAGAIN, until pl_smtp_resume().
 */
struct pl_smtp_event {
    int type;                 /* enum pl_smtp_event_type */
    const char *helo;         /* the client's HELO/EHLO/LHLO argument */
    const char *from;         /* reverse-path mailbox; "" for <> */
    const char *rcpt;         /* RCPT: the mailbox (unquoted as sent) */
    const char *const *rcpts; /* DATA: the accepted recipients */
    size_t nrcpts;            /* DATA: how many */
    struct pl_str message;    /* DATA: the message, dot-unstuffed, CRLF */
    size_t size;              /* MAIL: SIZE= value, 0 if absent */
    int body_8bit;            /* MAIL: BODY=8BITMIME */
    int smtputf8;             /* MAIL: SMTPUTF8 */
    /* RFC 3461 (DSN): MAIL's RET= and ENVID= (xtext decoded; NULL when
     * not given), RCPT's NOTIFY= (PL_SMTP_NOTIFY_* bits, 0 when not
     * given) and ORCPT= ("rfc822;addr", decoded, or NULL); for DATA the
     * same per accepted recipient, in the order of rcpts. */
    int ret;                   /* PL_SMTP_RET_*, 0 when not given */
    const char *envid;         /* MAIL, RCPT, DATA */
    unsigned notify;           /* RCPT */
    const char *orcpt;         /* RCPT */
    const unsigned *notifies;  /* DATA: nrcpts entries */
    const char *const *orcpts; /* DATA: nrcpts entries (may be NULL) */
};

/* RFC 3461 §4.1 NOTIFY values (NEVER is its own bit: no other with it). */
enum {
    PL_SMTP_NOTIFY_NEVER = 1,
    PL_SMTP_NOTIFY_SUCCESS = 2,
    PL_SMTP_NOTIFY_FAILURE = 4,
    PL_SMTP_NOTIFY_DELAY = 8,
};
/* RFC 3461 §4.3 RET values. */
enum {
    PL_SMTP_RET_FULL = 1,
    PL_SMTP_RET_HDRS = 2
};

/*
 * A verdict.  code 0: the engine's default (success).  enh ("2.1.5") may
 * be NULL: the engine picks class.0.0.  text is one line (CR, LF and
 * control characters are replaced); strings are borrowed, copied at once.
 */
struct pl_smtp_reply {
    int code;         /* 250, 451, 550... (2xx, 4xx or 5xx) */
    const char *enh;  /* RFC 3463 code, or NULL */
    const char *text; /* human text, or NULL for the default */
};

/*
 * The event callback.  replies has 1 entry, or ev->nrcpts entries for
 * DATA under LMTP (one per recipient, in order).  Returns PL_OK with the
 * verdicts filled in, or PL_EAGAIN to give them later (pl_smtp_resume).
 * PL_SMTP_EV_HELO's verdict may only refuse (a 5xx ends nothing but the
 * greeting: the client may try again).
 */
typedef int pl_smtp_event_fn(void *data, struct pl_smtp *s,
                             const struct pl_smtp_event *ev,
                             struct pl_smtp_reply *replies);

/* A new session; queues the 220 greeting.  cfg is copied. */
struct pl_smtp *pl_smtp_new(const struct pl_smtp_config *cfg,
                            pl_smtp_event_fn *fn, void *data);
/* Frees the session (a pending verdict is forgotten). */
void pl_smtp_free(struct pl_smtp *s);
/* The data pointer given to pl_smtp_new. */
void *pl_smtp_data(const struct pl_smtp *s);
/* The configuration in use (strings owned by the session). */
const struct pl_smtp_config *pl_smtp_config(const struct pl_smtp *s);

/*
 * Takes n bytes from the client (copied as needed) and processes what it
 * can.  Returns PL_OK, or PL_ECLOSED once the session has ended (QUIT,
 * too many errors, a flood): the remaining output is the last to send.
 */
int pl_smtp_feed(struct pl_smtp *s, const char *p, size_t n);

/* The reply bytes waiting to be sent (borrowed until the next call). */
struct pl_str pl_smtp_output(const struct pl_smtp *s);
/* n bytes of the output were sent: frees them and resumes processing. */
void pl_smtp_output_sent(struct pl_smtp *s, size_t n);

/* 1 if the transport should read more input now. */
int pl_smtp_wants_input(const struct pl_smtp *s);
/* 1 once the session has ended (close after sending the output). */
int pl_smtp_is_done(const struct pl_smtp *s);
/* 1 while a verdict is awaited (the callback returned PL_EAGAIN). */
int pl_smtp_is_pending(const struct pl_smtp *s);

/*
 * Gives the verdicts of the pending event (n as for the callback) and
 * goes on with buffered input.  PL_EINVAL if nothing is pending.
 */
int pl_smtp_resume(struct pl_smtp *s, const struct pl_smtp_reply *replies,
                   size_t n);

/*
 * 1 once STARTTLS was accepted: send the output (the 220), then start the
 * TLS handshake; no input is taken until pl_smtp_tls_started().
 */
int pl_smtp_tls_wanted(const struct pl_smtp *s);
/*
 * The TLS handshake completed: the session starts over as after the
 * greeting (no HELO, no transaction; RFC 3207 §4.2), without a new
 * greeting, and STARTTLS is no longer offered.
 */
void pl_smtp_tls_started(struct pl_smtp *s);
/* 1 once TLS is up (pl_smtp_tls_started was called). */
int pl_smtp_tls_active(const struct pl_smtp *s);
/* Plaintext bytes discarded after STARTTLS so far (injection attempts). */
size_t pl_smtp_tls_discarded(const struct pl_smtp *s);

/* The transport's command timeout passed: queues 421 4.4.2 and ends. */
void pl_smtp_timeout(struct pl_smtp *s);

/* The server is shutting down: queues 421 4.3.2 and ends (unless done). */
void pl_smtp_shutdown(struct pl_smtp *s);

/*
 * Checks a path as in RFC 5321 §4.1.2 ("<local@domain>", with an optional
 * source route, which is dropped) and writes the mailbox to out (a
 * caller buffer of outlen >= 257 bytes).  utf8 allows UTF-8 in the local
 * part and the domain (RFC 6531).  Returns PL_OK, PL_EINVAL for bad
 * syntax, PL_ELIMIT when a part is too long (§4.5.3.1: local part 64,
 * domain 255, path 256).  "<>" gives "" only with null_ok.
 */
int pl_smtp_parse_path(struct pl_str in, int utf8, int null_ok, char *out,
                       size_t outlen, size_t *consumed);

#endif
